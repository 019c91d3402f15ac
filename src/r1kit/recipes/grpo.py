"""GRPO with verifiable rewards (DeepSeekMath, Shao et al. 2024; DeepSeek-R1-Zero), and its variants
by config: Dr. GRPO (advantage.scale=none, loss_agg=seq_mean_token_sum_norm), DAPO (eps_high
clip-higher, dynamic_sampling, loss_agg=token_mean, overlong shaping), GSPO (ratio_level=sequence)
and RLOO (advantage.kind=rloo); kl_ratio weights the KL term by the importance ratio, DeepSeek-V3.2's
exact KL gradient (TRL's default `use_bias_correction_kl`).

    build -> loop: prompts -> G samples each (rollout engine) -> rewards -> group advantages
          -> mu passes over mini-batches (clipped surrogate + beta * KL to a frozen reference)
          -> log -> save

Simplifications: with mu > 1 the old log-probs are the rollout engine's sampling log-probs (same
model and precision as the learner, so in fp32 they equal a recomputation, as the rollout tests
check; under bf16 autocast, where the cached decode rounds differently, they are recomputed);
the reference model is a frozen copy, optionally reset to the current policy every
`ref_reset_every` steps, as R1 does (with LoRA it is the base with the adapters disabled).

Scale-out and reliability: under torchrun each rank samples its share of the prompts and the update
runs through DDP (train/distributed.py states the loss normalisation); `run.save_every` writes
checkpoints that resume exactly (train/checkpoint.py); a non-finite loss or gradient skips the
update and is counted (fault/nonfinite_skipped); Ctrl-C saves the last completed step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from r1kit.algorithms import completion_logprobs, group_advantages, masked_mean, policy_loss, rloo_advantages
from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, RunArgs
from r1kit.data.io import load_rows
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import evaluate
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_model, load_policy, load_tokenizer, save_model
from r1kit.models.lora import AdapterDisabledReference, is_peft_model
from r1kit.report.logger import MetricLogger, console, format_line
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import HFEngine, RolloutBatch, SamplingParams
from r1kit.train import distributed as dist_
from r1kit.train.checkpoint import InterruptGuard, capture_rng, find_run_dir, load_trainer_state, resolve_resume, restore_rng, save_checkpoint
from r1kit.train.distributed import SINGLE, Dist
from r1kit.train.optim import build_optimizer, build_scheduler, optimizer_step
from r1kit.train.precision import autocast, uses_bf16
from r1kit.train.progress import progress_bar
from r1kit.train.run import create_run, keep_freed_memory, seed_everything


@dataclass
class SamplingArgs:
    """Rollout sampling (R1 samples at temperature 1)."""

    temperature: float = 1.0
    """Sampling temperature; the learner's log-probs use the same one."""
    top_p: float = 1.0
    """Nucleus sampling."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens: int = 64
    """Longest completion; longer ones are truncated (finish reason `length`)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, e.g. ["</answer>"]."""


@dataclass
class GRPOArgs:
    """The algorithm."""

    steps: int = 100
    """Rollout-and-update steps."""
    prompts_per_step: int = 8
    """B: prompts sampled per step."""
    group_size: int = 8
    """G: completions per prompt (DeepSeekMath used 64, R1 16)."""
    num_iterations: int = 1
    """mu: passes over each batch (mu = 1 with one mini-batch: the ratio is exactly 1 and no old log-probs are needed)."""
    mini_batches: int = 1
    """Optimizer steps per pass: the batch is split into this many mini-batches."""
    micro_batch_rows: int = 0
    """Rows per forward/backward pass; 0: a whole mini-batch. A mini-batch's gradient is accumulated
    over micro-batches of this many rows before its one optimizer step (TRL's per-device batch with
    gradient accumulation), and the no-grad passes (the reference's and the old policy's log-probs)
    run in chunks of this size, or of one mini-batch when 0. Bounds the memory of activations and
    logits without changing the update (the same up to float rounding). A multiple of group_size
    keeps each group's prompt in one pass (its KV cache is shared across the group)."""
    beta: float = 0.04
    """KL coefficient to the reference model (0 loads no reference model)."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (DeepSeekMath uses k3)."""
    kl_ratio: bool = False
    """Weight the KL term by the importance ratio (1 when mu = 1, but not its gradient): k3's gradient
    becomes the exact gradient of KL(pi || ref) (DeepSeek-V3.2). TRL 1.x does this by default
    (`use_bias_correction_kl=True`); false is DeepSeekMath's GRPO, whose k3 gradient pulls to the
    reference by (1 - ref / pi) grad log pi."""
    eps_low: float = 0.2
    """Lower clip of the importance ratio."""
    eps_high: float = 0.2
    """Upper clip; DAPO's clip-higher uses 0.28."""
    ratio_level: Literal["token", "sequence"] = "token"
    """Importance ratio per token (GRPO) or per sequence (GSPO)."""
    loss_agg: Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"] = "seq_mean_token_mean"
    """GRPO (per-sequence token mean, then mean), DAPO (token mean over the batch), Dr. GRPO (sum / max_new_tokens)."""
    advantage: Literal["grpo", "rloo"] = "grpo"
    """Group-normalised advantages (GRPO) or the leave-one-out baseline (RLOO)."""
    scale: Literal["group", "batch", "none"] = "group"
    """GRPO advantage scaling: group std (DeepSeekMath), batch std, or none (Dr. GRPO)."""
    ref_reset_every: int = 0
    """Reset the reference model to the current policy every N steps (R1: 400; 0 = never)."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts to fill the batch."""
    max_resample: int = 3
    """Cap on extra sampling rounds per step for dynamic sampling."""
    mask_truncated: bool = False
    """Leave completions cut at max_new_tokens out of the loss (DAPO overlong filtering)."""
    overlong_cache: int = 0
    """DAPO soft overlong punishment: > 0 adds the `overlong` reward with L_max = max_new_tokens and this cache."""


