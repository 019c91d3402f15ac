"""Outcome vs process supervision in GRPO on the tiny arithmetic task, over seeds.

From the demo's cold-start SFT model (`r1kit demo` writes runs/demo/sft/model):

1. a process reward model (`configs/tiny-arith/prm.yaml`: the SFT model's samples, each `a+b=c`
   partial sum a step, labelled by the task's step checker), trained once (seed 0): held-out step
   accuracy and AUROC, and its best-of-8 table;
2. for each seed, GRPO from the SFT model (`configs/tiny-arith/grpo.yaml`: 40 steps of 8 prompts
   x 8 samples) with
   - outcome rewards: the task's answer check (strict: inside <answer>) + 0.5 x format, as R1-Zero;
   - process rewards: the PRM's step rewards (DeepSeekMath's process supervision) + 0.5 x format;
   held-out pass@1 (over eval.k samples) and greedy accuracy after; the PRM's mean weakest-step
   score against the verifier's accuracy on the last training step's samples, and the share of
   steps the task's checker finds right (the outcome runs carry the PRM at weight 0, which changes
   no advantage, to log the same): a PRM that is being gamed shows a score that rises while the
   verified accuracy does not.

Printed as mean ± sd over the seeds (sample sd). Each run's directory is kept under --out.

    python benchmarks/process_vs_outcome.py [--sft runs/demo/sft/model] [--seeds 3] [--out runs/bench-process]
                                            [--threads 1] [--quick] [key=value overrides of both GRPO runs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from r1kit.config import load
from r1kit.recipes import grpo, prm
from r1kit.report.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]
QUICK_PRM = ["data.train_size=20", "data.test_size=8", "steps=5", "best_of_n.n=2"]
QUICK_GRPO = ["grpo.steps=2", "data.test_size=8", "eval.k=1"]


def train_prm(args) -> Path:
    over = [f"model.path={args.sft}", f"run.output_dir={args.out}", "run.name=prm", f"run.threads={args.threads}", "run.progress=false"]
    return prm.train(load(ROOT / "configs/tiny-arith/prm.yaml", over + (QUICK_PRM if args.quick else [])))


def train_grpo(args, name: str, rewards: str, seed: int) -> Path:
    over = [f"model.path={args.sft}", f"run.output_dir={args.out}", f"run.name={name}-seed{seed}", f"run.seed={seed}", f"rewards={rewards}",
            f"run.threads={args.threads}", "run.progress=false", "run.eval_every=0", "eval_before=false"]  # fmt: skip
    return grpo.train(load(ROOT / "configs/tiny-arith/grpo.yaml", over + (QUICK_GRPO if args.quick else []) + args.overrides))


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{values[0]:.3f}" if len(values) == 1 else f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", default="runs/demo/sft/model", help="the cold-start SFT model both GRPO runs start from")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/bench-process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: on a shared machine two threads wait on each other)")
    parser.add_argument("--quick", action="store_true", help="tiny runs: check the script, measure nothing")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of both GRPO runs")
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()
    prm_dir = train_prm(args)
    prm_results = json.loads((prm_dir / "eval.json").read_text())
    prm_s = time.perf_counter() - start
    kinds = {
        # The PRM at weight 0 changes no advantage; it logs the PRM-vs-verifier metrics for these runs too.
        "outcome": f"[{{name: arithmetic, kwargs: {{strict: true}}}}, {{name: format, weight: 0.5}}, {{name: 'prm:{prm_dir / 'model'}', weight: 0}}]",
        "process": f"['prm:{prm_dir / 'model'}', {{name: format, weight: 0.5}}]",
    }
    keys = ("pass@1", "greedy_acc", "prm/score", "prm/verified_acc", "prm/step_verified")
    table = {kind: {k: [] for k in keys} for kind in kinds}
    seconds = {kind: [] for kind in kinds}
    for seed in range(args.seeds):
        for kind, rewards in kinds.items():
            t0 = time.perf_counter()
            run_dir = train_grpo(args, kind, rewards, seed)
            seconds[kind].append(time.perf_counter() - t0)
            after = json.loads((run_dir / "eval.json").read_text())["after"]
            last = [r for r in read_metrics(run_dir) if "loss/policy" in r][-1]
            for k in keys:
                value = after.get(k, last.get(k))
                if value is not None:
                    table[kind][k].append(float(value))
    out = Table(title=f"GRPO from the SFT model, {args.seeds} seed(s), mean ± sd; PRM columns: the last training step's samples")
    out.add_column("rewards")
    for header in ("pass@1", "greedy", "PRM score", "verified", "steps right"):
        out.add_column(header, justify="right")
    out.add_column("s/run", justify="right")
    for kind in kinds:
        out.add_row(kind, *(cell(table[kind][k]) for k in keys), f"{statistics.fmean(seconds[kind]):.0f}")
    after = prm_results["after"]
    console.print(f"PRM: held-out step accuracy {after['step_accuracy']:.3f}, AUROC {after['auroc']:.3f} ({after['steps']:.0f} steps), trained in {prm_s:.0f} s")
    console.print(prm.best_of_n_table(prm_results["best_of_n"], 8 if not args.quick else 2))
    console.print(out)
    summary = {"prm": prm_results, "grpo": table, "seconds": seconds}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
