"""Decode steps on a GPU as one CUDA graph: the whole step launched at once.

On a GPU a decode step of a small model is bound by kernel launches, not arithmetic: a 24-layer
Qwen2.5-0.5B step through the model's forward launches hundreds of kernels, each from Python, and
the GPU waits on the CPU (docs/BENCHMARKS.md). A CUDA graph records the step's kernels once and
replays them with one launch.

A graph replays fixed kernels on fixed memory, so the step must have the same shapes and addresses
every time. `fast_decode.FastDecoder` already runs the step as a flat function over the model's
weights and the engine's preallocated KV cache; called with a `slot` it writes the new key and value
at that column of the cache's buffers (an index held in a tensor, so the graph reads it at replay)
and attends over the whole buffer, the columns not yet written masked out. Everything the graph
reads lives in buffers this class owns (tokens, mask, positions, slot), refilled before each replay.

The graph is captured at a rollout's first decode step (the cache's buffers are new each rollout;
the weights are the model's own tensors, updated in place by the optimizer, so a capture sees the
current policy) under the caller's autocast, with autocast's weight-cast cache off (a cached cast
would be freed at the end of the autocast region while the graph still reads it); the flat step
holds its projection weights already cast to the autocast dtype (cast once when it is built, for
the rollout), so a replay does not cast them again. Sampling stays
outside the graph (its random generator advances per step). Same arithmetic as the flat step, so
the same logits up to float rounding (masked columns add exact zeros to the softmax).

Used on CUDA for models `FastDecoder` serves (plain Llama-family decoders: Llama, Qwen2, Mistral)
with RoPE that does not depend on the sequence length; everything else takes the usual path.
"""

from __future__ import annotations

import logging

import torch

from r1kit.accel.fast_decode import _LENGTH_DEPENDENT_ROPE, FastDecoder

log = logging.getLogger(__name__)

CAPTURE_DEVICES = ("cuda",)
"""Device types whose engines decode through a GraphDecoder. On any other device type listed here
(the tests add "cpu") the same static-shape step runs eagerly, uncaptured."""


class GraphDecoder:
    """Static-shape decode steps of `model` over a preallocated `cache`, captured as a CUDA graph on a
    CUDA device (run eagerly elsewhere). Call with tokens [N], the full attention mask [N, capacity]
    (True on the prompt's real tokens and on every generated token so far, the new one included),
    positions [N, 1] and the cache column to write; returns float32 logits [N, V], which stay valid
    until the next call."""

    def __init__(self, fast: FastDecoder, device: torch.device):
        self.fast = fast
        self.capture = device.type == "cuda"
        self.graph = None
        self.inputs: tuple[torch.Tensor, ...] | None = None  # tokens, mask, position, slot: the graph's inputs
        self.logits: torch.Tensor | None = None

    @classmethod
    def build(cls, model, cache, capacity: int, device: torch.device) -> GraphDecoder | None:
        """A GraphDecoder where `device` is a capture device and `model` is one `FastDecoder` serves
        with position-independent RoPE; None otherwise."""
        if device.type not in CAPTURE_DEVICES:
            return None
        fast = FastDecoder.build(model, cache, capacity)
        if fast is None or fast.packed or getattr(fast.rotary, "rope_type", "default") in _LENGTH_DEPENDENT_ROPE:
            return None
        return cls(fast, device)

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, slot: int) -> torch.Tensor:
        if self.inputs is None:
            self.inputs = (tokens.clone(), mask.clone(), position.clone(), torch.tensor([slot], device=mask.device))
        else:
            for buffer, value in zip(self.inputs, (tokens, mask, position)):
                buffer.copy_(value)
            self.inputs[3].fill_(slot)
        if self.capture and self.graph is None:
            try:
                self._capture()
            except RuntimeError as error:  # an op this torch build cannot capture: the same step, uncaptured
                log.warning("CUDA graph capture of the decode step failed (%s); decoding without a graph", str(error).splitlines()[0])
                self.capture = False
        if not self.capture:
            return self._step()
        self.graph.replay()
        return self.logits

    def _step(self) -> torch.Tensor:
        tokens, mask, position, slot = self.inputs
        return self.fast(tokens, mask, position, slot=slot)

    def _capture(self) -> None:
        """Record one step. The warm-up run on a side stream (which torch asks for before a capture)
        computes the real first step and writes its key and value; the capture records without
        running, and the first replay writes the same values to the same slot again."""
        device = self.inputs[1].device
        enabled, dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")

        def step() -> torch.Tensor:
            with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
                return self._step()

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = step()
        self.graph = graph
