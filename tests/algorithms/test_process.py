"""Process supervision: the PRM's step loss, step-score aggregation and GRPO's process advantages,
against numbers worked out by hand."""

import math

import pytest
import torch

from r1kit.algorithms import aggregate_steps, prm_step_loss, process_advantages

NAN = math.nan


def test_prm_loss_is_bce_at_the_separators_only():
    # Row 0: separators at 1 and 3; row 1: one at 2. Other positions carry junk that must not count.
    logits = torch.tensor([[9.0, 0.0, 9.0, 2.0], [9.0, 9.0, -1.0, 9.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.25, 1.0]])
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0]])
    # BCE(x, y) = softplus(x) - x*y:
    #   x=0,  y=1:    ln 2                     = 0.693147
    #   x=2,  y=0:    ln(1 + e^2)              = 2.126928
    #   x=-1, y=0.25: ln(1 + e^-1) + 0.25      = 0.313262 + 0.25 = 0.563262
    expected = (0.693147 + 2.126928 + 0.563262) / 3  # 1.127779
    assert float(prm_step_loss(logits, labels, mask)) == pytest.approx(expected, abs=1e-5)


def test_prm_loss_gradient_is_sigmoid_minus_label_over_steps():
    logits = torch.tensor([[0.0, 2.0]], requires_grad=True)
    prm_step_loss(logits, torch.tensor([[1.0, 0.0]]), torch.tensor([[1, 1]])).backward()
    # d/dx mean = (sigmoid(x) - y) / 2: (0.5 - 1)/2 = -0.25, (0.880797 - 0)/2 = 0.440399
    assert logits.grad.tolist()[0] == pytest.approx([-0.25, 0.440399], abs=1e-5)


def test_aggregate_steps_min_prod_last_and_no_steps():
    probs = torch.tensor([[0.9, 0.5, 0.8], [0.6, 0.7, 0.1], [0.3, 0.3, 0.3]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    assert aggregate_steps(probs, mask, "min").tolist() == pytest.approx([0.5, 0.6, 0.0])
    assert aggregate_steps(probs, mask, "prod").tolist() == pytest.approx([0.36, 0.42, 0.0])
    assert aggregate_steps(probs, mask, "last").tolist() == pytest.approx([0.8, 0.7, 0.0])


def test_process_advantages_hand_example():
    # One prompt, G=2. Output 0: steps rewarded 1.0 and 0.0 ending at tokens 1 and 3;
    # output 1: one step rewarded 1.0 ending at token 2. T=4.
    rewards = torch.tensor([[1.0, 0.0], [1.0, NAN]])
    ends = torch.tensor([[1, 3], [2, 0]])
    # All steps of the group: {1, 0, 1}: mean 2/3, unbiased var ((1/3)^2 * 2 + (2/3)^2) / 2 = 1/3,
    # std 0.577350. Normalised: 1 -> (1/3)/0.57735 = 0.577350, 0 -> -(2/3)/0.57735 = -1.154701.
    # Output 0: tokens 0, 1 get 0.577350 - 1.154701 = -0.577350; tokens 2, 3 get -1.154701.
    # Output 1: tokens 0..2 get 0.577350; token 3 comes after its last step: 0.
    adv = process_advantages(rewards, ends, num_tokens=4, group_size=2, eps=0.0)
    assert adv[0].tolist() == pytest.approx([-0.577350, -0.577350, -1.154701, -1.154701], abs=1e-5)
    assert adv[1].tolist() == pytest.approx([0.577350, 0.577350, 0.577350, 0.0], abs=1e-5)


def test_process_advantages_normalise_per_group_and_zero_for_equal_steps():
    # Two prompts, G=2, one step each ending at the last token (T=2). Group 0 rewards 0 and 1:
    # mean 0.5, unbiased std 0.707107, normalised -0.707107 / +0.707107 on both tokens.
    # Group 1: every step 0.7 -> exactly 0.
    rewards = torch.tensor([[0.0], [1.0], [0.7], [0.7]])
    ends = torch.tensor([[1], [1], [1], [1]])
    adv = process_advantages(rewards, ends, num_tokens=2, group_size=2, eps=0.0)
    assert adv.flatten().tolist() == pytest.approx([-0.707107] * 2 + [0.707107] * 2 + [0.0] * 4, abs=1e-5)


def test_process_advantages_with_one_step_per_output_at_the_end_equal_outcome_grpo():
    # One step per output, ending at the last token: every token gets the group-normalised reward,
    # which is GRPO's outcome advantage.
    from r1kit.algorithms import group_advantages

    r = torch.tensor([0.2, 0.9, 0.4, 0.4])
    adv = process_advantages(r.view(4, 1), torch.full((4, 1), 2), num_tokens=3, group_size=4)
    assert torch.allclose(adv, group_advantages(r, 4).unsqueeze(1).expand(4, 3), atol=1e-6)
