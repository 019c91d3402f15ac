"""Search for training data, AlphaZero's loop in miniature: MCTS over reasoning steps on each
training prompt, keep the verified solutions as SFT data, and fit a value model to the outcomes
of the search's rollouts.

    build (policy, prompts) -> per prompt: MCTS (value = rollouts scored by the verifier)
          -> the verified-correct solution, if found -> samples.jsonl
          -> (prefix, outcome) pairs of every verified solution -> value-model steps -> value_model/

AlphaZero repeats: search with the current networks, train the policy on the search's choices and
the value network on game outcomes, search again. Here one round is one `r1kit search`; the policy
side is the `sft` recipe on `samples.jsonl` (`response_column=completion`, or `data_from` in a
pipeline), and `value_model/` plugs into a test-time search as `eval.mcts.value=model`.
Simplifications: the policy learns from the verified solution (behaviour cloning of search
successes, as in ReST-MCTS or rejection sampling) rather than from visit distributions; a search
stops at its first verified solution, so a prompt gives at most one; the value targets are
verdicts (1/0), not discounted returns. DeepSeek-R1 tried MCTS in this role and dropped it
(section 4.2); `benchmarks/mcts_vs_bestofn.py` measures it against best-of-n sampling.

`samples.jsonl` rows: `prompt` (raw), `completion`, `answer`, `source` (`mcts`), `tokens` (generated
by that prompt's search), `simulations`, `length` (tokens of the solution).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch

from r1kit.config import DataArgs, MCTSArgs, ModelArgs, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, RunArgs
from r1kit.data.io import write_jsonl
from r1kit.data.source import load_split
from r1kit.errors import R1kitError
from r1kit.eval.scoring import scorer_for
from r1kit.eval.search import row_verifier
from r1kit.models.load import load_model, load_tokenizer
from r1kit.models.value_head import load_scalar_model, save_scalar_model
from r1kit.report.logger import console
from r1kit.search.lm import LMStepModel
from r1kit.search.mcts import search
from r1kit.data.steps import separators_for
from r1kit.search.value import train_value_step, value_examples
from r1kit.train.progress import progress_bar
from r1kit.train.run import Run
from r1kit.data.templates import render_prompt


@dataclass
class SearchConfig:
    """MCTS on training prompts: verified solutions as SFT data, a value model from the outcomes."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The policy that proposes steps and rolls out."""
    data: DataArgs = field(default_factory=DataArgs)
    """Prompts and gold answers (data.train_size of them are searched)."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    mcts: MCTSArgs = field(default_factory=MCTSArgs)
    """The search per prompt; its value must be `rollout` (the verifier's verdicts are the data)."""
    temperature: NonNegativeFloat = 1.0
    """Sampling temperature of steps and rollouts."""
    top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """Nucleus sampling of steps and rollouts."""
    max_new_tokens: PositiveInt = 64
    """Longest solution in tokens."""
    value_steps: NonNegativeInt = 100
    """Optimizer steps of the value model on the search's (prefix, outcome) pairs; 0 = no value model."""
    value_batch_size: PositiveInt = 32
    """Pairs per value-model step, drawn at random from all of them."""
    value_lr: PositiveFloat = 1e-3
    """Adam learning rate of the value model (backbone and head)."""


def train(config: SearchConfig) -> Path:
    """Search every prompt, write `samples.jsonl` and (value_steps > 0) `value_model/`; returns the run directory."""
    _check(config)
    with Run(config, "search") as run:
        rows = load_split(config.data, "train", required=("prompt",))
        if not any(c in rows[0] for c in ("answer", "solution")):
            raise R1kitError(f"the prompts have no gold `answer` column (columns: {sorted(rows[0])}), so no rollout can be verified; map yours with data.columns, e.g. {{answer: solution}}")
        score, _ = scorer_for(config.data)
        tokenizer = load_tokenizer(config.model.path)
        model = run.accelerate(load_model(config.model.path, config.model.dtype, str(run.device), config.model.attn_implementation))
        run_dir = run.create()
        engine = run.rollout_engine(model, tokenizer)
        kept, examples, spent = search_all(config, engine, tokenizer, rows, score)
        write_jsonl(run_dir / "samples.jsonl", kept)
        summary = {"search/prompts": len(rows), "search/solved_frac": len(kept) / len(rows), "search/tokens_mean": spent / len(rows),
                   "search/value_examples": len(examples), "search/value_positive_frac": sum(t for _, t in examples) / max(1, len(examples))}  # fmt: skip
        run.log(summary, 0)
        if config.value_steps and examples:
            fit_value_model(config, run, tokenizer, examples, run_dir / "value_model")
        run.results.update({"after": {k.split("/")[1]: v for k, v in summary.items()}, "kept": len(kept)})
        run.write_results()
    if not kept:
        raise R1kitError(f"the search verified no solution on any of the {len(rows)} prompts; raise mcts.budget_tokens or start from a stronger checkpoint")
    console.print(f"search done: {len(kept)} of {len(rows)} prompts solved, {spent / len(rows):.0f} generated tokens per prompt; run {run_dir}")
    return run_dir


@torch.inference_mode()
def search_all(config: SearchConfig, engine, tokenizer, rows, score) -> tuple[list[dict[str, Any]], list[tuple[list[int], float]], int]:
    """(SFT rows of the verified solutions, value-model examples, generated tokens in all)."""
    separators = separators_for(config.data.builtin_task if not config.data.path else "", config.mcts.separators)
    m = config.mcts
    kept, examples, spent = [], [], 0
    with progress_bar("search", len(rows), config.run.progress) as bar:
        for i, row in enumerate(rows):
            prompt_ids = tokenizer(render_prompt(row["prompt"], config.data.template, tokenizer, config.data.system_prompt), add_special_tokens=False)["input_ids"]
            step_model = LMStepModel(engine, tokenizer, prompt_ids, separators, config.max_new_tokens, m.step_max_tokens, config.temperature,
                                     config.top_p, config.run.seed * 100_003 + i, verifier=row_verifier(score, row))  # fmt: skip
            result = search(step_model, m.budget_tokens, m.simulations, m.k, m.c_puct, m.widening)
            spent += result.tokens
            examples += value_examples(prompt_ids, result)
            best = result.best()
            if best is not None and best.verified and best.value >= 1.0:
                kept.append({"prompt": row["prompt"], "completion": step_model.text(best.tokens), "answer": row.get("answer", row.get("solution")),
                             "source": "mcts", "tokens": result.tokens, "simulations": result.simulations, "length": len(best.tokens)})  # fmt: skip
            bar.advance(1, info=f"solved {len(kept)}")
    return kept, examples, spent


def fit_value_model(config: SearchConfig, run: Run, tokenizer, examples: list[tuple[list[int], float]], out: Path) -> None:
    """value_steps Adam steps of a scalar-head copy of the policy on random batches of `examples`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    value = load_scalar_model(config.model.path, pad, config.model.dtype, str(run.device))
    optimizer = torch.optim.Adam(value.parameters(), lr=config.value_lr)
    rng = random.Random(config.run.seed)
    for step in range(1, config.value_steps + 1):
        batch = [examples[rng.randrange(len(examples))] for _ in range(config.value_batch_size)]
        loss = train_value_step(value, optimizer, batch, pad)
        if step % config.run.log_every == 0 or step == config.value_steps:
            run.log({"value/loss": loss}, step)
    run.results["value_loss_last"] = loss
    save_scalar_model(value, tokenizer, out)


def _check(config: SearchConfig) -> None:
    if config.mcts.value != "rollout":
        raise R1kitError(f"search cannot honour mcts.value={config.mcts.value!r}: its data are the verifier's verdicts on rollouts; set mcts.value=rollout")
