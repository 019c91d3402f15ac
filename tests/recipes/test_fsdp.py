"""run.parallel=fsdp (r1kit/train/fsdp.py): 2 CPU ranks (gloo) under torchrun, FSDP2-sharded.

- 2 ranks take the step 1 process takes: a GRPO update of a fixed batch (4 prompts x G=2, token_mean,
  a sharded reference) and two SFT steps through the recipe, both with plain SGD, so that the weights'
  change is the gradient times the lr and a mis-scaled gradient would show (Adam's first step is
  blind to scale). The two differ only in the order of float sums: the ranks' halves are summed by
  a reduce-scatter, and each rank's forward runs on half the rows. A float32 gradient element sums
  K ~ 1e2..1e3 terms here, so another order moves it by ~sqrt(K) * 2^-24 ~ 1e-6 of the terms'
  magnitude, which, where terms cancel, is up to ~1e-5 of the tensor's largest element (2e-5 at
  worst here): GRADIENT_RTOL (tests/rounding.py) allows 1e-4. A wrong normalisation (a missing 1/K, per-rank token
  counts) moves the change by tens of percent.
- A run killed right after its step-1 checkpoint and resumed with --resume ends with the very
  adapter weights of the run that was never interrupted (bitwise): the checkpoint holds every
  rank's shards of the weights and AdamW's moments as bytes (torch.distributed.checkpoint), the
  RNGs and the data position, and the resumed steps redo the same operations on the same shapes
  and thread count, so they round the same way. SFT with LoRA, so the adapters are what is sharded
  and trained.
- The final model/ of an FSDP run is an ordinary Hugging Face directory; env.json says fsdp.

This file is also the worker: torchrun runs it as a script (see `worker`). Three torchrun launches.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.train.checkpoint import KILL_AFTER_ENV, checkpoint_dirs
from r1kit.train.distributed import SINGLE, Dist
from r1kit.train.fsdp import SHARDED, strategy
from r1kit.train.validate import check_fsdp
from recipe_runs import SRC, recipe_overrides, step_rows, train

TESTS = Path(__file__).resolve().parents[1]

GRPO = ["rewards=[arithmetic]", "data.task_params={n_operands: 2, digits: 1}", "data.train_size=8", "data.test_size=2", "grpo.steps=2",
        "grpo.prompts_per_step=4", "grpo.group_size=2", "grpo.beta=0.04", "sampling.max_new_tokens=4", "eval.k=0", "eval.max_new_tokens=4",
        "eval_before=false", "optim.lr=1e-2", "run.threads=1", "run.progress=false", "run.tensorboard=false", "run.save_every=1"]  # fmt: skip
"""A 2-step GRPO run whose reference is a sharded copy of the policy (beta > 0)."""


def grpo_update(model_dir: str, batch, rewards, dist: Dist = SINGLE) -> dict[str, torch.Tensor]:
    """The weights after one SGD(lr=1) GRPO update (token_mean, beta 0.04) of a fresh model on
    `batch`: in one process, or on this rank's share of the rows with the learner and the
    reference sharded (the weights gathered back)."""
    from r1kit.train.fsdp import gather_into, shard
    from r1kit.train.reference import frozen_copy

    config = from_dict(GRPOConfig, {"grpo": {"prompts_per_step": 4, "group_size": 2, "beta": 0.04, "loss_agg": "token_mean"},
                                    "sampling": {"max_new_tokens": 6}, "optim": {"max_grad_norm": 0.0}})  # fmt: skip
    model = load_model(model_dir, device="cpu")
    learner, ref = model, frozen_copy(model)
    if dist.enabled:
        learner, ref = shard(copy.deepcopy(model)), shard(ref)
    opt = torch.optim.SGD(learner.parameters(), lr=1.0)
    grpo.update(config, learner, ref, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), batch, rewards, dist)
    if dist.enabled:
        gather_into(learner, model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sft_sgd(model_dir: Path, out: Path) -> list[str]:
    return recipe_overrides("sft", model_dir, out, steps=2)


def sft_lora(model_dir: Path, out: Path) -> list[str]:
    return recipe_overrides("sft", model_dir, out, steps=3) + ["model.lora_r=8", "run.save_every=1", "run.parallel=fsdp"]


def worker(phase: str, out: Path, small: Path, tiny: Path) -> None:
    """Run under torchrun (2 ranks): `main` the equivalences and a GRPO run; `cut` an uninterrupted
    SFT run, then the same run killed after its step-1 checkpoint; `resume` that run resumed."""
    from rounding import sgd_for_adamw
    from test_distributed import fixed_batch, rank_slice

    from r1kit.train.distributed import init_distributed, shutdown

    torch.set_num_threads(1)
    dist, _ = init_distributed("cpu")
    if phase == "main":
        part, part_rewards = rank_slice(*fixed_batch(str(tiny)), dist.rank, dist.world_size)
        params = grpo_update(str(tiny), part, part_rewards, dist)
        if dist.is_main:
            torch.save(params, out / "grpo_update.pt")
        with pytest.MonkeyPatch.context() as patch:
            sgd_for_adamw(patch)
            train("sft", sft_sgd(small, out) + ["run.name=sft-fsdp", "run.parallel=fsdp"])
        train("grpo", [f"model.path={small}", "model.device=cpu", f"run.output_dir={out}", "run.name=grpo-fsdp", "run.parallel=fsdp", *GRPO])
    elif phase == "cut":
        train("sft", sft_lora(small, out) + ["run.name=whole"])
        os.environ[KILL_AFTER_ENV] = "1"
        train("sft", sft_lora(small, out) + ["run.name=cut"])
    else:
        train("sft", sft_lora(small, out) + ["run.name=cut", "run.resume=auto"])
    shutdown(dist)


def torchrun(phase: str, out: Path, small: Path, tiny: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), str(Path(__file__).parent)]), "OMP_NUM_THREADS": "1"}
    env.pop(KILL_AFTER_ENV, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, phase, str(out), str(small), str(tiny)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_same_change(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
    """got - start equals want - start up to summation order: GRADIENT_RTOL of each tensor's largest change."""
    from rounding import GRADIENT_RTOL, gradient_atol

    assert any(not torch.equal(want[k], start[k]) for k in want)  # the step did something
    for name in want:
        change = want[name] - start[name]
        torch.testing.assert_close(got[name] - start[name], change, rtol=0, atol=gradient_atol(change, GRADIENT_RTOL), msg=lambda m: f"{name}: {m}")


