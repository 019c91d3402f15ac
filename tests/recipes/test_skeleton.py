"""The run skeleton (r1kit/train/run.py) gives every recipe the same machinery: LoRA adapters with
model.lora_r, torchrun with one process per rank, and one clear error for a setting a recipe
cannot honour. (Exact resume is in test_resume.py, the step loop's pieces in tests/train.)"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from r1kit.config import RECIPES, dump, load, recipe_config_class
from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.train.checkpoint import checkpoint_dirs
from recipe_runs import SRC, recipe_overrides, step_rows, train


@pytest.mark.parametrize("recipe", ["sft", "dpo", "ppo", "distill"])
def test_lora_trains_only_the_adapter_and_saves_it(recipe, small_model_dir, tiny_model_dir, tmp_path, monkeypatch, restore_threads):
    module = importlib.import_module(RECIPES[recipe].split(":")[0])
    captured = {}
    real_save = module.save_model
    monkeypatch.setattr(module, "save_model", lambda model, tok, path: real_save(captured.setdefault("model", model), tok, path))
    overrides = recipe_overrides(recipe, small_model_dir, tmp_path, steps=2, teacher=tiny_model_dir)
    run_dir = train(recipe, overrides + ["model.lora_r=8", "run.name=lora"])

    assert (run_dir / "model" / "adapter_config.json").is_file()
    assert not (run_dir / "model" / "model.safetensors").exists()  # only the adapter is written
    model = captured["model"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # PEFT starts lora_B at 0: it trained
    original = load_model(str(small_model_dir), device="cpu").state_dict()
    base = {n.replace(".base_layer", ""): p for n, p in model.get_base_model().state_dict().items() if "lora_" not in n}
    assert base.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(base[name], tensor), name


def test_a_lora_reward_model_trains_adapters_and_head_and_saves_them_merged(small_model_dir, tmp_path, monkeypatch, restore_threads):
    from r1kit.models.lora import load_adapter
    from r1kit.models.value_head import load_scalar_model, token_scalars
    from r1kit.recipes import reward_model

    trainable = []
    real_load = reward_model.load_reward_model

    def load(*args):
        model = real_load(*args)
        trainable.extend(n for n, p in model.named_parameters() if p.requires_grad)  # before the merge at the end
        return model

    monkeypatch.setattr(reward_model, "load_reward_model", load)
    run_dir = train("rm", recipe_overrides("rm", small_model_dir, tmp_path, steps=2) + ["model.lora_r=8", "run.name=lora-rm", "run.save_every=1"])

    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert all("lora_" in n or "score" in n for n in trainable)  # the backbone stays frozen
    adapter = run_dir / "checkpoints" / "step_2" / "model"
    assert (adapter / "adapter_config.json").is_file()  # checkpoints hold the adapter (and the head)
    saved = run_dir / "model"
    assert (saved / "config.json").is_file() and not (saved / "adapter_config.json").exists()  # the final model is merged
    # The merged directory scores as the trained adapters of the last step do (up to the merge's
    # float rounding, ~1e-7 here), and not as the starting model.
    with_adapter = load_adapter(load_scalar_model(str(small_model_dir), 0), adapter, trainable=False)
    merged, start = load_scalar_model(str(saved), None), load_scalar_model(str(small_model_dir), 0)
    ids = torch.randint(4, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    with torch.no_grad():
        expected, got = token_scalars(with_adapter.eval(), ids, attn), token_scalars(merged.eval(), ids, attn)
        start_backbone = {n: p for n, p in start.named_parameters() if "score" not in n}
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert any(not torch.equal(p, merged.get_parameter(n)) for n, p in start_backbone.items())  # the adapters were folded in


TORCHRUN_LOSS = {"sft": "loss/sft", "dpo": "loss/dpo", "rm": "loss/rm", "ppo": None}
"""The loss that a 2-rank step must share with the 1-process one (PPO samples other completions on
each rank, so it is only checked to run)."""


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(TORCHRUN_LOSS))
def test_torchrun_runs_two_ranks_whose_first_step_is_the_one_process_step(recipe, small_model_dir, tmp_path, restore_threads):
    # Both ranks draw the step's batch and keep half of it; DDP averages their gradients. The
    # first step starts from the same weights, so its loss and gradient norm are the one-process
    # ones up to float summation order (~1e-7 relative here; 1e-5 leaves room).
    overrides = recipe_overrides(recipe, small_model_dir, tmp_path, steps=2) + ["run.save_every=1"]
    single = train(recipe, overrides + ["run.name=single"])
    config_file = tmp_path / f"{recipe}.yaml"
    config_file.write_text(dump(load(None, overrides + ["run.name=ddp"], recipe_config_class(recipe)), recipe))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "r1kit", recipe, "--config", str(config_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_dir = tmp_path / "ddp"
    environment = json.loads((run_dir / "env.json").read_text())
    assert environment["world_size"] == 2 and environment["parallel"] == "ddp"
    assert json.loads((single / "env.json").read_text())["parallel"] == "none"
    ddp, one = [[r for r in step_rows(d) if "grad_norm" in r] for d in (run_dir, single)]
    assert [r["step"] for r in ddp] == [1, 2]  # rank 0 logs, once a step
    if TORCHRUN_LOSS[recipe]:
        for key in (TORCHRUN_LOSS[recipe], "grad_norm"):
            assert ddp[0][key] == pytest.approx(one[0][key], rel=1e-5), key
    assert (run_dir / "model" / "config.json").is_file()
    assert len(torch.load(run_dir / "checkpoints" / "step_2" / "trainer.pt", weights_only=True)["rng"]) == 2  # both ranks' RNGs


@pytest.mark.parametrize(
    "recipe, settings, message",
    [
        ("sample", ["run.save_every=2"], r"sample cannot honour run.save_every=2: it trains nothing"),
        ("sample", ["run.resume=auto"], r"sample cannot honour run.resume='auto'"),
        ("sample", ["model.lora_r=8"], r"sample cannot honour model.lora_r=8"),
        ("search", ["run.save_every=2"], r"search cannot honour run.save_every=2: it writes its data and value model once"),
        ("search", ["mcts.value=model"], r"search cannot honour mcts.value='model'"),
        ("sft", ["data.max_prompt_tokens=32"], r"sft cannot honour data.max_prompt_tokens=32: only grpo and ppo"),
        ("dpo", ["data.long_prompts=truncate"], r"dpo cannot honour data.long_prompts=truncate"),
        ("grpo", ["grpo.prompts_per_step=1", "grpo.group_size=2", "grpo.mini_batches=3"], r"grpo.mini_batches=3 is more than the 2 rows"),
        ("ppo", ["ppo.prompts_per_step=2", "ppo.mini_batches=4"], r"ppo.mini_batches=4 is more than the 2 rows"),
    ],
)
def test_a_setting_the_recipe_cannot_honour_is_one_clear_error(recipe, settings, message, small_model_dir, tmp_path):
    config = load(None, [f"model.path={small_model_dir}", f"run.output_dir={tmp_path}", "model.device=cpu", *settings], recipe_config_class(recipe))
    module = importlib.import_module(RECIPES[recipe].split(":")[0])
    with pytest.raises(R1kitError, match=message):
        module.train(config)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
def test_sigterm_saves_the_last_completed_step_and_exits_130(small_model_dir, tmp_path):
    # A job scheduler pre-empting the run sends SIGTERM: the run saves a checkpoint of its last
    # completed step, as Ctrl-C does, and the command exits with 130. The signal is sent once the
    # first checkpoint exists, so the run is inside its loop (10000 steps: it never ends first).
    overrides = recipe_overrides("sft", small_model_dir, tmp_path, steps=10000) + ["run.name=term", "run.save_every=1", "run.keep_checkpoints=1"]
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(dump(load(None, overrides, recipe_config_class("sft")), "sft"))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "r1kit", "sft", "--config", str(config_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "term"
    deadline = time.monotonic() + 240
    while not checkpoint_dirs(run_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    assert "sft: interrupted; checkpoint of step" in " ".join(out.split())
    (step, path), = checkpoint_dirs(run_dir)
    assert step >= 1 and step < 10000 and not (run_dir / "model").exists()
    rows = [r for r in step_rows(run_dir) if "loss/sft" in r]
    assert rows[-1]["step"] == step  # the checkpoint is the last step the run logged
