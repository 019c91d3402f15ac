"""Everything a user can get wrong, checked before a run makes anything (DESIGN principle 5).

Two moments, both before `Run.create` makes the run directory:

- `check_config(config, recipe, world_size)`, called by `Run()` before any model or data is
  loaded: every numeric field inside the range its type declares (`r1kit.config.check_ranges`),
  settings the recipe cannot honour, and a test split that comes from the training rows' own
  source (a run on `data.path` with no `data.test_path` and no built-in task named is an error,
  not an evaluation on the arithmetic task's questions);
- `check_context(model, examples, ...)`, called by a recipe once it has tokenized its rows and
  loaded its model: no training row longer than the model's context (max_position_embeddings),
  which would index past the position table, naming the file and line of the first one and the
  setting that truncates it.

Each problem is one R1kitError naming the field (or file:line) and the fix; the command line
prints it and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from r1kit.config import DataArgs, check_ranges
from r1kit.data.source import NO_TEST_SPLIT, is_file
from r1kit.errors import R1kitError
from r1kit.report.tracking import check_wandb

NO_CHECKPOINTS = {"sample": "it trains nothing", "search": "it writes its data and value model once, at the end"}
"""Recipes that have no training state to checkpoint, and why (each runs in one process too)."""
ONE_PROCESS = {**NO_CHECKPOINTS, "prm": "its solutions are sampled once, up front"}
"""Recipes that run in one process only, and why."""
PROMPT_RECIPES = ("grpo", "ppo")
"""The recipes that apply data.max_prompt_tokens and data.long_prompts."""
FSDP_RECIPES = ("pretrain", "sft", "grpo", "ppo", "dpo", "rm", "distill")
"""The recipes that train under run.parallel=fsdp."""
PAIR_RECIPES = ("dpo", "rm")
"""The recipes whose rows are preference pairs (their test split is always pairs)."""
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
"""Where a transformers config keeps the longest sequence the model takes."""


def check_config(config: Any, recipe: str, world_size: int, parallel: str = "none") -> None:
    """An R1kitError naming the field when a value of `config` is out of range, when `config`
    asks `recipe` (under `parallel`, the strategy run.parallel gave) for what it cannot do, or
    when its test split cannot measure it."""
    check_ranges(config)
    if parallel == "fsdp":
        check_fsdp(config, recipe)
    check_settings(config, recipe, world_size)
    data = getattr(config, "data", None)
    if isinstance(data, DataArgs):
        check_test_split(data, recipe, evaluates=getattr(config, "evaluate", True))


def check_settings(config: Any, recipe: str, world_size: int) -> None:
    """An R1kitError naming the field when `config` asks `recipe` for what it cannot do."""
    check_wandb(config.run.wandb)
    why = NO_CHECKPOINTS.get(recipe)
    if why:
        for key in ("save_every", "resume"):
            if getattr(config.run, key):
                raise R1kitError(f"{recipe} cannot honour run.{key}={getattr(config.run, key)!r}: {why}, so it writes no checkpoints; remove the setting")
    if recipe in ONE_PROCESS and world_size > 1:
        raise R1kitError(f"{recipe} runs in one process ({ONE_PROCESS[recipe]}); start it without torchrun")
    data = getattr(config, "data", None)
    if data is not None and recipe not in PROMPT_RECIPES:
        if data.max_prompt_tokens:
            raise R1kitError(f"{recipe} cannot honour data.max_prompt_tokens={data.max_prompt_tokens}: only {' and '.join(PROMPT_RECIPES)} fit prompts to the model's context; remove it")
        if data.long_prompts != "skip":
            raise R1kitError(f"{recipe} cannot honour data.long_prompts={data.long_prompts}: only {' and '.join(PROMPT_RECIPES)} fit prompts to the model's context; remove it")
    model = getattr(config, "model", None)
    if why and model is not None and model.lora_r:
        raise R1kitError(f"{recipe} cannot honour model.lora_r={model.lora_r}: {why}; set model.lora_r=0 (a LoRA run's model/ directory loads merged)")


def check_fsdp(config: Any, recipe: str) -> None:
    """An R1kitError for a setting that run.parallel=fsdp cannot honour in `recipe`."""
    if recipe not in FSDP_RECIPES:
        raise R1kitError(f"{recipe} cannot honour run.parallel=fsdp: it trains no model to shard (fsdp serves {', '.join(FSDP_RECIPES)}); set run.parallel=auto")
    model = getattr(config, "model", None)
    if model is not None and model.chunked_lm_head:
        raise R1kitError("model.chunked_lm_head=true reads the LM head's weight outside the model's forward, where run.parallel=fsdp holds only a shard of it; set model.chunked_lm_head=false or run.parallel=auto")
    g = getattr(config, "grpo", None)
    if g is not None and g.ref_reset_every:
        raise R1kitError("grpo.ref_reset_every copies the policy into a reference that run.parallel=fsdp keeps sharded, which r1kit does not do yet; set grpo.ref_reset_every=0 or run.parallel=auto")
    if g is not None and g.dynamic_sampling:  # every forward of a sharded model is a collective: the ranks' passes must pair up
        raise R1kitError("grpo.dynamic_sampling=true leaves the ranks different numbers of groups, whose passes through the sharded model would not pair up under run.parallel=fsdp; set grpo.dynamic_sampling=false or run.parallel=auto")


def check_test_split(data: DataArgs, recipe: str, evaluates: bool = True) -> None:
    """The held-out rows must come from where the training rows come from: a run on `data.path`
    needs `data.test_path` (a dataset by name has its own test split, data.test_split), or a
    built-in task named explicitly in `data.task` (rows sampled from
    that task); the arithmetic task that `auto` means without a file is never used for a file."""
    if not data.path or data.test_path or not is_file(data.path):  # a dataset by name has its own test split
        return
    if recipe in PAIR_RECIPES:
        raise R1kitError("data.path holds the training pairs but data.test_path is empty; set data.test_path to a held-out preference file")
    if evaluates and not data.builtin_task:
        raise R1kitError(NO_TEST_SPLIT)


def model_context(model: Any) -> tuple[int, str]:
    """(the longest sequence `model` takes, the config key that says so); (0, "") when none does."""
    config = getattr(model, "config", None)
    return next(((int(v), key) for key in CONTEXT_KEYS if (v := getattr(config, key, None))), (0, ""))


def check_examples(model: Any, examples: Sequence[Any], data: DataArgs, setting: str = "max_length") -> None:
    """Supervised examples (`r1kit.train.supervised.Example`, truncated to `setting` tokens)
    that fit the model's context, else an R1kitError naming the first row that does not."""
    check_context(model, [len(e.input_ids) for e in examples], [e.row for e in examples], data, "example", setting)


