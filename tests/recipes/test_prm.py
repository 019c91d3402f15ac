"""Process reward models end to end on a 1-layer, hidden-32 model: `r1kit prm` with each label
source, the saved PRM as a scorer and a reward (`prm:PATH`), and GRPO with step rewards."""

from __future__ import annotations

import json
import math

import pytest
import torch

from r1kit.config import load
from r1kit.data.io import write_jsonl
from r1kit.errors import R1kitError
from r1kit.recipes import grpo, prm
from r1kit.report.logger import read_metrics
from r1kit.rewards import get
from r1kit.rewards.prm import StepScorer
from r1kit.train.process import StepRewards, build_rewards


def overrides(model_dir, out, name, *extra):
    base = [f"model.path={model_dir}", "model.device=cpu", f"run.output_dir={out}", f"run.name={name}", "run.progress=false",
            "run.tensorboard=false", "run.threads=1"]  # fmt: skip
    return base + list(extra)


TASK_RUN = ["labels.separator=' '", "data.task_params={n_operands: 2, digits: 1}", "data.train_size=6", "data.test_size=3",
            "samples_per_prompt=2", "best_of_n.n=2", "sampling.max_new_tokens=12", "steps=3", "batch_size=4", "optim.warmup_steps=0"]  # fmt: skip


@pytest.fixture(scope="module")
def task_prm(small_model_dir, tmp_path_factory):
    config = load(None, overrides(small_model_dir, tmp_path_factory.mktemp("prm"), "prm", *TASK_RUN), prm.PRMConfig)
    return prm.train(config)


def test_prm_run_logs_step_metrics_and_a_best_of_n_table(task_prm):
    rows = read_metrics(task_prm)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 3]
    assert {"loss/prm", "prm/step_accuracy", "grad_norm"} <= set(rows[1])
    assert {"eval/step_accuracy", "eval/auroc", "eval/steps"} <= set(rows[-1])
    results = json.loads((task_prm / "eval.json").read_text())
    bon = results["best_of_n"]
    assert bon["orm"].startswith("skipped")
    # The oracle picks a right sample whenever there is one: no selector beats it.
    for key in ("prm_min", "prm_prod", "majority", "pass@1"):
        assert 0.0 <= bon[key] <= bon["oracle"] + 1e-12
    assert json.loads((task_prm / "model" / "r1kit_prm.json").read_text())["separator"] == " "


def test_saved_prm_scores_steps_as_training_measured_them(task_prm):
    """StepScorer (and `prm:PATH`) lay the held-out solutions out as the recipe did: the same
    probabilities, and the reward is the weakest step's."""
    solutions = [json.loads(line) for line in (task_prm / "test_steps.jsonl").read_text().splitlines()]
    assert len(solutions) == 3 * 2 and all(len(s["labels"]) == len(s["scores"]) for s in solutions)
    scorer = StepScorer.load(str(task_prm / "model"), "cpu")
    probs = scorer.score([s["prompt"] for s in solutions], [s["text"] for s in solutions])
    for got, s in zip(probs, solutions):
        assert got == pytest.approx(s["scores"], abs=1e-5)
    reward = get(f"prm:{task_prm / 'model'}")([s["text"] for s in solutions], prompt=[s["prompt"] for s in solutions])
    assert reward == pytest.approx([min(s["scores"]) if s["scores"] else None for s in solutions], abs=1e-5)


def test_prm_from_a_step_labelled_file_learns_a_separable_rule(small_model_dir, tmp_path):
    # Steps of `!` are wrong, worked sums right: a 1-layer model separates them in a few steps.
    def rows(n):
        return [{"prompt": f"{i}+1=?", "steps": [f"{i}+1={i + 1}", "!!!", f"so {i + 1}"][: 2 + i % 2], "labels": [1, 0, 1][: 2 + i % 2]} for i in range(n)]

    write_jsonl(tmp_path / "train.jsonl", rows(8))
    write_jsonl(tmp_path / "test.jsonl", rows(4))
    config = load(None, overrides(small_model_dir, tmp_path, "prm-file", "labels.source=file", f"data.path={tmp_path / 'train.jsonl'}",
                                  f"data.test_path={tmp_path / 'test.jsonl'}", "steps=30", "batch_size=8", "optim.lr=3e-3", "optim.warmup_steps=0"), prm.PRMConfig)  # fmt: skip
    results = json.loads((prm.train(config) / "eval.json").read_text())
    assert results["after"]["steps"] == 10 and results["after"]["step_accuracy"] == 1.0 and results["after"]["auroc"] == 1.0
    assert "best_of_n" not in results  # no policy samples to rerank


