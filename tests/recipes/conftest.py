"""Fixtures of the recipe tests."""

from __future__ import annotations

import pytest
import torch

from r1kit.models.tiny import TinyModelConfig, save_tiny

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
"""1 layer, hidden 32: the smallest model that still trains, for tests of the run machinery."""


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, char_tokenizer):
    return save_tiny(tmp_path_factory.mktemp("small-model"), char_tokenizer, SMALL, seed=0)


@pytest.fixture
def restore_threads():
    """run.threads sets torch's global thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