@dataclass
class GRPOConfig:
    """GRPO training."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The policy (and, frozen, the reference)."""
    data: DataArgs = field(default_factory=DataArgs)
    """Prompts and gold answers."""
    rewards: list[Any] = field(default_factory=list)
    """Reward specs: names, dotted paths or {name, weight, kwargs}; empty = the task's reward plus 0.5 x format."""
    grpo: GRPOArgs = field(default_factory=GRPOArgs)
    """The algorithm."""
    sampling: SamplingArgs = field(default_factory=SamplingArgs)
    """Rollout sampling."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-6, warmup_steps=0, schedule="constant"))
    """Optimiser (R1-style runs use lr 1e-6 to 3e-6)."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation on the test split (every run.eval_every steps and at the end)."""
    samples_every: int = 10
    """Write sample completions to samples/step_N.jsonl (and print a few) every N steps."""
    eval_before: bool = True
    """Evaluate the starting model too."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for rollouts and the learner's forward passes (weights, gradients and AdamW
    stay fp32, as TRL's bf16=True); auto = bf16 on a CUDA device that supports it, else fp32."""


def reward_specs(config: GRPOConfig) -> list[Any]:
    specs = list(config.rewards) or [config.data.task or "math", {"name": "format", "weight": 0.5}]
    if config.grpo.overlong_cache:
        specs.append({"name": "overlong", "kwargs": {"max_length": config.sampling.max_new_tokens, "cache_length": config.grpo.overlong_cache}})
    return specs


