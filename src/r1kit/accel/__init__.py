"""Hardware-specific speed-ups, behind one seam.

The rest of r1kit is plain PyTorch and transformers. What is there only for speed on particular
hardware lives in this package and reaches a run through three calls, chosen by device under the
config field `run.accel` (`auto` | `off`):

    accel.setup(config.run.accel, device)             # process-wide; `create_run` makes this call
    accel.apply(model, device, config.run.accel)      # the model a recipe trains, once, after loading
    engine = accel.rollout_engine(model, tokenizer, processes=config.run.rollout_processes)

| speed-up                                          | module          | where                    | by           |
|---------------------------------------------------|-----------------|--------------------------|--------------|
| OpenMP threads wait passively after a short spin  | openmp.py       | CPU                      | command line |
| glibc's malloc keeps freed memory                 | malloc.py       | CPU, Linux glibc         | setup        |
| linear layers through oneDNN                      | onednn.py       | x86 CPU, float32         | apply        |
| plain-matmul attention for one-token decode steps | attention.py    | CPU, models on SDPA      | apply        |
| flat decode step (oneDNN-packed when large)       | fast_decode.py  | CPU, Llama-family models | engine       |
| decode step as a CUDA graph                       | graph_decode.py | CUDA, Llama-family models| engine       |
| rollouts split among forked worker processes      | workers.py      | CPU, Linux               | engine       |
| small models decode on one thread                 | engine.py       | CPU, PASSIVE waits       | engine       |

With `off` nothing here is applied: the model keeps transformers' modules and attention, malloc
keeps glibc's defaults, and rollouts run in one process through `r1kit.rollout.HFEngine`, the
model's own forward with a KV cache. The results are the same up to float rounding, except that a
rollout `auto` splits among processes draws other random numbers (each share has its own seed).
The OpenMP waits are the one exception: the command line sets them before torch loads, before any
config is read (`openmp.py`).

This module imports its torch-using modules inside the functions: the command line imports
`r1kit.accel.openmp` before torch, and that imports this package first.
"""

from __future__ import annotations

from r1kit.errors import R1kitError

MODES = ("auto", "off")
"""The values of `run.accel`."""

_mode = "auto"


def current() -> str:
    """The mode of this process: the last `setup`'s (`auto` before any)."""
    return _mode


def setup(mode: str, device, rollout_processes: int = 0) -> None:
    """Make this process's settings for `mode` on `device` (a torch.device or its name): with
    `auto` on CPU under glibc, malloc keeps freed memory (`malloc.keep_freed_memory`). Records the
    mode for `rollout_engine`. Idempotent; `off` undoes nothing an earlier `auto` set.
    `rollout_processes`: the run's, checked against the mode before anything runs."""
    global _mode
    _check(mode, rollout_processes)
    _mode = mode
    if mode == "auto":
        from r1kit.accel.malloc import keep_freed_memory

        keep_freed_memory(str(device))


def apply(model, device, mode: str = "auto"):
    """`setup(mode, device)`, then, with `auto` on CPU, route `model`'s linear layers through oneDNN
    (`onednn.onednn_linears`; not with compiled layers) and give it the plain-matmul attention of
    one-token decode steps (`attention.install`). Call it once on the model a recipe trains, after loading (and LoRA),
    before copying it (GRPO's reference): copies keep the routing. Returns `model`."""
    setup(mode, device)
    if mode == "off" or _device_type(device) != "cpu":
        return model
    from r1kit.accel import attention, onednn
    from r1kit.algorithms.logprobs import inner_model
    from r1kit.models.compile import runs_compiled

    inner = inner_model(model)
    if not runs_compiled(inner):
        onednn.onednn_linears(model)
    attention.install(inner)
    return model


def rollout_engine(model, tokenizer=None, *, processes: int = 0, **kwargs):
    """A rollout engine (`r1kit.rollout.RolloutEngine`) for `model` under this process's mode:
    `engine.AcceleratedEngine` with `auto`, the plain `HFEngine` with `off`. `processes`: how many
    processes may share a rollout (`run.rollout_processes`); kwargs: the engine's pad and eos ids."""
    _check(_mode, processes)
    if _mode == "off":
        from r1kit.rollout import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    from r1kit.accel.engine import AcceleratedEngine

    return AcceleratedEngine(model, tokenizer, processes=processes, **kwargs)


def _check(mode: str, processes: int = 0) -> None:
    if mode not in MODES:
        raise R1kitError(f"run.accel is {mode!r}; choose one of {list(MODES)}")
    if mode == "off" and processes > 1:
        raise R1kitError(f"run.rollout_processes={processes} splits rollouts among processes, which is part of run.accel=auto; set run.rollout_processes to 0 or 1, or run.accel=auto")


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]
