"""Rollout engines: prompt token ids and sampling parameters in, completions out.

    engine = HFEngine(model, tokenizer)
    batch = engine.generate(prompt_ids, SamplingParams(temperature=1.0, n=8, max_new_tokens=128, seed=0))
    batch.completion_ids, batch.completion_mask, batch.logprobs, batch.finish_reason  # [N, C] ...

    engine.sync_weights(model)  # after each optimizer step

The learner depends only on `RolloutEngine` and `RolloutBatch` (engine.py); backends plug in behind
them (hf.py: any Hugging Face causal LM with a KV cache, plain PyTorch; `r1kit.accel.engine`
builds the hardware-accelerated one, which recipes get from `r1kit.accel.engine(...)`).
"""

from r1kit.rollout.engine import FINISH_REASONS, RolloutBatch, RolloutEngine, SamplingParams
from r1kit.rollout.hf import HFEngine, left_pad

__all__ = ["FINISH_REASONS", "HFEngine", "RolloutBatch", "RolloutEngine", "SamplingParams", "left_pad"]
