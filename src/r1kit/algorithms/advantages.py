"""Advantages: group-relative (GRPO, Dr. GRPO, RLOO) or none (REINFORCE), GRPO's
process-supervision form, per-token GAE (PPO), plus whitening.

Rows of a GRPO batch are laid out group by group: rows [g*G, (g+1)*G) are the G completions of
prompt g, so `rewards.view(-1, G)` gives one group per row. A reward of NaN means "not applicable
to this row" (a reward function returned None): such rows are left out of every mean and standard
deviation and get advantage 0, so they contribute no gradient.
"""

from __future__ import annotations

import torch

from r1kit.algorithms.masked import masked_mean, masked_var
from r1kit.algorithms.modes import check_mode

SCALES = ("group", "batch", "none")


@torch.no_grad()
def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO advantages: reward minus its group's mean, optionally divided by a standard deviation.

    rewards     # [N] float, N = B * G, NaN = not applicable
    group_size  # G
    scale:
      "group"  divide by the group's std (DeepSeekMath GRPO, Shao et al. 2024).
      "batch"  divide by the std of all rewards in the batch, the mean stays per group
               (Lite PPO, Liu et al. 2025 "Tricks or Traps"; TRL `scale_rewards="batch"`).
      "none"   do not divide (Dr. GRPO, Liu et al. 2025: the std term biases towards groups
               that are nearly all right or all wrong).
    eps: added to the std before dividing (TRL uses 1e-4).
    Returns     # [N] float, 0 on NaN rows and exactly 0 for a group whose valid rewards are all
                # equal (so it contributes no gradient). No gradient flows.

    The std is unbiased (divides by n - 1), as `torch.std` and TRL's GRPOTrainer compute it; with
    NaN rows, n counts the valid rows only, and a group with one valid row has std 0.
    """
    check_mode("scale", scale, SCALES)
    groups = _grouped(rewards, group_size)  # [B, G]
    valid = ~torch.isnan(groups)
    values = torch.where(valid, groups, torch.zeros_like(groups))
    mean = masked_mean(values, valid, dim=1).unsqueeze(1)  # [B, 1]
    # A group whose valid rewards are all equal gets exactly 0, not rounding noise / eps.
    centred = torch.where(_all_equal(groups, valid), torch.zeros_like(values), values - mean)
    if scale == "group":
        n = valid.sum(dim=1, keepdim=True).to(values.dtype)
        var = (centred**2 * valid).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1.0)
        centred = centred / _nonzero(var.sqrt() + eps)
    elif scale == "batch":
        centred = centred / _nonzero(masked_var(values, valid).sqrt() + eps)
    return torch.where(valid, centred, torch.zeros_like(centred)).reshape(-1)


@torch.no_grad()
def process_advantages(
    step_rewards: torch.Tensor,
    step_ends: torch.Tensor,
    num_tokens: int,
    group_size: int,
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO with process supervision (DeepSeekMath, Shao et al. 2024, section 4.1.3): per-token
    advantages from one reward per reasoning step.

    step_rewards  # [N, S] float, N = B * G; NaN = no such step (rows have different step counts)
    step_ends     # [N, S] long: the completion token that ends each step (ignored where NaN)
    num_tokens    # T, the completion length of the batch
    Returns       # [N, T] float

    The rewards of all steps of all G outputs of one prompt are normalised together,
    r~ = (r - mean) / (std + eps), and a token's advantage is the sum of the normalised rewards of
    the steps that end at or after it: A_t = sum over steps j with end_j >= t of r~_j. Tokens after
    a row's last step get 0. The std is unbiased (n - 1) as in `group_advantages`; a group whose
    steps all have the same reward (or that has at most one step) gets exactly 0.
    """
    if step_rewards.dim() != 2 or step_rewards.shape != step_ends.shape:
        raise ValueError(f"step_rewards and step_ends must both be [N, S]; got {tuple(step_rewards.shape)} and {tuple(step_ends.shape)}")
    N, S = step_rewards.shape
    groups = _grouped(step_rewards.reshape(-1), group_size * S).view(-1, group_size * S)  # [B, G*S]
    valid = ~torch.isnan(groups)
    values = torch.where(valid, groups, torch.zeros_like(groups))
    mean = masked_mean(values, valid, dim=1).unsqueeze(1)
    centred = torch.where(_all_equal(groups, valid), torch.zeros_like(values), values - mean)
    n = valid.sum(dim=1, keepdim=True).to(values.dtype)
    std = ((centred**2 * valid).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1.0)).sqrt()
    normalised = torch.where(valid, centred / _nonzero(std + eps), torch.zeros_like(centred)).view(N, S)
    # Each step's normalised reward placed at its last token, then summed from the right.
    at_end = torch.zeros(N, num_tokens + 1, dtype=values.dtype, device=values.device)
    ends = torch.where(valid.view(N, S), step_ends.clamp(0, num_tokens - 1), torch.full_like(step_ends, num_tokens))
    at_end.scatter_add_(1, ends, normalised)
    return at_end[:, :num_tokens].flip(1).cumsum(1).flip(1)


