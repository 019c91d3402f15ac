"""`r1kit eval --model RUN/model` evaluates on what the run trained on (its task, task parameters,
test split, template and eval settings); flags and overrides win; --n samples per prompt."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from r1kit.cli import main
from r1kit.config import DataArgs, EvalArgs, dump
from r1kit.eval import cli as eval_cli
from r1kit.eval.provenance import recorded_run
from r1kit.models.tiny import TinyModelConfig, save_tiny
from r1kit.recipes.grpo import GRPOConfig
from r1kit.recipes.pretrain import PretrainConfig

THREE_SUMS = {"n_operands": 3, "digits": 1, "ops": "+"}


@pytest.fixture
def run_dir(tmp_path, char_tokenizer):
    """A GRPO run directory as a run leaves it: its config.yaml and its model."""
    run = tmp_path / "grpo-run"
    save_tiny(run / "model", char_tokenizer, TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1), seed=0)
    config = GRPOConfig(data=DataArgs(task_params=THREE_SUMS, test_size=5, seed=3), eval=EvalArgs(k=0, max_new_tokens=3, temperature=0.6))
    (run / "config.yaml").write_text(dump(config, "grpo"))
    return run


def args(model, *overrides, **flags) -> Namespace:
    base = {"model": str(model), "task": None, "data": "", "k": None, "n": None, "rows": None, "out": ""}
    return Namespace(**{**base, **flags}, overrides=list(overrides))


def evaluated_rows(monkeypatch) -> list:
    """Records the rows `r1kit eval` hands to the evaluator."""
    seen: list = []
    for_data = eval_cli.Evaluator.for_data

    def spy(tokenizer, data, eval_args, processes=0, rows=None):
        seen.extend(rows)
        return for_data(tokenizer, data, eval_args, processes, rows)

    monkeypatch.setattr(eval_cli.Evaluator, "for_data", spy)
    return seen


def test_eval_of_a_run_model_uses_the_task_parameters_it_trained_on(run_dir, monkeypatch, capsys, tmp_path):
    rows = evaluated_rows(monkeypatch)
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(run_dir / "model"), "--out", str(out)]) == 0
    # The run's test split: 5 rows of three one-digit numbers added (the task's default mixes 2 and
    # 3 operands and subtraction), and its eval settings (k = 0: greedy only).
    assert len(rows) == 5 and all(r["prompt"].count("+") == 2 and "-" not in r["prompt"] for r in rows)
    assert set(json.loads(out.read_text())) == {"greedy_acc", "length_greedy"}
    printed = " ".join(capsys.readouterr().out.split())
    assert "task arithmetic (n_operands=3, digits=1, ops=+; test split, 5 rows, seed 3)" in printed
    assert "records them; flags and overrides win" in printed


def test_flags_and_overrides_win_over_what_the_run_recorded(run_dir):
    recorded = recorded_run(run_dir / "model")
    data, ev = eval_cli.resolve(args(run_dir / "model", "data.task_params={n_operands: 2}", "eval.temperature=1.0", k=4, n=16, rows=7), recorded)
    assert (data.builtin_task, data.task_params, data.test_size, data.seed) == ("arithmetic", {"n_operands": 2}, 7, 3)
    assert (ev.k, ev.n, ev.temperature, ev.max_new_tokens) == (4, 16, 1.0, 3)


def test_another_task_replaces_the_runs_test_set_but_keeps_its_template(run_dir):
    recorded = recorded_run(run_dir / "model")
    recorded.data["template"] = "r1zero"
    data, _ = eval_cli.resolve(args(run_dir / "model", task="countdown"), recorded)
    assert (data.task, data.task_params, data.test_size, data.template) == ("countdown", {}, 100, "r1zero")


def test_a_checkpoint_model_and_a_pretrain_run_are_traced_to_their_run(tmp_path):
    model = tmp_path / "run" / "checkpoints" / "step_2" / "model"
    model.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(dump(PretrainConfig(task_params=THREE_SUMS, test_size=9), "pretrain"))
    recorded = recorded_run(model)
    assert recorded.data == {"task": "arithmetic", "task_params": THREE_SUMS, "test_size": 9}


def test_a_model_outside_any_run_gets_the_defaults(tmp_path):
    (tmp_path / "config.yaml").write_text("lr: 1\n")  # a YAML file that is not a run's config
    (tmp_path / "model").mkdir()
    assert recorded_run(tmp_path / "model") is None
    data, ev = eval_cli.resolve(args(tmp_path / "model"), None)
    assert (data.task, data.task_params, data.test_size, ev.k, ev.n) == ("arithmetic", {}, 100, 4, 0)
