"""Does GRPO learn? The numbers quoted in the README's "GRPO learning" section.

Two measurements on the tiny arithmetic task, both on CPU:

1. From the demo's cold-start SFT checkpoint, GRPO (task reward + 0.5 x format) for a fixed wall-
   clock budget: held-out pass@1 (mean over k samples at temperature 1) before and after.
2. R1-Zero: GRPO straight from the pretrained base (no SFT): the format reward over steps, against
   its maximum of 1.

The base and SFT stages come from the demo pipeline (run or reused), so this script measures the
same checkpoints `make demo` builds.

    python benchmarks/grpo_learning.py [--out runs/learning] [key=value overrides of the GRPO stage]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from r1kit.config import load
from r1kit.demo import DEFAULT_CONFIG
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.recipes.pipeline import PipelineConfig, StageSpec, run_pipeline
from r1kit.report.logger import read_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning")
    ap.add_argument("--zero-steps", type=int, default=60, help="GRPO steps of the R1-Zero run")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    # Base and SFT exactly as the demo builds them (the base comes from the cache).
    demo = load(DEFAULT_CONFIG, [f"output_dir={args.out}"], PipelineConfig)
    demo.stages = [s for s in demo.stages if s.name in ("base", "sft")]
    demo.report = False
    out = run_pipeline(demo)
    stages = json.loads((out / "stages.json").read_text())
    base, sft = Path(stages["base"]) / "model", Path(stages["sft"]) / "model"

    results = {}
    grpo_cfg = load(Path("configs/tiny-arith/grpo.yaml"), [f"model.path={sft}", f"run.output_dir={args.out}", "run.name=grpo-from-sft", "run.progress=false", *args.overrides], GRPOConfig)
    t0 = time.perf_counter()
    run = grpo.train(grpo_cfg)
    wall = time.perf_counter() - t0
    ev = json.loads((run / "eval.json").read_text())
    results["from_sft"] = {"wall_s": wall, "steps": grpo_cfg.grpo.steps, "before": ev["before"], "after": ev["after"]}

    zero_cfg = load(Path("configs/tiny-arith/grpo.yaml"), [f"model.path={base}", f"run.output_dir={args.out}", "run.name=r1-zero", "run.progress=false", f"grpo.steps={args.zero_steps}", "run.eval_every=0"], GRPOConfig)
    t0 = time.perf_counter()
    run = grpo.train(zero_cfg)
    zero_wall = time.perf_counter() - t0
    fmt = [r["reward/format/mean"] for r in read_metrics(run) if "reward/format/mean" in r]
    results["r1_zero"] = {"wall_s": zero_wall, "steps": len(fmt), "format_first5": sum(fmt[:5]) / 5, "format_last5": sum(fmt[-5:]) / 5, "format_max": 1.0}

    b, a = results["from_sft"]["before"], results["from_sft"]["after"]
    print(f"GRPO from SFT ({results['from_sft']['steps']} steps, {wall:.0f} s): held-out pass@1 {b['pass@1']:.3f} -> {a['pass@1']:.3f} "
          f"({100 * (a['pass@1'] - b['pass@1']):+.1f} points); greedy {b['greedy_acc']:.3f} -> {a['greedy_acc']:.3f}; "
          f"maj@k {b.get('maj@4', float('nan')):.3f} -> {a.get('maj@4', float('nan')):.3f}")
    z = results["r1_zero"]
    print(f"R1-Zero from base ({z['steps']} steps, {zero_wall:.0f} s): format reward {z['format_first5']:.3f} (first 5 steps) -> "
          f"{z['format_last5']:.3f} (last 5 steps), max 1.0")
    (Path(args.out) / "learning.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