def check_pairs(model: Any, pairs: Sequence[Any], data: DataArgs, split: str = "train", setting: str = "max_length") -> None:
    """Encoded preference pairs (prompt + the longer completion) of `split` that fit the model's context."""
    lengths = [len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs]
    check_context(model, lengths, range(len(pairs)), data, "pair (prompt and longer completion)", setting, split)


def check_context(model: Any, lengths: Sequence[int], rows: Sequence[int], data: DataArgs, what: str, setting: str, split: str = "train") -> None:
    """An R1kitError naming the first row whose `lengths[i]` tokens (from row `rows[i]` of data's
    `split`; -1: a packed row) do not fit the model's context, and the fix: `setting`, the
    recipe's truncation length, set to the context."""
    context, key = model_context(model)
    long = next((i for i, n in enumerate(lengths) if n > context), None) if context else None
    if long is None:
        return
    where = "packing=true: a packed row" if rows[long] < 0 else f"{row_location(data, rows[long], split)}: the {what}"
    raise R1kitError(
        f"{where} is {lengths[long]} tokens, longer than the model's context of {context} tokens (its config's {key}); "
        f"set {setting}={context} or less (longer rows are truncated to it)"
    )


def row_location(data: DataArgs, index: int, split: str = "train") -> str:
    """Where row `index` of `split` comes from: `file:line` for JSONL (blank lines are skipped
    when reading, so they are skipped here), `file row i` for other files, the task's row i."""
    name = data.path if split == "train" else data.test_path
    if not name:
        return f"the built-in {split} row {index}"
    path = Path(name)
    if path.suffix != ".jsonl" or not path.is_file():
        return f"{name} row {index}"
    with path.open(encoding="utf-8") as f:
        rows = (lineno for lineno, line in enumerate(f, 1) if line.strip())
        line = next((n for i, n in enumerate(rows) if i == index), None)
    return f"{name}:{line}" if line else f"{name} row {index}"
