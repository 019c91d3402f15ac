"""Group advantages (GRPO / Lite PPO / Dr. GRPO), RLOO, whitening and GAE against hand values."""

import math

import pytest
import torch

from r1kit.algorithms.advantages import gae, group_advantages, rloo_advantages, whiten
from r1kit.errors import R1kitError

pytestmark = pytest.mark.numerics


def test_group_advantages_one_group_unbiased_std():
    # [1, 0, 0, 1]: mean 0.5, deviations +-0.5
    # unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.577350
    # eps = 0:     0.5 / 0.577350          = 0.866025
    # eps = 1e-4:  0.5 / (0.577350 + 1e-4) = 0.865875
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    exact = group_advantages(rewards, group_size=4, eps=0.0)
    torch.testing.assert_close(exact, torch.tensor([0.866025, -0.866025, -0.866025, 0.866025]))
    default = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(default, torch.tensor([0.865875, -0.865875, -0.865875, 0.865875]))


def test_group_advantages_batch_and_none_scales_keep_group_means():
    # groups [1, 0, 0, 1] (mean 0.5) and [1, 1, 1, 0] (mean 0.75)
    # batch: mean of all 8 = 5/8 = 0.625; squared deviations 5 * 0.375^2 + 3 * 0.625^2
    #        = 0.703125 + 1.171875 = 1.875; unbiased std = sqrt(1.875 / 7) = 0.517549
    #        advantages: +-0.5 / 0.517549 = +-0.966092, 0.25 / 0.517549 = 0.483046,
    #        -0.75 / 0.517549 = -1.449138
    # none:  reward - group mean (Dr. GRPO)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    batch = group_advantages(rewards, 4, scale="batch", eps=0.0)
    expected = [0.966092, -0.966092, -0.966092, 0.966092, 0.483046, 0.483046, 0.483046, -1.449138]
    torch.testing.assert_close(batch, torch.tensor(expected))
    none = group_advantages(rewards, 4, scale="none")
    assert none.tolist() == [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]


def test_equal_rewards_give_exactly_zero_advantage():
    # 0.9 is not exact in binary: the float32 mean of [0.9] * 3 misses 0.9 by 6e-8, which
    # divided by a ~1e-8 std (eps=0) would give +-1. Equal groups must give exactly 0.
    rewards = torch.tensor([0.7, 0.7, 0.7, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    for scale in ("group", "batch", "none"):
        for eps in (0.0, 1e-4):
            assert group_advantages(rewards, 3, scale=scale, eps=eps).tolist() == [0.0] * 9
    assert rloo_advantages(rewards, 3).tolist() == [0.0] * 9


def test_group_advantages_nan_rows_are_left_out_and_get_zero():
    # group [1, NaN, 0, 0.5]: valid [1, 0, 0.5], mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2)
    # = 0.5 -> [1, 0, -1, 0]; group [NaN, 2, NaN, NaN]: one valid row, std 0 -> 0;
    # group of all NaN -> 0
    nan = math.nan
    rewards = torch.tensor([1.0, nan, 0.0, 0.5, nan, 2.0, nan, nan, nan, nan, nan, nan])
    got = group_advantages(rewards, 4, eps=0.0)
    assert got.tolist() == [1.0, 0.0, -1.0, 0.0] + [0.0] * 8


def test_group_advantages_bad_scale_names_the_choices():
    with pytest.raises(R1kitError, match="group, batch, none"):
        group_advantages(torch.zeros(4), 4, scale="std")


def test_group_advantages_rejects_a_batch_not_divisible_by_group_size():
    with pytest.raises(ValueError, match="G=4"):
        group_advantages(torch.zeros(6), 4)


def test_rloo_leave_one_out_baseline():
    # [3, 1, 2, 6], sum 12: 3 - (12-3)/3 = 0, 1 - 11/3 = -2.666667, 2 - 10/3 = -1.333333,
    # 6 - 6/3 = 4; equal to G/(G-1) * (r - mean) = 4/3 * (r - 3)
    got = rloo_advantages(torch.tensor([3.0, 1.0, 2.0, 6.0]), 4)
    torch.testing.assert_close(got, torch.tensor([0.0, -8.0 / 3.0, -4.0 / 3.0, 4.0]))


def test_rloo_leaves_nan_rows_out_of_the_baseline():
    # [3, NaN, 1, 2]: valid [3, 1, 2]; 3 - (1+2)/2 = 1.5, 1 - 5/2 = -1.5, 2 - 4/2 = 0
    got = rloo_advantages(torch.tensor([3.0, math.nan, 1.0, 2.0]), 4)
    assert got.tolist() == [1.5, 0.0, -1.5, 0.0]


def test_whiten_unbiased_and_shift_mean():
    # [1, 3, 5]: mean 3, unbiased var (4 + 0 + 4) / 2 = 4, std 2 -> [-1, 0, 1]
    # shift_mean=False adds the mean back: [2, 3, 4]
    x = torch.tensor([1.0, 3.0, 5.0])
    torch.testing.assert_close(whiten(x), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(whiten(x, shift_mean=False), torch.tensor([2.0, 3.0, 4.0]))


def test_whiten_masked_ignores_and_zeroes_padding():
    x = torch.tensor([[1.0, 3.0], [5.0, 1000.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))


def test_gae_hand_example():
    # rewards [0, 0, 1], values [0.5, 0.5, 0.5], gamma 0.9, lam 0.95 (gamma * lam = 0.855)
    # deltas: t2 = 1 + 0.9*0 - 0.5 = 0.5; t1 = 0 + 0.9*0.5 - 0.5 = -0.05; t0 = -0.05
    # A2 = 0.5; A1 = -0.05 + 0.855*0.5 = 0.3775; A0 = -0.05 + 0.855*0.3775 = 0.2727625
    # returns = A + V = [0.7727625, 0.8775, 1.0]
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3), 0.5), torch.ones(1, 3), 0.9, 0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.2727625, 0.3775, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[0.7727625, 0.8775, 1.0]]))


def gae_loop(rewards, values, gamma, lam):
    """Textbook GAE over one unpadded episode, in plain Python floats."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_matches_a_plain_loop_on_random_right_padded_data():
    torch.manual_seed(0)
    lengths = [6, 4, 1]
    rewards, values = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    mask = torch.tensor([[t < n for t in range(6)] for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.9)
    for i, n in enumerate(lengths):
        want = gae_loop(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.99, 0.9)
        torch.testing.assert_close(adv[i, :n], torch.tensor(want, dtype=torch.float64))
        torch.testing.assert_close(ret[i, :n], adv[i, :n] + values[i, :n])
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0
