"""GRPO step time: r1kit against TRL's GRPOTrainer, same model, same data, same settings, on CPU (or a GPU).

One GRPO step = 8 prompts x G=8 completions = 64 sequences sampled at temperature 1 (no top-k /
top-p), their arithmetic-task reward, group-normalised advantages, one policy forward+backward
(mu = 1, so no old log-probs), a frozen-reference forward for the k3 KL (beta = 0.04), and one AdamW
step (lr 1e-6, no weight decay, grad-norm clip 1.0, constant schedule), fp32 (or, with
--precision bf16, bf16 autocast over fp32 weights in both tools: TRL's bf16=True, r1kit's
precision=bf16), 2 torch threads (on CPU r1kit's default splits each rollout's prompts between two
processes of one thread each, `r1kit/accel/workers.py`: the same two cores).

Fair by construction:

- Both tools load the same saved tiny Qwen2 directory (two sizes: ~0.25M and ~13M parameters) and
  the same character tokenizer: the r1kit worker hands the recipe the `PreTrainedTokenizerFast` that
  TRL is given as `processing_class` (r1kit's own `load_tokenizer` loads that class from this
  directory too; earlier releases went through AutoTokenizer, which for a qwen2 directory swapped in
  a BPE tokenizer that drops spaces and newlines). Nothing else in r1kit is touched.
- Every completion runs to max length in both tools: the eos id of the tokenizer and of the
  model's config is set to a token the output layer does not cover (id = vocab size), so no
  sampled token can end a row early. Mean completion lengths are printed to show it.
- Same rows: r1kit's built-in arithmetic train split; TRL gets a `datasets.Dataset` with the same
  rows, `prompt` already rendered with r1kit's `tiny` template (`Q: {prompt}\\nA: `), and `answer`.
  Both reward with `r1kit.data.tasks.arithmetic.TASK.reward` (r1kit: rewards=["arithmetic"]).
- TRL: loss_type="grpo" (per-sequence token mean, r1kit's default loss_agg), scale_rewards="group",
  use_bias_correction_kl=False (r1kit's default KL term; TRL's default weights it by the ratio),
  per_device_train_batch_size=64 with steps_per_generation=1 and gradient_accumulation_steps=1 (one
  optimizer step per 64 completions from 8 prompts), gradient checkpointing and bf16 OFF (TRL's
  GRPOConfig turns both on by default; r1kit does neither), optim="adamw_torch" (torch.optim.AdamW,
  as r1kit), no logging, no eval, no saving.
- Same OpenMP waits: every process gets `--omp-wait-policy` (default PASSIVE) and `--spin-count`
  (GOMP_SPINCOUNT; by default r1kit's 1000 with PASSIVE waits, unset otherwise): by default both
  tools run with the waits r1kit's command line sets (r1kit/accel/openmp.py). `--omp-wait-policy ''`
  leaves both variables unset: OpenMP's spinning threads, what a TRL user gets.

Each measurement runs in a fresh subprocess (so its peak RSS, from getrusage, is its own; r1kit's
adds the private memory of the rollout worker processes it forks on CPU, `r1kit/accel/workers.py`,
which getrusage does not see: each worker's own pages at their peak, beside the shared weights and
code it maps from the process), and the tools alternate r1kit, TRL, r1kit, TRL ... at each setting. Step time: r1kit's `perf/step_s` from
metrics.jsonl (rollout + reward + update, timed inside the loop: the final eval and save after the
loop are excluded); TRL's is on_step_begin -> on_step_end of a TrainerCallback (generation happens
inside the step; logging after it). The first `--warmup` steps of each run are dropped and the
median of the rest is reported.

Model FLOPs per step (the same count for both tools, so the ratio of achieved FLOP/s equals the
ratio of speeds), with N parameters (tied embeddings counted once: the LM-head matmul; the lookup
is free), R = 64 rows, B = 8 prompts, P = mean prompt tokens, C = completion tokens, L = P + C,
d = hidden size, n_l = layers, and attention at 4 d FLOPs per (query, key) pair per layer, causal:

    generation  2 N (B P + R C)           + 4 d n_l R C (P + (C + 1) / 2)
    policy      6 N R L                   + 3 * 4 d n_l R L (L + 1) / 2     (forward + backward)
    reference   2 N R L                   + 4 d n_l R L (L + 1) / 2

Achieved FLOP/s is divided by this machine's matmul peak (fp32, or bf16 with --precision bf16) at the
same thread count, measured in the same run: the best of repeated 2048x2048 products before and
after the runs, through each of PyTorch's two CPU kernel libraries, MKL (torch.matmul) and oneDNN
(on a packed weight, as r1kit's fast decode uses it). "%peak" is against the higher of the two;
"%mm" against torch.matmul's alone, the peak earlier releases reported (on our AMD EPYC oneDNN's is
~15-20% higher).

    python benchmarks/grpo_vs_trl.py [--sizes 0.3M 13M] [--lengths 64 128] [--warmup 2] [--steps 5] [--precision fp32|bf16]
                                     [--rounds 2] [--warmup-13m 1] [--steps-13m 4] [--rounds-13m 2] [--profile]
                                     [--omp-wait-policy PASSIVE] [--spin-count 1000]

The defaults take about 7-8 minutes on 2 quiet cores: the 13M model gets 1 warm-up and 4 measured
steps in two alternating r1kit/TRL pairs per length (8 steps per tool), the 0.3M model 2 + 5 steps
in two alternating pairs. Fewer 13M steps were measured to swing by +-10% between runs.

--profile instead runs r1kit alone at 0.3M / 64 tokens under cProfile and prints the top functions.

On a GPU (`--device cuda`, for both tools: r1kit's model.device, TRL without use_cpu) the same
comparison runs; a third size, "0.5B", has Qwen2.5-0.5B's decoder layers (24 layers, width 896, 14
query / 2 KV heads, MLP 4864) with the character vocabulary (358M parameters; `gpu_bench.py` has the
full 151,936-token vocabulary). The peak is then the GPU's (an 8192^3 torch.matmul in the chosen
precision), and each process's peak GPU memory (torch.cuda.max_memory_allocated) is reported beside
its RSS:

    python benchmarks/grpo_vs_trl.py --device cuda --sizes 0.5B --precision bf16 --lengths 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from r1kit.accel.openmp import SPIN_COUNT  # torch-free: the waits are set before torch loads OpenMP

TEMPLATE = "Q: {prompt}\nA: "  # r1kit's `tiny` template, rendered for TRL
PROMPTS, GROUP = 8, 8
TRAIN_ROWS = 512
LR, BETA = 1e-6, 0.04
SEED = 0

# ~0.25M, ~13M and ~358M parameters with the 104-token character vocabulary; the last has
# Qwen2.5-0.5B's decoder layers and is meant for a GPU (module docstring).
SIZES = {
    "0.3M": dict(hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256),
    "13M": dict(hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2, intermediate_size=1536),
    "0.5B": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864),
}
CPU_SIZES = ["0.3M", "13M"]
UNREACHABLE_EOS = "<unreachable-eos>"
# TRL's GRPOConfig settings that keep a benchmark run quiet: no logging, evaluation, saving or bars.
TRL_QUIET = dict(logging_strategy="no", report_to=[], eval_strategy="no", save_strategy="no", dataloader_num_workers=0, disable_tqdm=True, log_completions=False)


# --------------------------------------------------------------------------------------------
# Shared setup (parent process)


def build_models(root: Path, sizes: list[str]) -> dict[str, dict]:
    """Save one tiny Qwen2 per size (with its tokenizer) under root; returns {size: info}."""
    from transformers.utils import logging as hf_logging

    from r1kit.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_model

    hf_logging.set_verbosity_error()  # it warns that the eos id is outside the vocabulary: that is the point
    hf_logging.disable_progress_bar()
    out = {}
    for size in sizes:
        tok = build_char_tokenizer()
        model = build_tiny_model(tok, TinyModelConfig(arch="qwen2", **SIZES[size]), seed=SEED)
        vocab = model.config.vocab_size
        # The new eos gets id == vocab: outside the logits, so it can never be sampled.
        tok.add_special_tokens({"eos_token": UNREACHABLE_EOS})
        assert tok.eos_token_id == vocab, (tok.eos_token_id, vocab)
        model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
        path = root / f"qwen2-{size}"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        c = model.config
        out[size] = {"path": str(path), "params": sum(p.numel() for p in model.parameters()), "hidden": c.hidden_size, "layers": c.num_hidden_layers, "vocab": vocab}
    return out


def train_rows() -> list[dict]:
    from r1kit.config import DataArgs
    from r1kit.data.source import load_split

    return load_split(DataArgs(task="arithmetic", train_size=TRAIN_ROWS, seed=SEED), "train")


def matmul_peaks(threads: int, n: int = 2048, repeats: int = 8, dtype: str = "fp32") -> dict[str, float]:
    """Best FLOP/s of an n x n matmul in `dtype` (fp32 or bf16) on `threads` threads, through each of
    the two kernel libraries PyTorch ships for x86 CPUs: {"torch.matmul": MKL's, "oneDNN": oneDNN's
    on a weight packed for it (r1kit's fast decode runs its projections this way), absent where the
    build has no oneDNN linear}. On AMD CPUs oneDNN's can be the higher."""
    import torch

    torch.set_num_threads(threads)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
    runs = {"torch.matmul": lambda: torch.matmul(a, b)}
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, n)
        runs["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        pass
    peaks = {}
    for name, run in runs.items():
        run()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        peaks[name] = 2 * n**3 / best
    return peaks


def matmul_peak(device, dtype, n: int, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n x n torch.matmul in `dtype` (a torch dtype) on `device`, every timing
    bracketed by a synchronize on a GPU (gpu_bench.py uses it too)."""
    import torch

    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda device: None
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(info: dict, prompt_len: float, completion_len: int) -> float:
    """Model FLOPs of one GRPO step (formula in the module docstring)."""
    parts = grpo_flops(info["params"], info["hidden"], info["layers"], PROMPTS, PROMPTS * GROUP, prompt_len, completion_len)
    return parts["rollout"] + parts["train"]


def grpo_flops(n_params: int, d: int, layers: int, prompts: int, rows: int, P: float, C: int) -> dict[str, float]:
    """{rollout, train}: model FLOPs of sampling `rows` completions of C tokens from `prompts` prompts
    of P tokens, and of one mu = 1 update on them (policy forward + backward = 3 forwards, plus the
    reference forward). Formulas in the module docstring; gpu_bench.py uses them too."""
    L, attn = P + C, 4 * d * layers
    gen = 2 * n_params * (prompts * P + rows * C) + attn * rows * C * (P + (C + 1) / 2)
    fwd = 2 * n_params * rows * L + attn * rows * L * (L + 1) / 2
    return {"rollout": gen, "train": 3 * fwd + fwd}


# --------------------------------------------------------------------------------------------
# Workers (one fresh process per measurement)


def char_tokenizer(path: str):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    tok.padding_side = "left"
    return tok


def run_r1kit(spec: dict, workdir: Path) -> dict:
    from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, RunArgs
    from r1kit.recipes import grpo
    from r1kit.report.logger import read_metrics

    tok = char_tokenizer(spec["path"])
    grpo.load_tokenizer = lambda path: tok  # the very object type TRL gets (module docstring)
    config = grpo.GRPOConfig(
        model=ModelArgs(path=spec["path"], dtype="float32", device=spec.get("device", "cpu"), compile=spec.get("compile", False)),
        data=DataArgs(task="arithmetic", train_size=TRAIN_ROWS, test_size=1, seed=SEED, template="tiny"),
        rewards=["arithmetic"],
        grpo=grpo.GRPOArgs(steps=spec["steps"], prompts_per_step=PROMPTS, group_size=GROUP, num_iterations=1, beta=BETA),
        sampling=grpo.SamplingArgs(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=spec["length"]),
        optim=OptimArgs(lr=LR, weight_decay=0.0, warmup_steps=0, schedule="constant", max_grad_norm=1.0),
        run=RunArgs(output_dir=str(workdir), name="r1kit", seed=SEED, threads=spec["threads"], tensorboard=False, progress=False, log_every=1),
        eval=EvalArgs(k=0, max_new_tokens=1, batch_size=1),
        samples_every=0,
        eval_before=False,
        precision=spec.get("precision", "fp32"),
    )
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run_dir = grpo.train(config)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        run_dir = grpo.train(config)
    rows = [m for m in read_metrics(run_dir) if "perf/step_s" in m]
    return {
        "step_s": [m["perf/step_s"] for m in rows],
        "rollout_s": [m["perf/rollout_s"] for m in rows],
        "length": [m["completion/length_mean"] for m in rows],
        "reward": [m["reward/mean"] for m in rows],
    }


def run_trl(spec: dict, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1kit.data.tasks.arithmetic import TASK

    tok = char_tokenizer(spec["path"])
    rows = train_rows()
    dataset = Dataset.from_list([{"prompt": TEMPLATE.format(prompt=r["prompt"]), "answer": r["answer"]} for r in rows])
    args = GRPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=spec["steps"],
        per_device_train_batch_size=PROMPTS * GROUP,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        num_generations=GROUP,
        max_completion_length=spec["length"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=BETA,
        use_bias_correction_kl=False,  # TRL 1.16's default weights the KL by the ratio; r1kit's grpo.kl_ratio is off
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=1.0,
        use_vllm=False,
        bf16=spec.get("precision") == "bf16",  # autocast over fp32 weights, as r1kit's precision=bf16
        fp16=False,
        gradient_checkpointing=False,
        torch_compile=spec.get("compile", False),
        model_init_kwargs={"dtype": "float32"},
        use_cpu=spec.get("device", "cpu") == "cpu",
        seed=SEED,
        **TRL_QUIET,
    )
    seen: dict[str, list[float]] = {"step_s": [], "rollout_s": [], "length": [], "reward": []}
    generating = [0.0]

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step (generation included), and the step's length and reward
        from the trainer's metric buffer (read here: train() clears it when it finishes)."""

        def on_step_begin(self, args, state, control, **kwargs):
            generating[0] = 0.0
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seen["step_s"].append(time.perf_counter() - self.t0)
            seen["rollout_s"].append(generating[0])
            metrics = trainer._metrics["train"]
            seen["length"].append(metrics["completions/mean_length"][-1])
            seen["reward"].append(metrics["reward"][-1])

    def arithmetic(completions, answer, **columns):
        return TASK.reward(completions, answer)

    trainer = GRPOTrainer(model=spec["path"], reward_funcs=arithmetic, args=args, train_dataset=dataset, processing_class=tok, callbacks=[StepTimer()])
    generate = trainer._generate_single_turn

    def timed_generate(*a, **k):  # the model.generate call and its eos masking
        t = time.perf_counter()
        out = generate(*a, **k)
        generating[0] += time.perf_counter() - t
        return out

    trainer._generate_single_turn = timed_generate
    torch.set_num_threads(spec["threads"])  # in case anything above changed it
    trainer.train()
    return seen


def worker(tool: str, spec_json: str, out: str) -> None:
    spec = json.loads(spec_json)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_r1kit if tool == "r1kit" else run_trl)(spec, Path(tmp))
    result["threads"] = torch.get_num_threads()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if tool == "r1kit":  # r1kit's rollout worker processes: what they held beyond the pages they share
        import gc

        from r1kit.accel import workers

        gc.collect()  # the run's engines are gone, and with them their workers, which report on closing

        result["worker_private_mb"] = workers.peak_private_bytes() / 2**20
        result["peak_rss_mb"] += result["worker_private_mb"]
    result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    Path(out).write_text(json.dumps(result))


def set_waits(env, policy: str, spin_count: str) -> None:
    """OMP_WAIT_POLICY and GOMP_SPINCOUNT in the environment mapping `env`; '' removes the variable."""
    for name, value in (("OMP_WAIT_POLICY", policy), ("GOMP_SPINCOUNT", spin_count)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)


def measure(tool: str, spec: dict, tmp: Path) -> dict:
    out = tmp / f"{tool}-{time.monotonic_ns()}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    set_waits(env, spec["omp_wait_policy"], spec["spin_count"])
    proc = subprocess.run([sys.executable, __file__, "--worker", tool, json.dumps(spec), str(out)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{tool} worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------
# Main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=CPU_SIZES, choices=list(SIZES))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for both tools (module docstring)")
    parser.add_argument("--lengths", nargs="*", type=int, default=[64, 128])
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of every run")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--steps-13m", type=int, default=4, help="measured steps per run for the 13M (and 0.5B) model")
    parser.add_argument("--warmup-13m", type=int, default=1, help="warm-up steps per run for the 13M (and 0.5B) model")
    parser.add_argument("--rounds", type=int, default=2, help="alternating r1kit/TRL runs per setting")
    parser.add_argument("--rounds-13m", type=int, default=2, help="alternating r1kit/TRL runs per setting for the 13M (and 0.5B) model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY for every process ('' leaves it unset); see the module docstring")
    parser.add_argument("--spin-count", default=None,
                        help=f"GOMP_SPINCOUNT for every process ('' leaves it unset); default: r1kit's {SPIN_COUNT} with PASSIVE waits, else unset")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: both tools autocast to bf16 over fp32 weights; the peak is measured in bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile in both tools: r1kit's model.compile, TRL's torch_compile (raise the warm-up steps: the first pays the compile)")
    parser.add_argument("--profile", action="store_true", help="profile r1kit at 0.3M / 64 tokens instead")
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    if args.spin_count is None:
        args.spin_count = str(SPIN_COUNT) if args.omp_wait_policy.upper() == "PASSIVE" else ""
    set_waits(os.environ, args.omp_wait_policy, args.spin_count)  # before torch starts its OpenMP pool
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        models = build_models(tmp, args.sizes)
        if args.profile:
            info = models[args.sizes[0]]
            spec = {"path": info["path"], "length": args.lengths[0], "steps": args.warmup + args.steps, "threads": args.threads, "profile": True}
            worker("r1kit", json.dumps(spec), str(tmp / "profile.json"))
            return
        tok = char_tokenizer(models[args.sizes[0]]["path"])
        rendered = [TEMPLATE.format(prompt=r["prompt"]) for r in train_rows()]
        # TRL tokenizes with the default add_special_tokens=True, r1kit with False: the ids must agree.
        ids = [tok(t)["input_ids"] for t in rendered]
        assert ids == [tok(t, add_special_tokens=False)["input_ids"] for t in rendered], "the tools would see different prompt ids"
        assert all(tok.decode(x) == t for x, t in zip(ids, rendered)), "the character tokenizer does not round-trip the prompts"
        prompt_len = statistics.mean(len(x) for x in ids)
        measure_peaks = (lambda: matmul_peaks(args.threads, dtype=args.precision)) if args.device == "cpu" else (lambda: {"torch.matmul": matmul_peak(args.device, torch.bfloat16 if args.precision == "bf16" else torch.float32, 8192)})
        peaks_before = measure_peaks()
        print(f"GRPO step, r1kit vs TRL: B={PROMPTS} prompts x G={GROUP}, beta={BETA}, mu=1, lr={LR}, {args.precision}, {args.threads} threads, "
              f"OMP_WAIT_POLICY={args.omp_wait_policy or 'unset'}, GOMP_SPINCOUNT={args.spin_count or 'unset'}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        results: dict[tuple[str, int, str], list[dict]] = {}
        for size in args.sizes:
            info = models[size]
            warmup, steps, rounds = (args.warmup, args.steps, args.rounds) if size == "0.3M" else (args.warmup_13m, args.steps_13m, args.rounds_13m)
            for length in args.lengths:
                spec = {"path": info["path"], "device": args.device, "length": length, "steps": warmup + steps, "threads": args.threads, "omp_wait_policy": args.omp_wait_policy,
                        "spin_count": args.spin_count,
                        "precision": args.precision, "compile": args.compile}
                for r in range(rounds):
                    for tool in ("r1kit", "trl"):
                        t = time.perf_counter()
                        res = measure(tool, spec, tmp)
                        res["warmup"] = warmup
                        results.setdefault((size, length, tool), []).append(res)
                        print(f"  {size} C={length} {tool} round {r + 1}: steps {[round(s, 2) for s in res['step_s']]} s "
                              f"(process {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
        peaks_after = measure_peaks()
        peaks = {name: max(peaks_before[name], peaks_after[name]) for name in peaks_before}
        print(f"{args.precision} matmul peak ({'2048x2048, ' + str(args.threads) + ' threads' if args.device == 'cpu' else '8192x8192, ' + torch.cuda.get_device_name(args.device)}), before / after / best: "
              + "; ".join(f"{name} {peaks_before[name] / 1e9:.1f} / {peaks_after[name] / 1e9:.1f} / {peaks[name] / 1e9:.1f} GFLOP/s" for name in peaks)
              + f"; mean prompt {prompt_len:.2f} tokens; load average after {os.getloadavg()[0]:.1f}")
        print_table(results, models, prompt_len, peaks)


def summarise(runs: list[dict]) -> dict:
    times = [s for r in runs for s in r["step_s"][r["warmup"]:]]
    lengths = [x for r in runs for x in r["length"]]
    rewards = [x for r in runs for x in r["reward"]]
    return {
        "median_s": statistics.median(times),
        "best_s": min(times),
        "rollout_s": statistics.median(s for r in runs for s in r["rollout_s"][r["warmup"]:]),
        "n": len(times),
        "length": statistics.mean(lengths),
        "reward_mean": statistics.mean(rewards),
        "reward_last": statistics.mean(r["reward"][-1] for r in runs),
        "rss": max(r["peak_rss_mb"] for r in runs),
        "gpu_mb": max(r.get("peak_gpu_mb", 0.0) for r in runs),
        "threads": {r["threads"] for r in runs},
    }


def print_table(results, models, prompt_len: float, peaks: dict[str, float]) -> None:
    peak, mm_peak = max(peaks.values()), peaks["torch.matmul"]
    gpu = any(r.get("peak_gpu_mb", 0.0) > 0 for runs in results.values() for r in runs)
    head = (f"{'model':<6} {'params':>8} {'C':>4} {'tool':<6} {'s/step':>7} {'best':>6} {'gen s':>6} {'n':>3} {'tok/s':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} {'%peak':>6} {'%mm':>6} {'RSS MB':>7} "
            + (f"{'GPU MB':>7} " if gpu else "") + f"{'len':>6} {'reward':>7} {'r@last':>7}")
    print(head)
    print("-" * len(head))
    ratios = []
    for size, info in models.items():
        for length in sorted({k[1] for k in results}):
            if (size, length, "r1kit") not in results:
                continue
            flops = step_flops(info, prompt_len, length)
            s = {tool: summarise(results[(size, length, tool)]) for tool in ("r1kit", "trl")}
            for tool, x in s.items():
                tokens = PROMPTS * GROUP * x["length"]
                print(f"{size:<6} {info['params'] / 1e6:>7.3f}M {length:>4} {tool:<6} {x['median_s']:>7.2f} {x['best_s']:>6.2f} {x['rollout_s']:>6.2f} {x['n']:>3} {tokens / x['median_s']:>7.0f} "
                      f"{flops / 1e9:>10.1f} {flops / x['median_s'] / 1e9:>8.2f} {100 * flops / x['median_s'] / peak:>5.1f}% {100 * flops / x['median_s'] / mm_peak:>5.1f}% {x['rss']:>7.0f} "
                      + (f"{x['gpu_mb']:>7.0f} " if gpu else "")
                      + f"{x['length']:>6.1f} {x['reward_mean']:>7.3f} {x['reward_last']:>7.3f}")
            gpu_ratio = s["r1kit"]["gpu_mb"] / s["trl"]["gpu_mb"] if gpu else float("nan")
            ratios.append((size, length, s["r1kit"]["median_s"] / s["trl"]["median_s"], s["r1kit"]["rss"] / s["trl"]["rss"], gpu_ratio))
    print()
    print(f"{'model':<6} {'C':>4} {'time r1kit/TRL':>15} {'speed-up':>9} {'RSS r1kit/TRL':>14}" + (f" {'GPU mem r1kit/TRL':>18}" if gpu else ""))
    for size, length, t, m, g in ratios:
        print(f"{size:<6} {length:>4} {t:>15.3f} {1 / t:>8.2f}x {m:>14.2f}" + (f" {g:>18.2f}" if gpu else ""))
    print("\ns/step: median over the measured steps (n) after warm-up, best: the fastest of them; gen s: median time in "
          "rollout (r1kit: perf/rollout_s, sampling + reward; TRL: its generate call); tok/s: completion tokens per second; "
          "%peak: achieved FLOP/s over the best matmul peak of either library, %mm: over torch.matmul's (MKL) alone; "
          "len: mean completion length; reward / r@last: mean arithmetic reward over all steps / at the last step "
          "(an untrained random model: ~0 for both, so this checks plumbing, not learning).")


if __name__ == "__main__":
    main()
