"""The GRPO recipe end to end on a tiny model: it runs, logs what it promises, honours its switches,
and learns (a reward that can only rise by learning rises)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from rounding import assert_same_gradients, record_steps, relative_difference, sgd_for_adamw

from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.recipes import grpo
from r1kit.accel import workers as rollout_workers
from r1kit.recipes.grpo import GRPOConfig, PromptStream
from r1kit.rollout import HFEngine
from r1kit.train import reference
from r1kit.train.rollouts import has_signal


def ones_reward(completions, **kw):
    """Fraction of characters that are '1': a dense signal a random model can climb."""
    return [c.count("1") / max(1, len(c)) for c in completions]


def distinct_reward(completions, **kw):
    """Distinct characters: differs within every group of a random model, so every step updates."""
    return [len(set(c)) / 10 for c in completions]


def constant_reward(completions, **kw):
    return [0.5 for _ in completions]


def make_config(model_dir, tmp_path, **over) -> GRPOConfig:
    raw = {
        "model": {"path": str(model_dir)},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 64, "test_size": 8},
        "rewards": ["arithmetic", {"name": "format", "weight": 0.5}],
        "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.04},
        "sampling": {"max_new_tokens": 12},
        "optim": {"lr": 1e-3},
        "eval": {"k": 2, "max_new_tokens": 12},
        "run": {"output_dir": str(tmp_path), "name": "grpo", "progress": False, "tensorboard": False},
        "samples_every": 1,
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return from_dict(GRPOConfig, raw)


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not rollout_workers.available(), reason="rollout worker processes need fork (Linux)")
def test_grpo_with_rollouts_split_between_two_processes_evaluates_trains_and_saves(tiny_model_dir, tmp_path, monkeypatch):
    """On two threads the engine splits each rollout between this process and a forked worker
    (`accel/workers.py`); the first split comes from the evaluation before training, under
    inference mode, and the policy must still train."""
    from r1kit.accel.engine import AcceleratedEngine

    splits = []  # (optimizer steps taken so far, prompts) of every split rollout
    split = AcceleratedEngine._rollout_split
    monkeypatch.setattr(AcceleratedEngine, "_rollout_split", lambda self, *a: (splits.append((len(steps), len(a[0]))), split(self, *a))[1])
    threads = torch.get_num_threads()
    try:
        with record_steps() as steps:
            run_dir = grpo.train(make_config(tiny_model_dir, tmp_path, run__threads=2, eval_before=True))
    finally:
        torch.set_num_threads(threads)
    rows = [r for r in read_rows(run_dir) if "loss/policy" in r]
    assert len(rows) == len(steps) == 2 and all(math.isfinite(r["loss/policy"]) for r in rows)
    assert splits[0] == (0, 8)  # the evaluation of the 8 test prompts, before training, split its rollout
    assert json.loads((run_dir / "eval.json").read_text())["before"]["greedy_acc"] >= 0
    # ... and the parameters that split moved into shared memory trained and were saved
    start, trained = load_model(str(tiny_model_dir), device="cpu"), load_model(str(run_dir / "model"), device="cpu")
    assert any(not torch.equal(p, q) for p, q in zip(start.parameters(), trained.parameters()))


def test_grpo_run_writes_metrics_samples_eval_and_model(tiny_model_dir, tmp_path):
    run_dir = grpo.train(make_config(tiny_model_dir, tmp_path))
    rows = read_rows(run_dir)
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward/arithmetic/mean", "reward/format/mean", "reward/std", "reward/zero_std_frac", "completion/length_mean",
                "completion/length_max", "completion/truncated_frac", "kl", "clip/ratio_low", "clip/ratio_high", "entropy",
                "grad_norm", "loss/policy", "perf/step_s", "perf/tokens_per_s"):
        assert key in steps[0], key
    assert steps[0]["completion/length_max"] <= 12
    assert (run_dir / "samples" / "step_1.jsonl").is_file()
    ev = json.loads((run_dir / "eval.json").read_text())
    assert set(ev) >= {"before", "after"} and "pass@1" in ev["after"]
    assert (run_dir / "model" / "config.json").is_file()


def test_beta_zero_loads_no_reference_model(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "frozen_copy", lambda m: calls.append(m))
    grpo.train(make_config(tiny_model_dir, tmp_path, grpo={"steps": 1, "prompts_per_step": 2, "group_size": 2, "beta": 0.0}, eval_before=False))
    assert calls == []


def test_equal_rewards_leave_the_policy_unchanged(tiny_model_dir, tmp_path):
    # Every completion gets 0.5, so every group's advantage is 0 and (beta = 0) the update is a no-op.
    from r1kit.models.load import load_model

    before = load_model(str(tiny_model_dir)).state_dict()
    cfg = make_config(tiny_model_dir, tmp_path, rewards=[f"{__name__}:constant_reward"], eval_before=False,
                      grpo={"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.0})
    cfg.optim.weight_decay = 0.0
    after = load_model(str(grpo.train(cfg) / "model")).state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name


def test_dynamic_sampling_logs_dropped_groups(tiny_model_dir, tmp_path):
    cfg = make_config(tiny_model_dir, tmp_path, rewards=[f"{__name__}:constant_reward"], eval_before=False,
                      grpo={"steps": 1, "prompts_per_step": 2, "group_size": 2, "beta": 0.0, "dynamic_sampling": True, "max_resample": 2})
    rows = [r for r in read_rows(grpo.train(cfg)) if "dynamic/dropped_groups" in r]
    # All groups have equal rewards: 2 prompts per round, 3 rounds (1 + max_resample), all dropped.
    assert rows[0]["dynamic/dropped_groups"] == 6
    assert rows[0]["dynamic/sampled_prompts"] == 6


def test_has_signal_ignores_none_rewards():
    assert has_signal(torch.tensor([1.0, 0.0, float("nan")]))
    assert not has_signal(torch.tensor([1.0, 1.0, float("nan")]))
    assert not has_signal(torch.tensor([float("nan"), 0.0]))


def test_prompt_stream_covers_every_row_once_per_epoch():
    rows = [{"prompt": str(i)} for i in range(5)]
    stream = PromptStream(rows, seed=0)
    first = stream.take(5)
    assert sorted(r["prompt"] for r in first) == [str(i) for i in range(5)]


@pytest.mark.slow
def test_grpo_raises_a_learnable_reward(tiny_model_dir, tmp_path):
    # The reward is the fraction of '1' characters: a random model emits ~1% of them. GRPO must
    # push it up. Measured here: about 0.01 in the first steps -> above 0.2 after 25 steps.
    cfg = make_config(tiny_model_dir, tmp_path, rewards=[f"{__name__}:ones_reward"], eval_before=False,
                      grpo={"steps": 25, "prompts_per_step": 4, "group_size": 8, "beta": 0.0},
                      sampling={"max_new_tokens": 8}, optim={"lr": 1e-2, "warmup_steps": 0, "schedule": "constant"},
                      eval={"k": 0, "max_new_tokens": 4})
    rows = [r for r in read_rows(grpo.train(cfg)) if "reward/mean" in r]
    first = sum(r["reward/mean"] for r in rows[:3]) / 3
    last = sum(r["reward/mean"] for r in rows[-3:]) / 3
    assert last > first + 0.15, (first, last)


def test_logged_lr_is_the_lr_each_step_used(tiny_model_dir, tmp_path):
    # Warm-up over 2 updates at lr 1e-3: update 1 uses 1e-3 * 1/2, update 2 uses 1e-3 * 2/2, update 3
    # the constant 1e-3 (the scheduler already points at the next step's lr once a step is done).
    cfg = make_config(tiny_model_dir, tmp_path, grpo={"steps": 3, "prompts_per_step": 2, "group_size": 2, "beta": 0.0},
                      optim={"lr": 1e-3, "warmup_steps": 2, "schedule": "constant"}, eval_before=False, eval={"k": 0, "max_new_tokens": 12})
    rows = [r for r in read_rows(grpo.train(cfg)) if "reward/mean" in r]
    assert [r["lr"] for r in rows] == pytest.approx([5e-4, 1e-3, 1e-3])


@pytest.mark.parametrize("precision, expected", [("bf16", True), ("fp32", False), ("auto", False)])  # auto: fp32 on CPU
def test_precision_sets_bf16_autocast_for_rollouts_and_learner_passes(tiny_model_dir, tmp_path, monkeypatch, precision, expected):
    seen = {"generate": [], "logprobs": []}
    real_generate, real_logprobs = HFEngine.generate, grpo.completion_logprobs

    def generate(self, *a, **k):
        seen["generate"].append(torch.is_autocast_enabled("cpu"))
        return real_generate(self, *a, **k)

    def logprobs(*a, **k):
        seen["logprobs"].append(torch.is_autocast_enabled("cpu"))
        return real_logprobs(*a, **k)

    monkeypatch.setattr(HFEngine, "generate", generate)
    monkeypatch.setattr(grpo, "completion_logprobs", logprobs)
    cfg = make_config(tiny_model_dir, tmp_path, precision=precision, grpo={"steps": 1, "prompts_per_step": 2, "group_size": 2, "beta": 0.04},
                      eval_before=False, eval={"k": 0, "max_new_tokens": 4})
    run = grpo.train(cfg)
    row = next(r for r in read_rows(run) if "loss/policy" in r)
    assert math.isfinite(row["loss/policy"]) and math.isfinite(row["kl"])
    # one rollout (the final greedy evaluation runs outside the training loop, in the weights' dtype)
    assert seen["generate"][0] is expected and seen["logprobs"] == [expected, expected]  # reference, then policy
    assert all(p.dtype == torch.float32 for p in load_model(str(run / "model")).parameters())  # master weights stay fp32


def test_bf16_with_several_passes_recomputes_the_old_log_probs(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    real = grpo.completion_logprobs
    monkeypatch.setattr(grpo, "completion_logprobs", lambda *a, **k: calls.append(torch.is_grad_enabled()) or real(*a, **k))
    cfg = make_config(tiny_model_dir, tmp_path, precision="bf16", grpo={"steps": 1, "prompts_per_step": 2, "group_size": 2, "beta": 0.04, "num_iterations": 2},
                      eval_before=False, eval={"k": 0, "max_new_tokens": 4})
    grpo.train(cfg)
    assert calls == [False, False, True, True]  # reference, recomputed old log-probs, then mu = 2 policy passes


@pytest.mark.numerics
@pytest.mark.parametrize(
    "grpo_over",
    [
        {"loss_agg": "seq_mean_token_mean"},
        {"loss_agg": "token_mean", "mini_batches": 2, "num_iterations": 2},
        {"loss_agg": "seq_mean_token_sum_norm", "ratio_level": "sequence"},
    ],
    ids=["grpo", "dapo-token-mean-mini-batches", "dr-grpo-gspo"],
)
def test_micro_batches_accumulate_the_whole_mini_batchs_update(tiny_model_dir, tmp_path, monkeypatch, grpo_over):
    """grpo.micro_batch_rows splits each mini-batch's forward/backward (and the no-grad passes) into
    pieces of at most that many rows, uneven here (8 rows -> 3 + 3 + 2, or 4 -> 3 + 1), weighted so
    that the accumulated gradient and the logged metrics are the whole mini-batch's.

    Compared where the claim lives: the gradient every optimizer step is given. Plain SGD instead of
    AdamW keeps the two runs a rounding apart over the 3 steps (Adam would turn a near-zero gradient's
    rounding into a full lr step, `rounding.py`)."""
    sgd_for_adamw(monkeypatch)

    def run(name, micro):
        config = make_config(
            tiny_model_dir, tmp_path, rewards=[f"{__name__}:distinct_reward"], run__name=name, run__threads=1, eval_before=False, samples_every=0,
            grpo={"steps": 3, "prompts_per_step": 2, "group_size": 4, "beta": 0.04, "micro_batch_rows": micro, **grpo_over},
            optim={"lr": 0.1, "warmup_steps": 0, "max_grad_norm": 0.0},  # unclipped: a mis-scaled gradient stays visible
        )  # fmt: skip
        with record_steps() as steps:
            run_dir = grpo.train(config)
        return [r for r in read_rows(run_dir) if "loss/policy" in r], steps

    (whole, whole_steps), (micro, micro_steps) = run("whole", 0), run("micro", 3)
    assert len(whole) == len(micro) == 3
    assert len(whole_steps) == 3 * grpo_over.get("mini_batches", 1) * grpo_over.get("num_iterations", 1)
    # a reward that differs within groups: real updates from the first step
    assert min(w["grad_norm"] for w in whole) > 0.01
    assert_same_gradients(micro_steps, whole_steps)
    for w, m in zip(whole, micro):
        for key in ("loss/policy", "kl", "entropy", "grad_norm", "reward/mean", "clip/ratio_high"):
            assert m[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), key


def test_negative_micro_batch_rows_is_one_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(R1kitError, match="config key 'grpo.micro_batch_rows' must be at least 0, got -1"):
        grpo.train(make_config(tiny_model_dir, tmp_path, grpo={"steps": 1, "prompts_per_step": 2, "group_size": 4, "micro_batch_rows": -1}))


@pytest.mark.numerics
def test_kl_ratio_changes_only_the_kl_terms_gradient(tiny_model_dir, tmp_path, monkeypatch):
    """grpo.kl_ratio reaches the loss: the first step (policy = reference, KL and its gradient 0
    either way) is given the same gradient, the second's rollouts are the same and its gradient is
    not. Plain SGD instead of AdamW, so that a rounding-sized difference after the first step stays
    rounding-sized (`rounding.py`)."""
    sgd_for_adamw(monkeypatch)

    def run(kl_ratio):
        config = make_config(
            tiny_model_dir, tmp_path, rewards=[f"{__name__}:distinct_reward"], run__name=f"kl-ratio-{kl_ratio}", run__threads=1, eval_before=False,
            samples_every=0, grpo={"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 1.0, "kl_ratio": kl_ratio},
            optim={"lr": 0.1, "warmup_steps": 0, "max_grad_norm": 0.0},
        )  # fmt: skip
        with record_steps() as steps:
            run_dir = grpo.train(config)
        return [r for r in read_rows(run_dir) if "grad_norm" in r], steps

    (plain, plain_steps), (weighted, weighted_steps) = run(False), run(True)
    assert len(plain_steps) == len(weighted_steps) == 2
    assert_same_gradients(weighted_steps[:1], plain_steps[:1])
    assert plain[1]["reward/mean"] == weighted[1]["reward/mean"] and plain[1]["kl"] == pytest.approx(weighted[1]["kl"], rel=1e-4)
    # The KL term's extra k * grad log pi: 2% of the gradient here, against ~1e-6 for rounding.
    assert plain[1]["kl"] > 0 and relative_difference(weighted_steps[1], plain_steps[1]) > 1e-3
