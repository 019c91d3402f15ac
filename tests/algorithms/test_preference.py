"""Bradley-Terry, Christiano et al. pair loss, the DPO family and RPO's NLL term against hand values."""

import math

import pytest
import torch

from r1kit.algorithms.preference import bradley_terry_loss, chosen_nll, christiano_pair_loss, dpo_loss
from r1kit.errors import R1kitError

pytestmark = pytest.mark.numerics


def test_bradley_terry_hand_values():
    # r_c - r_r = [2 - 1, 0 - 1] = [1, -1]
    # -log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(-1) = log(1 + e) = 1.313262
    # mean 0.813262
    r_chosen, r_rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert bradley_terry_loss(r_chosen, r_rejected).item() == pytest.approx(0.813262, abs=1e-6)
    # margin [0.5, 0]: diffs [0.5, -1]; log(1 + e^-0.5) = 0.474077; mean (0.474077 + 1.313262)/2 = 0.893669
    margin = torch.tensor([0.5, 0.0])
    assert bradley_terry_loss(r_chosen, r_rejected, margin).item() == pytest.approx(0.893669, abs=1e-6)
    # centring: (r_c + r_r)^2 = [9, 1], mean 5; 0.01 * 5 = 0.05 on top: 0.863262
    centred = bradley_terry_loss(r_chosen, r_rejected, center_coef=0.01)
    assert centred.item() == pytest.approx(0.863262, abs=1e-6)


def test_bradley_terry_probability_is_the_sigmoid_of_the_reward_gap():
    # exp(-loss) of a single pair is P(c > r) = e^{r_c} / (e^{r_c} + e^{r_r})
    loss = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([-1.2]))
    assert math.exp(-loss.item()) == pytest.approx(math.exp(0.3) / (math.exp(0.3) + math.exp(-1.2)))


def test_christiano_pair_probability_and_loss():
    # segment a: step rewards [0.5, 0.5] (+ a padding step of 7) -> sum 1.0
    # segment b: step rewards [0.2] (+ two padding steps) -> sum 0.2
    # P(a > b) = e^1 / (e^1 + e^0.2) = sigmoid(0.8) = 0.689974
    # pref 1: -log 0.689974 = 0.371101; pref 0: -log 0.310026 = 1.171101;
    # pref 0.5: (0.371101 + 1.171101) / 2 = 0.771101
    a, mask_a = torch.tensor([[0.5, 0.5, 7.0]]), torch.tensor([[1, 1, 0]])
    b, mask_b = torch.tensor([[0.2, -9.0, -9.0]]), torch.tensor([[1, 0, 0]])
    p_a = math.exp(1.0) / (math.exp(1.0) + math.exp(0.2))
    assert p_a == pytest.approx(0.689974, abs=1e-6)
    for pref, expected in [(1.0, 0.371101), (0.0, 1.171101), (0.5, 0.771101)]:
        loss = christiano_pair_loss(a, mask_a, b, mask_b, torch.tensor([pref]))
        assert loss.item() == pytest.approx(expected, abs=1e-6)
        assert loss.item() == pytest.approx(-(pref * math.log(p_a) + (1 - pref) * math.log(1 - p_a)))


# A hand example shared by the DPO variants:
#   policy log pi(chosen) = -1.0, log pi(rejected) = -3.0; reference -2.0 and -2.5
#   h = (-1 - -2) - (-3 - -2.5) = 1.0 - (-0.5) = 1.5; beta = 0.1 -> beta h = 0.15
#   -log sigmoid(0.15) = log(1 + e^-0.15) = 0.620957; -log sigmoid(-0.15) = log(1 + e^0.15) = 0.770957
PC, PR, RC, RR = (torch.tensor([x]) for x in (-1.0, -3.0, -2.0, -2.5))


def test_dpo_sigmoid_hand_value_and_rewards():
    loss, chosen_rewards, rejected_rewards = dpo_loss(PC, PR, RC, RR, beta=0.1)
    assert loss.item() == pytest.approx(0.620957, abs=1e-6)
    assert chosen_rewards.item() == pytest.approx(0.1)  # 0.1 * (-1 + 2)
    assert rejected_rewards.item() == pytest.approx(-0.05)  # 0.1 * (-3 + 2.5)


def test_cdpo_label_smoothing_hand_value():
    # 0.9 * 0.620957 + 0.1 * 0.770957 = 0.558861 + 0.077096 = 0.635957
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="cdpo", label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.635957, abs=1e-6)
    same, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="sigmoid", label_smoothing=0.1)
    assert same.item() == loss.item()


def test_robust_dpo_hand_value():
    # (0.9 * 0.620957 - 0.1 * 0.770957) / (1 - 2 * 0.1) = (0.558861 - 0.077096) / 0.8 = 0.602207
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="robust", label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.602207, abs=1e-6)
    with pytest.raises(ValueError, match="below 0.5"):
        dpo_loss(PC, PR, RC, RR, loss_type="robust", label_smoothing=0.5)


