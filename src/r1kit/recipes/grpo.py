"""GRPO with verifiable rewards (DeepSeekMath, Shao et al. 2024; DeepSeek-R1-Zero) and its variants, each
paper's settings a preset (`grpo.preset: dr_grpo | dapo | gspo | rloo`, recipes/grpo_presets.py); kl_ratio
weights the KL term by the importance ratio, DeepSeek-V3.2's exact KL gradient (TRL's `use_bias_correction_kl`).

    build -> loop: prompts -> G samples each (rollout engine) -> rewards -> group advantages
          -> mu passes over mini-batches (clipped surrogate + beta * KL to a frozen reference)
          -> log -> save

Simplifications: with mu > 1 the old log-probs are the rollout engine's sampling log-probs (same
model and precision as the learner, so in fp32 they equal a recomputation, as the rollout tests
check; under bf16 autocast, where the cached decode rounds differently, they are recomputed);
the reference is a frozen copy, reset to the policy every `ref_reset_every` steps if set, as R1
does (with LoRA it is the base with the adapters disabled).

The maths is in r1kit.algorithms; sampling and scoring a step's groups in r1kit/train/rollouts.py;
process supervision (`rewards: ["prm:PATH"]`, DeepSeekMath's step rewards) in r1kit/train/process.py;
the run skeleton (r1kit/train/run.py) gives torchrun (each rank samples its share of the prompts),
exact resume, the Ctrl-C / SIGTERM guard and LoRA. A non-finite loss or gradient skips the update
and is counted (fault/nonfinite_skipped).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from r1kit.algorithms import completion_logprobs, group_advantages, masked_mean, policy_loss, reinforce_advantages, rloo_advantages
from r1kit.config import DataArgs, EvalArgs, ModelArgs, NonNegativeFloat, NonNegativeInt, OptimArgs, PositiveInt, Probability, Range, RunArgs, SamplingArgs
from r1kit.data.stream import PromptStream
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_tokenizer, save_model
from r1kit.recipes import grpo_presets
from r1kit.report.logger import console
from r1kit.report.samples import write_samples
from r1kit.rollout import RolloutBatch
from r1kit.train import distributed as dist_
from r1kit.train.distributed import SINGLE, Dist
from r1kit.train.microbatch import backward_pieces, mini_batches, row_pieces
from r1kit.train.optim import optimizer_step
from r1kit.train.precision import autocast, uses_bf16
from r1kit.train.process import StepRewards, build_rewards
from r1kit.train.reference import reference_model
from r1kit.train.rollouts import collect, fit_held_out, fit_prompts, load_prompts
from r1kit.train.run import Run


@dataclass
class GRPOArgs:
    """The algorithm."""

    preset: Literal["none", "grpo", "dr_grpo", "dapo", "gspo", "rloo"] = "none"
    """A paper's settings of the fields below (grpo_presets.py cites each); fields given explicitly win."""
    steps: PositiveInt = 100
    """Rollout-and-update steps."""
    prompts_per_step: PositiveInt = 8
    """B: prompts sampled per step."""
    group_size: Annotated[int, Range(ge=2)] = 8
    """G: completions per prompt, at least 2 (advantages compare completions within a group; DeepSeekMath used 64, R1 16)."""
    num_iterations: PositiveInt = 1
    """mu: passes over each batch (mu = 1 with one mini-batch: the ratio is exactly 1 and no old log-probs are needed)."""
    mini_batches: PositiveInt = 1
    """Optimizer steps per pass: the batch is split into this many mini-batches (sizes within one row)."""
    micro_batch_rows: NonNegativeInt = 0
    """Rows per forward/backward pass; 0: a whole mini-batch. A mini-batch's gradient is accumulated
    over micro-batches of this many rows before its one optimizer step (TRL's per-device batch with
    gradient accumulation), and the no-grad passes (the reference's and the old policy's log-probs)
    run in chunks of this size, or of one mini-batch when 0. Bounds the memory of activations and
    logits without changing the update (the same up to float rounding). A multiple of group_size
    keeps each group's prompt in one pass (its KV cache is shared across the group)."""
    beta: NonNegativeFloat = 0.04
    """KL coefficient to the reference model (0 loads no reference model)."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (DeepSeekMath uses k3)."""
    kl_ratio: bool = False
    """Weight the KL term by the importance ratio (1 when mu = 1, but not its gradient): k3's gradient
    becomes the exact gradient of KL(pi || ref) (DeepSeek-V3.2). TRL 1.x does this by default
    (`use_bias_correction_kl=True`); false is DeepSeekMath's GRPO, whose k3 gradient pulls to the
    reference by (1 - ref / pi) grad log pi."""
    eps_low: Probability = 0.2
    """Lower clip of the importance ratio (PPO's 0.2; GSPO clips its sequence ratio at 3e-4)."""
    eps_high: NonNegativeFloat = 0.2
    """Upper clip; DAPO's clip-higher uses 0.28 (Yu et al. 2025, section 4.1), GSPO 4e-4 (Zheng et al. 2025)."""
    ratio_level: Literal["token", "sequence"] = "token"
    """Importance ratio per token (GRPO) or per sequence, length-normalised (GSPO, Zheng et al. 2025)."""
    loss_agg: Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"] = "seq_mean_token_mean"
    """GRPO (per-sequence token mean, then mean), DAPO (token mean over the batch), Dr. GRPO (sum / max_new_tokens; Liu et al. 2025)."""
    advantage: Literal["grpo", "rloo", "reinforce"] = "grpo"
    """Group-normalised advantages (GRPO), the leave-one-out baseline (RLOO, Ahmadian et al. 2024), or no baseline (REINFORCE: A = r)."""
    scale: Literal["group", "batch", "none"] = "group"
    """GRPO advantage scaling: group std (DeepSeekMath), batch std, or none (Dr. GRPO)."""
    ref_reset_every: NonNegativeInt = 0
    """Reset the reference model to the current policy every N steps (R1: 400; 0 = never)."""
    dynamic_sampling: bool = False
    """DAPO (Yu et al. 2025, section 3.2): drop groups whose rewards are all equal and sample more prompts to fill the batch."""
    max_resample: NonNegativeInt = 3
    """Cap on extra sampling rounds per step for dynamic sampling."""
    mask_truncated: bool = False
    """Leave completions cut at max_new_tokens out of the loss (DAPO overlong filtering)."""
    overlong_cache: NonNegativeInt = 0
    """DAPO soft overlong punishment: > 0 adds the `overlong` reward with L_max = max_new_tokens and this cache."""


