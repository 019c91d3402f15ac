"""DeepSeek-R1's language-consistency reward: the share of the chain of thought in one language.

R1-Zero's reasoning drifted between languages; R1 adds a reward equal to "the proportion of target
language words in the CoT" (DeepSeek-AI 2025, section 2.3.2). Telling English from French needs a
language-identification model, so this reward measures the *script* instead, with nothing but the
standard library's Unicode database:

- A letter's script is read from its Unicode character name (`LATIN SMALL LETTER A` -> latin,
  `CJK UNIFIED IDEOGRAPH-4E2D` -> han, `CYRILLIC ...` -> cyrillic). Digits, punctuation, symbols
  and maths are not letters and are ignored.
- A word is a run of letters of one script (combining marks stay with their letter). Han
  ideographs and Japanese kana are one word per character, since those scripts write no spaces
  and a character is the closest unit to a word. A LaTeX command (`\\frac`) is not a word.
- The reward is (words in the target scripts) / (all words) over the `<think>` part of the
  completion (the whole text when it has no tags); 0.0 when there are no words at all, so an empty
  chain of thought earns nothing. The `<think>`/`<answer>` tags are markup, not words: a bare
  `<answer>5</answer>` has none.

`target` takes a language code (`en`, `zh`, `ja`, ...; `en` means "Latin script") or a script
name (`latin`, `han`, `cyrillic`, ...).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, Sequence

from r1kit.errors import R1kitError
from r1kit.rewards.base import Completion, completion_text
from r1kit.rewards.format import think_text

SCRIPTS = (
    "latin", "han", "hiragana", "katakana", "hangul", "cyrillic", "greek", "arabic", "hebrew",
    "devanagari", "bengali", "tamil", "telugu", "thai", "georgian", "armenian", "ethiopic",
)  # fmt: skip

LANGUAGES: dict[str, frozenset[str]] = {
    **{code: frozenset({"latin"}) for code in ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "tr", "vi", "id", "sv")},
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "hiragana", "katakana"}),
    "ko": frozenset({"hangul"}),
    "ru": frozenset({"cyrillic"}),
    "uk": frozenset({"cyrillic"}),
    "el": frozenset({"greek"}),
    "ar": frozenset({"arabic"}),
    "fa": frozenset({"arabic"}),
    "he": frozenset({"hebrew"}),
    "hi": frozenset({"devanagari"}),
    "bn": frozenset({"bengali"}),
    "ta": frozenset({"tamil"}),
    "te": frozenset({"telugu"}),
    "th": frozenset({"thai"}),
    "ka": frozenset({"georgian"}),
    "hy": frozenset({"armenian"}),
    "am": frozenset({"ethiopic"}),
}

TAGS = re.compile(r"</?(?:think|answer)>")
"""R1's tags, left in a completion's text when it has only some of them."""

# Scripts written without spaces, where one character stands for one word.
_CHARACTER_WORDS = frozenset({"han", "hiragana", "katakana"})


def target_scripts(target: str) -> frozenset[str]:
    """The scripts that count as `target` (a language code or a script name)."""
    key = target.lower()
    if key in LANGUAGES:
        return LANGUAGES[key]
    if key in SCRIPTS:
        return frozenset({key})
    raise R1kitError(
        f"unknown language target {target!r}; use a language code ({', '.join(LANGUAGES)}) "
        f"or a script name ({', '.join(SCRIPTS)})."
    )


@lru_cache(maxsize=65536)
def script_of(char: str) -> str | None:
    """The script of a letter (`latin`, `han`, ...), `"mark"` for a combining mark, else None."""
    category = unicodedata.category(char)
    if category.startswith("M"):
        return "mark"
    if not category.startswith("L"):
        return None
    words = unicodedata.name(char, "").split()
    if not words:
        return "unknown"
    if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
        words = words[1:]
    first = words[0].split("-")[0]  # KATAKANA-HIRAGANA PROLONGED SOUND MARK -> katakana
    return "han" if first == "CJK" else first.lower()


def word_scripts(text: str) -> list[str]:
    """The script of each word of `text`, in order (see the module docstring for "word")."""
    scripts: list[str] = []
    current: str | None = None  # script of the word being read, None between words
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":  # skip a LaTeX command name such as \frac
            i += 1
            while i < len(text) and text[i].isascii() and text[i].isalpha():
                i += 1
            current = None
            continue
        script = script_of(char)
        if script is None:
            current = None
        elif script == "mark":
            pass  # stays with the letter before it
        elif script in _CHARACTER_WORDS:
            scripts.append(script)
            current = None
        elif script != current:
            scripts.append(script)
            current = script
        i += 1
    return scripts


def cot_scripts(completion: str) -> list[str]:
    """The script of each word of a completion's chain of thought, tags left out."""
    return word_scripts(TAGS.sub(" ", think_text(completion)))


def language_reward(
    completions: Sequence[Completion], *, target: str = "en", **columns: Any
) -> list[float | None]:
    """Fraction of the chain of thought's words written in the `target` language's script.

    target: a language code (`en`, `zh`, `ja`, ...) or a script name (`latin`, `han`, ...).
    """
    wanted = target_scripts(target)
    rewards: list[float | None] = []
    for completion in completions:
        scripts = cot_scripts(completion_text(completion))
        rewards.append(sum(s in wanted for s in scripts) / len(scripts) if scripts else 0.0)
    return rewards
