"""Comparing two computations that differ only in float rounding, with tolerances derived from the
arithmetic rather than from one CPU's rounding.

Micro-batching, a chunked LM head, gradient checkpointing, compiled layers or another batch split
change the order in which float32 sums are taken: the same gradient comes out moved by rounding. A
gradient element is a sum over the K tokens and features that reach it; float32 sums it to within
typically sqrt(K) * 2^-24 (at worst K * 2^-24) of the sum of its terms' magnitudes (Higham, ch. 4),
and on another CPU (other SIMD width, other matmul blocking, other thread count) the order is
another one. With K up to ~1e4 in these tiny models and terms that cancel (advantages sum to zero in
a group), that is up to ~1e-5 of the tensor's largest element; GRADIENT_RTOL allows ten times that.
A wrong weighting of micro-batches, tokens or ranks moves gradients by percents, a hundred times more.

The weights after an optimizer step are the wrong place to look. Adam's first step is about
lr * sign(grad): where a gradient is near 0 its sign is rounding, and the two runs move that weight
by +lr and -lr. So tests that compare whole runs record the gradient each optimizer step is given
(`record_steps`) and compare those; runs of several steps use plain SGD (`sgd_for_adamw`), whose
step is proportional to the gradient, so the runs stay a rounding apart (for as long as the lr is
modest: a large one lets each step amplify the last one's difference) and a mis-scaled gradient
stays visible (Adam's step is blind to scale). `adam_first_step_tolerance`
bounds Adam's first step where a test is about Adam itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

GRADIENT_RTOL = 1e-4
"""Largest difference allowed between two summation orders of one float32 gradient, as a fraction of
the largest element of that gradient tensor (see the module docstring)."""

ADAM_EPS = 1e-8
"""torch.optim.AdamW's default eps, which r1kit's optimizer keeps."""


@contextlib.contextmanager
def record_steps() -> Iterator[list[list[torch.Tensor]]]:
    """Record the gradients every optimizer step is given while the block runs (after clipping, as
    the step sees them): one list per step, in parameter order, for every optimizer (a recipe with a
    policy and a value optimizer records both, in the order they step)."""
    steps: list[list[torch.Tensor]] = []

    def record(optimizer, args, kwargs):
        steps.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"] if p.grad is not None])

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield steps
    finally:
        handle.remove()


def sgd_for_adamw(monkeypatch) -> None:
    """Make every torch.optim.AdamW built from here on plain SGD at the same lr and weight decay."""

    def sgd(params, lr=1e-3, betas=None, eps=None, weight_decay=0.0, fused=None, foreach=None, **kwargs):
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)

    monkeypatch.setattr(torch.optim, "AdamW", sgd)


def gradient_atol(want: torch.Tensor, rtol: float = GRADIENT_RTOL) -> float:
    """The absolute tolerance of one gradient tensor: rtol of its largest element."""
    return rtol * float(want.abs().max()) if want.numel() else 0.0


def assert_same_gradients(got: list[list[torch.Tensor]], want: list[list[torch.Tensor]], rtol: float = GRADIENT_RTOL) -> None:
    """Two runs' recorded steps (`record_steps`) hold the same gradients up to summation order:
    the same number of steps and tensors, each element within rtol of its tensor's largest."""
    assert len(got) == len(want), f"{len(got)} optimizer steps against {len(want)}"
    for step, (g_step, w_step) in enumerate(zip(got, want), start=1):
        assert len(g_step) == len(w_step), f"step {step}: {len(g_step)} gradients against {len(w_step)}"
        for i, (g, w) in enumerate(zip(g_step, w_step)):
            torch.testing.assert_close(g, w, rtol=0, atol=gradient_atol(w, rtol), msg=lambda m: f"step {step}, gradient {i}: {m}")


def relative_difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """|got - want| / |want| over all tensors of one step together (2-norms)."""
    num = sum(float((g.double() - w.double()).square().sum()) for g, w in zip(got, want))
    den = sum(float(w.double().square().sum()) for w in want)
    return (num / den) ** 0.5


def assert_within(got: torch.Tensor, want: torch.Tensor, allowed: torch.Tensor, what: str = "") -> None:
    """|got - want| <= allowed, element by element (allowed: a tensor of per-element tolerances)."""
    excess = (got.detach().double() - want.detach().double()).abs() / allowed
    worst = float(excess.max()) if excess.numel() else 0.0
    assert worst <= 1, f"{what}: {int((excess > 1).sum())} of {excess.numel()} elements apart by more than allowed (worst {worst:.3g}x)"


def adam_first_step_tolerance(grad: torch.Tensor, grad_atol: float, lr: float, weight: torch.Tensor) -> torch.Tensor:
    """How far two runs' weights may be apart after Adam's first step when their gradients differ by
    at most grad_atol per element (weight decay 0).

    The first step is lr * g / (|g| + eps) (bias-corrected m = g and sqrt(v) = |g|). Its derivative
    in g is eps / (|g| + eps)^2, so gradients within d of g move it by at most
    lr * d * eps / (|g| - d + eps)^2: nothing where |g| >> d, and up to 2 lr where |g| <= d (the sign
    itself is rounding). Plus float32's own rounding in each run: about five roundings of half an
    eps each in the step (moments, bias corrections, square root, quotient) and one in the new
    weight, at most 6 eps of |weight| + lr for the two runs together (2 seen)."""
    g = grad.abs().double()
    spread = lr * grad_atol * ADAM_EPS / ((g - grad_atol).clamp_min(0) + ADAM_EPS) ** 2
    rounding = 6 * torch.finfo(torch.float32).eps * (weight.detach().abs().double() + lr)
    return spread.clamp_max(2 * lr) + rounding
