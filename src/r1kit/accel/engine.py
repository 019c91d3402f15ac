"""The accelerated rollout engine: the plain transformers engine with its decode step and its
rollouts routed through this package's fast paths.

`AcceleratedEngine` is `r1kit.rollout.HFEngine` (same prefill, cache, sampling, stops, outputs)
with three backends chosen by device and model, in this order:

- on a CUDA device, a model `FastDecoder` serves decodes through `GraphDecoder`: the flat decode
  step captured once per rollout as a CUDA graph and replayed every step (`graph_decode.py`);
- on CPU, a model `FastDecoder` serves decodes through the flat step itself, its projections
  through oneDNN on packed weights for larger models (`fast_decode.py`);
- anything else decodes through the model's forward, as the plain engine does (on CPU with the
  plain-matmul attention when `r1kit.accel.apply` gave the model that at setup).

On CPU it also

- decodes a small model on one thread under OpenMP's PASSIVE waits (`openmp.py`): each decode step
  is then a few hundred tiny ops, and waking a sleeping OpenMP thread for each costs more than the
  op (`ONE_THREAD_DECODE_FLOPS`);
- on Linux with several torch threads, splits a small model's rollout by prompts among forked
  worker processes, one per thread (`workers.py`), which decode with a copy of the weights that
  `sync_weights` refreshes: the cores then decode side by side with no OpenMP wake-ups.

Same seed, same completions on the same device, dtype and number of threads and processes; a
different number of processes gives other draws (each process's share has its own seed), and the
flat step adds the same numbers in another order than the forward (float rounding).
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from r1kit.accel.fast_decode import FastDecoder
from r1kit.accel.graph_decode import GraphDecoder
from r1kit.accel.workers import MAX_PARAMS, RolloutWorkers, worker_seed
from r1kit.accel.workers import available as workers_available
from r1kit.errors import R1kitError
from r1kit.rollout.engine import RolloutBatch, SamplingParams
from r1kit.rollout.hf import DecodeStep, HFEngine

ONE_THREAD_DECODE_FLOPS = 5e8
"""Below this many model FLOPs per decode step (2 x parameters x rows), a CPU engine under OpenMP's
PASSIVE wait policy decodes on one thread: measured on 2 cores at 64 rows, a 1M-parameter model
decoded faster on one thread and a 13M one on two (docs/BENCHMARKS.md)."""


class AcceleratedEngine(HFEngine):
    """`HFEngine` with the fast paths of the module docstring; the same arguments, and:

    processes: on CPU, how many processes may share a rollout's prompts (`workers.py`): 0 (the
    default) decides by `_shares`'s rule, 1 keeps every rollout in this process, k > 1 allows up
    to k (never more than torch's thread count or the number of prompts).
    fast_decode: decode a plain Llama-family model through `FastDecoder` (CPU) or `GraphDecoder`
    (CUDA); False always uses the forward.
    cuda_graphs: on a GPU, capture the flat step as a CUDA graph; False uses the forward there.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        pad_token_id: int | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        processes: int = 0,
        fast_decode: bool = True,
        cuda_graphs: bool = True,
    ):
        if processes < 0:
            raise R1kitError(f"rollout processes (run.rollout_processes) must be >= 0 (0 = automatic, 1 = one process), got {processes}.")
        super().__init__(model, tokenizer, pad_token_id, eos_token_id)
        self.processes, self.fast_decode, self.cuda_graphs = processes, fast_decode, cuda_graphs
        self._workers: RolloutWorkers | None = None

    def rollout(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """The rollout of `prompt_ids`, here or split among worker processes (`_shares`)."""
        shares = self._shares(len(prompt_ids))
        return self.rollout_here(prompt_ids, params) if len(shares) == 1 else self._rollout_split(prompt_ids, params, shares)

    def sync_weights(self, model) -> None:
        """Decode with `model`'s current weights from the next rollout on: this process runs the
        module itself; the worker processes get the weights copied into their shared mapping (or,
        when the parameters changed shape or dtype, are forked anew at the next split rollout)."""
        super().sync_weights(model)
        if self._workers is not None and not self._workers.sync(model):
            self.close()

    def close(self, kill: bool = False) -> None:
        """Stop this engine's rollout worker processes, if any (they also stop with the engine);
        `kill`: at once, without letting a rollout in progress finish."""
        if self._workers is not None:
            self._workers.close(kill)
            self._workers = None

    def rollout_here(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """The rollout of `prompt_ids` in this process alone (what a worker runs for its share)."""
        return HFEngine.rollout(self, prompt_ids, params)

    def decode_step(self, cache, capacity: int) -> DecodeStep:
        """The CUDA graph, the flat step or the forward (module docstring)."""
        if self.fast_decode and self.cuda_graphs:
            graph = GraphDecoder.build(self.model, cache, capacity, self.device)
            if graph is not None:
                return lambda tokens, attn, position, length: graph(tokens, attn, position, length - 1)
        if self.fast_decode and self.device.type == "cpu":
            fast = FastDecoder.build(self.model, cache, capacity)
            if fast is not None:
                return lambda tokens, attn, position, length: fast(tokens, attn[:, :length], position)
        return super().decode_step(cache, capacity)

    def _decode(self, logits: torch.Tensor, prompt_mask: torch.Tensor, step: DecodeStep, params: SamplingParams):
        with _threads(self._decode_threads(prompt_mask.shape[0])):
            return super()._decode(logits, prompt_mask, step, params)

    def _decode_threads(self, rows: int) -> int | None:
        """One intra-op thread for a small model's decode on CPU under PASSIVE waits, else None (as is)."""
        if self.device.type != "cpu" or torch.get_num_threads() == 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            return None
        params = sum(p.numel() for p in self.model.parameters())
        return 1 if 2 * params * rows < ONE_THREAD_DECODE_FLOPS else None

    def _shares(self, num_prompts: int) -> list[int]:
        """How many prompts each process decodes, this process first: one share unless the rollout
        is split among worker processes: on CPU, on Linux, with at least 2 torch threads and 2
        prompts and a model of at most `workers.MAX_PARAMS` parameters, one process per thread up
        to the number of prompts (or up to `processes`)."""
        threads = torch.get_num_threads()
        count = min(threads, num_prompts, self.processes or threads)
        if count < 2 or self.device.type != "cpu" or not workers_available():
            return [num_prompts]
        params = list(self.model.parameters())
        if sum(p.numel() for p in params) > MAX_PARAMS or any(p.device.type != "cpu" for p in params):  # offloaded weights stay put
            return [num_prompts]
        base, extra = divmod(num_prompts, count)
        return [base + (i < extra) for i in range(count)]

    def _rollout_split(self, prompt_ids: list[list[int]], params: SamplingParams, shares: list[int]) -> RolloutBatch:
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
                here = self.rollout_here(parts[0], params)
            there = [workers.result(i) for i in range(len(parts) - 1)]
        except BaseException:  # Ctrl-C, an error here or in a worker: answers still on their way must never be read as the next rollout's
            self.close(kill=True)
            raise
        return RolloutBatch.concat([here, *there])

    def _ready_workers(self, count: int, threads: int) -> RolloutWorkers:
        """Worker processes for a split rollout: the running ones if they still fit, else new ones
        forked with the current weights."""
        if self._workers is not None and not self._workers.serves(count, threads):
            self.close()
        if self._workers is None:
            self._workers = RolloutWorkers(self, count, threads)
            weakref.finalize(self, self._workers.close)
        return self._workers


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
