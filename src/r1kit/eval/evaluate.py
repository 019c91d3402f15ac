"""Evaluate a model on held-out rows: greedy accuracy, pass@1 averaged over n samples per prompt,
unbiased pass@k for k = 1, 2, 4, ... <= n (and eval.k), maj@n and mean completion length. The same reward code scores training and evaluation:
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
from r1kit.errors import R1kitError
from r1kit.eval.metrics import sample_metrics
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
    truncate_to: int = 0,
    task: str = "",
    sampled_out: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Metrics over `rows` (each with `prompt` and the columns `score` needs).

    `score(completions, **columns)` is a reward function; full marks (>= 1) count as correct.
    `extract(text)` gives the final answer used for majority voting. When `samples_out` is a list,
    the greedy completions are appended to it as {prompt, completion, correct}, and to `sampled_out`
    the sampled ones (n per prompt, in order) the same way. `processes`: the
    rollout engine's (`r1kit.accel.rollout_engine`, which builds the engine of this process's
    `run.accel`). `truncate_to` > 0 keeps only a prompt's last that many tokens, as training does
    with data.long_prompts=truncate. With args.search=mcts each row is also answered by a search
    (`eval/search.py`); `task` names the built-in task whose step separators it uses.
    """
    engine = accel.rollout_engine(model, tokenizer, processes=processes)
    texts = [render_prompt(r["prompt"], template, tokenizer, system_prompt) for r in rows]
    out: dict[str, float] = {}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, n=1)
    g_correct, g_len = _run(engine, tokenizer, texts, rows, score, greedy, args.batch_size, truncate_to=truncate_to)
    out["greedy_acc"] = sum(c[0] for c in g_correct) / len(rows)
    out["length_greedy"] = sum(g_len) / len(g_len)
    if samples_out is not None:
        samples_out.extend(g_correct_samples(rows, g_correct))
    if args.k > 0:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, n=samples_per_prompt(args), seed=seed)
        sampled: list[str] = []
        correct, lengths, answers = _run(engine, tokenizer, texts, rows, score, params, args.batch_size, extract, truncate_to, sampled)
        if sampled_out is not None:
            n = params.n
            sampled_out.extend({"prompt": r["prompt"], "completion": sampled[i * n + j], "correct": correct[i][j]}
                               for i, r in enumerate(rows) for j in range(n))  # fmt: skip
        out.update(sample_metrics(correct, answers, args.k))
        out["length_mean"] = sum(lengths) / len(lengths)
    engine.close()
    if args.search == "mcts":
        from r1kit.eval.search import mcts_metrics

        out.update(mcts_metrics(model, tokenizer, rows, score, args, task, template, system_prompt, seed))
    return out


def samples_per_prompt(args: EvalArgs) -> int:
    """eval.n, or eval.k when n is 0; an R1kitError when n is below k."""
    if 0 < args.n < args.k:
        raise R1kitError(f"eval.n={args.n} samples per prompt cannot give pass@{args.k} (eval.k={args.k}); set eval.n to at least {args.k}, or 0 to sample k")
    if args.n < 0:
        raise R1kitError(f"eval.n={args.n} must be 0 (= eval.k) or a number of samples per prompt")
    return args.n or args.k


class Evaluator:
    """`evaluate` with everything but the model fixed: `evaluator(model)` gives its metrics,
    `evaluator(model, samples)` also appends the greedy completions to `samples` (and
    `sampled_out=` the sampled ones)."""

    def __init__(self, tokenizer, rows: Sequence[dict[str, Any]], score: ScoreFn, extract: Callable[[str], Any], args: EvalArgs,
                 template: str = "tiny", system_prompt: str = "", processes: int = 0, truncate_to: int = 0, task: str = ""):  # fmt: skip
        self.tokenizer, self.rows, self.score, self.extract, self.args = tokenizer, rows, score, extract, args
        self.template, self.system_prompt, self.processes, self.truncate_to, self.task = template, system_prompt, processes, truncate_to, task
        samples_per_prompt(args)  # a bad eval.n is refused before a run starts

    @classmethod
    def for_data(cls, tokenizer, data: DataArgs, args: EvalArgs, processes: int = 0, rows: Sequence[dict[str, Any]] | None = None,
                 truncate_to: int = 0) -> Evaluator:  # fmt: skip
        """The test split of `data` (or `rows`) scored by its verifier (`scorer_for`), rendered
        with data.template; `processes` is run.rollout_processes; `truncate_to` as in `evaluate`
        (the length training truncates its prompts to: `r1kit.train.rollouts.fit_prompts`)."""
        from r1kit.data.source import load_split, test_from_task
        from r1kit.eval.scoring import scorer_for

        score, extract = scorer_for(data)
        rows = load_split(data, "test") if rows is None else rows
        task = data.builtin_task if test_from_task(data) else ""
        return cls(tokenizer, rows, score, extract, args, data.template, data.system_prompt, processes, truncate_to, task)

    def __call__(self, model, samples_out: list[dict[str, Any]] | None = None, sampled_out: list[dict[str, Any]] | None = None) -> dict[str, float]:
        return evaluate(model, self.tokenizer, self.rows, self.score, self.extract, self.args, self.template, self.system_prompt,
                        samples_out=samples_out, processes=self.processes, truncate_to=self.truncate_to, task=self.task,
                        sampled_out=sampled_out)  # fmt: skip


def g_correct_samples(rows, g_correct) -> list[dict[str, Any]]:
    return [{"prompt": r["prompt"], "completion": c[1], "correct": bool(c[0])} for r, c in zip(rows, g_correct)]


@torch.inference_mode()
def _run(engine, tokenizer, texts, rows, score, params: SamplingParams, batch_size: int, extract=None, truncate_to: int = 0,
         texts_out: list[str] | None = None):  # fmt: skip
    """Generate n completions per prompt in batches; per-row lists of correctness (and answers);
    every completion's text is appended to `texts_out`, in order."""
    correct: list[list[bool]] = []
    lengths: list[int] = []
    answers: list[list[Any]] = []
    greedy_texts: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk_rows = rows[start : start + batch_size]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-truncate_to if truncate_to else 0 :] for t in texts[start : start + batch_size]]
        batch = engine.generate(ids, params)
        completions = batch.texts
        if texts_out is not None:
            texts_out.extend(completions)
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
