"""Rejection sampling keeps exactly the verified, well-formed completions (a scripted engine stands
in for the model, so every kept and dropped row is known in advance), and distillation in its three
modes on 1-layer models: SFT on the sample recipe's JSONL, teacher-forced logit KD, and GKD's
on-policy mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rounding import sgd_for_adamw

from r1kit import config as cfg
from r1kit.accel import onednn
from r1kit.errors import R1kitError
from r1kit.models.tiny import TinyModelConfig, build_char_tokenizer, save_tiny
from r1kit.recipes import distill as distill_recipe
from r1kit.recipes import rejection_sampling as rs
from r1kit.report.logger import read_metrics
from r1kit.rollout import RolloutBatch, left_pad
from r1kit.train.run import Run

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny-arith"
TEACHER = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
STUDENT = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
QUIET = ["run.progress=false", "run.tensorboard=false", "run.threads=1", "model.device=cpu"]


@pytest.fixture(autouse=True)
def restore_threads():
    """run.threads=1 sets torch's global thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A 1-layer teacher saved as a run's final model (so its step is known), a smaller student with
    the same tokenizer, and a model whose tokenizer has another alphabet."""
    root = tmp_path_factory.mktemp("models")
    tok = build_char_tokenizer()
    teacher = save_tiny(root / "grpo" / "model", tok, TEACHER, seed=0)
    (root / "grpo" / "metrics.jsonl").write_text('{"step": 0}\n{"step": 40, "loss": 1.0}\n')
    return {
        "teacher": teacher,
        "teacher2": save_tiny(root / "teacher2", tok, TEACHER, seed=1),
        "student": save_tiny(root / "student", tok, STUDENT, seed=2),
        "other_vocab": save_tiny(root / "other", build_char_tokenizer("0123456789+-=?:QA \n"), STUDENT, seed=0),
    }


# --------------------------------------------------------------------------------------------
# Rejection sampling


def script(expr: str, v: int) -> list[tuple[str, str]]:
    """The 9 completions the scripted engine returns for a prompt, and their finish reasons."""
    good = f"<think>{expr}={v}</think><answer>{v}</answer>"
    return [
        (good, "eos"),  # 0 kept
        (good, "eos"),  # 1 duplicate of 0
        (f"<think>{expr}={v + 1}</think><answer>{v + 1}</answer>", "eos"),  # 2 incorrect
        (f"{v}", "eos"),  # 3 right answer, no tags: format
        (f"<think>答案是{v}</think><answer>{v}</answer>", "eos"),  # 4 Chinese chain of thought: language
        (f"<think>{expr}={v}</think><answer>{v}</answer>", "length"),  # 5 cut off at max_new_tokens: overlong
        (f"<think>{expr}={v} is right {'.' * 30}</think><answer>{v}</answer>", "eos"),  # 6 > 40 tokens: overlong
        (f"<think>so {expr}={v}</think><answer>{v}</answer>", "eos"),  # 7 kept (English words pass)
        (f"<think>thus {expr}={v}</think><answer>{v}</answer>", "eos"),  # 8 over max_per_prompt=2: cap
    ]


class ScriptedEngine:
    """A rollout engine whose completions are `script(expression, value)` of each `Q: a+b=?` prompt."""

    def __init__(self, tokenizer, calls: list):
        self.tokenizer, self.calls = tokenizer, calls

    def generate(self, prompt_ids, params):
        self.calls.append((len(prompt_ids), params))
        tok = self.tokenizer
        rows, reasons, texts = [], [], []
        for ids in prompt_ids:
            expr = tok.decode(ids).split("Q: ")[1].split("=?")[0]
            a, b = expr.split("+")
            completions = script(expr, int(a) + int(b))
            assert len(completions) == params.n
            for text, reason in completions:
                rows.append(tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if reason == "eos" else []))
                reasons.append(reason)
                texts.append(text)
        C = max(len(r) for r in rows)
        completion_ids = torch.tensor([r + [tok.pad_token_id] * (C - len(r)) for r in rows])
        completion_mask = torch.tensor([[1] * len(r) + [0] * (C - len(r)) for r in rows])
        p_ids, p_mask = left_pad([p for p in prompt_ids for _ in range(params.n)], tok.pad_token_id)
        return RolloutBatch(p_ids, p_mask, completion_ids, completion_mask, torch.zeros(completion_ids.shape), reasons,
                            [i // params.n for i in range(len(rows))], params.n, tok.pad_token_id, texts)  # fmt: skip

    def sync_weights(self, model):
        pass

    def close(self):
        pass


def sample_config(model_dir, out_dir, *extra):
    return cfg.load(
        None,
        [
            f"model.path={model_dir}",
            "data.task_params={n_operands: 2, digits: 1, ops: '+'}",
            "data.train_size=3",
            "samples_per_prompt=9",
            "batch_size=2",  # two generation calls: 2 prompts, then 1
            "max_completion_tokens=40",
            "max_per_prompt=2",
            f"run.output_dir={out_dir}",
            "run.name=sample",
            *QUIET,
            *extra,
        ],
        rs.SampleConfig,
    )


@pytest.fixture
def scripted(monkeypatch):
    calls: list = []
    monkeypatch.setattr(Run, "rollout_engine", lambda self, model, tokenizer: ScriptedEngine(tokenizer, calls))  # the sampler's engine only; evaluation keeps the real one
    return calls


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rejection_sampling_keeps_exactly_the_verified_formatted_rows_with_provenance(models, tmp_path, scripted):
    run_dir = rs.train(sample_config(models["teacher"], tmp_path, "stop=['</answer>']", "temperature=0.7"))
    assert [n for n, _ in scripted] == [2, 1]
    assert scripted[0][1].n == 9 and scripted[0][1].temperature == 0.7 and scripted[0][1].stop == ["</answer>"]

    rows = read_jsonl(run_dir / "samples.jsonl")
    # Per prompt: completions 0 and 7 survive; 1 is a duplicate, 8 is over the cap of 2.
    assert sorted((r["prompt_index"], r["sample_index"]) for r in rows) == [(p, j) for p in range(3) for j in (0, 7)]
    for r in rows:
        expr = r["prompt"].removesuffix("=?")
        v = sum(int(x) for x in expr.split("+"))
        assert r["answer"] == str(v)
        assert r["completion"] == script(expr, v)[r["sample_index"]][0]
        assert r["rewards"] == {"arithmetic": 1.0, "format": 1.0, "language": None if r["sample_index"] == 0 else 1.0}
        assert r["model"] == str(models["teacher"]) and r["step"] == 40  # the last step of the run's metrics
        assert r["source"] == "sample" and r["correct"] is True and r["finish_reason"] == "eos"
        assert r["length"] == len(r["completion"].replace("<think>", "T").replace("</think>", "T").replace("<answer>", "A").replace("</answer>", "A")) + 1

    final = read_metrics(run_dir)[-1]
    assert final["sample/completions"] == 27 and final["sample/kept"] == 6
    assert final["sample/kept_frac"] == pytest.approx(6 / 27)
    assert {f: final[f"sample/dropped/{f}"] for f in rs.FILTERS} == {"incorrect": 3, "format": 3, "language": 3, "overlong": 6, "duplicate": 3, "cap": 3}
    assert final["sample/prompts_with_kept"] == 3 and final["sample/rows"] == 6 and final["sample/mixed"] == 0

    ev = json.loads((run_dir / "eval.json").read_text())
    # 8 of the 9 samples have the right answer (only completion 2 is wrong); every prompt has one.
    assert ev["after"]["pass@1"] == pytest.approx(8 / 9) and ev["after"]["pass@9"] == 1.0 and ev["after"]["maj@9"] == 1.0
    assert ev["kept"] == 6 and ev["rows"] == 6


def test_rejection_sampling_without_dedup_or_cap_keeps_every_passing_copy(models, tmp_path, scripted):
    extra = ("dedup=false", "max_per_prompt=0", "max_completion_tokens=0", "evaluate=true", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4")
    run_dir = rs.train(sample_config(models["teacher"], tmp_path, *extra))
    rows = read_jsonl(run_dir / "samples.jsonl")
    # Without a token cap the long completion 6 passes; completion 5 was cut off and still goes.
    assert sorted((r["prompt_index"], r["sample_index"]) for r in rows) == [(p, j) for p in range(3) for j in (0, 1, 6, 7, 8)]
    # evaluate=true: the held-out evaluation (of the real model, greedy only) is `after`.
    ev = json.loads((run_dir / "eval.json").read_text())
    assert set(ev["after"]) == {"greedy_acc", "length_greedy"} and ev["sampling"]["pass@1"] == pytest.approx(8 / 9)


def test_rejection_sampling_mixes_in_sft_rows_to_the_asked_fraction(models, tmp_path, scripted):
    mix = tmp_path / "chat.jsonl"
    mix.write_text("".join(json.dumps({"prompt": f"say hi {i}", "completion": f"hi {i}"}) + "\n" for i in range(10)))
    run_dir = rs.train(sample_config(models["teacher"], tmp_path, f"mix_path={mix}", "mix_fraction=0.25"))
    rows = read_jsonl(run_dir / "samples.jsonl")
    mixed = [r for r in rows if r["source"] == "mix"]
    # 6 kept samples; 2 mixed rows make them 2/8 = 0.25 of the file.
    assert len(rows) == 8 and len(mixed) == 2
    assert all(r["completion"] == r["prompt"].replace("say ", "") and r["model"] is None for r in mixed)
    assert set(rows[0]) == set(mixed[0])  # one schema for both sources


def test_rejection_sampling_that_keeps_nothing_is_an_error_after_writing_its_metrics(models, tmp_path, scripted):
    with pytest.raises(R1kitError, match="kept none of the 27 completions"):
        rs.train(sample_config(models["teacher"], tmp_path, "max_completion_tokens=5"))
    assert read_metrics(tmp_path / "sample")[-1]["sample/kept"] == 0


def test_language_filter_skips_a_chain_of_thought_without_words():
    scores = rs.score_table({"arithmetic": [1.0, 1.0], "format": [1.0, 1.0], "language": [0.0, 0.5]}, ["<think>1+2=3</think><answer>3</answer>", "<think>a 中</think><answer>3</answer>"], "arithmetic")
    assert [s["language"] for s in scores] == [None, 0.5]


# --------------------------------------------------------------------------------------------
# Distillation


def distill_config(models, out_dir, student, teacher, *extra):
    return cfg.load(
        None,
        [
            f"model.path={models[student]}",
            f"teacher.path={models[teacher]}",
            "teacher.device=cpu",
            "data.task=arithmetic",  # the rows are the teacher's samples of that task: its test split scores the run
            "data.task_params={n_operands: 2, digits: 1, ops: '+'}",
            "data.test_size=2",
            "eval.k=0",
            "eval.max_new_tokens=4",
            "eval_before=false",
            "steps=3",
            "batch_size=4",
            "max_length=48",
            "optim.lr=1e-2",
            "optim.warmup_steps=0",
            "optim.schedule=constant",
            f"run.output_dir={out_dir}",
            "run.name=distill",
            *QUIET,
            *extra,
        ],
        distill_recipe.DistillConfig,
    )


@pytest.fixture
def teacher_rows(tmp_path) -> Path:
    """Four teacher completions in a sample stage's format."""
    path = tmp_path / "samples.jsonl"
    rows = [{"prompt": f"{a}+{b}=?", "completion": f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>", "answer": str(a + b)} for a, b in ((1, 2), (3, 4), (5, 1), (2, 2))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_logit_distillation_refuses_a_teacher_with_another_tokenizer(models, tmp_path, teacher_rows):
    config = distill_config(models, tmp_path, "student", "other_vocab", "mode=logits", f"data.path={teacher_rows}")
    with pytest.raises(R1kitError, match=r"must share a tokenizer.*use mode=sft") as err:
        distill_recipe.train(config)
    assert str(models["student"]) in str(err.value) and str(models["other_vocab"]) in str(err.value)
    assert not (tmp_path / "distill" / "metrics.jsonl").exists()  # refused before any training


@pytest.mark.numerics
def test_forward_kl_to_an_identical_teacher_is_zero_and_gives_no_gradient(models, tmp_path, teacher_rows, monkeypatch):
    # Plain SGD for AdamW: what float rounding leaves of a zero gradient, Adam would rescale to steps
    # of up to lr (rounding.py); SGD moves the student by lr times that rounding, nowhere.
    sgd_for_adamw(monkeypatch)
    run_dir = distill_recipe.train(distill_config(models, tmp_path, "teacher", "teacher", "mode=logits", f"data.path={teacher_rows}", "steps=2"))
    steps = [m for m in read_metrics(run_dir) if "loss/distill" in m]
    assert steps[0]["loss/distill"] == pytest.approx(0.0, abs=1e-6)
    assert steps[0]["grad_norm"] == pytest.approx(0.0, abs=1e-6)  # d KL / d student logits = q - p = 0
    assert steps[1]["loss/distill"] == pytest.approx(0.0, abs=1e-6)  # so the student stays on the teacher


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_logit_distillation_lowers_the_divergence_to_a_different_teacher(models, tmp_path, teacher_rows, divergence):
    # batch_size 4 = all four rows: every step sees the same batch, so the losses are comparable.
    config = distill_config(models, tmp_path, "student", "teacher2", "mode=logits", f"data.path={teacher_rows}", f"divergence={divergence}", "steps=5")
    run_dir = distill_recipe.train(config)
    steps = [m for m in read_metrics(run_dir) if "loss/distill" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5]
    kd = [m["loss/distill"] for m in steps]
    assert kd[0] > 0 and kd[-1] < 0.5 * kd[0]
    assert all(m["distill/on_policy_frac"] == 0 and "loss/hard" not in m for m in steps)
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["loss_first"] == pytest.approx(kd[0], abs=1e-6) and set(ev["after"]) == {"greedy_acc", "length_greedy"}
    assert (run_dir / "model" / "config.json").is_file()


def test_the_teacher_runs_on_the_students_fast_paths(models, tmp_path, teacher_rows, monkeypatch):
    seen = []
    real_fit = distill_recipe.fit_kd

    def spying_fit(config, run, model, teacher, *args, **kwargs):
        seen.append({name: any(onednn.routes(m) for m in net.modules()) for name, net in (("student", model), ("teacher", teacher))})
        return real_fit(config, run, model, teacher, *args, **kwargs)

    monkeypatch.setattr(distill_recipe, "fit_kd", spying_fit)
    distill_recipe.train(distill_config(models, tmp_path, "student", "teacher2", "mode=logits", f"data.path={teacher_rows}", "steps=1"))
    assert seen == [{"student": onednn.onednn_available(), "teacher": onednn.onednn_available()}]  # run.accel=auto: both, or neither


def test_hard_label_weight_adds_the_cross_entropy_on_response_tokens(models, tmp_path, teacher_rows):
    config = distill_config(models, tmp_path, "student", "teacher2", "mode=logits", f"data.path={teacher_rows}", "hard_label_weight=0.5", "steps=1")
    (m,) = [m for m in read_metrics(distill_recipe.train(config)) if "loss/distill" in m]
    assert m["loss/hard"] == pytest.approx(math.log(104), abs=0.5)  # an untrained student: near uniform over 104 tokens
    assert m["loss/total"] == pytest.approx(m["loss/distill"] + 0.5 * m["loss/hard"], rel=1e-4)


def test_on_policy_distillation_with_lmbda_one_trains_on_the_students_own_samples(models, tmp_path, monkeypatch):
    calls = []

    from r1kit.accel.engine import AcceleratedEngine

    class CountingEngine(AcceleratedEngine):
        def generate(self, prompt_ids, params):
            calls.append((len(prompt_ids), params.max_new_tokens))
            return super().generate(prompt_ids, params)

    def counting(run, model, tokenizer):
        return CountingEngine(model, tokenizer, processes=run.config.run.rollout_processes)

    monkeypatch.setattr(Run, "rollout_engine", counting)  # the student's engine only; evaluation keeps the real one
    # No data.path: prompts from the built-in task, which has no `completion` column; none is needed.
    config = distill_config(models, tmp_path, "student", "teacher", "mode=on_policy", "lmbda=1.0", "divergence=reverse_kl", "max_new_tokens=6", "batch_size=2", "data.train_size=6")
    run_dir = distill_recipe.train(config)
    assert calls == [(2, 6)] * 3  # one sampled batch per step
    steps = [m for m in read_metrics(run_dir) if "loss/distill" in m]
    assert len(steps) == 3 and all(m["distill/on_policy_frac"] == 1.0 for m in steps)
    assert all(0 < m["completion/length_mean"] <= 6 and math.isfinite(m["loss/distill"]) and m["loss/distill"] > 0 for m in steps)


def test_sft_distillation_trains_the_student_on_the_sample_recipes_jsonl(models, tmp_path, scripted):
    sample_dir = rs.train(sample_config(models["teacher"], tmp_path))
    # teacher.path is left empty: mode sft reads the teacher's text only.
    config = distill_config(models, tmp_path, "student", "teacher", "mode=sft", f"data.path={sample_dir / 'samples.jsonl'}", "teacher.path=", "run.name=distill-sft")
    run_dir = distill_recipe.train(config)
    metrics = read_metrics(run_dir)
    assert metrics[0]["data/examples"] == 6
    sft = [m["loss/sft"] for m in metrics if "loss/sft" in m]
    assert len(sft) == 3 and sft[-1] < sft[0]
    assert (run_dir / "model" / "config.json").is_file()


def test_example_configs_load():
    sample = cfg.load(CONFIGS / "sample.yaml")
    distill = cfg.load(CONFIGS / "distill.yaml")
    assert isinstance(sample, rs.SampleConfig) and isinstance(distill, distill_recipe.DistillConfig)


def test_a_different_eos_token_is_a_tokenizer_mismatch_too(char_tokenizer):
    other = build_char_tokenizer()
    other.eos_token = "<unk>"  # same vocabulary, another end-of-sequence token
    with pytest.raises(R1kitError, match=r"eos_token differs \('<eos>' in the student, '<unk>' in the teacher\)"):
        distill_recipe.check_shared_tokenizer(char_tokenizer, other, "student", "teacher")
    distill_recipe.check_shared_tokenizer(char_tokenizer, build_char_tokenizer(), "student", "teacher")  # the same: fine


def test_a_student_sampled_batch_distils_the_completion_tokens_only():
    class OneRow:
        def generate(self, prompt_ids, params):
            # Two prompts (left-padded to 3) with completions of 2 and 1 tokens (right-padded).
            return RolloutBatch(
                torch.tensor([[0, 5, 6], [7, 8, 9]]), torch.tensor([[0, 1, 1], [1, 1, 1]]),
                torch.tensor([[10, 11], [12, 0]]), torch.tensor([[1, 1], [1, 0]]),
                torch.zeros(2, 2), ["eos", "eos"], [0, 1], 1, 0,
            )  # fmt: skip

    batch = distill_recipe.student_batch(OneRow(), [[5, 6], [7, 8, 9]], None)
    assert batch.on_policy
    assert batch.input_ids[batch.targets].tolist() == [10, 11, 12]
    assert batch.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_rejection_sampling_whose_verifier_raises_on_every_row_stops_after_three_batches(models, tmp_path, scripted, monkeypatch):
    def broken(completions, **columns):
        raise KeyError("answer")

    monkeypatch.setattr(rs, "scorer_for", lambda data: (broken, lambda text: None))
    with pytest.raises(R1kitError, match=r"reward 'arithmetic' raised on every row of 3 steps in a row \(KeyError: 'answer'\)"):
        rs.train(sample_config(models["teacher"], tmp_path, "data.train_size=8"))
    assert len(scripted) == 3  # it stopped there: a fourth batch was left unsampled
