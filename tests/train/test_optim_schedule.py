"""AdamW, the warm-up + decay schedule (values worked out by hand), and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch

from r1kit.config import OptimArgs
from r1kit.train.optim import build_optimizer, build_scheduler, clip_gradients, lr_lambda


@pytest.mark.parametrize(
    "schedule, step, multiplier",
    [
        # warm-up of 10 steps: (step + 1) / 10, whatever the schedule
        ("cosine", 0, 0.1),
        ("cosine", 4, 0.5),
        ("cosine", 9, 1.0),
        ("linear", 0, 0.1),
        ("constant", 5, 0.6),
        # after warm-up, 100 decay steps to min_lr_ratio = 0.1: progress = (step - 10) / 100
        ("cosine", 10, 1.0),
        ("cosine", 35, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))),  # progress 1/4: 0.86820
        ("cosine", 60, 0.55),  # halfway: 0.1 + 0.9 * 0.5
        ("cosine", 110, 0.1),  # the end: the floor
        ("cosine", 500, 0.1),  # past the end: stays at the floor
        ("linear", 35, 0.1 + 0.9 * 0.75),
        ("linear", 60, 0.55),
        ("linear", 110, 0.1),
        ("constant", 10, 1.0),
        ("constant", 110, 1.0),
    ],
)
def test_lr_multiplier_at_warmup_middle_and_end(schedule, step, multiplier):
    f = lr_lambda(OptimArgs(warmup_steps=10, schedule=schedule, min_lr_ratio=0.1), total_steps=110)
    assert f(step) == pytest.approx(multiplier, abs=1e-12)


def test_no_warmup_starts_at_the_peak():
    f = lr_lambda(OptimArgs(warmup_steps=0, schedule="cosine", min_lr_ratio=0.0), total_steps=4)
    assert [f(s) for s in range(5)] == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0])


def test_run_shorter_than_warmup_stays_on_the_warmup_line_then_flat():
    f = lr_lambda(OptimArgs(warmup_steps=10, schedule="cosine"), total_steps=5)
    assert [f(s) for s in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert f(10) == 1.0


def test_scheduler_drives_the_optimizer_lr():
    w = torch.nn.Parameter(torch.zeros(3))
    args = OptimArgs(lr=2e-3, warmup_steps=2, schedule="linear", min_lr_ratio=0.0)
    opt = build_optimizer([w], args)
    sched = build_scheduler(opt, args, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        w.grad = torch.ones(3)
        opt.step()
        sched.step()
    # warm-up 1/2, 2/2; then linear over 4 steps: 1, 3/4, 1/2, 1/4 of the peak
    assert seen == pytest.approx([1e-3, 2e-3, 2e-3, 1.5e-3, 1e-3, 0.5e-3])


def test_build_optimizer_is_adamw_with_the_configured_hyperparameters_and_skips_frozen_params():
    trained, frozen = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    opt = build_optimizer([trained, frozen], OptimArgs(lr=3e-4, betas=[0.8, 0.95], weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    (group,) = opt.param_groups
    assert group["params"] == [trained]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.8, 0.95), 0.1)


@pytest.mark.numerics
def test_build_optimizer_uses_the_fused_kernel_on_cpu_and_steps_like_plain_adamw():
    torch.manual_seed(0)
    start, grads = torch.randn(5, 3), [torch.randn(5, 3) for _ in range(4)]
    args = OptimArgs(lr=1e-2, betas=[0.9, 0.99], weight_decay=0.1)
    fused_w, plain_w = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fused = build_optimizer([fused_w], args)
    plain = torch.optim.AdamW([plain_w], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    assert fused.param_groups[0]["fused"] is True
    for g in grads:
        fused_w.grad, plain_w.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    assert not torch.equal(fused_w, start)
    torch.testing.assert_close(fused_w, plain_w, rtol=1e-6, atol=1e-7)


def test_clip_gradients_returns_the_norm_before_clipping_and_clips_to_max_norm():
    model = torch.nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
    assert clip_gradients(model, 1.0) == pytest.approx(5.0)
    assert model.weight.grad[0].tolist() == pytest.approx([0.6, 0.8], rel=1e-5)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert clip_gradients(model, 0.0) == pytest.approx(5.0)  # 0 disables clipping
    assert model.weight.grad.tolist() == [[3.0, 4.0]]
    model.weight.grad = torch.tensor([[float("inf"), 0.0]])
    assert math.isinf(clip_gradients(model, 1.0))  # reported, so the step can be skipped


def test_clip_gradients_without_gradients_is_zero():
    assert clip_gradients(torch.nn.Linear(2, 1), 1.0) == 0.0
