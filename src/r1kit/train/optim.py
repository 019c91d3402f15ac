"""AdamW with linear warm-up and cosine/linear/constant decay, and gradient clipping."""

from __future__ import annotations

import math
import warnings

import torch

from r1kit.config import OptimArgs


def build_optimizer(params, args: OptimArgs) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad, with torch's fused kernel where it has one.

    The fused kernel is the same AdamW in one pass over all parameters (CPU and CUDA, floating
    dtypes), several times faster than the multi-tensor default on CPU. Elsewhere the default is
    used.
    """
    params = [p for p in params if p.requires_grad]
    kwargs = dict(lr=args.lr, betas=tuple(args.betas), weight_decay=args.weight_decay)
    if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # an older torch without the kernel for this device or dtype
            pass
    return torch.optim.AdamW(params, **kwargs)


def lr_lambda(args: OptimArgs, total_steps: int):
    """Multiplier of the peak lr at a step: linear warm-up, then the chosen decay to min_lr_ratio."""

    def f(step: int) -> float:
        if args.warmup_steps and step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        if args.schedule == "constant" or total_steps <= args.warmup_steps:
            return 1.0
        progress = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if args.schedule == "cosine" else 1 - progress
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * decay

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, args: OptimArgs, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, total_steps))


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip in place and return the global gradient norm before clipping (inf/nan included)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm)


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched, max_grad_norm: float, finite: bool = True) -> tuple[float, float]:
    """Clip, step (only when the gradient norm is finite, so a NaN/inf never reaches the weights),
    zero the gradients and advance the schedule. `finite` False (a loss of the step was not
    finite): the gradient is dropped and the weights stay. Returns (norm before clipping, NaN for
    a skipped step; the lr this step used -- after sched.step() the scheduler already reports the
    next step's)."""
    if not finite:  # no part of a step with a NaN/inf loss is applied
        opt.zero_grad(set_to_none=True)
    lr = sched.get_last_lr()[0]
    grad_norm = clip_gradients(model, max_grad_norm) if finite else math.nan
    if math.isfinite(grad_norm):
        opt.step()
    opt.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # A skipped first step is deliberate; torch would warn that the schedule ran before the optimizer.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
        sched.step()
    return grad_norm, lr
