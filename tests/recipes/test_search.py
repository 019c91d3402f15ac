"""`r1kit search`: verified solutions become rows the sft recipe trains on, the rollout outcomes
train a value model, and that value model drives a test-time search (eval.mcts.value=model)."""

from __future__ import annotations


import pytest

from r1kit import config as cfg
from r1kit.config import EvalArgs, MCTSArgs
from r1kit.data.io import load_rows
from r1kit.eval.search import mcts_metrics
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes import search as search_recipe
from r1kit.recipes import sft as sft_recipe
from r1kit.report.logger import read_metrics

QUIET = ["run.progress=false", "run.tensorboard=false", "run.threads=1", "model.device=cpu"]


def even_length(completions, answer, **_):
    """A stand-in verifier a random model can satisfy: a completion of even length is 'correct'."""
    return [float(len(c) % 2 == 0) for c in completions]


@pytest.fixture
def search_run(small_model_dir, tmp_path, monkeypatch, restore_threads):
    monkeypatch.setattr(search_recipe, "scorer_for", lambda data: (even_length, None))
    overrides = [f"model.path={small_model_dir}", f"run.output_dir={tmp_path}", "run.name=search", *QUIET, "data.train_size=6",
                 "max_new_tokens=12", "mcts.budget_tokens=60", "mcts.k=2", "mcts.step_max_tokens=4", "value_steps=15", "value_batch_size=8"]  # fmt: skip
    return search_recipe.train(cfg.load(None, overrides, search_recipe.SearchConfig))


def test_search_writes_verified_solutions_within_budget_and_a_value_model(search_run, small_model_dir, tmp_path, restore_threads):
    rows = load_rows(search_run / "samples.jsonl", required={"prompt": str, "completion": str})
    assert 1 <= len(rows) <= 6
    assert all(len(r["completion"]) % 2 == 0 and r["source"] == "mcts" and r["tokens"] <= 60 for r in rows)
    metrics = read_metrics(search_run)
    summary = next(m for m in metrics if "search/solved_frac" in m)
    assert summary["search/solved_frac"] == pytest.approx(len(rows) / 6) and summary["search/tokens_mean"] <= 60
    losses = [m["value/loss"] for m in metrics if "value/loss" in m]
    assert len(losses) == 15 and (search_run / "value_model" / "config.json").is_file()
    # The policy side of the loop: SFT trains on the rows as written.
    sft = cfg.load(None, [f"model.path={small_model_dir}", f"data.path={search_run / 'samples.jsonl'}", "response_column=completion", "data.task=arithmetic",
                          f"run.output_dir={tmp_path}", "run.name=sft", *QUIET, "steps=2", "batch_size=2", "eval.k=0",
                          "eval.max_new_tokens=4", "data.test_size=2", "max_length=48"], sft_recipe.SFTConfig)  # fmt: skip
    assert (sft_recipe.train(sft) / "model" / "config.json").is_file()


def test_a_value_model_search_generates_only_expansions(search_run, small_model_dir):
    model, tokenizer = load_model(str(small_model_dir)), load_tokenizer(str(small_model_dir))
    args = EvalArgs(k=0, max_new_tokens=12, search="mcts", mcts=MCTSArgs(budget_tokens=30, simulations=8, k=2, step_max_tokens=4,
                                                                     value="model", value_model=str(search_run / "value_model")))  # fmt: skip
    out = mcts_metrics(model, tokenizer, [{"prompt": "1+2=?", "answer": "3"}], even_length, args, task="arithmetic")
    # Eight simulations: each new node is valued by the model (no tokens); only expansions, of at
    # most k=2 steps of at most 4 tokens, generate; a node is expanded on its second visit only.
    assert 0 < out["mcts_tokens"] <= 30 and out["mcts_simulations"] <= 8

