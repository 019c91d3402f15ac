"""A rollout engine on any Hugging Face causal LM, with a KV cache and little Python per token.

`model.generate` is general (beam search, dozens of logits processors, stopping criteria objects,
streamers) and pays for that generality on every token. RL rollouts need one thing: sample many
completions. So this engine, in plain PyTorch and transformers,

- left-pads the prompts (position ids from the attention mask) and prefills each unique prompt
  once, then repeats the KV cache n times: a group of n samples costs one prefill, not n;
- decodes one token per step through the model's own forward and KV cache argument, into a cache
  that fills preallocated buffers (`kv_cache.py`) and into preallocated [N, C] output buffers (no
  growing Python lists, no per-row loops);
- runs layers compiled by `model.compile` eagerly (`models/compile.py`): the cache grows every
  step, and each new length would be a recompile;
- samples with batched torch ops (`sampling.py`) from a `torch.Generator` seeded by params.seed;
- feeds pad to finished rows with attention mask 0 and stops as soon as every row is done.

Hardware-specific fast paths (a flat decode step over the model's weights, CUDA graphs, forked
worker processes, thread rules) are not here: `r1kit.accel.engine` builds on this engine, replacing
its decode step (`decode_step`) and how a rollout is shared out (`generate`).

Same seed, same completions: on the same device, dtype and number of threads. Different thread
counts or devices may change the float rounding and so, rarely, a sampled token.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence

import torch

from r1kit.algorithms.cache_argument import model_cache_argument, returned_cache
from r1kit.algorithms.logprobs import inner_model
from r1kit.errors import R1kitError
from r1kit.models.compile import eager_rollout
from r1kit.rollout.engine import RolloutBatch, SamplingParams
from r1kit.rollout.kv_cache import make_cache
from r1kit.rollout.sampling import sample_next
from r1kit.rollout.stops import StopStrings

DecodeStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
"""One decode step: (tokens [N], the whole attention mask [N, P + C], positions [N, 1], length)
-> float32 logits [N, V] of the next token, where the mask's first `length` columns are the
sequence so far (the new token last) and the cache holds the keys and values of all but the new
token."""


class HFEngine:
    """Rollouts from a transformers causal LM (`AutoModelForCausalLM`) that supports a KV cache.

    model: the policy; generation runs it in eval mode under inference_mode and restores its mode
    afterwards, so the learner can keep training the same object (`sync_weights` is then free).
    tokenizer: optional; needed for stop strings and decoded `texts`, and a source of pad/eos ids.
    pad_token_id: pads prompts and finished rows; defaults to the tokenizer's, then the model's,
    then the first eos id, then 0.
    eos_token_id: an id or ids that end a completion with finish reason "eos"; defaults to the
    model's generation config, then the tokenizer's. Pass [] for none.
    """

    def __init__(self, model, tokenizer=None, pad_token_id: int | None = None, eos_token_id: int | Sequence[int] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = _resolve_eos(model, tokenizer, eos_token_id)
        self.pad_token_id = _resolve_pad(model, tokenizer, pad_token_id, self.eos_token_ids)
        # Computing logits for the last prompt position only saves a [B, P, V] tensor at prefill.
        self._prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        # `cache` from transformers 5.25 on, `past_key_values` before (algorithms/cache_argument.py).
        self._cache_name = model_cache_argument(inner_model(model)) or "past_key_values"
        self._stop_cache: dict[tuple[tuple[str, ...], torch.device], StopStrings] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """Sample params.n completions per prompt; see RolloutBatch for the layout."""
        _check_prompts(prompt_ids)
        batch = self.rollout(prompt_ids, params)
        if self.tokenizer is not None:
            rows = [row[:length] for row, length in zip(batch.completion_ids.tolist(), batch.completion_lengths.tolist())]
            batch.texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return batch

    def sync_weights(self, model) -> None:
        """Sample from `model`'s current weights from the next rollout on. This engine runs the
        module it is given, so it only takes `model` as its policy; nothing is copied."""
        self.model = model

    def close(self) -> None:
        """Release what the engine holds beyond the model (nothing here)."""

    def rollout(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """The rollout of `prompt_ids` in this process (texts not decoded)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), eager_rollout():
                batch = self._generate(prompt_ids, params)
        finally:
            self.model.train(was_training)
        return _ordinary_tensors(batch)

    def decode_step(self, cache, capacity: int) -> DecodeStep:
        """The step function of one rollout over `cache` (`capacity` positions): the model's forward."""

        def step(tokens: torch.Tensor, attn: torch.Tensor, position: torch.Tensor, length: int) -> torch.Tensor:
            out = self.model(input_ids=tokens[:, None], attention_mask=attn[:, :length], position_ids=position, use_cache=True, **{self._cache_name: cache})
            return out.logits[:, -1, :].float()

        return step

    def _generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        n, device = params.n, self.device
        ids, mask = left_pad(prompt_ids, self.pad_token_id, device)  # [B, P]
        cache = make_cache(self.model, capacity=ids.shape[1] + params.max_new_tokens)
        logits, cache = self._prefill(ids, mask, cache)  # [B, V]
        # One prefill per unique prompt, then n copies of its cache: rows of a group stay adjacent.
        cache.batch_repeat_interleave(n)
        logits, ids, mask = (t.repeat_interleave(n, dim=0) for t in (logits, ids, mask))
        step = self.decode_step(cache, ids.shape[1] + params.max_new_tokens)
        completion_ids, completion_mask, logprobs, stopped = self._decode(logits, mask, step, params)
        return self._assemble(ids, mask, completion_ids, completion_mask, logprobs, stopped, params.stop_token_ids, n)

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, cache):
        """Run the prompts. ids, mask: [B, P]; cache: an empty cache, or None for the model's own.
        Returns last-position logits [B, V] and the filled cache."""
        positions = (mask.cumsum(dim=1) - 1).clamp_(min=0)  # left padding: first real token is 0
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_name: cache},
            **self._prefill_kwargs,
        )
        return out.logits[:, -1, :].float(), returned_cache(out)

    def _decode(self, logits: torch.Tensor, prompt_mask: torch.Tensor, step: DecodeStep, params: SamplingParams):
        """The decode loop: one token for every row per step until all rows end.

        logits: [N, V] from the prefill; prompt_mask: [N, P]. Returns completion_ids [N, C],
        completion_mask [N, C], logprobs [N, C] (masked entries hold pad / 0 / 0) and the set of
        rows ended by a stop string.
        """
        N, P = prompt_mask.shape
        C, device, pad = params.max_new_tokens, logits.device, self.pad_token_id
        generator = _generator(params.seed, device)
        end_ids = torch.tensor(self.eos_token_ids + list(params.stop_token_ids), dtype=torch.long, device=device)
        stop_strings = self._stop_strings(params.stop, logits.shape[-1], device)

        out_ids = torch.full((N, C), pad, dtype=torch.long, device=device)
        out_logp = torch.zeros((N, C), dtype=torch.float32, device=device)
        # The attention mask of the whole sequence, preallocated: column P + t is True where token t
        # was generated by a live row. Its right part is the completion mask.
        attn = torch.cat([prompt_mask.bool(), torch.zeros((N, C), dtype=torch.bool, device=device)], dim=1)
        position = prompt_mask.sum(dim=1, keepdim=True)  # [N, 1] position of the next token
        alive = torch.ones(N, dtype=torch.bool, device=device)
        stopped: set[int] = set()
        for t in range(C):
            tokens, logp = sample_next(logits, params, generator)
            dead = ~alive
            out_ids[:, t] = tokens.masked_fill_(dead, pad)
            out_logp[:, t] = logp.masked_fill_(dead, 0.0)
            attn[:, P + t] = alive
            if end_ids.numel():
                alive &= ~torch.isin(tokens, end_ids)
            if stop_strings is not None:
                hits = stop_strings.hits(out_ids, t, alive)
                if hits:
                    alive[hits] = False
                    stopped.update(hits)
            if t == C - 1 or not alive.any():
                break
            logits = step(tokens, attn, position, P + t + 1)
            position += 1
        steps = t + 1
        return out_ids[:, :steps], attn[:, P : P + steps].long(), out_logp[:, :steps], stopped

    def _stop_strings(self, stops: list[str], vocab_size: int, device: torch.device) -> StopStrings | None:
        """The stop-string checker for these strings; its token table is built once per engine."""
        if not stops:
            return None
        key = (tuple(stops), device)
        if key not in self._stop_cache:
            self._stop_cache[key] = StopStrings(stops, self.tokenizer, vocab_size, device)
        return self._stop_cache[key]

    def _assemble(
        self, prompt_ids, prompt_mask, completion_ids, completion_mask, logprobs, stopped: set[int], stop_token_ids: list[int], n: int
    ) -> RolloutBatch:
        """Package the buffers; finish reasons come from each row's last token."""
        lengths = completion_mask.sum(dim=1).tolist()
        last = [row[length - 1] for row, length in zip(completion_ids.tolist(), lengths)]
        eos, stop_ids = set(self.eos_token_ids), set(stop_token_ids)
        reasons = [_finish_reason(token, i in stopped, eos, stop_ids) for i, token in enumerate(last)]
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            logprobs=logprobs,
            finish_reason=reasons,
            prompt_index=[i // n for i in range(len(last))],
            group_size=n,
            pad_token_id=self.pad_token_id,
        )


