"""Multi-process GRPO under torchrun (2 CPU ranks, gloo), and the update's equivalences on one process.

The equivalence test feeds one fixed rollout batch (4 prompts x G=2) to the update twice: whole,
in one process, and split by prompt over 2 ranks through DDP (each group stays on one rank). With
plain SGD (lr 1, no clipping) the parameter change is the gradient itself, so equal parameters
after one step mean the 2-rank loss normalisation equals the 1-process one, for every loss
aggregation. Tolerance 1e-6 absolute: the two runs differ only in float summation order (the
batch shapes differ), which moves gradients by ~1e-8 here.

This file is also the worker: torchrun runs it as a script (see `worker`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1kit.algorithms.policy import LOSS_AGGS
from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.train.distributed import SINGLE, Dist, mean_metrics, rank_share

SRC = Path(__file__).resolve().parents[1] / "src"
PROMPTS, G = 4, 2


def update_config(loss_agg: str, chunked_head: bool = False) -> GRPOConfig:
    return from_dict(GRPOConfig, {
        "model": {"chunked_lm_head": chunked_head},
        "grpo": {"prompts_per_step": PROMPTS, "group_size": G, "beta": 0.0, "num_iterations": 1, "loss_agg": loss_agg},
        "sampling": {"max_new_tokens": 6},
        "optim": {"max_grad_norm": 0.0},
    })  # fmt: skip


def one_update(model_dir: str, batch, rewards, loss_agg: str, dist: Dist = SINGLE, chunked_head: bool = False) -> dict[str, torch.Tensor]:
    """Parameters after one SGD(lr=1) GRPO update of a fresh model on `batch` (scored through the
    chunked LM head with `chunked_head`)."""
    from r1kit.train.distributed import wrap_ddp

    model = load_model(model_dir, device="cpu")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    grpo.update(update_config(loss_agg, chunked_head), wrap_ddp(model, dist), None, opt, sched, batch, rewards, dist)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fixed_batch(model_dir: str):
    """4 prompts x 2 completions sampled with a fixed seed, and rewards with signal in every group."""
    from r1kit.models.load import load_tokenizer
    from r1kit.rollout import HFEngine, SamplingParams

    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, device="cpu")
    prompts = [tok(f"Q: {a}+{b}=?\nA:", add_special_tokens=False)["input_ids"] for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    batch = HFEngine(model, tok).generate(prompts, SamplingParams(n=G, max_new_tokens=6, seed=0))
    # Completions of uneven length (as if some had ended early), so the ranks hold 20 and 16
    # tokens and token_mean's per-rank normalisation matters.
    for row, length in enumerate([6, 2, 6, 6, 3, 6, 1, 6]):
        batch.completion_mask[row, length:] = 0
        batch.completion_ids[row, length:] = batch.pad_token_id
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.25])
    return batch, rewards


def rank_slice(batch, rewards, rank: int, world: int):
    """Rank r's prompts (whole groups) of the batch, padded as the whole batch is."""
    from r1kit.train.rollouts import select_groups

    per = PROMPTS // world
    keep = list(range(rank * per, (rank + 1) * per))
    part, part_rewards, _ = select_groups(batch, rewards, [{}] * PROMPTS, keep, G)
    return part, part_rewards


def worker(out_dir: str, model_dir: str) -> None:
    """Run under torchrun: the split update for every loss aggregation, then a 1-step GRPO run."""
    import torch.distributed as torch_dist

    from r1kit.train.distributed import init_distributed, shutdown

    torch.set_num_threads(1)
    dist, _ = init_distributed("cpu")
    assert dist.world_size == 2 and torch_dist.get_backend() == "gloo"
    out = Path(out_dir)
    batch, rewards = fixed_batch(model_dir)
    part, part_rewards = rank_slice(batch, rewards, dist.rank, dist.world_size)
    tokens = int(part.completion_mask.sum())
    for agg in LOSS_AGGS:
        params = one_update(model_dir, part, part_rewards, agg, dist)
        if dist.is_main:
            torch.save(params, out / f"{agg}.pt")
    # The chunked LM head uses the head's weight outside DDP's forward: its gradient must still be all-reduced.
    params = one_update(model_dir, part, part_rewards, "token_mean", dist, chunked_head=True)
    if dist.is_main:
        torch.save(params, out / "token_mean-chunked.pt")
    (out / f"tokens_rank{dist.rank}.json").write_text(json.dumps(tokens))
    metrics = mean_metrics({"x": float(dist.rank), "only_rank_1": 5.0} if dist.rank else {"x": 0.0}, dist)
    if dist.is_main:
        torch.save({"batch": batch, "rewards": rewards}, out / "batch.pt")
        (out / "mean_metrics.json").write_text(json.dumps(metrics))

    # A whole GRPO step through the recipe (it uses the group already joined).
    config = from_dict(GRPOConfig, {
        "model": {"path": model_dir, "device": "cpu"},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 8, "test_size": 2},
        "rewards": ["arithmetic"],
        "grpo": {"steps": 1, "prompts_per_step": 4, "group_size": 2, "beta": 0.04},
        "sampling": {"max_new_tokens": 4},
        "eval": {"k": 0, "max_new_tokens": 2},
        "run": {"output_dir": str(out), "name": "grpo", "progress": False, "tensorboard": False, "threads": 1, "save_every": 1},
        "eval_before": False,
    })  # fmt: skip
    grpo.train(config)
    shutdown(dist)


