"""A run: the skeleton every recipe trains in (DESIGN principles 5 and 8).

`Run(config, recipe)` gives a recipe, in the order it needs them:

- its place under torchrun (`run.dist`, `run.device`; train/distributed.py), the thread count,
  the process-wide settings of `run.accel` (`r1kit.accel.setup`) and the seed;
- the run directory's name and the checkpoint `run.resume` points at, resolved before anything is
  written (`run.checkpoint`, `run.start_step`); `run.create()` then makes the directory, with
  config.yaml, env.json (versions, seed, device, world size, parallel strategy) and the metric
  logger, once everything a user can get wrong has been checked;
- the model it trains (`run.policy`: LoRA through PEFT when model.lora_r > 0, the checkpoint's
  weights on resume), the learner around each trained model (`run.learner`: DDP under torchrun),
  both with the fast paths of `run.accel` (`r1kit.accel.apply`), and the rollout engine of a
  model (`run.rollout_engine`: `r1kit.accel.rollout_engine`, closed when the run ends; the recipe
  calls `engine.sync_weights(model)` after each update);
- optimizers and schedules (`run.optimizer`) and the stateful data streams (`run.track`), put
  back as the checkpoint's step ended;
- the step loop (`run.loop`, train/loop.py): progress bar, logging, evaluation and checkpoints
  every N steps, and the interrupt guard.

Only rank 0 writes the run directory, logs and evaluates. `check_settings` refuses, before
anything runs, a setting the recipe cannot honour.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from r1kit import accel
from r1kit.config import dump
from r1kit.errors import R1kitError
from r1kit.report.logger import MetricLogger, console
from r1kit.train import distributed as dist_
from r1kit.train.checkpoint import capture_rng, find_run_dir, load_trainer_state, resolve_resume, save_checkpoint
from r1kit.train.optim import build_optimizer, build_scheduler

NO_CHECKPOINTS = {"sample": "it trains nothing", "search": "it writes its data and value model once, at the end"}
"""Recipes that have no training state to checkpoint, and why."""
PROMPT_RECIPES = ("grpo", "ppo")
"""The recipes that apply data.max_prompt_tokens and data.long_prompts."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(seed: int, device: str, world_size: int = 1) -> dict[str, Any]:
    import transformers

    import r1kit

    return {
        "r1kit": r1kit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "parallel": "ddp" if world_size > 1 else "none",
        "seed": seed,
        "pid": os.getpid(),
    }


def create_run(config: Any, recipe: str, device: str = "cpu", world_size: int = 1) -> Path:
    """The run directory for `config` (config.run.output_dir / name), with config.yaml and env.json."""
    run = config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    accel.setup(run.accel, device, run.rollout_processes)
    name = run.name or f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump(config, recipe))
    (run_dir / "env.json").write_text(json.dumps(environment(run.seed, device, world_size), indent=2))
    seed_everything(run.seed)
    return run_dir


def check_settings(config: Any, recipe: str, world_size: int) -> None:
    """An R1kitError naming the field when `config` asks `recipe` for what it cannot do."""
    why = NO_CHECKPOINTS.get(recipe)
    if why:
        for key in ("save_every", "resume"):
            if getattr(config.run, key):
                raise R1kitError(f"{recipe} cannot honour run.{key}={getattr(config.run, key)!r}: {why}, so it writes no checkpoints; remove the setting")
        if world_size > 1:
            raise R1kitError(f"{recipe} runs in one process ({why}); start it without torchrun")
    data = getattr(config, "data", None)
    if data is not None and recipe not in PROMPT_RECIPES:
        if data.max_prompt_tokens:
            raise R1kitError(f"{recipe} cannot honour data.max_prompt_tokens={data.max_prompt_tokens}: only {' and '.join(PROMPT_RECIPES)} fit prompts to the model's context; remove it")
        if data.long_prompts != "skip":
            raise R1kitError(f"{recipe} cannot honour data.long_prompts={data.long_prompts}: only {' and '.join(PROMPT_RECIPES)} fit prompts to the model's context; remove it")
    model = getattr(config, "model", None)
    if why and model is not None and model.lora_r:
        raise R1kitError(f"{recipe} cannot honour model.lora_r={model.lora_r}: {why}; set model.lora_r=0 (a LoRA run's model/ directory loads merged)")


