"""Schulman's k1 / k2 / k3 estimators of KL(pi || ref)."""

import pytest
import torch

from r1kit.algorithms.kl import kl_estimate
from r1kit.errors import R1kitError

pytestmark = pytest.mark.numerics


def test_k1_k2_k3_hand_values():
    # token 0: log pi = ln 0.5, log ref = ln 0.25 -> d = ln 2 = 0.693147
    #   k1 = 0.693147; k2 = 0.5 * 0.693147^2 = 0.240227; k3 = e^-d + d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # token 1: swapped -> d = -ln 2
    #   k1 = -0.693147; k2 = 0.240227; k3 = 2 - 0.693147 - 1 = 0.306853
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([[0.693147, -0.693147]]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), torch.tensor([[0.240227, 0.240227]]))
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([[0.193147, 0.306853]]))


def test_k1_and_k3_are_unbiased_for_kl_pi_ref_and_k2_is_not():
    # pi = [0.5, 0.5], ref = [0.25, 0.75] over two tokens. Exact expectation over y ~ pi:
    # KL(pi || ref) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 (0.693147 - 0.405465) = 0.143841
    # (KL(ref || pi) = 0.130812 differs, so this also pins the direction)
    pi, ref = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    for kind in ("k1", "k3"):
        expectation = (pi * kl_estimate(pi.log(), ref.log(), kind)).sum().item()
        assert expectation == pytest.approx(0.143841, abs=1e-6)
    # k2: 0.5 * (0.5 * 0.693147^2 + 0.5 * 0.405465^2) = 0.5 * (0.240227 + 0.082201) = 0.161214
    assert (pi * kl_estimate(pi.log(), ref.log(), "k2")).sum().item() == pytest.approx(0.161214, abs=1e-6)


def test_all_estimators_are_zero_when_pi_equals_ref():
    logp = torch.log(torch.tensor([[0.1, 0.7]]))
    for kind in ("k1", "k2", "k3"):
        assert kl_estimate(logp, logp.clone(), kind).tolist() == [[0.0, 0.0]]


def test_bad_kind_names_the_choices():
    with pytest.raises(R1kitError, match="k1, k2, k3"):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "k4")
