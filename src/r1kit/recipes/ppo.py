"""PPO for language models as in InstructGPT (Ouyang et al. 2022), after Ziegler et al. 2019 and
TRL's PPOTrainer: a policy, a frozen reference, a value model, GAE over per-token rewards.

    build (policy, reference, value model) -> loop:
        B prompts -> one completion each (rollout engine) -> sequence score (rule rewards or model:PATH)
        -> per-token rewards r_t = -beta * KL_t (+ score on the last token; + a `prm:PATH` step's
           score on the token ending the step, r1kit/train/process.py)
        -> values V(s_t) -> GAE advantages and returns -> whiten advantages
        -> ppo_epochs x mini-batches: clipped policy loss + clipped value loss
        -> adapt beta (optional) -> log -> save

- Per-token KL: the k1 estimate log pi(y_t) - log ref(y_t) on every completion token, as in
  InstructGPT and TRL; the score is added on the last real token (the eos when there is one).
- Value model: a separate `AutoModelForSequenceClassification` with one output, initialised from
  the policy checkpoint (or `ppo.value_model`, e.g. the reward model, as TRL does); V(s_t) is its
  output at the position that predicts token t. Separate weights keep the value loss from pulling
  on the policy; the cost is a second model in memory. It is saved beside the policy in
  run_dir/value_model (an HF directory: `load_scalar_model` or AutoModelForSequenceClassification
  loads it), so `ppo.value_model=RUN/value_model` starts a later run with a trained critic.
- Rewards are columns-aware functions like GRPO's; here every row column, `prompt` included, is
  passed, so `model:PATH` scores prompt + completion.

Simplifications: one completion per prompt; the old log-probs are the rollout engine's sampling
log-probs (same model, same temperature; the rollout tests check they equal a recomputation in
fp32; under bf16 autocast they are recomputed with a forward pass); the reward is not whitened or
clipped.

Sampling and scoring are GRPO's (r1kit/train/rollouts.py, groups of one); the run skeleton
(r1kit/train/run.py) gives LoRA on the policy (model.lora_r; the reference is then the base with
the adapters disabled; the value model is trained in full), checkpoints that resume exactly (the
value model, both optimizers and the KL controller included), the Ctrl-C / SIGTERM guard and
torchrun: each rank samples B / world_size prompts and whitens its own advantages.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from r1kit.algorithms import (
    AdaptiveKLController,
    FixedKLController,
    completion_logprobs,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    policy_loss,
    value_loss,
    whiten,
)
from r1kit.config import DataArgs, EvalArgs, ModelArgs, NonNegativeFloat, NonNegativeInt, OptimArgs, PositiveFloat, PositiveInt, Probability, RunArgs, SamplingArgs
from r1kit.data.stream import PromptStream
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_tokenizer, save_model, training_options
from r1kit.models.value_head import load_scalar_model, save_scalar_model, token_scalars
from r1kit.report.logger import console
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
class PPOArgs:
    """The algorithm (defaults follow TRL's PPOTrainer)."""

    steps: PositiveInt = 100
    """Rollout-and-update steps."""
    prompts_per_step: PositiveInt = 16
    """B: prompts per step, one completion each (under torchrun, split among the ranks)."""
    ppo_epochs: PositiveInt = 4
    """Passes over each batch of rollouts."""
    mini_batches: PositiveInt = 4
    """Optimizer steps per pass: the batch is split into this many mini-batches (sizes within one row)."""
    micro_batch_rows: NonNegativeInt = 0
    """Rows per forward/backward pass; 0: a whole mini-batch. A mini-batch's gradients (policy and
    value model) are accumulated over passes of at most this many rows, each weighted by its share
    of the mini-batch's tokens, before its one optimizer step: the same update in less memory."""
    gamma: Probability = 1.0
    """Discount of GAE (1: the score at the end counts fully at every token)."""
    lam: Probability = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    cliprange: PositiveFloat = 0.2
    """Policy ratio clip epsilon."""
    cliprange_value: NonNegativeFloat = 0.2
    """Value clip: new values stay within this of the rollout-time values (0 disables)."""
    kl_coef: NonNegativeFloat = 0.05
    """beta: weight of the per-token KL penalty in the reward (InstructGPT: 0.02)."""
    adaptive_kl: bool = False
    """Adapt beta towards kl_target (Ziegler et al. 2019)."""
    kl_target: PositiveFloat = 6.0
    """Target KL(pi || ref) per sequence in nats, for adaptive_kl."""
    kl_horizon: PositiveInt = 10000
    """Horizon (in samples) of the adaptive controller."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch's tokens."""
    value_model: str = ""
    """Initial weights of the value model: empty = the policy checkpoint; a reward model works too."""
    value_lr: NonNegativeFloat = 0.0
    """Learning rate of the value model (0 = optim.lr)."""


@dataclass
class PPOConfig:
    """PPO training."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The policy (and, frozen, the reference; the value model starts from it too)."""
    data: DataArgs = field(default_factory=DataArgs)
    """Prompts and gold answers."""
    rewards: list[Any] = field(default_factory=list)
    """Sequence score: reward names, dotted paths, `model:PATH` or {name, weight, kwargs}; empty = the task's reward."""
    reward_failure_steps: int = 3
    """Stop the run (saving its checkpoint first) when a reward function raised on every row of this many steps in a row (0: never)."""
    ppo: PPOArgs = field(default_factory=PPOArgs)
    """The algorithm."""
    sampling: SamplingArgs = field(default_factory=SamplingArgs)
    """Rollout sampling."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-6, warmup_steps=0, schedule="constant"))
    """Optimiser of the policy (and of the value model, with ppo.value_lr)."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation on the test split (every run.eval_every steps and at the end)."""
    eval_before: bool = True
    """Evaluate the starting model too."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for rollouts and the forward passes of policy, reference and value model
    (weights and optimizers stay fp32); auto = bf16 on a CUDA device that supports it, else fp32."""


def train(config: PPOConfig) -> Path:
    """Run PPO; returns the run directory (the policy in run_dir/model, the value model in run_dir/value_model)."""
    p = config.ppo
    with Run(config, "ppo") as run:
        dist_.rank_rows(p.prompts_per_step, 1, p.mini_batches, run.dist, "ppo")  # B must divide by the number of processes
        tokenizer = load_tokenizer(config.model.path)
        composer, process = build_rewards(list(config.rewards) or [config.data.builtin_task or "math"], config.data, str(run.device), failure_steps=config.reward_failure_steps)  # `prm:PATH`: step rewards
        model = run.policy(config.model)
        ref = run.frozen(reference_model(model, config.model, run.checkpoint))  # a copy (sharded under fsdp), or the base under LoRA
        value_path = run.weights("value_model") or p.value_model or config.model.path
        value_model = training_options(load_scalar_model(str(value_path), tokenizer.pad_token_id, config.model.dtype, str(run.device)), config.model)
        rows, truncate_to, skipped_long = fit_prompts(config.data, load_prompts(config.data), tokenizer, config.sampling.max_new_tokens, model, "ppo")
        evaluator = fit_held_out(Evaluator.for_data(tokenizer, config.data, config.eval, config.run.rollout_processes), config.data, config.eval.max_new_tokens, tokenizer, model, "ppo")
        run_dir = run.create()
        run.tokenizer = tokenizer
        learners = run.learner(model), run.learner(value_model, "value_model")
        engine = run.rollout_engine(model, tokenizer)  # generation runs on the plain module, the update through DDP
        updates = p.steps * p.ppo_epochs * p.mini_batches
        opt, sched = run.optimizer(model.parameters(), config.optim, updates)
        v_opt, v_sched = run.optimizer(value_model.parameters(), _value_optim(config), updates, name="value")
        kl_ctl = AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl else FixedKLController(p.kl_coef)
        stream = PromptStream(rows, config.run.seed)
        run.track(stream=stream, kl_ctl=kl_ctl)
        run.evaluate_before((lambda: evaluator(model)) if config.eval_before else None)
        if run.is_main:
            console.print(f"ppo: {len(rows)} prompts, B={p.prompts_per_step}, {p.ppo_epochs} epochs x {p.mini_batches} mini-batches, beta={p.kl_coef}, rewards {composer.names}")

        with run.loop(p.steps, evaluate=lambda: evaluator(model), line_keys=("reward/mean", "objective/kl", "vf/explained_var", "eval/pass@1")) as loop:
            for step in loop:
                batch, scores, metrics, step_rows = collect(
                    engine, tokenizer, composer, stream, step, prompts=p.prompts_per_step, group_size=1, sampling=config.sampling,
                    data=config.data, seed=config.run.seed, precision=config.precision, dist=run.dist, truncate_to=truncate_to,
                )  # fmt: skip
                steps = process.steps(batch, step_rows, metrics, tokenizer) if process else None
                metrics["perf/rollout_s"] = time.perf_counter() - loop.step_start
                with loop.guard:  # Ctrl-C waits until the step is complete and consistent
                    scores = torch.nan_to_num(scores, nan=0.0)  # a None score counts 0
                    metrics.update(update(config, learners, ref, (opt, v_opt), (sched, v_sched), batch, scores, kl_ctl, run.dist, steps))
                    engine.sync_weights(model)
                    kl_ctl.update(dist_.sum_float(metrics["objective/kl"], run.dist) / run.dist.world_size, p.prompts_per_step)
                    metrics["data/skipped_long_prompts"] = skipped_long
                    loop.end_step(step, metrics, tokens=int(batch.completion_mask.sum()))

        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
            save_scalar_model(value_model, tokenizer, run_dir / "value_model")
        samples = run.evaluate_after(lambda out: evaluator(model, out), p.steps)
        if run.is_main:
            run.write_results(samples)
            before = f"{run.results['before'].get('pass@1', float('nan')):.3f} -> " if "before" in run.results else ""
            console.print(f"ppo done: pass@1 {before}{run.results['after'].get('pass@1', float('nan')):.3f}; run {run_dir}")
    return run_dir


def _value_optim(config: PPOConfig) -> OptimArgs:
    return dataclasses.replace(config.optim, lr=config.ppo.value_lr or config.optim.lr)


# --------------------------------------------------------------------------------------------
# Rewards and update


def token_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's per-token reward: -beta * KL_t on every token, plus the score on the last one.

    logp, ref_logp  # [B, T] log-probs of the sampled tokens under the policy and the reference
    mask            # [B, T] 1 on completion tokens (right-padded)
    scores          # [B] sequence score (reward model or rule reward)
    Returns (rewards [B, T], kl [B, T]), both 0 at padding; kl is the k1 estimate log pi - log ref.
    """
    m = mask.to(logp.dtype)
    kl = kl_estimate(logp, ref_logp, "k1") * m
    rewards = -kl_coef * kl
    last = (m.sum(dim=1).long() - 1).clamp(min=0)  # index of the last real token
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards, kl


# --------------------------------------------------------------------------------------------
# Update


def values_of(value_model, batch: RolloutBatch) -> torch.Tensor:
    """V(s_t) [B, C]: the value head at the position that predicts completion token t."""
    P, C = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return token_scalars(value_model, batch.input_ids, batch.attention_mask)[:, P - 1 : P + C - 1]


def update(config: PPOConfig, learners, ref, opts, scheds, batch: RolloutBatch, scores: torch.Tensor, kl_ctl, dist: Dist = SINGLE,
           steps: StepRewards | None = None) -> dict[str, float]:  # fmt: skip
    """Advantages from the rollout, then ppo_epochs passes of mini-batch updates; averaged metrics.
    `learners` are (policy, value model), DDP-wrapped under torchrun; `steps`: a PRM's step rewards."""
    p = config.ppo
    model, value_model = learners
    device = next(model.parameters()).device
    batch, scores = batch.to(device), scores.to(device)
    ids, attn, C = batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1]
    mask = batch.completion_mask.float()  # [B, C]
    temperature = config.sampling.temperature or 1.0
    old_logp = batch.logprobs  # [B, C] sampling log-probs (= a recomputation; see the docstring)
    chunked = config.model.chunked_lm_head
    with torch.no_grad(), autocast(device, config.precision):
        ref_logp = completion_logprobs(ref, ids, attn, C, temperature, chunked_head=chunked)
        old_values = values_of(value_model, batch).float()
        if uses_bf16(device, config.precision):  # the cached decode rounds differently in bf16: recompute
            old_logp = completion_logprobs(model, ids, attn, C, temperature, chunked_head=chunked)
    rewards, kl = token_rewards(old_logp, ref_logp, mask, scores, kl_ctl.value)
    if steps is not None:  # each step's PRM score on the token ending it
        rewards = rewards + steps.token_rewards().to(device, rewards.dtype)
    adv, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = whiten(adv, mask)
    metrics = {
        "objective/kl": float(kl.sum(1).mean()),
        "objective/non_score_reward": float(-kl_ctl.value * kl.sum(1).mean()),
        "objective/rlhf_reward": float(rewards.sum(1).mean()),
        "returns/mean": float(masked_mean(returns, mask)),
        "values/mean": float(masked_mean(old_values, mask)),
        "vf/explained_var": explained_variance(old_values, returns, mask),
        "kl_coef": kl_ctl.value,
    }
    sums: dict[str, float] = {}
    count = 0
    model.train()
    value_model.train()
    for _ in range(p.ppo_epochs):
        for rows in mini_batches(len(batch), p.mini_batches):
            m, finite = mini_batch_backward(config, learners, batch, rows, old_logp, old_values, adv, returns, mask, dist)
            grad_norm, lr = optimizer_step(model, opts[0], scheds[0], config.optim.max_grad_norm, finite)
            v_grad_norm, _ = optimizer_step(value_model, opts[1], scheds[1], config.optim.max_grad_norm, finite)
            for k, v in {**m, "grad_norm": grad_norm, "grad_norm_value": v_grad_norm, "lr": lr}.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    metrics.update({k: v / count for k, v in sums.items()})
    return metrics