@dataclass
class GRPOConfig:
    """GRPO training."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The policy (and, frozen, the reference)."""
    data: DataArgs = field(default_factory=DataArgs)
    """Prompts and gold answers."""
    rewards: list[Any] = field(default_factory=list)
    """Reward specs: names, dotted paths or {name, weight, kwargs}; empty = the task's reward plus 0.5 x format.
    `prm:PATH` (a process reward model from `r1kit prm`) rewards every step (r1kit/train/process.py)."""
    reward_failure_steps: int = 3
    """Stop the run (saving its checkpoint first) when a reward function raised on every row of this many steps in a row (0: never)."""
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
    samples_every: NonNegativeInt = 10
    """Write sample completions to samples/step_N.jsonl (and print a few) every N steps."""
    eval_before: bool = True
    """Evaluate the starting model too."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for rollouts and the learner's forward passes (weights, gradients and AdamW
    stay fp32, as TRL's bf16=True); auto = bf16 on a CUDA device that supports it, else fp32."""
    preset_settings = staticmethod(grpo_presets.preset_settings)  # r1kit.config lays grpo.preset's settings under the user's


def reward_specs(config: GRPOConfig) -> list[Any]:
    overlong = {"name": "overlong", "kwargs": {"max_length": config.sampling.max_new_tokens, "cache_length": config.grpo.overlong_cache}}
    return (list(config.rewards) or [config.data.builtin_task or "math", {"name": "format", "weight": 0.5}]) + ([overlong] if config.grpo.overlong_cache else [])


