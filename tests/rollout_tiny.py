"""The tiny random Qwen2 and char-level tokenizer the rollout tests run on, built locally (no hub).

A module with its own name rather than conftest, so tests can import it whatever other conftest
modules the session has loaded.
"""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# 2 specials + 34 characters = 36 ids; the model's vocab is 40, so ids 36..39 have no text, as in
# real models whose embedding matrix is padded past the tokenizer.
SPECIALS = ["<pad>", "<eos>"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz<>/ .,=+"
PAD, EOS = 0, 1


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(config).eval()


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
