"""Conversations as training text: which characters of a rendered chat are the assistant's.

Supervised recipes see an example as segments `[(text, trainable), ...]` whose concatenation is
the text the model reads; the loss covers the trainable segments only. Three row shapes (TRL's):

- `messages`: a whole conversation; every assistant turn is trainable, system and user turns not.
- `prompt` + response column, either a message list: the prompt's turns are context, the
  response's assistant turns are trainable (TRL's conversational prompt-completion).
- `prompt` + response column, both text (or a message-list prompt and a text response): the
  rendered prompt, then the response, trainable.

An assistant turn's text is found by rendering the conversation up to the turn before it with the
generation prompt and up to the turn itself: the difference is the turn, with the template's own
end-of-turn marker. This needs a template that renders a conversation's beginning as the
beginning of the whole (Qwen's, Llama's and most others do); one that rewrites earlier turns
(some drop the reasoning of past assistant turns) is an error naming the turn.
"""

from __future__ import annotations

from typing import Any

from r1kit.config import DataArgs
from r1kit.data.source import load_split
from r1kit.data.templates import apply_template, check_messages, render_prompt, with_system
from r1kit.errors import R1kitError

Segments = list[tuple[str, bool]]


def chat_segments(tokenizer, messages: list[dict], trainable_from: int = 0) -> Segments:
    """Segments of the rendered conversation; assistant turns at index >= trainable_from train."""
    full = apply_template(tokenizer, messages, add_generation_prompt=False)
    segments: Segments = []
    done = 0  # characters of `full` already in segments
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < trainable_from:
            continue
        before = apply_template(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = apply_template(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through) and len(before) >= done):
            raise R1kitError(
                f"the tokenizer's chat template does not render assistant turn {i} as a continuation of the turns before it, "
                "so its tokens cannot be told apart; use a template that does, or give rows as prompt/completion text"
            )
        segments += [(full[done : len(before)], False), (full[len(before) : len(through)], True)]
        done = len(through)
    if not any(trainable for _, trainable in segments):
        raise R1kitError(f"a conversation has no assistant turn to train on (roles {[m['role'] for m in messages]}); every example needs one")
    segments.append((full[done:], False))
    return [(text, trainable) for text, trainable in segments if text]


def completion_text_after(tokenizer, prompt: str | list[dict], completion: list[dict], system_prompt: str = "") -> tuple[str, str]:
    """(prompt text, completion text) of a conversational pair: the prompt's turns rendered for
    the assistant's reply, and the completion's turns as the template renders them after it."""
    messages = as_conversation(prompt, system_prompt) + check_messages(completion)
    segments = chat_segments(tokenizer, messages, trainable_from=len(messages) - len(completion))
    first = next(i for i, (_, trainable) in enumerate(segments) if trainable)
    return "".join(t for t, _ in segments[:first]), "".join(t for t, _ in segments[first:])


def as_conversation(prompt: str | list[dict], system_prompt: str = "") -> list[dict]:
    """A prompt as messages: a text prompt is one user turn; `system_prompt` comes first."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt)
    return with_system(messages, system_prompt)


def row_segments(row: dict[str, Any], data: DataArgs, tokenizer, response_column: str) -> Segments:
    """The segments of one supervised row: `messages`, or `prompt` and `response_column`."""
    if "messages" in row and "prompt" not in row:
        return chat_segments(tokenizer, with_system(check_messages(row["messages"]), data.system_prompt))
    response = row[response_column]
    if isinstance(response, list):
        if data.template != "chat":
            raise R1kitError(f"column {response_column!r} holds chat messages, which are rendered through the chat template; set data.template=chat")
        messages = as_conversation(row["prompt"], data.system_prompt)
        return chat_segments(tokenizer, messages + check_messages(response), trainable_from=len(messages))
    if not isinstance(response, str):
        raise R1kitError(f"column {response_column!r} must hold text or chat messages, got {type(response).__name__}")
    return [(render_prompt(row["prompt"], data.template, tokenizer, data.system_prompt), False), (response, True)]


def load_supervised_rows(data: DataArgs, response_column: str) -> list[dict[str, Any]]:
    """Training rows of a supervised recipe: rows with `prompt` and `response_column`, or whole
    conversations (a `messages` column and no `prompt`); a missing column is an error naming it."""
    return load_split(data, "train", required=("prompt", response_column), instead=("messages",))


def prompt_preview(prompt: str | list[dict]) -> str:
    """A prompt as one line of text for tables: the string, or `role: content` turns."""
    if isinstance(prompt, str):
        return prompt
    return " | ".join(f"{m.get('role')}: {m.get('content')}" for m in prompt if isinstance(m, dict))
