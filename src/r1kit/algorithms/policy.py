"""The clipped policy-gradient loss shared by PPO, GRPO, DAPO, Dr. GRPO and GSPO.

Per token t of completion i, with ratio r = pi(y_t) / pi_old(y_t) and advantage A_i:

  loss_{i,t} = -min(r * A_i, clip(r, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_{i,t}

- PPO (Schulman et al. 2017) / DeepSeekMath GRPO (Shao et al. 2024): eps_low = eps_high.
- Clip-higher (DAPO, Yu et al. 2025): eps_high > eps_low, so unlikely tokens can grow further
  before the clip stops them, which keeps entropy from collapsing.
- Sequence-level ratio (GSPO, Zheng et al. 2025): every token of completion i uses
  s_i = exp(mean_t (log pi - log pi_old)), the geometric mean of its token ratios.
- Aggregation: how per-token losses become one number (`LOSS_AGGS`), see `aggregate`.

When there is a single gradient step per batch of rollouts (mu = 1), pi_old = pi: pass
`old_logp=None` and the ratio is exp(logp - logp.detach()), exactly 1 with gradient grad logp,
so the old-log-prob forward pass can be skipped.
"""

from __future__ import annotations

import torch

from r1kit.algorithms.kl import kl_estimate
from r1kit.algorithms.masked import masked_mean
from r1kit.algorithms.modes import check_mode

RATIO_LEVELS = ("token", "sequence")
LOSS_AGGS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    ratio_level: str = "token",
    loss_agg: str = "seq_mean_token_mean",
    max_len: int | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_kind: str = "k3",
    kl_ratio: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss (plus optional KL penalty) and its clipping metrics.

    logp        # [N, T] log pi(y_t) under the current policy (requires grad)
    old_logp    # [N, T] log pi_old(y_t) at sampling time, or None for mu = 1 (ratio = 1)
    advantages  # [N] one per completion (GRPO), or [N, T] one per token (PPO with GAE)
    mask        # [N, T] 1 on completion tokens
    eps_high: upper clip; None means eps_low (symmetric PPO clip).
    ratio_level: "token" (PPO/GRPO) or "sequence" (GSPO; pair it with seq_mean_token_mean, the
        aggregation its gradient is defined with).
    ref_logp, beta, kl_kind: adds beta * KL(pi || ref) per token (estimator `kl_kind`, see kl.py).
    kl_ratio: multiply that KL term by the (unclipped) importance ratio at `ratio_level`. Its value
        is 1 on fresh samples (mu = 1) but its gradient adds k * grad log pi, which makes k3's
        gradient the exact gradient of KL(pi || ref), (log pi - log ref) grad log pi, where plain k3
        gives (1 - ref / pi) grad log pi (DeepSeek-V3.2's unbiased KL; TRL's `use_bias_correction_kl`).
        At ratio_level="sequence" the ratio's per-token form carries each token's own gradient
        (`_log_ratio`), so the gradient is that same exact one; TRL's sequence weight differs there.
    Returns (loss scalar, metrics) with metrics as floats:
      clip/ratio_low   fraction of tokens with A < 0 and r < 1 - eps_low (lower clip active)
      clip/ratio_high  fraction of tokens with A > 0 and r > 1 + eps_high (upper clip active)
      clip/region      fraction of tokens where either clip is active (their gradient is 0)
      ratio/mean       mean ratio over tokens
      kl               mean per-token KL estimate, when ref_logp is given
    """
    check_mode("ratio_level", ratio_level, RATIO_LEVELS)
    check_mode("loss_agg", loss_agg, LOSS_AGGS)
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta != 0 needs ref_logp (the reference model's log-probs)")
    eps_high = eps_low if eps_high is None else eps_high
    mask = mask.to(logp.dtype)
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # [N, 1] or [N, T]

    ratio = torch.exp(_log_ratio(logp, old_logp, mask, ratio_level))  # [N, T]
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped_ratio)

    metrics = _clip_metrics(ratio.detach(), adv, mask, eps_low, eps_high)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kl_kind)
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
        if beta != 0.0:
            per_token = per_token + beta * (kl * ratio if kl_ratio else kl)
    return aggregate(per_token, mask, loss_agg, max_len), metrics


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_agg: str = "seq_mean_token_mean",
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [N, T] over the masked tokens to a scalar.

    "seq_mean_token_mean"      mean over each sequence's tokens, then over sequences
                               (DeepSeekMath GRPO; long sequences get less weight per token).
    "token_mean"               mean over all tokens of the batch (DAPO; every token weighs the same).
    "seq_mean_token_sum_norm"  each sequence's token sum divided by the constant `max_len`
                               (default: T, the padded length), then mean over sequences
                               (Dr. GRPO; no length normalisation bias).
    """
    check_mode("loss_agg", loss_agg, LOSS_AGGS)
    if loss_agg == "token_mean":
        return masked_mean(per_token, mask)
    if loss_agg == "seq_mean_token_mean":
        return masked_mean(per_token, mask, dim=-1).mean()
    norm = per_token.shape[-1] if max_len is None else max_len
    return ((per_token * mask.to(per_token.dtype)).sum(-1) / norm).mean()


def _log_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor | None, mask: torch.Tensor, ratio_level: str
) -> torch.Tensor:
    """log r per token [N, T]; for GSPO the sequence's mean log ratio, with token gradients.

    GSPO's per-token form: log s_i,t = sg[log s_i] + log pi(y_t) - sg[log pi(y_t)]. Its value is
    log s_i and its gradient is grad log pi(y_t), so that with seq_mean_token_mean the gradient
    is s_i * A_i * mean_t grad log pi(y_t), which is GSPO's gradient of s_i * A_i.
    """
    token = logp - (logp.detach() if old_logp is None else old_logp)
    if ratio_level == "token":
        return token
    sequence = masked_mean(token, mask, dim=-1).unsqueeze(-1)  # [N, 1]
    return logp - logp.detach() + sequence.detach()


def _clip_metrics(
    ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, eps_low: float, eps_high: float
) -> dict[str, float]:
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    return {
        "clip/ratio_low": masked_mean(low.to(mask.dtype), mask).item(),
        "clip/ratio_high": masked_mean(high.to(mask.dtype), mask).item(),
        "clip/region": masked_mean((low | high).to(mask.dtype), mask).item(),
        "ratio/mean": masked_mean(ratio, mask).item(),
    }
