"""Data-parallel training under torchrun: one process per device, each with a share of the prompts.

`torchrun --nproc_per_node K -m r1kit grpo ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
`init_distributed` reads them, joins the process group (nccl on CUDA, gloo on CPU) and gives each
rank its device. Without those variables it returns `SINGLE` and every helper here is a no-op, so a
recipe has one code path for one process and for many.

How a recipe splits the work (r1kit/train/run.py sets this up for every recipe):

- every rank holds the same data stream (r1kit/data/stream.py) and draws the step's whole batch,
  then keeps its consecutive share of it (`rank_slice`: B prompts, pairs or examples per step must
  divide by K), so the streams stay identical on all ranks and a checkpoint needs one data position;
- GRPO samples a group's G completions on the rank that owns the prompt, so advantages are computed
  on whole groups without communication (`scale=batch` uses the rank's batch std); PPO's
  completions are sampled by their prompt's rank too;
- generation runs on the unwrapped module; the update runs through DDP, which averages gradients
  (or, with run.parallel=fsdp, through FSDP2, whose reduce-scatter averages them the same way:
  r1kit/train/fsdp.py);
- metrics are averaged over ranks (counts such as dynamic/dropped_groups are then per-rank means);
  only rank 0 writes logs, samples, checkpoints and evaluates.

Loss normalisation. DDP averages gradients, so the K-rank gradient is (1/K) sum_r grad L_r:

- seq_mean_token_mean and seq_mean_token_sum_norm are means over sequences, each rank holds N/K of
  them, and (1/K) sum_r (K/N) sum_{i in r} l_i = (1/N) sum_i l_i: K ranks x B/K prompts give the
  gradient of 1 rank x B prompts exactly (up to float rounding);
- token_mean divides by the number of tokens, which differs between ranks; `token_mean_scale`
  rescales each rank's loss by K * T_r / T (one all-reduce of T), which makes it exact too. SFT,
  pretraining and distillation's token sums are divided by T / K the same way;
- DPO's and the reward model's losses are means over pairs, each rank holding B / K of them: exact
  as the sequence means are.
"""

from __future__ import annotations

import datetime
import io
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as torch_dist

from r1kit.errors import R1kitError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank of world_size (local_rank on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when `init_distributed` created the process group (and `shutdown` should end it)."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def init_distributed(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the torchrun process group when RANK/WORLD_SIZE are set; returns (dist, this rank's device).

    `device` is model.device: `auto` picks cuda when available. Under torchrun a CUDA rank uses
    cuda:LOCAL_RANK; a CPU run uses gloo.
    """
    from r1kit.models.load import resolve_device

    base = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, base
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    owns = not torch_dist.is_initialized()
    if owns:
        backend = "nccl" if base.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return Dist(rank, world, local_rank, owns), base


def shutdown(dist: Dist, clean: bool = True) -> None:
    """Leave the process group if `init_distributed` joined it; `clean` first waits for every
    rank (skip that after an error, when the other ranks may never arrive)."""
    if dist.enabled and dist.owns_group and torch_dist.is_initialized():
        if clean:
            torch_dist.barrier()
        torch_dist.destroy_process_group()


def rank_share(total: int, dist: Dist, what: str = "grpo.prompts_per_step") -> int:
    """This rank's part of `total` items; an error unless it divides evenly."""
    if total % dist.world_size:
        raise R1kitError(f"{what}={total} must divide by the number of processes ({dist.world_size}); pick a multiple of {dist.world_size}")
    return total // dist.world_size


def rank_rows(prompts: int, group_size: int, mini_batches: int, dist: Dist, section: str) -> int:
    """The rows this rank trains on a step (prompts / world_size, times group_size); an error
    naming `section`'s settings unless the prompts divide evenly among the ranks and give every
    mini-batch at least one row."""
    rows = rank_share(prompts, dist, f"{section}.prompts_per_step") * group_size
    if mini_batches > rows:
        raise R1kitError(
            f"{section}.mini_batches={mini_batches} is more than the {rows} rows each of the {dist.world_size} process(es) trains on a step; "
            f"lower it or raise {section}.prompts_per_step"
        )
    return rows


def rank_slice(items: Sequence[T], dist: Dist, what: str) -> list[T]:
    """This rank's consecutive share of `items`, which every rank drew alike; an error naming the
    setting `what` unless they divide evenly."""
    per = rank_share(len(items), dist, what)
    return list(items[dist.rank * per : (dist.rank + 1) * per])


def wrap_ddp(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """The learner: DDP around `model` when there are several ranks, else `model` itself."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch_dist.barrier()


def _device(dist: Dist) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch_dist.get_backend() == "nccl" else torch.device("cpu")


def max_int(x: int, dist: Dist) -> int:
    """The largest `x` over ranks."""
    if not dist.enabled:
        return x
    t = torch.tensor([x], dtype=torch.long, device=_device(dist))
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return int(t.item())


def sum_float(x: float, dist: Dist) -> float:
    """The sum of `x` over ranks (float64)."""
    if not dist.enabled:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=_device(dist))
    torch_dist.all_reduce(t)
    return float(t.item())


def all_finite(x: torch.Tensor, dist: Dist) -> bool:
    """True when `x` is finite on every rank, so that all ranks skip (or take) an update together:
    under DDP a rank that skips backward alone would leave the others waiting in the all-reduce."""
    ok = bool(torch.isfinite(x).all())
    return max_int(0 if ok else 1, dist) == 0


def token_mean_scale(n_tokens: float, dist: Dist) -> float:
    """Factor for a rank's token_mean loss so that DDP's gradient average equals the token mean
    over all ranks' tokens: K * T_r / T (1 for one process)."""
    if not dist.enabled:
        return 1.0
    total = sum_float(n_tokens, dist)
    return dist.world_size * n_tokens / total if total > 0 else 1.0


def mean_metrics(metrics: dict[str, Any], dist: Dist) -> dict[str, Any]:
    """Each numeric metric averaged over the ranks that report it (others kept from rank 0)."""
    if not dist.enabled:
        return metrics
    gathered: list[dict[str, Any]] = [{} for _ in range(dist.world_size)]
    torch_dist.all_gather_object(gathered, metrics)
    out = dict(gathered[0])
    for key in {k for m in gathered for k in m}:
        values = [m[key] for m in gathered if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)]
        if values:
            out[key] = sum(values) / len(values)
    return out


def gather_object(obj: Any, dist: Dist) -> list[Any]:
    """`obj` from every rank, in rank order (every rank gets the list)."""
    if not dist.enabled:
        return [obj]
    # Tensors go through torch.save bytes: all_gather_object's own pickling of tensors breaks
    # on some torch versions.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    out: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(out, buffer.getvalue())
    return [torch.load(io.BytesIO(b), weights_only=False) for b in out]


def broadcast_object(obj: Any, dist: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
