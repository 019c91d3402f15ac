"""A one-token decode step for Llama-family models (Llama, Qwen2, Mistral) with little Python.

A transformers forward pays, on every call, for its generality: module calls with hooks, output
recording, mask building, cache bookkeeping, keyword plumbing through four levels of functions. For
a decode step of a small model on CPU that overhead is most of the step. This module runs the same
step as a flat function over the model's own weights:

    x = embed(token); per layer: x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x)))); x += down(silu(gate(n2(x))) * up(n2(x)))
    logits = lm_head(norm(x))

with the model's own rotary module (so every RoPE variant transformers implements is served), its
RMSNorm arithmetic (float32 statistics, as transformers computes them), grouped-query attention as
two matmuls over the rollout engine's preallocated KV cache (the maths of `attention.py`), and
nothing else. It is used only where that is the whole model: a decoder of exactly these module
types, plain linear projections (no LoRA or quantised layers: PEFT models take the usual forward),
SiLU MLPs, no sliding window shorter than the cache. `FastDecoder.build` says None otherwise.

Projections through oneDNN. PyTorch's float32 `F.linear` on x86 calls MKL; the oneDNN library that
ships inside PyTorch runs the same products faster on some CPUs, given weights reordered into its
blocked layout (`onednn.py`). So from `PACKED_DECODE_FLOPS` of work per step, a float32 decoder
outside autocast packs its weights once per rollout (the policy changes between rollouts, and the
packing is small beside a rollout), with q/k/v fused into one product and gate/up into another
(free here: the packing copies the weights anyway), and runs every projection as one oneDNN call;
the copy lives as long as the rollout. Below that size oneDNN's per-call cost outweighs its faster
kernels, and the projections go through `F.linear`, the MLP on columns (W @ x^T, which MKL runs
faster for a few dozen rows). Still float32 arithmetic: logits agree with the forward's to float
rounding. The measurements are in docs/BENCHMARKS.md.

Same numbers as the model's forward up to float rounding (the tests compare logits and sampled
tokens with the forward path, both ways).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from r1kit.accel.attention import decode_scores
from r1kit.accel.onednn import onednn_available
from r1kit.rollout import kv_cache

PACKED_DECODE_FLOPS = 2e8
"""From this many model FLOPs per decode step (2 x parameters x rows) a float32 FastDecoder runs its
projections through oneDNN on packed weights (module docstring): on our 2-core CPU a 1M-parameter
model at 64 rows (1.3e8) gained nothing, a 3.3M one (4.3e8) did (docs/BENCHMARKS.md)."""

# Decoder layer class -> the RMSNorm class its norms must be (Gemma's, say, scales by 1 + weight).
_LAYERS = {
    "LlamaDecoderLayer": "LlamaRMSNorm",
    "Qwen2DecoderLayer": "Qwen2RMSNorm",
    "MistralDecoderLayer": "MistralRMSNorm",
}


class FastDecoder:
    """Decode steps of `model` over `cache` (a cache from `kv_cache.make_cache`, already holding the
    prompts). Call with tokens [N], a boolean attention mask [N, T] over the cache's positions
    including the new one, and position ids [N, 1]; returns float32 logits [N, V].

    With `slot` (a long tensor [1]) the step has the same shapes whatever the length (for CUDA
    graphs, `graph_decode.py`): the new key and value go to that column of the cache's buffers,
    attention runs over the whole buffer and `mask` is [N, capacity]; the cache's length is not
    advanced."""

    def __init__(self, model, cache, packed: bool = False, precast: bool = True):
        decoder = model.get_decoder()
        self.embed = decoder.embed_tokens.weight
        self.rotary = decoder.rotary_emb
        self.rope_tables = _rope_tables(self.rotary, self.embed, cache.layers[0].capacity)
        self.norm = _norm(decoder.norm)
        head = model.get_output_embeddings()
        device = head.weight.device.type
        # Under autocast every product casts its weights to the autocast dtype. Inside one autocast
        # region the casts are cached, but a CUDA graph is captured with that cache off (graph_decode),
        # so each replay would cast every weight again: cast once here instead, for the rollout. The
        # products then find their weights in the autocast dtype and compute exactly as before.
        cast = torch.get_autocast_dtype(device) if precast and not packed and torch.is_autocast_enabled(device) else None
        self.head_weight, self.head_bias = _linear(head, cast)
        self.packed = packed
        project = functools.partial(_packed_projections, rows=_rows(cache)) if packed else functools.partial(_plain_projections, cast=cast)
        self.layers = []
        for layer, cache_layer in zip(decoder.layers, cache.layers):
            attn = layer.self_attn
            qkv, o_proj, mlp = project(attn, layer.mlp)
            self.layers.append((_norm(layer.input_layernorm), qkv, o_proj, _norm(layer.post_attention_layernorm), mlp, attn.head_dim, attn.scaling, cache_layer))

    @classmethod
    def build(cls, model, cache, capacity: int) -> FastDecoder | None:
        """A FastDecoder for `model`, or None when it is not a plain Llama-family decoder (see the
        module docstring) or `cache` is not the engine's preallocated cache."""
        preallocated = getattr(kv_cache, "PreallocatedLayer", None)
        if cache is None or preallocated is None or not all(isinstance(layer, preallocated) for layer in cache.layers):
            return None
        try:
            decoder = model.get_decoder()
            layers = list(decoder.layers)
            head = model.get_output_embeddings()
            plain = (
                type(decoder.embed_tokens) is torch.nn.Embedding
                and type(head) is torch.nn.Linear
                and getattr(model.config, "hidden_act", None) == "silu"
                and len(layers) == len(cache.layers)
                and hasattr(decoder, "rotary_emb")
                and all(_plain_layer(layer, capacity) for layer in layers)
                and type(decoder.norm).__name__ in _LAYERS.values()
            )
        except AttributeError:
            return None
        if not plain:
            return None
        return cls(model, cache, packed=_packs(model, cache))

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, slot: torch.Tensor | None = None) -> torch.Tensor:
        x = F.embedding(tokens, self.embed)  # [N, d]
        if self.rope_tables is not None:
            cos, sin = (table[position] for table in self.rope_tables)  # [N, 1, D]
        else:
            cos, sin = self.rotary(x, position)
            sin = _signed(sin)
        # -inf on masked positions, added to the scores: an add broadcast over the heads is much
        # cheaper than a broadcast masked_fill_
        bias = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], device=mask.device).masked_fill_(~mask[:, None, None, :], float("-inf"))  # [N, 1, 1, T]
        N = x.shape[0]
        plain = x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)  # exact float32 scores by a plain matmul
        for norm1, qkv, o_proj, norm2, mlp, D, scaling, cache in self.layers:
            q, k, v = qkv(norm1(x))  # [N, H*D], [N, KV*D], [N, KV*D]
            q = _rope(q.unflatten(-1, (-1, D)), cos, sin)  # [N, H, D]
            k = _rope(k.unflatten(-1, (-1, D)), cos, sin)  # [N, KV, D]
            v = v.unflatten(-1, (-1, D))
            keys, values = _append(cache, k, v) if slot is None else _write(cache, k, v, slot)  # [N, KV, T, D]
            kv_heads = keys.shape[1]
            scores = decode_scores(q.view(N, kv_heads, -1, D), keys, scaling, plain)  # [N, KV, g, T] float32
            scores = scores.add_(bias)
            out = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(values.dtype), values)  # [N, KV, g, D]
            x = x + o_proj(out.reshape(N, -1))
            x = x + mlp(norm2(x))
        return F.linear(self.norm(x), self.head_weight, self.head_bias).float()


