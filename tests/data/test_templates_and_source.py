"""Prompt templates, the <think>/<answer> format, and `load_split` choosing files or a task."""

from __future__ import annotations

import pytest

from r1kit.config import DataArgs
from r1kit.data.io import write_jsonl
from r1kit.data.source import load_split
from r1kit.data.templates import (
    R1_ZERO_TEMPLATE,
    extract_answer_tag,
    extract_think,
    format_response,
    render_prompt,
)
from r1kit.errors import R1kitError


def test_tiny_template_is_q_a():
    assert render_prompt("3+4=?", "tiny") == "Q: 3+4=?\nA: "


def test_r1zero_template_wraps_the_prompt_as_in_the_paper():
    text = render_prompt("3+4=?", "r1zero")
    assert text.startswith("A conversation between User and Assistant.")
    assert text.endswith("User: 3+4=?. Assistant:")
    assert "<think> reasoning process here </think> <answer> answer here </answer>" in text
    assert text == R1_ZERO_TEMPLATE.format(prompt="3+4=?")


def test_plain_template_is_the_prompt_itself():
    assert render_prompt("3+4=?", "plain") == "3+4=?"


def test_chat_template_uses_the_tokenizers_template_with_a_system_prompt(char_tokenizer):
    assert render_prompt("3+4=?", "chat", char_tokenizer) == "user: 3+4=?\nassistant: "
    assert render_prompt("3+4=?", "chat", char_tokenizer, "Think.") == "system: Think.\nuser: 3+4=?\nassistant: "


def test_chat_template_without_a_tokenizer_template_is_an_error():
    with pytest.raises(R1kitError, match=r"the data asks for the chat template \(data.template is `chat`, or prompts are chat messages\) but the tokenizer has none"):
        render_prompt("3+4=?", "chat", None)


def test_unknown_template_is_an_error_listing_the_templates():
    with pytest.raises(R1kitError, match=r"unknown template 'qa'; choose one of \['tiny', 'r1zero', 'chat', 'plain'\]"):
        render_prompt("3+4=?", "qa")


def test_format_response_and_extractors_invert_each_other():
    text = format_response("3+4=7", "7")
    assert text == "<think>3+4=7</think><answer>7</answer>"
    assert extract_think(text) == "3+4=7"
    assert extract_answer_tag(text) == "7"


@pytest.mark.parametrize(
    "text, think, answer",
    [
        ("<think>a\nb</think> <answer> 5 </answer>", "a\nb", "5"),  # multi-line think; answer stripped
        ("<think>one</think><think>two</think><answer>1</answer><answer>2</answer>", "one", "2"),  # first think, last answer
        ("<think>unclosed <answer>3", None, None),
        ("no tags", None, None),
    ],
)
def test_extract_think_and_answer_tag(text, think, answer):
    assert extract_think(text) == think
    assert extract_answer_tag(text) == answer


def test_load_split_reads_files_when_given_with_limits_and_mapping(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"q": f"{i}+1=?", "cot": "c", "a": str(i + 1)} for i in range(10)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"q": f"{i}+2=?", "a": str(i + 2)} for i in range(10)])
    data = DataArgs(path=str(train), test_path=str(test), columns={"prompt": "q", "answer": "a"}, train_size=4, test_size=3)
    rows = load_split(data, "train", required=("prompt", "cot"))
    assert [r["prompt"] for r in rows] == ["0+1=?", "1+1=?", "2+1=?", "3+1=?"]
    assert [r["answer"] for r in load_split(data, "test")] == ["2", "3", "4"]


def test_load_split_missing_required_response_column_is_an_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "1+1=?"}])
    with pytest.raises(R1kitError, match=r"train\.jsonl:1: missing column 'cot'"):
        load_split(DataArgs(path=str(train)), "train", required=("prompt", "cot"))


def test_load_split_generates_task_rows_of_the_asked_sizes():
    data = DataArgs(task="arithmetic", task_params={"n_operands": 2, "digits": 2}, train_size=50, test_size=7, seed=3)
    train, test = load_split(data, "train"), load_split(data, "test")
    assert (len(train), len(test)) == (50, 7)
    assert all(len(r["prompt"].removesuffix("=?").replace("-", "+").split("+")) == 2 for r in train)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}


def test_load_split_with_a_file_and_no_task_needs_a_test_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "x"}])
    with pytest.raises(R1kitError, match="data.path is set but data.test_path is not"):
        load_split(DataArgs(task="", path=str(train)), "test")
