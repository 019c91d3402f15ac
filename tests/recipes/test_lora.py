"""GRPO with LoRA adapters (PEFT): the adapters learn, the base stays bit-identical, the reference
is the base itself (adapters disabled, no second copy), runs resume, and `r1kit merge-lora` folds
the adapter into an ordinary model directory."""

from __future__ import annotations

import json

import pytest
import torch
from rounding import assert_same_gradients, record_steps, sgd_for_adamw

from r1kit.cli import main
from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.models.load import load_model, save_model
from r1kit.models.lora import AdapterDisabledReference, is_adapter_dir
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.train import reference


def distinct_reward(completions, **kw):
    """Distinct characters: differs within every group of a random model, so every step updates."""
    return [len(set(c)) / 10 for c in completions]


def lora_config(model_dir, out_dir, name="lora", **over) -> GRPOConfig:
    raw = {
        "model": {"path": str(model_dir), "device": "cpu", "lora_r": 4, "lora_alpha": 8},
        "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "train_size": 8, "test_size": 2},
        "rewards": [f"{__name__}:distinct_reward"],
        "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "beta": 0.04, "num_iterations": 2},
        "sampling": {"max_new_tokens": 6},
        "optim": {"lr": 5e-2},
        "eval": {"k": 0, "max_new_tokens": 2},
        "run": {"output_dir": str(out_dir), "name": name, "progress": False, "tensorboard": False, "threads": 1, "save_every": 1},
        "eval_before": False,
        "samples_every": 0,
    }
    for section, values in over.items():
        raw[section].update(values)
    return from_dict(GRPOConfig, raw)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A 2-step LoRA GRPO run; returns (run dir, the trained PeftModel, whether a full copy was made)."""
    out = tmp_path_factory.mktemp("lora")
    captured, copies = {}, []
    mp = pytest.MonkeyPatch()
    mp.setattr(grpo, "save_model", lambda model, tok, path: save_model(captured.setdefault("model", model), tok, path))
    mp.setattr(reference, "frozen_copy", lambda model: copies.append(model))
    try:
        run_dir = grpo.train(lora_config(tiny_model_dir, out))
    finally:
        mp.undo()
    return run_dir, captured["model"], copies


def test_lora_grpo_trains_the_adapters_only(lora_run, tiny_model_dir):
    run_dir, model, copies = lora_run
    assert copies == []  # the reference is the base behind the adapters, not a copy
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.requires_grad for p in lora_b.values())
    assert any(p.abs().max() > 0 for p in lora_b.values())  # PEFT starts lora_B at 0
    original = load_model(str(tiny_model_dir), device="cpu").state_dict()
    base = {n.replace(".base_layer", ""): p for n, p in model.get_base_model().state_dict().items() if "lora_" not in n}
    assert base.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(base[name], tensor), name
    assert is_adapter_dir(run_dir / "model") and (run_dir / "model" / "tokenizer.json").is_file()
    assert not (run_dir / "model" / "model.safetensors").exists()  # only the adapter is written


@pytest.mark.numerics
def test_the_reference_is_the_base_model_with_adapters_disabled(lora_run, tiny_model_dir):
    _, model, _ = lora_run
    original = load_model(str(tiny_model_dir), device="cpu")
    ids = torch.tensor([[5, 9, 12, 30, 7, 8]])
    with torch.no_grad():
        ref_logits = AdapterDisabledReference(model)(input_ids=ids).logits
        base_logits = original(input_ids=ids).logits
        policy_logits = model(input_ids=ids).logits
    assert torch.allclose(ref_logits, base_logits, atol=1e-6, rtol=0)
    assert not torch.allclose(policy_logits, base_logits, atol=1e-3)  # the adapters do something


@pytest.mark.numerics
def test_merge_lora_writes_a_full_model_with_the_policy_logits(lora_run, tmp_path, capsys):
    run_dir, model, _ = lora_run
    out = tmp_path / "merged"
    assert main(["merge-lora", str(run_dir / "model"), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not is_adapter_dir(out)
    merged = load_model(str(out), device="cpu")
    ids = torch.tensor([[5, 9, 12, 30, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    # load_model takes the adapter directory itself too (eval, pipelines): same merged weights.
    direct = load_model(str(run_dir / "model"), device="cpu")
    for name, tensor in merged.state_dict().items():
        assert torch.allclose(direct.state_dict()[name], tensor, atol=1e-6), name


def test_merge_lora_on_a_plain_model_directory_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    assert main(["merge-lora", str(tiny_model_dir), str(tmp_path / "out")]) == 2
    assert "is not a LoRA adapter directory" in capsys.readouterr().err


@pytest.mark.numerics
def test_a_lora_run_resumed_from_its_step_1_checkpoint_ends_with_the_same_adapter(lora_run, tiny_model_dir):
    run_dir, _, _ = lora_run
    config = lora_config(tiny_model_dir, run_dir.parent, name="lora-resumed", run={"resume": str(run_dir / "checkpoints" / "step_1")})
    resumed = grpo.train(config)
    from safetensors.torch import load_file

    a = load_file(run_dir / "model" / "adapter_model.safetensors")
    b = load_file(resumed / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [2]


def test_lora_with_a_reference_reset_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(R1kitError, match="ref_reset_every needs a separate reference model"):
        grpo.train(lora_config(tiny_model_dir, tmp_path, grpo={"ref_reset_every": 2}))


@pytest.mark.numerics
def test_gradient_checkpointing_trains_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    # One step (two updates on one rollout): the rollout is the same either way, so the updates may
    # differ only by float rounding (checkpointing also turns off the learner's shared prompts).
    # Compared as the gradients each update is given, with plain SGD
    # for AdamW: Adam would turn the rounding of a near-zero gradient into a full lr step (rounding.py).
    from safetensors.torch import load_file

    sgd_for_adamw(monkeypatch)
    runs, steps = {}, {}
    for on in (False, True):
        config = lora_config(tiny_model_dir, tmp_path, name=f"cp-{on}", grpo={"steps": 1}, model={"gradient_checkpointing": on}, optim={"lr": 1.0})
        with record_steps() as steps[on]:
            runs[on] = load_file(grpo.train(config) / "model" / "adapter_model.safetensors")
    assert runs[True].keys() == runs[False].keys()
    assert any(t.abs().max() > 0 for n, t in runs[True].items() if "lora_B" in n)  # it trained
    assert len(steps[True]) == 2  # num_iterations=2 updates, each given only the adapters' gradients
    assert len(steps[True][0]) == sum("lora_" in n for n in runs[True])
    assert_same_gradients(steps[True], steps[False])