def _packs(model, cache) -> bool:
    """Whether a FastDecoder of `model` over `cache` runs its projections through oneDNN."""
    weight = model.get_output_embeddings().weight
    rows = _rows(cache)
    return (
        weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")  # the forward would run bf16 products: so must we
        and 2 * sum(p.numel() for p in model.parameters()) * rows >= PACKED_DECODE_FLOPS
        and onednn_available()
    )


def _rows(cache) -> int:
    """Rows of a preallocated cache's buffers (0 before its first write)."""
    buffer = getattr(cache.layers[0], "key_buffer", None)
    return 0 if buffer is None else buffer.shape[0]


def _plain_projections(attn, mlp, cast: torch.dtype | None = None):
    """(qkv, o, mlp) functions of a layer through `F.linear` on the model's own weights (or on copies
    cast to `cast`, the autocast dtype): qkv(h) gives q, k, v [N, .]; the MLP in column layout,
    W @ h^T, which MKL runs faster than h @ W^T for a few dozen rows (docs/BENCHMARKS.md), same products."""
    q, k, v, o = (_linear(m, cast) for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
    gate, up, down = (_linear(m, cast) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))

    def qkv(h):
        return F.linear(h, *q), F.linear(h, *k), F.linear(h, *v)

    def swiglu(h):
        ht = h.t()
        return _columns(down, F.silu(_columns(gate, ht)) * _columns(up, ht)).t()

    return qkv, lambda h: F.linear(h, *o), swiglu


