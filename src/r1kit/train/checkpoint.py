"""Checkpoints that resume a run exactly, written atomically and rotated.

Layout of `run_dir/checkpoints/step_N/`:

    model/       the trained model as `save_pretrained` writes it (a full HF directory, or the
                 LoRA adapter) plus the tokenizer, so a checkpoint is also a usable model
    <name>/      other models the run trains or changes, each its own HF directory: PPO's
                 `value_model/`, GRPO's `ref/` once a reference reset has made it differ from the
                 starting weights (until then it is reloaded from `model.path`)
    trainer.pt   optimizers, schedulers, the RNG states of every rank (python, numpy, torch CPU,
                 CUDA), the data position, the step and recipe extras (counters, eval results)
    sharded/     under run.parallel=fsdp, instead of model/, <name>/ and the optimizers' states:
                 every rank's shards of them as torch.distributed.checkpoint writes them
                 (r1kit/train/fsdp.py; `torch.distributed.checkpoint.format_utils.dcp_to_torch_save`
                 turns them into one file)

A checkpoint is written into `step_N.tmp`, every file fsynced, then renamed to `step_N`: rename
is atomic, so a directory called `step_N` is complete and a crash mid-write leaves only a `.tmp`
directory, which is ignored and removed by the next save. Resuming restores all of the above, so
a resumed run continues with the very numbers the uninterrupted run would have produced (on the
same device, dtype and thread count).

Ctrl-C and SIGTERM (a scheduler pre-empting the job): `InterruptGuard` defers them while a step
changes the model (so a checkpoint never holds half an update); the step loop
(`r1kit.train.loop`) catches the KeyboardInterrupt between steps, saves the last completed step
and the command exits with status 130. A second signal during the deferred part aborts at once
without saving.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from r1kit.errors import R1kitError

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer.pt"
KILL_AFTER_ENV = "R1KIT_TEST_KILL_AFTER_CHECKPOINT"
"""Test hook: when set to N, the process SIGKILLs itself right after checkpoint step_N is complete,
which is how the resume tests simulate a crash (a preempted job) at a known point."""

_STEP_DIR = re.compile(r"^step_(\d+)$")


# --------------------------------------------------------------------------------------------
# RNG state


def capture_rng() -> dict[str, Any]:
    """Every global RNG this process draws from: python, numpy, torch CPU and (if present) CUDA."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states `capture_rng` took."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x: Any) -> Any:
    """random.setstate wants tuples all the way down; a checkpoint round trip may give lists."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# --------------------------------------------------------------------------------------------
# Finding checkpoints


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, path)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1][1] if found else None


def resolve_resume(run_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint `run.resume` points at: None for "", the newest for "auto" (None when the
    run has none yet, so `--resume` is safe on a job's first start), else the given path."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise R1kitError(
            f"run.resume={resume!r} is not a complete checkpoint (no {TRAINER_STATE} in it); "
            f"pass a {CHECKPOINTS}/step_N directory or `auto`"
        )
    return path


def find_run_dir(output_dir: str | Path, recipe: str, resume: str) -> Path | None:
    """The run to continue when `run.name` is empty: the checkpoint's own run for a path, the
    newest `<recipe>-*` run with a checkpoint for `auto`; None when there is none (start afresh)."""
    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        return path.parent.parent if path.parent.name == CHECKPOINTS else None
    root = Path(output_dir)
    runs = [p for p in root.glob(f"{recipe}-*") if latest_checkpoint(p) is not None] if root.is_dir() else []
    return max(runs, key=lambda p: latest_checkpoint(p).stat().st_mtime) if runs else None


# --------------------------------------------------------------------------------------------
# Saving and loading


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict[str, Any],
    models: Mapping[str, torch.nn.Module] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint step_N atomically and keep the newest `keep` (0 keeps all).

    `model` is the unwrapped trained model (a PreTrainedModel or PeftModel); `state` holds what
    the recipe needs besides weights and the main optimizer (rng per rank, data position,
    counters, other optimizers); `models` are further models written to `<name>/` (GRPO's
    reference once it differs from the starting model, PPO's value model).
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f"step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    for name, other in (models or {}).items():
        other.save_pretrained(tmp / name, safe_serialization=True)
    trainer = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **state}
    torch.save(trainer, tmp / TRAINER_STATE)
    _commit(run_dir, step, tmp, keep)
    _test_kill(step)
    return final


def save_sharded_checkpoint(run_dir: str | Path, step: int, *, dist, write: Callable[[Path], None], trainer: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint step_N of an FSDP run from every rank (a collective): `write(tmp)` puts
    each rank's shards into the checkpoint's temporary directory (r1kit/train/fsdp.py), then rank 0
    adds `trainer` (as trainer.pt, without optimizer states: those are in the shards) and makes
    the checkpoint complete by the same atomic rename as `save_checkpoint`."""
    from r1kit.train import distributed as dist_

    root = Path(run_dir) / CHECKPOINTS
    tmp = root / f"step_{step}.tmp"
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist_.barrier(dist)
    write(tmp)
    dist_.barrier(dist)  # every rank's shards are written
    if dist.is_main:
        torch.save({"step": step, **trainer}, tmp / TRAINER_STATE)
        _commit(run_dir, step, tmp, keep)
    dist_.barrier(dist)
    if dist.is_main:
        _test_kill(step)
    return root / f"step_{step}"


