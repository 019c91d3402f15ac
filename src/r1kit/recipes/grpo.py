"""GRPO with verifiable rewards (DeepSeekMath, Shao et al. 2024; DeepSeek-R1-Zero), and its variants
by config: Dr. GRPO (advantage.scale=none, loss_agg=seq_mean_token_sum_norm), DAPO (eps_high
clip-higher, dynamic_sampling, loss_agg=token_mean, overlong shaping), GSPO (ratio_level=sequence)
and RLOO (advantage.kind=rloo).

    build -> loop: prompts -> G samples each (rollout engine) -> rewards -> group advantages
          -> mu passes over mini-batches (clipped surrogate + beta * KL to a frozen reference)
          -> log -> save

Simplifications: one process (see the scale-out notes in the README); with mu > 1 the old
log-probs are the rollout engine's sampling log-probs (same model and precision as the learner,
so they equal a recomputation; the rollout tests check that); the reference model is a frozen
copy, optionally reset to the current policy every `ref_reset_every` steps, as R1 does.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from r1kit.algorithms import completion_logprobs, group_advantages, masked_mean, policy_loss, rloo_advantages
from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, RunArgs
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import evaluate
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_model, load_tokenizer, resolve_device, save_model
from r1kit.report.logger import MetricLogger, console, format_line
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import HFEngine, RolloutBatch, SamplingParams
from r1kit.train.optim import build_optimizer, build_scheduler, clip_gradients
from r1kit.train.progress import progress_bar
from r1kit.train.run import create_run


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
    """mu: passes over each batch (mu = 1: the ratio is exactly 1 and no old log-probs are needed)."""
    mini_batches: int = 1
    """Optimizer steps per pass: the batch is split into this many mini-batches."""
    beta: float = 0.04
    """KL coefficient to the reference model (0 loads no reference model)."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (DeepSeekMath uses k3)."""
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


def train(config: GRPOConfig) -> Path:
    """Run GRPO; returns the run directory (the policy is saved in run_dir/model)."""
    g = config.grpo
    if g.group_size < 2:
        raise R1kitError("grpo.group_size must be at least 2: advantages compare completions within a group")
    device = resolve_device(config.model.device)
    run_dir = create_run(config, "grpo", str(device))
    tokenizer = load_tokenizer(config.model.path)
    model = load_model(config.model.path, config.model.dtype, config.model.device, config.model.attn_implementation)
    ref = _frozen_copy(model) if g.beta > 0 else None
    engine = HFEngine(model, tokenizer)
    composer = RewardComposer(reward_specs(config))
    rows = load_split(config.data, "train", required=("prompt",))
    test_rows = load_split(config.data, "test")
    score, extract = scorer_for(config.data)
    stream = PromptStream(rows, config.run.seed)
    opt = build_optimizer(model.parameters(), config.optim)
    updates = g.steps * g.num_iterations * g.mini_batches
    sched = build_scheduler(opt, config.optim, updates)
    logger = MetricLogger(run_dir, config.run.tensorboard)

    def run_eval() -> dict[str, float]:
        return evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt)

    results: dict[str, Any] = {}
    if config.eval_before:
        results["before"] = run_eval()
        logger.log({f"eval/{k}": v for k, v in results["before"].items()}, 0)
    console.print(f"grpo: {len(rows)} prompts, B={g.prompts_per_step} x G={g.group_size}, mu={g.num_iterations}, beta={g.beta}, rewards {composer.names}")
    with progress_bar("grpo", g.steps, config.run.progress) as bar:
        for step in range(1, g.steps + 1):
            t0 = time.perf_counter()
            batch, rewards, metrics, step_rows = collect(config, engine, tokenizer, composer, stream, step)
            t_rollout = time.perf_counter() - t0
            if ref is not None and g.ref_reset_every and step % g.ref_reset_every == 0:
                ref.load_state_dict(model.state_dict())
            metrics.update(update(config, model, ref, opt, sched, batch, rewards))
            dt = time.perf_counter() - t0
            n_tokens = int(batch.completion_mask.sum())
            metrics.update({"perf/step_s": dt, "perf/rollout_s": t_rollout, "perf/tokens_per_s": n_tokens / dt, "lr": sched.get_last_lr()[0]})
            if config.run.eval_every and step % config.run.eval_every == 0 and step != g.steps:
                metrics.update({f"eval/{k}": v for k, v in run_eval().items()})
            if config.samples_every and (step % config.samples_every == 0 or step == 1):
                write_samples(run_dir, step, step_rows, batch, rewards, show=not config.run.progress)
            if step % config.run.log_every == 0 or step == g.steps:
                logger.log(metrics, step)
            bar.advance(1, info=f"reward {metrics.get('reward/mean', float('nan')):.3f}")
            if not config.run.progress and step % max(1, config.run.log_every) == 0:
                console.print(format_line(step, metrics, ("reward/mean", "completion/length_mean", "kl", "eval/pass@1")))
    samples: list[dict] = []
    results["after"] = evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, samples_out=samples)
    logger.log({f"eval/{k}": v for k, v in results["after"].items()}, g.steps)
    logger.close()
    save_model(model, tokenizer, run_dir / "model")
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples[:50]))
    before = results.get("before", {}).get("pass@1", float("nan"))
    console.print(f"grpo done: pass@1 {before:.3f} -> {results['after'].get('pass@1', float('nan')):.3f}; run {run_dir}")
    return run_dir


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------------------------
# Rollout and reward


