"""The configs under configs/: every YAML loads into its typed config (a pipeline also builds every
stage's config), the real-model ones keep the R1 / DeepSeekMath hyperparameters they state, and
their data path works end to end with local stand-ins.

Nothing is downloaded. The configs name their datasets by Hub id (`openai/gsm8k`); the tests write
local copies laid out like those repositories (tests/hub_layout.py: GSM8K: question / answer
ending in `#### n`; MATH: problem / solution with a \\boxed{}; MATH-500 also has a bare `answer`)
at the same relative paths in a scratch directory and run from there, where `datasets.load_dataset`
reads a local folder before it asks the Hub. The real configs then run for one step with only the
model (the tiny char model, which has a chat template, so `template: chat` stays), the run
directory and the sizes overridden; everything else is the real config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hub_layout import GSM8K, write_hub_dataset

from r1kit import config
from r1kit.data.source import load_split
from r1kit.recipes.distill import DistillConfig
from r1kit.recipes.grpo import GRPOConfig
from r1kit.recipes.pipeline import PipelineConfig, stage_config
from r1kit.recipes.rejection_sampling import SampleConfig
from r1kit.recipes.sft import SFTConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))
REAL_YAML = sorted(p for p in ALL_YAML if p.parent.name.startswith("qwen"))

GSM8K_0_5B = CONFIGS / "qwen2.5-0.5b-gsm8k"
MATH_1_5B = CONFIGS / "qwen2.5-1.5b-math"

# Local copies of the hub datasets the configs name: a few rows each, with the real column names
# and answer conventions.
STAND_INS = {
    "openai/gsm8k": {"main": GSM8K},
    "DigitalLearningGmbH/MATH-lighteval": {
        "default": {
            "train": [
                {"problem": "What is $1+1$?", "level": "Level 1", "type": "Prealgebra", "solution": "We add: $1+1=\\boxed{2}$."},
                {"problem": "Solve $2x=1$.", "level": "Level 1", "type": "Algebra", "solution": "Divide by 2: $x=\\boxed{\\frac{1}{2}}$."},
                {"problem": "What is $3^2$?", "level": "Level 1", "type": "Prealgebra", "solution": "$3^2=3\\cdot 3=\\boxed{9}$."},
                {"problem": "Find $x$ if $x-4=6$.", "level": "Level 2", "type": "Algebra", "solution": "Add 4: $x=\\boxed{10}$."},
            ],
            "test": [
                {"problem": "What is $2+5$?", "level": "Level 1", "type": "Prealgebra", "solution": "$2+5=\\boxed{7}$."},
            ],
        },
    },
    "HuggingFaceH4/MATH-500": {
        None: {
            "test": [
                {"problem": "What is $6/4$?", "solution": "$6/4=\\boxed{\\frac{3}{2}}$.", "answer": "\\frac{3}{2}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
                {"problem": "What is $\\sqrt{16}$?", "solution": "$\\sqrt{16}=\\boxed{4}$.", "answer": "4", "subject": "Algebra", "level": 1, "unique_id": "test/algebra/2.json"},
            ],
        },
    },
}

# Runs shrunk to one step of a tiny model; only the model, the run directory and sizes change.
TINY_SIZES = [
    "model.dtype=float32", "eval.k=1", "eval.max_new_tokens=8", "data.test_size=2",
    "run.threads=1", "run.progress=false", "run.tensorboard=false",
]
GRPO_SIZES = ["grpo.steps=1", "grpo.group_size=2", "grpo.prompts_per_step=2", "grpo.mini_batches=2", "sampling.max_new_tokens=8"]
"""GRPO shrunk to 4 rows a step, so at most 4 mini-batches (each takes an optimizer step)."""
SFT_SIZES = ["steps=1", "batch_size=2", "grad_accum=1"]


def load_any(path: Path, overrides=()):
    """The typed config of a YAML file, and for a pipeline the typed config of every stage."""
    cfg = config.load(path, list(overrides))
    stages = {}
    if isinstance(cfg, PipelineConfig):
        outputs: dict[str, Path] = {}
        for stage in cfg.stages:
            assert stage.recipe != "pipeline"
            stages[stage.name] = (stage, stage_config(cfg, stage, outputs))
            outputs[stage.name] = Path(cfg.output_dir) / stage.name
    return cfg, stages


def typed_configs(path: Path) -> list:
    cfg, stages = load_any(path)
    return [c for _, c in stages.values()] if stages else [cfg]


@pytest.fixture(scope="module")
def hub_copies(tmp_path_factory) -> Path:
    """A scratch directory holding a local copy of every dataset the configs name, at its Hub id."""
    root = tmp_path_factory.mktemp("real-configs")
    for repo, configs in STAND_INS.items():
        write_hub_dataset(root / repo, configs)
    return root


# --------------------------------------------------------------------------------------------
# Every config loads


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_into_its_typed_config(path):
    cfg, stages = load_any(path)
    if isinstance(cfg, PipelineConfig):
        names = [s.name for s in cfg.stages]
        assert len(set(names)) == len(names) and all(names)
        assert stages
    assert typed_configs(path)


def test_real_configs_name_their_datasets_by_hub_id_and_the_readme_exports_nothing():
    names = {(cfg.data.path, cfg.data.name) for p in REAL_YAML for cfg in typed_configs(p) if not cfg.data.path.endswith("samples.jsonl")}
    assert names == {("openai/gsm8k", "main"), ("DigitalLearningGmbH/MATH-lighteval", "default")}
    readme = (CONFIGS / "README.md").read_text()
    assert "python -c" not in readme and all(f"`{repo}`" in readme for repo in STAND_INS)
    assert not any("python -c" in p.read_text() for p in REAL_YAML)


def test_the_real_configs_are_the_expected_files():
    assert sorted(str(p.relative_to(CONFIGS)) for p in REAL_YAML) == [
        "qwen2.5-0.5b-gsm8k/distill.yaml", "qwen2.5-0.5b-gsm8k/grpo.yaml", "qwen2.5-0.5b-gsm8k/r1.yaml",
        "qwen2.5-0.5b-gsm8k/sft.yaml", "qwen2.5-1.5b-math/grpo.yaml",
    ]


# --------------------------------------------------------------------------------------------
# The hyperparameters the real configs claim


@pytest.mark.parametrize("path", REAL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_real_configs_use_r1_hyperparameters_where_they_transfer(path):
    for cfg in typed_configs(path):
        assert cfg.model.path.startswith(("Qwen/Qwen2.5-", "runs/"))
        d = cfg.data
        assert d.task == "" and (d.path in STAND_INS or d.path.endswith("samples.jsonl"))
        assert d.test_path in ("", *STAND_INS) and (d.test_path or d.path in STAND_INS) and d.test_split == "test"
        assert d.template in ("chat", "r1zero")
        assert "answer" in d.columns or d.columns == {"prompt": "question"} or d.transform == "gsm8k_r1"
        assert (cfg.eval.temperature, cfg.eval.top_p) == (0.6, 0.95)
        if isinstance(cfg, GRPOConfig):
            g = cfg.grpo
            assert g.group_size == 16
            assert 0.001 <= g.beta <= 0.04
            assert 1e-6 <= cfg.optim.lr <= 3e-6
            assert cfg.sampling.temperature == 1.0 and cfg.sampling.top_p == 1.0
            assert (g.prompts_per_step * g.group_size) % g.mini_batches == 0
            assert [r if isinstance(r, str) else r["name"] for r in cfg.rewards][0] == "math"
        if isinstance(cfg, SFTConfig):
            assert cfg.response_column in ("cot", "completion")
        if isinstance(cfg, SampleConfig):
            assert (cfg.temperature, cfg.top_p) == (0.6, 0.95)
        if isinstance(cfg, DistillConfig):
            assert cfg.teacher.path and cfg.response_column == "completion"


def test_teacher_and_students_share_one_prompt_format():
    """The distillation teacher (1.5B MATH) and the 0.5B configs must ask for the same format."""
    prompts = {cfg.data.system_prompt for p in REAL_YAML for cfg in typed_configs(p)}
    assert len(prompts) == 1 and "<answer>" in prompts.pop()


def test_pipeline_stages_chain_as_in_r1():
    cfg, stages = load_any(GSM8K_0_5B / "r1.yaml")
    assert [(s.name, s.recipe) for s, _ in stages.values()] == [
        ("r1_zero", "grpo"), ("cold_start", "sft"), ("reasoning_rl", "grpo"), ("samples", "sample"), ("sft2", "sft"), ("r1", "grpo"),
    ]
    out = Path(cfg.output_dir)
    zero, cold, rl, samples, sft2, r1 = (c for _, c in stages.values())
    assert zero.data.template == "r1zero" and cold.data.template == "chat"
    assert rl.model.path == str(out / "cold_start" / "model") and samples.model.path == str(out / "reasoning_rl" / "model")
    assert sft2.model.path == "Qwen/Qwen2.5-0.5B-Instruct" and sft2.data.path == str(out / "samples" / "samples.jsonl")
    assert sft2.response_column == "completion" and r1.model.path == str(out / "sft2" / "model")
    # trained on the samples, evaluated on GSM8K's test split (the data they replaced)
    assert (sft2.data.test_path, sft2.data.name, sft2.data.test_split) == ("openai/gsm8k", "main", "test")
    assert cold.response_column == "cot" and cold.data.train_size == 1000
    _, stages = load_any(GSM8K_0_5B / "distill.yaml")
    (_, sample), (_, student) = stages.values()
    assert student.model.path == "Qwen/Qwen2.5-0.5B-Instruct" and student.teacher.path == sample.model.path


# --------------------------------------------------------------------------------------------
# The data path, with stand-ins


def test_the_local_copies_load_by_hub_id_through_the_configs_data_args(hub_copies, monkeypatch):
    monkeypatch.chdir(hub_copies)
    sft = config.load(GSM8K_0_5B / "sft.yaml")
    train = load_split(sft.data, "train", required=("prompt", "cot"))
    assert len(train) == 4 and set(train[0]) == {"prompt", "answer", "solution", "cot"}
    assert train[0]["cot"] == "<think>He has 3 + 4 = 7 apples.</think><answer>7</answer>" and train[0]["answer"] == "7"
    assert [r["answer"] for r in load_split(sft.data, "test")] == ["20", "18"]
    math = config.load(MATH_1_5B / "grpo.yaml")
    assert len(load_split(math.data, "train")) == 4
    assert [r["answer"] for r in load_split(math.data, "test")] == [r["solution"] for r in STAND_INS["HuggingFaceH4/MATH-500"][None]["test"]]


@pytest.mark.parametrize("path", REAL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_the_gold_column_mapping_gives_the_math_reward_its_answers(path, hub_copies, monkeypatch):
    """Through each config's own data args, a completion stating the gold answer scores 1."""
    from r1kit.rewards.math import gold_answer, math_reward

    monkeypatch.chdir(hub_copies)
    for cfg in typed_configs(path):
        splits = ["test"] + (["train"] if not cfg.data.path.endswith("samples.jsonl") else [])
        for split in splits:
            rows = load_split(cfg.data, split)
            assert all(isinstance(r["prompt"], str) and r["prompt"] for r in rows)
            metrics: dict[str, float] = {}
            golds = [r["answer"] for r in rows]
            scores = math_reward([f"<answer>{gold_answer(g)}</answer>" for g in golds], answer=golds, metrics=metrics)
            assert scores == [1.0] * len(rows), (split, golds)
            assert metrics.get("gold_unparseable", 0) == 0


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("path", [GSM8K_0_5B / "grpo.yaml", MATH_1_5B / "grpo.yaml"], ids=["0.5b-gsm8k", "1.5b-math"])
def test_real_grpo_config_runs_on_stand_ins(path, hub_copies, tiny_model_dir, monkeypatch):
    from r1kit.recipes import grpo

    monkeypatch.chdir(hub_copies)
    cfg = config.load(path, [f"model.path={tiny_model_dir}", "run.output_dir=runs-test", *TINY_SIZES, *GRPO_SIZES])
    assert cfg.data.template == "chat" and cfg.data.path in STAND_INS  # the real config's own
    run_dir = grpo.train(cfg)
    rows = read_metrics(run_dir)
    step = next(r for r in rows if "reward/mean" in r)
    assert step["step"] == 1
    assert "reward/math/mean" in step and "reward/format/mean" in step
    assert step["reward/math/none_frac"] == 0.0  # every gold answer parsed
    assert step.get("reward/math/gold_unparseable", 0) == 0
    evals = json.loads((run_dir / "eval.json").read_text())
    assert set(evals) >= {"before", "after"} and "pass@1" in evals["after"]
    assert (run_dir / "model" / "config.json").is_file()


