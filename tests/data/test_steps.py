"""Step splitting shared by process reward models and tree search (r1kit/data/steps.py)."""

import pytest

from r1kit.data.steps import encode_steps, join_steps, split_steps, step_end_tokens, step_prefixes
from r1kit.errors import R1kitError

ARITH = "<think>7+8=15 15+6=21</think><answer>21</answer>"


def test_split_arithmetic_solution_into_partial_sums():
    assert split_steps(ARITH, " ") == ["<think>7+8=15", "15+6=21</think><answer>21</answer>"]
    assert join_steps(split_steps(ARITH, " "), " ") == ARITH


def test_split_drops_empty_pieces_and_strips_around_whitespace_separators():
    assert split_steps("a\n\n b \n", "\n") == ["a", "b"]
    assert split_steps("a;;b;", ";") == ["a", "b"]


def test_prefixes_end_in_the_separator():
    assert step_prefixes(["7+8=15", "15+6=21"], " ") == ["7+8=15 ", "7+8=15 15+6=21 "]


def test_encode_steps_puts_each_score_on_the_separator(char_tokenizer):
    # Character tokens: "Q" "7" "=" "1" " " | "8" " " -> the separators sit at 4 and 6.
    ids, ends = encode_steps(char_tokenizer, "Q", ["7=1", "8"], " ")
    assert len(ids) == 7 and ends == [4, 6]
    assert char_tokenizer.decode([ids[i] for i in ends]) == "  "
    # max_length keeps whole steps only: the second step (2 tokens) does not fit in 6
    assert encode_steps(char_tokenizer, "Q", ["7=1", "8"], " ", max_length=6) == (ids[:5], [4])


def test_step_end_tokens_of_a_completion():
    tokens = ["7", "+", "8", "=", "15", " ", "15", "+", "6", "=", "21", "</think>"]
    assert step_end_tokens(tokens, " ") == [5, 11]
    # A separator inside a token ends the step at that token; a trailing separator ends nothing more.
    assert step_end_tokens(["a", "b\n", "c", "\n"], "\n") == [1, 3]
    assert step_end_tokens(["\n", "a"], "\n") == [1]
    assert step_end_tokens([], "\n") == []


def test_empty_separator_is_an_error():
    with pytest.raises(R1kitError, match="separator"):
        split_steps("a", "")