@torch.no_grad()
def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages: r_i minus the mean reward of the other G - 1 samples.

    rewards     # [N] float, N = B * G, NaN = not applicable
    Returns     # [N]; equals G/(G-1) * (r_i - group mean) when no reward is NaN.
    Kool et al. 2019 "Buy 4 REINFORCE samples, get a baseline for free!"; Ahmadian et al. 2024
    (RLOO for RLHF). NaN rows are left out of the others' baselines and get 0; so does a row
    with no valid other row to compare against.
    """
    groups = _grouped(rewards, group_size)
    valid = ~torch.isnan(groups)
    values = torch.where(valid, groups, torch.zeros_like(groups))
    n = valid.sum(dim=1, keepdim=True).to(values.dtype)
    others_mean = (values.sum(dim=1, keepdim=True) - values) / (n - 1).clamp(min=1.0)
    keep = valid & (n > 1) & ~_all_equal(groups, valid)
    return torch.where(keep, values - others_mean, torch.zeros_like(values)).reshape(-1)


@torch.no_grad()
def reinforce_advantages(rewards: torch.Tensor, group_size: int = 1) -> torch.Tensor:
    """No baseline: each completion's advantage is its own reward (REINFORCE, Williams 1992), the
    Monte Carlo estimate that the group baselines above reduce the variance of.

    rewards     # [N] float, NaN = not applicable
    group_size  # unused (the same signature as the group estimators)
    Returns     # [N]; 0 on NaN rows. A group whose rewards are all equal still pushes every
                # completion up by its reward: with no baseline there is nothing to compare with.
    """
    return torch.nan_to_num(rewards, nan=0.0)


@torch.no_grad()
def whiten(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries; 0 at padding.

    x     # any shape, e.g. GAE advantages [B, T]
    mask  # same shape (bool or float); None = every entry counts
    shift_mean=False adds the mean back, rescaling without centring (as TRL's `masked_whiten`).
    The variance is unbiased (n - 1), as in TRL's `masked_var`.
    """
    mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    mean = masked_mean(x, mask)
    out = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros_like(out))


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016) over right-padded sequences.

    rewards  # [B, T] per-token reward (e.g. task reward on the last token minus a KL penalty)
    values   # [B, T] V(s_t) from the value model at sampling time
    mask     # [B, T] 1 on real tokens; each row is real tokens followed by padding
    Returns (advantages, returns), both [B, T] and 0 at padding; returns = advantages + values
    are the value-model targets. No gradient flows.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1}, with
    V and A taken as 0 past the last real token (the episode ends there).
    """
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def _all_equal(groups: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, 1] True where a group's valid entries are all equal (or it has none)."""
    highest = torch.where(valid, groups, -torch.inf).amax(dim=1, keepdim=True)
    lowest = torch.where(valid, groups, torch.inf).amin(dim=1, keepdim=True)
    return highest <= lowest


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """x with zeros replaced by 1, for dividing 0 by a zero std (eps=0) without NaN."""
    return torch.where(x == 0, torch.ones_like(x), x)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1 or rewards.shape[0] % group_size != 0:
        raise ValueError(f"rewards must be [B * G] with G={group_size}; got shape {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)
