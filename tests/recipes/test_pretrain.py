"""Base-model pretraining: the finished base is cached by a hash of what shapes it and reused."""

from __future__ import annotations

import json

import pytest
import torch

from r1kit import config as cfg
from r1kit.errors import R1kitError
from r1kit.recipes import pretrain
from r1kit.demo import DEFAULT_CONFIG
from r1kit.models.load import load_tokenizer
from r1kit.models.tiny import build_char_tokenizer
from r1kit.recipes.pipeline import PipelineConfig, stage_config
from r1kit.recipes.pretrain import PretrainConfig, cache_key, train


@pytest.fixture
def restore_threads():
    """run.threads=1 sets torch's global thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_pretrain(cache_dir, *extra: str) -> PretrainConfig:
    return cfg.load(
        None,
        [
            "steps=3", "documents=200", "batch_size=8", "tiny.hidden_size=32", "tiny.num_layers=1", "test_size=5",
            "eval.k=0", "eval.max_new_tokens=8", f"cache_dir={cache_dir}", "device=cpu", "run.threads=1",
            "run.progress=false", "run.tensorboard=false", *extra,
        ],
        PretrainConfig,
    )  # fmt: skip


def test_second_run_with_the_same_config_reuses_the_cached_base(tmp_path, capsys, monkeypatch, restore_threads):
    first = train(tiny_pretrain(tmp_path))
    assert "reusing" not in capsys.readouterr().out
    assert first.parent == tmp_path and first.name == f"base-{cache_key(tiny_pretrain(tmp_path))}"
    assert (first / "model" / "config.json").is_file()
    result = json.loads((first / "eval.json").read_text())
    assert set(result["after"]) == {"greedy_acc", "length_greedy"}  # eval.k=0: greedy only
    model_mtime = (first / "model" / "model.safetensors").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("a cached base was built again")

    for name in ("Run", "build_tiny_model", "fit_supervised", "Evaluator"):  # nothing is built, trained or evaluated
        monkeypatch.setattr(pretrain, name, refuse)
    second = train(tiny_pretrain(tmp_path))
    assert second == first
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (rich wraps long lines anywhere)
    assert squeeze(f"pretrain: reusing cached base model {first}") in squeeze(capsys.readouterr().out)
    assert (first / "model" / "model.safetensors").stat().st_mtime_ns == model_mtime  # not rewritten


def test_cache_key_depends_on_what_shapes_the_model_and_not_on_evaluation(tmp_path):
    base = cache_key(tiny_pretrain(tmp_path))
    assert cache_key(tiny_pretrain(tmp_path / "elsewhere", "eval.k=4", "test_size=50", "run.progress=true")) == base
    for change in ("steps=4", "tiny.hidden_size=64", "documents=201", "run.seed=1", "task_params={digits: 2}", "optim.lr=1e-3"):
        assert cache_key(tiny_pretrain(tmp_path, change)) != base, change


def test_an_interrupted_cache_entry_is_rebuilt(tmp_path, capsys, restore_threads):
    config = tiny_pretrain(tmp_path)
    stale = tmp_path / f"base-{cache_key(config)}"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "config.json").write_text("{}")  # no eval.json: the run never finished
    run_dir = train(config)
    assert run_dir == stale
    assert "reusing" not in capsys.readouterr().out
    assert (run_dir / "eval.json").is_file() and json.loads((run_dir / "model" / "config.json").read_text())["hidden_size"] == 32


def test_without_cache_the_run_goes_to_the_run_directory(tmp_path, restore_threads):
    run_dir = train(tiny_pretrain(tmp_path / "cache", "cache=false", f"run.output_dir={tmp_path / 'runs'}", "run.name=base"))
    assert run_dir == tmp_path / "runs" / "base"
    assert not (tmp_path / "cache").exists()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 0 and metrics[0]["data/documents"] == 200 and metrics[0]["model/params"] > 0
    assert [m["step"] for m in metrics[1:4]] == [1, 2, 3]


def test_a_task_without_a_corpus_is_an_error(tmp_path):
    with pytest.raises(R1kitError, match="task 'countdown' cannot write a pretraining corpus; use arithmetic"):
        train(tiny_pretrain(tmp_path, "task=countdown"))


def test_the_demo_bases_keep_their_cache_keys():
    # What every cached demo base is stored under: a change here would pretrain them again.
    pipe = cfg.load(DEFAULT_CONFIG, [], PipelineConfig)
    keys = {s.name: cache_key(stage_config(pipe, s, {})) for s in pipe.stages if s.recipe == "pretrain"}
    assert keys == {"base": "e5c1e9d65879", "student_base": "6ba7955452ae"}


def test_a_bilingual_corpus_gives_the_base_its_letters_and_its_own_cache_entry(tmp_path, restore_threads):
    plain = "task_params={n_operands: 3, digits: 1, ops: '+'}"
    bilingual = "task_params={n_operands: 3, digits: 1, ops: '+', languages: [en, el], code_switch: 0.1}"
    assert cache_key(tiny_pretrain(tmp_path, bilingual)) != cache_key(tiny_pretrain(tmp_path, plain))
    vocab = load_tokenizer(str(train(tiny_pretrain(tmp_path, bilingual)) / "model")).get_vocab()
    # the default 104 ids, then the six Greek letters of `μετά` and `άρα`
    assert vocab == {**build_char_tokenizer().get_vocab(), **{c: 104 + i for i, c in enumerate("άαεμρτ")}}
