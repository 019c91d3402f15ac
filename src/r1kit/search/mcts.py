"""Monte Carlo Tree Search over reasoning steps, AlphaZero-style: the tree maths and the loop.

A node is a prefix of the solution, a whole number of steps long; its children are the next steps
the policy proposed, each with the policy's probability of it as the prior P. One simulation

    select   from the root, take the child with the largest PUCT score until a node that is not
             expanded yet (or is terminal):
                 Q(s,a) + c_puct * P(s,a) * sqrt(N(s)) / (1 + N(s,a))      (Silver et al. 2017)
             Q is the mean backed-up value (0 for a child never visited), N the visit count.
    expand   ask the policy for K next steps of that leaf (the step model samples them and
             charges the tokens it generated to the budget);
    evaluate the first child PUCT then picks (the most probable new step) by a rollout to the end
             scored by the verifier, or by a value model (AlphaZero's v(s));
    backup   add the value to every node on the path to the root and count the visit.

The search stops after `simulations` simulations, when the token budget cannot pay for another
expansion, or (with an oracle evaluation, whose values are verdicts) at the first verified
solution. The budget counts generated tokens and is never exceeded: the step model is told how many
tokens are left and must generate no more (`TokenBudget.charge` raises if one does).

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
    """Attach one child per distinct step (by tokens; a step sampled twice is one child) with its prior."""
    unique: dict[tuple[int, ...], Step] = {}
    for s in steps:
        unique.setdefault(s.tokens, s)
    kept = list(unique.values())
    node.children = [Node(step=s, prior=p, parent=node) for s, p in zip(kept, priors(kept))]
    return node.children


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
    def expand(self, node: Node, k: int, budget_left: int) -> tuple[list[Step], int]:
        """Up to k next steps of `node`'s prefix and the tokens generated, at most budget_left;
        no steps when nothing can be generated within it."""
        ...

    def evaluate(self, node: Node, budget_left: int) -> Evaluation | None:
        """The value of `node`'s prefix, generating at most budget_left tokens; None if it cannot."""
        ...


@dataclass
class Solution:
    tokens: list[int]
    value: float
    node: Node
    """The node the solution was completed from."""
    verified: bool


@dataclass
class SearchResult:
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


def search(model: StepModel, budget_tokens: int, simulations: int, k: int, c_puct: float) -> SearchResult:
    """Run up to `simulations` simulations of MCTS from an empty prefix (see the module docstring)."""
    if simulations < 1 or k < 1 or c_puct < 0:
        raise R1kitError(f"MCTS needs simulations >= 1, k >= 1 and c_puct >= 0, got {simulations}, {k}, {c_puct}; fix eval.mcts")
    root, budget = Node(), TokenBudget(budget_tokens)
    solutions: list[Solution] = []
    done = 0
    while done < simulations:
        node = root
        while node.expanded and not node.terminal:
            node = select_child(node, c_puct)
        if not node.terminal:
            steps, spent = model.expand(node, k, budget.left)
            budget.charge(spent)
            if not steps:
                break  # the budget cannot pay for another step
            add_children(node, steps)
            node = select_child(node, c_puct)  # all new: the most probable step
        evaluation = model.evaluate(node, budget.left)
        if evaluation is None:
            break
        budget.charge(evaluation.tokens)
        if evaluation.solution is not None:
            solutions.append(Solution(evaluation.solution, evaluation.value, node, evaluation.verified))
        backup(node, evaluation.value)
        done += 1
        if evaluation.verified and evaluation.value >= 1.0:
            break  # a verified solution: with the verifier as the oracle, nothing better is left to find
    return SearchResult(root, solutions, budget.spent, done)
