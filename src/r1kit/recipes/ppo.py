"""PPO for language models as in InstructGPT (Ouyang et al. 2022), after Ziegler et al. 2019 and
TRL's PPOTrainer: a policy, a frozen reference, a value model, GAE over per-token rewards.

    build (policy, reference, value model) -> loop:
        B prompts -> one completion each (rollout engine) -> sequence score (rule rewards or model:PATH)
        -> per-token rewards r_t = -beta * KL_t (+ score on the last token)
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
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from r1kit import accel
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
from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, RunArgs
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.eval.evaluate import evaluate
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_tokenizer, load_trainable, resolve_device, save_model, training_options
from r1kit.models.value_head import load_scalar_model, save_scalar_model, token_scalars
from r1kit.recipes.grpo import PromptStream, SamplingArgs
from r1kit.report.logger import MetricLogger, console, format_line
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import RolloutBatch, RolloutEngine, SamplingParams
from r1kit.train.optim import build_optimizer, build_scheduler, optimizer_step
from r1kit.train.precision import autocast, uses_bf16
from r1kit.train.progress import progress_bar
from r1kit.train.run import create_run


@dataclass
class PPOArgs:
    """The algorithm (defaults follow TRL's PPOTrainer)."""

    steps: int = 100
    """Rollout-and-update steps."""
    prompts_per_step: int = 16
    """B: prompts per step, one completion each."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts."""
    mini_batches: int = 4
    """Optimizer steps per pass: the batch is split into this many mini-batches."""
    gamma: float = 1.0
    """Discount of GAE (1: the score at the end counts fully at every token)."""
    lam: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    cliprange: float = 0.2
    """Policy ratio clip epsilon."""
    cliprange_value: float = 0.2
    """Value clip: new values stay within this of the rollout-time values (0 disables)."""
    kl_coef: float = 0.05
    """beta: weight of the per-token KL penalty in the reward (InstructGPT: 0.02)."""
    adaptive_kl: bool = False
    """Adapt beta towards kl_target (Ziegler et al. 2019)."""
    kl_target: float = 6.0
    """Target KL(pi || ref) per sequence in nats, for adaptive_kl."""
    kl_horizon: int = 10000
    """Horizon (in samples) of the adaptive controller."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch's tokens."""
    value_model: str = ""
    """Initial weights of the value model: empty = the policy checkpoint; a reward model works too."""
    value_lr: float = 0.0
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
    device = resolve_device(config.model.device)
    run_dir = create_run(config, "ppo", str(device))
    tokenizer = load_tokenizer(config.model.path)
    model = accel.apply(load_trainable(config.model), device, config.run.accel)
    ref = _frozen_copy(model)
    value_model = accel.apply(training_options(load_scalar_model(p.value_model or config.model.path, tokenizer.pad_token_id, config.model.dtype, config.model.device), config.model), device, config.run.accel)
    engine = accel.rollout_engine(model, tokenizer, processes=config.run.rollout_processes)
    composer = RewardComposer(list(config.rewards) or [config.data.task or "math"])
    rows = load_split(config.data, "train", required=("prompt",))
    test_rows = load_split(config.data, "test")
    score, extract = scorer_for(config.data)
    stream = PromptStream(rows, config.run.seed)
    updates = p.steps * p.ppo_epochs * p.mini_batches
    opt, v_opt = build_optimizer(model.parameters(), config.optim), build_optimizer(value_model.parameters(), _value_optim(config))
    sched, v_sched = build_scheduler(opt, config.optim, updates), build_scheduler(v_opt, _value_optim(config), updates)
    kl_ctl = AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl else FixedKLController(p.kl_coef)
    logger = MetricLogger(run_dir, config.run.tensorboard)

    def run_eval() -> dict[str, float]:
        return evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, processes=config.run.rollout_processes)

    results: dict[str, Any] = {}
    if config.eval_before:
        results["before"] = run_eval()
        logger.log({f"eval/{k}": v for k, v in results["before"].items()}, 0)
    console.print(f"ppo: {len(rows)} prompts, B={p.prompts_per_step}, {p.ppo_epochs} epochs x {p.mini_batches} mini-batches, beta={p.kl_coef}, rewards {composer.names}")
    with progress_bar("ppo", p.steps, config.run.progress) as bar:
        for step in range(1, p.steps + 1):
            t0 = time.perf_counter()
            batch, scores, metrics = rollout(config, engine, tokenizer, composer, stream, step)
            t_rollout = time.perf_counter() - t0
            metrics.update(update(config, model, ref, value_model, (opt, v_opt), (sched, v_sched), batch, scores, kl_ctl))
            engine.sync_weights(model)
            kl_ctl.update(metrics["objective/kl"], len(batch))
            dt = time.perf_counter() - t0
            metrics.update({"perf/step_s": dt, "perf/rollout_s": t_rollout, "perf/tokens_per_s": int(batch.completion_mask.sum()) / dt})
            if config.run.eval_every and step % config.run.eval_every == 0 and step != p.steps:
                metrics.update({f"eval/{k}": v for k, v in run_eval().items()})
            if step % config.run.log_every == 0 or step == p.steps:
                logger.log(metrics, step)
            bar.advance(1, info=f"reward {metrics.get('reward/mean', float('nan')):.3f}")
            if not config.run.progress and step % max(1, config.run.log_every) == 0:
                console.print(format_line(step, metrics, ("reward/mean", "objective/kl", "vf/explained_var", "eval/pass@1")))
    samples: list[dict] = []
    results["after"] = evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, samples_out=samples, processes=config.run.rollout_processes)
    logger.log({f"eval/{k}": v for k, v in results["after"].items()}, p.steps)
    logger.close()
    save_model(model, tokenizer, run_dir / "model")
    save_scalar_model(value_model, tokenizer, run_dir / "value_model")
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples[:50]))
    before = f"{results['before'].get('pass@1', float('nan')):.3f} -> " if "before" in results else ""
    console.print(f"ppo done: pass@1 {before}{results['after'].get('pass@1', float('nan')):.3f}; run {run_dir}")
    return run_dir


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model)
    ref.eval()
    for q in ref.parameters():
        q.requires_grad_(False)
    return ref


