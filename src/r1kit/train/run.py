"""A run: the skeleton every recipe trains in (DESIGN principles 5 and 8).

`Run(config, recipe)` gives a recipe, in the order it needs them:

- its place under torchrun (`run.dist`, `run.device`; train/distributed.py), the thread count,
  the process-wide settings of `run.accel` (`r1kit.accel.setup`) and the seed;
- the run directory's name and the checkpoint `run.resume` points at, resolved before anything is
  written (`run.checkpoint`, `run.start_step`); `run.create()` then makes the directory, with
  config.yaml, env.json (versions, seed, device, world size, parallel strategy) and the metric
  logger, once everything a user can get wrong has been checked;
- the model it trains (`run.policy`: LoRA through PEFT when model.lora_r > 0, the checkpoint's
  weights on resume), the learner around each trained model (`run.learner`: DDP under torchrun,
  or with run.parallel=fsdp a sharded copy, `run.frozen` sharding a reference too; train/fsdp.py),
  both with dropout off in GRPO and PPO (`DROPOUT_OFF`) and with the fast paths of `run.accel`
  (`r1kit.accel.apply`), and the rollout engine of a model (`run.rollout_engine`:
  `r1kit.accel.rollout_engine`, closed when the run ends; the recipe calls
  `engine.sync_weights(model)` after each update);
- optimizers and schedules (`run.optimizer`) and the stateful data streams (`run.track`), put
  back as the checkpoint's step ended;
- the step loop (`run.loop`, train/loop.py): progress bar, logging, evaluation and checkpoints
  every N steps, the interrupt guard, and a checkpoint of the last completed step when an
  exception stops the run.

Only rank 0 writes the run directory, logs and evaluates (under fsdp every rank writes its shards
of a checkpoint). `check_config` (train/validate.py) refuses, before anything is loaded, a value
out of its range, a setting the recipe (or run.parallel) cannot honour and a test split from
another source than the training rows; recipes call `check_context` there too, once their rows
are tokenized, before `run.create()`.
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
from r1kit.config import dump, to_dict
from r1kit.errors import R1kitError
from r1kit.models.dropout import disable_dropout
from r1kit.report.logger import MetricLogger, console
from r1kit.report.tracking import WandbTracker
from r1kit.train import distributed as dist_
from r1kit.train import fsdp as fsdp_
from r1kit.train.checkpoint import capture_rng, find_run_dir, load_trainer_state, resolve_resume, save_checkpoint, save_sharded_checkpoint
from r1kit.train.optim import build_optimizer, build_scheduler
from r1kit.train.validate import check_config

DROPOUT_OFF = ("grpo", "ppo")
"""The recipes whose models train with dropout off (`r1kit.models.dropout`): the learner must score
a rollout as the engine sampled it, and the KL to the reference be 0 before the first update."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(seed: int, device: str, world_size: int = 1, parallel: str | None = None) -> dict[str, Any]:
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
        "parallel": parallel or ("ddp" if world_size > 1 else "none"),
        "seed": seed,
        "pid": os.getpid(),
    }


