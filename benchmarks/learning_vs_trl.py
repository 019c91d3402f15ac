"""Same learning: r1kit GRPO and TRL's GRPOTrainer trained from one checkpoint, same settings, then
scored by one evaluator. The speed benchmark (grpo_vs_trl.py) runs untrained models whose reward
stays near zero; this one shows that r1kit's speed does not come from learning less.

Start: the demo's cold-start SFT model (a 1M-parameter Llama-shaped model with a character
tokenizer, built by the demo pipeline or taken from its cache), whose held-out pass@1 is ~0.44 with
room to rise. Both tools then run GRPO with `configs/tiny-arith/grpo.yaml`'s settings: 8 prompts x
G=8 samples at temperature 1, at most 40 new tokens, R1-Zero's rewards (the arithmetic answer inside
<answer> tags + 0.5 x the format reward, r1kit's own reward functions handed to TRL), beta 0.04,
mu = 1, AdamW at lr 1e-4 after 5 warm-up steps (TRL is handed r1kit's optimizer and schedule, so the
update rule is the same by construction), grad-norm clip 1.0, fp32, 2 threads. Sampling stops
at the tokenizer's eos in both (the config's extra stop string `</answer>` is dropped: TRL's
transformers generation has no stop strings). TRL: loss_type="grpo", scale_rewards="group", one
optimizer step per 64 samples, gradient checkpointing off.

Each (tool, seed) trains in a fresh process and saves its model; the parent then scores the start
and every final model with r1kit's evaluator on the task's 80 held-out prompts (greedy accuracy and
pass@1 over k samples at temperature 1, the same sampling seed for every model), and prints the
training reward over steps and the held-out numbers per run, with the mean and spread over seeds
per tool. The tools draw prompts and samples from different random streams, so runs differ by
seed noise; "same learning" means the tools' differences stay within the spread between seeds.

    python benchmarks/learning_vs_trl.py [--seeds 0 1 ... 9] [--steps 40] [--k 16] [--kl-ratio] [--out runs/learning-vs-trl]

About 7.5 minutes on 2 cores with the demo's base in its cache (its pretraining adds ~3 minutes
otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from grpo_vs_trl import TRL_QUIET, set_waits  # this script's directory is on sys.path when it runs

from r1kit.accel.openmp import SPIN_COUNT  # torch-free: the waits are set before torch loads OpenMP

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny-arith" / "grpo.yaml"
THREADS = 2


def grpo_config(start: str, out: Path, seed: int, steps: int, kl_ratio: bool = False):
    """configs/tiny-arith/grpo.yaml from `start`, without stop strings and without r1kit's own evals."""
    from r1kit.config import load
    from r1kit.recipes.grpo import GRPOConfig

    return load(CONFIG, [f"model.path={start}", f"run.output_dir={out}", "run.name=r1kit", f"run.seed={seed}", f"run.threads={THREADS}",
                         "run.progress=false", "run.tensorboard=false", "run.eval_every=0", f"grpo.steps={steps}", "sampling.stop=[]",
                         "eval_before=false", "eval.k=0", "samples_every=0", "precision=fp32", f"grpo.kl_ratio={str(kl_ratio).lower()}"], GRPOConfig)


def run_r1kit(spec: dict, out: Path) -> dict:
    from r1kit.recipes import grpo
    from r1kit.report.logger import read_metrics

    t0 = time.perf_counter()
    run_dir = grpo.train(grpo_config(spec["start"], out, spec["seed"], spec["steps"], spec["kl_ratio"]))
    wall = time.perf_counter() - t0
    rows = [m for m in read_metrics(run_dir) if "perf/step_s" in m]
    return {
        "model": str(run_dir / "model"),
        "wall_s": wall,
        "step_s": [m["perf/step_s"] for m in rows],
        "reward": [m["reward/mean"] for m in rows],
        "accuracy": [m["reward/arithmetic/mean"] for m in rows],
        "format": [m["reward/format/mean"] for m in rows],
        "length": [m["completion/length_mean"] for m in rows],
        "lr": [m["lr"] for m in rows],
        "grad_norm": [m["grad_norm"] for m in rows],
    }


