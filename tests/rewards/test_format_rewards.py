"""`format` (strict R1 layout), `tag_count` (0.25 per tag used once) and `think_text`."""

import pytest

from r1kit.rewards.format import format_reward, tag_count_reward, think_text


@pytest.mark.parametrize(
    "completion, think_prefilled, expected",
    [
        ("<think>2+2 is 4</think><answer>4</answer>", False, 1.0),
        ("\n <think>\nreason\n</think>\n\n<answer>\n4\n</answer>\n", False, 1.0),  # whitespace around/between
        ("<think></think><answer></answer>", False, 1.0),
        ("Sure! <think>x</think><answer>4</answer>", False, 0.0),  # text before
        ("<think>x</think><answer>4</answer> Hope this helps.", False, 0.0),  # text after
        ("<think>x</think> so <answer>4</answer>", False, 0.0),  # text between
        ("<think>x</think><answer>4</answer><answer>5</answer>", False, 0.0),  # two answers
        ("<think>a<think>b</think><answer>4</answer>", False, 0.0),  # stray opening tag
        ("<think>x</think>", False, 0.0),
        ("<answer>4</answer>", False, 0.0),
        ("reason</think><answer>4</answer>", False, 0.0),  # prompt did not open <think>
        # templates whose prompt already ends with <think>
        ("reason</think><answer>4</answer>", True, 1.0),
        ("\nreason\n</think>\n<answer>4</answer>\n", True, 1.0),
        ("<think>reason</think><answer>4</answer>", True, 0.0),  # opened it a second time
    ],
)
def test_format_reward(completion, think_prefilled, expected):
    assert format_reward([completion], think_prefilled=think_prefilled) == [expected]


@pytest.mark.parametrize(
    "completion, think_prefilled, expected",
    [
        ("<think>x</think><answer>4</answer>", False, 1.0),
        ("<think>x</think>", False, 0.5),
        ("<think>x", False, 0.25),
        ("no tags at all", False, 0.0),
        # a second answer block: <answer> and </answer> each appear twice -> only the think tags count
        ("<think>x</think><answer>4</answer><answer>5</answer>", False, 0.5),
        ("<think>x</think><answer>4", False, 0.75),
        ("x</think><answer>4</answer>", True, 1.0),  # <think> is in the prompt: absent is right
        ("<think>x</think><answer>4</answer>", True, 0.75),
    ],
)
def test_tag_count_reward(completion, think_prefilled, expected):
    assert tag_count_reward([completion], think_prefilled=think_prefilled) == [expected]


def test_rewards_accept_chat_messages_and_extra_columns():
    completions = [[{"role": "assistant", "content": "<think>x</think><answer>4</answer>"}], "4"]
    assert format_reward(completions, answer=["4", "4"], prompt=["p", "p"]) == [1.0, 0.0]
    assert tag_count_reward(completions, answer=["4", "4"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>abc</think><answer>4</answer>", "abc"),
        ("abc</think><answer>4</answer>", "abc"),  # prefilled <think>
        ("pre <think>abc", "abc"),  # cut off while thinking
        ("just text", "just text"),
    ],
)
def test_think_text(text, expected):
    assert think_text(text) == expected
