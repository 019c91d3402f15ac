"""Tiny, fast settings for running any recipe in a test, shared by the resume, LoRA and torchrun
tests of the run skeleton (test_resume.py, test_skeleton.py)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from r1kit.config import RECIPES, load, recipe_config_class

SRC = Path(__file__).resolve().parents[2] / "src"

COMMON = ["run.threads=1", "run.progress=false", "run.tensorboard=false"]

SETTINGS: dict[str, list[str]] = {
    # 5 examples in batches of 2: the stream reshuffles at step 3
    "sft": ["data.task_params={n_operands: 2, digits: 1}", "data.train_size=5", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4",
            "batch_size=2", "max_length=32", "optim.lr=1e-2", "optim.warmup_steps=1"],
    # 6 pairs in batches of 4: a new shuffle every step
    "dpo": ["data.train_size=6", "data.test_size=2", "task_eval=false", "batch_size=4", "eval_batch_size=8", "optim.lr=1e-2", "optim.warmup_steps=1"],
    # 6 prompts x 2 solutions in batches of 4; the solutions and their labels are sampled once and kept in the checkpoint
    "prm": ["labels.separator=' '", "data.task_params={n_operands: 2, digits: 1}", "data.train_size=6", "data.test_size=2", "samples_per_prompt=2",
            "best_of_n.n=2", "sampling.max_new_tokens=12", "batch_size=4", "optim.lr=1e-2", "optim.warmup_steps=1"],
    "rm": ["data.train_size=6", "data.test_size=2", "batch_size=4", "eval_batch_size=8", "optim.lr=1e-2", "optim.warmup_steps=1"],
    # 5 prompts, 4 a step; adaptive KL: the controller's value is state too
    "ppo": ["rewards=[arithmetic, format]", "ppo.prompts_per_step=4", "ppo.ppo_epochs=2", "ppo.mini_batches=2", "ppo.adaptive_kl=true",
            "sampling.max_new_tokens=6", "data.train_size=5", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4", "optim.lr=1e-2"],
    # GKD: half the batches sampled by the student (the coin and the sampling seeds are state)
    "distill": ["mode=on_policy", "lmbda=0.5", "response_column=cot", "max_new_tokens=6", "data.task_params={n_operands: 2, digits: 1}",
                "data.train_size=5", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4", "batch_size=2", "grad_accum=2", "max_length=32",
                "optim.lr=1e-2", "optim.warmup_steps=1"],
    # 5 prompts, 2 a step in groups of 4; beta > 0 (the reference is reloaded on resume)
    "grpo": ["rewards=[arithmetic, format]", "grpo.prompts_per_step=2", "grpo.group_size=4", "grpo.beta=0.04", "sampling.max_new_tokens=6",
             "data.train_size=5", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4", "optim.lr=1e-2", "samples_every=0"],
    "pretrain": ["cache=false", "documents=40", "batch_size=4", "max_length=32", "tiny.hidden_size=32", "tiny.num_layers=1", "test_size=2",
                 "eval.k=0", "eval.max_new_tokens=4", "optim.warmup_steps=1", "device=cpu"],
}  # fmt: skip

STEPS_KEY = {"ppo": "ppo.steps", "grpo": "grpo.steps"}
"""Where a recipe keeps its number of steps, when not at `steps`."""


def recipe_overrides(recipe: str, model_dir: Path, out: Path, steps: int, teacher: Path | None = None) -> list[str]:
    """Overrides for a `steps`-step run of `recipe` from `model_dir` (distill: the student; its
    teacher is `teacher`), writing under `out`."""
    model = [] if recipe == "pretrain" else [f"model.path={model_dir}", "model.device=cpu"]
    extra = [f"teacher.path={teacher}", "teacher.device=cpu"] if recipe == "distill" else []
    return [*model, *extra, f"run.output_dir={out}", f"{STEPS_KEY.get(recipe, 'steps')}={steps}", *COMMON, *SETTINGS[recipe]]


def train(recipe: str, overrides: list[str]) -> Path:
    """Run `recipe` with `overrides` in this process; returns the run directory."""
    module = importlib.import_module(RECIPES[recipe].split(":")[0])
    return module.train(load(None, overrides, recipe_config_class(recipe)))


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows without the keys that measure time."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in rows]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in `model_dir`, keyed by file and name."""
    files = sorted(model_dir.glob("*.safetensors"))
    assert files, f"no weights in {model_dir}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def assert_same_run(recipe: str, expected_dir: Path, got_dir: Path, from_step: int = 2) -> None:
    """The run in `got_dir` ends with `expected_dir`'s weights (PPO: its value model's too), bit
    for bit, and logged the same rows from `from_step` on."""
    for models in ("model", "value_model") if recipe == "ppo" else ("model",):
        expected, got = weights(expected_dir / models), weights(got_dir / models)
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), (models, name)
    assert [r for r in step_rows(got_dir) if r["step"] >= from_step] == [r for r in step_rows(expected_dir) if r["step"] >= from_step]