def mini_batch_backward(config: PPOConfig, learners, batch: RolloutBatch, rows, old_logp, old_values, adv, returns, mask, dist: Dist) -> tuple[dict[str, float], bool]:
    """Backward of one mini-batch's clipped policy loss plus clipped value loss (both token means;
    separate models, so each loss reaches its own weights only), micro-batch by micro-batch
    (ppo.micro_batch_rows), each weighted by its share of the mini-batch's tokens. Returns the
    mini-batch's metrics and whether every loss was finite."""
    p = config.ppo
    model, value_model = learners
    P, C = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    tokens = float(mask[rows].sum())
    scale = dist_.token_mean_scale(tokens, dist)
    pieces = row_pieces(rows, p.micro_batch_rows)
    metrics: dict[str, float] = {}

    def loss_of(piece: torch.Tensor) -> torch.Tensor:
        ids, attn, m = batch.input_ids[piece], batch.attention_mask[piece], mask[piece]
        with autocast(ids.device, config.precision):
            logp, entropy = completion_logprobs(model, ids, attn, C, config.sampling.temperature or 1.0, with_entropy=True, chunked_head=config.model.chunked_lm_head)
            values = token_scalars(value_model, ids, attn)[:, P - 1 : P + C - 1].float()
        pg_loss, pm = policy_loss(logp, old_logp[piece], adv[piece], m, eps_low=p.cliprange, loss_agg="token_mean")
        vf_loss, vm = value_loss(values, old_values[piece], returns[piece], m, p.cliprange_value or None)
        share = (float(m.sum()) / tokens if tokens > 0 else 0.0) if len(pieces) > 1 else 1.0
        log_ratio = (logp - old_logp[piece]).detach()
        pm.update(vm)
        pm.update({
            "loss/policy": float(pg_loss.detach()),
            "loss/value": float(vf_loss.detach()),
            "ppo/approx_kl": float(masked_mean(0.5 * log_ratio**2, m)),
            "entropy": float(masked_mean(entropy.detach(), m)),
        })  # fmt: skip
        for k, v in pm.items():
            metrics[k] = metrics.get(k, 0.0) + share * v
        return (pg_loss + vf_loss) * (share * scale)

    return metrics, backward_pieces(learners, pieces, loss_of, dist)
