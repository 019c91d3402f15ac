"""`r1kit report DIR`: one self-contained HTML page for a run or a pipeline directory.

A run page shows the config, the before/after evaluation, the training curves, sample completions
at several steps and the environment. A pipeline page puts the stages side by side: a results
table, one figure per metric overlaying every stage that logged it, then a section per stage.

The page is a single file: plots are PNGs inlined as base64 data URIs and the CSS is inline, so it
can be mailed, attached to an issue or opened from a cluster's scratch disk with no server and no
network. Every string that comes from a run is HTML-escaped: completions are untrusted model output,
and a model that learned to write `<script>` must not run it in the reader's browser.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from r1kit.errors import R1kitError
from r1kit.report.plots import Plot, comparison_plots, run_plots, stage_bars
from r1kit.report.rundirs import RUN_MARKERS, read_config, read_json, read_jsonl, read_run_metrics, recorded_stages, stage_dirs, stage_results, stages_on_disk

REPORT_NAME = "report.html"
MAX_TEXT_CHARS = 3000
"""Prompts and completions longer than this are cut in the page (the files keep them whole)."""
SAMPLE_STEPS = 6
"""How many `samples/step_<N>.jsonl` files a run page shows, spread evenly over training."""
SAMPLES_PER_STEP = 3
FINAL_SAMPLES = 8
"""How many greedy completions from samples.jsonl a page shows."""
PIPELINE_MARKERS = ("stages.json", "results.json")


def write_report(path: str | Path) -> Path:
    """Write `report.html` into a run or pipeline directory and return its path."""
    root = Path(path)
    kind = directory_kind(root)
    page = pipeline_page(root) if kind == "pipeline" else run_page(root)
    out = root / REPORT_NAME
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a browser refreshing the page never sees half a file
    return out


def directory_kind(root: Path) -> str:
    """`pipeline` or `run`; anything else is the user's mistake, so say what was expected."""
    if not root.is_dir():
        raise R1kitError(f"{root} is not a directory; pass a run directory or a pipeline directory to `r1kit report`")
    if any((root / m).is_file() for m in PIPELINE_MARKERS):
        return "pipeline"
    if any((root / m).is_file() for m in RUN_MARKERS):
        return "run"
    if stages_on_disk(root):
        return "pipeline"
    raise R1kitError(
        f"{root} is neither a run directory (it has none of {', '.join(RUN_MARKERS)}) nor a pipeline "
        f"directory (none of {', '.join(PIPELINE_MARKERS)}); pass the directory a recipe or `r1kit pipeline` wrote"
    )


# ---------------------------------------------------------------- run page


def run_page(run_dir: Path) -> str:
    """The full page of a single run."""
    config = read_config(run_dir)
    title = f"{run_dir.name} ({config['recipe']})" if isinstance(config.get("recipe"), str) else run_dir.name
    body = f"<h1>r1kit report: {_e(title)}</h1>\n" + run_sections(run_dir, level=2, collapse_samples=False)
    return _page(f"r1kit report: {title}", body)


def run_sections(run_dir: Path, level: int, collapse_samples: bool, prefix: str = "") -> str:
    """The body of a run: config, evaluation, curves, samples, environment. Shared by the run page
    and each stage section of a pipeline page (`level` is the heading level of its sections)."""
    rows, warning = read_run_metrics(run_dir)
    h = f"h{level}"
    parts = [_config_summary(run_dir)]
    if warning:
        parts.append(f'<p class="warn">{_e(warning)}</p>')
    ev = read_json(run_dir / "eval.json")
    if isinstance(ev, dict) and ev:
        parts.append(f"<{h}>Evaluation (held-out split)</{h}>\n{eval_table(ev)}")
    plots = run_plots(rows)
    no_curves = '<p class="muted">No curves: metrics.jsonl is missing or has fewer than two points per metric.</p>'
    parts.append(f"<{h}>Training curves</{h}>\n" + (plot_grid(plots, prefix) if plots else no_curves))
    samples = step_samples_table(run_dir) + final_samples_table(run_dir)
    if samples and collapse_samples:
        parts.append(f"<details><summary>Sample completions</summary>\n{samples}</details>")
    elif samples:
        parts.append(f"<{h}>Sample completions</{h}>\n{samples}")
    env = read_json(run_dir / "env.json")
    if isinstance(env, dict) and env:
        parts.append(f"<details><summary>Environment</summary>\n{kv_table(env)}</details>")
    return "\n".join(parts)


