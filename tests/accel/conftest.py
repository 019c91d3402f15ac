"""Fixtures of the accel tests: the rollout tests' tiny Qwen2, char tokenizer and prompts, one thread."""

from __future__ import annotations

import pytest
import rollout_tiny
import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM


@pytest.fixture(autouse=True)
def one_thread():
    """A 2-layer, 32-wide model is all overhead: a second thread only adds barrier waits. Restored
    afterwards so other test modules keep their setting."""
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