def own_memory(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every parameter and buffer copied into memory of its own. Weights loaded from
    safetensors may stay in the file's mapped pages, at whatever alignment the file gives them, and
    CPU kernels round differently at different alignments: a resumed run (weights from its
    checkpoint) would then drift from the uninterrupted one (a fresh head from the allocator)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model


class _NoLogger:
    """Ranks other than 0 log nothing."""

    def log(self, metrics, step) -> None:
        pass

    def close(self) -> None:
        pass


class Run:
    """One run of a recipe; use as `with Run(config, "sft") as run:` (see the module docstring)."""

    def __init__(self, config: Any, recipe: str):
        self.recipe = recipe
        model_args = getattr(config, "model", None)
        self.dist, self.device = dist_.init_distributed(model_args.device if model_args is not None else config.device)
        try:
            check_settings(config, recipe, self.dist.world_size)
            if config.run.threads:
                torch.set_num_threads(config.run.threads)
            accel.setup(config.run.accel, self.device, config.run.rollout_processes)  # every rank (create_run runs on the main one)
            seed_everything(config.run.seed)  # LoRA's initial adapter weights draw from it
            self.config, self.checkpoint = self._resolve(config)
            self.saved: dict[str, Any] = load_trainer_state(self.checkpoint) if self.checkpoint else {}
        except BaseException:
            dist_.shutdown(self.dist, clean=False)
            raise
        self.start_step = int(self.saved.get("step", 0))
        self.counters: dict[str, Any] = self.saved.get("counters", {"results": {}})
        """What the recipe counts across steps (checkpointed); `results` holds the evaluations."""
        self.run_dir: Path | None = None
        self.tokenizer: Any = None
        """Saved with the model in every checkpoint; the recipe sets it."""
        self.logger: Any = _NoLogger()
        self._models: dict[str, torch.nn.Module] = {}
        self._optimizers: dict[str, tuple[torch.optim.Optimizer, Any]] = {}
        self._tracked: dict[str, Any] = {}
        self._extra: dict[str, Callable[[int], torch.nn.Module | None]] = {}
        self._once: dict[str, Any] = dict(self.saved.get("once", {}))
        self._engines: list[Any] = []

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for engine in self._engines:
            engine.close()  # rollout worker processes, where run.accel started some
        self.logger.close()
        dist_.shutdown(self.dist, clean=exc_type is None)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def results(self) -> dict[str, Any]:
        return self.counters["results"]

    def _resolve(self, config: Any) -> tuple[Any, Path | None]:
        """Fix the run directory's name (rank 0 decides) and find the checkpoint run.resume means."""
        run = config.run
        name = run.name
        if not name:
            found = find_run_dir(run.output_dir, self.recipe, run.resume) if self.is_main else None
            name = str(found) if found else f"{self.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
            name = dist_.broadcast_object(name, self.dist)
        config = dataclasses.replace(config, run=dataclasses.replace(run, name=name))
        checkpoint = resolve_resume(Path(run.output_dir) / name, run.resume)
        if run.resume == "auto" and checkpoint is None and self.is_main:
            console.print(f"{self.recipe}: no checkpoint to resume in {Path(run.output_dir) / name}; starting at step 0")
        return config, checkpoint

    # ----------------------------------------------------------------------------------------
    # Building

    def create(self) -> Path:
        """Make the run directory (rank 0) and the metric logger; returns the directory."""
        made = create_run(self.config, self.recipe, str(self.device), self.dist.world_size) if self.is_main else None
        self.run_dir = Path(dist_.broadcast_object(str(made) if made else None, self.dist))
        seed_everything(self.config.run.seed)  # every rank, as create_run does on the main one
        if self.is_main:
            self.logger = MetricLogger(self.run_dir, self.config.run.tensorboard, resume_step=self.start_step if self.checkpoint else None)
            if self.checkpoint:
                console.print(f"{self.recipe}: resuming from {self.checkpoint} (step {self.start_step})")
        return self.run_dir

    def weights(self, name: str = "model") -> Path | None:
        """The checkpoint's directory of model `name` when resuming, else None."""
        return self.checkpoint / name if self.checkpoint and (self.checkpoint / name).is_dir() else None

    def policy(self, args) -> torch.nn.Module:
        """The causal LM the recipe trains, on this rank's device: args.path with fresh LoRA
        adapters when args.lora_r > 0, or the checkpoint's weights (or adapter) on resume; with
        run.accel's fast paths (`accelerate`), which a reference copied from it keeps."""
        from r1kit.models.load import load_policy

        return self.accelerate(load_policy(args, str(self.device), self.weights("model")))

    def accelerate(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` with the fast paths of run.accel on this device (`r1kit.accel.apply`; again
        does nothing). `policy` and `learner` call it; a recipe calls it on a model that neither
        gives it (the `sample` recipe's, which only generates)."""
        return accel.apply(model, self.device, self.config.run.accel)

    def rollout_engine(self, model: torch.nn.Module, tokenizer) -> Any:
        """The rollout engine of `model` under run.accel (`r1kit.accel.rollout_engine`, with
        run.rollout_processes), closed when the run ends. Build it after `learner`, and call
        `engine.sync_weights(model)` after each update of `model`."""
        engine = accel.rollout_engine(model, tokenizer, processes=self.config.run.rollout_processes)
        self._engines.append(engine)
        return engine

    def learner(self, model: torch.nn.Module, name: str = "model") -> torch.nn.Module:
        """Checkpoint `model` as `name` and return what computes its training losses: DDP around
        it under torchrun (gradients averaged over ranks), else the model itself; `model` gets
        run.accel's fast paths (`accelerate`). Call it before a rollout engine is built on the
        model (its weights move to memory of their own here)."""
        self._models[name] = self.accelerate(own_memory(model))
        return dist_.wrap_ddp(model, self.dist)

    def also_save(self, name: str, model: Callable[[int], torch.nn.Module | None]) -> None:
        """Checkpoint `model(step)` as `name` whenever it returns a model (GRPO's reference once
        a reset has made it differ from the starting weights)."""
        self._extra[name] = model

    def optimizer(self, params, args, total_steps: int, name: str = "") -> tuple[torch.optim.Optimizer, Any]:
        """AdamW and its schedule over `total_steps` (train/optim.py), restored on resume."""
        opt = build_optimizer(params, args)
        sched = build_scheduler(opt, args, total_steps)
        if self.saved:
            saved = self.saved if not name else self.saved["optimizers"][name]
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
        self._optimizers[name] = (opt, sched)
        return opt, sched

    def track(self, **objects: Any) -> None:
        """Checkpoint objects with state_dict / load_state_dict (data streams, controllers),
        restored now on resume."""
        for key, obj in objects.items():
            if self.saved:
                obj.load_state_dict(self.saved[key])
            self._tracked[key] = obj

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """compute() on a fresh run, the checkpoint's value on resume: for what a run derives once
        from its starting weights (DPO's reference log-probs), which a resumed run cannot."""
        if key not in self._once:
            self._once[key] = compute()
        return self._once[key]

    # ----------------------------------------------------------------------------------------
    # During the run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.logger.log(metrics, step)

    def loop(self, total: int, **kwargs):
        """The steps start_step + 1 .. total (see `r1kit.train.loop.StepLoop`)."""
        from r1kit.train.loop import StepLoop

        return StepLoop(self, total, **kwargs)

    def snapshot(self) -> dict[str, Any]:
        """Everything besides weights and optimizers that the current step ends with (every
        rank's RNG; a collective under torchrun)."""
        state = {key: copy.deepcopy(obj.state_dict()) for key, obj in self._tracked.items()}
        rng = dist_.gather_object(capture_rng(), self.dist)
        return {**state, "rng": rng, "counters": copy.deepcopy(self.counters), "once": self._once}

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write checkpoint step_N (rank 0) from the live models and optimizers and `state`."""
        if not self.is_main:
            return
        (opt, sched), others = self._optimizers[""], {k: v for k, v in self._optimizers.items() if k}
        state = {**state, "optimizers": {k: {"optimizer": o.state_dict(), "scheduler": s.state_dict()} for k, (o, s) in others.items()}}
        models = {k: m for k, m in self._models.items() if k != "model"}
        models.update({k: m for k, get in self._extra.items() if (m := get(step)) is not None})
        save_checkpoint(self.run_dir, step, model=self._models["model"], tokenizer=self.tokenizer, optimizer=opt, scheduler=sched,
                        state=state, models=models, keep=self.config.run.keep_checkpoints)  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # Evaluation and results

    def evaluate_before(self, evaluate: Callable[[], dict[str, float]] | None, **extra: Any) -> None:
        """On a fresh run (rank 0): results["before"] = evaluate() (None: no evaluation), logged
        at step 0 with the `extra` metrics. A resumed run has both from its checkpoint."""
        if self.checkpoint is None and self.is_main and (evaluate is not None or extra):
            if evaluate is not None:
                self.results["before"] = evaluate()
            self.log({**extra, **{f"eval/{k}": v for k, v in self.results.get("before", {}).items()}}, 0)

    def evaluate_after(self, evaluate: Callable[[list], dict[str, float]], step: int) -> list[dict]:
        """results["after"] = evaluate(samples) (rank 0), logged at `step`; returns the greedy samples."""
        samples: list[dict] = []
        if self.is_main:
            self.results["after"] = evaluate(samples)
            self.log({f"eval/{k}": v for k, v in self.results["after"].items()}, step)
        return samples

    def write_results(self, samples: list[dict] | None = None) -> None:
        """eval.json (the results) and samples.jsonl (the first 50 greedy samples), rank 0."""
        if not self.is_main:
            return
        (self.run_dir / "eval.json").write_text(json.dumps(self.results, indent=2))
        if samples is not None:
            (self.run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples[:50]))
