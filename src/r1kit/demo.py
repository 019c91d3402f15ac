"""`r1kit demo`: the R1 recipe in miniature, on CPU, in minutes.

Stages (each its own run directory under run.output_dir): pretrain a tiny base model on a
synthetic arithmetic corpus (cached) -> cold-start SFT on tagged chains of thought. Prints a table
of greedy accuracy, pass@1, maj@k, pass@k and mean completion length on the held-out test split.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from r1kit.config import load
from r1kit.report.logger import console

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def run_demo(config_path: str | None, overrides: list[str]) -> Path:
    from r1kit.recipes.pipeline import PipelineConfig, run_pipeline

    config = load(config_path or DEFAULT_CONFIG, overrides, PipelineConfig)
    out = run_pipeline(config)
    return out


def stage_table(rows: list[tuple[str, dict]], k: int) -> Table:
    table = Table(title="r1kit demo: held-out test split")
    for col in ("stage", "greedy acc", "pass@1", f"maj@{k}", f"pass@{k}", "mean length"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for name, m in rows:
        table.add_row(
            name,
            f"{m.get('greedy_acc', float('nan')):.3f}",
            f"{m.get('pass@1', float('nan')):.3f}",
            f"{m.get(f'maj@{k}', float('nan')):.3f}",
            f"{m.get(f'pass@{k}', float('nan')):.3f}",
            f"{m.get('length_mean', float('nan')):.1f}",
        )
    return table


def print_results(rows: list[tuple[str, dict]], k: int, out: Path) -> None:
    console.print(stage_table(rows, k))
    (out / "results.json").write_text(json.dumps(dict(rows), indent=2))
