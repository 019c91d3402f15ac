"""The KV cache is passed under the name the model's forward declares (transformers renamed it)."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import completion_logprobs
from r1kit.algorithms.cache_argument import cache_argument, model_cache_argument, returned_cache
from r1kit.rollout import HFEngine, SamplingParams


def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    return Qwen2ForCausalLM(config).eval()


def test_the_newest_name_a_forward_declares_wins():
    assert cache_argument({"input_ids", "cache", "past_key_values"}) == "cache"
    assert cache_argument({"input_ids", "past_key_values"}) == "past_key_values"
    assert cache_argument({"input_ids", "attention_mask"}) is None


def test_the_installed_models_name_carries_the_cache_in_and_out():
    model = tiny_qwen2()
    name = model_cache_argument(model)
    assert name in ("cache", "past_key_values")
    with torch.no_grad():
        first = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
        cache = returned_cache(first)
        assert cache is not None and cache.get_seq_length() == 3
        model(input_ids=torch.tensor([[4]]), use_cache=True, **{name: cache})
    assert cache.get_seq_length() == 4  # the second forward appended to the cache it was handed


@pytest.mark.numerics
def test_rollout_and_shared_prompt_logprobs_use_no_deprecated_cache_name():
    model = tiny_qwen2()
    ids = torch.tensor([[1, 2, 3, 4, 5]] * 2 + [[6, 7, 8, 9, 10]] * 2)
    mask = torch.ones_like(ids)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        HFEngine(model, pad_token_id=0, eos_token_id=[]).generate([[1, 2, 3], [4, 5]], SamplingParams(n=2, max_new_tokens=4, seed=0))
        with torch.no_grad():
            shared = completion_logprobs(model, ids, mask, 2)
    torch.testing.assert_close(shared, completion_logprobs(model, ids, mask, 2, share_prompts=False), rtol=1e-5, atol=1e-6)