class PromptStream:
    """Endless shuffled training rows, B at a time; its position is part of a checkpoint."""

    def __init__(self, rows: list[dict[str, Any]], seed: int):
        self.rows, self.rng, self.order, self.pos = rows, random.Random(seed), [], 0

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order, self.pos = list(range(len(self.rows))), 0
                self.rng.shuffle(self.order)
            out.append(self.rows[self.order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        # `order` is replaced, never changed in place, so holding the list itself is safe.
        return {"order": self.order, "pos": self.pos, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["order"] and max(state["order"]) >= len(self.rows):
            raise R1kitError(f"the checkpoint's data position refers to {max(state['order']) + 1} training rows but there are {len(self.rows)}; resume with the same data")
        self.order, self.pos = list(state["order"]), int(state["pos"])
        self.rng.setstate(_tuples(state["rng"]))


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def train(config: GRPOConfig) -> Path:
    """Run GRPO; returns the run directory (the policy is saved in run_dir/model)."""
    g = config.grpo
    if g.group_size < 2:
        raise R1kitError("grpo.group_size must be at least 2: advantages compare completions within a group")
    if g.micro_batch_rows < 0:
        raise R1kitError(f"grpo.micro_batch_rows={g.micro_batch_rows} must be 0 (a whole mini-batch per pass) or a number of rows")
    if config.model.lora_r and g.beta > 0 and g.ref_reset_every:
        raise R1kitError("grpo.ref_reset_every needs a separate reference model, but with LoRA (model.lora_r > 0) the reference is the base model; set one of them to 0")
    dist, device = dist_.init_distributed(config.model.device)
    try:
        run_dir = _train(config, dist, device)
    except BaseException:
        dist_.shutdown(dist, clean=False)
        raise
    dist_.shutdown(dist)
    return run_dir


def _train(config: GRPOConfig, dist: Dist, device: torch.device) -> Path:
    g = config.grpo
    dist_.rank_share(g.prompts_per_step, dist)  # B must divide by the number of processes
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    if config.run.keep_freed_memory:
        keep_freed_memory(str(device))  # every rank (create_run below runs on the main one)
    seed_everything(config.run.seed)  # LoRA's initial adapter weights draw from it
    # Everything a user can get wrong is checked before the run directory is touched.
    tokenizer = load_tokenizer(config.model.path)
    composer = RewardComposer(reward_specs(config))
    rows = load_prompts(config)
    test_rows = load_split(config.data, "test")
    score, extract = scorer_for(config.data)
    config, resume_from = _resolve_run(config, dist)
    if config.run.resume == "auto" and resume_from is None and dist.is_main:
        console.print(f"grpo: no checkpoint to resume in {Path(config.run.output_dir) / config.run.name}; starting at step 0")
    model = load_policy(config.model, str(device), resume_from / "model" if resume_from else None)
    ref = _reference(config, model, resume_from)
    rows, truncate_to, skipped_long = fit_prompts(config, rows, tokenizer, model)
    run_dir = Path(dist_.broadcast_object(str(create_run(config, "grpo", str(device))) if dist.is_main else None, dist))
    engine = HFEngine(model, tokenizer, processes=config.run.rollout_processes)  # generation runs on the plain module, the update through DDP
    learner = dist_.wrap_ddp(model, dist)
    stream = PromptStream(rows, config.run.seed)
    opt = build_optimizer(model.parameters(), config.optim)
    updates = g.steps * g.num_iterations * g.mini_batches
    sched = build_scheduler(opt, config.optim, updates)
    counters: dict[str, Any] = {"results": {}, "nonfinite_skipped": 0}
    start = 0
    if resume_from is not None:
        start, counters = _restore(resume_from, opt, sched, stream, dist)
        if dist.is_main:
            console.print(f"grpo: resuming from {resume_from} (step {start})")
    results = counters["results"]
    logger = MetricLogger(run_dir, config.run.tensorboard, resume_step=start if resume_from else None) if dist.is_main else _NoLogger()
    main = dist.is_main

    def run_eval() -> dict[str, float]:
        return evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, processes=config.run.rollout_processes)

    def snapshot() -> dict[str, Any]:
        """Everything besides weights and optimizer that step `done` ends with (all ranks' RNGs)."""
        return {"stream": stream.state_dict(), "rng": dist_.gather_object(capture_rng(), dist), "counters": copy.deepcopy(counters)}

    def save(step: int, state: dict[str, Any]) -> None:
        if main:
            diverged = ref is not None and not config.model.lora_r and g.ref_reset_every and step >= g.ref_reset_every
            save_checkpoint(run_dir, step, model=model, tokenizer=tokenizer, optimizer=opt, scheduler=sched, state=state,
                            models={"ref": ref} if diverged else None, keep=config.run.keep_checkpoints)

    if config.eval_before and resume_from is None and main:
        results["before"] = run_eval()
        logger.log({f"eval/{k}": v for k, v in results["before"].items()}, 0)
    if main:
        console.print(f"grpo: {len(rows)} prompts, B={g.prompts_per_step} x G={g.group_size}, mu={g.num_iterations}, beta={g.beta}, rewards {composer.names}"
                      + (f", {dist.world_size} processes" if dist.enabled else ""))
    guard = InterruptGuard()
    done, state, saved = start, snapshot(), start if resume_from is not None else None
    try:
        with progress_bar("grpo", g.steps, config.run.progress and main) as bar:
            bar.advance(start)
            for step in range(start + 1, g.steps + 1):
                t0 = time.perf_counter()
                batch, rewards, metrics, step_rows = collect(config, engine, tokenizer, composer, stream, step, dist=dist, truncate_to=truncate_to)
                t_rollout = time.perf_counter() - t0
                with guard:  # Ctrl-C waits until the step is complete and consistent
                    if ref is not None and g.ref_reset_every and step % g.ref_reset_every == 0:
                        ref.load_state_dict(model.state_dict())
                    metrics.update(update(config, learner, ref, opt, sched, batch, rewards, dist))
                    counters["nonfinite_skipped"] += metrics.pop("fault/nonfinite_skipped")
                    dt = time.perf_counter() - t0
                    n_tokens = int(batch.completion_mask.sum())
                    metrics.update({"perf/step_s": dt, "perf/rollout_s": t_rollout, "perf/tokens_per_s": n_tokens / dt})
                    metrics = dist_.mean_metrics(metrics, dist)
                    metrics.update({"fault/nonfinite_skipped": counters["nonfinite_skipped"], "data/skipped_long_prompts": skipped_long})
                    if main and config.run.eval_every and step % config.run.eval_every == 0 and step != g.steps:
                        metrics.update({f"eval/{k}": v for k, v in run_eval().items()})
                    if main and config.samples_every and (step % config.samples_every == 0 or step == 1):
                        write_samples(run_dir, step, step_rows, batch, rewards, show=not config.run.progress)
                    if step % config.run.log_every == 0 or step == g.steps:
                        logger.log(metrics, step)
                    done, state = step, snapshot()
                    if config.run.save_every and step % config.run.save_every == 0:
                        save(step, state)
                        saved = step
                bar.advance(1, info=f"reward {metrics.get('reward/mean', float('nan')):.3f}")
                if main and not config.run.progress and step % max(1, config.run.log_every) == 0:
                    console.print(format_line(step, metrics, ("reward/mean", "completion/length_mean", "kl", "eval/pass@1")))
    except KeyboardInterrupt:
        if not guard.aborted and saved != done:
            save(done, state)  # the state as step `done` ended: the interrupted step is redone on resume
        if main:
            console.print(f"grpo: interrupted; {'aborted without saving' if guard.aborted else f'checkpoint of step {done} in {run_dir}'}")
        logger.close()
        raise
    if main:
        samples: list[dict] = []
        results["after"] = evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, samples_out=samples, processes=config.run.rollout_processes)
        logger.log({f"eval/{k}": v for k, v in results["after"].items()}, g.steps)
        _write_results(run_dir, model, tokenizer, results, samples)
    logger.close()
    return run_dir


def _write_results(run_dir: Path, model, tokenizer, results: dict[str, Any], samples: list[dict]) -> None:
    """The final model (or LoRA adapter), eval.json and samples.jsonl."""
    save_model(model, tokenizer, run_dir / "model")
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples[:50]))
    before = results.get("before", {}).get("pass@1", float("nan"))
    console.print(f"grpo done: pass@1 {before:.3f} -> {results['after'].get('pass@1', float('nan')):.3f}; run {run_dir}")


