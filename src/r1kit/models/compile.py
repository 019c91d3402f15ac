"""`model.compile`: the learner's transformer layers compiled with torch.compile (regional compilation).

Compiling the whole model traces its top-level forward too: KV cache objects, output recording,
forward hooks (the chunked LM head's) and mask building, each a source of graph breaks and
recompiles. Each decoder layer is the same code with other weights, so compiling the layers alone
gives one graph that every layer reuses: the compile takes as long for 24 layers as for 2, and the
work that matters (projections, attention, the MLP and their backward) is inside it. Shapes are
marked dynamic, since sequence lengths change from step to step.

A KV cache passed through compiled layers makes every layer a graph of its own (dynamo guards on
the cache entry of the layer's index; a 24-layer model hits the recompile limit and runs most layers
eagerly), so with compiled layers the learner scores each row with one plain forward instead of
sharing its prompt's cache (`logprobs.shared_prompt_logits`).

Only the learner runs compiled code. The rollout engine decodes one token per step with a cache
whose length grows every step, a recompile each time, so it runs the layers eagerly
(`eager_rollout`); with run.accel=auto its decode step does not call the layers at all for most
models (`r1kit/accel/fast_decode.py`).

Measured on our 2-core CPU (benchmarks/NOTES.md, eighth round): no faster, and the first step pays
the compile, so it is off by default; it is there for GPUs, where fusing a layer's element-wise
work pays, and where it has not been measured by us.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

BACKEND = "inductor"
"""The torch.compile backend (tests use a cheaper one to check the wiring)."""


def compile_layers(model: torch.nn.Module) -> int:
    """Compile every decoder layer of `model` in place (`nn.Module.compile`, dynamic shapes); a
    model without a `layers` list of decoder layers is compiled whole. Returns how many modules were
    compiled. Deep copies (GRPO's reference) carry their own compiled layers over their own weights."""
    layers = decoder_layers(model)
    for module in layers or [model]:
        module.compile(backend=BACKEND, dynamic=True)
    return len(layers) or 1


def runs_compiled(model: torch.nn.Module) -> bool:
    """Whether `model` (unwrapped) or any of its decoder layers was compiled by `compile_layers`."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in [model, *decoder_layers(model)])


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


@contextmanager
def eager_rollout():
    """Inside, compiled modules run their eager code (torch.compiler.set_stance, torch >= 2.6)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    with set_stance("force_eager") if set_stance is not None else nullcontext():
        yield
