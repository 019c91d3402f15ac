"""Weights & Biases for a run (`run.wandb: true`): the rows metrics.jsonl gets, at the same steps,
and the resolved config.

The project, entity and name come from run.wandb_project / wandb_entity / wandb_name, else from
the usual WANDB_PROJECT / WANDB_ENTITY / WANDB_NAME variables, else `r1kit`, your default entity
and the run directory's name. W&B writes its files under the run directory (`RUN/wandb/`), and
WANDB_MODE=offline keeps them there for a later `wandb sync`. A resumed run continues the same
W&B run: its id is kept in `RUN/wandb_id`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

from r1kit.errors import R1kitError

DEFAULT_PROJECT = "r1kit"


def check_wandb(enabled: bool) -> None:
    """An R1kitError when run.wandb is asked for and wandb is not installed."""
    if enabled and importlib.util.find_spec("wandb") is None:
        raise R1kitError("run.wandb=true needs the wandb package; install it (pip install 'r1kit[wandb]') or set run.wandb=false")


class WandbTracker:
    """One W&B run mirroring a run directory's metrics; `log(row, step)` and `close()`."""

    def __init__(self, run_dir: Path, run_args: Any, config: Mapping[str, Any], resumed: bool):
        import wandb

        id_file = Path(run_dir) / "wandb_id"
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self._run = wandb.init(
            project=run_args.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=run_args.wandb_entity or None,  # None: WANDB_ENTITY, else the account's default
            name=run_args.wandb_name or os.environ.get("WANDB_NAME") or Path(run_dir).name,
            dir=str(run_dir),
            config=dict(config),
            id=run_id,
            resume="allow",
        )

    def log(self, row: Mapping[str, Any], step: int) -> None:
        values = {k: v for k, v in row.items() if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v)}
        self._run.log(values, step=step)

    def close(self) -> None:
        import wandb

        self._run.finish()
        # finish() returns once the run's exit is handled; the W&B service writes the run file's
        # last records when it closes the stream. Waiting for that leaves RUN/wandb complete when
        # the recipe returns, for a `wandb sync` or a reader right after.
        wandb.teardown()