class _NoLogger:
    """Ranks other than 0 log nothing."""

    def log(self, metrics, step) -> None:
        pass

    def close(self) -> None:
        pass


def load_prompts(config: GRPOConfig) -> list[dict[str, Any]]:
    """Training rows; from a file, a `prompt` that is not text is an error naming its line."""
    d = config.data
    if d.path:
        return load_rows(d.path, required={"prompt": str}, columns=d.columns, limit=d.train_size)
    return load_split(d, "train", required=("prompt",))


def fit_prompts(config: GRPOConfig, rows: list[dict[str, Any]], tokenizer, model) -> tuple[list[dict[str, Any]], int, int]:
    """Apply data.max_prompt_tokens and data.long_prompts to the training rows.

    Returns (rows, the length `collect` truncates prompts to (0 = none), how many were skipped).
    The limit defaults to the model's context minus sampling.max_new_tokens.
    """
    d, max_new = config.data, config.sampling.max_new_tokens
    limit = d.max_prompt_tokens
    if not limit:
        context = getattr(model.config, "max_position_embeddings", None) or 0
        if not context:
            return rows, 0, 0
        limit = context - max_new
        if limit < 1:
            raise R1kitError(f"sampling.max_new_tokens={max_new} leaves no room for a prompt in the model's context of {context} tokens; lower it")
    texts = [render_prompt(r["prompt"], d.template, tokenizer, d.system_prompt) for r in rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > limit]
    if d.long_prompts == "truncate":
        return rows, limit, 0
    if not long:
        return rows, 0, 0
    if d.long_prompts == "error":
        raise R1kitError(
            f"{len(long)} of {len(rows)} training prompts are longer than {limit} tokens (the first is row {long[0]}, {lengths[long[0]]} tokens); "
            "set data.long_prompts=skip or truncate, or raise data.max_prompt_tokens"
        )
    dropped = set(long)
    kept = [r for i, r in enumerate(rows) if i not in dropped]
    if not kept:
        raise R1kitError(f"every training prompt is longer than {limit} tokens; raise data.max_prompt_tokens or set data.long_prompts=truncate")
    console.print(f"grpo: skipping {len(long)} of {len(rows)} training prompts longer than {limit} tokens (data.long_prompts=skip)")
    return kept, 0, len(long)


