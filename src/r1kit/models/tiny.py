"""Tiny models built locally: a character-level tokenizer and a small Llama or Qwen2 causal LM.

Tests and the demo cannot download anything from a hub, so they build these and save them as
ordinary Hugging Face directories; `r1kit.models.load.load_model` then loads them through exactly
the code path that serves a hub id such as `Qwen/Qwen2.5-0.5B-Instruct`.

The tokenizer is one token per character (tokenizers' WordLevel model over a fixed alphabet with a
per-character pre-tokenizer), wrapped as `PreTrainedTokenizerFast` with pad/bos/eos/unk tokens and a
chat template. Characters outside the alphabet map to `<unk>`.

The default architecture is Llama: transformers' `AutoTokenizer` trusts the saved tokenizer class
for Llama directories, while for Qwen2 directories it substitutes its own BPE tokenizer class,
which cannot represent a character-level vocabulary. `arch="qwen2"` builds the same shape as
Qwen2 (it differs from Llama only by biases on q/k/v) for code that passes the tokenizer object
directly, such as the benchmark against TRL.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
# Tag tokens are single tokens so that <think>/<answer> cost the tiny model one step each.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# Everything the built-in tasks and templates write: digits, operators, letters, punctuation.
DEFAULT_ALPHABET = (
    string.digits + string.ascii_letters + " \n" + "+-*/=()<>.,:;?!'\"_#%&[]{}|\\^~`@$"
)


def alphabet_for(texts: Iterable[str]) -> str:
    """DEFAULT_ALPHABET followed by every other character `texts` use, sorted: a corpus in another
    script gets its letters, and a corpus within the default alphabet the default vocabulary."""
    extra = set().union(*map(set, texts)) - set(DEFAULT_ALPHABET)
    return DEFAULT_ALPHABET + "".join(sorted(extra))


# A minimal chat template: role-prefixed turns, each ended by the eos token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] + ': ' + message['content'] }}{% if not loop.last %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nassistant: ' }}{% endif %}"
)


def build_char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over `alphabet` plus special and tag tokens."""
    chars = list(dict.fromkeys(alphabet))  # unique, order kept
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + TAG_TOKENS + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Tags first, so "<think>" is one token rather than seven characters; then one char per token.
    tags = "|".join(t.replace("/", "\\/") for t in TAG_TOKENS)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{tags}|[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="left",  # generation pads on the left
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


@dataclass
class TinyModelConfig:
    """Shape of a tiny causal LM. The defaults give about 1.0M parameters (997,504 with the default alphabet)."""

    arch: str = "llama"
    """Architecture: "llama" or "qwen2" (see the module docstring for why llama is the default)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads (head dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as in Qwen2)."""
    intermediate_size: int = 0
    """MLP width; 0 means 4 × hidden_size."""
    max_position_embeddings: int = 512
    """Longest sequence the rotary embedding is set up for."""
    tie_word_embeddings: bool = True
    """Share input and output embeddings (Qwen2.5-0.5B does too)."""


ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, cfg: TinyModelConfig | None = None, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM sized by `cfg`, with the tokenizer's special ids."""
    import torch

    from r1kit.errors import R1kitError

    cfg = cfg or TinyModelConfig()
    if cfg.arch not in ARCHS:
        raise R1kitError(f"unknown tiny model arch {cfg.arch!r}; choose one of {sorted(ARCHS)}")
    config_cls, model_cls = ARCHS[cfg.arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny(path: str | Path, tokenizer: PreTrainedTokenizerFast, cfg: TinyModelConfig | None = None, seed: int = 0) -> Path:
    """Build a tiny model and tokenizer and save both as an ordinary HF directory."""
    path = Path(path)
    model = build_tiny_model(tokenizer, cfg, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
