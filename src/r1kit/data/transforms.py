"""Row transforms (`data.transform`): a dataset's rows reshaped into the columns a recipe reads.

A transform takes one row (a dict of the dataset's own columns) and returns the new row; it runs
before `data.columns` renames anything. Built-ins are named in `TRANSFORMS`; `package.module:function`
names a user's own.

`gsm8k_r1` (openai/gsm8k, config `main`): the `question` becomes `prompt`; the worked solution
(`answer`, ending in `#### n`) is kept as `solution`; `answer` becomes the final number `n` alone, the
gold answer of the `math` reward; `cot` is the solution in R1's response format,
`<think>worked steps</think><answer>n</answer>`, with GSM8K's `<<48/2=24>>` calculator annotations
removed: the cold-start SFT target of DeepSeek-R1's stage 1.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from r1kit.data.templates import format_response
from r1kit.errors import R1kitError

Row = dict[str, Any]
Transform = Callable[[Row], Row]

CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


def gsm8k_r1(row: Row) -> Row:
    """GSM8K's question / `... #### n` solution as prompt, answer (n), solution and cot (R1 form)."""
    solution = row.get("answer")
    if not isinstance(row.get("question"), str) or not isinstance(solution, str) or "####" not in solution:
        raise R1kitError(f"data.transform=gsm8k_r1 needs GSM8K's columns: `question` and an `answer` ending in `#### n`; got {_preview(row)}")
    steps, _, final = solution.rpartition("####")
    final = final.strip().replace(",", "")  # GSM8K writes no thousands separators, but some copies do
    think = CALCULATOR_RE.sub("", steps).strip()
    rest = {k: v for k, v in row.items() if k not in ("question", "answer")}
    return {**rest, "prompt": row["question"], "answer": final, "solution": solution, "cot": format_response(think, final)}


TRANSFORMS: dict[str, Transform] = {"gsm8k_r1": gsm8k_r1}


def get_transform(name: str) -> Transform:
    """The built-in transform `name`, or the function at `package.module:function`."""
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    if ":" not in name:
        raise R1kitError(f"unknown data.transform {name!r}; choose one of {sorted(TRANSFORMS)} or give package.module:function")
    module_name, _, attribute = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise R1kitError(f"data.transform {name!r} cannot be loaded ({type(e).__name__}: {e}); check the module is on the Python path") from None
    if not callable(fn):
        raise R1kitError(f"data.transform {name!r} is not a function; point it at fn(row) -> row")
    return fn


def apply_transform(name: str, rows: list[Row], where: str) -> list[Row]:
    """`rows` through transform `name` (none when empty); `where` names the data in errors."""
    if not name:
        return rows
    fn = get_transform(name)
    out = []
    for i, row in enumerate(rows):
        new = fn(dict(row))
        if not isinstance(new, dict):
            raise R1kitError(f"{where} row {i}: data.transform {name!r} returned {type(new).__name__}; it must return the row as a dict")
        out.append(new)
    return out


def _preview(row: Row) -> str:
    return "{" + ", ".join(f"{k!r}: {str(v)[:40]!r}" for k, v in row.items()) + "}"