def _resolve_run(config: GRPOConfig, dist: Dist) -> tuple[GRPOConfig, Path | None]:
    """Fix the run directory's name (rank 0 decides) and find the checkpoint run.resume means."""
    run = config.run
    name = run.name
    if not name:
        found = find_run_dir(run.output_dir, "grpo", run.resume) if dist.is_main else None
        name = str(found) if found else f"grpo-{time.strftime('%Y%m%d-%H%M%S')}"
        name = dist_.broadcast_object(name, dist)
    config = dataclasses.replace(config, run=dataclasses.replace(run, name=name))
    return config, resolve_resume(Path(run.output_dir) / name, run.resume)


def _reference(config: GRPOConfig, model, resume_from: Path | None):
    """The frozen reference (None at beta 0): the base with adapters disabled under LoRA, else a
    copy of the starting policy, or on resume the checkpoint's diverged ref/ or the original model."""
    if config.grpo.beta <= 0:
        return None
    if is_peft_model(model):
        return AdapterDisabledReference(model)
    if resume_from is None:
        return _frozen_copy(model)
    source = str(resume_from / "ref") if (resume_from / "ref").is_dir() else config.model.path
    device = next(model.parameters()).device
    return _freeze(load_model(source, config.model.dtype, str(device), config.model.attn_implementation))


def _restore(checkpoint: Path, opt, sched, stream: PromptStream, dist: Dist) -> tuple[int, dict[str, Any]]:
    """Put optimizer, schedule, data position and RNGs back as the checkpoint's step ended."""
    state = load_trainer_state(checkpoint)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    stream.load_state_dict(state["stream"])
    rngs = state["rng"]
    if len(rngs) != dist.world_size and dist.is_main:
        console.print(f"grpo: the checkpoint was written by {len(rngs)} processes, this run has {dist.world_size}; sampling will not repeat exactly")
    restore_rng(rngs[dist.rank % len(rngs)])
    return int(state["step"]), state["counters"]


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    return _freeze(copy.deepcopy(model))


def _freeze(ref: torch.nn.Module) -> torch.nn.Module:
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------------------------
# Rollout and reward


