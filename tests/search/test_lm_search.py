"""MCTS with a language model: the engine's tokens are exactly what the budget counts, and never
more than it; steps end at the separators; the value model's targets and training step."""

from __future__ import annotations

import math

import pytest
import torch

from r1kit.config import EvalArgs, MCTSArgs
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import evaluate
from r1kit.eval.search import mcts_metrics, search_row
from r1kit.models.load import load_model, load_tokenizer
from r1kit.models.value_head import load_scalar_model
from r1kit.rollout import HFEngine
from r1kit.search.mcts import Node, SearchResult, Solution, Step
from r1kit.search.value import ValueModel, train_value_step, value_examples


class CountingEngine(HFEngine):
    """The plain engine, counting every token it generates."""

    generated = 0

    def generate(self, prompt_ids, params):
        batch = super().generate(prompt_ids, params)
        self.generated += int(batch.completion_lengths.sum())
        return batch


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def never(completions, answer, **_):
    return [0.0] * len(completions)


@pytest.mark.parametrize("budget", [1, 5, 23, 90])
def test_an_lm_search_generates_what_it_counts_and_never_more_than_the_budget(policy, budget):
    model, tokenizer = policy
    args = EvalArgs(max_new_tokens=24, mcts=MCTSArgs(budget_tokens=budget, simulations=500, k=3, step_max_tokens=6))
    for seed in range(2):
        engine = CountingEngine(model, tokenizer)
        result, _ = search_row(engine, tokenizer, {"prompt": "1+2=?", "answer": "3"}, never, args, [" ", "="], seed)
        # A random model's steps never verify, so the search runs until the budget stops it.
        assert result.tokens == engine.generated <= budget
        assert result.tokens >= budget - args.max_new_tokens  # it stopped for want of tokens, not of simulations


def test_lm_steps_end_at_a_separator_or_the_end_of_the_solution(policy):
    model, tokenizer = policy
    # A budget that never limits a step: only the separator, the step cap (8) or the end cut one.
    args = EvalArgs(max_new_tokens=30, mcts=MCTSArgs(budget_tokens=10_000, simulations=20, k=4, step_max_tokens=8))
    result, _ = search_row(HFEngine(model, tokenizer), tokenizer, {"prompt": "1+2=?", "answer": "3"}, never, args, ["="], 0)
    nodes, stack = [], list(result.root.children)
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    assert len(nodes) > 4
    for node in nodes:
        s = node.step
        assert s.text.endswith("=") or s.terminal or len(s.tokens) == 8
        assert "=" not in s.text[:-1]  # the separator ends the step: no step runs past one
        assert len(node.tokens()) <= args.max_new_tokens


def test_mcts_metrics_in_eval_and_a_missing_value_model_is_an_error(policy):
    model, tokenizer = policy
    rows = [{"prompt": "1+2=?", "answer": "3"}, {"prompt": "2+2=?", "answer": "4"}]
    args = EvalArgs(k=0, max_new_tokens=12, search="mcts", mcts=MCTSArgs(budget_tokens=40, simulations=50, k=2))
    out = mcts_metrics(model, tokenizer, rows, never, args, task="arithmetic")
    assert out["mcts_acc"] == 0.0 and 0 < out["mcts_tokens"] <= 40 and out["mcts_simulations"] >= 1
    # Through the evaluator every recipe uses: greedy metrics, then the search's.
    full = evaluate(model, tokenizer, rows, never, lambda text: None, args)
    assert full["greedy_acc"] == 0.0 and {"mcts_acc", "mcts_answered", "mcts_tokens", "mcts_simulations"} <= set(full)
    with pytest.raises(R1kitError, match="eval.mcts.value_model"):
        mcts_metrics(model, tokenizer, rows, never, EvalArgs(search="mcts", mcts=MCTSArgs(value="model")))


def test_value_examples_are_every_prefix_of_a_verified_solution_with_its_outcome():
    root = Node()
    a = Node(step=Step("a", (7, 8), 0.0), parent=root)
    b = Node(step=Step("b", (9,), 0.0), parent=a)
    result = SearchResult(root, [Solution([7, 8, 9, 4, 5], 1.0, b, True), Solution([7, 8], 0.3, a, False)], 5, 2)
    # The prompt alone, after a, after a-b, and the whole solution; the unverified value is no target.
    assert value_examples([1, 2], result) == [([1, 2], 1.0), ([1, 2, 7, 8], 1.0), ([1, 2, 7, 8, 9], 1.0), ([1, 2, 7, 8, 9, 4, 5], 1.0)]


def test_value_steps_pull_the_value_of_a_prefix_towards_its_outcome(tiny_model_dir, char_tokenizer):
    torch.manual_seed(0)
    model = load_scalar_model(str(tiny_model_dir), char_tokenizer.pad_token_id)
    value = ValueModel(model, char_tokenizer.pad_token_id)
    good, bad = [5, 6, 7], [5, 6, 8, 9]
    before = value(good) - value(bad)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = [train_value_step(model, opt, [(good, 1.0), (bad, 0.0)], char_tokenizer.pad_token_id) for _ in range(30)]
    # Binary cross-entropy: ln 2 = 0.693 when both values sit at 0.5; it must fall well below that.
    assert losses[-1] < 0.5 * math.log(2) < losses[0] + 0.1
    assert value(good) > 0.75 and value(bad) < 0.25 and value(good) - value(bad) > before + 0.5
