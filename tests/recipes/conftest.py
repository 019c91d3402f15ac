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


@pytest.fixture(scope="session")
def gpt2_model_dir(tmp_path_factory, char_tokenizer):
    """A tiny GPT-2 with GPT-2's dropout of 0.1 (embeddings, attention, residuals) and learned
    positions up to 16 tokens: a prompt plus completion past 16 is an index error, not a slow drift."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = char_tokenizer
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=16, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.1
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2-model")
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
