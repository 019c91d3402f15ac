"""`r1kit eval --model M --task T --k K`: metrics as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from r1kit import accel
from r1kit.config import DataArgs, EvalArgs, from_dict
from r1kit.config import apply_override
from r1kit.data.source import load_split
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_model, load_tokenizer
from r1kit.report.logger import console


def run_eval(args) -> dict[str, float]:
    raw: dict = {"data": {"task": args.task, "test_path": args.data, "test_size": args.n}, "eval": {"k": args.k}}
    for item in args.overrides:
        apply_override(raw, item)
    data = from_dict(DataArgs, raw["data"], "data.")
    eval_args = from_dict(EvalArgs, raw["eval"], "eval.")
    if args.data:
        data.path = data.path or args.data
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    accel.apply(model, next(model.parameters()).device, accel.current())
    rows = load_split(data, "test", required=("prompt", "answer"))
    result = Evaluator.for_data(tokenizer, data, eval_args, rows=rows)(model)
    table = Table(title=f"{args.model} on {args.data or args.task} ({len(rows)} rows, k={eval_args.k})")
    for key in result:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:.1f}" if k.startswith(("length", "mcts_tokens", "mcts_sim")) else f"{v:.3f}" for k, v in result.items()))
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result
