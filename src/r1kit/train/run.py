"""A run directory: everything a run produces lands in it (DESIGN principle 6).

`create_run` makes the directory, writes the resolved config and the environment (package
versions, seed, device, threads), applies the process-wide settings of `run.accel`
(`r1kit.accel.setup`), and seeds python, numpy and torch.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r1kit import accel
from r1kit.config import dump


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(seed: int, device: str) -> dict[str, Any]:
    import transformers

    import r1kit

    return {
        "r1kit": r1kit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "pid": os.getpid(),
    }


def create_run(config: Any, recipe: str, device: str = "cpu") -> Path:
    """The run directory for `config` (config.run.output_dir / name), with config.yaml and env.json."""
    run = config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    accel.setup(run.accel, device, run.rollout_processes)
    name = run.name or f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump(config, recipe))
    (run_dir / "env.json").write_text(json.dumps(environment(run.seed, device), indent=2))
    seed_everything(run.seed)
    return run_dir
