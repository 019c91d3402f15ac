"""Metrics of a run: one JSON object per logged step in `metrics.jsonl`, TensorBoard events when
tensorboard is installed (`RUN/tb/`), the same rows to W&B when the run asks for it
(report/tracking.py), and a compact console line.

Keys are namespaced (`reward/mean`, `loss/policy`, `perf/step_s`, `eval/pass@1`). On resume the
logger drops rows after the resumed step, so the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console

console = Console(highlight=False)


class MetricLogger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None, echo: bool = True, tracker: Any = None):
        """`tracker`: another sink with log(row, step) and close(), e.g. a `WandbTracker`."""
        self.run_dir = Path(run_dir)
        self._tracker = tracker
        self.path = self.run_dir / "metrics.jsonl"
        self.echo = echo
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def _truncate_after(self, step: int) -> None:
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tracker is not None:
            self._tracker.log(row, step)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._tracker is not None:
            self._tracker.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_line(step: int, metrics: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    parts = [f"step {step}"]
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)
