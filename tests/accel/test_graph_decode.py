"""The static-shape decode step (`graph_decode.GraphDecoder`): the flat step's logits step after step,
and rollouts equal to those of the models' own forward. On CPU the step runs uncaptured; where a GPU
is present the same tests run captured as a CUDA graph."""

from __future__ import annotations

import pytest
import torch
from rollout_tiny import PAD
from test_fast_decode import MODELS, PROMPTS, SHAPE, rollout  # rollout(model, fast): the graph where fast, else the forward
from transformers import LlamaConfig, LlamaForCausalLM

from r1kit.algorithms import completion_logprobs
from r1kit.algorithms.cache_argument import model_cache_argument
from r1kit.accel import graph_decode
from r1kit.accel.fast_decode import FastDecoder
from r1kit.accel.graph_decode import GraphDecoder
from r1kit.rollout.hf import left_pad
from r1kit.rollout.kv_cache import make_cache

pytestmark = pytest.mark.numerics

BF16_LOGP_TOLERANCE = 0.02
"""Largest difference allowed between a bf16 rollout's log-probs and the forward's for the same
tokens (on CPU, for the four tiny models here: 0.0011-0.0041; float32: 5e-7)."""

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """cpu: the static step, uncaptured (CPU engines normally take the growing flat step); cuda: captured."""
    monkeypatch.setattr(graph_decode, "CAPTURE_DEVICES", ("cuda", "cpu"))
    return torch.device(request.param)


def prefilled(model, device, capacity_extra: int):
    ids, mask = left_pad(PROMPTS, PAD, device)
    P = ids.shape[1]
    cache = make_cache(model, capacity=P + capacity_extra)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{model_cache_argument(model): cache})
    return cache, mask, P


@pytest.mark.parametrize("make_model", MODELS.values(), ids=MODELS.keys())
def test_static_steps_give_the_growing_steps_logits(make_model, device):
    model = make_model().to(device)
    steps = 4
    with torch.inference_mode():
        cache_a, mask, P = prefilled(model, device, steps)
        cache_b, _, _ = prefilled(model, device, steps)
        growing = FastDecoder.build(model, cache_a, P + steps)
        static = GraphDecoder.build(model, cache_b, P + steps, device)
        assert static is not None and static.capture == (device.type == "cuda")
        attn = torch.cat([mask.bool(), torch.zeros(len(PROMPTS), steps, dtype=torch.bool, device=device)], dim=1)  # [N, capacity]
        position = mask.sum(1, keepdim=True)
        for t in range(steps):
            tokens = torch.tensor([21 + t, 22, 23 - t], device=device)
            attn[:, P + t] = True
            want = growing(tokens, attn[:, : P + t + 1], position)
            got = static(tokens, attn, position, P + t)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            position += 1
    # the same keys and values were written, in the same columns
    torch.testing.assert_close(cache_b.layers[-1].key_buffer, cache_a.layers[-1].key_buffer, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make_model", MODELS.values(), ids=MODELS.keys())
def test_rollouts_equal_those_of_the_models_forward(make_model, device, monkeypatch):
    model = make_model().to(device)
    captures, steps = [], []
    capture, step = GraphDecoder._capture, GraphDecoder._step
    monkeypatch.setattr(GraphDecoder, "_capture", lambda self: captures.append(1) or capture(self))
    monkeypatch.setattr(GraphDecoder, "_step", lambda self: steps.append(1) or step(self))
    calls: list = []
    graphed = rollout(model, True, calls)
    plain = rollout(model, False)
    assert len(calls) == 1  # the prefill; every decode step went through the static step
    if device.type == "cuda":  # one capture per rollout (a warm-up run, then the recording), replayed every step
        assert len(captures) == 1 and len(steps) == 2
    else:
        assert not captures and len(steps) == graphed.completion_ids.shape[1] - 1
    assert torch.equal(graphed.completion_ids, plain.completion_ids)
    torch.testing.assert_close(graphed.logprobs, plain.logprobs, rtol=1e-5, atol=1e-5)
    assert graphed.finish_reason == plain.finish_reason
    assert graphed.completion_mask.sum() > 9 * 3  # rows ran for a while (some end on eos, id 3)


def test_rollouts_under_bf16_autocast_sample_from_the_models_distribution(device):
    # precision=bf16 runs the rollout under autocast. On CPU the forward's decode attention is the same
    # arithmetic as the flat step's (attention.py), so the tokens are the same; on a GPU the forward
    # runs SDPA's kernels and bf16 products of other shapes, which round differently, so a token can
    # differ where two are nearly tied. Everywhere, the rollout's log-probs must be those that the
    # model's forward (the learner's pass) gives its tokens, to bf16 precision.
    model = MODELS["qwen2"]().to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        graphed, plain = rollout(model, True), rollout(model, False)
        with torch.inference_mode():
            rescored = completion_logprobs(model, graphed.input_ids, graphed.attention_mask, graphed.completion_ids.shape[1], temperature=0.9)
    if device.type == "cpu":
        assert torch.equal(graphed.completion_ids, plain.completion_ids)
        torch.testing.assert_close(graphed.logprobs, plain.logprobs, rtol=1e-4, atol=1e-4)
    real = graphed.completion_mask.bool()
    assert (rescored - graphed.logprobs)[real].abs().max() < BF16_LOGP_TOLERANCE


def test_a_failed_capture_decodes_the_same_step_uncaptured(device, monkeypatch, caplog):
    model = MODELS["qwen2"]().to(device)
    with torch.inference_mode():
        cache_a, mask, P = prefilled(model, device, 2)
        cache_b, _, _ = prefilled(model, device, 2)
        growing, static = FastDecoder.build(model, cache_a, P + 2), GraphDecoder.build(model, cache_b, P + 2, device)

        def unsupported(self):
            raise RuntimeError("operation not permitted when stream is capturing")

        monkeypatch.setattr(GraphDecoder, "_capture", unsupported)
        static.capture = True  # as on a GPU
        attn = torch.cat([mask.bool(), torch.ones(len(PROMPTS), 1, dtype=torch.bool, device=device), torch.zeros(len(PROMPTS), 1, dtype=torch.bool, device=device)], dim=1)
        tokens, position = torch.tensor([21, 22, 23], device=device), mask.sum(1, keepdim=True)
        got = static(tokens, attn, position, P)
        want = growing(tokens, attn[:, : P + 1], position)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not static.capture and "decoding without a graph" in caplog.text


def test_rope_that_reads_the_sequence_length_takes_the_growing_step(device):
    torch.manual_seed(0)
    dynamic = LlamaForCausalLM(LlamaConfig(**SHAPE, rope_scaling={"rope_type": "dynamic", "factor": 2.0})).eval().to(device)
    with torch.inference_mode():
        cache, _, P = prefilled(dynamic, device, 4)
    assert GraphDecoder.build(dynamic, cache, P + 4, device) is None
    assert FastDecoder.build(dynamic, cache, P + 4) is not None  # CPU engines still decode it flat
    assert GraphDecoder.build(MODELS["qwen2"]().to(device), None, P + 4, device) is None  # no preallocated cache