def _commit(run_dir: str | Path, step: int, tmp: Path, keep: int) -> None:
    """fsync the written `tmp`, rename it to step_N (replacing an earlier attempt's) and rotate."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step_{step}"
    _fsync_tree(tmp)
    if final.exists():  # a checkpoint of this step from an earlier attempt: replace it
        old = root / f"step_{step}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    _rotate(run_dir, step, keep)


def _test_kill(step: int) -> None:
    if os.environ.get(KILL_AFTER_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (weights are loaded from its model/ and ref/ dirs)."""
    return torch.load(Path(checkpoint) / TRAINER_STATE, map_location="cpu", weights_only=True)


def _rotate(run_dir: str | Path, step: int, keep: int) -> None:
    """Drop checkpoints beyond the newest `keep`, and any newer than `step`: those belong to a
    future this run abandoned by resuming from an older checkpoint. Leftover .tmp dirs go too."""
    found = checkpoint_dirs(run_dir)
    stale = [p for s, p in found if s > step]
    current = [p for s, p in found if s <= step]
    if keep > 0:
        stale += current[:-keep]
    stale += [p for p in (Path(run_dir) / CHECKPOINTS).glob("step_*.tmp")]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):  # files before the dirs that hold them
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Ctrl-C


INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
"""The signals a run answers by saving a checkpoint: Ctrl-C, and SIGTERM from a job scheduler."""


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class InterruptGuard:
    """Defers Ctrl-C (SIGINT) and SIGTERM while the body of `with guard:` runs, then raises
    KeyboardInterrupt at the end.

    Use it around the part of a step that changes the model, optimizer and counters, so that a
    KeyboardInterrupt only ever arrives between consistent states. A second signal inside the
    body raises at once and sets `aborted` (the state may then be half-updated: do not save it).
    Outside the main thread, signals cannot be caught and the guard does nothing.
    """

    def __init__(self) -> None:
        self.pending = False
        self.aborted = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        self.pending = False
        if _on_main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in INTERRUPTS}
        return self

    def _handler(self, signum, frame) -> None:
        if self.pending:
            self.aborted = True
            raise KeyboardInterrupt
        self.pending = True
        print("r1kit: interrupt received; finishing this step, then saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous = {}
        if exc_type is None and self.pending:
            raise KeyboardInterrupt


class TerminateAsInterrupt:
    """While in effect, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so a pre-empted job
    saves its last completed step like an interrupted one (Python's default would end the process
    without running any cleanup)."""

    def __enter__(self) -> TerminateAsInterrupt:
        self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._raise)} if _on_main_thread() else {}
        return self

    @staticmethod
    def _raise(signum, frame) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
