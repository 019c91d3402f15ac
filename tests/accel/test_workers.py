"""Rollouts split among forked worker processes (`accel/workers.py`) against rollouts in one
process, and the weights they decode with: those of the fork or of the last `sync_weights`."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import rollout_tiny
import torch
from rollout_tiny import EOS, PAD

from r1kit.errors import R1kitError
from r1kit.accel import workers
from r1kit.accel.engine import AcceleratedEngine
from r1kit.rollout import RolloutBatch, SamplingParams

pytestmark = pytest.mark.skipif(not workers.available(), reason="rollout workers fork: Linux only")

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=11)
# Five prompts of different lengths: shares of 3 and 2 prompts with different padding widths.
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16], [17], [18, 19, 20, 21]]


@pytest.fixture
def two_threads():
    """Two torch threads, so the engine's rule splits a rollout in two (the rollout tests' default is one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def engine(model, processes: int, tokenizer=None) -> AcceleratedEngine:
    return AcceleratedEngine(model, tokenizer=tokenizer, pad_token_id=PAD, eos_token_id=[EOS], processes=processes)


def alone(model, prompts, params, tokenizer=None) -> RolloutBatch:
    """`prompts` decoded in this process on one thread: as each process of a two-way split decodes
    its share, so the numbers are the same computation's (on two threads a matmul may sum in another
    order: MKL's reproducible path does)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return engine(model, processes=1, tokenizer=tokenizer).generate(prompts, params)
    finally:
        torch.set_num_threads(threads)


def second_share_alone(model) -> RolloutBatch:
    """The rows of the worker's share (prompts 3 and 4) decoded in one process with its seed."""
    return alone(model, PROMPTS[3:], dataclasses.replace(PARAMS, seed=workers.worker_seed(PARAMS.seed, 1)))


def assert_worker_share_current(split: AcceleratedEngine, model) -> None:
    """A split rollout's worker share holds what one process samples from the model as it is now."""
    assert_same_rows(split.generate(PROMPTS, PARAMS), slice(9, 15), second_share_alone(model))


def assert_same_rows(batch: RolloutBatch, rows: slice, alone: RolloutBatch) -> None:
    """Rows `rows` of `batch` hold exactly the completions of `alone` (padding aside)."""
    width = alone.completion_ids.shape[1]
    assert torch.equal(batch.completion_ids[rows, :width], alone.completion_ids)
    assert torch.equal(batch.completion_mask[rows, :width], alone.completion_mask)
    assert torch.equal(batch.logprobs[rows, :width], alone.logprobs)
    assert not batch.completion_mask[rows, width:].any()
    assert batch.finish_reason[rows] == alone.finish_reason
    if alone.texts is not None:
        assert batch.texts[rows] == alone.texts


@pytest.mark.numerics
def test_split_rollout_equals_each_share_decoded_alone(two_threads):
    model, tokenizer = rollout_tiny.tiny_qwen2(seed=3), rollout_tiny.char_tokenizer()
    split = engine(model, processes=0, tokenizer=tokenizer)
    batch = split.generate(PROMPTS, PARAMS)
    assert split._workers is not None and split._workers.count == 1  # the rule chose two processes
    first = alone(model, PROMPTS[:3], PARAMS, tokenizer)  # share 0 keeps the caller's seed
    second = alone(model, PROMPTS[3:], dataclasses.replace(PARAMS, seed=workers.worker_seed(PARAMS.seed, 1)), tokenizer)
    assert_same_rows(batch, slice(0, 9), first)
    assert_same_rows(batch, slice(9, 15), second)
    assert batch.prompt_index == [i // 3 for i in range(15)]
    assert "eos" in batch.finish_reason and "length" in batch.finish_reason  # rows of both kinds were merged
    # Prompts are left-padded to the widest prompt of all shares, as one process would pad them.
    assert batch.prompt_ids.shape == (15, 7)
    assert batch.prompt_ids[9].tolist() == [PAD] * 6 + [17]
    assert batch.prompt_mask[9].tolist() == [0] * 6 + [1]
    split.close()


def worker_rows(batch: RolloutBatch) -> list[list[int]]:
    """The completions of the worker's share (rows 9 to 14), without padding."""
    return [ids[:n] for ids, n in zip(batch.completion_ids[9:15].tolist(), batch.completion_mask[9:15].sum(1).tolist())]


def a_large_step(model) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5)  # a large step: the samples must change
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]])).loss.backward()
    optimizer.step()


