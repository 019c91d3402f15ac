"""`model.compile`: the trained model's decoder layers compiled (regional), the learner's numbers
unchanged, rollouts eager, and a clear error where it cannot apply."""

from __future__ import annotations

import copy

import pytest
import torch
from rounding import assert_same_gradients, record_steps, sgd_for_adamw
from torch._dynamo.utils import counters
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import completion_logprobs
from r1kit.config import ModelArgs, from_dict
from r1kit.errors import R1kitError
from r1kit.models import compile as compile_module
from r1kit.models.load import training_options
from r1kit.models.swiglu import lean_swiglu
from r1kit.recipes import grpo
from r1kit.report.logger import read_metrics
from r1kit.rollout import HFEngine, SamplingParams


@pytest.fixture
def cheap_backend(monkeypatch):
    """aot_eager: dynamo's capture and AOT autograd without generating kernels, so the wiring is
    checked in seconds; `test_inductor_layers_give_the_same_logprobs_and_gradients` compiles for real."""
    monkeypatch.setattr(compile_module, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    return Qwen2ForCausalLM(config)


def grouped_batch():
    torch.manual_seed(1)
    prompts = torch.randint(2, 32, (3, 5)).repeat_interleave(2, 0)  # 3 prompts x 2 samples
    ids = torch.cat([prompts, torch.randint(2, 32, (6, 4))], dim=1)
    return ids, torch.ones_like(ids)


def learner_pass(model, ids, mask):
    model.zero_grad(set_to_none=True)
    logp = completion_logprobs(model, ids, mask, 4)  # eager: shared prompts; compiled: one plain forward
    logp.sum().backward()
    return logp.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.numerics
def test_inductor_layers_give_the_same_logprobs_and_gradients():
    torch._dynamo.reset()
    counters.clear()
    eager = tiny_qwen2()
    lean_swiglu(eager)
    compiled = copy.deepcopy(eager)
    assert compile_module.compile_layers(compiled) == 2
    ids, mask = grouped_batch()
    want, want_grads = learner_pass(eager, ids, mask)
    got, got_grads = learner_pass(compiled, ids, mask)
    assert counters["stats"]["unique_graphs"] >= 1  # the layers really ran compiled
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.numerics
def test_deep_models_compile_one_graph_for_all_layers(cheap_backend):
    """A KV cache through compiled layers would make each layer index its own graph (dynamo guards on
    the cache entry of the layer), and past 8 layers the recompile limit would leave the rest eager;
    so compiled layers score rows without shared prompts: one graph, whatever the depth."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=12, num_attention_heads=2, num_key_value_heads=1)
    eager = Qwen2ForCausalLM(config)
    compiled = copy.deepcopy(eager)
    assert not compile_module.runs_compiled(eager)
    compile_module.compile_layers(compiled)
    assert compile_module.runs_compiled(compiled)
    prompts = torch.randint(2, 32, (3, 5)).repeat_interleave(2, 0)
    for k in (4, 6, 9):  # three completion lengths: dynamic shapes, no recompile per length either
        ids = torch.cat([prompts, torch.randint(2, 32, (6, k))], dim=1)
        mask = torch.ones_like(ids)
        got = completion_logprobs(compiled, ids, mask, k)
        got.sum().backward()
        torch.testing.assert_close(got, completion_logprobs(eager, ids, mask, k), rtol=1e-5, atol=1e-5)
    assert 1 <= counters["stats"]["unique_graphs"] <= 2  # one graph, and at most one more for dynamic shapes


def test_a_deep_copy_runs_its_own_weights(cheap_backend):
    model = tiny_qwen2()
    compile_module.compile_layers(model)
    ids, mask = grouped_batch()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.model.layers.parameters():
            p.mul_(0.5)
        assert not torch.allclose(completion_logprobs(ref, ids, mask, 4), completion_logprobs(model, ids, mask, 4))


def test_rollouts_run_eagerly_and_sample_the_same_tokens(cheap_backend):
    plain, compiled = tiny_qwen2(), tiny_qwen2()
    compile_module.compile_layers(compiled)
    params = SamplingParams(max_new_tokens=6, n=2, seed=3)
    want = HFEngine(plain, pad_token_id=0, eos_token_id=[]).generate([[3, 4, 5], [6, 7]], params)
    got = HFEngine(compiled, pad_token_id=0, eos_token_id=[]).generate([[3, 4, 5], [6, 7]], params)
    assert counters["stats"]["calls_captured"] == 0  # nothing was traced for the rollout
    assert torch.equal(got.completion_ids, want.completion_ids)
    ids, mask = grouped_batch()
    completion_logprobs(compiled, ids, mask, 4)
    assert counters["stats"]["calls_captured"] > 0  # while the learner's forward is traced


def test_compile_with_gradient_checkpointing_is_one_clear_error():
    with pytest.raises(R1kitError, match="model.compile and model.gradient_checkpointing"):
        training_options(tiny_qwen2(), ModelArgs(compile=True, gradient_checkpointing=True))


def distinct_reward(completions, **columns):
    """Distinct characters: differs within every group of a random model, so every step updates."""
    return [len(set(c)) / 10 for c in completions]


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_grpo_with_compiled_layers_logs_what_the_eager_run_logs(cheap_backend, tiny_model_dir, tmp_path, monkeypatch, lora_r):
    # The same metrics and the same gradient at every update, up to summation order (compiled layers
    # score rows without shared prompts); plain SGD for AdamW keeps the runs a rounding apart (rounding.py).
    sgd_for_adamw(monkeypatch)

    def run(name, compile_):
        raw = {
            "model": {"path": str(tiny_model_dir), "device": "cpu", "compile": compile_, "lora_r": lora_r},
            "data": {"task": "arithmetic", "train_size": 8, "test_size": 2},
            "rewards": [f"{__name__}:distinct_reward"],
            "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.04, "num_iterations": 2},
            "sampling": {"max_new_tokens": 6},
            "optim": {"lr": 0.1},
            "eval": {"k": 0, "max_new_tokens": 2},
            "run": {"output_dir": str(tmp_path), "name": name, "progress": False, "tensorboard": False, "threads": 1},
            "eval_before": False,
            "samples_every": 0,
        }
        with record_steps() as steps:
            rows = [m for m in read_metrics(grpo.train(from_dict(grpo.GRPOConfig, raw))) if "loss/policy" in m]
        return rows, steps

    (eager, eager_steps), (compiled, compiled_steps) = run("eager", False), run("compiled", True)
    assert counters["stats"]["unique_graphs"] >= 1
    assert len(eager) == len(compiled) == 2 and len(eager_steps) == 4
    for e, c in zip(eager, compiled):
        assert e["grad_norm"] > 0.1  # a reward that differs within groups: real updates, not float noise
        for key in ("loss/policy", "kl", "reward/mean", "grad_norm"):
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key
    assert_same_gradients(compiled_steps, eager_steps)


def test_ppo_with_compiled_policy_and_value_layers_logs_what_the_eager_run_logs(cheap_backend, tiny_model_dir, tmp_path, monkeypatch):
    from r1kit.config import load
    from r1kit.recipes import ppo

    sgd_for_adamw(monkeypatch)  # as in the GRPO test above

    def run(name, compile_):
        config = load(None, [
            f"model.path={tiny_model_dir}", "model.device=cpu", f"model.compile={str(compile_).lower()}", f"run.output_dir={tmp_path}",
            f"run.name={name}", "run.progress=false", "run.tensorboard=false", "rewards=[arithmetic]", "ppo.steps=2",
            "ppo.prompts_per_step=2", "ppo.ppo_epochs=2", "ppo.mini_batches=1", "sampling.max_new_tokens=6", "data.train_size=4",
            "data.test_size=2", "eval.k=0", "eval.max_new_tokens=2", "optim.lr=0.1",
        ], ppo.PPOConfig)  # fmt: skip
        with record_steps() as steps:
            rows = [m for m in read_metrics(ppo.train(config)) if "loss/policy" in m]
        return rows, steps

    (eager, eager_steps), (compiled, compiled_steps) = run("eager", False), run("compiled", True)
    assert counters["stats"]["unique_graphs"] >= 1  # layers ran compiled (the policy's and the value model's go through the same options)
    assert len(eager) == len(compiled) == 2 and len(eager_steps) >= 4
    for e, c in zip(eager, compiled):
        for key in ("loss/policy", "loss/value", "objective/kl"):
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key
    assert_same_gradients(compiled_steps, eager_steps)
