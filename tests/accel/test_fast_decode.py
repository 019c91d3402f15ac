"""The flat decode step (`fast_decode.FastDecoder`) against the models' own forward: same logits,
same sampled rollouts, and the usual forward wherever the model is not a plain Llama-family one."""

from __future__ import annotations

import pytest
import torch
from rollout_tiny import PAD, tiny_qwen2
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from r1kit.accel import fast_decode
from r1kit.accel.attention import install
from r1kit.accel.engine import AcceleratedEngine
from r1kit.accel.fast_decode import FastDecoder
from r1kit.accel.onednn import onednn_available
from r1kit.algorithms.cache_argument import model_cache_argument
from r1kit.rollout import SamplingParams
from r1kit.rollout.hf import left_pad
from r1kit.rollout.kv_cache import make_cache

pytestmark = pytest.mark.numerics

ONEDNN = onednn_available()

SHAPE = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def qwen2_tied():
    torch.manual_seed(1)
    return Qwen2ForCausalLM(Qwen2Config(**SHAPE, tie_word_embeddings=True)).eval()


def llama_biases_and_scaled_rope():
    # Biases everywhere, a head size other than hidden / heads and llama3 RoPE scaling (the model's
    # rotary module is reused, so each RoPE variant comes for free).
    torch.manual_seed(2)
    config = LlamaConfig(
        **SHAPE, attention_bias=True, mlp_bias=True, head_dim=16,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def mistral():
    torch.manual_seed(3)
    return MistralForCausalLM(MistralConfig(**SHAPE, sliding_window=None)).eval()


def llama_dynamic_rope():
    # RoPE whose frequencies follow the sequence length: no position tables, the rotary module per step.
    torch.manual_seed(4)
    config = LlamaConfig(**{**SHAPE, "max_position_embeddings": 8}, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    return LlamaForCausalLM(config).eval()


MODELS = {"qwen2": tiny_qwen2, "qwen2-tied": qwen2_tied, "llama": llama_biases_and_scaled_rope, "mistral": mistral}
# The flat step serves length-dependent RoPE too (without position tables); CUDA graphs do not (MODELS
# is shared with test_graph_decode).
FAST_MODELS = {**MODELS, "llama-dynamic-rope": llama_dynamic_rope}
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


@pytest.fixture(params=["mkl", "onednn"])
def projections(request, monkeypatch):
    """Each test runs twice: projections through F.linear, then through oneDNN on packed weights
    (the threshold lowered so that these tiny models pack)."""
    if request.param == "onednn":
        if not ONEDNN:
            pytest.skip("this torch build has no oneDNN linear")
        monkeypatch.setattr(fast_decode, "PACKED_DECODE_FLOPS", 0)
    return request.param


@pytest.mark.parametrize("make_model", FAST_MODELS.values(), ids=FAST_MODELS.keys())
def test_one_step_gives_the_models_logits(make_model, projections):
    model = make_model()
    ids, mask = left_pad(PROMPTS, PAD, torch.device("cpu"))
    P = ids.shape[1]
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    tokens = torch.tensor([21, 22, 23])
    step_mask = torch.cat([mask.bool(), torch.ones(3, 1, dtype=torch.bool)], dim=1)  # [3, P + 1]
    position = mask.sum(1, keepdim=True)
    cache_name = model_cache_argument(model)
    got, want = [], []
    install(model)  # the forward's one-token attention as the accelerated engine's forward path has it
    with torch.inference_mode():
        for out, fast in ((got, True), (want, False)):
            cache = make_cache(model, capacity=P + 4)
            model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_name: cache})
            if fast:
                decoder = FastDecoder.build(model, cache, P + 4)
                assert decoder is not None and decoder.packed == (projections == "onednn")
                out.append(decoder(tokens, step_mask, position))
            else:
                logits = model(input_ids=tokens[:, None], attention_mask=step_mask[:, None, None, :], position_ids=position, use_cache=True, **{cache_name: cache}).logits
                out.append(logits[:, -1].float())
            out.append(cache.layers[0].length)
    assert got[1] == want[1] == P + 1  # the step wrote its key and value into the cache
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)


