"""`run.accel`: the one switch of the speed-ups. With `off` nothing of r1kit.accel is applied and a
recipe still trains; with `auto` the learner's log-probs are plain PyTorch's up to float32 rounding,
and so is a GRPO step."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit import accel
from r1kit.accel import attention, onednn
from r1kit.accel.engine import AcceleratedEngine
from r1kit.algorithms import completion_logprobs
from r1kit.config import from_dict, load
from r1kit.errors import R1kitError
from r1kit.recipes import grpo
from r1kit.rollout import HFEngine


def distinct_reward(completions, **kw):
    """Distinct characters: differs within every group of a random model, so every step updates."""
    return [len(set(c)) / 10 for c in completions]


def grpo_config(model_dir, tmp_path, mode: str, name: str):
    return from_dict(grpo.GRPOConfig, {
        "model": {"path": str(model_dir)},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 64, "test_size": 8},
        "rewards": [f"{__name__}:distinct_reward"],
        "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.04},
        "sampling": {"max_new_tokens": 12},
        "optim": {"lr": 1e-3},
        "eval": {"k": 0, "max_new_tokens": 8},
        "eval_before": False,
        # One thread: no rollout is split among processes, so both modes sample the same tokens.
        "run": {"output_dir": str(tmp_path), "name": name, "progress": False, "tensorboard": False, "threads": 1, "accel": mode},
        "samples_every": 0,
    })  # fmt: skip


def steps(run_dir) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss/policy" in r]


def test_run_accel_is_auto_or_off_and_a_bad_value_names_the_choices():
    assert grpo.GRPOConfig().run.accel == "auto"
    with pytest.raises(R1kitError, match=r"run.accel.*'fast'.*\['auto', 'off'\]"):
        load(None, ["run.accel=fast"], grpo.GRPOConfig)
    with pytest.raises(R1kitError, match=r"run.accel is 'fast'; choose one of \['auto', 'off'\]"):
        accel.setup("fast", "cpu")


def test_off_leaves_the_model_as_loaded_and_builds_the_plain_engine():
    model = tiny_qwen2()
    accel.apply(model, "cpu", "off")
    assert model.config._attn_implementation == "sdpa"
    assert not any(onednn.routes(m) or "forward" in vars(m) for m in model.modules())
    engine = accel.rollout_engine(model, processes=1)
    assert type(engine) is HFEngine
    with pytest.raises(R1kitError, match=r"run.rollout_processes=2 .* run.accel=auto"):
        accel.rollout_engine(model, processes=2)
    with pytest.raises(R1kitError, match=r"run.rollout_processes=2 .* run.accel=auto"):
        accel.setup("off", "cpu", rollout_processes=2)
    accel.setup("auto", "cpu")
    assert isinstance(accel.rollout_engine(model), AcceleratedEngine)


def tiny_qwen2() -> Qwen2ForCausalLM:
    """Wide enough (128) for oneDNN's products, with grouped-query heads (4 query / 2 key-value)."""
    config = Qwen2Config(vocab_size=61, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def test_the_learner_s_logprobs_with_accel_equal_plain_pytorch_s_to_float32_rounding():
    plain = tiny_qwen2()
    ids = torch.randint(1, 61, (2, 6))
    completion_logprobs(plain, ids, torch.ones_like(ids), 2)
    assert plain.config._attn_implementation == "sdpa"  # the scoring function routes nothing itself
    routed = accel.apply(copy.deepcopy(plain), "cpu", "auto")
    assert routed.config._attn_implementation == attention.NAME
    wide = plain.double()  # the exact values, for the size of float32's own rounding
    plain = copy.deepcopy(wide).float()
    torch.manual_seed(1)
    G, P, C = 8, 6, 34  # 8 groups x 8 rows x 40 tokens: 2560 rows per product, above oneDNN's threshold
    prompts = torch.randint(1, 61, (G, P)).repeat_interleave(8, 0)
    ids = torch.cat([prompts, torch.randint(1, 61, (G * 8, C))], dim=1)
    mask = torch.ones_like(ids)
    mask[:8, :2] = 0  # one left-padded group

    def logprobs(model):
        model.zero_grad(set_to_none=True)
        logp = completion_logprobs(model, ids, mask, C)
        logp.sum().backward()
        return logp.detach().double(), model.model.layers[0].self_attn.q_proj.weight.grad.double()

    exact, exact_grad = logprobs(wide)
    want, want_grad = logprobs(plain)
    if onednn.onednn_available():
        calls = []
        real = onednn.product
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(onednn, "product", lambda *a: calls.append(1) or real(*a))
            got, got_grad = logprobs(routed)
        assert calls  # the routing was in use
    else:
        got, got_grad = logprobs(routed)
    # Both are float32 computations of the same sums in other orders: accel's error against the
    # exact values is of the size of plain PyTorch's own (a factor 4 of room, and a floor at
    # float32's resolution of these magnitudes).
    assert (got - exact).abs().max() <= 4 * (want - exact).abs().max() + 1e-6
    assert (got_grad - exact_grad).abs().max() <= 4 * (want_grad - exact_grad).abs().max() + 1e-7
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_grpo_step_with_accel_off_equals_auto_and_off_trains(tiny_model_dir, tmp_path, monkeypatch):
    built = []
    real_init = AcceleratedEngine.__init__
    monkeypatch.setattr(AcceleratedEngine, "__init__", lambda self, *a, **k: (built.append(1), real_init(self, *a, **k))[1])
    off = steps(grpo.train(grpo_config(tiny_model_dir, tmp_path, "off", "off")))
    assert built == [] and accel.current() == "off"  # the plain engine for rollouts and evaluation
    auto = steps(grpo.train(grpo_config(tiny_model_dir, tmp_path, "auto", "auto")))
    assert built  # auto: the accelerated engine
    assert len(off) == len(auto) == 2
    assert all(math.isfinite(r["loss/policy"]) and math.isfinite(r["kl"]) for r in off)
    assert off[-1]["kl"] > 0  # the policy moved away from the reference: it trained
    # The first step samples the same tokens from the same weights (one process either way), so its
    # rewards are equal and its losses differ by float32 rounding of the learner's passes.
    first_off, first_auto = off[0], auto[0]
    assert first_off["reward/mean"] == first_auto["reward/mean"]
    assert first_off["completion/length_mean"] == first_auto["completion/length_mean"]
    assert first_off["loss/policy"] == pytest.approx(first_auto["loss/policy"], abs=1e-5)
