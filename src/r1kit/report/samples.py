"""Sample completions of a training step, for a person to read: samples/step_N.jsonl in the run
directory and, when no progress bar is drawn, a short table on the console."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from r1kit.data.chat import prompt_preview
from r1kit.report.logger import console
from r1kit.rollout import RolloutBatch


def write_samples(run_dir: Path, step: int, rows: list[dict[str, Any]], batch: RolloutBatch, rewards: torch.Tensor, show: bool, per_step: int = 8) -> None:
    """A few completions of this step (the first completion of each group) to samples/step_N.jsonl."""
    out = run_dir / "samples"
    out.mkdir(exist_ok=True)
    G = batch.group_size
    lines = []
    for i, row in enumerate(rows[:per_step]):
        j = i * G
        reward = None if math.isnan(float(rewards[j])) else float(rewards[j])
        lines.append({"step": step, "prompt": row["prompt"], "completion": batch.texts[j] if batch.texts else "", "reward": reward, "answer": row.get("answer")})
    (out / f"step_{step}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if show:
        from rich.table import Table

        table = Table(title=f"samples at step {step}", show_lines=False)
        for col in ("prompt", "completion", "reward"):
            table.add_column(col)
        for x in lines[:3]:
            table.add_row(prompt_preview(x["prompt"]), x["completion"][:80], f"{x['reward']}")
        console.print(table)
