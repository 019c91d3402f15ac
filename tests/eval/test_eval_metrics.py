"""Evaluation estimators: unbiased pass@k against exact enumeration, majority voting, and the
aggregation in `evaluate` on scripted completions whose metrics are worked out by hand."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest

from r1kit.config import DataArgs, EvalArgs
from r1kit.data.tasks import get_task
from r1kit.eval import evaluate as evaluate_module
from r1kit.errors import R1kitError
from r1kit.eval.metrics import auroc, best_of_n, maj_at_k, majority_vote, pass_at_k, reported_ks, sample_metrics
from r1kit.eval.scoring import scorer_for


def enumerated_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The fraction of all k-subsets of n samples (c of them correct) holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_exact_enumeration_over_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(enumerated_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 1, 1, 0.1),  # pass@1 is the fraction correct
        (10, 3, 1, 0.3),
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (5, 1, 2, 0.4),  # 1 - C(4,2)/C(5,2) = 1 - 6/10
        (64, 0, 8, 0.0),  # nothing correct: 0 whatever k
        (8, 8, 1, 1.0),  # all correct: 1 whatever k
        (8, 1, 8, 1.0),  # k = n: any correct sample counts
        (8, 2, 7, 1.0),  # n - c < k: every k-subset must hold a correct one
    ],
)
def test_pass_at_k_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_grows_with_k():
    values = [pass_at_k(16, 3, k) for k in range(1, 17)]
    assert values == sorted(values) and values[0] == pytest.approx(3 / 16) and values[-1] == 1.0


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs 0 <= c <= n and 1 <= k <= n"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "answers, winner",
    [
        (["7", "7", "8"], "7"),
        (["8", "7", "7"], "7"),
        (["8", "7", "7", "8"], "8"),  # a tie goes to the answer seen first
        (["7", "8", "8", "7"], "7"),
        ([None, None, "3"], "3"),  # None is never voted for, even when most common
        ([None, "4", None, "5", "5"], "5"),
        ([None, None], None),
        ([], None),
        ([1, 2, 2], 2),  # any hashable answer
    ],
)
def test_majority_vote(answers, winner):
    assert majority_vote(answers) == winner


@pytest.mark.parametrize(
    "answers, correct, value",
    [
        (["7", "7", "8"], [True, True, False], 1.0),
        (["8", "8", "7"], [False, False, True], 0.0),  # the right answer exists but loses the vote
        (["8", "7", "7", "8"], [False, True, True, False], 0.0),  # tie -> "8", which is wrong
        (["7", "8", "8", "7"], [True, False, False, True], 1.0),
        ([None, None, None], [False, False, False], 0.0),  # all None
        ([None, "7", None], [False, True, False], 1.0),
    ],
)
def test_maj_at_k(answers, correct, value):
    assert maj_at_k(answers, correct) == value


def test_maj_at_k_needs_one_flag_per_answer():
    # The winner "7" is correct at the first flag; the length mismatch must still be caught.
    with pytest.raises(ValueError, match="one correctness flag per answer, got 2 answers and 1 flags"):
        maj_at_k(["7", "7"], [True])


# -- evaluate() on scripted completions -----------------------------------------------------------

# prompt -> (greedy completion, k=4 sampled completions)
SCRIPT = {
    "3+4=?": ("<answer>7</answer>", ["<answer>7</answer>", "<answer>7</answer>", "<answer>8</answer>", "<answer>x</answer>"]),
    "1+2=?": ("<answer>4</answer>", ["<answer>5</answer>", "<answer>5</answer>", "<answer>3</answer>", "nothing"]),
}
ROWS = [{"prompt": "3+4=?", "answer": "7"}, {"prompt": "1+2=?", "answer": "3"}]


class ScriptedEngine:
    """Stands in for the rollout engine: answers each prompt from SCRIPT; a completion's length is its chars."""

    def __init__(self, model, tokenizer, processes=0):
        self.tokenizer = tokenizer
        self.calls: list = []

    def generate(self, prompt_ids, params):
        self.calls.append(params)
        texts = []
        for ids in prompt_ids:
            prompt = self.tokenizer.decode(ids).removeprefix("Q: ").removesuffix("\nA: ")
            greedy, sampled = SCRIPT[prompt]
            texts.extend([greedy] if params.temperature == 0 else sampled[: params.n])
        return SimpleNamespace(texts=texts, completion_lengths=[len(t) for t in texts])

    def close(self):
        pass


