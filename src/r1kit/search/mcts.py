"""Monte Carlo Tree Search over reasoning steps, AlphaZero-style: the tree maths and the loop.

A node is a prefix of the solution, a whole number of steps long; its children are the next steps
the policy proposed, each with the policy's probability of it as the prior P. One simulation

    select   from the root, take the child with the largest PUCT score
                 Q(s,a) + c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))      (Silver et al. 2017)
             (Q the mean backed-up value, 0 for a child never visited; N the visit counts) until
             a node never evaluated, or a terminal one;
    expand   on the way, a node visited before but without children asks the policy for K next
             steps (the step model samples them, charging the tokens to the budget); with
             progressive widening a busy node asks again now and then (`widen_due`);
    evaluate the node reached: a rollout to the end scored by the verifier, or a value model
             (AlphaZero's v(s)); a terminal node by the verifier's verdict (or the value model),
             once: a revisit backs up the same value again;
    backup   add the value to every node on the path to the root and count the visit.

The search stops after `simulations` simulations, when the token budget cannot pay for a needed
expansion or rollout, or (with an oracle evaluation, whose values are verdicts) at the first
verified solution. The budget counts generated tokens and is never exceeded: the step model is told
how many tokens are left and must generate no more (`TokenBudget.charge` raises if one does).

Everything here is plain Python over a `StepModel` protocol, so the tree maths can be checked by
hand and the loop driven by a scripted policy; `r1kit.search.lm` is the step model of a language
model. DeepSeek-R1 (section 4.2) tried this and dropped it: the space of next steps is far larger
than a board game's moves, and a fine-grained value model is hard to train. This is the experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from r1kit.errors import R1kitError


@dataclass
class Step:
    """One step the policy proposed: its text, token ids and log-probability under the policy."""

    text: str
    tokens: tuple[int, ...]
    logprob: float
    terminal: bool = False
    """The step ends the solution (end of sequence, the answer closed, or no room left)."""


@dataclass(eq=False)  # nodes compare by identity: a field-wise == would walk the whole tree
class Node:
    """A solution prefix: the steps from the root to here."""

    step: Step | None = None
    """The step that leads here from the parent (None at the root)."""
    prior: float = 1.0
    """P(s, a): the policy's probability of this step among its siblings."""
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    """N: simulations that passed through this node."""
    expansions: int = 0
    """How many times the policy was asked for next steps here."""
    value_sum: float = 0.0
    """W: the sum of the values backed up through this node; Q = W / N."""

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 before the first visit (AlphaZero's initial Q)."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def terminal(self) -> bool:
        return self.step is not None and self.step.terminal

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    def path(self) -> list[Node]:
        """The nodes from the root's first child down to this one (empty at the root)."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None and node.step is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def tokens(self) -> list[int]:
        """The token ids of the prefix: every step's, in order."""
        return [t for n in self.path() for t in n.step.tokens]  # type: ignore[union-attr]


def puct_score(parent_visits: int, child: Node, c_puct: float) -> float:
    """Q(s,a) + c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))."""
    return child.q + c_puct * child.prior * math.sqrt(parent_visits) / (1 + child.visits)


def select_child(node: Node, c_puct: float) -> Node:
    """The child with the largest PUCT score; the first one on a tie. At a node never visited (the
    root, on the first simulation) N(s) is taken as 1, so the priors choose rather than the order."""
    if not node.children:
        raise ValueError("select_child needs an expanded node")
    return max(node.children, key=lambda c: puct_score(max(node.visits, 1), c, c_puct))


def backup(node: Node, value: float) -> None:
    """Count a visit and add `value` at `node` and each of its ancestors up to the root."""
    walk: Node | None = node
    while walk is not None:
        walk.visits += 1
        walk.value_sum += value
        walk = walk.parent


def priors(steps: Sequence[Step]) -> list[float]:
    """The policy's probabilities of the proposed steps, renormalised over them: exp(logprob) / sum.

    Computed from the log-probabilities shifted by their maximum, so long steps (log-probs of -200)
    do not underflow."""
    top = max(s.logprob for s in steps)
    weights = [math.exp(s.logprob - top) for s in steps]
    total = sum(weights)
    return [w / total for w in weights]


def add_children(node: Node, steps: Sequence[Step]) -> list[Node]:
    """Attach one child per new distinct step (by tokens: a step sampled twice, or again at a later
    expansion, is one child) and set every child's prior from the policy over all of them.
    Returns the new children."""
    known = {c.step.tokens for c in node.children}  # type: ignore[union-attr]
    new: list[Node] = []
    for s in steps:
        if s.tokens not in known:
            known.add(s.tokens)
            new.append(Node(step=s, parent=node))
    node.children.extend(new)
    if not node.children:
        return new
    for c, p in zip(node.children, priors([c.step for c in node.children])):  # type: ignore[misc]
        c.prior = p
    return new


def widen_due(node: Node, widening: float) -> bool:
    """Whether `node` should sample more next steps now: it never has, or (progressive widening,
    Coulom 2007) its expansions so far are fewer than ceil(N ** widening). widening 0 expands a node
    once, as AlphaZero does; 0.5 samples again at the 2nd, 5th, 10th, 17th ... visit."""
    if node.expansions == 0:
        return True
    return widening > 0 and node.expansions < math.ceil(node.visits**widening)


class TokenBudget:
    """Generated tokens a search may spend; charging more than is left is an error."""

    def __init__(self, total: int):
        if total < 1:
            raise R1kitError(f"the search budget must be at least one generated token, got {total}; raise budget_tokens")
        self.total, self.spent = total, 0

    @property
    def left(self) -> int:
        return self.total - self.spent

    def charge(self, tokens: int) -> None:
        if tokens > self.left:
            raise RuntimeError(f"a step model generated {tokens} tokens with {self.left} left in the budget")
        self.spent += tokens


@dataclass
class Evaluation:
    """What evaluating a leaf gave: its value, the tokens it generated, the whole solution when one
    was completed (a terminal leaf, or a rollout's end) and whether the value is a verdict."""

    value: float
    tokens: int = 0
    solution: list[int] | None = None
    """Token ids of the completed solution (prefix plus rollout), when there is one."""
    verified: bool = False
    """The value is the verifier's verdict on `solution` (1.0 = correct)."""


class StepModel(Protocol):
    """The policy and evaluator a search calls: `r1kit.search.lm.LMStepModel`, or a scripted one in tests."""

    def expand(self, node: Node, k: int, budget_left: int) -> tuple[list[Step], int]:
        """Up to k next steps of `node`'s prefix and the tokens generated, at most budget_left;
        no steps when nothing can be generated within it."""
        ...

    def evaluate(self, node: Node, budget_left: int) -> Evaluation | None:
        """The value of `node`'s prefix, generating at most budget_left tokens; None if it cannot."""
        ...


@dataclass
class Solution:
    """A completed solution the search found, with its value."""

    tokens: list[int]
    value: float
    node: Node
    """The node the solution was completed from."""
    verified: bool


@dataclass
class SearchResult:
    """The tree, what it completed and what it cost."""

    root: Node
    solutions: list[Solution]
    """Every completed solution, in the order found."""
    tokens: int
    """Generated tokens spent (never more than the budget)."""
    simulations: int

    def best(self) -> Solution | None:
        """The answer of the search: a verified-correct solution when the values were verdicts;
        otherwise, of the solutions completed under the most-visited path (followed as deep as
        one lies below), the one of largest value."""
        found = [s for s in self.solutions if s.verified and s.value >= 1.0]
        if found:
            return found[0]
        node, pick = self.root, self._under(self.root)
        while node.children:
            node = max(node.children, key=lambda c: c.visits)
            pick = self._under(node) or pick
        return max(pick, key=lambda s: s.value) if pick else None

    def _under(self, node: Node) -> list[Solution]:
        return [s for s in self.solutions if node is s.node or node in s.node.path()]


def search(model: StepModel, budget_tokens: int, simulations: int, k: int, c_puct: float, widening: float = 0.0) -> SearchResult:
    """Run up to `simulations` simulations of MCTS from an empty prefix (see the module docstring)."""
    if simulations < 1 or k < 1 or c_puct < 0 or widening < 0:
        raise R1kitError(f"MCTS needs simulations >= 1, k >= 1, c_puct >= 0 and widening >= 0, got {simulations}, {k}, {c_puct}, {widening}; fix eval.mcts")
    root, budget = Node(), TokenBudget(budget_tokens)
    solutions: list[Solution] = []
    done = 0
    while done < simulations:
        node = _descend(root, model, budget, k, c_puct, widening)
        if node is not None and node.terminal and node.visits:
            backup(node, node.q)  # a finished solution's value does not change: no second evaluation
            done += 1
            continue
        evaluation = model.evaluate(node, budget.left) if node is not None else None
        if evaluation is None:
            break  # the budget cannot pay for another step or rollout
        budget.charge(evaluation.tokens)
        if evaluation.solution is not None:
            solutions.append(Solution(evaluation.solution, evaluation.value, node, evaluation.verified))
        backup(node, evaluation.value)
        done += 1
        if evaluation.verified and evaluation.value >= 1.0:
            break  # a verified solution: with the verifier as the oracle, nothing better is left to find
    return SearchResult(root, solutions, budget.spent, done)


def _descend(root: Node, model: StepModel, budget: TokenBudget, k: int, c_puct: float, widening: float) -> Node | None:
    """Select down to a node never evaluated (or a terminal one), expanding on the way every node
    whose turn it is (`widen_due`); None when a node with no children cannot be expanded."""
    node = root
    while not node.terminal and (node is root or node.visits > 0):
        if widen_due(node, widening):
            steps, spent = model.expand(node, k, budget.left)
            budget.charge(spent)
            node.expansions += 1
            add_children(node, steps)
        if not node.children:
            return None
        node = select_child(node, c_puct)
    return node
