"""Plain-matmul attention for one-token decode steps on CPU.

PyTorch's CPU scaled_dot_product_attention runs its flash kernel even for a single query token,
where its blocking, per-thread buffers and thread barriers cost more than the arithmetic: on a tiny
model it was a third of each decode step (docs/BENCHMARKS.md). For one query token the attention is
two small batched matmuls and a softmax (`decode_attention`), with grouped-query heads stacked as
rows instead of repeated keys and values.

`install(model)` (called by `r1kit.accel.apply` on CPU models whose attention is SDPA) makes
`decode_attention` the model's attention implementation, registered with transformers'
AttentionInterface under NAME (its masks are SDPA's boolean masks). Everything it does not serve
(several query tokens: prefills and the learner's passes; dropout, soft-capping, sinks) goes to SDPA
unchanged. It matters for the models the flat decode step (`fast_decode.py`) does not serve, which
decode through their forward (LoRA-wrapped ones, other architectures); `decode_scores` is the flat
step's too.
"""

from __future__ import annotations

import torch

NAME = "r1kit_cpu_decode"
"""The name `decode_attention` is registered under with transformers' attention interfaces."""

try:  # the attention interface arrived in transformers 4.48
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError:  # pragma: no cover - depends on the installed transformers
    AttentionInterface = None


# Keyword arguments that change the attention maths; with any of them set we leave it to SDPA.
_SDPA_ONLY = ("softcap", "s_aux", "sinks", "position_bias")


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with a matmul path for one query token, SDPA otherwise.

    query [B, H, 1, D], key / value [B, KV, T, D] (H a multiple of KV), attention_mask [B, 1, 1, T]
    bool (True attends) or None. Returns the output as [B, 1, H, D], like SDPA's wrapper.
    """
    if query.shape[2] != 1 or (dropout and module.training) or any(kwargs.get(k) is not None for k in _SDPA_ONLY):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    # Grouped-query attention without repeating K/V: the query heads of a group become rows.
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = decode_scores(q, key, dim**-0.5 if scaling is None else scaling)  # [B, KV, g, T] float32
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    out = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype), value)  # [B, KV, g, D]
    return out.reshape(batch, 1, heads, dim), None


def decode_scores(q: torch.Tensor, keys: torch.Tensor, scale: float, plain: bool | None = None) -> torch.Tensor:
    """Attention scores q @ keys^T * scale in float32: q [B, KV, g, D], keys [B, KV, T, D] -> [B, KV, g, T].

    Under bf16 autocast a plain matmul would round the scores to bf16 (8 bits of mantissa) before
    the softmax; SDPA's kernels keep them in float32. So do we: the product runs in float32 outside
    autocast (under autocast the keys in the cache are float32 already, as the forward stores them
    after RoPE). The softmax's output is then cast to the values' dtype, as those kernels do.
    `plain`: whether q and keys are float32 outside autocast, so that a plain matmul is exact (a
    caller with many layers decides once per step; None: decided here)."""
    if plain is None:
        plain = q.dtype == keys.dtype == torch.float32 and not torch.is_autocast_enabled(q.device.type)
    if plain:
        return torch.matmul(q, keys.transpose(-1, -2)) * scale
    with torch.autocast(q.device.type, enabled=False):
        return torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale




def _register() -> bool:
    if AttentionInterface is None:
        return False
    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return True


_REGISTERED = _register()


def install(model: torch.nn.Module) -> bool:
    """Make `decode_attention` the attention of `model` (a transformers model, unwrapped) when it sits
    on the CPU and uses SDPA; returns whether it now uses it. Anything else (a GPU, eager or flash
    attention, a model that cannot switch) is left alone. Deep copies (GRPO's reference) keep it."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME:
        return True
    if not (_REGISTERED and getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa"):
        return False
    if next(model.parameters()).device.type != "cpu":
        return False
    try:
        model.set_attn_implementation(NAME)
    except (AttributeError, ValueError, ImportError):
        return False
    return model.config._attn_implementation == NAME