def test_prm_math_shepherd_labels_are_shares_of_the_rollouts(small_model_dir, tmp_path):
    config = load(None, overrides(small_model_dir, tmp_path, "prm-ms", *TASK_RUN, "labels.source=rollouts", "labels.rollouts=2", "steps=1"), prm.PRMConfig)
    solutions = [json.loads(line) for line in (prm.train(config) / "test_steps.jsonl").read_text().splitlines()]
    labels = [v for s in solutions for v in s["labels"]]
    assert labels and all(v in (0.0, 0.5, 1.0) for v in labels)


def test_prm_config_errors_name_the_field(small_model_dir, tmp_path):
    with pytest.raises(R1kitError, match="data.test_path"):
        prm.train(load(None, overrides(small_model_dir, tmp_path, "e1", "labels.source=file", "data.path=x.jsonl"), prm.PRMConfig))
    with pytest.raises(R1kitError, match="step checker"):
        prm.train(load(None, overrides(small_model_dir, tmp_path, "e2", "data.task=countdown", "data.train_size=2", "data.test_size=1",
                                       "samples_per_prompt=1", "best_of_n.n=1", "sampling.max_new_tokens=4"), prm.PRMConfig))  # fmt: skip


# --------------------------------------------------------------------------------------------
# GRPO with step rewards


def test_grpo_token_advantages_add_the_outcome_advantage_to_the_process_ones():
    # One prompt, G=2; output 0 has steps rewarded 1.0, 0.0 ending at tokens 0 and 2; output 1 one
    # step rewarded 1.0 at token 1 (T=3). Normalised over {1, 0, 1}: +0.577350, -1.154701 (see
    # tests/algorithms/test_process.py). Outcome advantages +1 and -1, process weight 2:
    #   output 0: 1 + 2 * [0.577350 - 1.154701, -1.154701, -1.154701] = [-0.154701, -1.309401, -1.309401]
    #   output 1: -1 + 2 * [0.577350, 0.577350, 0] = [0.154701, 0.154701, -1]
    steps = StepRewards(torch.tensor([[1.0, 0.0], [1.0, math.nan]]), torch.tensor([[0, 2], [1, 0]]), num_tokens=3, weight=2.0)
    adv = steps.token_advantages(torch.tensor([1.0, -1.0]), group_size=2)
    # eps = 1e-4 is added to the std 0.577350: relative change 1.7e-4, within 1e-3 of the values.
    assert adv.flatten().tolist() == pytest.approx([-0.154701, -1.309401, -1.309401, 0.154701, 0.154701, -1.0], abs=1e-3)


def test_grpo_with_a_prm_reward_logs_the_prm_next_to_the_verifier(small_model_dir, task_prm, tmp_path):
    config = load(None, overrides(
        small_model_dir, tmp_path, "grpo-prm", f"rewards=['prm:{task_prm / 'model'}']", "grpo.steps=2", "grpo.prompts_per_step=2",
        "grpo.group_size=2", "sampling.max_new_tokens=8", "data.task_params={n_operands: 2, digits: 1}", "data.train_size=4",
        "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4", "optim.lr=1e-3",
    ), grpo.GRPOConfig)  # fmt: skip
    rows = [r for r in read_metrics(grpo.train(config)) if "loss/policy" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"prm/score", "prm/verified_acc", "prm/step_score", "prm/step_verified", "prm/score_minus_verified", "reward/prm/mean"} <= set(r)
        assert r["prm/score_minus_verified"] == pytest.approx(r["prm/score"] - r["prm/verified_acc"])


