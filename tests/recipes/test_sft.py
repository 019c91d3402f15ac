"""Cold-start SFT end to end on the 2-layer fixture model: the loss falls, greedy accuracy on the
held-out split rises, and the run directory holds everything the run produced."""

from __future__ import annotations

import json

import pytest
import torch
from rounding import assert_same_gradients, record_steps, sgd_for_adamw

from r1kit import config as cfg
from r1kit.errors import R1kitError
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes.sft import SFTConfig, train


@pytest.fixture
def restore_threads():
    """run.threads=1 sets torch's global thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def sft_config(model_dir, out_dir, *extra: str) -> SFTConfig:
    return cfg.load(
        None,
        [
            f"model.path={model_dir}",
            "model.device=cpu",
            # 1-digit a+b: 100 problems, of which 8 fall in the test split (all of them are used).
            "data.task_params={n_operands: 2, digits: 1, ops: '+'}",
            "data.train_size=500",
            "data.test_size=8",
            "eval.k=2",
            "eval.max_new_tokens=24",
            "steps=150",
            "batch_size=32",
            "max_length=48",
            "optim.lr=3e-3",
            "optim.warmup_steps=5",
            f"run.output_dir={out_dir}",
            "run.name=sft",
            "run.threads=1",  # on 2 shared cores, one thread is ~10x faster than oversubscribing
            "run.progress=false",
            "run.tensorboard=false",
            *extra,
        ],
        SFTConfig,
    )


@pytest.mark.slow
def test_sft_lowers_the_loss_and_raises_greedy_accuracy(tiny_model_dir, tmp_path, restore_threads):
    config = sft_config(tiny_model_dir, tmp_path)
    run_dir = train(config)
    assert run_dir == tmp_path / "sft"
    result = json.loads((run_dir / "eval.json").read_text())

    # Measured on CPU (torch 2.13): loss 4.68 -> 0.26 and greedy accuracy 0/8 -> 8/8 with run.seed
    # 0; 0/8 -> 6/8 with seeds 1, 2 and 3. The margins leave room for other hardware and versions.
    assert result["loss_first"] > 4.0  # about ln(104): the untrained model is near uniform
    assert result["loss_last"] < result["loss_first"] - 2.5
    assert result["before"]["greedy_acc"] <= 0.125
    assert result["after"]["greedy_acc"] >= result["before"]["greedy_acc"] + 0.5
    # The response format was learned: greedy completions are about as long as the cot (~12 tokens)
    # instead of running to max_new_tokens.
    assert result["before"]["length_greedy"] == 24
    assert result["after"]["length_greedy"] < 16
    assert set(result["after"]) == {"greedy_acc", "length_greedy", "pass@1", "pass@2", "maj@2", "length_mean"}

    # The run directory holds the resolved config, the environment, the metrics, the model.
    assert cfg.load(run_dir / "config.yaml") == config
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 0 and env["device"] == "cpu" and env["torch"] == torch.__version__
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r for r in rows)
    assert [r["step"] for r in rows if "loss/sft" in r] == list(range(1, 151))
    assert rows[0]["step"] == 0 and rows[0]["data/examples"] == 500 and rows[0]["data/truncated"] == 0
    assert rows[-1]["step"] == 150 and rows[-1]["eval/greedy_acc"] == pytest.approx(result["after"]["greedy_acc"])
    assert (run_dir / "model" / "config.json").is_file()
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    assert sum(s["correct"] for s in samples) / 8 == pytest.approx(result["after"]["greedy_acc"])

    # The saved model is the trained one: it loads back and answers a held-out problem as it did.
    tok, model = load_tokenizer(str(run_dir / "model")), load_model(str(run_dir / "model"), device="cpu")
    sample = next(s for s in samples if s["correct"])
    prompt = tok(f"Q: {sample['prompt']}\nA: ", add_special_tokens=False, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    assert tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) == sample["completion"]


def test_sft_on_a_file_without_the_response_column_is_an_error_before_training(tiny_model_dir, tmp_path, restore_threads):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=?", "completion": "<answer>2</answer>"}) + "\n")
    with pytest.raises(R1kitError, match=r"train\.jsonl:1: missing column 'cot'"):
        train(sft_config(tiny_model_dir, tmp_path, f"data.path={data}", "data.task=arithmetic"))


def test_sft_trains_on_a_jsonl_file_with_a_chosen_response_column(tiny_model_dir, char_tokenizer, tmp_path, restore_threads):
    data = tmp_path / "sampled.jsonl"
    rows = [{"prompt": f"{a}+1=?", "completion": f"<think>{a}+1={a + 1}</think><answer>{a + 1}</answer>"} for a in range(10)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = sft_config(
        tiny_model_dir, tmp_path, f"data.path={data}", "data.task=arithmetic", "response_column=completion", "steps=2", "batch_size=4",
        "eval_before=false", "eval.k=0", "eval.max_new_tokens=4", "data.test_size=3", "packing=true", "max_length=32",
    )  # fmt: skip
    run_dir = train(config)
    result = json.loads((run_dir / "eval.json").read_text())
    assert "before" not in result and set(result["after"]) == {"greedy_acc", "length_greedy"}
    # Packed: the 10 examples (prompt + response + eos) cut into full rows of 32 tokens.
    tokens = sum(len(char_tokenizer(f"Q: {r['prompt']}\nA: " + r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in rows)
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["data/examples"] == tokens // 32 == 7


@pytest.mark.numerics
def test_sft_through_the_chunked_lm_head_gives_the_same_losses(tiny_model_dir, tmp_path, restore_threads, monkeypatch):
    # The same losses and the same gradient at every step, up to summation order; plain SGD for
    # AdamW keeps the runs a rounding apart over the 4 steps (rounding.py).
    sgd_for_adamw(monkeypatch)
    runs, steps = [], []
    for chunked in ("false", "true"):
        config = sft_config(tiny_model_dir, tmp_path / chunked, "steps=4", "eval.k=0", "eval_before=false", f"model.chunked_lm_head={chunked}", "optim.lr=0.5")
        with record_steps() as recorded:
            rows = [json.loads(line) for line in (train(config) / "metrics.jsonl").read_text().splitlines()]
        runs.append([r["loss/sft"] for r in rows if "loss/sft" in r])
        steps.append(recorded)
    assert len(runs[1]) == len(steps[1]) == 4 and runs[1] == pytest.approx(runs[0], rel=1e-5)
    assert_same_gradients(steps[1], steps[0])
    assert runs[0][-1] < runs[0][0]


@pytest.mark.parametrize("recipe", ["sft", "grpo"])
def test_a_failing_final_evaluation_keeps_the_trained_model(recipe, tiny_model_dir, tmp_path, restore_threads, monkeypatch):
    """The model is saved before the final evaluation, so an evaluation that raises loses nothing."""
    from r1kit.eval.evaluate import Evaluator
    from r1kit.recipes import grpo

    plain = Evaluator.__call__

    def failing_after_training(self, model, samples_out=None):
        if samples_out is not None:  # the evaluation after training collects greedy samples
            raise RuntimeError("evaluation broke")
        return plain(self, model, samples_out)

    monkeypatch.setattr(Evaluator, "__call__", failing_after_training)
    if recipe == "sft":
        config, run = sft_config(tiny_model_dir, tmp_path, "steps=2"), train
    else:
        config = cfg.load(None, [f"model.path={tiny_model_dir}", "model.device=cpu", "data.train_size=16", "data.test_size=4",
                                 "grpo.steps=1", "grpo.prompts_per_step=2", "grpo.group_size=2", "sampling.max_new_tokens=8",
                                 "eval.k=1", "eval.max_new_tokens=8", f"run.output_dir={tmp_path}", "run.name=grpo", "run.threads=1",
                                 "run.progress=false", "run.tensorboard=false", "rewards=[arithmetic]"], grpo.GRPOConfig)
        run = grpo.train
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run(config)
    saved = load_model(str(tmp_path / recipe / "model"), device="cpu")  # before the fix: no model/ at all
    if recipe == "sft":  # (one GRPO step on an untrained model may see equal rewards and not move)
        start = load_model(str(tiny_model_dir), device="cpu")
        assert any(not torch.equal(p, q) for p, q in zip(start.parameters(), saved.parameters()))  # the trained weights
