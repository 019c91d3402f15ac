"""Plain-matmul attention on CPU: for one-token decode steps, and for the learner's grouped heads.

PyTorch's CPU scaled_dot_product_attention runs its flash kernel even for a single query token,
where its blocking and per-thread buffers cost more than the arithmetic: on a tiny model it is a
third of each decode step, and with 2 threads on a busy machine its thread barriers stall for
milliseconds. For one query token the attention is two small batched matmuls and a softmax, so
during generation on CPU the engine switches the model to `decode_attention` (registered with
transformers' AttentionInterface under NAME) and switches it back afterwards. Prompts (more than
one query token) still go through SDPA; masks are SDPA's boolean masks.

The learner's passes (`completion_logprobs`) switch a CPU model to `grouped_attention` (under
GROUPED_NAME) instead. With grouped-query heads and a mask, transformers repeats every key and
value head for SDPA (`enable_gqa` only without a mask) and the flash kernel then works through
[query block x keys] tiles. Where the scores are small (`GROUPED_SCORES_BYTES`), the group's query
heads are stacked as rows instead, so each key/value head runs two batched matmuls over all of
its queries and a softmax, with no repeated keys: at 13M parameters (64 rows of 127 completion
tokens after a 13-token prompt, 6 query / 2 key-value heads) 21 + 31 ms per layer forward and
backward against SDPA's 26 + 50 ms, the same outputs to 1e-6. It keeps the softmax's output for
backward (where the flash kernel keeps one number per query), hence the bound. Anything else
(long sequences, no mask, bf16, dropout) goes to SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch

NAME = "r1kit_cpu_decode"

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


GROUPED_NAME = "r1kit_cpu_grouped"
GROUPED_SCORES_BYTES = 32 * 2**20
"""Largest float32 score tensor (batch x query heads x queries x keys x 4 bytes) of one layer that
`grouped_attention` computes whole; larger ones go through SDPA."""


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with the query heads of each key/value head stacked as rows, SDPA where that does
    not apply (module docstring).

    query [B, H, L, D], key / value [B, KV, S, D] (H a multiple of KV), attention_mask [B, 1, L, S]
    bool (True attends). Returns the output as [B, L, H, D], like SDPA's wrapper. A query that may
    attend to nothing (a padding position) gets uniform weights, as transformers' eager attention
    gives it, never NaN.
    """
    batch, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    if not (
        length > 1
        and not (dropout and module.training)
        and not any(kwargs.get(k) is not None for k in _SDPA_ONLY)
        and isinstance(attention_mask, torch.Tensor)
        and attention_mask.dtype == torch.bool
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and attention_mask.shape[-2:] == (length, keys)
        and query.dtype == key.dtype == value.dtype == torch.float32
        and not torch.is_autocast_enabled(query.device.type)
        and heads % kv_heads == 0
        and batch * heads * length * keys * 4 <= GROUPED_SCORES_BYTES
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    rows = (query * scale).reshape(batch * kv_heads, group * length, dim)  # [B KV, g L, D]
    scores = torch.bmm(rows, key.reshape(batch * kv_heads, keys, dim).transpose(1, 2))
    blocked = ~attention_mask.expand(batch, 1, length, keys)[:, :, None]  # [B, 1, 1, L, S]
    scores.view(batch, kv_heads, group, length, keys).masked_fill_(blocked, torch.finfo(scores.dtype).min)
    out = torch.bmm(scores.softmax(dim=-1), value.reshape(batch * kv_heads, keys, dim))  # [B KV, g L, D]
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous(), None


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
    for name, function in ((NAME, decode_attention), (GROUPED_NAME, grouped_attention)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)
    return True


_REGISTERED = _register()


def cpu_decode_attention(model, enabled: bool = True):
    """While inside, a CPU model that uses SDPA uses `decode_attention`; yields whether it does.

    Anything else (a GPU, eager or flash attention, a model that cannot switch) is left alone.
    """
    return cpu_attention(model, NAME, enabled)


def cpu_grouped_attention(model, enabled: bool = True):
    """While inside, a CPU model that uses SDPA uses `grouped_attention`; yields whether it does."""
    return cpu_attention(model, GROUPED_NAME, enabled)


@contextmanager
def cpu_attention(model, name: str, enabled: bool = True) -> Iterator[bool]:
    """While inside, a CPU model that uses SDPA uses the attention registered as `name`; yields
    whether it does. Anything else (a GPU, eager or flash attention, a model that cannot switch)
    is left alone."""
    original = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if not (enabled and _REGISTERED and original == "sdpa" and next(model.parameters()).device.type == "cpu"):
        yield False
        return
    try:
        model.set_attn_implementation(name)
    except (AttributeError, ValueError, ImportError):
        yield False
        return
    try:
        yield model.config._attn_implementation == name
    finally:
        model.set_attn_implementation(original)
