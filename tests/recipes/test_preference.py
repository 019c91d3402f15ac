"""Preference learning end to end on a 1-layer, hidden-32 model: reward model (Bradley-Terry and
Christiano), the reward model as a reward function, PPO, DPO-family losses. Each recipe runs 2-3
steps; the numbers checked are the ones worked out by hand or forced by construction."""

from __future__ import annotations

import gc
import json
import math
import shutil
import weakref

import pytest
import torch
from rounding import assert_same_gradients, record_steps, sgd_for_adamw

from r1kit.accel import onednn
from r1kit.config import load
from r1kit.data.io import write_jsonl
from r1kit.data.preference import synthetic_preferences
from r1kit.models.tiny import TinyModelConfig, save_tiny
from r1kit.models.value_head import token_scalars
from r1kit.recipes import dpo, ppo, reward_model
from r1kit.report.logger import read_metrics
from r1kit.rewards import get

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory, char_tokenizer):
    return save_tiny(tmp_path_factory.mktemp("small-model"), char_tokenizer, SMALL, seed=0)


def overrides(model_dir, out, name, *extra):
    base = [f"model.path={model_dir}", "model.device=cpu", f"run.output_dir={out}", f"run.name={name}", "run.progress=false", "run.tensorboard=false"]
    return base + list(extra)


def check_run_dir(run_dir, keys):
    rows = read_metrics(run_dir)
    assert rows and all("step" in r for r in rows)
    logged = set().union(*rows)
    assert set(keys) <= logged, set(keys) - logged
    results = json.loads((run_dir / "eval.json").read_text())
    assert set(results) >= {"before", "after"}
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "config.yaml").is_file()
    return rows, results


@pytest.fixture(scope="module")
def separable_rm(small_model_dir, tmp_path_factory):
    """A reward model trained briefly on pairs a 1-layer model separates at once: a worked
    solution (chosen) against a run of `!` (rejected)."""
    out = tmp_path_factory.mktemp("rm")
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": "!" * 8} for r in synthetic_preferences("train", 16)]
    test = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": "!" * 8} for r in synthetic_preferences("test", 2)]
    write_jsonl(out / "train.jsonl", pairs)
    write_jsonl(out / "test.jsonl", test)
    config = load(None, overrides(small_model_dir, out, "rm", f"data.path={out / 'train.jsonl'}", f"data.test_path={out / 'test.jsonl'}", "steps=25", "batch_size=8", "optim.lr=3e-3", "optim.warmup_steps=0"), reward_model.RewardModelConfig)
    return reward_model.train(config), test


# --------------------------------------------------------------------------------------------
# Reward model


def test_reward_model_bradley_terry_run_writes_metrics_and_separates_trivial_pairs(separable_rm):
    run_dir, _ = separable_rm
    rows, results = check_run_dir(run_dir, ["loss/rm", "rm/accuracy", "rm/margin", "eval/accuracy", "eval/margin"])
    assert [r["step"] for r in rows] == [0, *range(1, 26), 25]
    assert results["after"]["accuracy"] == 1.0 and results["after"]["margin"] > 1.0
    assert json.loads((run_dir / "model" / "r1kit_reward.json").read_text())["pooling"] == "last"


def test_reward_model_christiano_loss_runs_and_saves_sum_pooling(small_model_dir, tmp_path):
    config = load(None, overrides(small_model_dir, tmp_path, "rm-c", "loss=christiano", "steps=2", "batch_size=4", "data.train_size=8", "data.test_size=4"), reward_model.RewardModelConfig)
    run_dir = reward_model.train(config)
    rows, results = check_run_dir(run_dir, ["loss/rm", "rm/accuracy", "eval/accuracy/wrong"])
    assert [r["step"] for r in rows] == [0, 1, 2, 2]
    assert json.loads((run_dir / "model" / "r1kit_reward.json").read_text())["pooling"] == "sum"