def run_trl(spec: dict, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1kit.data.source import load_split
    from r1kit.data.templates import render_prompt
    from r1kit.data.tasks.arithmetic import ArithmeticTask
    from r1kit.models.load import load_tokenizer
    from r1kit.rewards.format import format_reward
    from r1kit.train.optim import build_optimizer, build_scheduler

    cfg = grpo_config(spec["start"], out, spec["seed"], spec["steps"], spec["kl_ratio"])
    task = ArithmeticTask(**cfg.data.task_params)
    tok = load_tokenizer(spec["start"])  # the tokenizer object r1kit's recipe uses
    tok.padding_side = "left"
    rows = load_split(cfg.data, "train")
    dataset = Dataset.from_list([{"prompt": render_prompt(r["prompt"], cfg.data.template, tok), "answer": r["answer"]} for r in rows])
    args = GRPOConfig(
        output_dir=str(out / "trl"),
        max_steps=cfg.grpo.steps,
        per_device_train_batch_size=cfg.grpo.prompts_per_step * cfg.grpo.group_size,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        num_generations=cfg.grpo.group_size,
        max_completion_length=cfg.sampling.max_new_tokens,
        temperature=cfg.sampling.temperature,
        top_p=1.0,
        top_k=0,
        beta=cfg.grpo.beta,
        use_bias_correction_kl=cfg.grpo.kl_ratio,  # TRL's default is True; r1kit's kl_ratio is off by default
        num_iterations=cfg.grpo.num_iterations,
        loss_type="grpo",
        scale_rewards="group",
        reward_weights=[1.0, 0.5],
        learning_rate=cfg.optim.lr,  # the optimizer and schedule themselves are r1kit's (below)
        max_grad_norm=cfg.optim.max_grad_norm,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=spec["seed"],
        **TRL_QUIET,
    )
    seen: dict[str, list[float]] = {"step_s": [], "reward": [], "accuracy": [], "format": [], "length": [], "lr": [], "grad_norm": []}

    def arithmetic(completions, answer, **columns):
        return task.reward(completions, answer, strict=True)

    def r1_format(completions, **columns):
        return format_reward(completions)

    class StepLog(TrainerCallback):
        """Each step's wall time and its rewards, read from the trainer's metric buffer (train()
        clears it when it finishes)."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            seen["lr"].append(optimizer.param_groups[0]["lr"])  # the lr this step's update uses

        def on_step_end(self, args, state, control, **kwargs):
            seen["step_s"].append(time.perf_counter() - self.t0)
            m = trainer._metrics["train"]
            seen["reward"].append(m["reward"][-1])
            seen["accuracy"].append(m["rewards/arithmetic/mean"][-1])
            seen["format"].append(m["rewards/r1_format/mean"][-1])
            seen["length"].append(m["completions/mean_length"][-1])

    # The same AdamW and warm-up as r1kit's (transformers' warm-up starts at lr 0, r1kit's at lr / 5).
    model = AutoModelForCausalLM.from_pretrained(spec["start"], dtype=torch.float32)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    schedule = build_scheduler(optimizer, cfg.optim, cfg.grpo.steps)
    trainer = GRPOTrainer(model=model, reward_funcs=[arithmetic, r1_format], args=args, train_dataset=dataset, processing_class=tok,
                          callbacks=[StepLog()], optimizers=(optimizer, schedule))
    clip = trainer._clip_grad_norm

    def clip_and_record(model):  # the gradient norm before clipping, as r1kit logs it
        norm = clip(model)
        seen["grad_norm"].append(float(norm))
        return norm

    trainer._clip_grad_norm = clip_and_record
    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    model_dir = out / "trl-model"
    trainer.save_model(str(model_dir))
    tok.save_pretrained(model_dir)
    return {"model": str(model_dir), "wall_s": wall, **seen}


def worker(tool: str, spec_json: str, result: str) -> None:
    spec = json.loads(spec_json)
    import torch

    torch.set_num_threads(THREADS)
    out = (run_r1kit if tool == "r1kit" else run_trl)(spec, Path(spec["out"]))
    Path(result).write_text(json.dumps(out))


def train(tool: str, spec: dict) -> dict:
    result = Path(spec["out"]) / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    set_waits(env, "PASSIVE", str(SPIN_COUNT))  # the waits r1kit's command line sets, for both tools
    proc = subprocess.run([sys.executable, __file__, "--worker", tool, json.dumps(spec), str(result)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{tool} (seed {spec['seed']}) failed with exit code {proc.returncode}; its output is above")
    return json.loads(result.read_text())


def heldout(path: str, k: int, rows: list[dict]) -> dict:
    """Greedy accuracy and pass@1 over k samples on the held-out `rows`, scored by the task."""
    from dataclasses import replace

    from r1kit.eval.evaluate import evaluate
    from r1kit.eval.scoring import scorer_for
    from r1kit.models.load import load_model, load_tokenizer

    cfg = grpo_config(path, Path("."), 0, 1)
    score, extract = scorer_for(cfg.data)
    model, tok = load_model(path), load_tokenizer(path)
    return evaluate(model, tok, rows, score, extract, replace(cfg.eval, k=k, temperature=1.0), cfg.data.template)


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--k", type=int, default=16, help="samples per held-out prompt for pass@1")
    ap.add_argument("--kl-ratio", action="store_true", help="both tools weight the KL term by the importance ratio (r1kit's grpo.kl_ratio, TRL's use_bias_correction_kl)")
    ap.add_argument("--out", default="runs/learning-vs-trl")
    ap.add_argument("--worker", nargs=3, metavar=("TOOL", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    set_waits(os.environ, "PASSIVE", str(SPIN_COUNT))
    import torch

    from r1kit.config import load
    from r1kit.demo import DEFAULT_CONFIG
    from r1kit.recipes.pipeline import PipelineConfig, run_pipeline

    torch.set_num_threads(THREADS)
    out = Path(args.out)
    demo = load(DEFAULT_CONFIG, [f"output_dir={out}"], PipelineConfig)
    demo.stages = [s for s in demo.stages if s.name in ("base", "sft")]
    demo.report = False
    stages = json.loads((run_pipeline(demo) / "stages.json").read_text())
    start = str(Path(stages["sft"]) / "model")

    from r1kit.data.source import load_split

    test_rows = load_split(grpo_config(start, out, 0, 1).data, "test")
    t0 = time.perf_counter()
    before = heldout(start, args.k, test_rows)
    runs: dict[str, list[dict]] = {"r1kit": [], "trl": []}
    for seed in args.seeds:
        for tool in runs:
            spec = {"start": start, "seed": seed, "steps": args.steps, "kl_ratio": args.kl_ratio, "out": str((out / f"{tool}-seed{seed}").resolve())}
            Path(spec["out"]).mkdir(parents=True, exist_ok=True)
            res = train(tool, spec)
            res["seed"] = seed
            res["after"] = heldout(res["model"], args.k, test_rows)
            runs[tool].append(res)
            print(f"  {tool} seed {seed}: {res['wall_s']:.0f} s, reward {res['reward'][0]:.3f} -> {res['reward'][-1]:.3f}, "
                  f"held-out pass@1 {before['pass@1']:.3f} -> {res['after']['pass@1']:.3f}", file=sys.stderr, flush=True)

    def first_last(xs: list[float], n: int = 5) -> tuple[float, float]:
        return statistics.mean(xs[:n]), statistics.mean(xs[-n:])

    print(f"GRPO from the demo's SFT model ({args.steps} steps, 8 prompts x 8 samples, lr 1e-4, beta 0.04{', KL x ratio' if args.kl_ratio else ''}, fp32, {THREADS} threads, "
          f"torch {torch.__version__}); held-out: {len(test_rows)} prompts, pass@1 over k={args.k} samples at T=1")
    print(f"start: greedy {before['greedy_acc']:.3f}, pass@1 {before['pass@1']:.3f}")
    head = f"{'tool':<6} {'seed':>4} {'s/step':>7} {'reward first5':>13} {'last5':>6} {'acc first5':>10} {'last5':>6} {'format last5':>12} {'len last5':>9} {'greedy':>7} {'pass@1':>7}"
    print(head)
    print("-" * len(head))
    summary = {}
    for tool, rs in runs.items():
        for r in rs:
            (r0, r1), (a0, a1) = first_last(r["reward"]), first_last(r["accuracy"])
            print(f"{tool:<6} {r['seed']:>4} {statistics.median(r['step_s']):>7.3f} {r0:>13.3f} {r1:>6.3f} {a0:>10.3f} {a1:>6.3f} {first_last(r['format'])[1]:>12.3f} "
                  f"{first_last(r['length'])[1]:>9.1f} {r['after']['greedy_acc']:>7.3f} {r['after']['pass@1']:>7.3f}")
        summary[tool] = {
            "reward_last5": [first_last(r["reward"])[1] for r in rs],
            "greedy": [r["after"]["greedy_acc"] for r in rs],
            "pass@1": [r["after"]["pass@1"] for r in rs],
            "step_s": [statistics.median(r["step_s"]) for r in rs],
        }
    print()
    for tool, s in summary.items():
        print(f"{tool:<6} over {len(s['pass@1'])} seeds: training reward (last 5 steps) {spread(s['reward_last5'])}, held-out greedy {spread(s['greedy'])}, "
              f"pass@1 {before['pass@1']:.3f} -> {spread(s['pass@1'])}, median s/step {spread(s['step_s'])}")
    gap = statistics.mean(summary["r1kit"]["pass@1"]) - statistics.mean(summary["trl"]["pass@1"])
    print(f"held-out pass@1, r1kit minus TRL: {gap:+.3f}; {time.perf_counter() - t0:.0f} s")
    (out / "learning_vs_trl.json").write_text(json.dumps({"before": before, "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