def train(config: GRPOConfig) -> Path:
    """Run GRPO; returns the run directory (the policy, or its LoRA adapter, is saved in run_dir/model)."""
    g = config.grpo
    _check(config)
    with Run(config, "grpo") as run:
        dist_.rank_rows(g.prompts_per_step, g.group_size, g.mini_batches, run.dist, "grpo")  # B must divide by the number of processes
        # Everything a user can get wrong is checked before the run directory is touched.
        tokenizer = load_tokenizer(config.model.path)
        composer, process = build_rewards(reward_specs(config), config.data, str(run.device), g.dynamic_sampling, config.reward_failure_steps)  # `prm:PATH`: step rewards
        model = run.policy(config.model)
        ref = run.frozen(reference_model(model, config.model, run.checkpoint)) if g.beta > 0 else None  # a copy (sharded under fsdp), or the base under LoRA
        rows, truncate_to, skipped_long = fit_prompts(config.data, load_prompts(config.data), tokenizer, config.sampling.max_new_tokens, model, "grpo")
        evaluator = fit_held_out(Evaluator.for_data(tokenizer, config.data, config.eval, config.run.rollout_processes), config.data, config.eval.max_new_tokens, tokenizer, model, "grpo")
        run_dir = run.create()
        run.tokenizer = tokenizer
        learner = run.learner(model)
        engine = run.rollout_engine(model, tokenizer)  # generation runs on the plain module, the update through DDP
        run.also_save("ref", lambda step: ref if not config.model.lora_r and 0 < g.ref_reset_every <= step else None)  # once reset
        opt, sched = run.optimizer(model.parameters(), config.optim, g.steps * g.num_iterations * g.mini_batches)
        stream = PromptStream(rows, config.run.seed)
        run.track(stream=stream)
        run.counters.setdefault("nonfinite_skipped", 0)
        run.evaluate_before((lambda: evaluator(model)) if config.eval_before else None)
        if run.is_main:
            console.print(f"grpo: {len(rows)} prompts, B={g.prompts_per_step} x G={g.group_size}, mu={g.num_iterations}, beta={g.beta}, rewards {composer.names}, {run.dist.world_size} process(es)")

        with run.loop(g.steps, evaluate=lambda: evaluator(model), line_keys=("reward/mean", "completion/length_mean", "kl", "eval/pass@1")) as loop:
            for step in loop:
                batch, rewards, metrics, step_rows = collect(
                    engine, tokenizer, composer, stream, step, prompts=g.prompts_per_step, group_size=g.group_size, sampling=config.sampling,
                    data=config.data, seed=config.run.seed, precision=config.precision, dist=run.dist, truncate_to=truncate_to,
                    dynamic_sampling=g.dynamic_sampling, max_resample=g.max_resample,
                )  # fmt: skip
                steps = process.steps(batch, step_rows, metrics, tokenizer) if process else None
                metrics["perf/rollout_s"] = time.perf_counter() - loop.step_start
                with loop.guard:  # Ctrl-C waits until the step is complete and consistent
                    if ref is not None and g.ref_reset_every and step % g.ref_reset_every == 0:
                        ref.load_state_dict(model.state_dict())
                    metrics.update(update(config, learner, ref, opt, sched, batch, rewards, run.dist, steps))
                    engine.sync_weights(model)
                    run.counters["nonfinite_skipped"] += metrics["fault/nonfinite_skipped"]
                    metrics.update({"fault/nonfinite_skipped": run.counters["nonfinite_skipped"], "data/skipped_long_prompts": skipped_long})
                    if run.is_main and config.samples_every and (step % config.samples_every == 0 or step == 1):
                        write_samples(run_dir, step, step_rows, batch, rewards, show=not config.run.progress)
                    loop.end_step(step, metrics, tokens=int(batch.completion_mask.sum()))
        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
        samples = run.evaluate_after(lambda out: evaluator(model, out), g.steps)
        if run.is_main:
            run.write_results(samples)
            before = run.results.get("before", {}).get("pass@1", float("nan"))
            console.print(f"grpo done: pass@1 {before:.3f} -> {run.results['after'].get('pass@1', float('nan')):.3f}; run {run_dir}")
    return run_dir


def _check(config: GRPOConfig) -> None:
    g = config.grpo
    if config.model.lora_r and g.beta > 0 and g.ref_reset_every:
        raise R1kitError("grpo.ref_reset_every needs a separate reference model, but with LoRA (model.lora_r > 0) the reference is the base model; set one of them to 0")
    if g.advantage != "grpo" and g.scale != "group":  # rloo and reinforce do not divide by a std
        raise R1kitError(f"grpo.scale={g.scale} divides GRPO's advantages, but grpo.advantage={g.advantage} has none to divide; remove grpo.scale")


def advantages_for(config: GRPOConfig, rewards: torch.Tensor, steps: StepRewards | None = None) -> torch.Tensor:
    """Advantages [N] of rewards [N] (NaN = None: advantage 0); with step rewards [N, C] (train/process.py)."""
    g = config.grpo
    adv = {"rloo": rloo_advantages, "reinforce": reinforce_advantages}.get(g.advantage, lambda r, G: group_advantages(r, G, g.scale))(rewards, g.group_size)
    return adv if steps is None else steps.token_advantages(adv, g.group_size)


def update(config: GRPOConfig, model, ref, opt, sched, batch: RolloutBatch, rewards: torch.Tensor, dist: Dist = SINGLE, steps: StepRewards | None = None) -> dict[str, float]:
    """mu passes over mini-batches of the batch; returns averaged loss and clip metrics, and in
    `fault/nonfinite_skipped` how many optimizer steps a non-finite loss or gradient skipped.
    `model` is the learner (DDP-wrapped under torchrun); `ref` any callable model, or None."""
    g = config.grpo
    device = next(model.parameters()).device
    batch = batch.to(device)
    adv = advantages_for(config, rewards, steps).to(device)  # [N], or [N, C] with step rewards
    mask = batch.completion_mask.float()  # [N, C]
    if g.mask_truncated:
        mask = mask * torch.tensor([r != "length" for r in batch.finish_reason], device=device, dtype=mask.dtype).unsqueeze(1)
    ref_logp, old_logp = _fixed_logprobs(config, model, ref, batch)
    sums: dict[str, float] = {}
    count = skipped = 0
    model.train()
    for _ in range(g.num_iterations):
        for rows in mini_batches(len(batch), g.mini_batches):
            m, finite = _mini_batch_backward(config, model, batch, rows, adv, mask, old_logp, ref_logp, dist)
            grad_norm, lr = optimizer_step(model, opt, sched, config.optim.max_grad_norm, finite)
            if not math.isfinite(grad_norm):
                grad_norm, skipped = math.nan, skipped + 1  # the weights stay as they were
            for k, v in {**m, "grad_norm": grad_norm, "lr": lr}.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    return {**{k: v / count for k, v in sums.items()}, "fault/nonfinite_skipped": skipped}