def test_reward_fn_returns_one_float_per_completion_ranks_chosen_first_and_matches_training_scores(separable_rm):
    run_dir, test = separable_rm
    fn = get(f"model:{run_dir / 'model'}")
    chosen = fn([t["chosen"] for t in test], prompt=[t["prompt"] for t in test], answer=["1", "2"])
    rejected = fn([t["rejected"] for t in test], prompt=[t["prompt"] for t in test])
    assert len(chosen) == 2 and all(isinstance(x, float) for x in chosen + rejected)
    assert all(c > r for c, r in zip(chosen, rejected))
    # The function scores prompt + completion exactly as training measured the held-out margin.
    margin = json.loads((run_dir / "eval.json").read_text())["after"]["margin"]
    assert sum(c - r for c, r in zip(chosen, rejected)) / 2 == pytest.approx(margin, abs=1e-4)
    # Without a prompt column (GRPO today) the completion alone is scored: still one float each.
    alone = fn(["<think>1+1=2</think><answer>2</answer>", "!!!!!!!!", ""])
    assert isinstance(alone[0], float) and alone[0] > alone[1] and alone[2] is None


# --------------------------------------------------------------------------------------------
# PPO


def test_ppo_token_rewards_put_kl_on_every_token_and_the_score_on_the_last_real_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -1.7, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = ppo.token_rewards(logp, ref, mask, torch.tensor([2.0, -1.0]), kl_coef=0.1)
    # k1 = logp - ref: row 0 [0.5, -1.0, 0.0]; row 1 [0.0, 1.0, (padding) 0]
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [0.0, 1.0, 0.0]]))
    # -0.1 * k1, plus the score on the last real token (index 2 in row 0, index 1 in row 1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0], [0.0, -0.1 - 1.0, 0.0]]))


def test_ppo_runs_with_rule_and_learned_rewards_and_logs_the_ppo_metrics(small_model_dir, separable_rm, tmp_path):
    rm_dir = separable_rm[0] / "model"
    config = load(None, overrides(
        small_model_dir, tmp_path, "ppo", f"rewards=[arithmetic, 'model:{rm_dir}']", "ppo.steps=2", "ppo.prompts_per_step=4",
        "ppo.ppo_epochs=2", "ppo.mini_batches=2", "ppo.adaptive_kl=true", "sampling.max_new_tokens=6", "data.train_size=8",
        "data.test_size=2", "eval.k=1", "eval.max_new_tokens=6", "optim.lr=1e-3",
    ), ppo.PPOConfig)  # fmt: skip
    rows, results = check_run_dir(ppo.train(config), [
        "loss/policy", "loss/value", "vf/explained_var", "vf/clipfrac", "ppo/approx_kl", "clip/region", "returns/mean",
        "reward/mean", "reward/model/mean", "reward/arithmetic/mean", "objective/kl", "kl_coef", "eval/pass@1",
    ])  # fmt: skip
    steps = [r for r in rows if "loss/policy" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # policy = reference at the first rollout
    assert steps[1]["kl_coef"] != 0.05 and "pass@1" in results["before"]  # the adaptive controller moved beta


@pytest.mark.numerics
def test_ppo_saves_its_trained_value_model_which_loads_back_with_identical_values(small_model_dir, tmp_path, monkeypatch):
    trained = []
    real_load = ppo.load_scalar_model
    monkeypatch.setattr(ppo, "load_scalar_model", lambda *a, **k: trained.append(real_load(*a, **k)) or trained[-1])
    config = load(None, overrides(
        small_model_dir, tmp_path, "ppo", "rewards=[arithmetic]", "ppo.steps=1", "ppo.prompts_per_step=4", "ppo.ppo_epochs=1",
        "ppo.mini_batches=1", "sampling.max_new_tokens=6", "data.train_size=4", "data.test_size=2", "eval.k=1",
        "eval.max_new_tokens=4", "eval_before=false", "ppo.value_lr=1e-2",
    ), ppo.PPOConfig)  # fmt: skip
    run_dir = ppo.train(config)
    assert (run_dir / "value_model" / "config.json").is_file() and (run_dir / "model" / "config.json").is_file()
    loaded = real_load(str(run_dir / "value_model"), None)
    start = real_load(str(small_model_dir), 0)
    ids = torch.randint(0, loaded.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    attn = torch.tensor([[1] * 7, [0, 0] + [1] * 5])  # one left-padded row
    with torch.no_grad():
        values = [token_scalars(m.eval(), ids, attn) for m in (trained[0], loaded)]
    saved, kept = loaded.state_dict(), trained[0].state_dict()
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in kept)  # head and backbone, bit for bit
    # Equal weights, so equal values up to float rounding: 7e-9 was seen here, the CPU kernels need
    # not sum in the same order for two copies of one model.
    assert torch.allclose(values[0], values[1], rtol=0, atol=1e-6) and values[0].abs().max() > 1e-3
    # ... and it is the trained critic: its backbone moved away from the policy checkpoint.
    moved = [name for name, q in start.named_parameters() if "score" not in name and not torch.equal(q, loaded.get_parameter(name))]
    assert moved


# --------------------------------------------------------------------------------------------
# DPO


def test_dpo_computes_reference_logprobs_once_and_releases_the_reference(small_model_dir, tmp_path, monkeypatch):
    ref_dir = shutil.copytree(small_model_dir, tmp_path / "ref")
    calls, refs = [], []
    real_load = dpo.load_model

    def counting_load(path, *args, **kwargs):
        model = real_load(path, *args, **kwargs)
        if str(path) == str(ref_dir):
            model.register_forward_hook(lambda *_: calls.append(any(onednn.routes(m) for m in model.modules())))
            refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(dpo, "load_model", counting_load)
    config = load(None, overrides(small_model_dir, tmp_path, "dpo", f"ref_model={ref_dir}", "steps=3", "batch_size=4", "data.train_size=12",
                                  "data.test_size=4", "eval_batch_size=8", "eval.k=1", "eval.max_new_tokens=6", "task_eval_size=2", "optim.lr=1e-3"), dpo.DPOConfig)  # fmt: skip
    rows, results = check_run_dir(dpo.train(config), ["loss/dpo", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "eval/pref/accuracy", "eval/greedy_acc", "eval/pass@1"])
    # One pass over train + test pairs; each batch runs its distinct prompts, then the continuations
    # (chosen and rejected share a prompt: see completion_logprobs' share_prompts).
    assert len(refs) == 1 and len(calls) == 2 * (math.ceil(12 / 8) + math.ceil(4 / 8))
    assert set(calls) == {onednn.onednn_available()}  # the reference runs on the policy's fast paths (run.accel=auto)
    gc.collect()
    assert refs[0]() is None  # nothing holds the reference after the run
    # The reference equals the starting policy, so every implicit reward starts at exactly 0.
    assert results["before"]["pref/accuracy"] == 0.5 and results["before"]["pref/margin"] == 0.0
    assert {"greedy_acc", "pass@1", "pref/logp_accuracy"} <= set(results["after"])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "robust", "simpo"])
