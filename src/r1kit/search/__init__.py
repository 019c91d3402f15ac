"""Search over reasoning steps: MCTS with PUCT (`mcts`), the language model's step model (`lm`), a
value model trained on rollout outcomes (`value`), step separators (`steps`)."""

from r1kit.search.mcts import Node, SearchResult, Step, TokenBudget, backup, puct_score, search, select_child

__all__ = ["Node", "SearchResult", "Step", "TokenBudget", "backup", "puct_score", "search", "select_child"]