def eval_table(ev: Mapping[str, Any]) -> str:
    """Metric × (before, after, change) from eval.json, plus its other scalars (first/last loss)."""
    before = ev.get("before") if isinstance(ev.get("before"), dict) else {}
    after = ev.get("after") if isinstance(ev.get("after"), dict) else {}
    keys = _metric_order(list(after) + [k for k in before if k not in after])
    out = ""
    if keys:
        head = "<tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>"
        body = "".join(
            f"<tr><td>{_e(k)}</td><td class=num>{_fmt(before.get(k))}</td><td class=num>{_fmt(after.get(k))}</td>"
            f"<td class=num>{_delta(before.get(k), after.get(k))}</td></tr>"
            for k in keys
        )
        out += f"<table>{head}{body}</table>\n"
    scalars = {k: v for k, v in ev.items() if k not in ("before", "after") and not isinstance(v, (dict, list))}
    if scalars:
        out += kv_table(scalars)
    return out


def step_samples_table(run_dir: Path) -> str:
    """Completions sampled during training (samples/step_<N>.jsonl) at a few steps spread evenly,
    so a reader sees how answers changed: longer reasoning, format learned, reward hacking."""
    files = sorted(
        ((int(m.group(1)), p) for p in (run_dir / "samples").glob("step_*.jsonl") if (m := re.fullmatch(r"step_(\d+)\.jsonl", p.name))),
    )
    if not files:
        return ""
    rows = []
    for step, path in _spread(files, SAMPLE_STEPS):
        for s in read_jsonl(path)[:SAMPLES_PER_STEP]:
            rows.append(
                f"<tr><td class=num>{_e(s.get('step', step))}</td><td><pre>{_clip(s.get('prompt'))}</pre></td>"
                f"<td><pre>{_clip(_completion(s))}</pre></td><td class=num>{_fmt(s.get('reward'))}</td></tr>"
            )
    head = "<tr><th class=narrow>step</th><th class=prompt>prompt</th><th>completion</th><th class=narrow>reward</th></tr>"
    return f"<h4>During training</h4>\n<table class=samples>{head}{''.join(rows)}</table>\n" if rows else ""


def final_samples_table(run_dir: Path) -> str:
    """The first greedy completions on the held-out split at the end (samples.jsonl)."""
    samples = read_jsonl(run_dir / "samples.jsonl")[:FINAL_SAMPLES]
    if not samples:
        return ""
    rows = "".join(
        f"<tr><td><pre>{_clip(s.get('prompt'))}</pre></td><td><pre>{_clip(_completion(s))}</pre></td>"
        f"<td class=num>{_verdict(s)}</td></tr>"
        for s in samples
    )
    head = "<tr><th class=prompt>prompt</th><th>completion</th><th class=narrow>correct</th></tr>"
    return f"<h4>Greedy, after training</h4>\n<table class=samples>{head}{rows}</table>\n"


# ---------------------------------------------------------------- pipeline page


