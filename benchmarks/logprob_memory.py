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

    python benchmarks/logprob_memory.py [--rows 8] [--tokens 512] [--vocab 151936] [--dtypes float32 bfloat16]

Defaults take about a minute on 2 cores and need about 8 GB of memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys

METHODS = ("naive", "r1kit", "trl")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, dtype = args.worker
        print(json.dumps(measure(method, args.rows, args.tokens, args.vocab, dtype)))
        return
    methods = METHODS if importlib.util.find_spec("trl") else METHODS[:2]
    gb = 2**30
    print(f"log-probs + backward over logits [{args.rows}, {args.tokens}, {args.vocab}]: peak RSS added on top of the logits (fresh process each)")
    print(f"{'dtype':<9} {'method':<6} {'logits GB':>9} {'fp32 [B,T,V] GB':>15} {'added GB':>9} {'beyond the gradient GB':>23}")
    for dtype in args.dtypes:
        for method in methods:
            cmd = [sys.executable, __file__, "--rows", str(args.rows), "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--worker", method, dtype]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            beyond = out["added"] - out["logits"]  # the logits' gradient has their size
            print(f"{dtype:<9} {method:<6} {out['logits'] / gb:>9.2f} {out['fp32'] / gb:>15.2f} {out['added'] / gb:>9.2f} {beyond / gb:>23.2f}")


if __name__ == "__main__":
    main()
