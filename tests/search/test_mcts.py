"""MCTS tree maths by hand: PUCT's choice, backup, priors, a scripted policy's search traced step by
step, and a token budget that no search exceeds."""

from __future__ import annotations

import math
import random

import pytest

from r1kit.errors import R1kitError
from r1kit.search.mcts import Evaluation, Node, Step, add_children, backup, priors, puct_score, search, select_child, widen_due
from r1kit.data.steps import cut_steps, separators_for


def child(parent: Node, prior: float, visits: int, value_sum: float, name: int) -> Node:
    node = Node(step=Step(str(name), (name,), math.log(prior)), prior=prior, parent=parent, visits=visits, value_sum=value_sum)
    parent.children.append(node)
    return node


@pytest.fixture
def tree() -> tuple[Node, Node, Node, Node]:
    """A root visited 9 times over three children:
    a: P=0.5, N=4, W=2.0 (Q=0.5);  b: P=0.3, N=1, W=0.8 (Q=0.8);  c: P=0.2, never visited (Q=0)."""
    root = Node(visits=9, value_sum=2.8)
    return root, child(root, 0.5, 4, 2.0, 1), child(root, 0.3, 1, 0.8, 2), child(root, 0.2, 0, 0.0, 3)


def test_puct_scores_and_choice_on_a_hand_built_tree(tree):
    root, a, b, c = tree
    # sqrt(N(s)) = sqrt(9) = 3. With c_puct = 1.5:
    #   a: 0.5 + 1.5 * 0.5 * 3 / (1 + 4) = 0.5 + 0.45  = 0.95
    #   b: 0.8 + 1.5 * 0.3 * 3 / (1 + 1) = 0.8 + 0.675 = 1.475
    #   c: 0.0 + 1.5 * 0.2 * 3 / (1 + 0) = 0.0 + 0.9   = 0.9
    assert [puct_score(9, n, 1.5) for n in (a, b, c)] == pytest.approx([0.95, 1.475, 0.9], abs=1e-12)
    assert select_child(root, 1.5) is b
    # c_puct = 0: pure exploitation, the best mean value (b, Q=0.8).
    assert select_child(root, 0.0) is b
    # c_puct = 10: a 0.5 + 3.0 = 3.5, b 0.8 + 4.5 = 5.3, c 0 + 6.0 = 6.0: the unvisited child wins.
    assert [puct_score(9, n, 10.0) for n in (a, b, c)] == pytest.approx([3.5, 5.3, 6.0], abs=1e-12)
    assert select_child(root, 10.0) is c


def test_an_unvisited_root_chooses_by_prior_and_ties_go_to_the_first():
    root = Node()
    low, high = child(root, 0.4, 0, 0.0, 1), child(root, 0.6, 0, 0.0, 2)
    assert select_child(root, 1.0) is high  # sqrt(N) taken as 1: 0.4 vs 0.6, not 0 vs 0
    twin = Node(visits=1)
    first, _ = child(twin, 0.5, 0, 0.0, 1), child(twin, 0.5, 0, 0.0, 2)
    assert select_child(twin, 1.0) is first
    assert low.q == 0.0


def test_backup_adds_the_value_along_the_path_to_the_root(tree):
    root, a, b, _ = tree
    leaf = child(a, 1.0, 0, 0.0, 4)
    backup(leaf, 1.0)
    backup(b, 0.0)
    assert (leaf.visits, leaf.value_sum) == (1, 1.0)
    assert (a.visits, a.value_sum, a.q) == (5, 3.0, pytest.approx(0.6))  # (2.0 + 1.0) / 5
    assert (b.visits, b.value_sum, b.q) == (2, 0.8, pytest.approx(0.4))  # (0.8 + 0.0) / 2
    assert (root.visits, root.value_sum) == (11, pytest.approx(3.8))


def test_priors_renormalise_step_probabilities_without_underflow():
    steps = [Step("x", (1,), math.log(0.2)), Step("y", (2,), math.log(0.1)), Step("z", (3,), math.log(0.1))]
    assert priors(steps) == pytest.approx([0.5, 0.25, 0.25], abs=1e-12)  # 0.2 / 0.4, 0.1 / 0.4
    # exp(-200) underflows nothing once shifted: 1 / (1 + e^-1) = 0.731059, e^-1 / (1 + e^-1) = 0.268941
    far = [Step("x", (1,), -200.0), Step("y", (2,), -201.0)]
    assert priors(far) == pytest.approx([0.7310586, 0.2689414], abs=1e-6)