def collect(config: GRPOConfig, engine: HFEngine, tokenizer, composer: RewardComposer, stream: PromptStream, step: int,
            dist: Dist = SINGLE, truncate_to: int = 0):
    """Sample this rank's B / world_size groups (refilling dropped ones under dynamic sampling);
    returns the kept batch, its total rewards [N] (NaN = None), step metrics and the prompt rows.

    Every rank takes the same rows from its identical stream and keeps its own slice, so the
    streams never drift apart. `truncate_to` > 0 keeps only the last that many prompt tokens.
    """
    g, s = config.grpo, config.sampling
    base_seed = config.run.seed * 1_000_003 + step * 7919 + (dist.rank << 40)
    kept: list[tuple[RolloutBatch, torch.Tensor, list[dict]]] = []
    need, rounds, metrics, dropped, sampled = g.prompts_per_step // dist.world_size, 0, {}, 0, 0
    while (most := dist_.max_int(need, dist)) > 0:
        rows = stream.take(most * dist.world_size)[dist.rank * most :][:need]
        if not rows:  # this rank is full; it keeps taking rows so its stream stays in step
            rounds += 1
            if rounds > g.max_resample:
                break
            continue
        prompts = [render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt) for r in rows]
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if truncate_to:
            ids = [x[-truncate_to:] for x in ids]
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens, stop=list(s.stop), n=g.group_size, seed=base_seed + rounds)
        with autocast(engine.device, config.precision):
            batch = engine.generate(ids, params)
        columns = {k: [r.get(k) for r in rows for _ in range(g.group_size)] for k in rows[0]}  # the prompt too: reward models score prompt + completion
        columns["completion_lengths"] = batch.completion_lengths.tolist()
        result = composer(batch.texts, columns)
        total = torch.tensor([math.nan if t is None else t for t in result.total], dtype=torch.float32)
        if rounds == 0:
            metrics.update(result.metrics)
            metrics.update(_rollout_metrics(batch, total, g.group_size))
        sampled += len(rows)
        keep = list(range(len(rows)))
        if g.dynamic_sampling:
            spread = total.view(-1, g.group_size)
            keep = [i for i in keep if _has_signal(spread[i])]
            dropped += len(rows) - len(keep)
            if rounds >= g.max_resample and not keep and not kept:
                keep = list(range(len(rows)))  # nothing informative found: train on what we have
        if keep:
            kept.append(_select_groups(batch, total, rows, keep, g.group_size))
        need -= len(keep)
        rounds += 1
        if rounds > g.max_resample:
            break
    batch = RolloutBatch.concat([b for b, _, _ in kept])  # prompt_index: one index per group, across rounds
    total, rows = torch.cat([t for _, t, _ in kept]), [r for _, _, rs in kept for r in rs]
    if g.dynamic_sampling:
        metrics["dynamic/dropped_groups"] = dropped
        metrics["dynamic/sampled_prompts"] = sampled
    return batch, total, metrics, rows


def _has_signal(group_rewards: torch.Tensor) -> bool:
    valid = group_rewards[~torch.isnan(group_rewards)]
    return valid.numel() >= 2 and bool((valid != valid[0]).any())


def _rollout_metrics(batch: RolloutBatch, total: torch.Tensor, group_size: int) -> dict[str, float]:
    lengths = batch.completion_lengths.float()
    groups = total.view(-1, group_size)
    zero_std = [not _has_signal(row) for row in groups]
    valid = total[~torch.isnan(total)]
    return {
        "reward/std": float(valid.std()) if valid.numel() > 1 else 0.0,
        "reward/zero_std_frac": sum(zero_std) / len(zero_std),
        "completion/length_mean": float(lengths.mean()),
        "completion/length_max": float(lengths.max()),
        "completion/truncated_frac": sum(r == "length" for r in batch.finish_reason) / len(batch),
    }


def _select_groups(batch: RolloutBatch, total: torch.Tensor, rows: list[dict], keep: list[int], G: int):
    idx = torch.tensor([i * G + j for i in keep for j in range(G)])
    tensors = {name: getattr(batch, name)[idx] for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "logprobs")}
    picked = RolloutBatch(
        **tensors,
        finish_reason=[batch.finish_reason[i] for i in idx.tolist()],
        prompt_index=[k for k in range(len(keep)) for _ in range(G)],
        group_size=G,
        pad_token_id=batch.pad_token_id,
        texts=[batch.texts[i] for i in idx.tolist()] if batch.texts else None,
    )
    return picked, total[idx], [rows[i] for i in keep]


