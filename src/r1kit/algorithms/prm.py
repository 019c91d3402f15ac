"""Process reward models: the per-step loss, and a solution's score from its step scores.

A PRM puts a logit on the token that ends each step (r1kit/data/steps.py lays the steps out) and
is trained by binary cross-entropy against the step's label, hard (PRM800K's good / bad, Lightman
et al. 2023) or soft (Math-Shepherd's share of completions from the step that reach the right
answer, Wang et al. 2024). A solution's score combines its steps' probabilities: the minimum (the
weakest step, Lightman et al.) or the product (every step right, Wang et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1kit.algorithms.masked import masked_mean
from r1kit.algorithms.modes import check_mode

STEP_AGGREGATIONS = ("min", "prod", "last")


def prm_step_loss(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the labelled positions.

    logits      # [B, L] the head's output at every token
    labels      # [B, L] float in [0, 1] (hard 0/1 or soft); read only where label_mask is set
    label_mask  # [B, L] 1 on the token ending each step (the separator's last token)
    Returns     # [] the mean over labelled steps of softplus(x) - x * y
    """
    per_token = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return masked_mean(per_token, label_mask)


def aggregate_steps(step_probs: torch.Tensor, step_mask: torch.Tensor, how: str = "min") -> torch.Tensor:
    """One score per solution from its steps' probabilities.

    step_probs  # [N, S] sigmoid of the PRM's logits at the step ends
    step_mask   # [N, S] 1 on real steps (rows have different step counts)
    how: "min" the weakest step, "prod" the product (the chance every step is right if the steps
         were independent), "last" the final step's.
    Returns     # [N]; a row without steps scores 0.
    """
    check_mode("how", how, STEP_AGGREGATIONS)
    m = step_mask.bool()
    has = m.any(dim=1)
    if how == "min":
        out = torch.where(m, step_probs, torch.ones_like(step_probs)).amin(dim=1)
    elif how == "prod":
        out = torch.where(m, step_probs, torch.ones_like(step_probs)).prod(dim=1)
    else:
        last = (torch.arange(m.shape[1], device=m.device) * m).argmax(dim=1, keepdim=True)
        out = step_probs.gather(1, last).squeeze(1)
    return torch.where(has, out, torch.zeros_like(out))
