"""The step model of a language model: expansion samples next steps through a rollout engine, a
leaf is valued by a rollout scored by the verifier or by a value model.

Prefixes are token ids (the prompt's, then each step's as sampled), never re-tokenised text, so a
step is continued exactly as the policy wrote it. A step is sampled up to a separator (a stop
string, kept) or the end of the solution; its prior is the probability of its tokens, the sum of
the sampled log-probs (after temperature, as the engine reports them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Sequence

from r1kit.rollout import RolloutEngine, SamplingParams
from r1kit.search.mcts import Evaluation, Node, Step
from r1kit.data.steps import END_STRINGS

Verifier = Callable[[str], float]
"""Completion text -> 1.0 when correct, else 0.0 (a task's reward bound to one row's gold answer)."""

ValueFn = Callable[[list[int]], float]
"""Prompt-and-prefix token ids -> estimated probability that the prefix ends in a correct solution."""


@dataclass
class LMStepModel:
    """`r1kit.search.mcts.StepModel` of a policy behind `engine`, for one prompt.

    Give `verifier` to value leaves by rollouts (an oracle at test time: it knows the gold answer),
    or `value` to value them with a value model (no tokens generated).
    """

    engine: RolloutEngine
    tokenizer: object
    prompt_ids: list[int]
    separators: Sequence[str]
    max_new_tokens: int
    """Longest solution in tokens; a step that reaches it is terminal."""
    step_max_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    verifier: Verifier | None = None
    value: ValueFn | None = None
    end_strings: Sequence[str] = END_STRINGS
    _calls: itertools.count = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        if (self.verifier is None) == (self.value is None):
            raise ValueError("LMStepModel values leaves by a verifier or a value model: give exactly one")

    def _params(self, n: int, max_new_tokens: int, stop: Sequence[str]) -> SamplingParams:
        # A fresh seed per call, derived from the search's: the same search samples the same tree.
        seed = self.seed * 1_000_003 + next(self._calls)
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=max_new_tokens, stop=list(stop), n=n, seed=seed)

    def expand(self, node: Node, k: int, budget_left: int) -> tuple[list[Step], int]:
        """k steps sampled after the prefix, each at most min(step_max_tokens, room left in the
        solution, budget_left // k) tokens, so k of them never overrun the budget."""
        prefix = node.tokens()
        room = self.max_new_tokens - len(prefix)
        n = min(k, budget_left)
        if room < 1 or n < 1:
            return [], 0
        limit = min(self.step_max_tokens, room, budget_left // n)
        batch = self.engine.generate([self.prompt_ids + prefix], self._params(n, limit, [*self.separators, *self.end_strings]))
        steps = []
        for i in range(n):
            length = int(batch.completion_mask[i].sum())
            tokens = tuple(batch.completion_ids[i, :length].tolist())
            text = batch.texts[i]
            terminal = batch.finish_reason[i] == "eos" or any(e in text for e in self.end_strings) or len(prefix) + length >= self.max_new_tokens
            steps.append(Step(text, tokens, float(batch.logprobs[i, :length].sum()), terminal))
        return steps, int(batch.completion_lengths.sum())

    def evaluate(self, node: Node, budget_left: int) -> Evaluation | None:
        prefix = node.tokens()
        if self.value is not None:
            value = self.value(self.prompt_ids + prefix)
            return Evaluation(value, 0, prefix if node.terminal else None)
        assert self.verifier is not None
        if node.terminal:
            return Evaluation(self.verifier(self.text(prefix)), 0, prefix, verified=True)
        room = min(self.max_new_tokens - len(prefix), budget_left)
        if room < 1:
            return None
        batch = self.engine.generate([self.prompt_ids + prefix], self._params(1, room, self.end_strings))
        tokens = prefix + batch.completion_ids[0, : int(batch.completion_mask[0].sum())].tolist()
        return Evaluation(self.verifier(self.text(tokens)), int(batch.completion_lengths.sum()), tokens, verified=True)

    def text(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)  # type: ignore[attr-defined]
