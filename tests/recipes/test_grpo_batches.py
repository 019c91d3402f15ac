"""How the GRPO recipe builds and splits its batch: RLOO leaves a None reward out of the other rows'
baselines, REINFORCE takes the reward itself, groups sampled in several dynamic-sampling rounds
keep one prompt index per group, and `grpo.mini_batches` optimizer steps are taken whatever the
number of rows, as under DDP."""

from __future__ import annotations

import math

import pytest
import torch

from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig, PromptStream
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import HFEngine, SamplingParams
from r1kit.train.rollouts import collect

ROUND_CALLS = {"n": 0}


def round_reward(completions, **kw):
    """First call (2 groups of 2): only the first group has a spread, so dynamic sampling keeps it
    and samples one more prompt; second call: that group has a spread too."""
    ROUND_CALLS["n"] += 1
    return [0.0, 1.0, 0.5, 0.5] if ROUND_CALLS["n"] == 1 else [0.0, 1.0]


def config(**grpo_args) -> GRPOConfig:
    return from_dict(GRPOConfig, {
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 8},
        "rewards": [f"{__name__}:round_reward"],
        "grpo": {"prompts_per_step": 2, "group_size": 2, "beta": 0.0, **grpo_args},
        "sampling": {"max_new_tokens": 4},
    })  # fmt: skip


def test_rloo_leaves_a_none_reward_out_of_the_other_rows_baselines():
    # Group [1, None, 0, 0]: the valid rows are 1, 0, 0. Row 0: 1 - mean(0, 0) = 1; rows 2 and 3:
    # 0 - mean(1, 0) = -0.5; the None row gets 0. (Read as 0, the None row would pull every
    # baseline: row 0 would get 1 - mean(0, 0, 0) = 1 and rows 1-3 0 - 1/3.)
    adv = grpo.advantages_for(config(advantage="rloo", group_size=4), torch.tensor([1.0, math.nan, 0.0, 0.0]))
    assert adv.tolist() == pytest.approx([1.0, 0.0, -0.5, -0.5], abs=1e-7)


def test_reinforce_takes_each_reward_as_its_advantage_and_refuses_a_scale():
    # No baseline: A = r, a None reward gives 0; an all-equal group still pushes up by its reward.
    adv = grpo.advantages_for(config(advantage="reinforce", group_size=2), torch.tensor([1.5, math.nan, 0.5, 0.5]))
    assert adv.tolist() == [1.5, 0.0, 0.5, 0.5]
    for advantage in ("reinforce", "rloo"):
        with pytest.raises(R1kitError, match=f"grpo.scale=none divides GRPO's advantages, but grpo.advantage={advantage}"):
            grpo.train(config(advantage=advantage, scale="none"))


def test_groups_from_several_sampling_rounds_keep_one_prompt_index_per_group(tiny_model_dir, char_tokenizer):
    ROUND_CALLS["n"] = 0
    cfg = config(dynamic_sampling=True, max_resample=3)
    model = load_model(str(tiny_model_dir), device="cpu")
    rows = [{"prompt": f"{a}+{a}", "answer": str(2 * a)} for a in range(8)]
    g = cfg.grpo
    batch, rewards, metrics, kept_rows = collect(
        HFEngine(model, char_tokenizer), char_tokenizer, RewardComposer(cfg.rewards), PromptStream(rows, 0), 1, prompts=g.prompts_per_step,
        group_size=g.group_size, sampling=cfg.sampling, data=cfg.data, seed=0, dynamic_sampling=True, max_resample=3,
    )  # fmt: skip
    assert ROUND_CALLS["n"] == 2 and metrics["dynamic/dropped_groups"] == 1
    assert len(batch) == 4 and len(kept_rows) == 2
    assert rewards.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batch.prompt_index == [0, 0, 1, 1]  # row i answers prompt i // G, as one rollout lays them out


def test_every_mini_batch_takes_an_optimizer_step_when_the_rows_do_not_divide(tiny_model_dir, char_tokenizer):
    # 3 prompts x G=2 = 6 rows in 4 mini-batches: 2 + 2 + 1 + 1 rows, 4 optimizer steps (the
    # schedule was built for prompts_per_step * ... = 4 updates a step), as DDP's tensor_split gives.
    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), device="cpu")
    prompts = [char_tokenizer(f"Q: {a}+1=?\nA:", add_special_tokens=False)["input_ids"] for a in (1, 2, 3)]
    batch = HFEngine(model, char_tokenizer).generate(prompts, SamplingParams(n=2, max_new_tokens=4, seed=0))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    grpo.update(config(prompts_per_step=3, mini_batches=4), model, None, opt, sched, batch, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5, 0.0]))
    assert sched.last_epoch == 4