def test_real_sft_config_runs_on_stand_ins(hub_copies, tiny_model_dir, monkeypatch):
    from r1kit.recipes import sft

    monkeypatch.chdir(hub_copies)
    cfg = config.load(GSM8K_0_5B / "sft.yaml", [f"model.path={tiny_model_dir}", "run.output_dir=runs-test", *TINY_SIZES, *SFT_SIZES])
    assert cfg.data.template == "chat" and cfg.response_column == "cot"
    run_dir = sft.train(cfg)
    rows = read_metrics(run_dir)
    first = next(r for r in rows if "data/examples" in r)
    assert first["data/examples"] == 4 and first["data/truncated"] == 0
    assert any("eval/greedy_acc" in r for r in rows)
    assert "greedy_acc" in json.loads((run_dir / "eval.json").read_text())["after"]


def tiny_pipeline(path: Path, model_dir: Path, keep: int) -> PipelineConfig:
    """The real pipeline's first `keep` stages with the tiny model as every outside start/teacher
    and every stage shrunk to one step; everything else as the YAML says."""
    real = config.load(path)
    names = {s.name for s in real.stages}
    sizes = {
        "grpo": GRPO_SIZES,
        "sft": SFT_SIZES,
        "distill": SFT_SIZES,
        "sample": ["samples_per_prompt=2", "max_new_tokens=8", "data.train_size=2"],
    }
    overrides = ["output_dir=runs-test/" + path.stem, "report=false", *("defaults." + o for o in TINY_SIZES)]
    for i, stage in enumerate(real.stages):
        if stage.start and stage.start not in names:
            overrides.append(f"stages.{i}.start={model_dir}")
        if stage.teacher and stage.teacher not in names:
            overrides.append(f"stages.{i}.teacher={model_dir}")
        overrides += [f"stages.{i}.config.{o}" for o in sizes[stage.recipe]]
    cfg = config.load(path, overrides)
    cfg.stages = cfg.stages[:keep]
    return cfg


