"""Shared fixtures: a character-level tokenizer and a tiny model saved as an ordinary HF directory.

Nothing here touches a hub. `tiny_model_dir` is built once per session (2 layers, hidden 64, about
0.13M parameters) with `r1kit.models.tiny.save_tiny`, so any test that needs "a model path" can
pass it to the same loading code that serves `Qwen/Qwen2.5-0.5B-Instruct`. Tests must not write
into it; copy it first when a test needs to change it.

Session-wide: every test starts on the session's torch thread count, an ATEN_CPU_CAPABILITY that did
not reach torch stops the run, and the summary names the CPU kernels and threads the numbers came
from (`make test-numerics` reruns the `numerics` tests under other ones; tolerances: rounding.py).
"""

from __future__ import annotations

from r1kit.accel.openmp import default_waits

default_waits()  # before torch: as r1kit's command line does

import os
from pathlib import Path

import pytest
import torch

from r1kit import accel
from r1kit.models.tiny import TinyModelConfig, build_char_tokenizer, save_tiny


SESSION_THREADS = torch.get_num_threads()
"""torch's thread count for this session: OMP_NUM_THREADS, or torch's default (the cores)."""


def pytest_terminal_summary(terminalreporter):
    """Which CPU kernels and how many threads this session's numbers came from."""
    threads = f"{SESSION_THREADS} thread" + ("s" if SESSION_THREADS != 1 else "")
    terminalreporter.write_line(f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, {threads}")


def pytest_configure(config):
    """ATEN_CPU_CAPABILITY only works when it is in the environment before torch loads its kernels
    (`make test-numerics` sets it on the pytest command line): refuse to run under another one than
    asked for, rather than pass without having tested what was asked."""
    asked = os.environ.get("ATEN_CPU_CAPABILITY", "").strip()
    running = torch.backends.cpu.get_cpu_capability()
    if asked and asked.upper() != running.upper():
        raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={asked} did not reach torch, whose CPU kernels are {running}; set it before torch is imported")


@pytest.fixture(autouse=True)
def session_threads():
    """Every test starts and ends with the session's thread count, whatever a test or a module's
    fixture set before it (run.threads sets torch's global count), so a numerics rerun with
    OMP_NUM_THREADS=2 runs every test that does not choose its own count on 2 threads."""
    torch.set_num_threads(SESSION_THREADS)
    yield
    torch.set_num_threads(SESSION_THREADS)


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


@pytest.fixture(autouse=True, scope="session")
def datasets_cache(tmp_path_factory):
    """`datasets.load_dataset` caches what it reads from a local dataset folder; keep that cache in
    the session's temporary directory rather than the user's."""
    import datasets

    mp = pytest.MonkeyPatch()
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets-cache"))
    yield
    mp.undo()
