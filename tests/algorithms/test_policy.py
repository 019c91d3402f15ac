"""The clipped policy loss: zero gradient where it must be, REINFORCE at mu = 1, clip-higher,
GSPO's sequence ratio, the three aggregations and the KL penalty, against hand values."""

import math

import pytest
import torch

from r1kit.algorithms.advantages import group_advantages
from r1kit.algorithms.policy import policy_loss
from r1kit.errors import R1kitError

pytestmark = pytest.mark.numerics


def test_group_with_equal_rewards_gets_exactly_zero_policy_gradient():
    torch.manual_seed(0)
    rewards = torch.tensor([0.9, 0.9, 0.9, 0.9, 1.0, 0.0, 0.0, 1.0])  # group 0 all equal
    advantages = group_advantages(rewards, group_size=4)
    logp = torch.randn(8, 5, requires_grad=True)
    old_logp = logp.detach() + 0.05 * torch.randn(8, 5)
    mask = torch.ones(8, 5)
    loss, _ = policy_loss(logp, old_logp, advantages, mask)
    loss.backward()
    assert torch.equal(logp.grad[:4], torch.zeros(4, 5))
    assert (logp.grad[4:] != 0).all()


def test_mu_one_gradient_equals_reinforce_gradient():
    # old_logp=None: ratio = exp(logp - logp.detach()) = 1 with gradient grad logp, so the loss
    # is -mean_i A_i mean_t r_it and its gradient is that of -sum_i A_i mean_t logp_it / N.
    torch.manual_seed(0)
    logp = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([1.5, -0.5, 0.25, -1.25], dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 1 + [0] * 5, [1] * 5 + [0]])

    loss, metrics = policy_loss(logp, None, advantages, mask)
    loss.backward()
    grad_loss, logp.grad = logp.grad, None
    mean_logp = (logp * mask).sum(-1) / mask.sum(-1)
    reinforce = -(advantages * mean_logp).sum() / 4
    reinforce.backward()

    torch.testing.assert_close(grad_loss, logp.grad, rtol=0, atol=1e-15)
    assert loss.item() == pytest.approx(-advantages.mean().item())  # -(1.5-0.5+0.25-1.25)/4 = 0
    assert metrics["ratio/mean"] == 1.0 and metrics["clip/region"] == 0.0


def clip_example():
    """Row 0 has A = +1, row 1 has A = -1; both have ratios [0.79, 0.81, 1.27, 1.29]."""
    ratios = torch.tensor([[0.79, 0.81, 1.27, 1.29]] * 2, dtype=torch.float64)
    old_logp = torch.zeros(2, 4, dtype=torch.float64)
    logp = ratios.log().requires_grad_()
    return logp, old_logp, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.ones(2, 4)


def test_clip_higher_zeroes_the_gradient_exactly_where_the_clip_is_active():
    # eps_low = 0.2, eps_high = 0.28: clip range [0.8, 1.28]
    # row 0 (A = +1): only r = 1.29 > 1.28 is clipped (r = 0.79 < 0.8 is not: min picks r*A)
    #   per-token loss -min(r, clip r) = [-0.79, -0.81, -1.27, -1.28], mean -4.15/4 = -1.0375
    # row 1 (A = -1): only r = 0.79 < 0.8 is clipped
    #   per-token loss max(r, clip r) = [0.80, 0.81, 1.27, 1.29], mean 4.17/4 = 1.0425
    # loss = (-1.0375 + 1.0425) / 2 = 0.0025
    # unclipped gradient d loss / d logp = -A * r / (4 tokens * 2 rows) = -A * r / 8
    logp, old_logp, advantages, mask = clip_example()
    loss, metrics = policy_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(0.0025, abs=1e-12)
    expected_grad = torch.tensor(
        [
            [-0.79 / 8, -0.81 / 8, -1.27 / 8, 0.0],  # -0.09875, -0.10125, -0.15875, clipped
            [0.0, 0.81 / 8, 1.27 / 8, 1.29 / 8],  # clipped, 0.10125, 0.15875, 0.16125
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(logp.grad, expected_grad)
    assert logp.grad[0, 3] == 0 and logp.grad[1, 0] == 0
    assert metrics["clip/ratio_low"] == 1 / 8  # row 1, r = 0.79
    assert metrics["clip/ratio_high"] == 1 / 8  # row 0, r = 1.29
    assert metrics["clip/region"] == 2 / 8
    assert metrics["ratio/mean"] == pytest.approx(1.04)  # (0.79 + 0.81 + 1.27 + 1.29) / 4


def test_symmetric_clip_by_default_also_clips_1_27():
    # eps_high=None means eps_high = eps_low = 0.2: range [0.8, 1.2]; row 0 now also clips 1.27
    logp, old_logp, advantages, mask = clip_example()
    loss, metrics = policy_loss(logp, old_logp, advantages, mask)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.79 / 8, -0.81 / 8, 0.0, 0.0])
    assert logp.grad[1].tolist() == pytest.approx([0.0, 0.81 / 8, 1.27 / 8, 1.29 / 8])
    assert metrics["clip/ratio_high"] == 2 / 8


