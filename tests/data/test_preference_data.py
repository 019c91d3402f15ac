"""Preference pairs: file errors that point at the line and column, the built-in arithmetic set,
label flips, and the token layout of a pair batch."""

from __future__ import annotations

import json

import pytest

from r1kit.config import DataArgs
from r1kit.data.preference import (
    PreferenceArgs,
    collate_pairs,
    encode_pairs,
    flip_labels,
    load_pairs,
    load_preferences,
    synthetic_preferences,
)
from r1kit.data.tasks import get_task
from r1kit.data.templates import extract_answer_tag, extract_think
from r1kit.errors import R1kitError

GOOD = {"prompt": "1+1=?", "chosen": "<think>1+1=2</think><answer>2</answer>", "rejected": "3"}


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_json_line_error_names_file_line_and_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [json.dumps(GOOD), "", '{"prompt": "x", "chosen": oops}'])
    with pytest.raises(R1kitError, match=r"pairs\.jsonl:3: malformed JSON at column 27"):
        load_preferences(path)


def test_missing_column_error_names_file_line_and_column(tmp_path):
    bad = {"prompt": "1+1=?", "chosen": "2"}
    path = write_jsonl(tmp_path / "pairs.jsonl", [json.dumps(GOOD), json.dumps(bad)])
    with pytest.raises(R1kitError, match=r"pairs\.jsonl:2: missing column 'rejected'"):
        load_preferences(path)


def test_wrong_type_and_bad_margin_errors_name_line_and_column(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps({**GOOD, "chosen": 7})])
    with pytest.raises(R1kitError, match=r"a\.jsonl:1: column 'chosen' must be str or list"):
        load_preferences(path)
    path = write_jsonl(tmp_path / "b.jsonl", [json.dumps(GOOD), "", json.dumps({**GOOD, "margin": "big"})])
    with pytest.raises(R1kitError, match=r"b\.jsonl:3: column 'margin' must be a number"):
        load_preferences(path)