def pipeline_page(pipe_dir: Path) -> str:
    """The comparison page of a pipeline: results, overlaid curves, then one section per stage."""
    stages = stage_dirs(pipe_dir)
    results = stage_results(pipe_dir, stages)
    ids = _anchors(stages)
    parts = [f"<h1>r1kit pipeline report: {_e(pipe_dir.name)}</h1>"]
    if stages:
        links = "".join(f'<li><a href="#{ids[n]}">{_e(n)}</a></li>' for n in stages)
        parts.append(f"<nav><b>Stages</b><ol>{links}</ol></nav>")
    parts.append("<h2>Results (held-out split)</h2>")
    parts.append(results_table(results, ids) if results else '<p class="muted">No results yet (no results.json and no stage has an eval.json).</p>')
    bars = stage_bars(results, _metric_order({k for m in results.values() for k in m if _is_accuracy(k)}))
    if bars:
        parts.append(plot_grid([bars]))
    stage_rows = {n: read_run_metrics(d)[0] for n, d in stages.items() if d is not None}
    compare = comparison_plots(stage_rows)
    parts.append("<h2>Stages side by side</h2>")
    parts.append(plot_grid(compare) if compare else '<p class="muted">No metric was logged by two or more stages.</p>')
    for name, run_dir in stages.items():
        parts.append(f'<section id="{ids[name]}"><h2>Stage: {_e(name)}</h2>')
        if run_dir is None:
            parts.append(f'<p class="warn">Run directory not found: {_e(recorded_stages(pipe_dir).get(name, name))}</p>')
        else:
            parts.append(f'<p class="muted">{_e(run_dir)}</p>' + run_sections(run_dir, level=3, collapse_samples=True, prefix=ids[name]))
        parts.append('<p><a href="#top">back to top</a></p></section>')
    return _page(f"r1kit pipeline report: {pipe_dir.name}", "\n".join(parts))


def results_table(results: Mapping[str, Mapping[str, Any]], ids: Mapping[str, str]) -> str:
    """Stage × (greedy acc, pass@1, maj@k, pass@k, mean length), each stage linking to its section."""
    keys = _metric_order({k for m in results.values() for k in m if _is_accuracy(k)})
    keys += [k for k in ("length_mean",) if any(k in m for m in results.values())]
    labels = {"greedy_acc": "greedy acc", "length_mean": "mean length"}
    head = "<tr><th>stage</th>" + "".join(f"<th>{_e(labels.get(k, k))}</th>" for k in keys) + "</tr>"
    rows = []
    for name, m in results.items():
        cell = f'<a href="#{ids[name]}">{_e(name)}</a>' if name in ids else _e(name)
        rows.append(f"<tr><td>{cell}</td>" + "".join(f"<td class=num>{_fmt(m.get(k))}</td>" for k in keys) + "</tr>")
    return f"<table class=results>{head}{''.join(rows)}</table>\n"


# ---------------------------------------------------------------- pieces


def plot_grid(plots: Sequence[Plot], prefix: str = "") -> str:
    """Figures as inline PNG <img> tags in a responsive grid."""
    imgs = "".join(
        f'<figure><img data-plot="{_e(p.name)}" id="{_e(_slug(prefix + "-" + p.name if prefix else "plot-" + p.name))}" '
        f'alt="{_e(p.title)}" src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}"></figure>'
        for p in plots
    )
    return f'<div class="grid">{imgs}</div>\n'


def kv_table(data: Mapping[str, Any]) -> str:
    """A two-column key/value table (environment, eval scalars)."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in data.items())
    return f"<table class=kv>{rows}</table>\n"


def _config_summary(run_dir: Path) -> str:
    """The few config fields a reader looks for first, then the whole config.yaml, collapsed."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return '<p class="muted">No config.yaml in this run directory.</p>'
    config = read_config(run_dir)
    picks = {
        "recipe": config.get("recipe"),
        "model": _dig(config, "model", "path"),
        "data": _dig(config, "data", "path") or _dig(config, "data", "task"),
        "steps": config.get("steps"),
        "batch size": config.get("batch_size"),
        "lr": _dig(config, "optim", "lr"),
    }
    summary = " · ".join(f"<b>{_e(k)}</b> {_e(v)}" for k, v in picks.items() if v not in (None, ""))
    text = path.read_text(encoding="utf-8", errors="replace")
    return f'<p class="summary">{summary}</p>\n<details><summary>config.yaml</summary><pre>{_e(text)}</pre></details>'


def _page(title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body id="top">\n<main>\n{body}\n<footer>written by r1kit report, {stamp}</footer>\n</main>\n</body>\n</html>\n'
    )


