"""A policy that writes solutions and continues them from a prefix, through a rollout engine: what
process reward models sample their training solutions from and label steps with (Math-Shepherd's
completions, r1kit/data/step_labels.py), and what best-of-N reranks.

`EnginePolicy(engine, tokenizer, ...).complete(prompts, prefixes, n)` renders each raw prompt with
the data template, appends the prefix (text the policy is to continue) and samples n continuations;
`sample(prompts, n)` is the same from an empty prefix. Calls are split into batches of
`batch_size` (prompt, prefix) pairs, each sampled with its own seed drawn from `seed`, so a run
samples the same text on the same machine.
"""

from __future__ import annotations

from typing import Sequence

import torch

from r1kit.config import SamplingArgs
from r1kit.data.templates import render_prompt
from r1kit.rollout import SamplingParams


class EnginePolicy:
    def __init__(self, engine, tokenizer, sampling: SamplingArgs, template: str = "tiny", system_prompt: str = "", seed: int = 0, batch_size: int = 64):
        self.engine, self.tokenizer, self.sampling = engine, tokenizer, sampling
        self.template, self.system_prompt, self.batch_size = template, system_prompt, batch_size
        self.calls, self.seed = 0, seed

    @torch.inference_mode()
    def complete(self, prompts: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        """n continuations (text after the prefix) of each (raw prompt, prefix)."""
        out: list[list[str]] = []
        s = self.sampling
        for start in range(0, len(prompts), self.batch_size):
            texts = [render_prompt(p, self.template, self.tokenizer, self.system_prompt) + x
                     for p, x in zip(prompts[start : start + self.batch_size], prefixes[start : start + self.batch_size], strict=True)]  # fmt: skip
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            self.calls += 1
            params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens,
                                    stop=list(s.stop), n=n, seed=self.seed * 1_000_003 + self.calls)  # fmt: skip
            batch = self.engine.generate(ids, params)
            out.extend(batch.texts[i * n : (i + 1) * n] for i in range(len(ids)))
        return out

    def sample(self, prompts: Sequence[str], n: int) -> list[list[str]]:
        """n whole solutions of each raw prompt."""
        return self.complete(prompts, [""] * len(prompts), n)
