"""Process supervision in GRPO and PPO: `rewards: ["prm:PATH"]` gives every reasoning step its own reward.

DeepSeekMath (Shao et al. 2024, section 4.1.3): a process reward model scores each step of each
of the G outputs; the step rewards are normalised over all steps of the group, and a token's
advantage is the sum of the normalised rewards of the steps that end at or after it
(`r1kit.algorithms.process_advantages`). Here a step ends at the token that completes its
separator (the one the PRM was trained with, read from its r1kit_prm.json) or at the last token.

PPO (group size 1) instead adds each step's reward to its last token's reward, before GAE, as
Math-Shepherd trains PPO step by step (`StepRewards.token_rewards`).

- `build_rewards(specs, data, device)`: the reward composer and, when a spec is `prm:PATH`,
  a `ProcessRewards`. The PRM stays in the composer with weight 0 (so `reward/prm/mean`, the
  weakest step's probability, is logged like any reward); the other rewards make the outcome
  reward, whose group advantage is added to every token of its completion, so `prm:PATH` alone
  is DeepSeekMath's process supervision and `prm:PATH` plus rule rewards is the two summed.
- `ProcessRewards.steps(batch, rows, metrics)`: the step rewards and step-end tokens of a rollout,
  and, so that reward hacking shows, the PRM's judgement next to the verifier's in the metrics:
  `prm/score` (mean weakest-step probability) vs `prm/verified_acc` (the task's verifier) and,
  where the task checks steps, `prm/step_score` vs `prm/step_verified`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from r1kit.algorithms import process_advantages
from r1kit.config import DataArgs
from r1kit.data.steps import step_end_tokens
from r1kit.data.tasks import get_task
from r1kit.errors import R1kitError
from r1kit.rewards.compose import RewardComposer, RewardSpec
from r1kit.rewards.prm import StepScorer
from r1kit.rewards.registry import PRM_PREFIX, get
from r1kit.rollout import RolloutBatch


@dataclass
class StepRewards:
    """The step rewards of one rollout batch, N rows of at most S steps."""

    rewards: torch.Tensor
    """[N, S] float: the PRM's probability that each step is right; NaN past a row's last step."""
    ends: torch.Tensor
    """[N, S] long: the completion token that ends each step."""
    num_tokens: int
    """C, the batch's completion length."""
    weight: float = 1.0
    """The `prm:PATH` spec's weight: the process advantages are scaled by it."""

    def token_rewards(self) -> torch.Tensor:
        """[N, C]: weight x each step's reward on the token that ends it, 0 elsewhere (PPO's
        per-token rewards with a PRM, as Math-Shepherd trains PPO step by step)."""
        valid = ~torch.isnan(self.rewards)
        out = torch.zeros(self.rewards.shape[0], self.num_tokens + 1, dtype=self.rewards.dtype)
        ends = torch.where(valid, self.ends.clamp(0, self.num_tokens - 1), torch.full_like(self.ends, self.num_tokens))
        out.scatter_add_(1, ends, torch.where(valid, self.weight * self.rewards, torch.zeros_like(self.rewards)))
        return out[:, : self.num_tokens]

    def token_advantages(self, outcome: torch.Tensor, group_size: int) -> torch.Tensor:
        """[N, C]: the outcome advantage [N] on every token plus weight x the process advantages."""
        process = process_advantages(self.rewards, self.ends, self.num_tokens, group_size)
        return outcome.to(process.dtype).unsqueeze(1) + self.weight * process


