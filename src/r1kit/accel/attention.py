"""Plain-matmul attention on CPU: for one-token decode steps, and for the learner's grouped heads.

`install(model)` (called by `r1kit.accel.apply` and by the accelerated engine, on CPU models whose
attention is SDPA) makes `cpu_attention` the model's attention implementation, registered with
transformers' AttentionInterface under NAME (its masks are SDPA's boolean masks). It routes each
call by shape and leaves everything it does not serve to SDPA:

- One query token (a decode step): PyTorch's CPU scaled_dot_product_attention runs its flash
  kernel even there, where its blocking, per-thread buffers and thread barriers cost more than the
  arithmetic. For one query the attention is two small batched matmuls and a softmax
  (`decode_attention`).
- Several query tokens with grouped-query heads and a mask (the learner's passes, prompt
  prefills): transformers repeats every key and value head for SDPA (`enable_gqa` only without a
  mask) and the flash kernel then works through [query block x keys] tiles. Where the scores are
  small (`GROUPED_SCORES_BYTES`), `grouped_attention` stacks the group's query heads as rows
  instead, so each key/value head runs two batched matmuls over all of its queries and a softmax,
  with no repeated keys, a few batch rows at a time so that each chunk's scores stay in cache; like
  the flash kernels it keeps its inputs and output for backward, not the probabilities, which
  backward recomputes. Same outputs as SDPA to float rounding.

Anything else (long sequences, no mask, bf16, dropout, soft-capping or sinks) goes to SDPA. The
measurements behind the choices are in benchmarks/NOTES.md.
"""

from __future__ import annotations

import torch

NAME = "r1kit_cpu"
"""The name `cpu_attention` is registered under with transformers' attention interfaces."""

try:  # the attention interface arrived in transformers 4.48
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError:  # pragma: no cover - depends on the installed transformers
    AttentionInterface = None


def cpu_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention `install` gives a CPU model: `decode_attention` for one query token,
    `grouped_attention` otherwise (each hands what it does not serve to SDPA)."""
    route = decode_attention if query.shape[2] == 1 else grouped_attention
    return route(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


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


GROUPED_SCORES_BYTES = 32 * 2**20
"""Largest float32 score tensor (batch x query heads x queries x keys x 4 bytes) of one layer that
`grouped_attention` serves (the sizes it was measured faster at); larger ones go through SDPA's
tiled kernel."""


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
        and query.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and heads % kv_heads == 0
        and batch * heads * length * keys * 4 <= GROUPED_SCORES_BYTES
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    rows = (query * scale).reshape(batch * kv_heads, group * length, dim)  # [B KV, g L, D]
    blocked = ~attention_mask.expand(batch, 1, length, keys)[:, :, None]  # [B, 1, 1, L, S]
    flat = (batch * kv_heads, keys, dim)
    out = _GroupedAttention.apply(rows, key.reshape(flat), value.reshape(flat), blocked)  # [B KV, g L, D]
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous(), None


GROUPED_CHUNK_BYTES = 4 * 2**20
"""`grouped_attention` works through its rows a few (batch, key/value head) pairs at a time, so that
each chunk's scores (about this many bytes) stay in cache between the two products, and no
transient is score-sized."""


class _GroupedAttention(torch.autograd.Function):
    """softmax(rows keys^T, masked) values over [B KV, g L, .] rows, chunk by chunk over B KV,
    keeping for backward its inputs and output rather than the probabilities (the flash kernels
    keep about as much): backward recomputes each chunk's with one more product."""

    @staticmethod
    def forward(ctx, rows, keys, values, blocked):
        out = rows.new_empty(rows.shape[0], rows.shape[1], values.shape[2])
        for chunk, mask in _chunks(rows, keys, blocked):
            torch.bmm(_probabilities(rows[chunk], keys[chunk], mask), values[chunk], out=out[chunk])
        ctx.save_for_backward(rows, keys, values, blocked, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        rows, keys, values, blocked, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_rows, grad_keys, grad_values = torch.empty_like(rows), torch.empty_like(keys), torch.empty_like(values)
        # d scores = probs * (d probs - sum_k probs_k d probs_k), and that sum is grad_out . out
        delta = (grad_out * out).sum(-1, keepdim=True)
        for chunk, mask in _chunks(rows, keys, blocked):
            probs, g = _probabilities(rows[chunk], keys[chunk], mask), grad_out[chunk]
            torch.bmm(probs.transpose(1, 2), g, out=grad_values[chunk])
            grad_scores = torch.bmm(g, values[chunk].transpose(1, 2)).sub_(delta[chunk]).mul_(probs)
            torch.bmm(grad_scores, keys[chunk], out=grad_rows[chunk])
            torch.bmm(grad_scores.transpose(1, 2), rows[chunk], out=grad_keys[chunk])
        return grad_rows, grad_keys, grad_values, None


def _chunks(rows, keys, blocked):
    """(slice of B KV rows, its mask [b, 1, 1, L, S]) pairs, chunk by chunk, each chunk whole batch
    rows (all their key/value heads) of about GROUPED_CHUNK_BYTES of scores."""
    batch, kv_heads = blocked.shape[0], rows.shape[0] // blocked.shape[0]
    per_row = kv_heads * rows.shape[1] * keys.shape[1] * rows.element_size()
    step = max(1, GROUPED_CHUNK_BYTES // per_row)
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        yield slice(start * kv_heads, stop * kv_heads), blocked[start:stop]


def _probabilities(rows, keys, blocked):
    """softmax of the scores rows keys^T with blocked pairs at the dtype's lowest value (so a row
    with none unblocked gets uniform weights, not NaN)."""
    scores = torch.bmm(rows, keys.transpose(1, 2))
    batch, _, _, length, n_keys = blocked.shape
    # A bias added with a broadcast over the heads is much cheaper than a broadcast masked_fill_
    # (benchmarks/NOTES.md).
    bias = torch.zeros(blocked.shape, dtype=scores.dtype, device=scores.device).masked_fill_(blocked, torch.finfo(scores.dtype).min)
    scores.view(batch, -1, scores.shape[1] // length, length, n_keys).add_(bias)
    return scores.softmax(dim=-1)


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
    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return True


_REGISTERED = _register()


def install(model: torch.nn.Module) -> bool:
    """Make `cpu_attention` the attention of `model` (a transformers model, unwrapped) when it sits
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
