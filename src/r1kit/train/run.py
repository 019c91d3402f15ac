"""A run directory: everything a run produces lands in it (DESIGN principle 6).

`create_run` makes the directory, writes the resolved config and the environment (package
versions, seed, device, threads), and seeds python, numpy and torch.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def keep_freed_memory(device: str) -> bool:
    """On a CPU device under glibc, have malloc serve large blocks from the heap (no mmap) and keep
    up to 2 GiB of freed memory there (see RunArgs.keep_freed_memory); True when applied. Elsewhere
    (a GPU, macOS, musl) it does nothing: GPU tensors have torch's caching allocator."""
    if not str(device).startswith("cpu") or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def create_run(config: Any, recipe: str, device: str = "cpu") -> Path:
    """The run directory for `config` (config.run.output_dir / name), with config.yaml and env.json."""
    run = config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    if run.keep_freed_memory:
        keep_freed_memory(device)
    name = run.name or f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump(config, recipe))
    (run_dir / "env.json").write_text(json.dumps(environment(run.seed, device), indent=2))
    seed_everything(run.seed)
    return run_dir
