"""The figures of a report, rendered to PNG bytes so a single HTML file can carry them inline.

Each figure groups metric keys that share an axis: rewards (the mean and one line per reward
function), held-out accuracy, completion length (the R1 paper's "responses grow longer" curve), KL,
entropy, clip fractions, losses. A figure is drawn only from keys a run actually logged, and a
figure with no data is left out, so one module serves SFT, GRPO, PPO and DPO runs alike.

Matplotlib is used through `Figure` and the Agg canvas, never through `pyplot`: no global state, no
display needed, and reports can be written from threads or notebooks without touching the user's
backend.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

Rows = Sequence[Mapping[str, Any]]
"""Rows of metrics.jsonl: each a dict with `step` and namespaced metric keys."""

SMOOTH_MIN_POINTS = 40
"""Below this many points a curve is drawn raw; from it on, raw (faint) under an EMA. Short runs
are not smoothed: an EMA over a dozen points mostly shows its own lag."""
MARKER_MAX_POINTS = 20
"""Curves this short get a marker per point, so a lone evaluation is still visible."""
FIGSIZE = (6.0, 3.4)
DPI = 100


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the run page: which keys go on it and how its axes read."""

    name: str
    """Short id; used for the image's alt text and anchors (`reward`, `length` ...)."""
    title: str
    ylabel: str
    select: Callable[[Iterable[str]], list[str]]
    """From all keys a run logged, the ones this figure plots, in legend order."""
    skip_flat: bool = False
    """Leave the figure out when every line is constant (a fixed learning rate says nothing)."""
    smooth: bool = True
    """Draw an EMA over long curves; off for values that are not noisy (schedules, evaluations)."""


@dataclass(frozen=True)
class Plot:
    """A rendered figure."""

    name: str
    title: str
    png: bytes


def _exact(*wanted: str) -> Callable[[Iterable[str]], list[str]]:
    """A selector for a fixed list of keys; the order given is the legend order."""

    def select(keys: Iterable[str]) -> list[str]:
        present = set(keys)
        return [k for k in wanted if k in present]

    return select


def _pattern(regex: str, first: Sequence[str] = ()) -> Callable[[Iterable[str]], list[str]]:
    """A selector for every key matching `regex`, the `first` ones leading the legend."""
    compiled = re.compile(regex)

    def select(keys: Iterable[str]) -> list[str]:
        matched = sorted(k for k in set(keys) if compiled.fullmatch(k))
        return [k for k in first if k in matched] + [k for k in matched if k not in first]

    return select


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "reward", "Reward per function", "reward",
        _pattern(r"reward/mean|reward/[^/]+/mean", first=("reward/mean",)),
    ),
    FigureSpec(
        "accuracy", "Held-out accuracy", "accuracy",
        _pattern(r"eval/(greedy_acc|pass@\d+|maj@\d+)", first=("eval/pass@1", "eval/greedy_acc")), smooth=False,
    ),
    FigureSpec(
        "length", "Completion length (tokens)", "tokens",
        _exact("completion/length_mean", "completion/length_max", "completion/length_min", "eval/length_mean"),
    ),
    FigureSpec("kl", "KL to the reference policy", "KL", _pattern(r"kl|kl/.+", first=("kl",))),
    FigureSpec("entropy", "Policy entropy", "nats / token", _pattern(r"entropy|entropy/.+", first=("entropy",))),
    FigureSpec(
        "clip", "Clipped-ratio fractions", "fraction of tokens",
        _pattern(r"clip/.+", first=("clip/ratio_low", "clip/ratio_high")),
    ),
    FigureSpec("loss", "Losses", "loss", _pattern(r"loss/.+")),
    FigureSpec("grad_norm", "Gradient norm (before clipping)", "L2 norm", _exact("grad_norm")),
    FigureSpec("lr", "Learning rate", "lr", _exact("lr"), skip_flat=True, smooth=False),
)


def logged_keys(rows: Rows) -> list[str]:
    """Every metric key that has at least one finite number, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if k not in ("step", "time") and _finite(v):
                seen.setdefault(k, None)
    return list(seen)


def series(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key, sorted by step; rows without a finite value are skipped."""
    points = sorted((float(r.get("step", i)), float(r[key])) for i, r in enumerate(rows) if _finite(r.get(key)))
    return [p[0] for p in points], [p[1] for p in points]