def collect(config: GRPOConfig, engine: HFEngine, tokenizer, composer: RewardComposer, stream: PromptStream, step: int):
    """Sample B groups (refilling dropped ones under dynamic sampling); returns the kept batch,
    its total rewards [N] (NaN = None), step metrics and the prompt rows."""
    g, s = config.grpo, config.sampling
    base_seed = config.run.seed * 1_000_003 + step * 7919
    kept: list[tuple[RolloutBatch, torch.Tensor, list[dict]]] = []
    need, rounds, metrics, dropped, sampled = g.prompts_per_step, 0, {}, 0, 0
    while need > 0:
        rows = stream.take(need)
        prompts = [render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt) for r in rows]
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens, stop=list(s.stop), n=g.group_size, seed=base_seed + rounds)
        batch = engine.generate(ids, params)
        columns = {k: [r.get(k) for r in rows for _ in range(g.group_size)] for k in rows[0] if k != "prompt"}
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
    batch, total, rows = _concat(kept)
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


def _concat(parts):
    """Join sampled parts into one batch (padding prompts on the left and completions on the right)."""
    if len(parts) == 1:
        return parts[0]
    pad = parts[0][0].pad_token_id
    P = max(p[0].prompt_ids.shape[1] for p in parts)
    C = max(p[0].completion_ids.shape[1] for p in parts)

    def left(t, width, value):
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    def right(t, width, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    b = [p[0] for p in parts]
    batch = RolloutBatch(
        prompt_ids=torch.cat([left(x.prompt_ids, P, pad) for x in b]),
        prompt_mask=torch.cat([left(x.prompt_mask, P, 0) for x in b]),
        completion_ids=torch.cat([right(x.completion_ids, C, pad) for x in b]),
        completion_mask=torch.cat([right(x.completion_mask, C, 0) for x in b]),
        logprobs=torch.cat([right(x.logprobs, C, 0.0) for x in b]),
        finish_reason=[r for x in b for r in x.finish_reason],
        prompt_index=list(range(sum(len(x) for x in b))),
        group_size=b[0].group_size,
        pad_token_id=pad,
        texts=[t for x in b for t in (x.texts or [])] or None,
    )
    return batch, torch.cat([p[1] for p in parts]), [r for p in parts for r in p[2]]


# --------------------------------------------------------------------------------------------
# Update


def advantages_for(config: GRPOConfig, rewards: torch.Tensor) -> torch.Tensor:
    g = config.grpo
    if g.advantage == "rloo":
        return rloo_advantages(torch.nan_to_num(rewards, nan=0.0), g.group_size)
    return group_advantages(rewards, g.group_size, g.scale)


def update(config: GRPOConfig, model, ref, opt, sched, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
    """mu passes over mini-batches of the batch; returns averaged loss and clip metrics."""
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
    ref_logp = None
    if ref is not None:
        with torch.no_grad():
            ref_logp = completion_logprobs(ref, input_ids, attn, C, temperature)  # [N, C]
    old_logp = batch.logprobs if g.num_iterations > 1 else None
    N = input_ids.shape[0]
    sums: dict[str, float] = {}
    count = 0
    model.train()
    for _ in range(g.num_iterations):
        order = torch.randperm(N) if g.mini_batches > 1 else torch.arange(N)
        for chunk in order.chunk(g.mini_batches):
            logp, entropy = completion_logprobs(model, input_ids[chunk], attn[chunk], C, temperature, with_entropy=True)
            loss, m = policy_loss(
                logp, None if old_logp is None else old_logp[chunk], adv[chunk], mask[chunk],
                eps_low=g.eps_low, eps_high=g.eps_high, ratio_level=g.ratio_level, loss_agg=g.loss_agg,
                max_len=config.sampling.max_new_tokens, ref_logp=None if ref_logp is None else ref_logp[chunk],
                beta=g.beta, kl_kind=g.kl_kind,
            )
            loss.backward()
            grad_norm = clip_gradients(model, config.optim.max_grad_norm)
            if math.isfinite(grad_norm):
                opt.step()
            else:
                m["nonfinite_skipped"] = 1.0
            opt.zero_grad(set_to_none=True)
            sched.step()
            m.update({"loss/policy": float(loss.detach()), "entropy": float(masked_mean(entropy.detach(), mask[chunk])), "grad_norm": grad_norm})
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    return {k: v / count for k, v in sums.items()}


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
