"""Shared fixtures: a character-level tokenizer and a tiny model saved as an ordinary HF directory.

Nothing here touches a hub. `tiny_model_dir` is built once per session (2 layers, hidden 64, about
0.13M parameters) with `r1kit.models.tiny.save_tiny`, so any test that needs "a model path" can
pass it to the same loading code that serves `Qwen/Qwen2.5-0.5B-Instruct`. Tests must not write
into it; copy it first when a test needs to change it.
"""

from __future__ import annotations

from r1kit.accel.openmp import default_waits

default_waits()  # before torch: as r1kit's command line does

from pathlib import Path

import pytest

from r1kit import accel
from r1kit.models.tiny import TinyModelConfig, build_char_tokenizer, save_tiny

TINY_MODEL_CONFIG = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
"""The shape of the session's tiny model (Llama; about 0.13M parameters with the char vocab)."""


@pytest.fixture(autouse=True)
def accel_mode(monkeypatch):
    """Each test starts in run.accel=auto and leaves no other mode behind (a recipe run with
    run.accel=off sets the process's mode)."""
    monkeypatch.setattr(accel, "_mode", "auto")


@pytest.fixture(scope="session")
def char_tokenizer():
    """The character-level tokenizer of r1kit's tiny models (one token per character and per tag)."""
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A saved tiny Llama (2 layers, hidden 64) with its tokenizer; read-only for tests."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"), char_tokenizer, TINY_MODEL_CONFIG, seed=0)