def gspo_example():
    # row 0 (A = +1): token log ratios [0.5, -0.3] and one padding token
    # row 1 (A = +1): token log ratios [0.3, 0.3, 0.3]
    old_logp = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.tensor([[0.5, -0.3, 9.0], [0.3, 0.3, 0.3]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old_logp, torch.tensor([1.0, 1.0], dtype=torch.float64), mask


def test_gspo_sequence_ratio_hand_values():
    # row 0: s = exp(mean(0.5, -0.3)) = exp(0.1) = 1.105171, inside [0.8, 1.2]: loss -1.105171;
    #   every real token's gradient is -A * s / (2 tokens * 2 rows) = -0.276293
    #   (token level would clip token 0, ratio e^0.5 = 1.6487, and give token 1 -e^-0.3/4)
    # row 1: s = exp(0.3) = 1.349859 > 1.2 with A > 0: the whole sequence is clipped, loss -1.2,
    #   gradient 0 on every token
    # loss = (-1.105171 - 1.2) / 2 = -1.152585
    logp, old_logp, advantages, mask = gspo_example()
    loss, metrics = policy_loss(logp, old_logp, advantages, mask, ratio_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-1.152585, abs=1e-6)
    torch.testing.assert_close(
        logp.grad,
        torch.tensor([[-0.276293, -0.276293, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64),
        rtol=0,
        atol=1e-6,
    )
    assert metrics["clip/ratio_high"] == 3 / 5
    assert metrics["ratio/mean"] == pytest.approx(1.251984, abs=1e-6)  # (2*1.105171 + 3*1.349859)/5

    logp.grad = None
    token_loss, _ = policy_loss(logp, old_logp, advantages, mask, ratio_level="token")
    token_loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, -math.exp(-0.3) / 4, 0.0])  # -0.185205


def test_gspo_gradient_equals_gradient_of_the_sequence_objective():
    # GSPO objective: -mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp - old_logp)),
    # differentiated directly; the per-token stop-gradient form must give the same gradient.
    torch.manual_seed(0)
    logp = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    old_logp = logp.detach() + 0.3 * torch.randn(6, 5, dtype=torch.float64)
    advantages = torch.randn(6, dtype=torch.float64)
    mask = (torch.arange(5) < torch.tensor([[5], [4], [3], [2], [1], [5]])).float()

    loss, _ = policy_loss(logp, old_logp, advantages, mask, ratio_level="sequence")
    loss.backward()
    grad_loss, logp.grad = logp.grad, None
    s = torch.exp(((logp - old_logp) * mask).sum(-1) / mask.sum(-1))
    direct = -torch.minimum(s * advantages, s.clamp(0.8, 1.2) * advantages).mean()
    direct.backward()

    torch.testing.assert_close(loss, direct)
    torch.testing.assert_close(grad_loss, logp.grad)


@pytest.mark.parametrize(
    "loss_agg, max_len, expected",
    [
        # per-token losses -A: row 0 [-3, -1] (1 padding token), row 1 [1, 2, 6]
        ("seq_mean_token_mean", None, 0.5),  # (-4/2 + 9/3) / 2 = (-2 + 3) / 2
        ("token_mean", None, 1.0),  # (-4 + 9) / 5 tokens
        ("seq_mean_token_sum_norm", 4, 0.625),  # (-4/4 + 9/4) / 2 = (-1 + 2.25) / 2
        ("seq_mean_token_sum_norm", None, 0.833333),  # max_len = T = 3: (-4/3 + 9/3) / 2
    ],
)
def test_aggregation_modes_on_unequal_lengths(loss_agg, max_len, expected):
    advantages = torch.tensor([[3.0, 1.0, 50.0], [-1.0, -2.0, -6.0]])  # per-token advantages
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(logp, None, advantages, mask, loss_agg=loss_agg, max_len=max_len)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_kl_penalty_adds_beta_times_the_estimate_and_is_reported():
    # log pi = ln 0.5, log ref = ln 0.25 on the real token: k3 = 0.5 + ln 2 - 1 = 0.193147,
    # k1 = ln 2 = 0.693147; A = 0 so the clipped term is 0: loss = 0.1 * KL
    logp = torch.log(torch.tensor([[0.5, 0.9]])).requires_grad_()
    ref_logp = torch.log(torch.tensor([[0.25, 0.1]]))  # second token is padding
    mask = torch.tensor([[1, 0]])
    loss, metrics = policy_loss(logp, None, torch.zeros(1), mask, ref_logp=ref_logp, beta=0.1)
    assert loss.item() == pytest.approx(0.0193147, abs=1e-6)
    assert metrics["kl"] == pytest.approx(0.193147, abs=1e-6)
    loss_k1, _ = policy_loss(logp, None, torch.zeros(1), mask, ref_logp=ref_logp, beta=0.1, kl_kind="k1")
    assert loss_k1.item() == pytest.approx(0.0693147, abs=1e-6)
    # beta = 0 with a reference: KL reported, not added
    loss_0, metrics_0 = policy_loss(logp, None, torch.zeros(1), mask, ref_logp=ref_logp)
    assert loss_0.item() == 0.0 and metrics_0["kl"] == pytest.approx(0.193147, abs=1e-6)


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_kl_ratio_gives_the_exact_reverse_kl_gradient(ratio_level):
    # Tokens sampled from pi (mu = 1, ratio 1), A = 0: only the KL term has a gradient.
    # Plain k3 differentiates to (1 - ref / pi) grad log pi; weighted by the ratio it becomes
    # (log pi - log ref) grad log pi, the gradient of KL(pi || ref) (DeepSeek-V3.2).
    torch.manual_seed(0)
    theta = torch.randn(2, 3, 5, requires_grad=True)  # logits of 2 rows x 3 positions
    tokens = torch.tensor([[1, 4, 2], [0, 3, 3]])
    ref_logp = torch.log_softmax(torch.randn(2, 3, 5), -1).gather(-1, tokens[..., None]).squeeze(-1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])

    def grads(kl_ratio):
        logp = torch.log_softmax(theta, -1).gather(-1, tokens[..., None]).squeeze(-1)
        loss, _ = policy_loss(logp, None, torch.zeros(2), mask, ref_logp=ref_logp, beta=0.5, ratio_level=ratio_level, kl_ratio=kl_ratio)
        (grad,) = torch.autograd.grad(loss, theta)
        return loss, grad

    def expected(weight):  # 0.5 * seq-mean of token-mean of weight(d) * grad log pi
        logp = torch.log_softmax(theta, -1).gather(-1, tokens[..., None]).squeeze(-1)
        w = weight(logp.detach() - ref_logp) * mask
        surrogate = 0.5 * ((w * logp).sum(-1) / mask.sum(-1)).mean()
        return torch.autograd.grad(surrogate, theta)[0]

    loss_plain, plain = grads(False)
    loss_ratio, weighted = grads(True)
    assert loss_ratio.item() == pytest.approx(loss_plain.item(), abs=1e-7)  # the ratio's value is 1
    assert torch.allclose(plain, expected(lambda d: 1 - torch.exp(-d)), atol=1e-6)
    # At either ratio level: GSPO's per-token ratio carries each token's own gradient (policy.py).
    assert torch.allclose(weighted, expected(lambda d: d), atol=1e-6)
    assert not torch.allclose(plain, weighted, atol=1e-3)


def test_bad_mode_names_raise_with_the_choices():
    logp, mask = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(R1kitError, match="seq_mean_token_mean, token_mean, seq_mean_token_sum_norm"):
        policy_loss(logp, None, torch.zeros(1), mask, loss_agg="sum")
    with pytest.raises(R1kitError, match="token, sequence"):
        policy_loss(logp, None, torch.zeros(1), mask, ratio_level="seq")
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, None, torch.zeros(1), mask, beta=0.1)
