"""The learner's forward passes with and without shared prompts (`completion_logprobs(share_prompts=)`).

One GRPO update at mu = 1 runs the frozen reference forward (no grad) and the policy forward and
backward over B prompts x G samples. Every row of a group repeats its prompt; with shared prompts
each distinct prompt runs once and the G rows continue from copies of its KV cache. This times both
ways on the same batch and prints the largest log-prob difference, so the saving is shown to come
with the same numbers.

Shapes: the speed benchmark's (13-token prompts, 64-token completions, G=8) and a GSM8K-like one
(150-token prompts with a system prompt, 128-token completions; G=8 and G=16). Model: a random
13M-parameter Qwen2 (6 layers, width 384), fp32, 2 threads by default.

    python benchmarks/learner_bench.py [--threads 2] [--repeats 3] [--shapes small gsm8k gsm8k-g16]
    python benchmarks/learner_bench.py --checkpointing

Prints, per shape, the median seconds of (reference forward + policy forward/backward) for each
way, the speed-up, and max |logp difference|. About 3.5 minutes on 2 cores.

--checkpointing instead measures `model.gradient_checkpointing` on long completions (8 prompts x 4,
64 + 512 tokens): one policy forward/backward with and without it, each in a fresh process, with the
peak resident memory it added. About a minute.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import completion_logprobs

SHAPES = {  # prompts, group size, prompt tokens, completion tokens
    "small": (8, 8, 13, 64),
    "gsm8k": (8, 8, 150, 128),
    "gsm8k-g16": (4, 16, 150, 128),
}


def build_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=104, hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def batch(prompts: int, group: int, prompt_len: int, completion_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of varying length (left-padded), each repeated `group` times, then random completions."""
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(prompts, prompt_len, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i in range(prompts):
        n = prompt_len - i % 4  # a few tokens of left padding on some prompts
        ids[i, prompt_len - n :] = torch.randint(1, 104, (n,), generator=g)
        mask[i, prompt_len - n :] = 1
    ids, mask = ids.repeat_interleave(group, 0), mask.repeat_interleave(group, 0)
    completion = torch.randint(1, 104, (prompts * group, completion_len), generator=g)
    return torch.cat([ids, completion], 1), torch.cat([mask, torch.ones_like(completion)], 1)


def learner_pass(model, ref, ids, mask, C: int, share: bool) -> torch.Tensor:
    with torch.no_grad():
        completion_logprobs(ref, ids, mask, C, share_prompts=share)
    model.zero_grad(set_to_none=True)
    logp = completion_logprobs(model, ids, mask, C, share_prompts=share)
    logp.mean().backward()
    return logp.detach()


def checkpointing_run(on: bool, threads: int) -> None:
    """One policy forward/backward at 8 x 4 rows of 64 + 512 tokens; prints seconds and added peak RSS."""
    from r1kit.config import ModelArgs
    from r1kit.models.load import training_options

    torch.set_num_threads(threads)
    model = training_options(build_model(), ModelArgs(gradient_checkpointing=on)).train()
    ids, mask = batch(8, 4, 64, 512)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    completion_logprobs(model, ids, mask, 512).mean().backward()
    seconds = time.perf_counter() - t
    added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20  # KiB -> GiB
    print(f"{'on' if on else 'off':<14} {seconds:>9.2f} {added:>15.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on long completions instead")
    parser.add_argument("--checkpointing-worker", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checkpointing_worker:
        checkpointing_run(args.checkpointing_worker == "on", args.threads)
        return
    if args.checkpointing:
        print(f"policy forward/backward, 13M Qwen2, 8 x 4 rows of 64 + 512 tokens, fp32, {args.threads} threads, a fresh process each")
        print(f"{'checkpointing':<14} {'seconds':>9} {'peak RSS +GiB':>15}")
        for mode in ("off", "on"):
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--checkpointing-worker", mode]
            print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        return
    torch.set_num_threads(args.threads)
    model = build_model()
    ref = build_model().eval().requires_grad_(False)
    print(f"learner pass (reference forward + policy forward/backward), 13M Qwen2, fp32, {args.threads} threads, median of {args.repeats}")
    print(f"{'shape':<10} {'B x G':>7} {'P':>4} {'C':>4} {'plain s':>8} {'shared s':>9} {'speed-up':>9} {'max |dlogp|':>12}")
    for name in args.shapes:
        B, G, P, C = SHAPES[name]
        ids, mask = batch(B, G, P, C)
        times: dict[bool, list[float]] = {False: [], True: []}
        logps = {}
        for share in (False, True):
            logps[share] = learner_pass(model, ref, ids, mask, C, share)  # warm-up
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            for share in (False, True):
                t = time.perf_counter()
                learner_pass(model, ref, ids, mask, C, share)
                times[share].append(time.perf_counter() - t)
        plain, shared = (sorted(times[s])[len(times[s]) // 2] for s in (False, True))
        diff = float((logps[True] - logps[False]).abs().max())
        print(f"{name:<10} {f'{B}x{G}':>7} {P:>4} {C:>4} {plain:>8.2f} {shared:>9.2f} {plain / shared:>8.2f}x {diff:>12.1e}")


if __name__ == "__main__":
    main()