def test_evaluate_aggregates_greedy_pass_at_1_pass_at_k_maj_at_k_and_length(monkeypatch, char_tokenizer):
    monkeypatch.setattr(evaluate_module.accel, "rollout_engine", ScriptedEngine)
    task = get_task("arithmetic")
    samples: list = []
    result = evaluate_module.evaluate(
        None, char_tokenizer, ROWS, task.reward, task.extract_answer, EvalArgs(k=4, max_new_tokens=16, batch_size=1), samples_out=samples
    )
    # greedy: 7 right, 4 wrong -> 1/2.  samples: row 1 has 2/4 right, row 2 has 1/4 right.
    # pass@1 = (2/4 + 1/4) / 2; pass@4 = 1 for both rows (n = k, each has a correct sample).
    # pass@2 = (1 - C(2,2)/C(4,2) + 1 - C(3,2)/C(4,2)) / 2 = (5/6 + 1/2) / 2 = 2/3.
    # maj@4: row 1 votes 7 (right), row 2 votes 5 (wrong) -> 1/2.
    # lengths: greedy 18 and 18 chars; samples 18*5 + 7 ("nothing") + 18*2 = 133 over 8.
    assert result == pytest.approx(
        {"greedy_acc": 0.5, "length_greedy": 18.0, "pass@1": 0.375, "pass@2": 2 / 3, "pass@4": 1.0, "maj@4": 0.5, "length_mean": (18 * 7 + 7) / 8}
    )
    assert samples == [
        {"prompt": "3+4=?", "completion": "<answer>7</answer>", "correct": True},
        {"prompt": "1+2=?", "completion": "<answer>4</answer>", "correct": False},
    ]


def test_evaluate_hands_back_the_sampled_completions_in_order_with_their_marks(monkeypatch, char_tokenizer):
    monkeypatch.setattr(evaluate_module.accel, "rollout_engine", ScriptedEngine)
    task = get_task("arithmetic")
    sampled: list = []
    evaluate_module.evaluate(None, char_tokenizer, ROWS, task.reward, task.extract_answer, EvalArgs(k=4, batch_size=1), sampled_out=sampled)
    expected = [(r["prompt"], t) for r in ROWS for t in SCRIPT[r["prompt"]][1]]
    assert [(s["prompt"], s["completion"]) for s in sampled] == expected
    assert [s["correct"] for s in sampled] == [True, True, False, False, False, False, True, False]  # 3 of 8: pass@1 3/8


# 16 samples per prompt: row 1 has 2 right (7) and votes 9 (wrong); row 2 has 9 right (3) of 16 and votes 3.
SIXTEEN = {
    "3+4=?": ["<answer>7</answer>"] * 2 + ["<answer>8</answer>"] * 6 + ["<answer>9</answer>"] * 8,
    "1+2=?": ["<answer>5</answer>"] * 7 + ["<answer>3</answer>"] * 9,
}


class SixteenEngine(ScriptedEngine):
    """Greedy from SCRIPT; sampled from SIXTEEN (params.n of them)."""

    def generate(self, prompt_ids, params):
        if params.temperature == 0:
            return super().generate(prompt_ids, params)
        self.calls.append(params)
        prompts = [self.tokenizer.decode(ids).removeprefix("Q: ").removesuffix("\nA: ") for ids in prompt_ids]
        texts = [t for p in prompts for t in SIXTEEN[p][: params.n]]
        return SimpleNamespace(texts=texts, completion_lengths=[len(t) for t in texts])


def test_evaluate_with_n_16_and_k_4_gives_unbiased_pass_at_1_to_16_and_maj_at_16(monkeypatch, char_tokenizer):
    engines: list = []
    monkeypatch.setattr(evaluate_module.accel, "rollout_engine", lambda *a, **kw: engines.append(SixteenEngine(*a, **kw)) or engines[-1])
    task = get_task("arithmetic")
    result = evaluate_module.evaluate(None, char_tokenizer, ROWS, task.reward, task.extract_answer, EvalArgs(k=4, n=16, max_new_tokens=16))
    assert [p.n for p in engines[0].calls] == [1, 16]  # greedy, then 16 samples per prompt
    # 1 - C(16-c, j) / C(16, j) with C(16,2) = 120, C(16,4) = 1820, C(16,8) = 12870:
    #   row 1, c = 2: j=1 2/16; j=2 1 - C(14,2)/120 = 1 - 91/120 = 29/120; j=4 1 - C(14,4)/1820 = 1 - 1001/1820 = 0.45;
    #                 j=8 1 - C(14,8)/12870 = 1 - 3003/12870 = 23/30; j=16 1.
    #   row 2, c = 9: j=1 9/16; j=2 1 - C(7,2)/120 = 99/120; j=4 1 - C(7,4)/1820 = 1 - 35/1820 = 51/52; j=8, 16: 1 (only 7 wrong).
    # maj@16: row 1 votes 9 (wrong), row 2 votes 3 (right) -> 1/2.
    expected = {"pass@1": (2 / 16 + 9 / 16) / 2, "pass@2": (29 / 120 + 99 / 120) / 2, "pass@4": (0.45 + 51 / 52) / 2,
                "pass@8": (23 / 30 + 1) / 2, "pass@16": 1.0, "maj@16": 0.5}  # fmt: skip
    assert {k: v for k, v in result.items() if k.startswith(("pass@", "maj@"))} == pytest.approx(expected, abs=1e-12)


