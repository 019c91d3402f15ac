"""Distillation divergences: hand values, limits, bounds, symmetry and T^2 scaling."""

import math

import pytest
import torch

from r1kit.algorithms.distill import distill_loss, token_divergence
from r1kit.errors import R1kitError

pytestmark = pytest.mark.numerics

# Teacher P = softmax([0, 0]) = [0.5, 0.5]; student Q = softmax([0, ln 3]) = [0.25, 0.75]
TEACHER = torch.tensor([[[0.0, 0.0]]])
STUDENT = torch.tensor([[[0.0, math.log(3.0)]]])
ONE = torch.ones(1, 1)


def test_equal_distributions_give_zero_for_every_kind():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        loss = distill_loss(logits, logits.clone(), torch.ones(2, 3), kind=kind)
        assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_forward_and_reverse_kl_differ_on_an_asymmetric_example():
    # forward KL(P || Q) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 (0.693147 - 0.405465) = 0.143841
    # reverse KL(Q || P) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5) = -0.173287 + 0.304099 = 0.130812
    assert distill_loss(STUDENT, TEACHER, ONE, kind="forward_kl").item() == pytest.approx(0.143841, abs=1e-6)
    assert distill_loss(STUDENT, TEACHER, ONE, kind="reverse_kl").item() == pytest.approx(0.130812, abs=1e-6)


def test_jsd_hand_value_and_symmetry_at_beta_half():
    # M = 0.5 P + 0.5 Q = [0.375, 0.625]
    # KL(P || M) = 0.5 ln(0.5/0.375) + 0.5 ln(0.5/0.625) = 0.5 (0.287682 - 0.223144) = 0.032269
    # KL(Q || M) = 0.25 ln(0.25/0.375) + 0.75 ln(0.75/0.625) = -0.101366 + 0.136741 = 0.035375
    # JSD = 0.5 * 0.032269 + 0.5 * 0.035375 = 0.033822
    jsd = distill_loss(STUDENT, TEACHER, ONE, kind="jsd", beta=0.5).item()
    assert jsd == pytest.approx(0.033822, abs=1e-6)
    swapped = distill_loss(TEACHER, STUDENT, ONE, kind="jsd", beta=0.5).item()
    assert swapped == pytest.approx(jsd, abs=1e-7)


def test_jsd_beta_convention_zero_is_forward_one_is_reverse():
    # beta weights the teacher (GKD): beta = 0 is forward KL(P || Q), beta = 1 reverse KL(Q || P),
    # and these are the limits of JSD(beta) / beta and JSD(beta) / (1 - beta)
    at_zero = distill_loss(STUDENT, TEACHER, ONE, kind="jsd", beta=0.0)
    at_one = distill_loss(STUDENT, TEACHER, ONE, kind="jsd", beta=1.0)
    assert at_zero.item() == pytest.approx(0.143841, abs=1e-6)
    assert at_one.item() == pytest.approx(0.130812, abs=1e-6)
    small = 1e-4
    near_zero = token_divergence(STUDENT.double(), TEACHER.double(), "jsd", beta=small).item() / small
    near_one = token_divergence(STUDENT.double(), TEACHER.double(), "jsd", beta=1 - small).item() / small
    assert near_zero == pytest.approx(0.143841, abs=1e-4)
    assert near_one == pytest.approx(0.130812, abs=1e-4)


def test_jsd_lies_within_zero_and_binary_entropy_of_beta():
    # JSD(beta) <= h(beta) = -beta ln beta - (1 - beta) ln(1 - beta); h(0.5) = ln 2 = 0.693147,
    # reached by disjoint distributions
    torch.manual_seed(0)
    student, teacher = 10 * torch.randn(4, 3, 6), 10 * torch.randn(4, 3, 6)
    for beta in (0.1, 0.5, 0.9):
        bound = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
        values = token_divergence(student, teacher, "jsd", beta)
        assert values.min() >= 0 and values.max() <= bound + 1e-6
    disjoint = token_divergence(torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]]), "jsd", 0.5)
    assert disjoint.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_temperature_squared_scaling():
    # at T = 2 the student logits [0, 2 ln 3] soften to [0, ln 3], i.e. Q = [0.25, 0.75]; the
    # teacher stays uniform, so the loss is 2^2 * 0.143841 = 0.575364
    student = torch.tensor([[[0.0, 2 * math.log(3.0)]]])
    loss = distill_loss(student, TEACHER, ONE, kind="forward_kl", temperature=2.0)
    assert loss.item() == pytest.approx(0.575364, abs=1e-6)
    # in general: T^2 times the KL of the softened distributions
    torch.manual_seed(1)
    s, t = torch.randn(2, 2, 5), torch.randn(2, 2, 5)
    p, log_q = torch.softmax(t / 3, -1), torch.log_softmax(s / 3, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    loss = distill_loss(s, t, torch.ones(2, 2), temperature=3.0)
    assert loss.item() == pytest.approx(9 * kl.item(), rel=1e-5)


def test_padding_tokens_are_ignored():
    # token 1 is padding with wildly different logits; only token 0 (the hand example) counts
    student = torch.tensor([[[0.0, math.log(3.0)], [30.0, -30.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [-30.0, 30.0]]])
    loss = distill_loss(student, teacher, torch.tensor([[1, 0]]), kind="forward_kl")
    assert loss.item() == pytest.approx(0.143841, abs=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_chunked_equals_unchunked_and_teacher_gets_no_gradient(kind):
    torch.manual_seed(2)
    student = torch.randn(5, 3, 7, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 3, 7, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(5, 3) > 0.3).float()
    whole = distill_loss(student, teacher, mask, kind=kind, beta=0.3, temperature=1.5)
    whole.backward()
    grad_whole, student.grad = student.grad, None
    chunked = distill_loss(student, teacher, mask, kind=kind, beta=0.3, temperature=1.5, chunk_rows=2)
    chunked.backward()
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(student.grad, grad_whole)
    assert teacher.grad is None


def test_bad_kind_names_the_choices():
    with pytest.raises(R1kitError, match="forward_kl, reverse_kl, jsd"):
        distill_loss(STUDENT, TEACHER, ONE, kind="kl")