def test_r1_pipeline_runs_on_stand_ins_up_to_rejection_sampling(hub_copies, tiny_model_dir, monkeypatch):
    """R1-Zero, cold start, reasoning RL and rejection sampling run from the real pipeline YAML. An
    untrained tiny model answers nothing right, so rejection sampling keeps nothing and stops the
    pipeline (every completion dropped as `incorrect`: the gold answers were read); the stages after
    it are built in test_pipeline_stages_chain_as_in_r1."""
    from r1kit.errors import R1kitError
    from r1kit.recipes.pipeline import run_pipeline

    monkeypatch.chdir(hub_copies)
    cfg = tiny_pipeline(GSM8K_0_5B / "r1.yaml", tiny_model_dir, keep=4)
    assert [s.name for s in cfg.stages] == ["r1_zero", "cold_start", "reasoning_rl", "samples"]
    with pytest.raises(R1kitError, match=r"stage 'samples' failed: rejection sampling kept none of the 4 completions .*\{'incorrect': 4\}"):
        run_pipeline(cfg)
    out = Path(cfg.output_dir)
    for name in ("r1_zero", "cold_start", "reasoning_rl"):
        assert (out / name / "DONE").is_file(), name
    for name in ("r1_zero", "reasoning_rl"):
        step = next(r for r in read_metrics(out / name) if "reward/mean" in r)
        assert "reward/math/mean" in step and step["reward/math/none_frac"] == 0.0
        assert step.get("reward/math/gold_unparseable", 0) == 0
    templates = {name: yaml.safe_load((out / name / "config.yaml").read_text())["data"]["template"] for name in ("r1_zero", "cold_start", "reasoning_rl")}
    assert templates == {"r1_zero": "r1zero", "cold_start": "chat", "reasoning_rl": "chat"}