def test_margin_column_mapping_and_chat_messages_are_read_whole(tmp_path):
    rows = [
        {"question": "2+2=?", "chosen": [{"role": "assistant", "content": "4"}], "rejected": "5", "margin": 2},
        {"question": "3+3=?", "chosen": "6", "rejected": "7"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    pairs = load_preferences(path, columns={"prompt": "question"})
    chosen = [{"role": "assistant", "content": "4"}]
    assert [(p["prompt"], p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [("2+2=?", chosen, "5", 2.0), ("3+3=?", "6", "7", 0.0)]


def test_builtin_pairs_chosen_is_the_cot_and_each_rejected_kind_is_what_it_says():
    task = get_task("arithmetic")
    rows = synthetic_preferences("train", 90, seed=3)
    assert {r["kind"] for r in rows} == {"wrong", "malformed", "rambling", "unexplained"}
    for r in rows:
        assert task.reward([r["chosen"]], [r["answer"]]) == [1.0]
        assert r["chosen"] != r["rejected"]
        rejected = r["rejected"]
        if r["kind"] == "wrong":  # well formed, wrong answer
            assert extract_think(rejected) and task.reward([rejected], [r["answer"]]) == [0.0]
        elif r["kind"] == "malformed":  # right answer, a tag pair missing
            assert extract_think(rejected) is None or extract_answer_tag(rejected) is None
            assert task.extract_answer(rejected) == r["answer"]
        elif r["kind"] == "unexplained":  # right answer in one step: 2+5+7=14, no partial results
            assert task.reward([rejected], [r["answer"]]) == [1.0]
            assert extract_think(rejected) == f"{r['prompt'].removesuffix('=?')}={r['answer']}"
            assert extract_think(r["chosen"]).count("=") == 2
        else:  # rambling: right answer, the chain repeated
            think = extract_think(rejected)
            assert task.reward([rejected], [r["answer"]]) == [1.0]
            assert len(think) >= 2 * len(extract_think(r["chosen"])) + 1


def test_unexplained_is_never_drawn_for_a_one_step_problem_and_alone_it_needs_three_operands():
    rows = synthetic_preferences("train", 200, seed=0, task_params={"n_operands": [2, 3]})
    assert all(r["prompt"].count("+") + r["prompt"].count("-") == 2 for r in rows if r["kind"] == "unexplained")
    assert any(r["kind"] == "unexplained" for r in rows)
    assert len(synthetic_preferences("train", 20, task_params={"n_operands": 3}, rejected_kinds=["unexplained"])) == 20
    with pytest.raises(R1kitError, match="three or more operands"):
        synthetic_preferences("train", 20, task_params={"n_operands": 2}, rejected_kinds=["unexplained"])


def test_builtin_train_and_test_pairs_are_disjoint():
    train = {r["prompt"] for r in synthetic_preferences("train", 300, seed=0)}
    test = {r["prompt"] for r in synthetic_preferences("test", 50, seed=0)}
    assert len(test) == 50 and not train & test


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.1, 4), (0.25, 10), (0.3, 12), (1.0, 40)])
def test_flip_fraction_flips_exactly_that_many_pairs(fraction, expected):
    clean = synthetic_preferences("train", 40, seed=1)
    noisy = synthetic_preferences("train", 40, seed=1, flip_fraction=fraction)
    swapped = [c["chosen"] == n["rejected"] and c["rejected"] == n["chosen"] for c, n in zip(clean, noisy)]
    assert sum(swapped) == expected == sum(n["flipped"] for n in noisy)
    assert all(s == n["flipped"] for s, n in zip(swapped, noisy))


def test_flips_apply_to_train_pairs_only_and_out_of_range_is_an_error():
    data, pref = DataArgs(train_size=20, test_size=10), PreferenceArgs(flip_fraction=0.5)
    assert sum(r["flipped"] for r in load_pairs(data, pref, "train")) == 10
    assert sum(r["flipped"] for r in load_pairs(data, pref, "test")) == 0
    with pytest.raises(R1kitError, match="flip_fraction must be in"):
        flip_labels([GOOD], 1.5)


def test_pairs_from_a_file_need_a_held_out_file_and_builtin_pairs_need_arithmetic(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [json.dumps(GOOD)] * 4)
    data = DataArgs(path=str(path))
    assert len(load_pairs(data, PreferenceArgs(), "train")) == 4
    with pytest.raises(R1kitError, match="data.test_path is empty"):
        load_pairs(data, PreferenceArgs(), "test")
    with pytest.raises(R1kitError, match="arithmetic task only"):
        load_pairs(DataArgs(task="countdown"), PreferenceArgs(), "train")
    with pytest.raises(R1kitError, match="rejected_kinds"):
        synthetic_preferences("train", 2, rejected_kinds=["boring"])


def test_pair_batch_puts_chosen_first_prompts_left_padded_completions_right_padded(char_tokenizer):
    pairs = [{"prompt": "1+1=?", "chosen": "2", "rejected": "33"}, {"prompt": "10+1=?", "chosen": "11", "rejected": "9"}]
    encoded, truncated = encode_pairs(char_tokenizer, pairs, template="plain", add_eos=True)
    batch = collate_pairs(encoded, char_tokenizer.pad_token_id)
    eos, pad = char_tokenizer.eos_token_id, char_tokenizer.pad_token_id
    decode = char_tokenizer.convert_ids_to_tokens
    assert truncated == 0 and batch.num_pairs == 2 and batch.input_ids.shape == (4, 6 + 3)
    # rows: chosen of pair 0, chosen of pair 1, rejected of pair 0, rejected of pair 1
    assert "".join(decode(batch.input_ids[0, 1:6].tolist())) == "1+1=?" and batch.input_ids[0, 0] == pad
    assert batch.input_ids[0, 6:].tolist() == [char_tokenizer.convert_tokens_to_ids("2"), eos, pad]
    assert batch.input_ids[3, 6:].tolist() == [char_tokenizer.convert_tokens_to_ids("9"), eos, pad]
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert batch.attention_mask[0].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0]


def test_long_completions_are_cut_to_max_length(char_tokenizer):
    encoded, truncated = encode_pairs(char_tokenizer, [{"prompt": "abc", "chosen": "x" * 20, "rejected": "y"}], template="plain", max_length=8)
    assert truncated == 1 and len(encoded[0].prompt) + len(encoded[0].chosen) == 8 and encoded[0].rejected == [char_tokenizer.convert_tokens_to_ids("y")]
