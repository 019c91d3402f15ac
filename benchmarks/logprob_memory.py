"""Peak memory of scoring a long completion against a large vocabulary: does log-prob computation
materialise a [B, T, V] float32 log-softmax?

The learner turns the model's logits [B, T, V] into per-token log-probs [B, T] and back-propagates.
The textbook way, `log_softmax(logits.float()).gather(...)`, builds a float32 [B, T, V] tensor (and
a float32 copy of bf16 logits), and autograd keeps the result until backward; at Qwen2.5's vocabulary
of 151,936 and 8 x 2,048 tokens that is 10 GB on top of the logits. r1kit's
`selective_log_softmax` works through the rows in chunks of at most 256 MiB of float32 and recomputes
them in backward. Each way runs in a fresh subprocess on the same logits (requires_grad, as the
model's output would be), forward and backward; the table shows the peak resident memory it added on
top of the logits, against the size of the logits and of one float32 [B, T, V] tensor, and what
remains once the logits' gradient (their size, in their dtype: what backward must hand the model in
any method) is taken off. With TRL installed its `selective_log_softmax` is measured too.

The second table starts one step earlier, from the final hidden states [B, T, d] and the LM head's
weight [V, d] (Qwen2.5-0.5B's d = 896), both requiring grad: "logits" runs the head over every
position and scores with r1kit's `selective_log_softmax` (what `completion_logprobs` does by
default), "chunked" is `head_logprobs` (`model.chunked_lm_head=true`), which never builds the
logits and recomputes each chunk's in backward. It shows the peak memory added on top of the inputs
and the seconds forward + backward took; the gradients of the hidden states and of the weight
(their own sizes) are unavoidable in both.

    python benchmarks/logprob_memory.py [--rows 8] [--tokens 512] [--vocab 151936] [--hidden 896] [--dtypes float32 bfloat16]

Defaults take about two minutes on 2 cores and need about 8 GB of memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time

METHODS = ("naive", "r1kit", "trl")
HEAD_METHODS = ("logits", "chunked")


def measure(method: str, rows: int, tokens: int, vocab: int, dtype: str) -> dict:
    """Run in a subprocess: peak RSS added by forward+backward of `method` over fresh logits."""
    import torch

    torch.manual_seed(0)
    logits = torch.randn(rows, tokens, vocab, dtype=getattr(torch, dtype)).requires_grad_()
    index = torch.randint(0, vocab, (rows, tokens))
    if method == "naive":
        def score(x):
            return torch.log_softmax(x.float(), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    elif method == "r1kit":
        from r1kit.algorithms.logprobs import selective_log_softmax

        def score(x):
            return selective_log_softmax(x, index)
    else:
        from trl.trainer.utils import selective_log_softmax as trl_selective

        def score(x):
            return trl_selective(x, index)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    logp = score(logits)
    logp.float().sum().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"added": after - before, "logits": logits.numel() * logits.element_size(), "fp32": logits.numel() * 4}


def measure_head(method: str, rows: int, tokens: int, vocab: int, hidden: int, dtype: str) -> dict:
    """Run in a subprocess: peak RSS added and seconds of forward+backward from hidden states and
    the head's weight to log-probs, by `method` (module docstring)."""
    import torch

    from r1kit.algorithms.logprobs import head_logprobs, selective_log_softmax

    torch.manual_seed(0)
    kind = getattr(torch, dtype)
    states = torch.randn(rows, tokens, hidden, dtype=kind).requires_grad_()
    weight = (torch.randn(vocab, hidden, dtype=kind) / hidden**0.5).requires_grad_()
    index = torch.randint(0, vocab, (rows, tokens))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if method == "logits":
        logp = selective_log_softmax(torch.nn.functional.linear(states, weight), index)
    else:
        logp, _ = head_logprobs(states, weight, None, index)
    logp.float().sum().backward()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"added": after - before, "seconds": seconds, "grads": (states.numel() + weight.numel()) * states.element_size(), "logits": rows * tokens * vocab * states.element_size()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=896, help="hidden size for the LM-head table (Qwen2.5-0.5B's)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, dtype = args.worker
        if method in HEAD_METHODS:
            print(json.dumps(measure_head(method, args.rows, args.tokens, args.vocab, args.hidden, dtype)))
        else:
            print(json.dumps(measure(method, args.rows, args.tokens, args.vocab, dtype)))
        return
    methods = METHODS if importlib.util.find_spec("trl") else METHODS[:2]
    gb = 2**30
    print(f"log-probs + backward over logits [{args.rows}, {args.tokens}, {args.vocab}]: peak RSS added on top of the logits (fresh process each)")
    print(f"{'dtype':<9} {'method':<6} {'logits GB':>9} {'fp32 [B,T,V] GB':>15} {'added GB':>9} {'beyond the gradient GB':>23}")
    for dtype in args.dtypes:
        for method in methods:
            out = _run_worker(args, method, dtype)
            beyond = out["added"] - out["logits"]  # the logits' gradient has their size
            print(f"{dtype:<9} {method:<6} {out['logits'] / gb:>9.2f} {out['fp32'] / gb:>15.2f} {out['added'] / gb:>9.2f} {beyond / gb:>23.2f}")
    print()
    print(f"From hidden states [{args.rows}, {args.tokens}, {args.hidden}] and an LM head [{args.vocab}, {args.hidden}] to log-probs, forward + backward: peak RSS added on top of the inputs")
    print(f"{'dtype':<9} {'method':<8} {'logits GB':>9} {'gradients GB':>12} {'added GB':>9} {'beyond the gradients GB':>24} {'seconds':>8}")
    for dtype in args.dtypes:
        for method in HEAD_METHODS:
            out = _run_worker(args, method, dtype)
            beyond = out["added"] - out["grads"]
            print(f"{dtype:<9} {method:<8} {out['logits'] / gb:>9.2f} {out['grads'] / gb:>12.2f} {out['added'] / gb:>9.2f} {beyond / gb:>24.2f} {out['seconds']:>8.2f}")


def _run_worker(args, method: str, dtype: str) -> dict:
    """One measurement in a fresh process (so its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--rows", str(args.rows), "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--worker", method, dtype]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
