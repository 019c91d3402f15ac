"""`r1kit eval --model M [--task T | --data FILE] [--k K] [--n N]`: metrics as a table and JSON.

A model inside a run directory (`RUN/model`, a checkpoint's model) is evaluated on what that run
trained and evaluated on: its task and task parameters, test split, prompt template and eval
settings (r1kit/eval/provenance.py). Flags and `data.*` / `eval.*` overrides win over them; another
--task or --data replaces the run's test set but keeps its prompt template.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from r1kit import accel
from r1kit.config import DataArgs, EvalArgs, apply_override, from_dict
from r1kit.data.source import load_split
from r1kit.eval.evaluate import Evaluator
from r1kit.eval.provenance import PROMPTS, Recorded, describe, recorded_run
from r1kit.models.load import load_model, load_tokenizer
from r1kit.report.logger import console

DEFAULT_TASK = "arithmetic"
DEFAULT_ROWS = 100


def resolve(args: argparse.Namespace, recorded: Recorded | None) -> tuple[DataArgs, EvalArgs]:
    """The data and eval settings: r1kit's defaults, then what the run recorded, then the flags
    (None = not given), then the key=value overrides."""
    data: dict[str, Any] = {"task": DEFAULT_TASK, "test_size": DEFAULT_ROWS}
    ev: dict[str, Any] = {}
    if recorded is not None:
        same_test_set = not args.data and args.task in (None, recorded.data.get("task"))
        data.update({k: v for k, v in recorded.data.items() if same_test_set or k in PROMPTS})
        ev.update(recorded.eval)
    flags = {("data", "task"): args.task, ("data", "test_path"): args.data or None, ("data", "test_size"): args.rows,
             ("eval", "k"): args.k, ("eval", "n"): args.n}  # fmt: skip
    raw: dict[str, Any] = {"data": data, "eval": ev}
    for (section, key), value in flags.items():
        if value is not None:
            raw[section][key] = value
    for item in args.overrides:
        apply_override(raw, item)
    data_args = from_dict(DataArgs, raw["data"], "data.")
    if args.data:
        data_args.path = data_args.path or args.data
    return data_args, from_dict(EvalArgs, raw["eval"], "eval.")


def run_eval(args: argparse.Namespace) -> dict[str, float]:
    recorded = recorded_run(args.model)
    data, eval_args = resolve(args, recorded)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    accel.apply(model, next(model.parameters()).device, accel.current())
    rows = load_split(data, "test", required=("prompt", "answer"))
    console.print(describe(data, eval_args, len(rows), recorded))
    result = Evaluator.for_data(tokenizer, data, eval_args, rows=rows)(model)
    n = eval_args.n or eval_args.k
    table = Table(title=f"{args.model} on {data.test_path or data.builtin_task} ({len(rows)} rows, k={eval_args.k}, n={n})")
    table.add_column("metric")
    table.add_column("value", justify="right")  # one row a metric: pass@1 ... pass@n fit any terminal
    for key, value in result.items():
        table.add_row(key, f"{value:.1f}" if key.startswith(("length", "mcts_tokens", "mcts_sim")) else f"{value:.3f}")
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result
