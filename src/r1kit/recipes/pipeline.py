"""A multi-stage recipe declared in YAML: the DeepSeek-R1 pipeline and its ablations.

Each stage names a recipe, a config (overrides of that recipe's config), and where its starting
model comes from (`from`: an earlier stage's model, or a path). Stages run in order, each in its
own run directory `output_dir/<name>`. A stage that finished (its directory holds DONE, with a
fingerprint of the stage's resolved config) is skipped on a re-run unless its config changed; a stage that fails stops the pipeline with its error and keeps everything the
earlier stages produced. At the end a table compares every stage on the held-out split.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.config import RECIPES, deep_merge, dump, from_dict, recipe_config_class
from r1kit.data.source import is_file
from r1kit.errors import R1kitError
from r1kit.report.logger import console
from r1kit.report.tables import stage_metrics, stage_table
from r1kit.train.validate import check_config


@dataclass
class StageSpec:
    """One stage of a pipeline."""

    name: str = ""
    """Stage name; also its run directory's name."""
    recipe: str = ""
    """pretrain, sft, grpo, ppo, rm, dpo, sample, distill."""
    start: str = ""
    """Starting model: the name of an earlier stage (its model) or a model path/hub id; empty for pretrain."""
    config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the recipe's config for this stage."""
    data_from: str = ""
    """Name of an earlier `sample` stage whose JSONL becomes this stage's training data; with no
    data.test_path, a stage whose data.path is a dataset by name evaluates on its data.test_split."""
    teacher: str = ""
    """For distill: the earlier stage (or path) whose model is the teacher."""
    show: bool = True
    """Include this stage in the results table."""


@dataclass
class PipelineConfig:
    """A pipeline of stages."""

    output_dir: str = "runs/pipeline"
    """Parent directory; each stage runs in output_dir/<stage name>."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Config sections merged into every stage whose recipe has them (e.g. data, eval, run)."""
    recipe_defaults: dict[str, Any] = field(default_factory=dict)
    """Per-recipe config merged into every stage of that recipe, e.g. {grpo: {grpo: {steps: 40}}}."""
    stages: list[StageSpec] = field(default_factory=list)
    """The stages, in order."""
    report: bool = True
    """Write the comparison report at the end."""
    seed: int | None = None
    """Seed of every stage that does not set `run.seed` in its own config (None: each stage's
    default). `r1kit demo --seeds N` runs the pipeline once per seed; stages that pin their seed
    (the pretrained bases) are shared by all of them."""


def stage_config(pipe: PipelineConfig, stage: StageSpec, outputs: dict[str, Path]) -> Any:
    """The typed config of one stage, with defaults, its run dir and its inputs filled in."""
    cls = recipe_config_class(stage.recipe)
    fields = set(cls.__dataclass_fields__)
    raw = {k: v for k, v in pipe.defaults.items() if k in fields}
    raw = deep_merge(raw, pipe.recipe_defaults.get(stage.recipe, {}))
    if pipe.seed is not None:
        raw = deep_merge(raw, {"run": {"seed": pipe.seed}})
    raw = deep_merge(raw, stage.config)
    raw = deep_merge(raw, {"run": {"output_dir": pipe.output_dir, "name": stage.name}})
    if stage.start:
        path = str(outputs[stage.start] / "model") if stage.start in outputs else stage.start
        raw = deep_merge(raw, {"model": {"path": path}})
    if stage.data_from:
        if stage.data_from not in outputs:
            raise R1kitError(f"stage {stage.name!r} takes data from {stage.data_from!r}, which is not an earlier stage")
        data = raw.get("data", {})
        by_name = data.get("path") and not data.get("test_path") and not is_file(str(data["path"]))
        held_out = {"test_path": data["path"]} if by_name else {}  # a dataset by name keeps its own test split
        raw = deep_merge(raw, {"data": {"path": str(outputs[stage.data_from] / "samples.jsonl"), **held_out}})
    if stage.teacher:
        path = str(outputs[stage.teacher] / "model") if stage.teacher in outputs else stage.teacher
        raw = deep_merge(raw, {"teacher": {"path": path}})
    return from_dict(cls, raw, f"stages[{stage.name}].config.")


