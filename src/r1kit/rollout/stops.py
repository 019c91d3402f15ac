"""Stop strings, checked cheaply while decoding.

Decoding every row's text at every step would put a tokenizer call per row per token in the hot
loop. Instead, a token can only complete a stop string if its text contains the stop string's last
character (or is a partial UTF-8 sequence, which decodes to U+FFFD on its own). A [V] bool table of
such tokens is built once; per step we look up the sampled tokens in it and decode only the tail
of the few rows that hit, just long enough to hold the longest stop string.
"""

from __future__ import annotations

import torch

from r1kit.errors import R1kitError

# A byte-level tokenizer may spend up to 4 tokens on one character, so this many tokens per
# character of the longest stop string always cover it.
_TOKENS_PER_CHAR = 4


class StopStrings:
    """Finds rows whose last sampled token completes one of `stops`."""

    def __init__(self, stops: list[str], tokenizer, vocab_size: int, device: torch.device):
        if tokenizer is None:
            raise R1kitError("stop strings need a tokenizer: pass tokenizer= to the rollout engine, or use stop_token_ids.")
        self.stops = list(stops)
        self.tokenizer = tokenizer
        self.longest = max(len(s) for s in stops)
        # +1 token so a tail that starts mid-character still holds the whole stop string.
        self.window = _TOKENS_PER_CHAR * self.longest + 1
        self.can_end = _tokens_that_can_end(self.stops, tokenizer, vocab_size).to(device)  # [V] bool

    def hits(self, completion_ids: torch.Tensor, step: int, alive: torch.Tensor) -> list[int]:
        """Rows that are alive and whose token at `step` completes a stop string.

        completion_ids: [N, >step] long, tokens 0..step generated so far; alive: [N] bool.
        """
        candidates = (self.can_end[completion_ids[:, step]] & alive).nonzero().flatten()
        if candidates.numel() == 0:
            return []
        start = max(0, step + 1 - self.window)
        tails = completion_ids[candidates, start : step + 1].tolist()
        # A row still alive held no stop string before this token, so any occurrence is new.
        return [i for i, tail in zip(candidates.tolist(), tails) if self._contains_stop(tail, completion_ids[i, : step + 1])]

    def _contains_stop(self, tail: list[int], row: torch.Tensor) -> bool:
        """Whether the text of `tail`, the last tokens of `row` ([T] long), holds a stop string.

        Special tokens decode to nothing, so a tail may hold too little text; it then grows
        (doubling, rare) until its text is longer than the longest stop string.
        """
        text = self._decode(tail)
        window = len(tail)
        while len(text) <= self.longest and window < len(row):
            window *= 2
            text = self._decode(row[-window:].tolist())
        return any(s in text for s in self.stops)

    def _decode(self, ids: list[int]) -> str:
        # Special tokens are skipped, as in the completion texts: stop strings match visible text.
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _tokens_that_can_end(stops: list[str], tokenizer, vocab_size: int) -> torch.Tensor:
    """[vocab_size] bool: True for tokens whose text holds the last character of some stop string."""
    if any(s[-1].isspace() for s in stops):
        # SentencePiece-style tokenizers drop a token's leading space when it is decoded alone, so
        # a stop string ending in whitespace cannot be screened this way: check every token.
        return torch.ones(vocab_size, dtype=torch.bool)
    last_chars = {s[-1] for s in stops} | {"\ufffd"}
    known = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    table = torch.zeros(vocab_size, dtype=torch.bool)
    table[:known] = torch.tensor([any(c in t for c in last_chars) for t in texts], dtype=torch.bool)
    return table
