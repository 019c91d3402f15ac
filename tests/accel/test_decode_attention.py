"""The CPU attention and the accelerated engine change nothing: decode attention equals SDPA, the
preallocated KV cache equals transformers' DynamicCache, the accelerated engine's rollouts equal the
plain engine's, and a small model decodes on one thread only under PASSIVE waits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rollout_tiny import PAD, tiny_qwen2

import r1kit.accel.engine as accel_engine
import r1kit.rollout.hf as hf
from r1kit.accel.attention import NAME, decode_attention, decode_scores, install
from r1kit.accel.engine import AcceleratedEngine
from r1kit.rollout import HFEngine, SamplingParams


class _Module(torch.nn.Module):
    pass


@pytest.mark.numerics
def test_decode_attention_equals_sdpa_with_grouped_heads_and_padding():
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 4, 2, 7, 8
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[1, ..., :3] = False  # a left-padded row

    out, _ = decode_attention(_Module(), query, key, value, mask, scaling=0.3)

    repeat = heads // kv_heads
    expected = F.scaled_dot_product_attention(
        query, key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1), attn_mask=mask, scale=0.3
    )
    assert out.shape == (batch, 1, heads, dim)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)


@pytest.mark.numerics
def test_decode_scores_stay_float32_under_bf16_autocast():
    # Scores rounded to bf16 before the softmax lose precision that SDPA's kernels keep: with scores
    # of a trained model's size (here std ~2.3) the output's error against float64 was 2.5x SDPA's.
    torch.manual_seed(0)
    q, keys = torch.randn(4, 2, 7, 64) * 1.5, torch.randn(4, 2, 300, 64) * 1.5
    exact = torch.matmul(q.double(), keys.double().transpose(-1, -2)) * 0.125
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = decode_scores(q, keys, 0.125)  # float32 inputs, as under autocast after RoPE
        from_bf16 = decode_scores(q.bfloat16(), keys.bfloat16(), 0.125)  # a model loaded in bf16
    assert scores.dtype == from_bf16.dtype == torch.float32
    torch.testing.assert_close(scores.double(), exact, rtol=1e-5, atol=1e-5)
    # bf16 inputs are rounded once; their products are not rounded again
    products = torch.matmul(q.bfloat16().double(), keys.bfloat16().double().transpose(-1, -2)) * 0.125
    torch.testing.assert_close(from_bf16.double(), products, rtol=1e-5, atol=1e-5)


def test_install_makes_it_the_attention_of_a_cpu_sdpa_model():
    model = tiny_qwen2()
    assert model.config._attn_implementation == "sdpa"
    assert install(model) and model.config._attn_implementation == NAME
    assert install(model)  # idempotent


def test_eager_attention_is_left_alone():
    model = tiny_qwen2()
    model.set_attn_implementation("eager")
    assert not install(model) and model.config._attn_implementation == "eager"


def generate(monkeypatch, *, accelerated: bool, preallocate: bool = True, fast_decode: bool = True):
    model = tiny_qwen2()
    if accelerated:
        install(model)
    if not preallocate:
        monkeypatch.setattr(hf, "make_cache", lambda m, capacity: None)
    if accelerated:
        engine = AcceleratedEngine(model, pad_token_id=PAD, eos_token_id=[3], processes=1, fast_decode=fast_decode)
    else:
        engine = HFEngine(model, pad_token_id=PAD, eos_token_id=[3])
    params = SamplingParams(temperature=0.9, max_new_tokens=20, n=3, seed=11)
    batch = engine.generate([[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]], params)
    monkeypatch.undo()
    return batch


@pytest.mark.parametrize("fast_decode", [True, False])  # the flat step; the forward with decode attention
def test_the_accelerated_engine_gives_the_plain_engine_s_rollouts(monkeypatch, fast_decode):
    fast = generate(monkeypatch, accelerated=True, fast_decode=fast_decode)
    plain = generate(monkeypatch, accelerated=False, preallocate=False)
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    assert torch.allclose(fast.logprobs, plain.logprobs, atol=1e-5)
    assert fast.finish_reason == plain.finish_reason


def test_qwen2_gets_the_preallocated_cache():
    from r1kit.rollout.kv_cache import PreallocatedLayer, make_cache

    cache = make_cache(tiny_qwen2(), capacity=10)
    assert cache is not None and all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)


def test_a_sliding_window_model_keeps_its_own_cache():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1kit.rollout.kv_cache import make_cache

    config = Qwen2Config(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=0,
    )
    assert make_cache(Qwen2ForCausalLM(config), capacity=10) is None


def test_a_small_model_decodes_on_one_thread_only_under_passive_waits_and_threads_are_restored(monkeypatch):
    engine = AcceleratedEngine(tiny_qwen2(), pad_token_id=PAD, eos_token_id=[], processes=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
        assert engine._decode_threads(rows=64) == 1  # ~20k parameters: far below the threshold
        monkeypatch.setattr(accel_engine, "ONE_THREAD_DECODE_FLOPS", 1.0)
        assert engine._decode_threads(rows=64) is None  # a model "too big" for one thread
        monkeypatch.setattr(accel_engine, "ONE_THREAD_DECODE_FLOPS", 5e8)
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        assert engine._decode_threads(rows=64) is None  # spinning threads are cheap to wake
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        seen = []
        real_step = engine.decode_step

        def counting_step(cache, capacity):
            step = real_step(cache, capacity)
            return lambda *a: (seen.append(torch.get_num_threads()), step(*a))[1]

        monkeypatch.setattr(engine, "decode_step", counting_step)
        engine.generate([[5, 6, 7], [8, 9]], SamplingParams(max_new_tokens=4, n=2, seed=0))
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert engine._decode_threads(rows=64) is None  # nothing to reduce
    finally:
        torch.set_num_threads(before)
