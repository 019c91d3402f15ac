"""findings.json as one HTML page: a section per finding with its verdict, the claim as quoted,
the setup, the criterion, a plot (a bar per compared metric, a dot per seed) and every metric per
seed; and as `verdicts.md`, the Markdown table of verdicts the README shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from r1kit.report.html import _e, _fmt, _page, plot_grid
from r1kit.report.plots import pass_at_k_curves, seed_bars
from r1kit.report.tables import mean_sd


def write_findings_report(root: Path, summary: Mapping[str, Any]) -> Path:
    """Write `root/report.html`; return its path."""
    seeds = summary["seeds"]
    rows = "".join(
        f'<tr><td><a href="#{_e(f["name"])}">{_e(f["name"])}</a></td><td class="{_class(f)}">{_e(f["verdict"])}</td>'
        f'<td>{_marks(f)}</td><td class=num>{f["seconds"]:.0f}</td></tr>'
        for f in summary["findings"]
    )
    body = (
        f"<h1>r1kit findings over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({_e(summary.get('size', 'full'))} size)</h1>"
        "<p class=summary>Each criterion is fixed in code before the run; a finding holds on a seed when its criterion "
        "is true on that seed's numbers. Seconds: what its seeds took to run; a finding that reads the models another "
        "finding trained (the demo pipeline's) takes next to none.</p>"
        f"<table><tr><th>finding</th><th>verdict</th><th>per seed</th><th>seconds</th></tr>{rows}</table>"
        + "".join(_section(f, seeds) for f in summary["findings"])
    )
    path = root / "report.html"
    path.write_text(_page("r1kit findings", body), encoding="utf-8")
    (root / "verdicts.md").write_text(verdict_table(summary), encoding="utf-8")
    return path


def verdict_table(summary: Mapping[str, Any]) -> str:
    """A Markdown row per finding: its criterion, the metrics it compares (the plot's), then per seed
    ✓ or ✗ with those metrics' values in the same order, then the verdict."""
    seeds = summary["seeds"]
    lines = ["| finding | criterion (per seed) | compared | " + " | ".join(f"seed {s}" for s in seeds) + " | verdict |",
             "|---|---|---|" + "---|" * len(seeds) + "---|"]  # fmt: skip
    for f in summary["findings"]:
        if f["held"] is None:
            cells = ["–"] * len(seeds)
        else:
            cells = [("✓ " if held else "✗ ") + " · ".join(_md_number(f["metrics"].get(k, [None] * len(seeds))[i]) for k in f["plot"])
                     for i, held in enumerate(f["held"])]  # fmt: skip
        criterion = f"`{f['criterion']}`" if f["criterion"] else "–"
        compared = " · ".join(f["plot"]) or "–"
        lines.append(f"| {f['name']} | {criterion} | {compared} | " + " | ".join(cells) + f" | {f['verdict']} |")
    return "\n".join(lines) + "\n"


def _md_number(v: Any) -> str:
    return "–" if not isinstance(v, (int, float)) or v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _section(f: Mapping[str, Any], seeds: list[int]) -> str:
    head = f'<section id="{_e(f["name"])}"><h2>{_e(f["name"])}: <span class="{_class(f)}">{_e(f["verdict"])}</span></h2>'
    claim = f'<blockquote>“{_e(f["claim"])}”<br><span class=muted>— {_e(f["source"])}</span></blockquote>'
    if not f["implemented"]:
        return f"{head}{claim}<p class=muted>No experiment yet.</p></section>"
    plots = [seed_bars(f["name"], f["name"], {k: f["metrics"].get(k, []) for k in f.get("plot", [])}),
             pass_at_k_curves(f"{f['name']}-pass-at-k", f"{f['name']}: pass@k, mean over seeds", _curves(f["metrics"]))]
    head_row = "<tr><th>metric</th>" + "".join(f"<th>seed {s}</th>" for s in seeds) + "<th>mean ± sd</th></tr>"
    held_row = "<tr><th>held</th>" + "".join(f'<td class="{"ok" if h else "bad"}">{"yes" if h else "no"}</td>' for h in f["held"]) + "<td></td></tr>"
    rows = "".join(
        f"<tr><td>{_e(k)}</td>" + "".join(f"<td class=num>{_fmt(v)}</td>" for v in vs) + f"<td class=num>{_mean(vs)}</td></tr>"
        for k, vs in f["metrics"].items()
    )
    return (
        f"{head}{claim}<p><b>Setup.</b> {_e(f['setup'])}</p><p><b>Criterion</b> (per seed): <code>{_e(f['criterion'])}</code></p>"
        + plot_grid([p for p in plots if p], f["name"])
        + f"<table>{head_row}{held_row}{rows}</table><p class=muted>{f['seconds']:.0f} s</p></section>"
    )


def _curves(metrics: Mapping[str, list[Any]]) -> dict[str, dict[int, float]]:
    """`model/pass@k` metrics as {model: {k: mean over seeds}}."""
    curves: dict[str, dict[int, float]] = {}
    for key, values in metrics.items():
        match = re.fullmatch(r"(.+)/pass@(\d+)", key)
        finite = [v for v in values if isinstance(v, (int, float)) and v == v]
        if match and finite:
            curves.setdefault(match[1], {})[int(match[2])] = sum(finite) / len(finite)
    return curves


def _mean(values: list[Any]) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and v == v]
    if not finite:
        return "–"
    mean, sd = mean_sd(finite)
    return f"{_fmt(mean)} ± {_fmt(sd)}"


def _marks(f: Mapping[str, Any]) -> str:
    return "–" if f["held"] is None else " ".join("✓" if h else "✗" for h in f["held"])


def _class(f: Mapping[str, Any]) -> str:
    return "muted" if f["held"] is None else "ok" if all(f["held"]) else "bad"
