"""Prompt templates and the `<think>…</think><answer>…</answer>` response format of R1.

`r1zero` is the DeepSeek-R1-Zero training template (DeepSeek-AI 2025, table 1): the instruction to
think inside <think> tags and answer inside <answer> tags, then `User: … Assistant:`. `tiny` is a
short `Q: … / A:` form for character-level models, whose every prompt character costs a step.
`chat` uses the tokenizer's own chat template, as an instruct model expects; a prompt given as a
list of chat messages (system, user, assistant turns) is rendered whole through it.
"""

from __future__ import annotations

import re

from r1kit.errors import R1kitError

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:"
)
TINY_TEMPLATE = "Q: {prompt}\nA: "
TEMPLATES = ("tiny", "r1zero", "chat", "plain")

THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def render_prompt(prompt: str | list[dict], template: str = "tiny", tokenizer=None, system_prompt: str = "") -> str:
    """The text the model sees for a raw `prompt` under `template`.

    A prompt given as chat messages (TRL's conversational format: system, user and assistant
    turns) is rendered whole through the tokenizer's chat template, and needs `template: chat`.
    """
    if not isinstance(prompt, str):
        if template != "chat":
            raise R1kitError(f"a prompt given as chat messages is rendered through the tokenizer's chat template; set data.template=chat (it is {template!r})")
        return render_messages(prompt, tokenizer, system_prompt)
    if template == "tiny":
        return TINY_TEMPLATE.format(prompt=prompt)
    if template == "r1zero":
        return R1_ZERO_TEMPLATE.format(prompt=prompt)
    if template == "plain":
        return prompt
    if template == "chat":
        return render_messages([{"role": "user", "content": prompt}], tokenizer, system_prompt)
    raise R1kitError(f"unknown template {template!r}; choose one of {list(TEMPLATES)}")


def render_messages(messages: list[dict], tokenizer, system_prompt: str = "") -> str:
    """Chat messages through the tokenizer's chat template, ready for the assistant's reply: the
    generation prompt is added, or, when the last message is the assistant's, that message is left
    open to be continued (a prefilled reply, as TRL does). `system_prompt` comes first."""
    messages = with_system(check_messages(messages), system_prompt)
    continue_last = messages[-1]["role"] == "assistant"
    return apply_template(tokenizer, messages, add_generation_prompt=not continue_last, continue_final_message=continue_last)


def apply_template(tokenizer, messages: list[dict], **kwargs) -> str:
    """`tokenizer.apply_chat_template` as text, or an error when the tokenizer has none."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise R1kitError("the data asks for the chat template (data.template is `chat`, or prompts are chat messages) but the tokenizer has none; use `tiny`, `r1zero` or `plain` with plain-text prompts, or a tokenizer with a chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def check_messages(messages) -> list[dict]:
    """`messages` as a non-empty list of {role, content} dicts with string contents, or an error."""
    if not isinstance(messages, list) or not messages:
        raise R1kitError(f"chat messages must be a non-empty list of {{role, content}} dicts, got {messages!r:.80}")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise R1kitError(f"each chat message must be a dict with a string `role` and `content`, got {m!r:.80}")
    return messages


def with_system(messages: list[dict], system_prompt: str) -> list[dict]:
    """`messages` with `system_prompt` (if any) as the first message; a conversation that has its
    own system message while data.system_prompt is set is an error: one of the two would be lost."""
    if not system_prompt:
        return messages
    if any(m["role"] == "system" for m in messages):
        raise R1kitError("a prompt has its own system message and data.system_prompt is set too; clear data.system_prompt or remove the rows' system messages")
    return [{"role": "system", "content": system_prompt}, *messages]


def format_response(think: str, answer: str) -> str:
    """`<think>{think}</think><answer>{answer}</answer>`: the response shape R1 is trained to emit."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def extract_think(text: str) -> str | None:
    """The content of the first <think> block, or None."""
    m = THINK_RE.search(text)
    return m.group(1) if m else None


def extract_answer_tag(text: str) -> str | None:
    """The content of the last <answer> block (stripped), or None."""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None
