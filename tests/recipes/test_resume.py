"""Every recipe resumes exactly: a run killed right after a checkpoint (SIGKILL, no cleanup) and
continued with `--resume` ends with the weights of an uninterrupted run, bit for bit, and logs the
same numbers. GRPO's own, richer version of this test is in test_grpo_resume.py.

Each run is 3 steps with a checkpoint after every step; the kill comes after step 2. The data
sizes make every data stream start a new epoch inside the run, so its position matters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from r1kit.config import dump, load, recipe_config_class
from r1kit.train.checkpoint import KILL_AFTER_ENV, checkpoint_dirs
from recipe_runs import SRC, assert_same_run, recipe_overrides, step_rows, train, weights

STEPS = 3


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["sft", "dpo"])
def test_a_killed_run_resumed_equals_an_uninterrupted_one(recipe, small_model_dir, tmp_path, restore_threads):
    common = recipe_overrides(recipe, small_model_dir, tmp_path, steps=STEPS) + ["run.save_every=1", "run.keep_checkpoints=2"]
    straight = train(recipe, common + ["run.name=straight"])

    config = load(None, common + ["run.name=killed"], recipe_config_class(recipe))
    config_file = tmp_path / f"{recipe}.yaml"
    config_file.write_text(dump(config, recipe))
    env = {**os.environ, KILL_AFTER_ENV: "2", "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "r1kit", recipe, "--config", str(config_file)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_dir = tmp_path / "killed"
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [1, 2] and not (run_dir / "model").exists()

    resumed = train(recipe, common + ["run.name=killed", "run.resume=auto"])
    assert resumed == run_dir
    expected, got = weights(straight / "model"), weights(resumed / "model")
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert step_rows(resumed) == step_rows(straight)
    assert [s for s, _ in checkpoint_dirs(run_dir)] == [2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, extra", [("rm", []), ("rm", ["model.lora_r=8"]), ("prm", []), ("ppo", []), ("distill", []), ("pretrain", [])],
                         ids=["rm", "rm-lora", "prm", "ppo", "distill", "pretrain"])  # fmt: skip
def test_a_run_resumed_from_its_step_1_checkpoint_ends_with_the_uninterrupted_weights(recipe, extra, small_model_dir, tiny_model_dir, tmp_path, restore_threads):
    common = recipe_overrides(recipe, small_model_dir, tmp_path, steps=STEPS, teacher=tiny_model_dir) + ["run.save_every=1", "run.keep_checkpoints=0", *extra]
    straight = train(recipe, common + ["run.name=straight"])
    resumed = train(recipe, common + ["run.name=resumed", f"run.resume={straight / 'checkpoints' / 'step_1'}"])
    assert_same_run(recipe, straight, resumed)
