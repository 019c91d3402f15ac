"""PPO's clipped value loss, explained variance and the KL controllers against hand values."""

import math

import pytest
import torch

from r1kit.algorithms.value import AdaptiveKLController, FixedKLController, explained_variance, value_loss

pytestmark = pytest.mark.numerics


def test_value_loss_hand_values_and_clipfrac():
    # old value 1.0, clip 0.2 -> clipped values live in [0.8, 1.2]; return R = 2.0
    # v = 1.1 inside:  0.5 * (1.1 - 2)^2 = 0.405 both terms
    # v = 1.3 above:   unclipped 0.5 * 0.7^2 = 0.245, clipped 0.5 * (1.2 - 2)^2 = 0.32 -> 0.32 (clip active)
    # v = 0.7 below:   unclipped 0.5 * 1.3^2 = 0.845, clipped 0.5 * (0.8 - 2)^2 = 0.72 -> 0.845
    # loss = (0.405 + 0.32 + 0.845) / 3 = 0.523333; clipfrac = 1/3
    # gradient: (v - R) / 3 where unclipped wins: [-0.3, 0, -0.433333]; padding 0
    values = torch.tensor([[1.1, 1.3, 0.7, 5.0]], requires_grad=True)
    old_values = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    returns = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, metrics = value_loss(values, old_values, returns, mask, clip_range=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.523333, abs=1e-6)
    torch.testing.assert_close(values.grad, torch.tensor([[-0.3, 0.0, -0.433333, 0.0]]))
    assert metrics["vf/clipfrac"] == pytest.approx(1 / 3)
    assert metrics["vf/mse"] == pytest.approx(0.996667, abs=1e-6)  # (0.81 + 0.49 + 1.69) / 3


def test_value_clipping_switches_on_just_past_the_boundaries():
    # old 1.0, clip 0.2. Upper boundary, R = 2: v = 1.19 moves freely (gradient v - R = -0.81);
    # v = 1.21 is clipped to 1.2 whose loss (0.8^2 = 0.64) beats (0.79^2 = 0.6241): gradient 0.
    # Lower boundary, R = 0: v = 0.81 free (gradient 0.81); v = 0.79 clipped to 0.8: gradient 0.
    values = torch.tensor([[1.19, 1.21, 0.81, 0.79]], dtype=torch.float64, requires_grad=True)
    returns = torch.tensor([[2.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    loss, metrics = value_loss(values, torch.ones_like(returns), returns, torch.ones(1, 4), clip_range=0.2)
    loss.backward()
    torch.testing.assert_close(values.grad * 4, torch.tensor([[-0.81, 0.0, 0.81, 0.0]], dtype=torch.float64))
    assert metrics["vf/clipfrac"] == 0.5


def test_value_loss_without_clipping_is_half_mse():
    values = torch.tensor([[1.3, 0.0]])
    loss, metrics = value_loss(values, torch.zeros(1, 2), torch.tensor([[2.0, 1.0]]), torch.ones(1, 2), None)
    assert loss.item() == pytest.approx(0.5 * (0.49 + 1.0) / 2)  # 0.3725
    assert metrics["vf/clipfrac"] == 0.0


def test_explained_variance_hand_value():
    # returns [1, 2, 4]: mean 7/3, var (16/9 + 1/9 + 25/9) / 3 = 14/9
    # residual returns - values = [0, 0, 1]: mean 1/3, var (1/9 + 1/9 + 4/9) / 3 = 2/9
    # 1 - (2/9) / (14/9) = 1 - 1/7 = 0.857143; the padding entry is ignored
    values = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    returns = torch.tensor([[1.0, 2.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.857143, abs=1e-6)
    assert explained_variance(returns, returns, mask) == 1.0
    assert math.isnan(explained_variance(values, torch.ones(1, 4), mask))


def test_adaptive_kl_controller_moves_by_the_clipped_proportional_error():
    # target 6, horizon 10000, 256 samples per step
    # KL 12: error clip(12/6 - 1) = clip(1.0) = 0.2 -> beta = 0.2 * (1 + 0.2 * 256/10000) = 0.201024
    # KL 3:  error clip(3/6 - 1) = clip(-0.5) = -0.2 -> beta = 0.2 * (1 - 0.00512) = 0.198976
    # KL 6.6: error 0.1 -> beta = 0.2 * (1 + 0.1 * 0.0256) = 0.200512
    for kl, expected in [(12.0, 0.201024), (3.0, 0.198976), (6.6, 0.200512)]:
        controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
        controller.update(kl, n_steps=256)
        assert controller.value == pytest.approx(expected, abs=1e-9)


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(100.0, n_steps=256)
    assert controller.value == 0.05