def _fixed_logprobs(config: GRPOConfig, model, ref, batch: RolloutBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The reference's log-probs and the old policy's [N, C], None where not needed: no reference,
    or a first ratio of exactly 1 (mu = 1 with one mini-batch)."""
    g = config.grpo
    ids, attn, C, N = batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1], len(batch)

    def logprobs(m) -> torch.Tensor:
        # In passes of micro_batch_rows rows (or a mini-batch): the logits of all N rows at once
        # would be [N, C, V] (tens of GB for 256 rows of 512 tokens and a 150k vocabulary).
        pieces = row_pieces(torch.arange(N, device=ids.device), g.micro_batch_rows or -(-N // g.mini_batches))
        with torch.no_grad(), autocast(ids.device, config.precision):
            return torch.cat([completion_logprobs(m, ids[r], attn[r], C, config.sampling.temperature or 1.0, chunked_head=config.model.chunked_lm_head) for r in pieces])

    ref_logp = None if ref is None else logprobs(ref)
    # Old log-probs are needed once the policy has moved: from the second mini-batch or pass on.
    old_logp = batch.logprobs if g.num_iterations > 1 or g.mini_batches > 1 else None
    if old_logp is not None and uses_bf16(ids.device, config.precision):
        # In bf16 the cached decode and a full forward round differently (~1e-2): recompute them,
        # so the first ratio is exactly 1 as in fp32.
        old_logp = logprobs(model)
    return ref_logp, old_logp


def _mini_batch_backward(config: GRPOConfig, model, batch: RolloutBatch, rows, adv, mask, old_logp, ref_logp, dist: Dist) -> tuple[dict[str, float], bool]:
    """Backward of one mini-batch's loss (rows `rows`), micro-batch by micro-batch
    (grpo.micro_batch_rows): each micro-batch's loss is weighted by its share of the mini-batch, its
    rows for the per-sequence aggregations and its tokens for token_mean, so that the accumulated
    gradient is the whole mini-batch's. Returns the mini-batch's metrics (weighted means over its
    micro-batches) and whether every micro-batch's loss was finite."""
    g = config.grpo
    ids, attn, C = batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1]
    token_mean = g.loss_agg == "token_mean"
    tokens = float(mask[rows].sum())
    scale = dist_.token_mean_scale(tokens, dist) if token_mean else 1.0
    pieces = row_pieces(rows, g.micro_batch_rows)
    metrics: dict[str, float] = {}

    def loss_of(piece: torch.Tensor) -> torch.Tensor:
        with autocast(ids.device, config.precision):
            logp, entropy = completion_logprobs(model, ids[piece], attn[piece], C, config.sampling.temperature or 1.0, with_entropy=True,
                                                chunked_head=config.model.chunked_lm_head)  # fmt: skip
        loss, m = policy_loss(
            logp, None if old_logp is None else old_logp[piece], adv[piece], mask[piece],
            eps_low=g.eps_low, eps_high=g.eps_high, ratio_level=g.ratio_level, loss_agg=g.loss_agg,
            max_len=config.sampling.max_new_tokens, ref_logp=None if ref_logp is None else ref_logp[piece],
            beta=g.beta, kl_kind=g.kl_kind, kl_ratio=g.kl_ratio,
        )  # fmt: skip
        token_share = (float(mask[piece].sum()) / tokens if tokens > 0 else 0.0) if len(pieces) > 1 else 1.0
        weight = token_share if token_mean or len(pieces) == 1 else len(piece) / len(rows)
        # The clip, ratio and KL metrics and the entropy are token means: weighted by tokens; the loss as it is summed.
        m["entropy"] = float(masked_mean(entropy.detach(), mask[piece]))
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + token_share * v
        metrics["loss/policy"] = metrics.get("loss/policy", 0.0) + weight * float(loss.detach())
        return loss * (weight * scale)

    return metrics, backward_pieces(model, pieces, loss_of, dist)