def rollout(model, fast: bool, calls: list | None = None):
    """The accelerated engine's rollout with the flat step (`fast`) or through the forward, on a
    model with the attention `accel.apply` gives it."""
    install(model)
    engine = AcceleratedEngine(model, pad_token_id=PAD, eos_token_id=[3], fast_decode=fast, processes=1)
    handle = None
    if calls is not None:
        handle = model.get_decoder().register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        return engine.generate(PROMPTS, SamplingParams(temperature=0.9, max_new_tokens=20, n=3, seed=11))
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("make_model", FAST_MODELS.values(), ids=FAST_MODELS.keys())
def test_rollouts_equal_those_of_the_models_forward(make_model, projections):
    model = make_model()
    calls: list = []
    fast = rollout(model, True, calls)
    plain = rollout(model, False)
    assert len(calls) == 1  # the prefill; every decode step went through the flat function
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, rtol=1e-5, atol=1e-5)
    assert fast.finish_reason == plain.finish_reason
    assert fast.completion_mask.sum() > 9 * 3  # rows ran for a while (some end on eos, id 3)


def test_anything_but_a_plain_llama_family_decoder_takes_the_forward():
    peft = pytest.importorskip("peft")
    from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    lora = peft.get_peft_model(tiny_qwen2(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    gemma2 = Gemma2ForCausalLM(Gemma2Config(**SHAPE, head_dim=8)).eval()
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**SHAPE)).eval()  # q/k norms
    gelu = Qwen2ForCausalLM(Qwen2Config(**SHAPE, hidden_act="gelu")).eval()
    for model in (lora.get_base_model(), gemma2, qwen3, gelu):
        cache = make_cache(model, capacity=8)
        assert cache is None or FastDecoder.build(model, cache, 8) is None, type(model).__name__
    plain = tiny_qwen2()
    assert FastDecoder.build(plain, make_cache(plain, capacity=8), 8) is not None
    assert FastDecoder.build(plain, None, 8) is None  # transformers' own cache: no preallocated buffers
    calls: list = []
    rollout(lora, True, calls)
    assert len(calls) > 1  # LoRA layers are not plain linears: the decode ran the forward


def test_rollouts_under_bf16_autocast_equal_those_of_the_models_forward(projections):
    # precision=bf16 runs the rollout under autocast: the flat step's matmuls must round as the
    # forward's do, so under autocast nothing is packed for oneDNN (which would compute in float32).
    model = tiny_qwen2()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, plain = rollout(model, True), rollout(model, False)
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, rtol=1e-4, atol=1e-4)


def test_packing_follows_the_work_per_step_and_the_dtype(monkeypatch):
    if not ONEDNN:
        pytest.skip("this torch build has no oneDNN linear")
    model = tiny_qwen2()  # ~20k parameters
    params = sum(p.numel() for p in model.parameters())
    ids, mask = left_pad(PROMPTS, PAD, torch.device("cpu"))
    cache = make_cache(model, capacity=ids.shape[1] + 4)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, use_cache=True, **{model_cache_argument(model): cache})
    rows = ids.shape[0]
    monkeypatch.setattr(fast_decode, "PACKED_DECODE_FLOPS", 2 * params * rows + 1)
    assert not FastDecoder.build(model, cache, ids.shape[1] + 4).packed
    monkeypatch.setattr(fast_decode, "PACKED_DECODE_FLOPS", 2 * params * rows)
    assert FastDecoder.build(model, cache, ids.shape[1] + 4).packed
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not FastDecoder.build(model, cache, ids.shape[1] + 4).packed
    assert not FastDecoder.build(model.to(torch.float64), cache, ids.shape[1] + 4).packed


@pytest.mark.parametrize("make_model", FAST_MODELS.values(), ids=FAST_MODELS.keys())
def test_under_autocast_the_weights_are_cast_once_and_the_logits_stay_the_same_to_the_bit(make_model):
    # A CUDA graph is captured with autocast's cast cache off, so the step holds its weights already
    # cast; each product must then round exactly as autocast's own cast would have it round.
    model = make_model()
    ids, mask = left_pad(PROMPTS, PAD, torch.device("cpu"))
    P = ids.shape[1]
    tokens = torch.tensor([21, 22, 23])
    step_mask = torch.cat([mask.bool(), torch.ones(3, 1, dtype=torch.bool)], dim=1)
    position = mask.sum(1, keepdim=True)
    logits = {}
    install(model)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for precast in (True, False):
            cache = make_cache(model, capacity=P + 4)
            model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True, **{model_cache_argument(model): cache})
            decoder = FastDecoder(model, cache, precast=precast)
            assert decoder.head_weight.dtype == (torch.bfloat16 if precast else torch.float32)
            logits[precast] = decoder(tokens, step_mask, position)
    assert torch.equal(logits[True], logits[False])
    with torch.inference_mode():  # outside autocast nothing is cast
        assert FastDecoder(model, make_cache(model, capacity=P + 4)).head_weight.dtype == torch.float32