def test_grpo_process_reward_settings_it_cannot_honour_are_errors(task_prm):
    from r1kit.config import DataArgs

    path = f"prm:{task_prm / 'model'}"
    with pytest.raises(R1kitError, match="one `prm:PATH`"):
        build_rewards([path, path], DataArgs())
    with pytest.raises(R1kitError, match="dynamic_sampling"):
        build_rewards([path], DataArgs(), dynamic_sampling=True)
    with pytest.raises(R1kitError, match="no kwargs"):
        build_rewards([{"name": path, "kwargs": {"x": 1}}], DataArgs())
    composer, process = build_rewards([path, "format"], DataArgs(), "cpu")
    assert composer.names == ["prm", "format"] and [s.weight for s in composer.specs] == [0.0, 1.0] and process is not None


def test_ppo_step_rewards_sit_on_the_tokens_that_end_the_steps():
    # Row 0: steps 0.9 and 0.2 ending at tokens 1 and 3; row 1: one step 0.5 at token 0. Weight 2.
    steps = StepRewards(torch.tensor([[0.9, 0.2], [0.5, math.nan]]), torch.tensor([[1, 3], [0, 0]]), num_tokens=4, weight=2.0)
    assert steps.token_rewards().flatten().tolist() == pytest.approx([0.0, 1.8, 0.0, 0.4, 1.0, 0.0, 0.0, 0.0])


def test_ppo_with_a_prm_reward_runs_and_logs_the_prm_next_to_the_verifier(small_model_dir, task_prm, tmp_path):
    from r1kit.recipes import ppo

    config = load(None, overrides(
        small_model_dir, tmp_path, "ppo-prm", f"rewards=[arithmetic, 'prm:{task_prm / 'model'}']", "ppo.steps=1", "ppo.prompts_per_step=2", "ppo.mini_batches=1",
        "sampling.max_new_tokens=8", "data.task_params={n_operands: 2, digits: 1}", "data.train_size=4", "data.test_size=2", "eval.k=0",
        "eval.max_new_tokens=4", "optim.lr=1e-3",
    ), ppo.PPOConfig)  # fmt: skip
    rows = [r for r in read_metrics(ppo.train(config)) if "loss/policy" in r]
    assert len(rows) == 1 and {"prm/score", "prm/verified_acc", "reward/prm/mean", "reward/arithmetic/mean"} <= set(rows[0])


class FixedScorer:
    """A PRM stand-in: fixed step probabilities, the arithmetic layout."""

    separator = " "

    def __init__(self, probs):
        self.probs = probs

    def score(self, prompts, completions):
        return self.probs

    def steps(self, completions):
        return [c.split() for c in completions]


def test_process_rewards_put_each_step_on_the_token_that_ends_it(char_tokenizer):
    from r1kit.config import DataArgs
    from r1kit.rollout import RolloutBatch
    from r1kit.train.process import ProcessRewards

    texts = ["3+4=7 7+1=8</answer>", "3+4=8"]  # character tokens; `</answer>` is one token
    ids = [char_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    C = max(map(len, ids))
    completion = torch.tensor([x + [0] * (C - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (C - len(x)) for x in ids])
    batch = RolloutBatch(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), completion, mask, torch.zeros(2, C),
                         ["stop", "eos"], [0, 0], 2, 0, texts)  # fmt: skip
    process = ProcessRewards(FixedScorer([[0.9, 0.6], [0.2]]), DataArgs(task="arithmetic"))
    metrics: dict[str, float] = {}
    steps = process.steps(batch, [{"prompt": "3+4+1=?", "answer": "8"}], metrics, char_tokenizer)
    # Row 0: "3+4=7 " ends at the space (token 5); "7+1=8</answer>" at `</answer>` (token 11).
    # Row 1: one step, ending at its last token (4).
    assert steps.ends[0].tolist() == [5, 11] and steps.ends[1, 0] == 4 and steps.num_tokens == C == 12
    assert steps.rewards[0].tolist() == pytest.approx([0.9, 0.6]) and math.isnan(steps.rewards[1, 1])
    # PRM: weakest steps 0.6 and 0.2 -> 0.4. The answer verifier finds 8 in both rows -> 1.0, though
    # row 1 got there by a wrong step (`3+4=8`), which the step checker sees: 2 of 3 steps right.
    assert metrics["prm/score"] == pytest.approx(0.4) and metrics["prm/steps_mean"] == 1.5
    assert metrics["prm/verified_acc"] == 1.0 and metrics["prm/score_minus_verified"] == pytest.approx(-0.6)
    assert metrics["prm/step_verified"] == pytest.approx(2 / 3)
