"""Token-level distillation divergences between a teacher's and a student's next-token distributions.

With P = teacher and Q = student, both softmax(logits / temperature) at each token:

  "forward_kl"  KL(P || Q) = sum_v P log(P / Q)   (Hinton et al. 2015; mode-covering, classic KD)
  "reverse_kl"  KL(Q || P) = sum_v Q log(Q / P)   (MiniLLM, Gu et al. 2024; mode-seeking)
  "jsd"         generalised JSD of GKD (Agarwal et al. 2024), with M = beta P + (1 - beta) Q:
                JSD(beta) = beta KL(P || M) + (1 - beta) KL(Q || M)

JSD convention (the same as GKD and TRL's `generalized_jsd_loss`): beta weights the teacher.
JSD(beta) itself tends to 0 at both ends, so beta = 0 is defined as forward KL(P || Q) (the limit of
JSD(beta) / beta) and beta = 1 as reverse KL(Q || P) (the limit of JSD(beta) / (1 - beta)).
For 0 < beta < 1 the value lies in [0, h(beta)], h the binary entropy (log 2 at beta = 0.5, where
JSD is symmetric in P and Q).

The loss is multiplied by temperature^2 so its gradient keeps the same scale as the temperature
changes (Hinton et al. 2015). The teacher's logits are detached: no gradient reaches the teacher.
"""

from __future__ import annotations

import math

import torch

from r1kit.algorithms.chunked import default_chunk_rows, row_chunks
from r1kit.algorithms.masked import masked_mean
from r1kit.algorithms.modes import check_mode

DISTILL_KINDS = ("forward_kl", "reverse_kl", "jsd")


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """temperature^2 * mean over masked tokens of the per-token divergence `kind`.

    student_logits  # [N, T, V] (requires grad)
    teacher_logits  # [N, T, V] same vocabulary (detached here)
    mask            # [N, T] 1 on tokens to distil
    beta: teacher weight of the "jsd" mixture, see the module docstring; unused otherwise.
    chunk_rows: rows whose float32 log-softmaxes are computed together (None: about 256 MiB).
    """
    check_mode("kind", kind, DISTILL_KINDS)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    rows = chunk_rows or default_chunk_rows(student_logits)
    teacher_logits = teacher_logits.detach()
    per_token = torch.cat(
        [
            token_divergence(student_logits[r], teacher_logits[r], kind, beta, temperature)
            for r in row_chunks(student_logits.shape[0], rows)
        ]
    )  # [N, T]
    return temperature**2 * masked_mean(per_token, mask)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token divergence `kind` between teacher P and student Q (no temperature^2 factor).

    student_logits, teacher_logits  # [..., V]
    Returns                         # [...] float32 (float64 for float64 logits)
    """
    check_mode("kind", kind, DISTILL_KINDS)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(log_q, log_p)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0)
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_v a_v (log a_v - log b_v) over the last dim, from log-probabilities."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)
