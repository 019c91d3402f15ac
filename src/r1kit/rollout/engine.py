"""What a rollout engine is: sampling parameters in, a batch of completions out.

The learner never calls `generate` (DESIGN principle 2). It hands prompt token ids and a
`SamplingParams` to a `RolloutEngine` and gets back a `RolloutBatch`: padded tensors of prompt and
completion ids, masks, the log-probs the tokens were sampled with, and why each row stopped. After
each optimizer step it calls `engine.sync_weights(model)`, and from then on the engine samples from
those weights. A backend only has to fill that batch and honour that call: the plain transformers
engine (`hf.py`), the accelerated one (`r1kit.accel.engine`), later vLLM or SGLang (whose
`sync_weights` would load the new state dict into the server).

Rows are grouped: the `n` samples of prompt `i` are rows `i*n .. i*n + n - 1`, so a GRPO group is
a contiguous slice and `logp.view(num_prompts, n, -1)` needs no gather.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from r1kit.errors import R1kitError

FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions; the same fields mean the same things in every backend."""

    temperature: float = 1.0
    """Softmax temperature. 0 means greedy decoding (argmax); top_k, top_p and seed are then unused."""

    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to at least top_p
    (Holtzman et al. 2019). 1.0 keeps every token."""

    top_k: int = 0
    """Keep only the top_k most likely tokens before sampling. 0 keeps every token."""

    max_new_tokens: int = 256
    """At most this many tokens per completion; a row that reaches it finishes with "length"."""

    stop: list[str] = field(default_factory=list)
    """Stop strings. A completion ends with the token that completes one of them; the stop
    string's tokens stay in the completion and the row finishes with "stop". Matched against the
    decoded text with special tokens skipped (use stop_token_ids for those). Needs a tokenizer."""

    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a completion (kept in it) with finish reason "stop", in addition to the
    engine's eos ids, which finish with "eos"."""

    n: int = 1
    """Samples per prompt. The n rows of one prompt are adjacent in the output."""

    seed: int | None = None
    """Seed of the sampling generator. The same seed, prompts and parameters give the same
    completions on the same device, dtype, number of threads and of rollout processes (a row's draw
    depends on its place in the batch; each process's share of a split rollout has a seed of its
    own, `r1kit.accel.workers.worker_seed`). None draws a fresh seed on every call."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise R1kitError(f"sampling temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise R1kitError(f"sampling top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise R1kitError(f"sampling top_k must be >= 0 (0 keeps every token), got {self.top_k}.")
        if self.max_new_tokens < 1:
            raise R1kitError(f"sampling max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.n < 1:
            raise R1kitError(f"sampling n (samples per prompt) must be >= 1, got {self.n}.")
        if isinstance(self.stop, str):
            raise R1kitError(f"sampling stop must be a list of strings, got the string {self.stop!r}; write [{self.stop!r}].")
        if any(not s for s in self.stop):
            raise R1kitError("sampling stop strings must be non-empty.")

    @property
    def greedy(self) -> bool:
        """True when decoding is argmax (temperature 0)."""
        return self.temperature == 0


@dataclass
class RolloutBatch:
    """Completions of N = num_prompts * n rows; the n rows of one prompt are adjacent.

    P is the longest prompt, C the longest completion (at most max_new_tokens).
    """

    prompt_ids: torch.Tensor
    """[N, P] long: prompt tokens, left-padded with pad_token_id."""

    prompt_mask: torch.Tensor
    """[N, P] long: 1 on prompt tokens, 0 on left padding."""

    completion_ids: torch.Tensor
    """[N, C] long: generated tokens, right-padded with pad_token_id."""

    completion_mask: torch.Tensor
    """[N, C] long: 1 on generated tokens up to and including the eos / stop token."""

    logprobs: torch.Tensor
    """[N, C] float32: log-prob of each chosen token under log_softmax(logits / temperature), i.e.
    after temperature but before top-k / top-p truncation, so it equals what the learner gets from
    a forward pass over prompt+completion at the same temperature. With temperature 0 (greedy) it
    is log_softmax(logits). 0 where completion_mask is 0."""

    finish_reason: list[str]
    """[N]: "eos" (an eos id was sampled), "stop" (a stop string or stop token id), or "length"."""

    prompt_index: list[int]
    """[N]: which input prompt each row answers: [0]*n + [1]*n + ..."""

    group_size: int
    """n, the samples per prompt; rows i*n .. i*n + n - 1 form the group of prompt i."""

    pad_token_id: int
    """The id used for padding prompt_ids and completion_ids."""

    texts: list[str] | None = None
    """[N]: decoded completions (special tokens skipped) when the engine has a tokenizer."""

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """[N] long: generated tokens per row, eos / stop token included."""
        return self.completion_mask.sum(dim=1)

    @property
    def input_ids(self) -> torch.Tensor:
        """[N, P + C] long: prompt then completion, the learner's forward input."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """[N, P + C] long: prompt_mask then completion_mask."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @classmethod
    def concat(cls, parts: list[RolloutBatch]) -> RolloutBatch:
        """One batch of the rows of `parts` in order (each a rollout of consecutive prompts with the
        same n and pad id): prompts left-padded and completions right-padded to the widest part."""
        width = max(p.prompt_ids.shape[1] for p in parts)
        length = max(p.completion_ids.shape[1] for p in parts)
        pad = parts[0].pad_token_id

        def left(name: str, value: float) -> torch.Tensor:
            return torch.cat([F.pad(getattr(p, name), (width - p.prompt_ids.shape[1], 0), value=value) for p in parts])

        def right(name: str, value: float) -> torch.Tensor:
            return torch.cat([F.pad(getattr(p, name), (0, length - p.completion_ids.shape[1]), value=value) for p in parts])

        first_prompt = 0
        prompt_index = []
        for p in parts:
            prompt_index += [first_prompt + i for i in p.prompt_index]
            first_prompt += len(p) // p.group_size
        return cls(
            prompt_ids=left("prompt_ids", pad),
            prompt_mask=left("prompt_mask", 0),
            completion_ids=right("completion_ids", pad),
            completion_mask=right("completion_mask", 0),
            logprobs=right("logprobs", 0.0),
            finish_reason=[r for p in parts for r in p.finish_reason],
            prompt_index=prompt_index,
            group_size=parts[0].group_size,
            pad_token_id=pad,
            texts=None if any(p.texts is None for p in parts) else [t for p in parts for t in p.texts],
        )

    def to(self, device: torch.device | str) -> RolloutBatch:
        """A copy with every tensor on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


@runtime_checkable
class RolloutEngine(Protocol):
    """Anything that turns prompt token ids into sampled completions from a policy's weights."""

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """Sample params.n completions for each prompt (prompts are unpadded token id lists) from
        the weights of the last `sync_weights` (or those the engine was built with)."""
        ...

    def sync_weights(self, model) -> None:
        """The policy's weights changed (an optimizer step): sample from `model`'s current weights
        from the next `generate` on. Until then an engine may keep sampling from the old ones."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, servers, copies of the weights)."""
        ...
