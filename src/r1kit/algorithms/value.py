"""PPO's value-model loss, its explained variance, and the KL-coefficient controllers of RLHF PPO.

The controllers are the only state in `r1kit.algorithms`: one float each, updated once per step,
kept in a checkpoint through `state_dict` / `load_state_dict`.
"""

from __future__ import annotations

import torch

from r1kit.algorithms.masked import masked_mean


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss 0.5 * max((v - R)^2, (clip(v, v_old - c, v_old + c) - R)^2), token mean.

    values      # [B, T] current value predictions (requires grad)
    old_values  # [B, T] predictions at sampling time
    returns     # [B, T] targets (GAE returns)
    mask        # [B, T]
    clip_range: c; None turns clipping off (plain 0.5 * (v - R)^2).
    Returns (loss, {"vf/clipfrac": fraction of tokens where the clipped term is the larger one
    (its gradient is 0 there), "vf/mse": mean (v - R)^2}).
    Schulman et al. 2017 (PPO) as implemented in OpenAI baselines and Ziegler et al. 2019.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        per_token, clipped_more = unclipped, torch.zeros_like(unclipped)
    else:
        v_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        clipped = (v_clipped - returns) ** 2
        per_token = torch.maximum(unclipped, clipped)
        clipped_more = (clipped > unclipped).to(values.dtype)
    loss = 0.5 * masked_mean(per_token, mask)
    metrics = {
        "vf/clipfrac": masked_mean(clipped_more.detach(), mask).item(),
        "vf/mse": masked_mean(unclipped.detach(), mask).item(),
    }
    return loss, metrics


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over the masked tokens.

    values, returns, mask  # [B, T]
    1 is a perfect value model, 0 one no better than a constant, negative one worse than that.
    NaN when the returns have zero variance. Variances are population ones (divide by n); the
    ratio does not depend on the choice.
    """
    mask = mask.to(values.dtype)

    def var(x: torch.Tensor) -> torch.Tensor:
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    var_returns = var(returns)
    if var_returns == 0:
        return float("nan")
    return (1.0 - var(returns - values) / var_returns).item()


class FixedKLController:
    """A constant KL coefficient with the controller interface (`value`, `update`)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019, "Fine-Tuning LMs from Human Preferences".

    After each batch: e = clip(KL / target - 1, -0.2, 0.2), beta <- beta * (1 + e * n_steps / horizon).
    The coefficient rises while the measured KL is above `target` and falls while below it, by at
    most 20% per `horizon` steps.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt after a batch of `n_steps` samples whose mean KL(pi || ref) was `current_kl`."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
