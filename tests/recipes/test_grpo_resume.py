"""GRPO reliability: a run killed mid-way and resumed equals an uninterrupted one bit for bit;
Ctrl-C saves a checkpoint and the run continues from it; a NaN loss or gradient skips the update
and is counted; a reward function that raises costs only its rows."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from r1kit.cli import main
from r1kit.config import dump, from_dict
from r1kit.models.load import load_model
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.rollout import HFEngine, SamplingParams
from r1kit.train.checkpoint import KILL_AFTER_ENV, checkpoint_dirs

SRC = Path(__file__).resolve().parents[2] / "src"

STEPS = 3


def ones_reward(completions, **kw):
    """Fraction of '1' characters: a signal a random model can climb."""
    return [c.count("1") / max(1, len(c)) for c in completions]


def distinct_reward(completions, **kw):
    """Distinct characters: differs within every group of a random model, so every step changes the weights."""
    return [len(set(c)) / 10 for c in completions]


INTERRUPT_AT_CALL = {"n": 0, "at": 0}


def interrupting_reward(completions, **kw):
    """distinct_reward that raises KeyboardInterrupt (as Ctrl-C would) on call number INTERRUPT_AT_CALL["at"]."""
    INTERRUPT_AT_CALL["n"] += 1
    if INTERRUPT_AT_CALL["n"] == INTERRUPT_AT_CALL["at"]:
        raise KeyboardInterrupt
    return distinct_reward(completions)


def raising_reward(completions, **kw):
    """Raises on completions that contain a digit, as a brittle user parser might."""
    if any(any(ch.isdigit() for ch in c) for c in completions):
        raise ValueError("cannot parse")
    return [0.0 for _ in completions]


def raw_config(model_dir, out_dir, name: str, reward: str = "distinct_reward", **run) -> dict:
    """3 steps that exercise every piece of state: beta > 0 with a reference reset at step 2 (so
    the step-2 checkpoint must hold the reference), mu = 2 (old log-probs), 2 mini-batches (a
    global-RNG permutation), 5 training rows for B = 2 (the stream reshuffles in step 3)."""
    return {
        "model": {"path": str(model_dir), "device": "cpu"},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 5, "test_size": 2},
        "rewards": [f"{__name__}:{reward}"],
        "grpo": {"steps": STEPS, "prompts_per_step": 2, "group_size": 4, "beta": 0.04, "num_iterations": 2, "mini_batches": 2, "ref_reset_every": 2},
        "sampling": {"max_new_tokens": 6},
        "optim": {"lr": 1e-2},
        "eval": {"k": 2, "max_new_tokens": 4},
        "run": {"output_dir": str(out_dir), "name": name, "progress": False, "tensorboard": False, "threads": 1, "save_every": 1, "keep_checkpoints": 2, **run},
        "samples_every": 0,
    }


def step_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows without the keys that measure time."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_model(str(a)).state_dict(), load_model(str(b)).state_dict()
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    return grpo.train(from_dict(GRPOConfig, raw_config(tiny_model_dir, out, "straight")))


@pytest.mark.numerics
@pytest.mark.slow
def test_a_killed_run_resumed_equals_an_uninterrupted_one(tiny_model_dir, tmp_path, uninterrupted):
    raw = raw_config(tiny_model_dir, tmp_path, "killed")
    config_file = tmp_path / "grpo.yaml"
    config_file.write_text(dump(from_dict(GRPOConfig, raw), "grpo"))
    # The hook makes the process SIGKILL itself once checkpoint step_2 is complete: a crash with
    # no chance to clean up, at a known point.
    env = {**os.environ, KILL_AFTER_ENV: "2", "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(__file__).parent)])}
    proc = subprocess.run([sys.executable, "-m", "r1kit", "grpo", "--config", str(config_file)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_dir = tmp_path / "killed"
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [1, 2]
    assert not (run_dir / "model").exists()

    raw["run"]["resume"] = "auto"
    resumed = grpo.train(from_dict(GRPOConfig, raw))

    assert resumed == run_dir
    assert_same_weights(resumed / "model", uninterrupted / "model")
    assert step_rows(resumed) == step_rows(uninterrupted)
    assert [r["step"] for r in step_rows(resumed) if "reward/mean" in r] == [1, 2, 3]
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [2, 3]  # keep_checkpoints=2
    assert (run_dir / "checkpoints" / "step_2" / "ref" / "config.json").is_file()  # reset at step 2
    assert not (run_dir / "checkpoints" / "step_1" / "ref").exists()
    assert json.loads((resumed / "eval.json").read_text()).keys() == {"before", "after"}


@pytest.mark.numerics
@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_run_continues_from_it(tiny_model_dir, tmp_path, capsys, uninterrupted):
    raw = raw_config(tiny_model_dir, tmp_path, "interrupted", reward="interrupting_reward", save_every=0)
    config_file = tmp_path / "grpo.yaml"
    config_file.write_text(yaml.safe_dump({"recipe": "grpo", **raw}))
    INTERRUPT_AT_CALL.update(n=0, at=2)  # the reward of step 2 is Ctrl-C'd
    assert main(["grpo", "--config", str(config_file)]) == 130
    run_dir = tmp_path / "interrupted"
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [1]  # the last completed step
    assert [r["step"] for r in step_rows(run_dir)] == [0, 1]

    INTERRUPT_AT_CALL.update(n=0, at=0)
    assert main(["grpo", "--config", str(config_file), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert [r["step"] for r in step_rows(run_dir) if "reward/mean" in r] == [1, 2, 3]
    # The interrupted step is redone from the saved state: the end result is the uninterrupted run's.
    assert_same_weights(run_dir / "model", uninterrupted / "model")


def small_config(model_dir, out_dir, **over) -> GRPOConfig:
    raw = {
        "model": {"path": str(model_dir), "device": "cpu"},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 8, "test_size": 2},
        "rewards": [f"{__name__}:ones_reward"],
        "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.0},
        "sampling": {"max_new_tokens": 6},
        "optim": {"lr": 1e-2},
        "eval": {"k": 0, "max_new_tokens": 2},
        "run": {"output_dir": str(out_dir), "name": "run", "progress": False, "tensorboard": False, "threads": 1},
        "eval_before": False,
        "samples_every": 0,
    }
    raw.update(over)
    return from_dict(GRPOConfig, raw)


def test_a_nan_loss_skips_the_update_keeps_the_weights_and_is_counted(tiny_model_dir, tmp_path, monkeypatch):
    real = grpo.policy_loss

    def nan_loss(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        return loss * math.nan, m

    monkeypatch.setattr(grpo, "policy_loss", nan_loss)
    run_dir = grpo.train(small_config(tiny_model_dir, tmp_path))
    rows = [r for r in step_rows(run_dir) if "reward/mean" in r]
    assert [r["fault/nonfinite_skipped"] for r in rows] == [1, 2]  # cumulative
    assert_same_weights(run_dir / "model", tiny_model_dir)


def test_a_nan_gradient_skips_the_optimizer_step(tiny_model_dir, char_tokenizer):
    torch.set_num_threads(1)
    config = small_config(tiny_model_dir, "unused")
    model = load_model(str(tiny_model_dir), device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = [char_tokenizer("Q: 1+2=?\nA:", add_special_tokens=False)["input_ids"]]
    batch = HFEngine(model, char_tokenizer).generate(prompts, SamplingParams(n=4, max_new_tokens=5, seed=0))
    rewards = torch.tensor([0.0, 1.0, 0.0, 1.0])
    model.lm_head.weight.register_hook(lambda g: torch.full_like(g, math.inf))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    metrics = grpo.update(config, model, None, opt, sched, batch, rewards)
    assert metrics["fault/nonfinite_skipped"] == 1
    assert not math.isfinite(metrics["grad_norm"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_a_reward_function_that_raises_scores_none_and_the_run_goes_on(tiny_model_dir, tmp_path, caplog):
    cfg = small_config(tiny_model_dir, tmp_path, rewards=[f"{__name__}:ones_reward", f"{__name__}:raising_reward"])
    cfg.grpo.steps = 1
    cfg.sampling.max_new_tokens = 12
    with caplog.at_level(logging.WARNING):
        run_dir = grpo.train(cfg)
    (row,) = [r for r in step_rows(run_dir) if "reward/mean" in r]
    assert row["reward/raising_reward/errors"] > 0
    assert row["reward/raising_reward/none_frac"] > 0
    assert "raising_reward" in caplog.text and "cannot parse" in caplog.text
    assert (run_dir / "model" / "config.json").is_file()
