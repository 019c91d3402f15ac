"""One GRPO step under run.parallel=fsdp at Qwen2.5-0.5B's shape on GPUs: time and memory.

A random-weight model with Qwen2.5-0.5B's configuration (`gpu_bench.SHAPES`; nothing is
downloaded) is set up as `r1kit grpo run.parallel=fsdp` sets it up (r1kit/train/fsdp.py): the
learner and the frozen reference sharded with `fully_shard` per decoder layer and the root, bf16
compute over fp32 shards (MixedPrecisionPolicy) when --dtype bf16, AdamW over the shards, and a
whole mirror of the policy that the rollout engine samples from. A step is then what the recipe
does: rollouts of B/K prompts x G samples per rank from the mirror (no eos: every row runs to C
tokens), random rewards, `r1kit.recipes.grpo.update` (reference log-probs, policy log-probs,
clipped surrogate with the k3 KL, backward with the reduce-scatter, clipping, AdamW), then the
gather of the new weights into the mirror. Every phase is bracketed by `torch.cuda.synchronize()`;
peak memory is `torch.cuda.max_memory_allocated` on rank 0 after the warm-up steps.

    torchrun --nproc_per_node K benchmarks/fsdp_step.py [--shape qwen2.5-0.5b|tiny] [--dtype bf16|fp32]
        [--prompts 8] [--group 8] [--prompt-len 64] [--completion 256] [--warmup 1] [--steps 3]

Without torchrun it runs on one GPU as a group of one (sharding then saves nothing, but the step
is the same code). It refuses to run without CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from r1kit.config import from_dict
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.rollout import SamplingParams
from r1kit.train import fsdp
from r1kit.train.distributed import init_distributed, shutdown
from r1kit.train.optim import build_optimizer, build_scheduler
from r1kit.train.precision import autocast
from r1kit.train.reference import frozen_copy

from gpu_bench import SHAPES, build_model, count_params  # this script's directory is on sys.path when it runs


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=list(SHAPES), default="qwen2.5-0.5b")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--prompts", type=int, default=8, help="B, over all ranks")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--completion", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    return p.parse_args()


def grpo_config(args: argparse.Namespace) -> GRPOConfig:
    return from_dict(GRPOConfig, {
        "grpo": {"prompts_per_step": args.prompts, "group_size": args.group, "beta": 0.04},
        "sampling": {"max_new_tokens": args.completion, "temperature": 1.0},
        "optim": {"lr": 1e-6, "warmup_steps": 0, "schedule": "constant"},
        "precision": args.dtype,
    })  # fmt: skip


def timed(device: torch.device, fn):
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("fsdp_step.py times FSDP2 on GPUs and needs CUDA; this machine has none")
    args = parse()
    if "WORLD_SIZE" not in os.environ:  # one GPU: a process group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29512"))
        torch.distributed.init_process_group("nccl", device_id=torch.device("cuda", 0))
    dist, device = init_distributed("cuda")
    if not dist.enabled:  # init_distributed leaves a group of one to us
        torch.cuda.set_device(device)
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if args.prompts % world:
        raise SystemExit(f"--prompts {args.prompts} must divide by the {world} processes")
    config = grpo_config(args)
    bf16 = args.dtype == "bf16"

    from r1kit.accel.engine import AcceleratedEngine

    mirror = build_model(args.shape, device)
    learner, ref = fsdp.shard(copy.deepcopy(mirror), bf16), fsdp.shard(frozen_copy(mirror), bf16)
    opt = build_optimizer(list(learner.parameters()), config.optim)
    sched = build_scheduler(opt, config.optim, args.warmup + args.steps)
    engine = AcceleratedEngine(mirror, pad_token_id=0, eos_token_id=[])
    gen = torch.Generator().manual_seed(rank)
    vocab = mirror.config.vocab_size
    prompts = torch.randint(1, vocab, (args.prompts // world, args.prompt_len), generator=gen).tolist()

    rows = []
    for i in range(args.warmup + args.steps):
        params = SamplingParams(temperature=1.0, max_new_tokens=args.completion, n=args.group, seed=1000 * rank + i)
        with autocast(device, config.precision):
            batch, rollout_s = timed(device, lambda: engine.generate(prompts, params))
        rewards = torch.rand(len(batch), generator=gen)
        _, update_s = timed(device, lambda: grpo.update(config, learner, ref, opt, sched, batch, rewards, dist))
        _, gather_s = timed(device, lambda: fsdp.gather_into(learner, mirror))
        if i == args.warmup - 1:
            torch.cuda.reset_peak_memory_stats(device)
        if i >= args.warmup:
            rows.append({"rollout_s": rollout_s, "update_s": update_s, "gather_s": gather_s})

    if rank == 0:
        report = {
            "shape": args.shape, "params": count_params(mirror), "ranks": world, "dtype": args.dtype, "gpu": torch.cuda.get_device_name(device),
            "rows_per_rank": len(batch), "completion": args.completion,
            **{k: statistics.median(r[k] for r in rows) for k in rows[0]},
            "peak_gib_rank0": torch.cuda.max_memory_allocated(device) / 2**30,
        }  # fmt: skip
        print(json.dumps(report, indent=2))
    shutdown(dist)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
