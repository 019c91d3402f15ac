"""A rollout engine on any Hugging Face causal LM, with a KV cache and little Python per token.

`model.generate` is general (beam search, dozens of logits processors, stopping criteria objects,
streamers) and pays for that generality on every token. RL rollouts need one thing: sample many
completions fast. So this engine

- left-pads the prompts (position ids from the attention mask) and prefills each unique prompt
  once, then repeats the KV cache n times: a group of n samples costs one prefill, not n;
- decodes one token per step through the model's KV cache argument, writing into preallocated
  [N, C] buffers (no growing Python lists, no per-row loops);
- runs layers compiled by `model.compile` eagerly (`models/compile.py`): the cache grows every
  step, and each new length would be a recompile;
- on CPU, runs one-token attention as two small matmuls instead of SDPA's flash kernel
  (`r1kit/models/attention.py`), restoring the model's attention afterwards, and decodes a plain Llama-family
  model (Llama, Qwen2, Mistral) through a flat function over its weights rather than its forward
  (`fast_decode.py`: 2.4 -> 1.5 ms per step for a 0.25M-parameter Qwen2 at 64 rows);
- on a GPU, runs that flat step as one CUDA graph replayed every step (`graph_decode.py`), since
  there a small model's step is bound by kernel launches;
- samples with batched torch ops (`sampling.py`) from a `torch.Generator` seeded by params.seed;
- feeds pad to finished rows with attention mask 0 and stops as soon as every row is done;
- on CPU with OpenMP's PASSIVE wait policy (which r1kit's command line sets, after a short spin,
  unless the user set one; `r1kit/openmp.py`), decodes a small model on one thread: each decode step is then a few hundred tiny ops, and
  waking a sleeping OpenMP thread for each costs more than the op. Measured on 2 cores, 64 rows:
  a 1M-parameter model's rollout took 0.19 s on 2 threads and 0.09 s on one; at 13M parameters two
  threads win (1.76 s against 1.95 s), hence the work threshold `ONE_THREAD_DECODE_FLOPS`;
- on CPU (Linux) with several torch threads, splits a small model's rollout by prompts among forked
  worker processes, one per thread, that read the policy's weights from shared memory
  (`workers.py`): the cores then decode side by side with no OpenMP wake-ups between them.

Same seed, same completions: on the same device, dtype and number of threads and processes.
Different thread counts or devices may change the float rounding and so, rarely, a sampled token;
a different number of processes gives other draws (each process's share has its own seed).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from r1kit.algorithms.logprobs import inner_model
from r1kit.errors import R1kitError
from r1kit.models.cache_argument import model_cache_argument, returned_cache
from r1kit.models.compile import eager_rollout
from r1kit.models.attention import cpu_decode_attention
from r1kit.rollout.engine import RolloutBatch, SamplingParams
from r1kit.rollout.fast_decode import FastDecoder
from r1kit.rollout.graph_decode import GraphDecoder
from r1kit.rollout.kv_cache import make_cache
from r1kit.rollout.sampling import sample_next
from r1kit.rollout.stops import StopStrings
from r1kit.rollout.workers import MAX_PARAMS, RolloutWorkers, worker_seed
from r1kit.rollout.workers import available as workers_available


ONE_THREAD_DECODE_FLOPS = 5e8
"""Below this many model FLOPs per decode step (2 x parameters x rows), a CPU engine under OpenMP's
PASSIVE wait policy decodes on one thread (see the module docstring)."""


class HFEngine:
    """Rollouts from a transformers causal LM (`AutoModelForCausalLM`) that supports a KV cache.

    model: the policy; generation runs it in eval mode under inference_mode (on CPU also with the
    decode attention of `r1kit/models/attention.py`) and restores its mode and attention afterwards, so the
    learner can keep training the same object.
    tokenizer: optional; needed for stop strings and decoded `texts`, and a source of pad/eos ids.
    pad_token_id: pads prompts and finished rows; defaults to the tokenizer's, then the model's,
    then the first eos id, then 0.
    eos_token_id: an id or ids that end a completion with finish reason "eos"; defaults to the
    model's generation config, then the tokenizer's. Pass [] for none.
    fast_decode: on CPU, decode a plain Llama-family model (Llama, Qwen2, Mistral) through
    `fast_decode.FastDecoder` instead of its forward; False always uses the forward.
    cuda_graphs: on a GPU, decode such a model through `graph_decode.GraphDecoder` (the flat step
    captured as a CUDA graph); needs fast_decode. False: the model's forward, step by step.
    processes: on CPU, how many processes may share a rollout's prompts (`workers.py`): 0 (the
    default) decides by `_shares`'s rule, 1 keeps every rollout in this process, k > 1 allows
    up to k (never more than torch's thread count or the number of prompts).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        pad_token_id: int | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        fast_decode: bool = True,
        cuda_graphs: bool = True,
        processes: int = 0,
    ):
        if processes < 0:
            raise R1kitError(f"rollout processes (run.rollout_processes) must be >= 0 (0 = automatic, 1 = one process), got {processes}.")
        self.model = model
        self.processes = processes
        self._workers: RolloutWorkers | None = None
        self.fast_decode = fast_decode
        self.cuda_graphs = cuda_graphs
        self.tokenizer = tokenizer
        self.eos_token_ids = _resolve_eos(model, tokenizer, eos_token_id)
        self.pad_token_id = _resolve_pad(model, tokenizer, pad_token_id, self.eos_token_ids)
        # Computing logits for the last prompt position only saves a [B, P, V] tensor at prefill.
        self._prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        # `cache` from transformers 5.25 on, `past_key_values` before (models/cache_argument.py).
        self._cache_name = model_cache_argument(inner_model(model)) or "past_key_values"
        self._stop_cache: dict[tuple[tuple[str, ...], torch.device], StopStrings] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """Sample params.n completions per prompt; see RolloutBatch for the layout."""
        _check_prompts(prompt_ids)
        shares = self._shares(len(prompt_ids))
        batch = self._generate_here(prompt_ids, params) if len(shares) == 1 else self._generate_split(prompt_ids, params, shares)
        if self.tokenizer is not None:
            rows = [row[:length] for row, length in zip(batch.completion_ids.tolist(), batch.completion_lengths.tolist())]
            batch.texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return batch

    def close(self, kill: bool = False) -> None:
        """Stop this engine's rollout worker processes, if any (they also stop with the engine);
        `kill`: at once, without letting a rollout in progress finish."""
        if self._workers is not None:
            self._workers.close(kill)
            self._workers = None

    def _generate_here(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """The rollout of `prompt_ids` in this process (texts not decoded)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), eager_rollout(), cpu_decode_attention(self.model) as decode_attention:
                batch = self._generate(prompt_ids, params, decode_attention)
        finally:
            self.model.train(was_training)
        return _ordinary_tensors(batch)

    def _shares(self, num_prompts: int) -> list[int]:
        """How many prompts each process decodes, this process first: one share unless the rollout
        is split among worker processes (`workers.py`): on CPU, on Linux, with at least 2 torch
        threads and 2 prompts and a model of at most `workers.MAX_PARAMS` parameters, one process
        per thread up to the number of prompts (or up to `processes`)."""
        threads = torch.get_num_threads()
        count = min(threads, num_prompts, self.processes or threads)
        if count < 2 or self.device.type != "cpu" or not workers_available():
            return [num_prompts]
        params = list(self.model.parameters())
        if sum(p.numel() for p in params) > MAX_PARAMS or any(p.device.type != "cpu" for p in params):  # offloaded weights stay put
            return [num_prompts]
        base, extra = divmod(num_prompts, count)
        return [base + (i < extra) for i in range(count)]

    def _generate_split(self, prompt_ids: list[list[int]], params: SamplingParams, shares: list[int]) -> RolloutBatch:
        """The rollout with shares[0] prompts decoded here and the others by worker processes, all at
        once, each on its part of torch's threads; rows in prompt order as in one process."""
        threads = torch.get_num_threads()
        each = threads // len(shares)
        workers = self._ready_workers(len(shares) - 1, each)
        starts = [sum(shares[:i]) for i in range(len(shares) + 1)]
        parts = [prompt_ids[a:b] for a, b in zip(starts, starts[1:])]
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        try:
            for i, part in enumerate(parts[1:]):
                workers.submit(i, part, dataclasses.replace(params, seed=worker_seed(params.seed, i + 1)), autocast)
            with _threads(threads - each * (len(shares) - 1)):
                here = self._generate_here(parts[0], params)
            there = [workers.result(i) for i in range(len(parts) - 1)]
        except BaseException:  # Ctrl-C, an error here or in a worker: answers still on their way must never be read as the next rollout's
            self.close(kill=True)
            raise
        return RolloutBatch.concat([here, *there])

    def _ready_workers(self, count: int, threads: int) -> RolloutWorkers:
        """Worker processes for a split rollout: the running ones if they still fit, else new ones."""
        if self._workers is not None and not self._workers.serves(self.model, count, threads):
            self.close()
        if self._workers is None:
            self._workers = RolloutWorkers(self, count, threads)
            weakref.finalize(self, self._workers.close)
        return self._workers

    def _generate(self, prompt_ids: list[list[int]], params: SamplingParams, decode_attention: bool) -> RolloutBatch:
        n, device = params.n, self.device
        ids, mask = left_pad(prompt_ids, self.pad_token_id, device)  # [B, P]
        cache = make_cache(self.model, capacity=ids.shape[1] + params.max_new_tokens)
        # With our cache and our decode attention both ends of the mask are ours, so the model can be
        # handed a ready [N, 1, 1, T] boolean mask (transformers passes 4D masks through untouched)
        # instead of building one every step.
        ready_masks = decode_attention and cache is not None
        logits, cache = self._prefill(ids, mask, cache)  # [B, V]
        # One prefill per unique prompt, then n copies of its cache: rows of a group stay adjacent.
        cache.batch_repeat_interleave(n)
        logits, ids, mask = (t.repeat_interleave(n, dim=0) for t in (logits, ids, mask))
        with _threads(self._decode_threads(ids.shape[0])):
            completion_ids, completion_mask, logprobs, stopped = self._decode(logits, mask, cache, params, ready_masks)
        return self._assemble(ids, mask, completion_ids, completion_mask, logprobs, stopped, params.stop_token_ids, n)

    def _decode_threads(self, rows: int) -> int | None:
        """One intra-op thread for a small model's decode on CPU under PASSIVE waits, else None (as is)."""
        if self.device.type != "cpu" or torch.get_num_threads() == 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            return None
        params = sum(p.numel() for p in self.model.parameters())
        return 1 if 2 * params * rows < ONE_THREAD_DECODE_FLOPS else None

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

    def _decode(self, logits: torch.Tensor, prompt_mask: torch.Tensor, cache, params: SamplingParams, ready_masks: bool):
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
        attn_4d = attn[:, None, None, :]  # a view: [N, 1, 1, P + C]
        position = prompt_mask.sum(dim=1, keepdim=True)  # [N, 1] position of the next token
        alive = torch.ones(N, dtype=torch.bool, device=device)
        stopped: set[int] = set()
        # Where our cache and decode attention are in use (CPU), a plain Llama-family model decodes
        # through a flat function over its weights instead of its forward (fast_decode.py); on a GPU,
        # through that function captured as a CUDA graph (graph_decode.py).
        graph = GraphDecoder.build(self.model, cache, P + C, device) if self.fast_decode and self.cuda_graphs else None
        fast = FastDecoder.build(self.model, cache, P + C) if graph is None and ready_masks and self.fast_decode else None
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
            if graph is not None:
                logits = graph(tokens, attn, position, P + t)
            elif fast is not None:
                logits = fast(tokens, attn[:, : P + t + 1], position)
            else:
                mask = attn_4d[..., : P + t + 1] if ready_masks else attn[:, : P + t + 1]
                out = self.model(
                    input_ids=tokens[:, None], attention_mask=mask, position_ids=position, use_cache=True, **{self._cache_name: cache}
                )
                logits = out.logits[:, -1, :].float()
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


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to n inside (None: left alone), restored on the way out."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