def check_stages(pipe: PipelineConfig) -> None:
    """Every stage's config checked before the first stage runs (`r1kit.train.validate`), its
    inputs standing in for the outputs of the stages before it: a mistake in the last stage fails
    at once, not after the others have trained."""
    names = [s.name for s in pipe.stages]
    if len(set(names)) != len(names) or not all(names):
        raise R1kitError(f"pipeline stage names must be unique and non-empty, got {names}")
    planned: dict[str, Path] = {}
    for s in pipe.stages:
        if s.recipe not in RECIPES or s.recipe == "pipeline":
            raise R1kitError(f"stage {s.name!r} has recipe {s.recipe!r}; choose one of {sorted(set(RECIPES) - {'pipeline'})}")
        try:
            check_config(stage_config(pipe, s, planned), s.recipe, world_size=1)
        except R1kitError as e:
            raise R1kitError(f"stage {s.name!r}: {e}") from None
        planned[s.name] = Path(pipe.output_dir) / s.name


def run_pipeline(pipe: PipelineConfig) -> Path:
    """Run every stage not yet done; return the pipeline directory."""
    out = Path(pipe.output_dir)
    check_stages(pipe)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    timings: dict[str, float] = {}
    for stage in pipe.stages:
        done = out / stage.name / "DONE"
        config = stage_config(pipe, stage, outputs)
        fingerprint = hashlib.sha256(dump(config, stage.recipe).encode()).hexdigest()[:16]
        if done.is_file():
            record = json.loads(done.read_text())
            if record.get("config") == fingerprint:
                outputs[stage.name] = Path(record["run_dir"])
                console.print(f"[bold]stage {stage.name}[/bold]: already done, skipped")
                continue
            console.print(f"[bold]stage {stage.name}[/bold]: its config changed since it ran; running it again")
            done.unlink()
        console.rule(f"stage {stage.name} ({stage.recipe})")
        t0 = time.perf_counter()
        module = importlib.import_module(RECIPES[stage.recipe].split(":")[0])
        try:
            run_dir = Path(module.train(config))
        except R1kitError as e:
            raise R1kitError(f"stage {stage.name!r} failed: {e} (earlier stages are kept; fix it and re-run to continue)") from None
        timings[stage.name] = time.perf_counter() - t0
        outputs[stage.name] = run_dir.resolve()  # as DONE records it, so a re-run fingerprints the same
        (out / stage.name).mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"run_dir": str(run_dir.resolve()), "config": fingerprint}))
        _write_stages(out, outputs)
    results = {}
    for stage in pipe.stages:
        ev = outputs[stage.name] / "eval.json"
        if stage.show and ev.is_file():
            results[stage.name] = json.loads(ev.read_text()).get("after", {})
    (out / "results.json").write_text(json.dumps(results, indent=2))
    k = int(pipe.defaults.get("eval", {}).get("k", 4))
    per_seed = {name: {m: [v] for m, v in stage_metrics(r, k).items()} for name, r in results.items()}
    console.print(stage_table(per_seed, k, f"{out}: held-out test split"))
    if timings:
        console.print("stage seconds: " + ", ".join(f"{n} {t:.0f}" for n, t in timings.items()))
    _write_stages(out, outputs)
    if pipe.report:
        try:
            from r1kit.report.html import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            console.print(f"report: {write_report(out)}")
    return out


def _write_stages(out: Path, outputs: dict[str, Path]) -> None:
    (out / "stages.json").write_text(json.dumps({name: str(path.resolve()) for name, path in outputs.items()}, indent=2))


def train(config: PipelineConfig) -> Path:
    """`r1kit pipeline --config FILE`: the same entry point shape as every recipe."""
    return run_pipeline(config)