# --------------------------------------------------------------------------------------------
# Update


def advantages_for(config: GRPOConfig, rewards: torch.Tensor) -> torch.Tensor:
    g = config.grpo
    if g.advantage == "rloo":
        return rloo_advantages(rewards, g.group_size)  # a None (NaN) reward stays out of the others' baselines
    return group_advantages(rewards, g.group_size, g.scale)


def update(config: GRPOConfig, model, ref, opt, sched, batch: RolloutBatch, rewards: torch.Tensor, dist: Dist = SINGLE) -> dict[str, float]:
    """mu passes over mini-batches of the batch; returns averaged loss and clip metrics, and in
    `fault/nonfinite_skipped` how many optimizer steps a non-finite loss or gradient skipped.

    `model` is the learner (DDP-wrapped under torchrun); `ref` any callable model, or None.
    """
    g = config.grpo
    device = next(model.parameters()).device
    batch = batch.to(device)
    adv = advantages_for(config, rewards).to(device)  # [N]
    input_ids, attn = batch.input_ids, batch.attention_mask  # [N, P+C]
    C = batch.completion_ids.shape[1]
    mask = batch.completion_mask.float()  # [N, C]
    if g.mask_truncated:
        mask = mask * torch.tensor([r != "length" for r in batch.finish_reason], device=device, dtype=mask.dtype).unsqueeze(1)
    temperature = config.sampling.temperature or 1.0
    chunked = config.model.chunked_lm_head
    N = input_ids.shape[0]
    # No-grad passes in chunks of the learner's pass size: the logits of all N rows at once would be
    # [N, C, V] (tens of GB for 256 rows of 512 tokens and a 150k vocabulary).
    pass_rows = g.micro_batch_rows or -(-N // g.mini_batches)
    ref_logp = None
    if ref is not None:
        with torch.no_grad(), autocast(device, config.precision):
            ref_logp = _chunked_logprobs(ref, input_ids, attn, C, temperature, chunked, pass_rows)  # [N, C]
    # Old log-probs are needed once the policy has moved: from the second mini-batch or pass on.
    old_logp = batch.logprobs if g.num_iterations > 1 or g.mini_batches > 1 else None
    if old_logp is not None and uses_bf16(device, config.precision):
        # In bf16 the cached decode and a full forward round differently (~1e-2): recompute them,
        # so the first ratio is exactly 1 as in fp32.
        with torch.no_grad(), autocast(device, config.precision):
            old_logp = _chunked_logprobs(model, input_ids, attn, C, temperature, chunked, pass_rows)
    sums: dict[str, float] = {}
    count = skipped = 0
    model.train()
    for _ in range(g.num_iterations):
        order = torch.randperm(N) if g.mini_batches > 1 else torch.arange(N)
        # Exactly mini_batches steps, as the schedule counts them (chunk would give 3 of 6 rows in 4),
        # and under DDP every rank must run the same number of backward passes.
        chunks = order.tensor_split(g.mini_batches)
        for chunk in chunks:
            m, finite = _accumulate_gradient(config, model, chunk, input_ids, attn, C, temperature, chunked, adv, mask, old_logp, ref_logp, dist)
            if not finite:  # a NaN/inf loss in any micro-batch: no part of this mini-batch's gradient is applied
                opt.zero_grad(set_to_none=True)
            grad_norm, lr = optimizer_step(model, opt, sched, config.optim.max_grad_norm)
            if not finite or not math.isfinite(grad_norm):
                grad_norm = math.nan
                skipped += 1  # the weights stay as they were
            m.update({"grad_norm": grad_norm, "lr": lr})
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    return {**{k: v / count for k, v in sums.items()}, "fault/nonfinite_skipped": skipped}


def _row_pieces(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` in consecutive pieces of at most `size` rows (one piece when size is 0 or larger)."""
    return [rows] if size <= 0 or size >= len(rows) else list(rows.split(size))


def _chunked_logprobs(model, input_ids, attn, C: int, temperature: float, chunked: bool, rows: int) -> torch.Tensor:
    """completion_logprobs over the batch, `rows` rows at a time (call under no_grad)."""
    pieces = _row_pieces(torch.arange(input_ids.shape[0], device=input_ids.device), rows)
    return torch.cat([completion_logprobs(model, input_ids[r], attn[r], C, temperature, chunked_head=chunked) for r in pieces])


def _accumulate_gradient(config: GRPOConfig, model, chunk, input_ids, attn, C, temperature, chunked, adv, mask, old_logp, ref_logp, dist) -> tuple[dict[str, float], bool]:
    """Backward of one mini-batch's loss (rows `chunk`), micro-batch by micro-batch
    (grpo.micro_batch_rows): each micro-batch's loss is weighted by its share of the mini-batch, its
    rows for the per-sequence aggregations and its tokens for token_mean, so that the accumulated
    gradient is the whole mini-batch's. Returns the mini-batch's metrics (weighted means over its
    micro-batches) and whether every micro-batch's loss was finite (after a non-finite one nothing
    more is back-propagated: the caller drops the mini-batch's gradient)."""
    g = config.grpo
    device = input_ids.device
    token_mean = g.loss_agg == "token_mean"
    tokens = float(mask[chunk].sum())
    scale = dist_.token_mean_scale(tokens, dist) if token_mean else 1.0
    pieces = _row_pieces(chunk, g.micro_batch_rows)
    metrics: dict[str, float] = {}
    finite = True
    for i, piece in enumerate(pieces):
        # Under DDP only the last micro-batch's backward all-reduces (no_sync covers forward and backward).
        last = i == len(pieces) - 1 or not hasattr(model, "no_sync")
        with nullcontext() if last else model.no_sync():
            with autocast(device, config.precision):
                logp, entropy = completion_logprobs(model, input_ids[piece], attn[piece], C, temperature, with_entropy=True, chunked_head=chunked)
            loss, m = policy_loss(
                logp, None if old_logp is None else old_logp[piece], adv[piece], mask[piece],
                eps_low=g.eps_low, eps_high=g.eps_high, ratio_level=g.ratio_level, loss_agg=g.loss_agg,
                max_len=config.sampling.max_new_tokens, ref_logp=None if ref_logp is None else ref_logp[piece],
                beta=g.beta, kl_kind=g.kl_kind, kl_ratio=g.kl_ratio,
            )  # fmt: skip
            token_share = (float(mask[piece].sum()) / tokens if tokens > 0 else 0.0) if len(pieces) > 1 else 1.0
            weight = token_share if token_mean or len(pieces) == 1 else len(piece) / len(chunk)
            finite = finite and dist_.all_finite(loss.detach(), dist)
            if finite:  # a NaN/inf loss is not even back-propagated
                (loss * (weight * scale)).backward()
        # The clip, ratio and KL metrics and the entropy are token means: weighted by tokens; the loss as it is summed.
        m["entropy"] = float(masked_mean(entropy.detach(), mask[piece]))
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + token_share * v
        metrics["loss/policy"] = metrics.get("loss/policy", 0.0) + weight * float(loss.detach())
    return metrics, finite


def write_samples(run_dir: Path, step: int, rows: list[dict], batch: RolloutBatch, rewards: torch.Tensor, show: bool, per_step: int = 8) -> None:
    """A few completions of this step (first completion of each group) to samples/step_N.jsonl."""
    out = run_dir / "samples"
    out.mkdir(exist_ok=True)
    G = batch.group_size
    lines = []
    for i, row in enumerate(rows[:per_step]):
        j = i * G
        lines.append({"step": step, "prompt": row["prompt"], "completion": batch.texts[j] if batch.texts else "", "reward": None if math.isnan(float(rewards[j])) else float(rewards[j]), "answer": row.get("answer")})
    (out / f"step_{step}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if show:
        from rich.table import Table

        table = Table(title=f"samples at step {step}", show_lines=False)
        for col in ("prompt", "completion", "reward"):
            table.add_column(col)
        for x in lines[:3]:
            table.add_row(x["prompt"], x["completion"][:80], f"{x['reward']}")
        console.print(table)
