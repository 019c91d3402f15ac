"""Fixtures shared by the rollout and accel tests: the tiny Qwen2 and char tokenizer of
rollout_tiny.py, three left-padded prompts, one thread. Each conftest imports them."""

from __future__ import annotations

import pytest
import torch
import rollout_tiny
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM


@pytest.fixture(autouse=True)
def one_thread():
    """A 2-layer, 32-wide model is all overhead: a second thread only adds barrier waits, which on a
    busy machine cost seconds. Restored afterwards so other test modules keep their setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model() -> Qwen2ForCausalLM:
    return rollout_tiny.tiny_qwen2()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return rollout_tiny.char_tokenizer()


@pytest.fixture
def prompts() -> list[list[int]]:
    """Three prompts of different lengths, so the batch is left-padded."""
    return [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