class ProcessRewards:
    """A PRM scoring the steps of rollouts, with the verifier's view alongside for the logs."""

    def __init__(self, scorer: StepScorer, data: DataArgs, weight: float = 1.0):
        self.scorer, self.weight = scorer, weight
        # The verifier evaluation uses (r1kit/eval/scoring.py): the task's own, else `math`.
        task = get_task(data.builtin_task, **data.task_params) if data.builtin_task and not data.test_path else None
        self.verify = task.reward if task is not None else get("math")
        self.check_steps = getattr(task, "check_steps", None) if not data.path else None

    def outcome(self, completions: Sequence[Any], prompt: Sequence[Any] | None = None, **columns: Any) -> list[float | None]:
        """The weakest step's probability (the composer logs it as `reward/prm/mean`)."""
        probs = self.scorer.score(prompt, completions)
        return [min(p) if p else None for p in probs]

    def steps(self, batch: RolloutBatch, rows: Sequence[dict[str, Any]], metrics: dict[str, float], tokenizer) -> StepRewards:
        """Step rewards and step-end tokens of `batch` (rows: its prompt rows, one per group);
        adds the PRM-vs-verifier metrics to `metrics`."""
        G, texts = batch.group_size, list(batch.texts or [])
        prompts = [rows[i // G]["prompt"] for i in range(len(batch))]
        probs = self.scorer.score(prompts, texts)
        ends = []
        for i in range(len(batch)):
            ids = batch.completion_ids[i][batch.completion_mask[i].bool()].tolist()
            pieces = tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=True)
            ends.append(step_end_tokens(pieces, self.scorer.separator))
        # The PRM splits the decoded text, the ends come from the tokens; where the two disagree
        # (a tokenizer whose pieces do not concatenate to the text) the shorter list wins.
        S = max([min(len(p), len(e)) for p, e in zip(probs, ends)] + [1])
        rewards = torch.full((len(batch), S), math.nan)
        end_t = torch.zeros((len(batch), S), dtype=torch.long)
        for i, (p, e) in enumerate(zip(probs, ends)):
            k = min(len(p), len(e))
            rewards[i, :k], end_t[i, :k] = torch.tensor(p[:k]), torch.tensor(e[:k], dtype=torch.long)
        metrics.update(self._judgement(texts, prompts, rows, probs, G))
        return StepRewards(rewards, end_t, batch.completion_ids.shape[1], self.weight)

    def _judgement(self, texts, prompts, rows, probs, G) -> dict[str, float]:
        answers = [rows[i // G].get("answer") for i in range(len(texts))]
        verified = [s is not None and s >= 1.0 for s in self.verify(texts, answer=answers)]
        out = {
            "prm/score": _mean([min(p) for p in probs if p]),
            "prm/verified_acc": _mean([float(v) for v in verified]),
            "prm/step_score": _mean([x for p in probs for x in p]),
            "prm/steps_mean": _mean([float(len(p)) for p in probs]),
        }
        if self.check_steps is not None:
            steps = self.scorer.steps(texts)
            out["prm/step_verified"] = _mean([float(ok) for s, q, a in zip(steps, prompts, answers) for ok in self.check_steps(s, q, a)])
        out["prm/score_minus_verified"] = out["prm/score"] - out["prm/verified_acc"]
        return out


def build_rewards(specs: Sequence[Any], data: DataArgs, device: str = "auto", dynamic_sampling: bool = False,
                  failure_steps: int = 3) -> tuple[RewardComposer, ProcessRewards | None]:  # fmt: skip
    """The outcome reward composer (stopping the run after `failure_steps` steps on which a function
    failed every row) and the process rewards of a GRPO reward list (see the module docstring); at
    most one `prm:PATH`."""
    prm = [s for s in specs if _prm_path(s)]
    if len(prm) > 1:
        raise R1kitError(f"rewards list {len(prm)} process reward models; keep one `prm:PATH` entry")
    if not prm:
        return RewardComposer(specs, failure_steps), None
    if dynamic_sampling:
        raise R1kitError("grpo.dynamic_sampling keeps groups by their outcome rewards, which do not hold a `prm:PATH` reward's step rewards; set grpo.dynamic_sampling=false")
    spec = prm[0]
    weight = float(spec.get("weight", 1.0)) if isinstance(spec, dict) else 1.0
    if isinstance(spec, dict) and spec.get("kwargs"):
        raise R1kitError(f"reward {spec['name']!r} takes no kwargs (got {spec['kwargs']!r}); remove them")
    process = ProcessRewards(StepScorer.load(_prm_path(spec), device), data, weight)
    composer = RewardComposer([process.outcome] + [s for s in specs if not _prm_path(s)], failure_steps)
    composer.specs[0] = RewardSpec("prm", process.outcome, 0.0)  # logged, but the steps carry its signal
    return composer, process


def _prm_path(spec: Any) -> str:
    name = spec.get("name", "") if isinstance(spec, dict) else spec if isinstance(spec, str) else ""
    return name[len(PRM_PREFIX) :] if isinstance(name, str) and name.startswith(PRM_PREFIX) else ""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