def test_dpo_loss_types_train_two_steps(small_model_dir, tmp_path, loss_type):
    config = load(None, overrides(small_model_dir, tmp_path, loss_type, f"loss_type={loss_type}", "label_smoothing=0.1", "steps=2", "batch_size=4",
                                  "data.train_size=8", "data.test_size=4", "task_eval=false", "optim.lr=1e-2", "optim.warmup_steps=0"), dpo.DPOConfig)  # fmt: skip
    rows, results = check_run_dir(dpo.train(config), ["loss/dpo", "rewards/margin"])
    losses = [r["loss/dpo"] for r in rows if "loss/dpo" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert "greedy_acc" not in results["after"]
    if loss_type != "simpo":
        assert results["before"]["pref/margin"] == 0.0 and results["after"]["pref/margin"] != 0.0


def test_rpo_adds_alpha_times_the_chosen_nll_and_keeps_the_chosen_likelihood_higher(small_model_dir, tmp_path):
    def run(name, alpha):
        config = load(None, overrides(small_model_dir, tmp_path, name, f"rpo_alpha={alpha}", "steps=3", "batch_size=4", "data.train_size=12",
                                      "data.test_size=4", "task_eval=false", "optim.lr=1e-2", "optim.warmup_steps=0"), dpo.DPOConfig)  # fmt: skip
        rows, results = check_run_dir(dpo.train(config), ["loss/dpo", "loss/nll", "loss/total", "eval/pref/chosen_nll"])
        return [r for r in rows if "loss/total" in r], results

    plain, plain_results = run("dpo", 0.0)
    rpo, rpo_results = run("rpo", 1.0)
    assert all(r["loss/total"] == r["loss/dpo"] for r in plain)
    assert all(r["loss/total"] == pytest.approx(r["loss/dpo"] + 1.0 * r["loss/nll"], rel=1e-5) for r in rpo)
    # Same seed, same batches, same start: the first step's losses agree; after training the
    # NLL term has left the held-out chosen completions more likely than plain DPO did.
    assert rpo[0]["loss/dpo"] == pytest.approx(plain[0]["loss/dpo"]) and rpo[0]["loss/nll"] == pytest.approx(plain[0]["loss/nll"])
    assert plain_results["before"]["pref/chosen_nll"] == rpo_results["before"]["pref/chosen_nll"]
    assert rpo_results["after"]["pref/chosen_nll"] < plain_results["after"]["pref/chosen_nll"]


def test_ppo_logs_the_lr_each_update_used(small_model_dir, tmp_path):
    # One update per step, warm-up over 2 updates at lr 1e-3: step 1 uses 1e-3 * 1/2, step 2 uses 1e-3.
    config = load(None, overrides(
        small_model_dir, tmp_path, "ppo-lr", "rewards=[arithmetic]", "ppo.steps=2", "ppo.prompts_per_step=2", "ppo.ppo_epochs=1",
        "ppo.mini_batches=1", "sampling.max_new_tokens=6", "data.train_size=4", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=6",
        "optim.lr=1e-3", "optim.warmup_steps=2", "optim.schedule=constant",
    ), ppo.PPOConfig)  # fmt: skip
    steps = [r for r in read_metrics(ppo.train(config)) if "loss/policy" in r]
    assert [r["lr"] for r in steps] == pytest.approx([5e-4, 1e-3])


def test_ppo_bf16_autocasts_rollout_and_forwards_and_recomputes_the_old_log_probs(small_model_dir, tmp_path, monkeypatch):
    calls = []
    real = ppo.completion_logprobs

    def logprobs(model, *a, **k):
        calls.append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
        return real(model, *a, **k)

    monkeypatch.setattr(ppo, "completion_logprobs", logprobs)
    config = load(None, overrides(
        small_model_dir, tmp_path, "ppo-bf16", "rewards=[arithmetic]", "ppo.steps=1", "ppo.prompts_per_step=2", "ppo.ppo_epochs=1",
        "ppo.mini_batches=1", "sampling.max_new_tokens=6", "data.train_size=4", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4",
        "eval_before=false", "precision=bf16",
    ), ppo.PPOConfig)  # fmt: skip
    rows = [r for r in read_metrics(ppo.train(config)) if "loss/policy" in r]
    assert math.isfinite(rows[0]["loss/policy"]) and math.isfinite(rows[0]["loss/value"])
    # reference and recomputed old log-probs without grad, then the policy's own pass with grad: all under autocast
    assert calls == [(True, False), (True, False), (True, True)]


@pytest.mark.numerics
@pytest.mark.parametrize("recipe", ["dpo", "ppo"])
def test_the_chunked_lm_head_trains_as_the_full_logits_do(small_model_dir, tmp_path, monkeypatch, recipe):
    # model.chunked_lm_head never builds the logits; the losses and the gradient every optimizer step
    # is given (the value model's too) must be the same, step by step, up to summation order. Plain
    # SGD for AdamW keeps the runs a rounding apart over the steps (rounding.py).
    sgd_for_adamw(monkeypatch)
    if recipe == "dpo":
        args, Config, train, keys = ["steps=3", "batch_size=4", "data.train_size=8", "data.test_size=4", "task_eval=false", "optim.lr=0.5", "optim.warmup_steps=0"], dpo.DPOConfig, dpo.train, ["loss/dpo"]
    else:
        args, Config, train, keys = ["rewards=[arithmetic]", "ppo.steps=2", "ppo.prompts_per_step=4", "sampling.max_new_tokens=6", "data.train_size=8",
                                     "data.test_size=2", "eval.k=1", "eval.max_new_tokens=6", "optim.lr=0.02"], ppo.PPOConfig, ppo.train, ["loss/policy", "objective/kl"]  # fmt: skip
    runs, steps = [], []
    for chunked in (False, True):
        config = load(None, overrides(small_model_dir, tmp_path, f"{recipe}-{chunked}", f"model.chunked_lm_head={str(chunked).lower()}", *args), Config)
        with record_steps() as recorded:
            rows = read_metrics(train(config))
        runs.append([r[k] for r in rows if keys[0] in r for k in keys])
        steps.append(recorded)
    assert len(runs[0]) == len(runs[1]) >= 2 * len(keys)
    assert runs[1] == pytest.approx(runs[0], rel=1e-4, abs=1e-6)
    assert len(steps[0]) >= 2
    assert_same_gradients(steps[1], steps[0])
    assert runs[0][: len(keys)] != runs[0][-len(keys) :]  # the runs trained
