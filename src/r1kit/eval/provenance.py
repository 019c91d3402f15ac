"""What a trained model was trained and evaluated on, read back from its run directory.

Every run writes its resolved config to `RUN/config.yaml`: the built-in task and its parameters
(`data.task`, `data.task_params`; a pretrain run keeps `task` and `task_params` at the top), the
test split (`data.test_path`, `test_size`, `seed`), the prompt template and the `eval` settings.
`r1kit eval --model RUN/model` (or a checkpoint's `RUN/checkpoints/step_N/model`) evaluates on
those, so a model trained on sums of three digits is not scored on the task's default sums of two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from r1kit.config import DataArgs, EvalArgs

TEST_SET = ("task", "task_params", "test_path", "columns", "test_size", "seed")
"""The data fields that choose and score the held-out rows."""
PROMPTS = ("template", "system_prompt")
"""The data fields that decide how the model sees a prompt: they hold whatever it is tested on."""
_PARENTS = 3
"""RUN/model is one level below the run directory, RUN/checkpoints/step_N/model three."""


@dataclass
class Recorded:
    """The evaluation-relevant settings of the run a model came from."""

    config_path: Path
    """The run's config.yaml."""
    data: dict[str, Any]
    """DataArgs fields among TEST_SET and PROMPTS, as the run resolved them."""
    eval: dict[str, Any]
    """EvalArgs fields, as the run resolved them."""


def recorded_run(model: str | Path) -> Recorded | None:
    """The settings recorded by the run directory that holds model directory `model`, or None when
    `model` is not inside one (a hub id, a directory without a run's config.yaml above it)."""
    path = Path(model)
    if not path.is_dir():
        return None
    for parent in list(path.resolve().parents)[:_PARENTS]:
        config_path = parent / "config.yaml"
        if not config_path.is_file():
            continue
        try:
            raw = yaml.safe_load(config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
        if isinstance(raw, dict) and "recipe" in raw:  # a run's resolved config, not any YAML file
            return _settings(config_path, raw)
    return None


def _settings(config_path: Path, raw: dict[str, Any]) -> Recorded:
    data = raw.get("data") if isinstance(raw.get("data"), dict) else raw  # pretrain: task, task_params at the top
    known = {f.name for f in dataclasses.fields(DataArgs)} & set(TEST_SET + PROMPTS)
    ev = raw.get("eval") if isinstance(raw.get("eval"), dict) else {}
    eval_fields = {f.name for f in dataclasses.fields(EvalArgs)}
    return Recorded(config_path, {k: v for k, v in data.items() if k in known}, {k: v for k, v in ev.items() if k in eval_fields})


def describe(data: DataArgs, args: EvalArgs, rows: int, recorded: Recorded | None) -> str:
    """One line saying what is evaluated, how, and where the settings came from."""
    if data.test_path:
        what = f"{data.test_path} ({rows} rows)"
    else:
        params = ", ".join(f"{k}={v}" for k, v in data.task_params.items()) or "default parameters"
        what = f"task {data.builtin_task} ({params}; test split, {rows} rows, seed {data.seed})"
    samples = f"greedy and {args.n or args.k} samples per prompt at temperature {args.temperature}" if args.k else "greedy only"
    where = f"settings as {recorded.config_path} records them; flags and overrides win" if recorded else "no run directory records what this model was trained on"
    return f"evaluating on {what}, template {data.template}, {samples}, at most {args.max_new_tokens} new tokens ({where})"
