"""Does GRPO learn? The numbers in docs/BENCHMARKS.md, "GRPO learning on the demo's checkpoints".

Three measurements on the tiny arithmetic task, all on CPU:

1. From the demo's cold-start SFT checkpoint, GRPO (task reward + 0.5 x format) for a fixed wall-
   clock budget: held-out pass@1 (mean over k samples at temperature 1) before and after.
2. R1-Zero: GRPO straight from the pretrained base (no SFT): the format reward over steps, against
   its maximum of 1.
   It also samples both models on the held-out split and sorts the completions by how they reason:
   worked (every partial result, `3+4=7 7+5=12`), terse (one step, `3+4+5=12`) or neither, with
   the accuracy of each -- the demo's cold start teaches both styles, GRPO chooses by reward.
3. Seen prompts: GRPO from the same SFT checkpoint on a fixed pool of 16 training prompts (all 16
   in every step), then pass@1 over 32 samples on those 16 prompts and on the held-out split,
   before and after. It separates "the update raises the reward of what it trains on" from "that
   gain carries over to new prompts".

The base and SFT stages come from the demo pipeline (run or reused), so this script measures the
same checkpoints `make demo` builds.

    python benchmarks/grpo_learning.py [--out runs/learning] [key=value overrides of the GRPO stage]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from r1kit.config import load
from r1kit.data.source import load_split
from r1kit.data.templates import extract_think, render_prompt
from r1kit.demo import DEFAULT_CONFIG
from r1kit.eval.evaluate import evaluate
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes import grpo
from r1kit.recipes.grpo import GRPOConfig
from r1kit.recipes.pipeline import PipelineConfig, run_pipeline
from r1kit.report.logger import read_metrics
from r1kit import accel
from r1kit.rollout import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning")
    ap.add_argument("--zero-steps", type=int, default=60, help="GRPO steps of the R1-Zero run")
    ap.add_argument("--seen-steps", type=int, default=20, help="GRPO steps of the seen-prompts run")
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
    heldout = load_split(grpo_cfg.data, "test")
    results["styles"] = {"sft": reasoning_styles(sft, heldout, grpo_cfg), "grpo": reasoning_styles(run / "model", heldout, grpo_cfg)}

    zero_cfg = load(Path("configs/tiny-arith/grpo.yaml"), [f"model.path={base}", f"run.output_dir={args.out}", "run.name=r1-zero", "run.progress=false", f"grpo.steps={args.zero_steps}", "run.eval_every=0"], GRPOConfig)
    t0 = time.perf_counter()
    run = grpo.train(zero_cfg)
    zero_wall = time.perf_counter() - t0
    fmt = [r["reward/format/mean"] for r in read_metrics(run) if "reward/format/mean" in r]
    results["r1_zero"] = {"wall_s": zero_wall, "steps": len(fmt), "format_first5": sum(fmt[:5]) / 5, "format_last5": sum(fmt[-5:]) / 5, "format_max": 1.0}

    results["seen"] = seen_prompts(sft, args)

    b, a = results["from_sft"]["before"], results["from_sft"]["after"]
    print(f"GRPO from SFT ({results['from_sft']['steps']} steps, {wall:.0f} s): held-out pass@1 {b['pass@1']:.3f} -> {a['pass@1']:.3f} "
          f"({100 * (a['pass@1'] - b['pass@1']):+.1f} points); greedy {b['greedy_acc']:.3f} -> {a['greedy_acc']:.3f}; "
          f"maj@k {b.get('maj@4', float('nan')):.3f} -> {a.get('maj@4', float('nan')):.3f}")
    for name, st in results["styles"].items():
        print(f"  {name:4s} samples: " + ", ".join(f"{style} {v['share']:.0%} (accuracy {v['accuracy']:.2f})" for style, v in st.items() if v["n"]))
    z = results["r1_zero"]
    print(f"R1-Zero from base ({z['steps']} steps, {zero_wall:.0f} s): format reward {z['format_first5']:.3f} (first 5 steps) -> "
          f"{z['format_last5']:.3f} (last 5 steps), max 1.0")
    sp = results["seen"]
    print(f"Seen prompts ({sp['steps']} steps on {sp['pool']} fixed prompts, {sp['wall_s']:.0f} s): pass@1 on them {sp['seen_before']:.3f} -> "
          f"{sp['seen_after']:.3f}; held-out pass@1 {sp['heldout_before']:.3f} -> {sp['heldout_after']:.3f}")
    (Path(args.out) / "learning.json").write_text(json.dumps(results, indent=2))


def reasoning_styles(path: Path, rows: list[dict], cfg: GRPOConfig, k: int = 8) -> dict:
    """Share and accuracy of worked / terse / other completions, k samples per prompt at T=1."""
    tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
    score, _ = scorer_for(cfg.data)
    ids = [tokenizer(render_prompt(r["prompt"], cfg.data.template, tokenizer), add_special_tokens=False)["input_ids"] for r in rows]
    params = SamplingParams(temperature=1.0, max_new_tokens=cfg.sampling.max_new_tokens, n=k, seed=1, stop=list(cfg.sampling.stop))
    out = accel.rollout_engine(model, tokenizer).generate(ids, params)
    texts = [tokenizer.decode(c[m.bool()]) for c, m in zip(out.completion_ids, out.completion_mask)]
    rows_k = [r for r in rows for _ in range(k)]
    correct = score(texts, **{c: [r.get(c) for r in rows_k] for c in rows[0] if c != "prompt"})
    tally = {s: {"n": 0, "right": 0} for s in ("worked", "terse", "other")}
    for text, ok in zip(texts, correct):
        think = extract_think(text)
        steps = think.count("=") if think is not None else 0
        style = "worked" if steps >= 2 else "terse" if steps == 1 else "other"
        tally[style]["n"] += 1
        tally[style]["right"] += int((ok or 0) >= 1)
    return {s: {"n": t["n"], "share": t["n"] / len(texts), "accuracy": t["right"] / max(1, t["n"])} for s, t in tally.items()}


def seen_prompts(sft: Path, args: argparse.Namespace, pool: int = 16, k: int = 32) -> dict:
    """GRPO on a fixed pool of training prompts; pass@1 on the pool and on the test split."""
    cfg = load(Path("configs/tiny-arith/grpo.yaml"), [f"model.path={sft}", f"run.output_dir={args.out}", "run.name=grpo-seen", "run.progress=false",
                                                      f"data.train_size={pool}", f"grpo.prompts_per_step={pool}", f"grpo.steps={args.seen_steps}",
                                                      "run.eval_every=0", "eval_before=false", "eval.k=0", *args.overrides], GRPOConfig)
    seen, heldout = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    score, extract = scorer_for(cfg.data)
    eval_args = replace(cfg.eval, k=k)

    def pass1(path: Path, rows: list[dict]) -> float:
        tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
        return evaluate(model, tokenizer, rows, score, extract, eval_args, cfg.data.template)["pass@1"]

    before = pass1(sft, seen), pass1(sft, heldout)
    t0 = time.perf_counter()
    run = grpo.train(cfg)
    wall = time.perf_counter() - t0
    after = pass1(run / "model", seen), pass1(run / "model", heldout)
    return {"pool": pool, "steps": cfg.grpo.steps, "k": k, "wall_s": wall, "seen_before": before[0], "seen_after": after[0],
            "heldout_before": before[1], "heldout_after": after[1]}


if __name__ == "__main__":
    main()