def test_workers_sample_from_the_weights_of_the_last_sync(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=4)
    split = engine(model, processes=2)
    before = split.generate(PROMPTS, PARAMS)  # forks the worker
    worker_pid = split._workers._pids[0]
    a_large_step(model)
    stale = split.generate(PROMPTS, PARAMS)  # no sync: the worker still has the weights of the fork
    assert worker_rows(stale) == worker_rows(before)
    assert worker_rows(second_share_alone(model)) != worker_rows(before)  # the step changed the samples
    split.sync_weights(model)
    assert_worker_share_current(split, model)
    assert split._workers._pids[0] == worker_pid  # the same worker: the weights came through the shared mapping
    split.close()


def test_workers_are_forked_again_when_the_parameters_change_dtype(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=5)
    split = engine(model, processes=2)
    split.generate(PROMPTS, PARAMS)
    worker_pid = split._workers._pids[0]
    model.double()  # new tensors of another dtype: they cannot be copied into the mapping
    split.sync_weights(model)
    assert split._workers is None
    assert_worker_share_current(split, model)
    assert split._workers._pids[0] != worker_pid
    split.close()


def test_a_replaced_parameter_of_the_same_shape_is_synced_in_place(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=12)
    split = engine(model, processes=2)
    split.generate(PROMPTS, PARAMS)
    worker_pid = split._workers._pids[0]
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(3 * torch.randn_like(model.lm_head.weight))
    split.sync_weights(model)
    assert_worker_share_current(split, model)
    assert split._workers._pids[0] == worker_pid
    split.close()


def test_the_callers_parameters_are_left_where_they_are(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=10)
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with torch.inference_mode():  # as evaluation calls the engine
        split = engine(model, processes=2)
        split.generate(PROMPTS, PARAMS)
    split.sync_weights(model)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == before
    assert not any(p.is_inference() for p in model.parameters())
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    split.close()


def test_shared_weights_copy_values_and_keep_tied_parameters_tied():
    model = rollout_tiny.tiny_qwen2(seed=6)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as many small models are
    worker = rollout_tiny.tiny_qwen2(seed=7)  # a worker's copy of the model (other values)
    worker.lm_head.weight = worker.model.embed_tokens.weight
    weights = workers.SharedWeights(model)
    weights.bind(worker)
    for (name, p), q in zip(model.named_parameters(), worker.parameters()):
        assert torch.equal(p, q), name
    assert worker.lm_head.weight is worker.model.embed_tokens.weight  # still tied
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2)
    assert not torch.equal(worker.lm_head.weight, model.lm_head.weight)  # nothing shared with the caller
    assert weights.load(model)
    assert torch.equal(worker.lm_head.weight, model.lm_head.weight)
    assert not weights.load(model.double())


def test_a_failing_worker_raises_its_error_in_the_caller_and_the_engine_recovers(two_threads, monkeypatch):
    model = rollout_tiny.tiny_qwen2(seed=7)
    split = engine(model, processes=2)
    caller = os.getpid()
    original = AcceleratedEngine.rollout_here

    def fail_in_worker(self, prompt_ids, params):
        if os.getpid() != caller:
            raise ValueError("worker-side failure")
        return original(self, prompt_ids, params)

    monkeypatch.setattr(AcceleratedEngine, "rollout_here", fail_in_worker)  # the worker forked below inherits it
    with pytest.raises(R1kitError, match="worker-side failure"):
        split.generate(PROMPTS, PARAMS)
    split.close()
    monkeypatch.undo()
    assert len(split.generate(PROMPTS, PARAMS)) == 15