def create_run(config: Any, recipe: str, device: str = "cpu", world_size: int = 1, parallel: str | None = None) -> Path:
    """The run directory for `config` (config.run.output_dir / name), with config.yaml and env.json."""
    run = config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    accel.setup(run.accel, device, run.rollout_processes)
    name = run.name or f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump(config, recipe))
    (run_dir / "env.json").write_text(json.dumps(environment(run.seed, device, world_size, parallel), indent=2))
    seed_everything(run.seed)
    return run_dir


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
            self.parallel = fsdp_.strategy(config.run.parallel, self.dist)
            """`none` (one process), `ddp` or `fsdp` (train/fsdp.py), from run.parallel."""
            check_config(config, recipe, self.dist.world_size, self.parallel)
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
        self._sharded: dict[str, torch.nn.Module] = {}
        """Under fsdp, the sharded learner of each model in `_models` (which are its mirrors)."""
        self._stale: set[str] = set()
        """The mirrors whose learner has stepped since they were last gathered."""
        self._owners: dict[str, str] = {}
        """Under fsdp, the learner each optimizer steps (by name)."""
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
        made = create_run(self.config, self.recipe, str(self.device), self.dist.world_size, self.parallel) if self.is_main else None
        self.run_dir = Path(dist_.broadcast_object(str(made) if made else None, self.dist))
        seed_everything(self.config.run.seed)  # every rank, as create_run does on the main one
        if self.is_main:
            run = self.config.run
            tracker = WandbTracker(self.run_dir, run, to_dict(self.config), resumed=self.checkpoint is not None) if run.wandb else None
            self.logger = MetricLogger(self.run_dir, run.tensorboard, resume_step=self.start_step if self.checkpoint else None, tracker=tracker)
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

        return self.accelerate(self._dropout(load_policy(args, str(self.device), self.weights("model"))))

    def _dropout(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` with dropout off in the recipes of DROPOUT_OFF, else as it is."""
        return disable_dropout(model) if self.recipe in DROPOUT_OFF else model

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
        if self.parallel == "fsdp":  # the engine runs on the mirror, which gathers the learner's weights first
            engine = fsdp_.GatheringEngine(engine, self.gather_weights)
        self._engines.append(engine)
        return engine

    def learner(self, model: torch.nn.Module, name: str = "model") -> torch.nn.Module:
        """Checkpoint `model` as `name` and return what computes its training losses: DDP around
        it under torchrun (gradients averaged over ranks), a sharded copy of it under
        run.parallel=fsdp (`model` then stays whole, the mirror that rollouts, evaluations and
        the final save read, gathered after updates; train/fsdp.py), else the model itself; `model`
        gets run.accel's fast paths (`accelerate`). Call it before a rollout engine is built on
        the model (its weights move to memory of their own here)."""
        self._models[name] = self.accelerate(own_memory(self._dropout(model)))
        if self.parallel != "fsdp":
            return dist_.wrap_ddp(model, self.dist)
        learner = self._sharded[name] = fsdp_.shard(copy.deepcopy(model), self._bf16_on_gpu())
        if self.checkpoint is not None:
            fsdp_.load_model_shards(self.checkpoint / fsdp_.SHARDED, name, learner)
            fsdp_.gather_into(learner, model)
        return learner

    def frozen(self, model):
        """A frozen model beside the learner (GRPO's and PPO's reference), sharded under
        run.parallel=fsdp; as it is otherwise, and when it is no module of its own (LoRA's
        reference is the policy's mirror with its adapters off)."""
        if self.parallel != "fsdp" or not isinstance(model, torch.nn.Module):
            return model
        return fsdp_.shard(model, self._bf16_on_gpu())

    def _bf16_on_gpu(self) -> bool:
        from r1kit.train.precision import uses_bf16

        return self.device.type == "cuda" and uses_bf16(self.device, getattr(self.config, "precision", "auto"))

    def gather_weights(self) -> None:
        """Under fsdp, all-gather each learner that stepped since the last call into its mirror
        (every rank: a collective); nothing otherwise."""
        for name in sorted(self._stale):
            fsdp_.gather_into(self._sharded[name], self._models[name])
        self._stale.clear()

    def _shards_of(self, params: list[torch.Tensor]) -> tuple[str, list[torch.Tensor]]:
        """The learner that shards the mirror's `params`, and their sharded parameters."""
        for name, mirror in self._models.items():
            names = {id(p): n for n, p in mirror.named_parameters()}
            if params and all(id(p) in names for p in params):
                sharded = dict(self._sharded[name].named_parameters())
                return name, [sharded[names[id(p)]] for p in params]
        raise R1kitError("run.parallel=fsdp: the optimizer's parameters belong to no model given to run.learner; call run.learner(model) first")

    def also_save(self, name: str, model: Callable[[int], torch.nn.Module | None]) -> None:
        """Checkpoint `model(step)` as `name` whenever it returns a model (GRPO's reference once
        a reset has made it differ from the starting weights)."""
        self._extra[name] = model

    def optimizer(self, params, args, total_steps: int, name: str = "") -> tuple[torch.optim.Optimizer, Any]:
        """AdamW and its schedule over `total_steps` (train/optim.py), restored on resume. Under
        fsdp `params` (the mirror's) stand for their shards in the learner."""
        owner = None
        if self.parallel == "fsdp":
            owner, params = self._shards_of(list(params))
            self._owners[name] = owner
        opt = build_optimizer(params, args)
        sched = build_scheduler(opt, args, total_steps)
        if self.saved:
            saved = self.saved if not name else self.saved["optimizers"][name]
            if owner is None:
                opt.load_state_dict(saved["optimizer"])
            else:
                fsdp_.load_optimizer_shards(self.checkpoint / fsdp_.SHARDED, name, self._sharded[owner], opt)
            sched.load_state_dict(saved["scheduler"])
        if owner is not None:
            opt.register_step_post_hook(lambda *_: self._stale.add(owner))
        self._optimizers[name] = (opt, sched)
        return opt, sched

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers `optimizer` built, in order."""
        return [opt for opt, _ in self._optimizers.values()]

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
        """Write checkpoint step_N (rank 0; under fsdp every rank writes its shards) from the live
        models and optimizers and `state`."""
        if self.parallel == "fsdp":
            return self._save_sharded(step, state)
        if not self.is_main:
            return
        (opt, sched), others = self._optimizers[""], {k: v for k, v in self._optimizers.items() if k}
        state = {**state, "optimizers": {k: {"optimizer": o.state_dict(), "scheduler": s.state_dict()} for k, (o, s) in others.items()}}
        models = {k: m for k, m in self._models.items() if k != "model"}
        models.update({k: m for k, get in self._extra.items() if (m := get(step)) is not None})
        save_checkpoint(self.run_dir, step, model=self._models["model"], tokenizer=self.tokenizer, optimizer=opt, scheduler=sched,
                        state=state, models=models, keep=self.config.run.keep_checkpoints)  # fmt: skip

    def _save_sharded(self, step: int, state: dict[str, Any]) -> None:
        if any(get(step) is not None for get in self._extra.values()):
            raise R1kitError(f"{self.recipe} changed a frozen model, which run.parallel=fsdp cannot checkpoint; set run.parallel=auto")
        scheds = {k: {"scheduler": s.state_dict()} for k, (_, s) in self._optimizers.items()}
        trainer = {**state, "scheduler": scheds.pop("")["scheduler"], "optimizers": scheds}
        optimizers = {k: (self._owners[k], o) for k, (o, _) in self._optimizers.items()}
        save_sharded_checkpoint(self.run_dir, step, dist=self.dist, trainer=trainer, keep=self.config.run.keep_checkpoints,
                                write=lambda tmp: fsdp_.save_sharded(tmp / fsdp_.SHARDED, self._sharded, optimizers))  # fmt: skip

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