@pytest.mark.numerics
@pytest.mark.slow
def test_two_ranks_update_equals_one_process_for_every_loss_aggregation(tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path), str(tiny_model_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    saved = torch.load(tmp_path / "batch.pt", weights_only=False)
    tokens = [json.loads((tmp_path / f"tokens_rank{r}.json").read_text()) for r in (0, 1)]
    assert tokens == [20, 16]
    torch.set_num_threads(1)
    initial = load_model(str(tiny_model_dir), device="cpu").state_dict()
    for agg in LOSS_AGGS:
        single = one_update(str(tiny_model_dir), saved["batch"], saved["rewards"], agg)
        split = torch.load(tmp_path / f"{agg}.pt")
        assert any(not torch.equal(single[k], initial[k]) for k in single), agg  # the step did something
        for name, tensor in single.items():
            assert torch.allclose(split[name], tensor, atol=1e-6, rtol=0), (agg, name, (split[name] - tensor).abs().max())
        if agg == "token_mean":
            chunked = torch.load(tmp_path / "token_mean-chunked.pt")
            for name, tensor in single.items():
                assert torch.allclose(chunked[name], tensor, atol=1e-6, rtol=0), ("chunked", name, (chunked[name] - tensor).abs().max())

    assert json.loads((tmp_path / "mean_metrics.json").read_text()) == {"x": 0.5, "only_rank_1": 5.0}
    run_dir = tmp_path / "grpo"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1]  # rank 0 logs, once
    assert (run_dir / "model" / "config.json").is_file()
    assert (run_dir / "checkpoints" / "step_1" / "trainer.pt").is_file()
    state = torch.load(run_dir / "checkpoints" / "step_1" / "trainer.pt", weights_only=True)
    assert len(state["rng"]) == 2  # every rank's RNG state


@pytest.mark.numerics
def test_update_with_shared_prompts_equals_one_forward_per_row(tiny_model_dir, monkeypatch):
    # The learner runs each group's prompt once (completion_logprobs' default); the update must be
    # the one a forward per row gives, so the speed does not come from doing less.
    import functools

    from r1kit.algorithms import completion_logprobs

    batch, rewards = fixed_batch(str(tiny_model_dir))
    initial = load_model(str(tiny_model_dir), device="cpu").state_dict()
    for agg in LOSS_AGGS:
        shared = one_update(str(tiny_model_dir), batch, rewards, agg)
        with monkeypatch.context() as m:
            m.setattr(grpo, "completion_logprobs", functools.partial(completion_logprobs, share_prompts=False))
            plain = one_update(str(tiny_model_dir), batch, rewards, agg)
        assert any(not torch.equal(shared[k], initial[k]) for k in shared), agg
        for name, tensor in plain.items():
            assert torch.allclose(shared[name], tensor, atol=1e-6, rtol=0), (agg, name, (shared[name] - tensor).abs().max())


@pytest.mark.numerics
def test_update_through_the_chunked_lm_head_equals_the_plain_one(tiny_model_dir):
    # model.chunked_lm_head never builds the logits; the update must be the same one.
    batch, rewards = fixed_batch(str(tiny_model_dir))
    for agg in LOSS_AGGS:
        plain = one_update(str(tiny_model_dir), batch, rewards, agg)
        chunked = one_update(str(tiny_model_dir), batch, rewards, agg, chunked_head=True)
        for name, tensor in plain.items():
            assert torch.allclose(chunked[name], tensor, atol=1e-6, rtol=0), (agg, name, (chunked[name] - tensor).abs().max())


def test_prompts_per_step_must_divide_by_the_number_of_processes():
    assert rank_share(8, Dist(rank=1, world_size=2)) == 4
    with pytest.raises(R1kitError, match=r"grpo.prompts_per_step=6 must divide by the number of processes \(4\)"):
        rank_share(6, Dist(rank=0, world_size=4))


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
