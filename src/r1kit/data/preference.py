"""Preference pairs: a prompt, a preferred (`chosen`) and a dispreferred (`rejected`) completion.

Files are JSONL (or JSON / parquet / a saved HF dataset) with columns `prompt`, `chosen`,
`rejected` and optionally `margin` (how strongly the chosen wins, as in Llama 2's reward model).
They are read through `r1kit.data.io.load_rows`, so a malformed line or a missing or mistyped
column is one error naming the file, the line and the column. `prompt`, `chosen` and `rejected` may
also be chat message lists (TRL's conversational format): the prompt's turns are rendered whole
through the chat template, and each completion's turns as the template renders them after it.

The built-in synthetic set is derived from the arithmetic task, so that reward models, PPO and DPO
can be exercised with no data at all. For each problem the chosen completion is the correct,
well-formatted worked solution (every partial result, whatever the task's terse_fraction) and the
rejected one is, at random, one of

- `wrong`:     an arithmetic slip in one step of the chain, carried through to a wrong answer;
- `malformed`: the right answer with the <think>/<answer> tags (partly) missing;
- `rambling`:  the right answer with the chain of thought repeated over and over;
- `unexplained`: the right answer asserted in one step, with no working (`3+4+5=12`): annotators
  who prefer a solution that shows its steps to a bare claim, even a true one.

`flip_fraction` of the training pairs get chosen and rejected swapped, to model noisy annotators
(exactly round(flip_fraction * n) pairs, marked `flipped`); held-out pairs are never flipped, so
held-out accuracy measures agreement with the true preference. Train and test pairs come from the
task's disjoint train and test problems.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from r1kit.config import DataArgs, Probability
from r1kit.data.chat import completion_text_after
from r1kit.data.source import TEXT, is_file, read_split
from r1kit.data.tasks.arithmetic import ArithmeticTask, Problem
from r1kit.data.tasks.split import sample_split
from r1kit.data.templates import format_response, render_prompt
from r1kit.errors import R1kitError

REJECTED_KINDS = ("wrong", "malformed", "rambling", "unexplained")


@dataclass
class PreferenceArgs:
    """How preference pairs are made (data.* says where they come from)."""

    flip_fraction: Probability = 0.0
    """Fraction of training pairs with chosen and rejected swapped (noisy annotators; test pairs stay clean)."""
    rejected_kinds: list[str] = field(default_factory=lambda: list(REJECTED_KINDS))
    """Built-in arithmetic pairs: kinds of rejected completion drawn uniformly (wrong, malformed, rambling, unexplained)."""


def load_preferences(path: str | Path, columns: Mapping[str, str] | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Pairs from a file or dataset: see `preference_rows`."""
    return preference_rows(DataArgs(task="", path=str(path), columns=dict(columns or {}), train_size=limit), "train")


def preference_rows(data: DataArgs, split: str) -> list[dict[str, Any]]:
    """Pairs of the user's data: dicts with `prompt`, `chosen`, `rejected` (text or chat messages,
    kept whole for `encode_pairs` to render) and `margin` (float, 0 if absent)."""
    rows = read_split(data, split, required={"prompt": TEXT, "chosen": TEXT, "rejected": TEXT})
    path = data.path if split == "train" else data.test_path or data.path
    out = []
    for i, row in enumerate(rows):
        margin = row.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise R1kitError(f"{_location(path, i)}: column 'margin' must be a number, got {type(margin).__name__} {margin!r:.60}")
        out.append({**row, "margin": float(margin or 0.0)})
    return out