def _value_optim(config: PPOConfig) -> OptimArgs:
    return dataclasses.replace(config.optim, lr=config.ppo.value_lr or config.optim.lr)


# --------------------------------------------------------------------------------------------
# Rollout and rewards


def rollout(config: PPOConfig, engine: RolloutEngine, tokenizer, composer: RewardComposer, stream: PromptStream, step: int):
    """B prompts, one completion each; returns the batch, the sequence scores [B] and metrics."""
    s = config.sampling
    rows = stream.take(config.ppo.prompts_per_step)
    prompts = [render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt) for r in rows]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
    params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens, stop=list(s.stop), n=1, seed=config.run.seed * 1_000_003 + step * 7919)
    with autocast(engine.device, config.precision):
        batch = engine.generate(ids, params)
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}  # `prompt` included: model:PATH scores prompt + completion
    columns["completion_lengths"] = batch.completion_lengths.tolist()
    result = composer(batch.texts, columns)
    scores = torch.tensor([0.0 if t is None else t for t in result.total], dtype=torch.float32)  # None scores 0
    lengths = batch.completion_lengths.float()
    metrics = dict(result.metrics)
    metrics.update({
        "reward/none_frac": sum(t is None for t in result.total) / len(rows),
        "completion/length_mean": float(lengths.mean()),
        "completion/truncated_frac": sum(r == "length" for r in batch.finish_reason) / len(rows),
    })  # fmt: skip
    return batch, scores, metrics


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


def update(config: PPOConfig, model, ref, value_model, opts, scheds, batch: RolloutBatch, scores: torch.Tensor, kl_ctl) -> dict[str, float]:
    """Advantages from the rollout, then ppo_epochs passes of mini-batch updates; averaged metrics."""
    p = config.ppo
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
    adv, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = whiten(adv, mask)
    metrics = {
        "objective/kl": float(kl.sum(1).mean()),
        "objective/non_score_reward": float(rewards.sum(1).mean() - scores.mean()),
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
        for chunk in torch.randperm(len(batch)).chunk(p.mini_batches):
            m = mini_batch_step(config, model, value_model, opts, scheds, batch, chunk, old_logp, old_values, adv, returns, mask, temperature)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    metrics.update({k: v / count for k, v in sums.items()})
    return metrics


def mini_batch_step(config, model, value_model, opts, scheds, batch, chunk, old_logp, old_values, adv, returns, mask, temperature) -> dict[str, float]:
    """One optimizer step of the policy (clipped surrogate) and the value model (clipped value loss)."""
    p = config.ppo
    P, C = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    ids, attn, m = batch.input_ids[chunk], batch.attention_mask[chunk], mask[chunk]
    with autocast(batch.input_ids.device, config.precision):
        logp, entropy = completion_logprobs(model, ids, attn, C, temperature, with_entropy=True, chunked_head=config.model.chunked_lm_head)
        values = token_scalars(value_model, ids, attn)[:, P - 1 : P + C - 1].float()
    pg_loss, metrics = policy_loss(logp, old_logp[chunk], adv[chunk], m, eps_low=p.cliprange, loss_agg="token_mean")
    vf_loss, v_metrics = value_loss(values, old_values[chunk], returns[chunk], m, p.cliprange_value or None)
    (pg_loss + vf_loss).backward()  # separate models: each loss reaches its own weights only
    grad_norm, lr = optimizer_step(model, opts[0], scheds[0], config.optim.max_grad_norm)
    v_grad_norm, _ = optimizer_step(value_model, opts[1], scheds[1], config.optim.max_grad_norm)
    log_ratio = (logp - old_logp[chunk]).detach()
    metrics.update(v_metrics)
    metrics.update({
        "loss/policy": float(pg_loss.detach()),
        "loss/value": float(vf_loss.detach()),
        "ppo/approx_kl": float(masked_mean(0.5 * log_ratio**2, m)),
        "entropy": float(masked_mean(entropy.detach(), m)),
        "grad_norm": grad_norm,
        "grad_norm_value": v_grad_norm,
        "lr": lr,
    })  # fmt: skip
    return metrics
