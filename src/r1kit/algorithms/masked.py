"""Masked reductions: means and variances over the real tokens of padded sequences.

Every loss in `r1kit.algorithms` reduces a per-token quantity over a `mask` that is 1 on real
tokens and 0 on padding. Masks may be bool or float; they are cast to the values' dtype here, so
callers never have to.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is set.

    x     # [..., T]
    mask  # same shape as x (bool or float)
    Returns a scalar when `dim` is None, else `x` reduced over `dim`.
    """
    m = mask.to(x.dtype)
    return (x * m).sum() if dim is None else (x * m).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is set.

    x     # [..., T]
    mask  # same shape as x (bool or float)
    An all-padding row (or an all-padding tensor) has mean 0, not NaN: its count is clamped to 1.
    """
    m = mask.to(x.dtype)
    count = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, m, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all positions where `mask` is set (a scalar).

    x     # any shape
    mask  # same shape as x (bool or float)
    `unbiased=True` divides by n - 1 (Bessel's correction, as `torch.var` does by default and as
    TRL's `masked_var` does); the divisor is clamped to 1 so a single real value has variance 0.
    """
    m = mask.to(x.dtype)
    mean = masked_mean(x, m)
    n = m.sum()
    divisor = (n - 1.0) if unbiased else n
    return masked_sum((x - mean) ** 2, m) / divisor.clamp(min=1.0)