def saved_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run_dir / "model").state_dict()


@pytest.mark.slow
@pytest.mark.numerics
def test_two_sharded_ranks_take_the_one_process_step_and_save_an_ordinary_model(small_model_dir, tiny_model_dir, tmp_path, monkeypatch, restore_threads):
    from rounding import sgd_for_adamw
    from test_distributed import fixed_batch

    torchrun("main", tmp_path, small_model_dir, tiny_model_dir)
    torch.set_num_threads(1)

    batch, rewards = fixed_batch(str(tiny_model_dir))
    tiny_start = load_model(str(tiny_model_dir), device="cpu").state_dict()
    assert_same_change(torch.load(tmp_path / "grpo_update.pt"), grpo_update(str(tiny_model_dir), batch, rewards), tiny_start)

    sgd_for_adamw(monkeypatch)
    single = train("sft", sft_sgd(small_model_dir, tmp_path) + ["run.name=sft-single"])
    sharded = tmp_path / "sft-fsdp"
    small_start = load_model(str(small_model_dir), device="cpu").state_dict()
    assert_same_change(saved_weights(sharded), saved_weights(single), small_start)  # the final model/ loads with AutoModelForCausalLM
    rows = [[r for r in step_rows(d) if "loss/sft" in r] for d in (sharded, single)]
    assert [r["step"] for r in rows[0]] == [1, 2]
    for got, want in zip(*rows):
        assert got["loss/sft"] == pytest.approx(want["loss/sft"], rel=1e-5) and got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)

    run_dir = tmp_path / "grpo-fsdp"
    environment = json.loads((run_dir / "env.json").read_text())
    assert environment["parallel"] == "fsdp" and environment["world_size"] == 2
    assert [r["step"] for r in step_rows(run_dir) if "reward/mean" in r] == [1, 2]
    trained, start = saved_weights(run_dir), load_model(str(small_model_dir), device="cpu").state_dict()
    assert trained.keys() == start.keys() and any(not torch.equal(trained[k], start[k]) for k in start)
    (_, last), *_ = reversed(checkpoint_dirs(run_dir))
    assert (last / SHARDED / ".metadata").is_file() and not (last / "model").exists()
    state = torch.load(last / "trainer.pt", weights_only=True)
    assert "optimizer" not in state and len(state["rng"]) == 2  # the optimizer is in the shards


@pytest.mark.slow
@pytest.mark.numerics
def test_a_sharded_lora_run_killed_after_a_checkpoint_resumes_to_the_same_weights(small_model_dir, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    killed = torchrun("cut", tmp_path, small_model_dir, tiny_model_dir, check=False)
    assert killed.returncode != 0
    assert [s for s, _ in checkpoint_dirs(tmp_path / "cut")] == [1] and not (tmp_path / "cut" / "model").exists()
    torchrun("resume", tmp_path, small_model_dir, tiny_model_dir)

    whole, resumed = (load_file(tmp_path / name / "model" / "adapter_model.safetensors") for name in ("whole", "cut"))
    assert whole.keys() == resumed.keys() and any("lora_B" in k and v.abs().max() > 0 for k, v in whole.items())
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor), name
    assert step_rows(tmp_path / "cut") == step_rows(tmp_path / "whole")


def test_fsdp_refuses_what_it_cannot_do(small_model_dir):
    from r1kit.config import load, recipe_config_class

    with pytest.raises(R1kitError, match=r"run.parallel=fsdp shards the model over torchrun's processes, but this run has one"):
        strategy("fsdp", SINGLE)
    assert strategy("auto", Dist(0, 2)) == "ddp" and strategy("fsdp", Dist(0, 2)) == "fsdp" and strategy("ddp", SINGLE) == "none"
    for recipe, settings, message in [
        ("sample", [], r"sample cannot honour run.parallel=fsdp: it trains no model to shard"),
        ("sft", ["model.chunked_lm_head=true"], r"model.chunked_lm_head=true reads the LM head's weight"),
        ("grpo", ["grpo.ref_reset_every=2"], r"grpo.ref_reset_every copies the policy into a reference"),
        ("grpo", ["grpo.dynamic_sampling=true"], r"grpo.dynamic_sampling=true leaves the ranks different numbers of groups"),
    ]:
        with pytest.raises(R1kitError, match=message):
            check_fsdp(load(None, [f"model.path={small_model_dir}", *settings], recipe_config_class(recipe)), recipe)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
