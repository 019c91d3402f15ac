"""Faults keep what was trained: an exception raised mid-training in any recipe leaves a checkpoint
of the last completed step and one R1kitError naming the cause and `--resume`, and the resumed run
ends with the weights of a run that never failed, bit for bit. A reward model is saved before its
final evaluation; a reward function that never works stops the run; held-out prompts are truncated
as the training prompts are."""

from __future__ import annotations

import importlib
import json
import logging

import pytest
import torch

from r1kit.errors import R1kitError
from r1kit.train.checkpoint import checkpoint_dirs
from recipe_runs import assert_same_run, recipe_overrides, step_rows, train

STEPS = 3

STEP_FUNCTION = {
    "pretrain": ("r1kit.train.supervised", "supervised_backward"),
    "sft": ("r1kit.train.supervised", "supervised_backward"),
    "dpo": ("r1kit.recipes.dpo", "pair_loss"),
    "rm": ("r1kit.recipes.reward_model", "pair_loss"),
    "grpo": ("r1kit.recipes.grpo", "update"),
    "ppo": ("r1kit.recipes.ppo", "update"),
    "distill": ("r1kit.recipes.distill", "kd_backward"),
}
"""Per recipe, a function called once a step before its optimizer step: the fault raises there."""


def fail_on_call(monkeypatch, module: str, name: str, call: int, error: Exception) -> None:
    """Make `module.name` raise `error` on its `call`-th call (1-based), as a fault at that step."""
    target = importlib.import_module(module)
    real, calls = getattr(target, name), {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


@pytest.mark.parametrize("recipe", list(STEP_FUNCTION))
def test_an_exception_at_step_2_saves_step_1_and_resume_ends_as_an_unbroken_run(recipe, small_model_dir, tiny_model_dir, tmp_path, monkeypatch, restore_threads):
    common = recipe_overrides(recipe, small_model_dir, tmp_path, steps=STEPS, teacher=tiny_model_dir)
    straight = train(recipe, common + ["run.name=straight"])

    with monkeypatch.context() as patch:
        fail_on_call(patch, *STEP_FUNCTION[recipe], call=2, error=RuntimeError("out of memory"))
        with pytest.raises(R1kitError) as failed:
            train(recipe, common + ["run.name=faulty"])
    run_dir = tmp_path / "faulty"
    message = " ".join(str(failed.value).split())
    assert f"{recipe} stopped at step 2 by RuntimeError: out of memory" in message
    assert "the checkpoint of step 1" in message and "--resume" in message
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert "RuntimeError: out of memory" in (run_dir / "error.log").read_text()
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [1] and not (run_dir / "model").exists()

    resumed = train(recipe, common + ["run.name=faulty", "run.resume=auto"])
    assert resumed == run_dir
    assert_same_run(recipe, straight, resumed)


def test_a_failing_evaluation_during_training_keeps_the_step_it_evaluated(small_model_dir, tmp_path, monkeypatch, restore_threads):
    # run.eval_every=2: step 2's update is whole when its evaluation raises, so step 2 is saved
    # (the evaluation before training is off: eval_before=false).
    from r1kit.eval.evaluate import Evaluator

    def broken(self, model, samples_out=None):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(Evaluator, "__call__", broken)
    with pytest.raises(R1kitError, match=r"sft stopped at step 2 by RuntimeError: evaluation broke; the checkpoint of step 2"):
        train("sft", recipe_overrides("sft", small_model_dir, tmp_path, steps=4) + ["run.name=eval", "run.eval_every=2", "eval_before=false"])
    assert [s for s, _ in checkpoint_dirs(tmp_path / "eval")] == [2]


def test_an_exception_before_any_step_completes_is_left_as_it_is(small_model_dir, tmp_path, monkeypatch, restore_threads):
    # Nothing was trained, so there is nothing to keep: no checkpoint, the error unchanged.
    fail_on_call(monkeypatch, *STEP_FUNCTION["sft"], call=1, error=RuntimeError("out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        train("sft", recipe_overrides("sft", small_model_dir, tmp_path, steps=STEPS) + ["run.name=first"])
    assert checkpoint_dirs(tmp_path / "first") == []


def test_a_step_that_fails_after_its_first_update_keeps_the_last_whole_step(small_model_dir, tmp_path, monkeypatch, restore_threads):
    # PPO takes ppo_epochs x mini_batches = 4 optimizer steps a step. A fault between two of them
    # leaves weights that belong to no step: the checkpoint is the last one taken before (step 1,
    # with run.save_every=1), and the message says step 3's weights were not saved.
    from r1kit.recipes import ppo

    real, calls = ppo.mini_batch_backward, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 * 2 + 2:  # step 3, the second mini-batch
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "mini_batch_backward", failing)
    overrides = recipe_overrides("ppo", small_model_dir, tmp_path, steps=STEPS) + ["run.name=partial", "run.save_every=1", "run.keep_checkpoints=0"]
    with pytest.raises(R1kitError) as failed:
        train("ppo", overrides)
    message = " ".join(str(failed.value).split())
    assert "the checkpoint of step 2" in message and "keeps what was trained up to it (step 3 failed part-way through its update" in message
    assert [s for s, _ in checkpoint_dirs(tmp_path / "partial")] == [1, 2]


@pytest.mark.parametrize("extra", [[], ["model.lora_r=8"]], ids=["full", "lora"])
def test_a_reward_model_is_saved_before_its_final_evaluation(extra, small_model_dir, tmp_path, monkeypatch, restore_threads):
    # The held-out accuracy is measured before training and after it; the second raises. Before
    # the fix the model was saved (and a LoRA run merged) only after that evaluation: no model/.
    from r1kit.models.value_head import load_scalar_model
    from r1kit.recipes import reward_model

    fail_on_call(monkeypatch, "r1kit.recipes.reward_model", "evaluate_pairs", call=2, error=RuntimeError("evaluation broke"))
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train("rm", recipe_overrides("rm", small_model_dir, tmp_path, steps=2) + ["run.name=rm", *extra])
    saved = tmp_path / "rm" / "model"
    assert (saved / reward_model.META_FILE).is_file() and not (saved / "adapter_config.json").exists()  # a full, merged directory
    start, trained = load_scalar_model(str(small_model_dir), 0), load_scalar_model(str(saved), 0)
    backbone = [n for n, _ in start.named_parameters() if "score" not in n]
    assert any(not torch.equal(start.get_parameter(n), trained.get_parameter(n)) for n in backbone)  # the trained weights


def broken_reward(completions, **columns):
    """A reward that cannot work: it raises on every row."""
    raise KeyError("gold_answer")


@pytest.mark.parametrize("recipe", ["grpo", "ppo"])
def test_a_reward_that_raises_on_every_row_stops_the_run_at_step_3_keeping_step_2(recipe, small_model_dir, tmp_path, capsys, caplog, restore_threads):
    from r1kit.cli import main

    overrides = recipe_overrides(recipe, small_model_dir, tmp_path, steps=5) + [f"rewards=[arithmetic, {__name__}:broken_reward]", "run.name=broken"]
    with caplog.at_level(logging.WARNING, logger="r1kit.rewards.compose"):
        status = main([recipe, *overrides])
    err = " ".join(capsys.readouterr().err.split())
    assert status == 2  # before: 0, after five steps trained on the other reward alone and a traceback a step
    assert f"{recipe} stopped at step 3 by reward 'broken_reward' raised on every row of 3 steps in a row (KeyError: 'gold_answer')" in err
    assert "Traceback" not in err and "the checkpoint of step 2" in err
    assert len([r for r in caplog.records if "broken_reward" in r.getMessage()]) == 1  # one warning line, at the first failure
    assert [s for s, _ in checkpoint_dirs(tmp_path / "broken")] == [2]
    rows = [r for r in step_rows(tmp_path / "broken") if "reward/broken_reward/errors" in r]
    assert [(r["step"], r["reward/broken_reward/errors"], r["reward/broken_reward/none_frac"]) for r in rows] == [(1, 4.0 if recipe == "ppo" else 8.0, 1.0), (2, 4.0 if recipe == "ppo" else 8.0, 1.0)]


@pytest.mark.parametrize("recipe", ["grpo", "ppo"])
def test_long_prompts_truncate_fits_the_held_out_prompts_as_the_training_ones(recipe, gpt2_model_dir, tmp_path, restore_threads):
    # GPT-2's 16 positions less 6 new tokens leave 10 for a prompt; the prompts have 12. Training
    # kept their last 10 tokens; evaluation (before and after training) did not, and indexed past
    # the position table: an IndexError after the run had trained.
    settings = ["data.task_params={n_operands: 2, digits: 1}", "data.long_prompts=truncate", "sampling.max_new_tokens=6", "eval.max_new_tokens=6", "run.name=long"]
    run_dir = train(recipe, recipe_overrides(recipe, gpt2_model_dir, tmp_path, steps=1) + settings)
    results = json.loads((run_dir / "eval.json").read_text())
    assert 0.0 <= results["before"]["greedy_acc"] <= 1.0 and 0.0 <= results["after"]["greedy_acc"] <= 1.0
    assert (run_dir / "model" / "config.json").is_file()


@pytest.mark.parametrize("recipe", ["grpo", "ppo"])
def test_long_prompts_skip_skips_the_held_out_prompts_too_and_error_refuses_them_before_training(recipe, gpt2_model_dir, tmp_path, restore_threads, capsys):
    # Training answers take 4 new tokens (room for a 12-token prompt in GPT-2's 16 positions);
    # evaluation answers take 6, leaving 10: every held-out prompt (12 tokens) is too long for
    # evaluation alone, where it indexed past the position table after training.
    base = ["data.task_params={n_operands: 2, digits: 1}", "sampling.max_new_tokens=4", "eval.max_new_tokens=6"]
    with pytest.raises(R1kitError, match=r"every held-out prompt is longer than 10 tokens"):
        train(recipe, recipe_overrides(recipe, gpt2_model_dir, tmp_path, steps=1) + base + ["data.long_prompts=skip", "run.name=skip"])
    with pytest.raises(R1kitError, match=r"held-out prompts are longer than 10 tokens.*set data.long_prompts=skip or truncate"):
        train(recipe, recipe_overrides(recipe, gpt2_model_dir, tmp_path, steps=1) + base + ["data.long_prompts=error", "run.name=error"])
    assert not (tmp_path / "skip").exists() and not (tmp_path / "error").exists()  # refused before the run directory
    run_dir = train(recipe, recipe_overrides(recipe, gpt2_model_dir, tmp_path, steps=1) + base + ["data.long_prompts=truncate", "run.name=truncate"])
    assert 0.0 <= json.loads((run_dir / "eval.json").read_text())["after"]["greedy_acc"] <= 1.0
