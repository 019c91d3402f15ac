"""The demo pipeline as an experiment: r1_zero_learns, length_grows and distill_beats_small_rl
read its held-out metrics, and rl_sharpens its base and R1-Zero models.

It runs once per seed under `workdir/demo/seed-<s>/`, each finding only the stages it reads and
those they start from (its stages skip themselves when done, so the findings that share one train
it once); the two bases are pretrained once and cached, as in `r1kit demo`. Every finding
evaluates with EVAL_SAMPLES samples per held-out prompt, where the demo takes 4. At smoke size
every model is a 32-wide, one-layer one trained for two steps, and sft2 and distilled train on the
task's own worked solutions: a model that small samples no correct completion for rejection
sampling to keep.
"""

from __future__ import annotations

import dataclasses
import json
from copy import deepcopy
from pathlib import Path
from typing import Sequence

from r1kit.config import DataArgs, EvalArgs, deep_merge, from_dict, load
from r1kit.demo import DEFAULT_CONFIG
from r1kit.eval.evaluate import Evaluator
from r1kit.eval.provenance import recorded_run
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes.pipeline import PipelineConfig, StageSpec, run_pipeline
from r1kit.report.tables import METRICS, stage_metrics
from r1kit.rewards.format import is_r1_format

EVAL_SAMPLES = 16
"""Samples per held-out prompt behind every finding's pass@1 (eval.k: pass@16 and maj@16 are
reported beside it). The first runs took the demo's 4: over 80 prompts that is 320 samples, a
sampling standard error of up to 0.02 per model near pass@1 0.85 (the binomial's; less where the
prompts differ in difficulty), so up to 0.03 on the difference of two models, as large as some
findings' seed-to-seed spread; 16 samples halve both. Chosen from that
arithmetic for every finding at once, before a run, with no criterion changed."""
SMOKE_TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
SMOKE = {  # per recipe: the stage config that makes a stage of that recipe take a second or two
    "pretrain": {"tiny": SMOKE_TINY, "documents": 100, "steps": 2, "test_size": 4},
    "sft": {"steps": 2, "batch_size": 4},
    "rm": {"steps": 2, "batch_size": 4, "data": {"train_size": 8}},
    "distill": {"steps": 2, "batch_size": 4},
    "sample": {"data": {"train_size": 4}, "samples_per_prompt": 2, "max_new_tokens": 8},
    "grpo": {"grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 2}, "sampling": {"max_new_tokens": 8}},
    "ppo": {"ppo": {"steps": 2, "prompts_per_step": 4, "ppo_epochs": 1, "mini_batches": 1}, "sampling": {"max_new_tokens": 8}},
}


def config(seed: int, workdir: Path, size: str, stages: Sequence[StageSpec] | None = None, name: str = "demo",
           base: StageSpec | None = None, extra: Sequence[StageSpec] = ()) -> PipelineConfig:
    """The demo pipeline of one seed under `workdir/name` (shrunk at smoke size); with `stages`,
    the demo's base followed by those stages instead of the demo's own (the demo's defaults and
    recipe defaults still apply): a finding's own training from the shared base. With `base` (a
    pretraining stage named "base", see `base_stage`), that base instead of the demo's; `extra`
    stages come after the others."""
    pipe = load(DEFAULT_CONFIG, [], PipelineConfig)
    pipe.defaults = deep_merge(pipe.defaults, {"eval": {"k": EVAL_SAMPLES}})
    if stages is not None:
        pipe.stages = pipe.stages[:1] + [deepcopy(s) for s in stages]
    pipe.stages += [deepcopy(s) for s in extra]
    if base is not None:
        pipe.stages[0] = deepcopy(base)
    pipe.seed = seed
    pipe.report = False
    pipe.output_dir = str(workdir / (name if size == "full" else f"{name}-smoke") / f"seed-{seed}")
    if size == "smoke":
        _shrink(pipe, workdir / "cache")
    return pipe


def run(seed: int, workdir: Path, size: str, needs: Sequence[str], extra: Sequence[StageSpec] = ()) -> dict[str, float]:
    """Run (or finish) the demo pipeline of `seed` as far as the stages `needs` and `extra` take
    it: those and the stages they start from or read, no others. Every such shown stage's held-out
    metrics, as `stage/metric`. A stage's fingerprint depends on its own config only (its inputs'
    paths included), so each stage is the same whichever finding runs it first."""
    pipe = config(seed, workdir, size, extra=extra)
    pipe.stages = inputs_of(pipe.stages, [*needs, *(s.name for s in extra)])
    return metrics(pipe)


def r1_zero(seed: int, workdir: Path, size: str) -> dict[str, float]:
    """The demo's base and R1-Zero stages of `seed` (r1_zero_learns, length_grows), with each
    model's share of sampled completions in the R1 format (`format`, what the format reward pays)."""
    out = run(seed, workdir, size, needs=("r1_zero",))
    for stage, (_, completions) in sampled(Path(config(seed, workdir, size).output_dir), ("base", "r1_zero"), like="r1_zero").items():
        out[f"{stage}/format"] = sum(map(is_r1_format, completions)) / len(completions)
    return out


def inputs_of(stages: Sequence[StageSpec], names: Sequence[str]) -> list[StageSpec]:
    """The stages named and every stage they start from, take data from or learn from (a teacher),
    in pipeline order."""
    by_name = {s.name: s for s in stages}
    keep: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in by_name and name not in keep:  # anything else is a path or empty
            keep.add(name)
            todo += [by_name[name].start, by_name[name].data_from, by_name[name].teacher]
    return [s for s in stages if s.name in keep]


def metrics(pipe: PipelineConfig) -> dict[str, float]:
    """Run (or finish) a pipeline; every shown stage's held-out metrics, as `stage/metric`."""
    out = run_pipeline(pipe)
    results = json.loads((out / "results.json").read_text())
    k = int(pipe.defaults.get("eval", {}).get("k", 4))
    return {f"{stage}/{m}": v for stage, r in results.items() for m, v in stage_metrics(r, k).items() if m in METRICS}


def demo_stage(name: str) -> StageSpec:
    """The demo config's stage `name` as written there (no defaults merged in)."""
    return next(s for s in load(DEFAULT_CONFIG, [], PipelineConfig).stages if s.name == name)


def base_stage(stage: str, overrides: dict) -> StageSpec:
    """The demo's pretraining stage `stage` with `overrides` merged into its config, as the stage
    named "base" that the demo's later stages start from. Its seed stays pinned, so it is cached
    and shared by every seed like the demo's own bases."""
    return StageSpec(name="base", recipe="pretrain", config=deep_merge(demo_stage(stage).config, overrides))


def base_model(workdir: Path, size: str) -> Path:
    """The demo's teacher base alone (pretrained once, cached): the fixed policy of measurements."""
    pipe = config(0, workdir, size)
    pipe.stages = pipe.stages[:1]
    pipe.output_dir = str(Path(pipe.output_dir).parent / "base")
    return model_dir(run_pipeline(pipe), pipe.stages[0].name)


def model_dir(pipe_dir: Path, stage: str) -> Path:
    """The model a stage of a finished pipeline wrote."""
    return Path(json.loads((pipe_dir / "stages.json").read_text())[stage]) / "model"


def sampled(pipe_dir: Path, stages: Sequence[str], like: str) -> dict[str, tuple[dict[str, float], list[str]]]:
    """Each stage's model of a finished pipeline evaluated again, on the held-out prompts and with
    the sampling that stage `like` was evaluated with (the models share its tokenizer): per stage,
    its metrics and its sampled completions, for measures the pipeline's evaluation does not keep."""
    like_dir = model_dir(pipe_dir, like)
    evaluate = Evaluator.for_data(load_tokenizer(str(like_dir)), *recorded_settings(like_dir))
    out = {}
    for stage in stages:
        samples: list[dict] = []
        metrics = evaluate(load_model(str(model_dir(pipe_dir, stage))), sampled_out=samples)
        out[stage] = (metrics, [s["completion"] for s in samples])
    return out


def logged(pipe_dir: Path, stage: str, key: str) -> list[float]:
    """The values of `key` in the rows a finished pipeline stage logged (its run's metrics.jsonl),
    in step order; rows without it are skipped."""
    log = model_dir(pipe_dir, stage).parent / "metrics.jsonl"
    rows = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return [row[key] for row in rows if key in row]


def recorded_settings(model_dir: Path, **eval_changes) -> tuple[DataArgs, EvalArgs]:
    """The data and evaluation settings the stage that wrote `model_dir` evaluated it with (its
    run's config.yaml; the defaults when it has none), with the eval fields in `eval_changes` set."""
    recorded = recorded_run(model_dir)
    data = from_dict(DataArgs, dict(recorded.data) if recorded else {}, "data.")
    args = from_dict(EvalArgs, dict(recorded.eval) if recorded else {}, "eval.")
    return data, dataclasses.replace(args, **eval_changes)


def _shrink(pipe: PipelineConfig, cache_dir: Path) -> None:
    pipe.defaults = deep_merge(pipe.defaults, {
        "data": {"test_size": 4, "train_size": 32}, "eval": {"k": 2, "max_new_tokens": 8},
        "run": {"threads": 1, "progress": False, "tensorboard": False},
    })  # fmt: skip
    pipe.stages = [s for s in pipe.stages if s.recipe != "sample"]
    for stage in pipe.stages:
        if stage.data_from:
            stage.data_from = ""
            stage.config = {**stage.config, "response_column": "cot"}
        stage.config = deep_merge(stage.config, SMOKE.get(stage.recipe, {}))
        if stage.recipe == "pretrain":
            stage.config = deep_merge(stage.config, {"cache_dir": str(cache_dir)})
            stage.config["tiny"] = dict(SMOKE_TINY)  # the student's own shape is replaced, not merged
