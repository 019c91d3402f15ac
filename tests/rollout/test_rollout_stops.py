"""Stop strings are found from the tail of a row, whatever sits between their characters."""

from __future__ import annotations

import torch
from rollout_tiny import EOS

from r1kit.rollout.stops import StopStrings


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def hits(tokenizer, stops: list[str], rows: list[list[int]]) -> list[int]:
    """Rows (equal length) whose last token completes a stop string."""
    checker = StopStrings(stops, tokenizer, vocab_size=40, device=torch.device("cpu"))
    completion = torch.tensor(rows)
    return checker.hits(completion, step=completion.shape[1] - 1, alive=torch.ones(len(rows), dtype=torch.bool))


def test_only_rows_whose_last_token_completes_a_stop_string_hit(tokenizer):
    rows = [ids(tokenizer, "ab</a>"), ids(tokenizer, "</a>xy"), ids(tokenizer, "xy</b>")]
    assert hits(tokenizer, ["</a>"], rows) == [0]


def test_only_tokens_holding_a_last_character_are_decoded(tokenizer):
    checker = StopStrings(["</a>"], tokenizer, vocab_size=40, device=torch.device("cpu"))
    assert checker.can_end.nonzero().flatten().tolist() == ids(tokenizer, ">")


def test_special_tokens_between_the_characters_do_not_hide_a_stop_string(tokenizer):
    # 12 special tokens decode to nothing: the 9-token tail holds only "z", so it must grow.
    row = ids(tokenizer, "xy") + [EOS] * 12 + ids(tokenizer, "z")
    assert hits(tokenizer, ["yz"], [row]) == [0]


def test_a_stop_string_ending_in_a_space_is_found(tokenizer):
    row = ids(tokenizer, "b=a ")
    assert hits(tokenizer, ["a "], [row]) == [0]
    assert hits(tokenizer, ["a "], [ids(tokenizer, "b a=")]) == []


def test_rows_already_done_are_not_checked(tokenizer):
    checker = StopStrings(["a"], tokenizer, vocab_size=40, device=torch.device("cpu"))
    completion = torch.tensor([ids(tokenizer, "ba"), ids(tokenizer, "ba")])
    assert checker.hits(completion, step=1, alive=torch.tensor([False, True])) == [1]