def test_a_step_sampled_twice_is_one_child():
    root = Node()
    kids = add_children(root, [Step("x", (1,), math.log(0.5)), Step("x", (1,), math.log(0.5)), Step("y", (2,), math.log(0.25))])
    assert [k.step.text for k in kids] == ["x", "y"]
    assert [k.prior for k in kids] == pytest.approx([2 / 3, 1 / 3])  # 0.5 / 0.75, 0.25 / 0.75


class ScriptedPolicy:
    """A fixed two-level tree; every step is one token and costs one generated token.

        root -> A (p .6, value .2) -> A1 (p .5, wrong), A2 (p .5, wrong)
             -> B (p .4, value 0)  -> B1 (p .3, right), B2 (p .7, wrong)

    The policy prefers A and, under B, the wrong B2: greedy decoding (A, then A1) is wrong.
    Non-terminal steps are valued by a fixed table (a value model); terminal ones by the verdict."""

    TREE = {(): [("A", 0.6), ("B", 0.4)], ("A",): [("A1", 0.5), ("A2", 0.5)], ("B",): [("B1", 0.3), ("B2", 0.7)]}
    VALUE = {("A",): 0.2, ("B",): 0.0}

    def __init__(self):
        self.generated = self.evaluations = 0

    def expand(self, node, k, budget_left):
        path = tuple(n.step.text for n in node.path())
        options = self.TREE[path][: min(k, budget_left)]
        self.generated += len(options)
        return [Step(t, (hash(path + (t,)),), math.log(p), terminal=len(path) == 1) for t, p in options], len(options)

    def evaluate(self, node, budget_left):
        self.evaluations += 1
        path = tuple(n.step.text for n in node.path())
        if node.terminal:
            return Evaluation(float(path[-1] == "B1"), 0, [0], verified=True)
        return Evaluation(self.VALUE[path])


def test_mcts_finds_the_answer_the_policy_does_not_prefer():
    policy = ScriptedPolicy()
    result = search(policy, budget_tokens=100, simulations=50, k=2, c_puct=1.0)
    # The trace, worked by hand: per simulation, root N before it, then Q + U of each child.
    #  1: N=0 (taken as 1): A .6, B .4 -> A, never evaluated: value .2   [root expanded: 2 tokens]
    #  2: N=1: A .2 + .6/2 = .5, B .4 -> A, visited: expand A (4 tokens); A1 = A2 = .5 -> A1: 0
    #  3: N=2: A .1 + .6*1.414/3 = .383, B .4*1.414 = .566 -> B, never evaluated: value 0
    #  4: N=3: A .1 + .6*1.732/3 = .446, B .4*1.732/2 = .346 -> A; A1 .5*1.414/2 = .354, A2 .707 -> A2: 0
    #  5: N=4: A .2/3 + .6*2/4 = .367, B .4*2/2 = .4 -> B: expand B (6 tokens); B1 .3, B2 .7 -> B2: 0
    #  6: N=5: A .0667 + .6*2.236/4 = .402, B .4*2.236/3 = .298 -> A; A1 = A2 = .5*1.732/2 -> A1: 0
    #  7: N=6: A .05 + .6*2.449/5 = .344, B .4*2.449/3 = .327 -> A; A1 .5*2/3 = .333, A2 .5*2/2 = .5 -> A2: 0
    #  8: N=7: A .04 + .6*2.646/6 = .305, B .4*2.646/3 = .353 -> B; B1 .3*1.414 = .424, B2 .7*1.414/2 = .495 -> B2: 0
    #  9: N=8: A .04 + .6*2.828/6 = .323, B .4*2.828/4 = .283 -> A; A1 = A2 = .5*2.236/3 -> A1: 0
    # 10: N=9: A .2/6 + .6*3/7 = .290, B .4*3/4 = .3 -> B; B1 .3*1.732 = .520, B2 .7*1.732/3 = .404 -> B1: right
    assert result.simulations == 10
    assert result.tokens == policy.generated == 6
    assert policy.evaluations == 6  # simulations 6-9 revisit a finished solution, whose value is kept
    best = result.best()
    assert best is not None and best.value == 1.0 and [n.step.text for n in best.node.path()] == ["B", "B1"]
    a, b = result.root.children
    assert (result.root.visits, a.visits, b.visits) == (10, 6, 4)
    assert [c.visits for c in a.children] == [3, 2] and [c.visits for c in b.children] == [1, 2]
    assert result.root.value_sum == pytest.approx(1.2)  # A's .2 and B1's 1.0


