"""Losses that learn from pairwise preferences: reward models (Bradley-Terry, Christiano et al.)
and direct preference optimisation (DPO and its variants, and RPO's NLL term on the chosen side).

Log-probabilities passed to `dpo_loss` are sums over the completion's tokens, log pi(y | x),
one number per pair member.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1kit.algorithms.masked import masked_sum
from r1kit.algorithms.modes import check_mode

DPO_LOSS_TYPES = ("sigmoid", "cdpo", "ipo", "robust", "simpo")


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Reward-model loss -log sigmoid(r_c - r_r - m), averaged over pairs.

    r_chosen, r_rejected  # [B] scalar rewards of the preferred and the other completion
    margin                # [B] optional; how much the chosen must win by (Llama 2, Touvron et
                          # al. 2023, uses a margin from the rating gap)
    center_coef: adds center_coef * mean((r_c + r_r)^2), pulling rewards towards zero mean
        (Eisenstein et al. 2023; TRL's `center_rewards_coefficient`).
    Bradley & Terry 1952: P(c > r) = sigmoid(r_c - r_r); Ouyang et al. 2022 (InstructGPT).
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def christiano_pair_loss(
    step_rewards_a: torch.Tensor,
    mask_a: torch.Tensor,
    step_rewards_b: torch.Tensor,
    mask_b: torch.Tensor,
    pref: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of a preference between two segments scored by per-step rewards.

    step_rewards_a  # [B, T] r_hat at each step of segment a; mask_a [B, T]
    step_rewards_b  # [B, T] r_hat at each step of segment b; mask_b [B, T]
    pref            # [B] 1 if a is preferred, 0 if b, 0.5 for a tie
    Christiano et al. 2017, "Deep RL from Human Preferences":
      P(a > b) = exp(sum_t r_hat(a_t)) / (exp(sum_t r_hat(a_t)) + exp(sum_t r_hat(b_t)))
               = sigmoid(sum_a - sum_b)
      loss = -mean(pref * log P(a > b) + (1 - pref) * log P(b > a))
    (The paper also mixes in a 10% chance of a uniformly random label; that is left out here.)
    """
    logit = masked_sum(step_rewards_a, mask_a, dim=-1) - masked_sum(step_rewards_b, mask_b, dim=-1)
    return F.binary_cross_entropy_with_logits(logit, pref.to(logit.dtype))


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor | None,
    ref_rejected_logp: torch.Tensor | None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO-family loss over a batch of preference pairs, and the implicit rewards.

    policy_chosen_logp, policy_rejected_logp  # [B] summed log pi(y | x) of chosen / rejected
    ref_chosen_logp, ref_rejected_logp        # [B] same under the reference model, or both None
                                              # (reference-free: log ref taken as 0)
    chosen_len, rejected_len                  # [B] completion token counts (ipo and simpo)
    Returns (loss scalar, chosen_rewards [B], rejected_rewards [B]); rewards are detached,
    beta * (log pi - log ref) (SimPO: beta * mean token log pi).

    With h = (log pi_c - log ref_c) - (log pi_r - log ref_r):
      "sigmoid" DPO (Rafailov et al. 2023): -log sigmoid(beta h).
      "cdpo"    conservative DPO (Mitchell 2023): labels flipped with prob eps = label_smoothing,
                -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). "sigmoid" with
                label_smoothing > 0 computes the same (TRL's convention).
      "robust"  robust DPO (Chowdhury et al. 2024), unbiased under label-flip rate
                eps = label_smoothing < 0.5:
                ((1 - eps)(-log sigmoid(beta h)) - eps(-log sigmoid(-beta h))) / (1 - 2 eps).
      "ipo"     IPO (Azar et al. 2023): (h - 1/(2 beta))^2, with every log-prob divided by its
                completion length first (TRL's convention: average per-token log-probs), so
                chosen_len and rejected_len are required.
      "simpo"   SimPO (Meng et al. 2024), no reference model:
                -log sigmoid(beta (log pi_c / |y_c| - log pi_r / |y_r|) - simpo_gamma),
                with label smoothing as in "cdpo"; lengths required, ref log-probs ignored.
    """
    check_mode("loss_type", loss_type, DPO_LOSS_TYPES)
    if (ref_chosen_logp is None) != (ref_rejected_logp is None):
        raise ValueError("pass both reference log-probs or neither")
    if loss_type in ("ipo", "simpo") and (chosen_len is None or rejected_len is None):
        raise ValueError(f"loss_type={loss_type!r} needs chosen_len and rejected_len")
    if loss_type == "robust" and not label_smoothing < 0.5:
        raise ValueError("robust DPO needs label_smoothing (the label-flip rate) below 0.5")

    pc, pr = policy_chosen_logp, policy_rejected_logp
    rc, rr = _reference(ref_chosen_logp, pc), _reference(ref_rejected_logp, pr)
    if loss_type in ("ipo", "simpo"):
        pc, rc = pc / chosen_len, rc / chosen_len
        pr, rr = pr / rejected_len, rr / rejected_len
    if loss_type == "simpo":
        rc, rr = torch.zeros_like(pc), torch.zeros_like(pr)

    h = (pc - rc) - (pr - rr)  # [B]
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    elif loss_type == "simpo":
        losses = _smoothed_sigmoid_loss(beta * h - simpo_gamma, label_smoothing)
    elif loss_type == "robust":
        eps = label_smoothing
        losses = ((1 - eps) * -F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    else:
        losses = _smoothed_sigmoid_loss(beta * h, label_smoothing)
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def chosen_nll(chosen_logp: torch.Tensor, chosen_len: torch.Tensor) -> torch.Tensor:
    """Mean per-token negative log-likelihood of the chosen completions: RPO's extra term.

    chosen_logp  # [B] summed log pi(y_c | x) of each chosen completion
    chosen_len   # [B] its token count
    Returns -sum_i log pi(y_c,i) / sum_i |y_c,i|, the mean over every chosen token in the batch.

    RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization") trains on
    dpo_loss + alpha * NLL(chosen): DPO alone can lower the likelihood of the chosen answer as long
    as the rejected one falls faster, and the NLL term holds it up. The token mean over the batch is
    TRL's `rpo_alpha` convention; the paper divides each sequence by its own length before
    averaging over pairs (the same number when the lengths are equal).
    """
    return -chosen_logp.sum() / chosen_len.sum()


def _reference(ref_logp: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if ref_logp is None else ref_logp


def _smoothed_sigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against the label 1 - label_smoothing."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
