"""Per-token estimators of KL(pi || ref) from tokens sampled from pi.

John Schulman, "Approximating KL Divergence" (2020). With d = log pi(y) - log ref(y) for y ~ pi:

  k1 = d                       unbiased, high variance, can be negative
  k2 = d^2 / 2                 biased (low bias when pi ~ ref), always >= 0
  k3 = exp(-d) - (-d) - 1      unbiased and always >= 0; what DeepSeekMath GRPO adds to its loss

Unbiased means E_{y~pi}[k(y)] = KL(pi || ref) exactly (k3: E[ref/pi] = 1, so E[k3] = E[d]).
As a loss term the gradients differ too: grad k1 has expectation 0 (no KL pull at all in
expectation), grad k3 and grad k2 pull pi towards ref.
"""

from __future__ import annotations

import torch

from r1kit.algorithms.modes import check_mode

KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) for tokens sampled from pi.

    logp      # [N, T] log pi(y_t) of the sampled tokens
    ref_logp  # [N, T] log ref(y_t) of the same tokens
    Returns   # [N, T]; mask and reduce it yourself (padding values are meaningless)
    """
    check_mode("kl_kind", kind, KL_KINDS)
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    return torch.exp(-d) + d - 1.0