def test_progressive_widening_samples_again_at_the_2nd_5th_and_10th_visit():
    # ceil(N ** 0.5) expansions by visit N: 1 at N=1, 2 at N=2..4, 3 at N=5..9, 4 at N=10.
    due = []
    node = Node(expansions=1)
    for n in range(1, 11):
        node.visits = n
        if widen_due(node, 0.5):
            due.append(n)
            node.expansions += 1
    assert due == [2, 5, 10]
    assert not widen_due(Node(visits=7, expansions=1), 0.0) and widen_due(Node(visits=7), 0.0)


def test_a_new_expansion_adds_only_new_steps_and_renormalises_every_prior():
    root = Node()
    add_children(root, [Step("x", (1,), math.log(0.4))])
    new = add_children(root, [Step("x", (1,), math.log(0.4)), Step("y", (2,), math.log(0.1))])
    assert [c.step.text for c in new] == ["y"]
    assert [c.prior for c in root.children] == pytest.approx([0.8, 0.2])  # 0.4 / 0.5, 0.1 / 0.5


def test_a_budget_of_three_tokens_stops_after_one_expansion_of_the_root_and_one_of_a():
    # Tokens: 2 for the root, then min(k=2, left=1) = 1 step of A; then none left. Simulations as
    # in the trace above: 1 A, 2 A1 (wrong), 3 B (valued by the table at no cost), 4 A again, whose
    # only child A1 is terminal (its verdict costs nothing); 5 selects B (.4 > A's .367), whose
    # expansion the budget cannot pay for: the search ends.
    result = search(ScriptedPolicy(), budget_tokens=3, simulations=50, k=2, c_puct=1.0)
    assert result.tokens == 3 and result.simulations == 4
    assert [c.step.text for c in result.root.children[0].children] == ["A1"]
    best = result.best()  # the only completed solution, wrong A1, is the search's answer
    assert best is not None and best.value == 0.0 and best.node.step.text == "A1"


class RandomPolicy:
    """Steps of 1..5 tokens, each costing its length; leaves valued by a 1..9-token rollout. A
    policy that honours budget_left, as LMStepModel does; `generated` counts what it spent."""

    def __init__(self, seed):
        self.rng, self.generated = random.Random(seed), 0

    def expand(self, node, k, budget_left):
        steps, spent = [], 0
        for _ in range(k):
            length = self.rng.randint(1, 5)
            if spent + length > budget_left:
                break
            spent += length
            steps.append(Step("s", tuple(self.rng.randrange(10**6) for _ in range(length)), -self.rng.random() * length, self.rng.random() < 0.2))
        self.generated += spent
        return steps, spent

    def evaluate(self, node, budget_left):
        if node.terminal:
            return Evaluation(float(self.rng.random() < 0.1), 0, node.tokens(), verified=True)
        length = self.rng.randint(1, 9)
        if length > budget_left:
            return None
        self.generated += length
        return Evaluation(float(self.rng.random() < 0.1), length, node.tokens(), verified=True)


@pytest.mark.parametrize("budget", [1, 2, 7, 30, 100, 333])
def test_the_token_budget_is_never_exceeded(budget):
    for seed in range(20):
        policy = RandomPolicy(seed)
        result = search(policy, budget_tokens=budget, simulations=1000, k=3, c_puct=1.25, widening=0.5 * (seed % 2))
        assert result.tokens == policy.generated <= budget


def test_a_step_model_that_overspends_is_caught():
    class Greedy(ScriptedPolicy):
        def expand(self, node, k, budget_left):
            steps, _ = super().expand(node, k, 100)
            return steps, budget_left + 1

    with pytest.raises(RuntimeError, match="generated 4 tokens with 3 left"):
        search(Greedy(), budget_tokens=3, simulations=5, k=2, c_puct=1.0)


def test_bad_search_settings_are_one_sentence_errors():
    with pytest.raises(R1kitError, match="simulations >= 1"):
        search(ScriptedPolicy(), budget_tokens=10, simulations=0, k=2, c_puct=1.0)
    with pytest.raises(R1kitError, match="budget_tokens"):
        search(ScriptedPolicy(), budget_tokens=0, simulations=1, k=2, c_puct=1.0)


def test_steps_split_after_each_separator_and_join_back():
    text = "<think>7+8=15 15+6=21</think><answer>21</answer>"
    steps = cut_steps(text, separators_for("arithmetic"))
    assert steps == ["<think>7+8=15 ", "15+6=21</think>", "<answer>21</answer>"]
    assert "".join(steps) == text
    assert separators_for("countdown") == ["\n\n"] and separators_for("arithmetic", ["\n"]) == ["\n"]