def test_robust_dpo_is_unbiased_under_label_flips():
    # Chowdhury et al.: the expectation over a flip with probability eps of the robust loss
    # equals the clean DPO loss: (1 - eps) * L(h) + eps * L(-h) = -log sigmoid(beta h)
    eps = 0.2
    kept, _, _ = dpo_loss(PC, PR, RC, RR, loss_type="robust", label_smoothing=eps)
    flipped, _, _ = dpo_loss(PR, PC, RR, RC, loss_type="robust", label_smoothing=eps)
    clean, _, _ = dpo_loss(PC, PR, RC, RR)
    assert ((1 - eps) * kept + eps * flipped).item() == pytest.approx(clean.item(), abs=1e-6)


def test_ipo_on_length_averaged_logps_hand_value():
    # lengths: chosen 2 tokens, rejected 4 tokens; per-token averages (TRL's IPO convention):
    # pi_c = -1/2 = -0.5, pi_r = -3/4 = -0.75, ref_c = -2/2 = -1.0, ref_r = -2.5/4 = -0.625
    # h = (-0.5 + 1.0) - (-0.75 + 0.625) = 0.5 + 0.125 = 0.625; 1/(2 beta) = 5
    # loss = (0.625 - 5)^2 = 19.140625; rewards 0.1 * 0.5 = 0.05 and 0.1 * -0.125 = -0.0125
    lengths = {"chosen_len": torch.tensor([2.0]), "rejected_len": torch.tensor([4.0])}
    loss, chosen_rewards, rejected_rewards = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo", **lengths)
    assert loss.item() == pytest.approx(19.140625, abs=1e-5)
    assert chosen_rewards.item() == pytest.approx(0.05)
    assert rejected_rewards.item() == pytest.approx(-0.0125)
    with pytest.raises(ValueError, match="chosen_len"):
        dpo_loss(PC, PR, RC, RR, loss_type="ipo")


def test_simpo_hand_value_ignores_the_reference():
    # beta 2, gamma 0.5; averages -1/2 = -0.5 and -3/4 = -0.75
    # beta * (-0.5 + 0.75) - 0.5 = 0.5 - 0.5 = 0 -> loss -log sigmoid(0) = ln 2 = 0.693147
    # rewards 2 * -0.5 = -1.0, 2 * -0.75 = -1.5
    lengths = {"chosen_len": torch.tensor([2.0]), "rejected_len": torch.tensor([4.0])}
    loss, chosen_rewards, rejected_rewards = dpo_loss(
        PC, PR, None, None, beta=2.0, loss_type="simpo", simpo_gamma=0.5, **lengths
    )
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert (chosen_rewards.item(), rejected_rewards.item()) == (-1.0, -1.5)
    with_ref, _, _ = dpo_loss(PC, PR, RC, RR, beta=2.0, loss_type="simpo", simpo_gamma=0.5, **lengths)
    assert with_ref.item() == loss.item()


def test_reference_free_dpo_takes_log_ref_as_zero():
    # h = -1 - (-3) = 2; beta h = 0.2; log(1 + e^-0.2) = 0.598139
    loss, _, _ = dpo_loss(PC, PR, None, None, beta=0.1)
    assert loss.item() == pytest.approx(0.598139, abs=1e-6)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    loss, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.1)
    loss.backward()
    # d/d pi_c of -log sigmoid(beta h) = -beta * sigmoid(-beta h) = -0.1 * 0.462570 = -0.046257
    assert pc.grad.item() == pytest.approx(-0.046257, abs=1e-6)
    assert pr.grad.item() == pytest.approx(0.046257, abs=1e-6)


def test_chosen_nll_is_the_token_mean_over_the_batch():
    # chosen log-probs -2.0 over 4 tokens and -6.0 over 2 tokens: -(-2 - 6) / (4 + 2) = 8 / 6 = 1.333333
    # (dividing each sequence by its own length first, as the RPO paper writes it, would give
    # (0.5 + 3.0) / 2 = 1.75; with equal lengths the two agree: see the second case)
    loss = chosen_nll(torch.tensor([-2.0, -6.0]), torch.tensor([4.0, 2.0]))
    assert loss.item() == pytest.approx(1.333333, abs=1e-6)
    # -(-2 - 6) / (2 + 2) = 2.0 = (1.0 + 3.0) / 2
    assert chosen_nll(torch.tensor([-2.0, -6.0]), torch.tensor([2.0, 2.0])).item() == pytest.approx(2.0)


def test_rpo_loss_is_dpo_plus_alpha_nll_and_its_gradient_lifts_the_chosen_side():
    # The shared example, the chosen completion 2 tokens long: NLL = -(-1.0) / 2 = 0.5
    # RPO with alpha 1: 0.620957 + 1.0 * 0.5 = 1.120957
    # d/d pi_c: DPO's -0.046257 plus alpha * d(-pi_c / 2)/d pi_c = -0.5 -> -0.546257;
    # the rejected side is untouched by the NLL term: 0.046257
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    dpo, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.1)
    loss = dpo + 1.0 * chosen_nll(pc, torch.tensor([2.0]))
    assert loss.item() == pytest.approx(1.120957, abs=1e-6)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.546257, abs=1e-6)
    assert pr.grad.item() == pytest.approx(0.046257, abs=1e-6)


def test_bad_loss_type_names_the_choices():
    with pytest.raises(R1kitError, match="sigmoid, cdpo, ipo, robust, simpo"):
        dpo_loss(PC, PR, RC, RR, loss_type="hinge")
