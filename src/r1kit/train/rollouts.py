"""The rollout -> reward half of an RL step (GRPO, PPO): prompts in, scored completions out.

- `load_prompts` / `fit_prompts`: the training prompts, with data.max_prompt_tokens and
  data.long_prompts applied (skip, truncate from the left, or refuse prompts too long for the
  model's context once max_new_tokens are added).
- `collect`: a step's prompts -> G completions each from the rollout engine -> the reward
  composer's total per completion (NaN where every reward function gave None), refilling groups
  with no reward spread when DAPO's dynamic sampling asks for it. The rows of a group are
  adjacent and `RolloutBatch.concat` keeps one prompt index per group across sampling rounds.

Under torchrun every rank takes the step's rows from its identical stream and keeps its own
consecutive slice, so the streams never drift apart; the sampling seed mixes the run's seed, the
step, the rank and the sampling round, so a resumed run samples what the uninterrupted one did.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from r1kit.config import DataArgs, SamplingArgs
from r1kit.data.source import TEXT, load_split, read_split
from r1kit.data.stream import PromptStream
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.report.logger import console
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import RolloutBatch, RolloutEngine, SamplingParams
from r1kit.train import distributed as dist_
from r1kit.train.distributed import SINGLE, Dist
from r1kit.train.precision import autocast

Row = dict[str, Any]


def load_prompts(data: DataArgs) -> list[Row]:
    """Training rows; from the user's data, a `prompt` that is neither text nor chat messages is
    an error naming its line."""
    if data.path:
        return read_split(data, "train", required={"prompt": TEXT})
    return load_split(data, "train", required=("prompt",))


def fit_prompts(data: DataArgs, rows: list[Row], tokenizer, max_new_tokens: int, model, who: str, split: str = "training",
                new_tokens_key: str = "sampling.max_new_tokens") -> tuple[list[Row], int, int]:  # fmt: skip
    """Apply data.max_prompt_tokens and data.long_prompts to the rows of `split`.

    Returns (rows, the length `collect` truncates prompts to (0 = none), how many were skipped).
    The limit is the model's context minus max_new_tokens (`new_tokens_key` names that setting),
    or data.max_prompt_tokens when that is smaller; `who` names the recipe in the message about
    skipped prompts.
    """
    context = getattr(model.config, "max_position_embeddings", None) or 0
    room = context - max_new_tokens if context else 0
    if context and room < 1:
        raise R1kitError(f"{new_tokens_key}={max_new_tokens} leaves no room for a prompt in the model's context of {context} tokens; lower it")
    limit = min(x for x in (data.max_prompt_tokens, room) if x) if data.max_prompt_tokens or room else 0
    if not limit:
        return rows, 0, 0
    texts = [render_prompt(r["prompt"], data.template, tokenizer, data.system_prompt) for r in rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > limit]
    if data.long_prompts == "truncate":
        return rows, limit, 0
    if not long:
        return rows, 0, 0
    if data.long_prompts == "error":
        raise R1kitError(
            f"{len(long)} of {len(rows)} {split} prompts are longer than {limit} tokens (the first is row {long[0]}, {lengths[long[0]]} tokens); "
            "set data.long_prompts=skip or truncate, or raise data.max_prompt_tokens"
        )
    dropped = set(long)
    kept = [r for i, r in enumerate(rows) if i not in dropped]
    if not kept:
        raise R1kitError(f"every {split} prompt is longer than {limit} tokens; raise data.max_prompt_tokens or set data.long_prompts=truncate")
    console.print(f"{who}: skipping {len(long)} of {len(rows)} {split} prompts longer than {limit} tokens (data.long_prompts=skip)")
    return kept, 0, len(long)


def fit_held_out(evaluator, data: DataArgs, max_new_tokens: int, tokenizer, model, who: str):
    """`evaluator` (r1kit.eval.Evaluator) with its held-out prompts fitted by data.long_prompts as
    `fit_prompts` fits the training ones, for answers of up to max_new_tokens (eval.max_new_tokens):
    truncated alike, skipped alike, or refused before training starts."""
    rows, evaluator.truncate_to, _ = fit_prompts(data, list(evaluator.rows), tokenizer, max_new_tokens, model, who, "held-out", "eval.max_new_tokens")
    evaluator.rows = rows
    return evaluator


def collect(
    engine: RolloutEngine,
    tokenizer,
    composer: RewardComposer,
    stream: PromptStream,
    step: int,
    *,
    prompts: int,
    group_size: int,
    sampling: SamplingArgs,
    data: DataArgs,
    seed: int,
    precision: str = "auto",
    dist: Dist = SINGLE,
    truncate_to: int = 0,
    dynamic_sampling: bool = False,
    max_resample: int = 0,
) -> tuple[RolloutBatch, torch.Tensor, dict[str, float], list[Row]]:
    """Sample this rank's prompts / world_size groups of `group_size` completions; returns the
    kept batch, its total rewards [N] (NaN = None), the step's metrics and the prompt rows.

    `dynamic_sampling` (DAPO) drops groups whose rewards are all equal and samples more prompts,
    at most `max_resample` more rounds; `truncate_to` > 0 keeps only a prompt's last that many
    tokens (data.long_prompts=truncate).
    """
    base_seed = seed * 1_000_003 + step * 7919 + (dist.rank << 40)
    kept: list[tuple[RolloutBatch, torch.Tensor, list[Row]]] = []
    need, rounds, metrics, dropped, sampled = prompts // dist.world_size, 0, {}, 0, 0
    while (most := dist_.max_int(need, dist)) > 0:
        rows = stream.take(most * dist.world_size)[dist.rank * most :][:need]
        if not rows:  # this rank is full; it keeps taking rows so its stream stays in step
            rounds += 1
            if rounds > max_resample:
                break
            continue
        ids = [tokenizer(render_prompt(r["prompt"], data.template, tokenizer, data.system_prompt), add_special_tokens=False)["input_ids"] for r in rows]
        if truncate_to:
            ids = [x[-truncate_to:] for x in ids]
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens,
                                stop=list(sampling.stop), n=group_size, seed=base_seed + rounds)  # fmt: skip
        with autocast(engine.device, precision):
            batch = engine.generate(ids, params)
        total, result_metrics = score(composer, batch, rows, group_size)
        if rounds == 0:
            metrics.update(result_metrics)
            metrics.update(rollout_metrics(batch, total, group_size))
        sampled += len(rows)
        keep = list(range(len(rows)))
        if dynamic_sampling:
            keep = [i for i in keep if has_signal(total.view(-1, group_size)[i])]
            dropped += len(rows) - len(keep)
            if rounds >= max_resample and not keep and not kept:
                keep = list(range(len(rows)))  # nothing informative found: train on what we have
        if keep:
            kept.append(select_groups(batch, total, rows, keep, group_size))
        need -= len(keep)
        rounds += 1
        if rounds > max_resample:
            break
    if dynamic_sampling:
        metrics.update({"dynamic/dropped_groups": dropped, "dynamic/sampled_prompts": sampled})
    batch = RolloutBatch.concat([b for b, _, _ in kept])  # prompt_index: one index per group, across rounds
    return batch, torch.cat([t for _, t, _ in kept]), metrics, [r for _, _, rows in kept for r in rows]


def score(composer: RewardComposer, batch: RolloutBatch, rows: list[Row], group_size: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Total reward of every completion [N] (NaN where every function gave None) and the
    composer's metrics. Every row column is passed, `prompt` too: reward models score prompt +
    completion."""
    columns = {k: [r.get(k) for r in rows for _ in range(group_size)] for k in rows[0]}
    columns["completion_lengths"] = batch.completion_lengths.tolist()
    result = composer(batch.texts, columns)
    return torch.tensor([math.nan if t is None else t for t in result.total], dtype=torch.float32), result.metrics