def ema_weight(n: int) -> float:
    """Smoothing weight for a curve of n points: heavier for longer runs (0.375 at 40 points, 0.69
    at 80, capped at 0.9 from 250), so the EMA spans a similar share of training whatever its length."""
    return min(0.9, max(0.0, 1 - 25 / n)) if n else 0.0


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average, as TensorBoard draws it: the first point is not
    dragged towards zero, so the smoothed curve starts where the raw one does."""
    out, acc = [], 0.0
    for i, v in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight**i))
    return out


def run_plots(rows: Rows) -> list[Plot]:
    """The figures of one run, in FIGURES order; figures without a curve to draw are left out."""
    keys = logged_keys(rows)
    plots = []
    for spec in FIGURES:
        lines = {k: series(rows, k) for k in spec.select(keys)}
        lines = {k: xy for k, xy in lines.items() if xy[0]}
        if _worth_drawing(spec, lines):
            plots.append(Plot(spec.name, spec.title, _draw(spec.title, spec.ylabel, lines, smooth=spec.smooth)))
    return plots


def comparison_plots(stage_rows: Mapping[str, Rows], min_stages: int = 2) -> list[Plot]:
    """One figure per metric key, overlaying every stage that logged it (steps are each stage's
    own). Keys logged by fewer than `min_stages` stages are left to that stage's own section."""
    stage_keys = {name: logged_keys(rows) for name, rows in stage_rows.items()}
    colors = {name: f"C{i % 10}" for i, name in enumerate(stage_rows)}  # a stage keeps its colour on every figure
    plots = []
    for spec in FIGURES:
        union = {k for keys in stage_keys.values() for k in keys}
        for key in spec.select(union):
            lines = {name: series(stage_rows[name], key) for name, keys in stage_keys.items() if key in keys}
            lines = {name: xy for name, xy in lines.items() if len(xy[0]) >= 2}  # a lone final eval is in the results table
            if len(lines) >= min_stages and _worth_drawing(spec, lines):
                plots.append(Plot(f"compare-{key}", key, _draw(key, spec.ylabel, lines, colors, smooth=spec.smooth)))
    return plots


def stage_bars(results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> Plot | None:
    """Grouped bars of held-out metrics per stage: the pipeline's accuracy ladder at a glance."""
    stages = [s for s, m in results.items() if any(_finite(m.get(k)) for k in metrics)]
    metrics = [k for k in metrics if any(_finite(results[s].get(k)) for s in stages)]
    if not stages or not metrics:
        return None
    fig = Figure(figsize=(max(FIGSIZE[0], 1.1 * len(stages) + 2), FIGSIZE[1]), dpi=DPI)
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for j, key in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(stages))]
        ys = [float(results[s][key]) if _finite(results[s].get(key)) else 0.0 for s in stages]
        ax.bar(xs, ys, width=width, label=key)
    ax.set_xticks(range(len(stages)), stages, rotation=20 if len(stages) > 5 else 0)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.15)  # headroom for the legend above the tallest bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title("Held-out accuracy by stage")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(metrics), loc="upper left")
    return Plot("stage-bars", "Held-out accuracy by stage", _png(fig))


def _worth_drawing(spec: FigureSpec, lines: Mapping[str, tuple[list[float], list[float]]]) -> bool:
    """A figure needs a line of two points or more (a single final eval is already in the eval
    table), and a flat-skipping figure one line that moves."""
    if not any(len(xs) >= 2 for xs, _ in lines.values()):
        return False
    return not (spec.skip_flat and all(len(set(ys)) == 1 for _, ys in lines.values()))


def _draw(
    title: str,
    ylabel: str,
    lines: Mapping[str, tuple[list[float], list[float]]],
    colors: Mapping[str, str] | None = None,
    smooth: bool = True,
    xlabel: str = "step",
    logx: bool = False,
) -> bytes:
    """One line per entry; long noisy series get a faint raw line under their EMA."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.subplots()
    for i, (label, (xs, ys)) in enumerate(lines.items()):
        color = (colors or {}).get(label, f"C{i % 10}")
        if smooth and len(ys) >= SMOOTH_MIN_POINTS:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
            ax.plot(xs, ema(ys, ema_weight(len(ys))), color=color, linewidth=1.8, label=label)
        else:
            marker = "o" if len(ys) <= MARKER_MAX_POINTS else None
            ax.plot(xs, ys, color=color, marker=marker, markersize=4, linewidth=1.5, label=label)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 1 2 4 ..., not mathtext powers
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _png(fig: Figure) -> bytes:
    """PNG bytes of a figure, without Software metadata so identical data gives identical bytes."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _finite(v: Any) -> bool:
    """True for a real number that can be drawn (bools and NaN/inf are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def seed_bars(name: str, title: str, values: Mapping[str, Sequence[float | None]]) -> Plot | None:
    """One bar per metric at its mean over seeds, with a dot for each seed: a finding's numbers and
    how far apart its seeds fall, at a glance. Missing (None, NaN) values are left out."""
    values = {k: [float(v) for v in vs if _finite(v)] for k, vs in values.items()}
    values = {k: vs for k, vs in values.items() if vs}
    if not values:
        return None
    fig = Figure(figsize=(max(FIGSIZE[0], 1.3 * len(values) + 1.5), FIGSIZE[1]), dpi=DPI)
    ax = fig.subplots()
    for i, (key, vs) in enumerate(values.items()):
        ax.bar(i, sum(vs) / len(vs), width=0.6, color=f"C{i % 10}", alpha=0.55)
        ax.scatter([i + (j - (len(vs) - 1) / 2) * 0.08 for j in range(len(vs))], vs, color="black", s=14, zorder=3)
    ax.set_xticks(range(len(values)), list(values), rotation=15 if len(values) > 3 else 0, fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return Plot(name, title, _png(fig))


def pass_at_k_curves(name: str, title: str, curves: Mapping[str, Mapping[int, float]]) -> Plot | None:
    """pass@k against k (log scale), one line per model: where RL's gain at k = 1 goes at large k."""
    lines = {label: (sorted(c), [c[k] for k in sorted(c)]) for label, c in curves.items() if len(c) >= 2}
    if not lines:
        return None
    return Plot(name, title, _draw(title, "pass@k", lines, smooth=False, xlabel="k", logx=True))