def test_distill_student_stage_runs_on_stand_in_teacher_samples(hub_copies, tiny_model_dir, monkeypatch):
    """The student stage of distill.yaml on rows shaped as a sample stage writes them (the tiny
    teacher would keep none), with the tiny model as teacher and student."""
    from r1kit.data.io import write_jsonl
    from r1kit.recipes import distill

    monkeypatch.chdir(hub_copies)
    cfg = tiny_pipeline(GSM8K_0_5B / "distill.yaml", tiny_model_dir, keep=2)
    samples_dir = Path("runs-test/distill-teacher-samples")
    gsm8k = GSM8K["train"]
    write_jsonl(samples_dir / "samples.jsonl", [
        {"prompt": r["question"], "completion": f"<think>{r['answer'].split('####')[0].strip()}</think><answer>{r['answer'].split('####')[1].strip()}</answer>",
         "answer": r["answer"], "source": "sample"}
        for r in gsm8k
    ])
    student = stage_config(cfg, cfg.stages[1], {"teacher_samples": samples_dir})
    assert student.mode == "sft" and student.eval_teacher and student.data.template == "chat"
    run_dir = distill.train(student)
    rows = read_metrics(run_dir)
    assert any("eval/greedy_acc" in r for r in rows)
    evals = json.loads((run_dir / "eval.json").read_text())
    assert {"before", "after", "teacher"} <= set(evals)