CSS = """
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh;
  box-shadow: 0 0 0 1px #e3e6eb; }
h1 { font-size: 1.6em; margin: 0 0 .6em; }
h2 { font-size: 1.3em; margin: 1.6em 0 .5em; padding-bottom: .2em; border-bottom: 1px solid #e3e6eb; }
h3 { font-size: 1.1em; margin: 1.3em 0 .4em; }
h4 { font-size: 1em; margin: 1em 0 .3em; color: #3b4458; }
section { margin-top: 2.2em; }
section > h2 { background: #eef2f8; padding: .3em .5em; border: 0; border-left: 4px solid #4a6fa5; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .92em; }
th, td { border: 1px solid #dfe3e8; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.samples { width: 100%; table-layout: fixed; }
table.samples th.narrow { width: 5.5em; }
table.samples th.prompt { width: 30%; }
table.samples pre { max-height: 16em; overflow: auto; }
table.kv th { width: 12em; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font: 12.5px/1.4 ui-monospace, "SFMono-Regular",
  Menlo, Consolas, "DejaVu Sans Mono", monospace; }
details { margin: .5em 0; }
details > summary { cursor: pointer; color: #2f5a94; font-weight: 600; }
details > pre { background: #f7f8fa; border: 1px solid #e3e6eb; padding: 8px 10px; max-height: 30em; overflow: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 12px; }
figure { margin: 0; border: 1px solid #e3e6eb; border-radius: 4px; padding: 4px; background: #fff; }
figure img { display: block; width: 100%; height: auto; }
nav ol { margin: .2em 0 0; padding-left: 1.6em; columns: 3; }
a { color: #2f5a94; }
.summary { color: #3b4458; }
.muted { color: #6b7385; }
.warn { color: #8a5a00; background: #fff6e0; padding: 4px 8px; border-radius: 3px; }
.ok { color: #1c7c3a; } .bad { color: #b3261e; }
footer { margin-top: 3em; color: #8a91a0; font-size: .85em; }
"""


# ---------------------------------------------------------------- reading the run


# ---------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: Any) -> str:
    """A number to 4 significant digits; anything else escaped; missing as a dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return _e(v)
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return _e(json.dumps(v))
    return _e(v)


def _delta(before: Any, after: Any) -> str:
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (before, after)):
        return ""
    d = after - before
    return f"{d:+.4g}"


def _clip(value: Any) -> str:
    """Escaped text of a prompt or completion, cut at MAX_TEXT_CHARS."""
    text = _text(value)
    if len(text) > MAX_TEXT_CHARS:
        return _e(text[:MAX_TEXT_CHARS]) + f'\n<span class="muted">[… {len(text) - MAX_TEXT_CHARS} more characters]</span>'
    return _e(text)


def _text(value: Any) -> str:
    """Plain text of a prompt/completion, which may be a string or chat messages."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in value)
    return value if isinstance(value, str) else json.dumps(value)


def _completion(sample: Mapping[str, Any]) -> Any:
    """The generated text of a sample row; rejection-sampling output names it differently."""
    for key in ("completion", "response", "cot", "text"):
        if key in sample:
            return sample[key]
    return ""


def _verdict(sample: Mapping[str, Any]) -> str:
    if isinstance(sample.get("correct"), bool):
        return '<span class="ok">yes</span>' if sample["correct"] else '<span class="bad">no</span>'
    return _fmt(sample.get("correct", sample.get("reward")))


def _metric_order(keys: Iterable[str]) -> list[str]:
    """greedy_acc, pass@1, maj@k, pass@k (by k), lengths, then the rest alphabetically."""

    def rank(k: str) -> tuple:
        m = re.fullmatch(r"(pass|maj)@(\d+)", k)
        if k == "greedy_acc":
            return (0, 0, 0, k)
        if m:
            return (1, 0 if m.group(2) == "1" else 1, int(m.group(2)) * 2 + (m.group(1) == "pass"), k)
        if k.startswith("length"):
            return (2, 0, 0, k)
        return (3, 0, 0, k)

    return sorted(set(keys), key=rank)


def _is_accuracy(key: str) -> bool:
    return key == "greedy_acc" or re.fullmatch(r"(pass|maj)@\d+", key) is not None


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most n items, evenly spaced, always keeping the first and the last."""
    if len(items) <= n:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in idx]


def _anchors(names: Iterable[str]) -> dict[str, str]:
    """A unique, URL-safe anchor id per stage name."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        slug = "stage-" + _slug(name)
        out[name] = slug if slug not in out.values() else f"{slug}-{i}"
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _dig(data: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data
