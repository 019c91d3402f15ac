"""Console tables of held-out metrics: one row per stage, one value per seed or mean ± sd over seeds."""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

from rich import box
from rich.table import Table

METRICS = ("greedy_acc", "pass@1", "maj@k", "pass@k", "mean_length")
"""The per-stage metrics a pipeline or the demo reports, named independently of k."""


def stage_metrics(result: Mapping[str, float], k: int) -> dict[str, float]:
    """An evaluation result (keys `maj@4`, `length_mean`, ...) under the names of METRICS."""
    names = {"greedy_acc": "greedy_acc", "pass@1": "pass@1", "maj@k": f"maj@{k}", "pass@k": f"pass@{k}", "mean_length": "length_mean"}
    return {name: float(result.get(key, math.nan)) for name, key in names.items()}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def stage_table(stages: Mapping[str, Mapping[str, Sequence[float]]], k: int, title: str) -> Table:
    """`stages[name][metric]` is a list of per-seed values; one seed prints the value, several
    print mean ± sd."""
    # A light box and "0.925±0.006" cells: six columns fit an 80-column terminal or pipe.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    headers = ("greedy acc", "pass@1", f"maj@{k}", f"pass@{k}", "mean length")
    table.add_column("stage", no_wrap=True)
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True)
    for name, metrics in stages.items():
        cells = []
        for metric in METRICS:
            values = metrics.get(metric, [])
            digits = 1 if metric == "mean_length" else 3
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.{digits}f}")
            else:
                mean, sd = mean_sd(values)
                cells.append(f"{mean:.{digits}f}±{sd:.{digits}f}")
        table.add_row(name, *cells)
    return table