def has_signal(group_rewards: torch.Tensor) -> bool:
    """Whether a group's valid (non-NaN) rewards differ, so its advantages are not all zero."""
    valid = group_rewards[~torch.isnan(group_rewards)]
    return valid.numel() >= 2 and bool((valid != valid[0]).any())


def rollout_metrics(batch: RolloutBatch, total: torch.Tensor, group_size: int) -> dict[str, float]:
    """Reward spread, the share of None rewards, completion lengths and truncation of one rollout
    (`reward/zero_std_frac`: groups without spread, for groups of more than one)."""
    lengths = batch.completion_lengths.float()
    valid = total[~torch.isnan(total)]
    out = {
        "reward/std": float(valid.std()) if valid.numel() > 1 else 0.0,
        "reward/none_frac": 1.0 - valid.numel() / total.numel(),
        "completion/length_mean": float(lengths.mean()),
        "completion/length_max": float(lengths.max()),
        "completion/truncated_frac": sum(r == "length" for r in batch.finish_reason) / len(batch),
    }
    if group_size > 1:
        zero_std = [not has_signal(row) for row in total.view(-1, group_size)]
        out["reward/zero_std_frac"] = sum(zero_std) / len(zero_std)
    return out


def select_groups(batch: RolloutBatch, total: torch.Tensor, rows: list[Row], keep: list[int], G: int) -> tuple[RolloutBatch, torch.Tensor, list[Row]]:
    """The groups `keep` (prompt indices) of a rollout: their rows, rewards and prompt rows."""
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
