"""The learner's grouped-head attention on CPU: SDPA's outputs and gradients to float rounding,
SDPA itself wherever it does not apply, and switched on only inside `completion_logprobs`."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import completion_logprobs
from r1kit.models import attention
from r1kit.models.attention import GROUPED_NAME, grouped_attention

pytestmark = pytest.mark.numerics


class _Module(torch.nn.Module):
    pass


def sdpa(query, key, value, mask, scale):
    repeat = query.shape[1] // key.shape[1]
    out = F.scaled_dot_product_attention(query, key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1), attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def inputs(batch=3, heads=6, kv_heads=2, length=5, keys=9, dim=8):
    torch.manual_seed(0)
    q, k, v = torch.randn(batch, heads, length, dim), torch.randn(batch, kv_heads, keys, dim), torch.randn(batch, kv_heads, keys, dim)
    # each query sees the keys before it (a prompt of keys - length, then causal), row 1 left-padded
    mask = torch.ones(length, keys, dtype=torch.bool).tril(keys - length).expand(batch, 1, length, keys).clone()
    mask[1, ..., :2] = False
    return q, k, v, mask


def with_grads(fn, q, k, v):
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("chunk_bytes", [None, 1, 2 * 3 * 5 * 9 * 4 * 2])  # one chunk; a batch row each; two rows
def test_grouped_attention_equals_sdpa_in_outputs_and_gradients(monkeypatch, chunk_bytes):
    if chunk_bytes:
        monkeypatch.setattr(attention, "GROUPED_CHUNK_BYTES", chunk_bytes)
    q, k, v, mask = inputs()
    got = with_grads(lambda q, k, v: grouped_attention(_Module(), q, k, v, mask, scaling=0.3)[0], q, k, v)
    want = with_grads(lambda q, k, v: sdpa(q, k, v, mask, 0.3), q, k, v)
    assert got[0].shape == (3, 5, 6, 8)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_a_query_that_sees_nothing_gets_no_nan():
    q, k, v, mask = inputs()
    mask[2, :, 0] = False  # a padding query: no key at all
    out, *grads = with_grads(lambda q, k, v: grouped_attention(_Module(), q, k, v, mask)[0], q, k, v)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out[2, 0], v[2].mean(1).repeat_interleave(3, 0))  # uniform weights
    torch.testing.assert_close(out[:2], sdpa(q, k, v, mask, None)[:2], rtol=1e-5, atol=1e-6)


def test_sdpa_takes_what_grouped_attention_does_not_serve(monkeypatch):
    q, k, v, mask = inputs()
    calls = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **kw: calls.append(1) or (None, None))
    grouped_attention(_Module(), q, k, v, None)  # no mask: SDPA's causal kernel
    grouped_attention(_Module(), q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grouped_attention(_Module(), q, k, v, mask)
    grouped_attention(_Module(), q[:, :, :1], k, v, mask[:, :, :1])  # one query token
    monkeypatch.setattr(attention, "GROUPED_SCORES_BYTES", 3 * 6 * 5 * 9 * 4 - 1)  # scores too large
    grouped_attention(_Module(), q, k, v, mask)
    assert len(calls) == 5
    monkeypatch.setattr(attention, "GROUPED_SCORES_BYTES", 3 * 6 * 5 * 9 * 4)
    assert grouped_attention(_Module(), q, k, v, mask)[0] is not None and len(calls) == 5


def tiny_qwen2() -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=61, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


@pytest.mark.parametrize("share_prompts", [True, False])
def test_completion_logprobs_use_it_and_give_sdpa_s_numbers(monkeypatch, share_prompts):
    model = tiny_qwen2()
    ids = torch.randint(1, 61, (8, 14))
    mask = torch.ones_like(ids)
    ids[4:, :2], mask[4:, :2] = 0, 0  # two left-padded prompts (repeated, so prompts can be shared)
    ids[:4, :6], ids[4:, 2:6] = ids[0, :6], ids[4, 2:6]
    used = []
    original = attention.grouped_attention

    def spy(module, query, *args, **kwargs):
        used.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setitem(attention.AttentionInterface._global_mapping, GROUPED_NAME, spy)

    def logprobs():
        model.zero_grad(set_to_none=True)
        logp = completion_logprobs(model, ids, mask, 8, share_prompts=share_prompts)
        logp.sum().backward()
        return logp.detach(), [p.grad.clone() for p in model.parameters()]

    got, got_grads = logprobs()
    assert used and model.config._attn_implementation == "sdpa"  # switched on, then back
    monkeypatch.setattr(attention, "GROUPED_SCORES_BYTES", 0)  # every call to SDPA
    want, want_grads = logprobs()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
