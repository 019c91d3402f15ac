"""Language consistency: fraction of chain-of-thought words in the target script."""

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards.language import language_reward, word_scripts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("two plus two", ["latin", "latin", "latin"]),
        ("naïve café", ["latin", "latin"]),  # accented letters stay Latin
        ("所以", ["han", "han"]),  # one word per ideograph
        ("x的值", ["latin", "han", "han"]),  # a script change splits a word
        ("привет мир", ["cyrillic", "cyrillic"]),
        ("\\frac{a}{b} = 0.5", ["latin", "latin"]),  # \frac is a command, not a word; digits ignored
        ("1 + 2 = 3 !", []),
        ("ｆｕｌｌ", ["latin"]),  # fullwidth Latin is Latin
        ("नमस्ते", ["devanagari"]),  # vowel signs (marks) stay in the word
    ],
)
def test_word_scripts(text, expected):
    assert word_scripts(text) == expected


@pytest.mark.parametrize(
    "completion, target, expected",
    [
        ("<think>we add two and two</think><answer>4</answer>", "en", 1.0),
        # think part: "we" "add" 加 法 -> 2 of 4 Latin; the answer part is not counted
        ("<think>we add 加法</think><answer>four four four</answer>", "en", 0.5),
        ("<think>we add 加法</think><answer>4</answer>", "zh", 0.5),
        ("<think>we add 加法</think><answer>4</answer>", "han", 0.5),
        ("one two three 四", "latin", 0.75),  # no tags: the whole text
        ("reasoning here</think><answer>4</answer>", "en", 1.0),  # prefilled <think>
        ("<think>1 + 1 = 2</think><answer>2</answer>", "en", 0.0),  # no words at all
        ("<think>これは日本語</think>", "ja", 1.0),  # kana and kanji both count for ja
        ("<think>これは日本語</think>", "zh", 0.5),  # 日本語 are Han, これは are kana: 3 of 6
        ("<think>Привет, world</think>", "ru", 0.5),
        # Tags are markup, not English words: a bare answer has no chain of thought to score, and
        # a thought cut off before its </think> is scored without the <answer> that follows it.
        ("<answer>5</answer>", "en", 0.0),
        ("<think>7+8=15 μετά 15+6=21<answer>21</answer>", "en", 0.0),
        ("<think>7+8=15 μετά 15+6=21<answer>21</answer>", "el", 1.0),
    ],
)
def test_language_reward(completion, target, expected):
    assert language_reward([completion], target=target) == [pytest.approx(expected)]


def test_unknown_target_is_a_user_error_listing_choices():
    with pytest.raises(R1kitError, match="latin"):
        language_reward(["x"], target="klingon")