def _packed_projections(attn, mlp, rows: int):
    """(qkv, o, mlp) functions of a layer through oneDNN on weights packed for `rows` rows, q/k/v
    fused into one product and gate/up into another (module docstring)."""
    fused_qkv = _OneDNNLinear((attn.q_proj, attn.k_proj, attn.v_proj), rows)
    sizes = [m.out_features for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    o_proj = _OneDNNLinear((attn.o_proj,), rows)
    gate_up, down = _OneDNNLinear((mlp.gate_proj, mlp.up_proj), rows), _OneDNNLinear((mlp.down_proj,), rows)
    inter = mlp.gate_proj.out_features

    def swiglu(h):
        gu = gate_up(h)  # [N, 2 I]
        return down(F.silu(gu[:, :inter]) * gu[:, inter:])

    return lambda h: fused_qkv(h).split(sizes, dim=-1), o_proj, swiglu


class _OneDNNLinear:
    """Linear layers with one input, their outputs side by side: x [N, in] -> [N, sum of outs],
    through oneDNN on a copy of the weights packed in its layout (for about `rows` rows)."""

    def __init__(self, linears: tuple[torch.nn.Linear, ...], rows: int):
        weight = torch.cat([m.weight.detach() for m in linears])
        biased = any(m.bias is not None for m in linears)
        self.bias = torch.cat([m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears]) if biased else None
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, max(rows, 1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def _plain_layer(layer, capacity: int) -> bool:
    norm = _LAYERS.get(type(layer).__name__)
    attn, mlp = layer.self_attn, layer.mlp
    window = getattr(attn, "sliding_window", None)
    return (
        norm is not None
        and type(layer.input_layernorm).__name__ == norm
        and type(layer.post_attention_layernorm).__name__ == norm
        and all(type(m) is torch.nn.Linear for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj))
        and not hasattr(attn, "q_norm")
        and (window is None or window >= capacity)
    )


def _columns(linear: tuple[torch.Tensor, torch.Tensor | None], xt: torch.Tensor) -> torch.Tensor:
    """The linear layer applied to columns: (x W^T + b)^T = W x^T + b, xt = x^T [in, N] -> [out, N]."""
    weight, bias = linear
    return weight @ xt if bias is None else torch.addmm(bias.unsqueeze(1), weight, xt)


def _linear(module: torch.nn.Linear, cast: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's (weight, bias), cast to `cast` as autocast would cast them (None: as they are)."""
    weight, bias = module.weight, module.bias
    if cast is None or weight.dtype == torch.float64:  # autocast leaves float64 alone
        return weight, bias
    return weight.to(cast), None if bias is None else bias.to(cast)


def _norm(module):
    """The RMSNorm `module` as a function, with transformers' arithmetic (float32 statistics). For
    float32 weights that is `F.rms_norm`'s arithmetic too (x * rsqrt(mean(x^2) + eps) * weight, the
    same ops in the same order, one call instead of six; the step's inputs are then float32)."""
    weight, eps = module.weight, module.variance_epsilon
    if weight.dtype == torch.float32:
        shape = tuple(weight.shape)
        return lambda x: F.rms_norm(x, shape, weight, eps)

    def norm(x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    return norm


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [N, heads, D] at cos [N, 1, D] and the sine with its first half negated
    (`_ROTATE_SIGN`), as transformers applies it: x cos + rotate_half(x) sin, where rotate_half(x) =
    (-x2, x1) is the halves swapped (one roll) times that sign. The same products to the bit."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


_ROTATE_SIGN = torch.tensor([-1.0, 1.0])
"""Per half of the head dimension: rotate_half's sign (expanded to D by `_signed`)."""

_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
"""RoPE types whose frequencies depend on the sequence length (their rotary module reads the
positions on the host): no position tables, and no CUDA graph (graph_decode)."""


def _signed(sin: torch.Tensor) -> torch.Tensor:
    """sin [..., D] with its first half negated (rotate_half's sign, exact)."""
    return sin * _ROTATE_SIGN.to(sin).repeat_interleave(sin.shape[-1] // 2)


def _rope_tables(rotary, embed: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """cos and signed sin [capacity + 1, D] of every position a rollout can reach, from the model's
    own rotary module in one call (each entry is computed as the per-step call computes it: the same
    numbers), for a table lookup per step instead of the module's dozen ops; None for RoPE types whose
    frequencies depend on the sequence length (the step then calls the module)."""
    if getattr(rotary, "rope_type", "default") in _LENGTH_DEPENDENT_ROPE:
        return None
    positions = torch.arange(capacity + 1, device=embed.device)[None]  # [1, capacity + 1]
    cos, sin = rotary(embed[:1], positions)  # [1, capacity + 1, D]
    return cos[0], _signed(sin)[0]  # [capacity + 1, D]: indexed by positions [N, 1], [N, 1, D]


def _write(layer, key: torch.Tensor, value: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one position's key / value [N, KV, D] at column `slot` ([1] long) of a preallocated cache
    layer's buffers; the whole buffers [N, KV, capacity, D]."""
    layer.key_buffer.index_copy_(2, slot, key.unsqueeze(2).to(layer.key_buffer.dtype))
    layer.value_buffer.index_copy_(2, slot, value.unsqueeze(2).to(layer.value_buffer.dtype))
    return layer.key_buffer, layer.value_buffer


def _append(layer, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one position's key / value [N, KV, D] into a preallocated cache layer; its filled part."""
    slot = layer.length
    if slot >= layer.capacity:
        raise RuntimeError(f"KV cache full: {slot + 1} positions asked, {layer.capacity} allocated.")
    layer.key_buffer[:, :, slot] = key
    layer.value_buffer[:, :, slot] = value
    layer.length = slot + 1
    layer._refresh_views()
    return layer.keys, layer.values
