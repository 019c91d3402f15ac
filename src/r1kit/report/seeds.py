"""The HTML page of a multi-seed demo: the stage table as mean ± sd with each seed's value, the
findings with their per-seed verdicts, and links to each seed's own pipeline report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from r1kit.report.html import _e, _page
from r1kit.report.tables import METRICS, mean_sd


def write_seeds_report(root: Path, summary: Mapping[str, Any]) -> Path:
    """Write `root/report.html` from the demo's results.json content; return its path."""
    k = summary.get("k", 4)
    labels = {"greedy_acc": "greedy acc", "maj@k": f"maj@{k}", "pass@k": f"pass@{k}", "mean_length": "mean length"}
    head = "<tr><th>stage</th>" + "".join(f"<th>{_e(labels.get(m, m))}</th>" for m in METRICS) + "</tr>"
    rows = []
    for stage, metrics in summary["stages"].items():
        cells = []
        for m in METRICS:
            values = metrics.get(m, [])
            digits = 1 if m == "mean_length" else 3
            mean, sd = mean_sd(values) if values else (float("nan"), 0.0)
            each = ", ".join(f"{v:.{digits}f}" for v in values)
            cells.append(f'<td class=num>{mean:.{digits}f} ± {sd:.{digits}f}<br><span class="muted">{_e(each)}</span></td>')
        rows.append(f"<tr><td>{_e(stage)}</td>{''.join(cells)}</tr>")
    findings = []
    for f in summary["findings"]:
        verdict = "held on every seed" if all(f["held"]) else "did not hold on every seed"
        marks = " ".join("✓" if h else "✗" for h in f["held"])
        findings.append(f'<li><b>{_e(f["name"])}</b> — {_e(verdict)} ({_e(marks)})<br>{_e(f["detail"])}</li>')
    seeds = summary["seeds"]
    links = "".join(f'<li><a href="seed-{s}/report.html">seed {s}</a></li>' for s in seeds if (root / f"seed-{s}" / "report.html").is_file())
    body = (
        f"<h1>r1kit demo over {len(seeds)} seeds</h1>"
        f"<h2>Held-out test split (mean ± sd; each seed below)</h2><table class=results>{head}{''.join(rows)}</table>"
        f"<h2>Findings</h2><ul>{''.join(findings)}</ul>"
        + (f"<h2>Each seed's report</h2><ul>{links}</ul>" if links else "")
    )
    path = root / "report.html"
    path.write_text(_page(f"r1kit demo over {len(seeds)} seeds", body), encoding="utf-8")
    return path