def test_sample_metrics_by_hand_for_one_prompt():
    # n = 6, c = 3, k = 3: pass@3 = 1 - C(3,3)/C(6,3) = 1 - 1/20; pass@2 = 1 - C(3,2)/C(6,2) = 1 - 3/15; pass@4 = 1 (n - c < 4).
    result = sample_metrics([[True, False, True, False, True, False]], [["1", "2", "1", "2", "1", "2"]], k=3)
    assert result == pytest.approx({"pass@1": 0.5, "pass@2": 0.8, "pass@3": 0.95, "pass@4": 1.0, "maj@6": 1.0}, abs=1e-12)


@pytest.mark.parametrize("n, k, ks", [(1, 1, [1]), (4, 4, [1, 2, 4]), (16, 4, [1, 2, 4, 8, 16]), (12, 3, [1, 2, 3, 4, 8]), (5, 0, [1, 2, 4])])
def test_reported_ks_are_the_powers_of_two_up_to_n_and_k(n, k, ks):
    assert reported_ks(n, k) == ks


def test_n_below_k_is_refused_before_anything_is_sampled(char_tokenizer):
    with pytest.raises(R1kitError, match=r"eval.n=2 samples per prompt cannot give pass@4 \(eval.k=4\); set eval.n to at least 4"):
        evaluate_module.Evaluator(char_tokenizer, ROWS, None, None, EvalArgs(k=4, n=2))


def test_evaluate_with_k_0_is_greedy_only(monkeypatch, char_tokenizer):
    monkeypatch.setattr(evaluate_module.accel, "rollout_engine", ScriptedEngine)
    task = get_task("arithmetic")
    result = evaluate_module.evaluate(None, char_tokenizer, ROWS, task.reward, task.extract_answer, EvalArgs(k=0))
    assert result == {"greedy_acc": 0.5, "length_greedy": 18.0}


def test_scorer_for_a_task_is_the_tasks_own_verifier_and_for_files_the_math_reward():
    score, extract = scorer_for(DataArgs(task="countdown"))
    assert score(["<answer>3*4</answer>"], ["12"], nums=[[3, 4]]) == [1.0]
    assert extract("<answer> 3 * 4 </answer>") == "3*4"
    # Training rows from a file but the test split from the task: the task's verifier still scores.
    score, _ = scorer_for(DataArgs(task="arithmetic", path="train.jsonl"))
    assert score(["So 7"], answer=["7"]) == [1.0]
    score, extract = scorer_for(DataArgs(task="arithmetic", path="train.jsonl", test_path="test.jsonl"))
    assert score(["<answer>\\frac{1}{2}</answer>"], answer=["0.5"]) == [1.0]


def test_auroc_counts_pairs_where_a_positive_outscores_a_negative_ties_half():
    # Positives 0.9, 0.4; negatives 0.4, 0.1. Pairs: (0.9>0.4) 1, (0.9>0.1) 1, (0.4=0.4) 1/2, (0.4>0.1) 1 -> 3.5/4
    assert auroc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == 0.875
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert math.isnan(auroc([0.5, 0.6], [True, True]))


def test_best_of_n_takes_the_highest_scored_sample_first_on_ties():
    scores = [[0.2, 0.9, 0.5], [0.7, 0.7, 0.1]]
    correct = [[True, False, True], [False, True, True]]
    # Prompt 0 picks sample 1 (wrong); prompt 1 ties 0.7 and 0.7 -> the first (wrong): 0 of 2
    assert best_of_n(scores, correct) == 0.0
    assert best_of_n([[0.2, 0.1, 0.5], [0.1, 0.7, 0.7]], correct) == 1.0
