"""A one-token decode step for Llama-family models (Llama, Qwen2, Mistral) with little Python.

A transformers forward pays, on every call, for its generality: module calls with hooks, output
recording, mask building, cache bookkeeping, keyword plumbing through four levels of functions. For
a decode step of a small model on CPU that overhead is most of the step (a 0.25M-parameter Qwen2,
64 rows: 2.4 ms per step through the model's forward, of which the arithmetic is under 1 ms). This
module runs the same step as a flat function over the model's own weights:

    x = embed(token); per layer: x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x)))); x += down(silu(gate(n2(x))) * up(n2(x)))
    (the MLP computed on columns, W @ x^T, which is faster for so few rows)
    logits = lm_head(norm(x))

with the model's own rotary module (so every RoPE variant transformers implements is served), its
RMSNorm arithmetic (float32 statistics, as transformers computes them), grouped-query attention as
two matmuls over the rollout engine's preallocated KV cache (the maths of `attention.py`), and
nothing else. It is used only where that is the whole model: a decoder of exactly these module
types, plain linear projections (no LoRA or quantised layers: PEFT models take the usual forward),
SiLU MLPs, no sliding window shorter than the cache. `FastDecoder.build` says None otherwise.

Same numbers as the model's forward up to float rounding (the tests compare logits and sampled
tokens with the forward path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1kit.rollout import kv_cache

# Decoder layer class -> the RMSNorm class its norms must be (Gemma's, say, scales by 1 + weight).
_LAYERS = {
    "LlamaDecoderLayer": "LlamaRMSNorm",
    "Qwen2DecoderLayer": "Qwen2RMSNorm",
    "MistralDecoderLayer": "MistralRMSNorm",
}


class FastDecoder:
    """Decode steps of `model` over `cache` (a cache from `kv_cache.make_cache`, already holding the
    prompts). Call with tokens [N], a boolean attention mask [N, T] over the cache's positions
    including the new one, and position ids [N, 1]; returns float32 logits [N, V]."""

    def __init__(self, model, cache):
        decoder = model.get_decoder()
        self.embed = decoder.embed_tokens.weight
        self.rotary = decoder.rotary_emb
        self.norm = _norm(decoder.norm)
        head = model.get_output_embeddings()
        self.head_weight, self.head_bias = head.weight, head.bias
        self.layers = []
        for layer, cache_layer in zip(decoder.layers, cache.layers):
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((
                _norm(layer.input_layernorm), _linear(attn.q_proj), _linear(attn.k_proj), _linear(attn.v_proj), _linear(attn.o_proj),
                _norm(layer.post_attention_layernorm), _linear(mlp.gate_proj), _linear(mlp.up_proj), _linear(mlp.down_proj),
                attn.head_dim, attn.scaling, cache_layer,
            ))  # fmt: skip

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
        return cls(model, cache) if plain else None

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        x = F.embedding(tokens, self.embed)  # [N, d]
        cos, sin = self.rotary(x, position)  # [N, 1, D]
        keep = mask[:, None, None, :]  # [N, 1, 1, T]
        N = x.shape[0]
        for norm1, q_proj, k_proj, v_proj, o_proj, norm2, gate, up, down, D, scaling, cache in self.layers:
            h = norm1(x)
            q = _rope(F.linear(h, *q_proj).view(N, -1, D), cos, sin)  # [N, H, D]
            k = _rope(F.linear(h, *k_proj).view(N, -1, D), cos, sin)  # [N, KV, D]
            v = F.linear(h, *v_proj).view(N, -1, D)
            keys, values = _append(cache, k, v)  # [N, KV, T, D]
            kv_heads = keys.shape[1]
            scores = torch.matmul(q.view(N, kv_heads, -1, D), keys.transpose(-1, -2)) * scaling  # [N, KV, g, T]
            scores = scores.masked_fill_(~keep, float("-inf"))
            out = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(values.dtype), values)  # [N, KV, g, D]
            x = x + F.linear(out.reshape(N, -1), *o_proj)
            # The MLP in column layout, W @ h^T: for a few dozen rows against [1536, 384] weights,
            # 8-12% faster than h @ W^T on our CPU (NOTES.md), same products.
            ht = norm2(x).t()
            x = x + _columns(down, F.silu(_columns(gate, ht)) * _columns(up, ht)).t()
        return F.linear(self.norm(x), self.head_weight, self.head_bias).float()


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


def _linear(module: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return module.weight, module.bias


def _norm(module):
    """The RMSNorm `module` as a function, with transformers' arithmetic (float32 statistics)."""
    weight, eps = module.weight, module.variance_epsilon

    def norm(x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    return norm


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [N, heads, D] at cos / sin [N, 1, D], as transformers applies it."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


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