def _ordinary_tensors(batch: RolloutBatch) -> RolloutBatch:
    """The batch with its tensors cloned outside inference mode.

    Tensors made under inference_mode cannot be saved for backward, and the learner's loss embeds
    these ids and multiplies by these masks and log-probs; ordinary copies spare it a RuntimeError.
    """
    tensors = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return dataclasses.replace(batch, **{k: v.clone() for k, v in tensors.items() if isinstance(v, torch.Tensor)})


def left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as a left-padded batch: ids [B, P] long and mask [B, P] long (1 on real tokens)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_token_id] * (width - len(p)) + [int(t) for t in p] for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), mask.to(device)


def _finish_reason(last_token: int, by_stop_string: bool, eos: set[int], stop_ids: set[int]) -> str:
    """"eos" / "stop" / "length" for one completion; a row ends on its first end token."""
    if by_stop_string:
        return "stop"
    if last_token in eos:
        return "eos"
    if last_token in stop_ids:
        return "stop"
    return "length"


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator for this call alone, so sampling never touches the global RNG."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _check_prompts(prompt_ids: list[list[int]]) -> None:
    if len(prompt_ids) == 0:
        raise R1kitError("the rollout engine got no prompts; pass at least one list of token ids.")
    empty = [i for i, p in enumerate(prompt_ids) if len(p) == 0]
    if empty:
        raise R1kitError(f"prompt {empty[0]} is empty; every prompt needs at least one token (a BOS token will do).")


def _as_id_list(ids) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _resolve_eos(model, tokenizer, eos_token_id) -> list[int]:
    """The eos ids: the argument, else the model's generation config, else the tokenizer's."""
    if eos_token_id is not None:
        return _as_id_list(eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    for source in (generation_config, tokenizer, model.config):
        ids = _as_id_list(getattr(source, "eos_token_id", None))
        if ids:
            return ids
    return []


def _resolve_pad(model, tokenizer, pad_token_id, eos_ids: list[int]) -> int:
    """The pad id: the argument, else the tokenizer's, else the model's, else the first eos, else 0."""
    if pad_token_id is not None:
        return int(pad_token_id)
    for source in (tokenizer, getattr(model, "generation_config", None), model.config):
        pad = getattr(source, "pad_token_id", None)
        if pad is not None:
            return int(pad)
    return eos_ids[0] if eos_ids else 0
