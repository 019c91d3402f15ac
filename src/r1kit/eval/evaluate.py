"""Evaluate a model on held-out rows: greedy accuracy, pass@1 averaged over k samples, unbiased
pass@k, maj@k and mean completion length. The same reward code scores training and evaluation:
a sample is correct when the task's reward gives it full marks.

`Evaluator` binds `evaluate` to a run's rows, verifier, settings and template once, so a recipe
evaluates with `evaluator(model)`; `Evaluator.for_data` reads them from the data and eval
sections of a config.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from r1kit import accel
from r1kit.config import DataArgs, EvalArgs
from r1kit.data.templates import render_prompt
from r1kit.eval.metrics import maj_at_k, pass_at_k
from r1kit.rollout import SamplingParams

ScoreFn = Callable[..., list[float | None]]


def evaluate(
    model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    score: ScoreFn,
    extract: Callable[[str], Any],
    args: EvalArgs,
    template: str = "tiny",
    system_prompt: str = "",
    seed: int = 1234,
    samples_out: list[dict[str, Any]] | None = None,
    processes: int = 0,
    task: str = "",
) -> dict[str, float]:
    """Metrics over `rows` (each with `prompt` and the columns `score` needs).

    `score(completions, **columns)` is a reward function; full marks (>= 1) count as correct.
    `extract(text)` gives the final answer used for majority voting. When `samples_out` is a list,
    the greedy completions are appended to it as {prompt, completion, correct}. `processes`: the
    rollout engine's (`r1kit.accel.rollout_engine`, which builds the engine of this process's
    `run.accel`). With args.search=mcts each row is also answered by a search (`eval/search.py`);
    `task` names the built-in task whose step separators it uses.
    """
    engine = accel.rollout_engine(model, tokenizer, processes=processes)
    texts = [render_prompt(r["prompt"], template, tokenizer, system_prompt) for r in rows]
    out: dict[str, float] = {}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, n=1)
    g_correct, g_len = _run(engine, tokenizer, texts, rows, score, greedy, args.batch_size)
    out["greedy_acc"] = sum(c[0] for c in g_correct) / len(rows)
    out["length_greedy"] = sum(g_len) / len(g_len)
    if samples_out is not None:
        samples_out.extend(g_correct_samples(rows, g_correct))
    if args.k > 0:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, n=args.k, seed=seed)
        correct, lengths, answers = _run(engine, tokenizer, texts, rows, score, params, args.batch_size, extract)
        k = args.k
        out["pass@1"] = sum(sum(c) / k for c in correct) / len(rows)
        out[f"pass@{k}"] = sum(pass_at_k(k, sum(c), k) for c in correct) / len(rows)
        out[f"maj@{k}"] = sum(maj_at_k(a, c) for a, c in zip(answers, correct)) / len(rows)
        out["length_mean"] = sum(lengths) / len(lengths)
    engine.close()
    if args.search == "mcts":
        from r1kit.eval.search import mcts_metrics

        out.update(mcts_metrics(model, tokenizer, rows, score, args, task, template, system_prompt, seed))
    return out


class Evaluator:
    """`evaluate` with everything but the model fixed: `evaluator(model)` gives its metrics,
    `evaluator(model, samples)` also appends the greedy completions to `samples`."""

    def __init__(self, tokenizer, rows: Sequence[dict[str, Any]], score: ScoreFn, extract: Callable[[str], Any], args: EvalArgs,
                 template: str = "tiny", system_prompt: str = "", processes: int = 0, task: str = ""):  # fmt: skip
        self.tokenizer, self.rows, self.score, self.extract, self.args = tokenizer, rows, score, extract, args
        self.template, self.system_prompt, self.processes, self.task = template, system_prompt, processes, task

    @classmethod
    def for_data(cls, tokenizer, data: DataArgs, args: EvalArgs, processes: int = 0, rows: Sequence[dict[str, Any]] | None = None) -> Evaluator:
        """The test split of `data` (or `rows`) scored by its verifier (`scorer_for`), rendered
        with data.template; `processes` is run.rollout_processes."""
        from r1kit.data.source import load_split
        from r1kit.eval.scoring import scorer_for

        score, extract = scorer_for(data)
        rows = load_split(data, "test") if rows is None else rows
        task = data.task if data.task and not data.test_path else ""
        return cls(tokenizer, rows, score, extract, args, data.template, data.system_prompt, processes, task)

    def __call__(self, model, samples_out: list[dict[str, Any]] | None = None) -> dict[str, float]:
        return evaluate(model, self.tokenizer, self.rows, self.score, self.extract, self.args, self.template, self.system_prompt,
                        samples_out=samples_out, processes=self.processes, task=self.task)  # fmt: skip


def g_correct_samples(rows, g_correct) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "completion": c[1], "correct": bool(c[0])} for r, c in zip(rows, g_correct)]


@torch.inference_mode()
def _run(engine, tokenizer, texts, rows, score, params: SamplingParams, batch_size: int, extract=None):
    """Generate n completions per prompt in batches; per-row lists of correctness (and answers)."""
    correct: list[list[bool]] = []
    lengths: list[int] = []
    answers: list[list[Any]] = []
    greedy_texts: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk_rows = rows[start : start + batch_size]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + batch_size]]
        batch = engine.generate(ids, params)
        completions = batch.texts
        columns = {k: [r.get(k) for r in chunk_rows for _ in range(params.n)] for k in chunk_rows[0] if k != "prompt"}
        scores = score(completions, **columns)
        lengths.extend(int(x) for x in batch.completion_lengths)
        for i in range(len(chunk_rows)):
            group = range(i * params.n, (i + 1) * params.n)
            correct.append([bool(scores[j] is not None and scores[j] >= 1.0) for j in group])
            if extract is not None:
                answers.append([extract(completions[j]) for j in group])
            if params.n == 1:
                greedy_texts.append(completions[i])
    if extract is not None:
        return correct, lengths, answers
    return [(c[0], t) for c, t in zip(correct, greedy_texts)], lengths
