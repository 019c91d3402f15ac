"""Test-time search: answer each held-out problem by MCTS over reasoning steps (`eval.search=mcts`).

Each problem gets its own tree and its own budget of generated tokens (eval.mcts.budget_tokens).
The answer is the search's best solution (`SearchResult.best`), scored by the same verifier as
greedy decoding and sampling. With value=rollout the search's leaf values are that verifier's
verdicts on sampled completions, so mcts_acc is an oracle's number, comparable to pass@k (best of
n with the verifier as the judge), not to maj@k; with value=model nothing in the search sees the
gold answer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from r1kit import accel
from r1kit.config import EvalArgs
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.search.lm import LMStepModel
from r1kit.search.mcts import SearchResult, search
from r1kit.data.steps import separators_for
from r1kit.search.value import ValueModel


def row_verifier(score: Callable[..., list[float | None]], row: dict[str, Any]) -> Callable[[str], float]:
    """Completion text -> 1.0 when `score` gives it full marks for `row`'s gold columns, else 0.0."""
    columns = {k: [v] for k, v in row.items() if k != "prompt"}

    def verify(text: str) -> float:
        s = score([text], **columns)[0]
        return 1.0 if s is not None and s >= 1.0 else 0.0

    return verify


def load_value_model(path: str, tokenizer, device) -> ValueModel:
    if not path:
        raise R1kitError("eval.mcts.value=model needs eval.mcts.value_model, the value_model directory of an `r1kit search` run; set it or use value=rollout")
    from r1kit.models.value_head import load_scalar_model

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return ValueModel(load_scalar_model(path, pad, device=str(device)), pad)


def search_row(engine, tokenizer, row: dict[str, Any], score, args: EvalArgs, separators: Sequence[str], seed: int,
               template: str = "tiny", system_prompt: str = "", value: ValueModel | None = None) -> tuple[SearchResult, LMStepModel]:  # fmt: skip
    """One problem's search under args.mcts; valued by rollouts scored by the verifier unless `value`."""
    m = args.mcts
    prompt_ids = tokenizer(render_prompt(row["prompt"], template, tokenizer, system_prompt), add_special_tokens=False)["input_ids"]
    step_model = LMStepModel(engine, tokenizer, prompt_ids, separators, args.max_new_tokens, m.step_max_tokens, args.temperature, args.top_p, seed,
                             verifier=None if value is not None else row_verifier(score, row), value=value)  # fmt: skip
    return search(step_model, m.budget_tokens, m.simulations, m.k, m.c_puct, m.widening), step_model


@torch.inference_mode()
def mcts_metrics(model, tokenizer, rows: Sequence[dict[str, Any]], score, args: EvalArgs, task: str = "",
                 template: str = "tiny", system_prompt: str = "", seed: int = 1234) -> dict[str, float]:  # fmt: skip
    """mcts_acc (share of problems whose search answer the verifier accepts), mcts_answered (share
    whose search completed a solution at all), mcts_tokens and mcts_simulations (means per problem)."""
    device = next(model.parameters()).device
    value = load_value_model(args.mcts.value_model, tokenizer, device) if args.mcts.value == "model" else None
    engine = accel.rollout_engine(model, tokenizer, processes=1)  # one prompt per call: nothing to share out
    separators = separators_for(task, args.mcts.separators)
    correct = answered = tokens = sims = 0
    try:
        for i, row in enumerate(rows):
            result, step_model = search_row(engine, tokenizer, row, score, args, separators, seed * 100_003 + i, template, system_prompt, value)
            best = result.best()
            answered += best is not None
            correct += best is not None and row_verifier(score, row)(step_model.text(best.tokens)) >= 1.0
            tokens += result.tokens
            sims += result.simulations
    finally:
        engine.close()
    n = max(1, len(rows))
    return {"mcts_acc": correct / n, "mcts_answered": answered / n, "mcts_tokens": tokens / n, "mcts_simulations": sims / n}
