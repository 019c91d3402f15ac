"""A process reward model: a probability that each step of a solution is right.

The model is a scalar-head `AutoModelForSequenceClassification` (r1kit/models/value_head.py) whose
output at the token ending a step (the separator's last token, r1kit/data/steps.py) is the logit of
"this step is right". `r1kit prm` trains one and writes `r1kit_prm.json` beside the weights with
the step separator and the prompt template, which scoring needs to lay solutions out as training
did.

- `StepScorer.load(path)` / `scorer.score(prompts, completions)`: each completion split into steps
  and scored, one probability per step (`score_steps` for solutions already split).
- `load_prm_reward_fn(path)`: the PRM as an ordinary (outcome) reward function, a solution's score
  being its weakest step's probability (`prm:PATH` in a reward list; GRPO and PPO turn that name into
  step rewards instead, r1kit/train/process.py).
- `encode_solutions` / `collate_steps`: the batches of training and scoring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from r1kit.algorithms import aggregate_steps
from r1kit.data.steps import encode_steps, split_steps
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.models.load import load_tokenizer
from r1kit.models.value_head import load_scalar_model, token_scalars
from r1kit.rewards.base import Completion, RewardFn, completion_text

PRM_META = "r1kit_prm.json"


@dataclass
class EncodedSolution:
    """A solution as token ids, the index of each step's last token, and its steps' labels."""

    ids: list[int]
    ends: list[int]
    labels: list[float]


@dataclass
class StepBatch:
    """B solutions right-padded to L tokens."""

    input_ids: torch.Tensor
    """[B, L] long."""
    attention_mask: torch.Tensor
    """[B, L] long: 1 on real tokens."""
    label_mask: torch.Tensor
    """[B, L] long: 1 on the token that ends each step."""
    labels: torch.Tensor
    """[B, L] float: the step's label at its end token, 0 elsewhere."""

    def to(self, device) -> StepBatch:
        return replace(self, **{k: getattr(self, k).to(device) for k in ("input_ids", "attention_mask", "label_mask", "labels")})


def encode_solutions(tokenizer, prompts: Sequence[str], steps: Sequence[Sequence[str]], labels: Sequence[Sequence[float]] | None,
                     separator: str, max_length: int) -> list[EncodedSolution]:  # fmt: skip
    """Rendered prompts and step lists as `EncodedSolution`s; steps that do not fit max_length
    whole are dropped (with their labels)."""
    out = []
    for i, (prompt, s) in enumerate(zip(prompts, steps, strict=True)):
        ids, ends = encode_steps(tokenizer, prompt, s, separator, max_length)
        out.append(EncodedSolution(ids, ends, list(labels[i][: len(ends)]) if labels is not None else [0.0] * len(ends)))
    return out


def collate_steps(solutions: Sequence[EncodedSolution], pad_id: int) -> StepBatch:
    """Right-padded `StepBatch` of encoded solutions."""
    L = max(1, max(len(s.ids) for s in solutions))
    ids = torch.full((len(solutions), L), pad_id, dtype=torch.long)
    attn, mask, labels = torch.zeros_like(ids), torch.zeros_like(ids), torch.zeros(len(solutions), L)
    for i, s in enumerate(solutions):
        ids[i, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        attn[i, : len(s.ids)] = 1
        if s.ends:
            mask[i, s.ends] = 1
            labels[i, s.ends] = torch.tensor(s.labels, dtype=torch.float32)
    return StepBatch(ids, attn, mask, labels)


@torch.no_grad()
def step_probabilities(model, solutions: Sequence[EncodedSolution], pad_id: int, batch_size: int = 64) -> list[list[float]]:
    """sigmoid of the model's logit at every step end, per solution."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(solutions), batch_size):
        chunk = solutions[start : start + batch_size]
        batch = collate_steps(chunk, pad_id).to(device)
        probs = torch.sigmoid(token_scalars(model, batch.input_ids, batch.attention_mask)).cpu()
        out.extend(probs[i, s.ends].tolist() for i, s in enumerate(chunk))
    model.train(was_training)
    return out


class StepScorer:
    """A trained PRM with the layout it was trained on: scores every step of completions."""

    def __init__(self, model, tokenizer, separator: str, template: str = "plain", system_prompt: str = "", max_length: int = 1024, batch_size: int = 32):
        self.model, self.tokenizer, self.separator = model, tokenizer, separator
        self.template, self.system_prompt, self.max_length, self.batch_size = template, system_prompt, max_length, batch_size

    @classmethod
    def load(cls, path: str, device: str = "auto", **kwargs: Any) -> StepScorer:
        meta_file = Path(path) / PRM_META
        if not meta_file.is_file():
            raise R1kitError(f"{path!r} is not a process reward model (no {PRM_META}); train one with `r1kit prm` and pass its run's model directory")
        meta = json.loads(meta_file.read_text())
        tokenizer = load_tokenizer(path)
        model = load_scalar_model(path, tokenizer.pad_token_id, "float32", device)
        model.eval().requires_grad_(False)
        return cls(model, tokenizer, meta["separator"], meta.get("template", "plain"), meta.get("system_prompt", ""), **kwargs)

    def steps(self, completions: Sequence[Completion]) -> list[list[str]]:
        return [split_steps(completion_text(c), self.separator) for c in completions]

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Completion]) -> list[list[float]]:
        """The probability that each step is right, per completion (empty for a completion without
        steps or whose first step does not fit max_length)."""
        return self.score_steps(prompts, self.steps(completions))

    def score_steps(self, prompts: Sequence[Any] | None, steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """`score` for solutions already split into steps (a partial solution in a tree search)."""
        prompts = list(prompts) if prompts is not None else [None] * len(steps)
        rendered = [render_prompt(str(p), self.template, self.tokenizer, self.system_prompt) if p is not None else "" for p in prompts]
        encoded = encode_solutions(self.tokenizer, rendered, steps, None, self.separator, self.max_length)
        return step_probabilities(self.model, encoded, self.tokenizer.pad_token_id, self.batch_size)


def load_prm_reward_fn(path: str, device: str = "auto", aggregate: str = "min") -> RewardFn:
    """The PRM as an outcome reward function: `aggregate` (min, prod, last) of the step
    probabilities; None for a completion without steps."""
    scorer = StepScorer.load(path, device)

    def prm(completions: Sequence[Completion], prompt: Sequence[Any] | None = None, **columns: Any) -> list[float | None]:
        probs = scorer.score(prompt, completions)
        S = max([len(p) for p in probs] + [1])
        table = torch.tensor([p + [0.0] * (S - len(p)) for p in probs])
        mask = torch.tensor([[1] * len(p) + [0] * (S - len(p)) for p in probs])
        scores = aggregate_steps(table, mask, aggregate).tolist()
        return [s if p else None for s, p in zip(scores, probs)]

    prm.__name__ = "prm"
    return prm