def synthetic_preferences(
    split: str,
    n: int,
    seed: int = 0,
    task_params: Mapping[str, Any] | None = None,
    rejected_kinds: list[str] | tuple[str, ...] = REJECTED_KINDS,
    flip_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """`n` arithmetic pairs of `split` (train or test) with columns prompt, chosen, rejected,
    margin (0), answer (the gold answer), kind (of the rejected completion) and flipped."""
    unknown = [k for k in rejected_kinds if k not in REJECTED_KINDS]
    if unknown or not rejected_kinds:
        raise R1kitError(f"pref.rejected_kinds {list(rejected_kinds)!r} must be a non-empty list drawn from {list(REJECTED_KINDS)}")
    task = ArithmeticTask(**(task_params or {}))
    problems = sample_split(split, n, seed, task.draw, lambda p: p.expression, unique=split == "test")
    rng = random.Random(f"{seed}-{split}-preference")
    rows = []
    for p in problems:
        # a one-step problem (3+4) has no working to leave out: `unexplained` would equal `chosen`
        kinds = [k for k in rejected_kinds if k != "unexplained" or len(p.ops) > 1]
        if not kinds:
            raise R1kitError(f"pref.rejected_kinds ['unexplained'] needs problems of three or more operands, got {p.expression!r}; set data.task_params.n_operands >= 3 or add another kind")
        kind = rng.choice(kinds)
        rejected = REJECTERS[kind](p, rng)
        chosen = format_response(" ".join(f"{e}={v}" for e, v in p.steps()), str(p.value))
        rows.append({"prompt": f"{p.expression}=?", "chosen": chosen, "rejected": rejected, "margin": 0.0, "answer": str(p.value), "kind": kind, "flipped": False})
    return flip_labels(rows, flip_fraction, seed)


def flip_labels(rows: list[dict[str, Any]], fraction: float, seed: int = 0) -> list[dict[str, Any]]:
    """A copy of `rows` with exactly round(fraction * len(rows)) pairs' chosen and rejected swapped
    (chosen at random from `seed`), each marked `flipped: True`."""
    if not 0.0 <= fraction <= 1.0:
        raise R1kitError(f"pref.flip_fraction must be in [0, 1], got {fraction}")
    out = [dict(r) for r in rows]
    for r in out:
        r.setdefault("flipped", False)
    for i in random.Random(f"{seed}-flip").sample(range(len(out)), round(fraction * len(out))):
        r = out[i]
        r["chosen"], r["rejected"], r["flipped"] = r["rejected"], r["chosen"], not r["flipped"]
    return out


def load_pairs(data: DataArgs, pref: PreferenceArgs, split: str) -> list[dict[str, Any]]:
    """Train or test pairs per the config: `data.path` / `data.test_path` files, else the built-in
    arithmetic pairs (`data.task` must be arithmetic). Flips apply to the train split only."""
    if split not in ("train", "test"):
        raise R1kitError(f"unknown split {split!r}; choose train or test")
    path = data.path if split == "train" else data.test_path
    n = data.train_size if split == "train" else data.test_size
    flip = pref.flip_fraction if split == "train" else 0.0
    if path or (split == "test" and data.path and not is_file(data.path)):  # a dataset by name has its test_split
        return flip_labels(preference_rows(data, split), flip, data.seed)
    if split == "test" and data.path:
        raise R1kitError("data.path holds the training pairs but data.test_path is empty; give a held-out preference file")
    if data.builtin_task != "arithmetic":
        raise R1kitError(
            f"built-in preference pairs exist for the arithmetic task only (data.task is {data.builtin_task!r}); "
            "set data.path to a JSONL of prompt/chosen/rejected pairs"
        )
    return synthetic_preferences(split, n, data.seed, data.task_params, pref.rejected_kinds, flip)


# --------------------------------------------------------------------------------------------
# Token ids and batches


@dataclass
class EncodedPair:
    """One pair as token ids: the rendered prompt and the two completions."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0


@dataclass
class PairBatch:
    """B pairs as one batch of 2B sequences: rows [0, B) are the chosen, rows [B, 2B) the rejected
    completions of the same prompts. P is the longest prompt, C the longest completion."""

    input_ids: torch.Tensor
    """[2B, P + C] long: prompt left-padded, then completion right-padded (the rollout layout)."""
    attention_mask: torch.Tensor
    """[2B, P + C] long: 1 on real tokens."""
    completion_mask: torch.Tensor
    """[2B, C] long: 1 on completion tokens (the last C columns of input_ids)."""
    margin: torch.Tensor
    """[B] float: the pairs' margins (0 when the data has none)."""

    @property
    def num_pairs(self) -> int:
        return self.margin.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


def encode_text(tokenizer, prompt: str, completion: str, max_length: int, add_eos: bool) -> tuple[list[int], list[int], bool]:
    """(prompt ids, completion ids, truncated): the completion is cut to fit max_length, keeping at
    least one of its tokens; the prompt is cut from the left only if it alone is too long."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in c:  # a chat turn may end in eos already
        c = c + [tokenizer.eos_token_id]
    truncated = len(p) + len(c) > max_length
    if truncated:
        p = p[-(max_length - 1) :] if len(p) >= max_length else p
        c = c[: max(1, max_length - len(p))]
    return p, c, truncated


def encode_pairs(
    tokenizer,
    pairs: Sequence[Mapping[str, Any]],
    template: str = "tiny",
    system_prompt: str = "",
    max_length: int = 256,
    add_eos: bool = False,
) -> tuple[list[EncodedPair], int]:
    """Token ids of pairs, prompts rendered with `template`; returns (pairs, number truncated).
    A prompt given as chat messages is rendered whole, and completions given as chat messages as
    the chat template renders them after it (with the template's end of turn).

    add_eos: end each completion with the eos token (DPO: the policy learns where to stop). A
    reward model is trained without it, because reward functions see decoded text, where eos is gone.
    """
    out, truncated = [], 0
    for i, pair in enumerate(pairs):
        prompt = render_prompt(pair["prompt"], template, tokenizer, system_prompt)
        ids = {}
        for side in ("chosen", "rejected"):
            if not pair[side]:
                raise R1kitError(f"preference pair {i} has an empty {side!r} completion; drop it or fill it in")
            text = pair[side]
            if not isinstance(text, str):  # assistant turns: as the chat template renders them after the prompt
                if template != "chat":
                    raise R1kitError(f"preference pair {i}: {side!r} holds chat messages, which are rendered through the chat template; set data.template=chat")
                prompt, text = completion_text_after(tokenizer, pair["prompt"], text, system_prompt)
            p, ids[side], cut = encode_text(tokenizer, prompt, text, max_length, add_eos)
            truncated += cut
        out.append(EncodedPair(p, ids["chosen"], ids["rejected"], float(pair.get("margin") or 0.0)))
    return out, truncated


def pad_prompt_completion(prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [N, P + C], attention_mask [N, P + C], completion_mask [N, C]): prompts
    left-padded to P, completions right-padded to C (at least 1 column)."""
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    ids = torch.full((len(prompts), P + C), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        ids[i, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
        attn[i, P - len(p) : P + len(c)] = 1
    return ids, attn, attn[:, P:].clone()


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> PairBatch:
    """B encoded pairs as a `PairBatch` of 2B rows (chosen first)."""
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ids, attn, cmask = pad_prompt_completion(prompts, completions, pad_id)
    return PairBatch(ids, attn, cmask, torch.tensor([p.margin for p in pairs], dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Rejected completions of the built-in set


def wrong_completion(p: Problem, rng: random.Random) -> str:
    """The worked solution with an arithmetic slip at one step, carried through: a wrong answer."""
    for _ in range(20):
        k = rng.randrange(len(p.ops))
        delta = rng.choice((-10, -3, -2, -1, 1, 2, 3, 10))
        steps, value = _slipped_steps(p, k, delta)
        if value != p.value:
            break
    else:  # every slip cancelled out (a multiplication by 0 after it): state a wrong answer
        steps, value = p.steps(), p.value + 1
    return format_response(" ".join(f"{e}={v}" for e, v in steps), str(value))


def malformed_completion(p: Problem, rng: random.Random) -> str:
    """The right answer with tags missing: untagged working, no <answer> tags, or no <think> tags."""
    think = " ".join(f"{e}={v}" for e, v in p.steps())
    return rng.choice((f"{think}. So {p.value}", f"<think>{think}</think>{p.value}", f"<answer>{p.value}</answer>"))


def rambling_completion(p: Problem, rng: random.Random) -> str:
    """The right answer after a chain of thought repeated 2 to 4 times."""
    think = " ".join(f"{e}={v}" for e, v in p.steps())
    return format_response(" ".join([think] * rng.randint(2, 4)), str(p.value))


def unexplained_completion(p: Problem, rng: random.Random) -> str:
    """The right answer in one step with no partial results: `<think>3+4+5=12</think><answer>12</answer>`."""
    return format_response(f"{p.expression}={p.value}", str(p.value))


REJECTERS = {"wrong": wrong_completion, "malformed": malformed_completion, "rambling": rambling_completion, "unexplained": unexplained_completion}


def _slipped_steps(p: Problem, k: int, delta: int) -> tuple[list[tuple[str, int]], int]:
    """The chain's steps with `delta` added to step k's result, later steps computed from it."""
    acc, out = p.operands[0], []
    for i, (op, x) in enumerate(zip(p.ops, p.operands[1:])):
        new = acc + x if op == "+" else acc - x if op == "-" else acc * x
        if i == k:
            new += delta
        out.append((f"{acc}{op}{x}", new))
        acc = new
    return out, acc


def _location(path: str | Path, index: int) -> str:
    """`file:line` of the index-th row of a JSONL file (blank lines skipped, as the reader does),
    else `file row i`, in the form `r1kit.data.io` uses."""
    path = Path(path)
    if path.suffix == ".jsonl" and path.is_file():
        seen = -1
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                seen += bool(line.strip())
                if seen == index:
                    return f"{path}:{lineno}"
    return f"{path} row {index}"
