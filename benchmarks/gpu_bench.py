"""Rollout tokens/s and GRPO training-step model FLOPs utilisation at a real model's shape.

A random-weight model with Qwen2.5-0.5B's configuration (24 layers, width 896, 14 query / 2 KV
heads, MLP 4864, vocabulary 151,936, tied embeddings; nothing is downloaded) runs, on the chosen
device and dtype:

1. rollouts with r1kit's engine: B prompts of P random tokens, G samples each, C new tokens at
   temperature 1 with no eos (every row runs to C), timed end to end; completion tokens/s. On a GPU
   the engine decodes through a CUDA graph (accel/graph_decode.py; --no-cuda-graphs: the model's
   forward step by step);
   and, as the baseline (TRL's GRPOTrainer samples this way when it does not use vLLM), transformers'
   `model.generate` on the same B*G rows (each prompt repeated G times) with the same sampling
   settings under the same autocast, timed the same way, its layers eager (--no-baseline skips it);
2. GRPO training steps on that batch, as `r1kit grpo` runs them with mu = 1: a frozen reference's
   log-probs under no_grad, the policy's log-probs and entropy, the clipped surrogate with the k3 KL
   term (beta 0.04) on random group advantages, backward, gradient clipping and AdamW; fp32 master
   weights under bf16 autocast when --dtype bf16 (r1kit's precision=bf16).

Model FLOPs are counted as in `grpo_vs_trl.py` (N parameters with the tied LM head counted once,
attention at 4 d FLOPs per query-key pair per layer, causal), and the achieved rate is divided by
the matmul peak measured on the same device in the same dtype (best of repeated square matmuls).
On a GPU every timing is bracketed by `torch.cuda.synchronize()`; peak memory is
`torch.cuda.max_memory_allocated`.

    python benchmarks/gpu_bench.py [--shape qwen2.5-0.5b|tiny] [--device cuda] [--dtype bf16|fp32]
                                   [--prompts 8] [--group 8] [--prompt-len 64] [--completion 256]
                                   [--warmup 1] [--steps 3] [--compile] [--no-baseline] [--no-cuda-graphs]
                                   [--micro-batch-rows 0]

--compile compiles the decoder layers as r1kit's `model.compile` does (the reference, a deep copy,
too); the warm-up steps then include the compile.

`--shape tiny --device cpu` is a smoke run (the test suite runs it); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms import completion_logprobs, group_advantages, policy_loss
from r1kit.models.compile import compile_layers, eager_rollout
from r1kit.accel.engine import AcceleratedEngine
from r1kit.rollout import SamplingParams

from grpo_vs_trl import grpo_flops, matmul_peak  # this script's directory is on sys.path when it runs

SHAPES = {
    # Qwen/Qwen2.5-0.5B's config.json (architecture fields only)
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=True),
}  # fmt: skip
BETA, LR = 0.04, 1e-6


def build_model(shape: str, device: torch.device, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(**SHAPES[shape], attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).to(device)  # fp32 master weights; bf16 comes from autocast


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings are one tensor: counted once


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def train_step(model, ref, opt, batch, advantages: torch.Tensor, device: torch.device, dtype: str, micro_rows: int = 0) -> float:
    """One mu = 1 GRPO update on the rollout batch, `micro_rows` rows per pass (0: all; the
    gradient accumulated with each piece weighted by its share of the rows, as the recipe's
    grpo.micro_batch_rows does); returns the loss."""
    ids, attn, C = batch.input_ids.to(device), batch.attention_mask.to(device), batch.completion_ids.shape[1]
    mask = batch.completion_mask.to(device).float()
    N = ids.shape[0]
    total = 0.0
    for rows in torch.arange(N, device=device).split(micro_rows or N):
        with torch.no_grad(), autocast(device, dtype):
            ref_logp = completion_logprobs(ref, ids[rows], attn[rows], C)
        with autocast(device, dtype):
            logp, _entropy = completion_logprobs(model, ids[rows], attn[rows], C, with_entropy=True)
        loss, _ = policy_loss(logp, None, advantages[rows], mask[rows], ref_logp=ref_logp, beta=BETA, kl_kind="k3")
        (loss * (len(rows) / N)).backward()
        total += float(loss.detach()) * len(rows) / N
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


def hf_generate(model, prompts: list[list[int]], group: int, new_tokens: int, device: torch.device, dtype: str, seed: int) -> int:
    """transformers' model.generate on the rows TRL would build (each prompt repeated `group` times;
    equal lengths, so no padding), temperature 1, no top-k / top-p, no eos. Returns the new tokens per row."""
    ids = torch.tensor(prompts, device=device).repeat_interleave(group, dim=0)
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, dtype), eager_rollout():  # --compile: generate's growing cache would recompile
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    model.train(was_training)
    return out.shape[1] - ids.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--completion", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="compile the decoder layers (r1kit's model.compile)")
    ap.add_argument("--no-baseline", action="store_true", help="skip timing transformers' model.generate")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="the engine decodes through the model's forward, not a CUDA graph")
    ap.add_argument("--micro-batch-rows", type=int, default=0, help="rows per forward/backward of the update (0: all), as grpo.micro_batch_rows")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()
    device = torch.device(args.device)

    model = build_model(args.shape, device)
    if args.compile:
        compile_layers(model)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    cfg = model.config
    n_params, rows = count_params(model), args.prompts * args.group
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, cfg.vocab_size, (args.prompts, args.prompt_len), generator=gen).tolist()
    engine = AcceleratedEngine(model, pad_token_id=0, eos_token_id=[], cuda_graphs=not args.no_cuda_graphs)
    advantages = torch.randn(rows, generator=gen).to(device)
    advantages = group_advantages(advantages, args.group, "group")  # zero-mean, unit-std within each group

    rollout_s, train_s, generate_s = [], [], []
    for i in range(args.warmup + args.steps):
        params = SamplingParams(temperature=1.0, max_new_tokens=args.completion, n=args.group, seed=i)
        sync(device)
        t = time.perf_counter()
        with autocast(device, args.dtype):
            batch = engine.generate(prompts, params)
        sync(device)
        t_roll = time.perf_counter() - t
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        train_step(model, ref, opt, batch, advantages, device, args.dtype, args.micro_batch_rows)
        sync(device)
        t_train = time.perf_counter() - t
        if not args.no_baseline:
            sync(device)
            t = time.perf_counter()
            generated = hf_generate(model, prompts, args.group, args.completion, device, args.dtype, seed=i)
            sync(device)
            t_gen = time.perf_counter() - t
            assert generated == args.completion, f"model.generate stopped at {generated} of {args.completion} tokens"
        if i >= args.warmup:
            rollout_s.append(t_roll)
            train_s.append(t_train)
            if not args.no_baseline:
                generate_s.append(t_gen)
    C = batch.completion_ids.shape[1]
    flops = grpo_flops(n_params, cfg.hidden_size, cfg.num_hidden_layers, args.prompts, rows, args.prompt_len, C)
    peak = matmul_peak(device, torch.bfloat16 if args.dtype == "bf16" else torch.float32, 8192 if device.type == "cuda" else 1024)
    roll, train = statistics.median(rollout_s), statistics.median(train_s)
    out = {
        "shape": args.shape, "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "dtype": args.dtype, "compile": args.compile, "cuda_graphs": not args.no_cuda_graphs, "micro_batch_rows": args.micro_batch_rows, "params": n_params, "rows": rows, "prompt_len": args.prompt_len, "completion": C,
        "rollout_s": roll, "rollout_tokens_per_s": rows * C / roll, "rollout_flops_per_s": flops["rollout"] / roll,
        "train_step_s": train, "train_flops": flops["train"], "train_flops_per_s": flops["train"] / train,
        "matmul_peak_flops_per_s": peak, "rollout_mfu": flops["rollout"] / roll / peak, "train_mfu": flops["train"] / train / peak,
        "train_peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "torch": torch.__version__,
    }  # fmt: skip
    if generate_s:
        gen = statistics.median(generate_s)
        out.update(generate_s=gen, generate_tokens_per_s=rows * C / gen, rollout_speedup_vs_generate=gen / roll)
    print(f"{args.shape} ({n_params / 1e6:.0f}M parameters) on {out['gpu'] or device}, {args.dtype}; {args.prompts} prompts x {args.group}, "
          f"prompt {args.prompt_len} + completion {C} tokens; median of {args.steps} after {args.warmup} warm-up"
          + ("; compiled layers" if args.compile else "") + ("; engine decode through the forward" if args.no_cuda_graphs else ""))
    print(f"  rollout:    {roll:.3f} s, {out['rollout_tokens_per_s']:,.0f} completion tokens/s, {out['rollout_mfu']:.1%} of the matmul peak")
    if generate_s:
        print(f"  model.generate (baseline): {gen:.3f} s, {out['generate_tokens_per_s']:,.0f} tokens/s; r1kit's engine {gen / roll:.2f}x as fast")
    print(f"  train step: {train:.3f} s, {flops['train'] / 1e12:.2f} TFLOP, {out['train_flops_per_s'] / 1e12:.1f} TFLOP/s = "
          f"{out['train_mfu']:.1%} MFU; peak memory {out['train_peak_memory_gb']:.1f} GiB")
    print(f"  matmul peak ({args.dtype}, measured): {peak / 1e12:.1f} TFLOP/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
