"""Fixtures of the rollout tests: those of tiny_fixtures.py."""

from tiny_fixtures import model, one_thread, prompts, tokenizer  # noqa: F401
