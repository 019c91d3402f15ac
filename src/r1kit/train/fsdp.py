"""Fully sharded data parallelism (FSDP2) under torchrun: `run.parallel=fsdp`.

Each rank holds 1/K of every trained parameter, its gradient and its optimizer state
(`torch.distributed.fsdp.fully_shard` on every decoder layer and on the root); a layer's weights
are all-gathered for its forward and backward and its gradient reduce-scattered after. The data
split and the loss normalisation are DDP's (train/distributed.py), so K ranks still take the step
one process would take, up to the order of float sums.

What r1kit simplifies, and how the pieces fit:

- The model a recipe builds stays an ordinary module on every rank (the *mirror*); `shard` works
  on a deep copy of it, which is the learner. The mirror serves everything that is not a training
  pass: rollouts (the recipe's rollout engine runs on it unchanged), rank 0's evaluations and the
  final Hugging Face directory. After the optimizer has stepped, `gather_into` all-gathers the
  learner's trainable weights into it (`torch.distributed.checkpoint.state_dict`, full state dict),
  once per update before a rollout and before an evaluation or the final save. This is the
  simplest correct way to generate with gathered weights, not the leanest: every rank holds the
  full weights once, so FSDP here saves the gradients' and the optimizer's memory (3/4 of AdamW's
  fp32 footprint, times (K-1)/K), not the weights'.
- A frozen reference (GRPO's, PPO's) is sharded too (`shard` without an optimizer); every rank
  scores its own rows with it in the same number of passes, as the learner's.
- On a GPU with bf16 precision the sharded modules compute in bf16 over fp32 shards and reduce
  gradients in fp32 (`MixedPrecisionPolicy`); on a CPU the recipe's autocast does as it does
  without FSDP.
- Checkpoints are sharded (`save_sharded` / `load_sharded`): every rank writes its shards of the
  models and optimizers with `torch.distributed.checkpoint`, which reads them back on any number
  of ranks. A checkpoint holds no Hugging Face `model/` directory then; the run's final `model/` is
  one (rank 0 writes the mirror).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r1kit.errors import R1kitError
from r1kit.train.distributed import Dist

PARALLEL = ("auto", "ddp", "fsdp")
SHARDED = "sharded"
"""The folder of a checkpoint that holds the `torch.distributed.checkpoint` shards."""


def strategy(parallel: str, dist: Dist) -> str:
    """What a run of `run.parallel` does on `dist`: `none` (one process), `ddp` or `fsdp`.

    fsdp needs torchrun's processes: sharding over one process saves nothing, so rather than
    quietly training unsharded (a 7B run that then runs out of memory far from the cause) a
    one-process run with run.parallel=fsdp is an error."""
    if parallel not in PARALLEL:
        raise R1kitError(f"run.parallel={parallel!r} is not one of {list(PARALLEL)}")
    if parallel == "fsdp" and not dist.enabled:
        raise R1kitError("run.parallel=fsdp shards the model over torchrun's processes, but this run has one; start it with torchrun --nproc_per_node K (K >= 2) or set run.parallel=auto")
    if not dist.enabled:
        return "none"
    return "fsdp" if parallel == "fsdp" else "ddp"


def layer_classes(model: torch.nn.Module) -> set[str]:
    """The class names of `model`'s decoder layers: the `_no_split_modules` of every Hugging Face
    model inside it (a PEFT wrapper's base model, a value head's backbone)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def shard(model: torch.nn.Module, bf16_on_gpu: bool = False) -> torch.nn.Module:
    """`model` sharded in place over the process group: `fully_shard` on each decoder layer, then
    on the root (embeddings, final norm, LM or value head). bf16_on_gpu: compute in bf16, reduce
    gradients in fp32 (`MixedPrecisionPolicy`)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    learner = model
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16_on_gpu else MixedPrecisionPolicy()
    classes = layer_classes(learner)
    for module in learner.modules():
        if type(module).__name__ in classes:
            fully_shard(module, mp_policy=policy)
    fully_shard(learner, mp_policy=policy)
    return learner


def gather_into(learner: torch.nn.Module, mirror: torch.nn.Module) -> None:
    """Copy the sharded `learner`'s trainable weights, all-gathered, into the ordinary `mirror` it
    was copied from (every rank; a collective). Frozen weights never change, so they are left out;
    the copy is in place, so an engine holding the mirror's tensors sees the new values."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(learner, options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True))
    missing, unexpected = mirror.load_state_dict(full, strict=False)
    if unexpected:
        raise RuntimeError(f"the sharded learner has weights its mirror lacks: {unexpected[:3]}")


def save_sharded(path: Path, learners: dict[str, torch.nn.Module], optimizers: dict[str, tuple[str, torch.optim.Optimizer]]) -> None:
    """Write every rank's shards of `learners` (by name) and `optimizers` (name -> (the learner it
    steps, optimizer)) to `path` with `torch.distributed.checkpoint` (every rank; a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state: dict[str, Any] = {f"model/{name}": get_model_state_dict(m) for name, m in learners.items()}
    state.update({f"optimizer/{name}": get_optimizer_state_dict(learners[owner], opt) for name, (owner, opt) in optimizers.items()})
    dcp.save(state, checkpoint_id=str(path))


def load_model_shards(path: Path, name: str, learner: torch.nn.Module) -> None:
    """Put learner `name`'s shards from the checkpoint at `path` into `learner`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {f"model/{name}": get_model_state_dict(learner)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(learner, state[f"model/{name}"])


def load_optimizer_shards(path: Path, name: str, learner: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Put optimizer `name`'s state (over `learner`) from the checkpoint at `path` into `opt`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {f"optimizer/{name}": get_optimizer_state_dict(learner, opt)}  # the layout to read into (state initialised)
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(learner, opt, state[f"optimizer/{name}"])


class GatheringEngine:
    """A rollout engine over a mirror whose `sync_weights` first gathers the sharded learner's
    new weights into it (`pull`, a collective every rank makes after each update, as the recipes
    already call `sync_weights` there); everything else is the wrapped engine's."""

    def __init__(self, engine: Any, pull):
        self._engine, self._pull = engine, pull

    def sync_weights(self, model: torch.nn.Module) -> None:
        self._pull()
        self._engine.sync_weights(model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)
