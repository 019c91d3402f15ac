"""Prompt templates and the `<think>…</think><answer>…</answer>` response format of R1.

`r1zero` is the DeepSeek-R1-Zero training template (DeepSeek-AI 2025, table 1): the instruction to
think inside <think> tags and answer inside <answer> tags, then `User: … Assistant:`. `tiny` is a
short `Q: … / A:` form for character-level models, whose every prompt character costs a step.
`chat` uses the tokenizer's own chat template, as an instruct model expects.
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


def render_prompt(prompt: str, template: str = "tiny", tokenizer=None, system_prompt: str = "") -> str:
    """The text the model sees for a raw `prompt` under `template`."""
    if template == "tiny":
        return TINY_TEMPLATE.format(prompt=prompt)
    if template == "r1zero":
        return R1_ZERO_TEMPLATE.format(prompt=prompt)
    if template == "plain":
        return prompt
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise R1kitError("data.template is `chat` but the tokenizer has no chat template; use `tiny`, `r1zero` or `plain`")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise R1kitError(f"unknown template {template!r}; choose one of {list(TEMPLATES)}")


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