def test_an_interrupted_rollout_leaves_no_stale_answer_for_the_next(two_threads, monkeypatch):
    model = rollout_tiny.tiny_qwen2(seed=11)
    split = engine(model, processes=2)
    split.generate(PROMPTS, PARAMS)
    caller = os.getpid()
    original = AcceleratedEngine.rollout_here

    def interrupted_here(self, prompt_ids, params):
        if os.getpid() == caller:
            raise KeyboardInterrupt  # Ctrl-C while the worker is decoding its share
        return original(self, prompt_ids, params)

    monkeypatch.setattr(AcceleratedEngine, "rollout_here", interrupted_here)
    with pytest.raises(KeyboardInterrupt):
        split.generate(PROMPTS, dataclasses.replace(PARAMS, seed=99))
    assert split._workers is None  # killed: its answer to the interrupted rollout is gone with it
    monkeypatch.undo()
    assert_worker_share_current(split, model)
    split.close()


def test_a_killed_worker_gives_one_clear_error_and_the_next_rollout_forks_anew(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=8)
    split = engine(model, processes=2)
    split.generate(PROMPTS, PARAMS)
    os.kill(split._workers._pids[0], signal.SIGKILL)
    with pytest.raises(R1kitError, match="rollout_processes: 1"):
        split.generate(PROMPTS, PARAMS)
    assert len(split.generate(PROMPTS, PARAMS)) == 15
    split.close()
    assert workers.peak_private_bytes() > 0  # a worker closed in order says how much it held of its own


def test_one_process_when_asked_or_when_there_is_nothing_to_split(two_threads):
    model = rollout_tiny.tiny_qwen2(seed=9)
    assert engine(model, processes=1)._shares(5) == [5]
    assert engine(model, processes=0)._shares(1) == [1]
    assert engine(model, processes=0)._shares(5) == [3, 2]
    torch.set_num_threads(1)
    assert engine(model, processes=0)._shares(5) == [5]


def test_negative_processes_are_refused():
    with pytest.raises(R1kitError, match=r"run.rollout_processes\) must be >= 0"):
        engine(rollout_tiny.tiny_qwen2(), processes=-1)


def test_concat_pads_prompts_left_and_completions_right():
    def part(prompt_width: int, length: int, prompts: int) -> RolloutBatch:
        rows = 2 * prompts
        return RolloutBatch(
            prompt_ids=torch.full((rows, prompt_width), 7),
            prompt_mask=torch.ones(rows, prompt_width, dtype=torch.long),
            completion_ids=torch.full((rows, length), 8),
            completion_mask=torch.ones(rows, length, dtype=torch.long),
            logprobs=torch.full((rows, length), -0.5),
            finish_reason=["length"] * rows,
            prompt_index=[i // 2 for i in range(rows)],
            group_size=2,
            pad_token_id=0,
            texts=["x"] * rows,
        )

    batch = RolloutBatch.concat([part(2, 4, 1), part(3, 1, 2)])
    assert batch.prompt_ids.tolist() == [[0, 7, 7]] * 2 + [[7, 7, 7]] * 4
    assert batch.prompt_mask.tolist() == [[0, 1, 1]] * 2 + [[1, 1, 1]] * 4
    assert batch.completion_ids.tolist() == [[8, 8, 8, 8]] * 2 + [[8, 0, 0, 0]] * 4
    assert batch.completion_mask.sum(dim=1).tolist() == [4, 4, 1, 1, 1, 1]
    assert batch.logprobs[2].tolist() == [-0.5, 0.0, 0.0, 0.0]
    assert batch.prompt_index == [0, 0, 1, 1, 2, 2]
    assert len(batch.texts) == 6


def test_worker_seeds_differ_by_share_and_by_seed():
    assert workers.worker_seed(5, 0) == 5
    assert workers.worker_seed(None, 1) is None
    seeds = {workers.worker_seed(s, i) for s in range(20) for i in range(1, 4)}
    assert len(seeds) == 60 and all(0 <= s < 2**63 for s in seeds)
