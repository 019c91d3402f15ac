"""Evaluation: pass@1 over k samples, unbiased pass@k, maj@k (R1's cons@64), greedy accuracy."""

from r1kit.eval.metrics import maj_at_k, majority_vote, pass_at_k

__all__ = ["maj_at_k", "majority_vote", "pass_at_k"]
