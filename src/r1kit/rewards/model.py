"""A trained reward model as a reward function: `rewards: ["model:runs/rm/model"]`.

`load_reward_model_fn(path)` loads the model once and returns `fn(completions, prompt=None,
**columns) -> list[float]`, one score per completion, which GRPO and PPO use like any rule reward.

What is scored: the prompt rendered with the template the reward model was trained with, followed
by the completion (no eos), exactly as `r1kit rm` scored its pairs. Reward functions receive
completions and dataset columns only, so the prompt comes from a `prompt` column when the caller
passes one (the PPO recipe does); without it (or where a row's prompt is None) the completion is
scored alone, which a reward model trained on prompt + completion judges less reliably.

The template and pooling come from `r1kit_reward.json` beside the weights (written by `r1kit rm`).
A directory without it (a reward model from elsewhere, e.g. one trained with TRL) is scored
InstructGPT-style: the last token's output, the prompt used as is (template `plain`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from r1kit.data.preference import encode_text, pad_prompt_completion
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.models.load import load_tokenizer
from r1kit.models.value_head import load_scalar_model, sequence_scalar, token_scalars
from r1kit.rewards.base import Completion, RewardFn, completion_text

META_FILE = "r1kit_reward.json"
DEFAULT_META = {"pooling": "last", "template": "plain", "system_prompt": ""}


def load_reward_model_fn(path: str, device: str = "auto", batch_size: int = 32, max_length: int = 1024) -> RewardFn:
    """A reward function scoring completions with the reward model saved at `path`.

    device: where the reward model runs (`auto`: cuda when available). batch_size: sequences per
    forward pass. max_length: longest prompt + completion; longer completions are cut.
    """
    local = Path(path)
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~")) or path.count("/") != 1):
        raise R1kitError(f"reward model {path!r} does not exist; train one with `r1kit rm` and write model:RUN_DIR/model")
    tokenizer = load_tokenizer(path)
    model = load_scalar_model(path, tokenizer.pad_token_id, "float32", device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta = {**DEFAULT_META, **_read_meta(Path(path))}
    pad = tokenizer.pad_token_id
    dev = next(model.parameters()).device

    def reward_model(completions: Sequence[Completion], prompt: Sequence[Any] | None = None, **columns: Any) -> list[float | None]:
        """The reward model's score of each (prompt +) completion; None for an empty sequence."""
        prompts = list(prompt) if prompt is not None else [None] * len(completions)
        encoded = []
        for c, p in zip(completions, prompts, strict=True):
            text = render_prompt(p if isinstance(p, list) else str(p), meta["template"], tokenizer, meta["system_prompt"]) if p is not None else ""
            encoded.append(encode_text(tokenizer, text, completion_text(c), max_length, add_eos=False)[:2])
        scores: list[float | None] = [None] * len(encoded)
        todo = [i for i, (p, c) in enumerate(encoded) if p or c]
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            ids, attn, cmask = pad_prompt_completion([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], pad)
            with torch.inference_mode():
                scalars = token_scalars(model, ids.to(dev), attn.to(dev))
                values = sequence_scalar(scalars, attn.to(dev), cmask.to(dev), meta["pooling"])
            for i, v in zip(idx, values.tolist()):
                scores[i] = float(v)
        return scores

    reward_model.__name__ = "model"
    return reward_model


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / META_FILE
    return json.loads(file.read_text()) if file.is_file() else {}
