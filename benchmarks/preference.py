"""Preference learning on the tiny arithmetic task, end to end on CPU: reward models under label
noise, PPO with a rule reward and with a learned reward model, and DPO.

Starting point: the demo's base model (`r1kit.recipes.pretrain` with the settings of the built-in
demo config, so its cache is shared with `r1kit demo`) and its cold-start SFT model (reused from
the demo's run directory when the demo has finished it, else trained here with the demo's SFT
settings). Then, on the built-in arithmetic preference pairs (chosen: the correct worked solution;
rejected: an arithmetic slip, missing tags or a rambling chain):

1. reward models (Bradley-Terry) trained on clean labels and with 10% / 30% of the labels flipped:
   held-out pairwise accuracy against the true labels, overall and per rejected kind;
2. PPO from the SFT model with the task's rule reward, and with the clean-label reward model
   (`model:PATH`): test pass@1 (over eval.k samples) and greedy accuracy before -> after (the
   SFT model is evaluated once, by the first PPO run, with the same seed and settings);
3. DPO (sigmoid) from the SFT model: held-out preference accuracy before -> after (implicit reward,
   and the policy's own log-likelihood preference) and task accuracy before -> after.

    python benchmarks/preference.py [--out runs/bench-preference] [--threads 1] [--quick]

Sizes: reward models 100 steps x 32 pairs, PPO 40 steps x 32 prompts (2 epochs x 2 mini-batches),
DPO 60 steps x 32 pairs, 80 held-out pairs and test problems; about 5 minutes on one CPU core once
the base and SFT models exist. With 80 held-out items an accuracy moves by about 0.03 per 2-3 items.

One torch thread by default: on a machine shared with other jobs, two OpenMP threads that wait on
each other made every step about ten times slower than one.

`--quick` shrinks every stage (a smoke run of the script, not a measurement). Each stage's run
directory (metrics.jsonl, eval.json, model) is kept under --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from r1kit.config import apply_override, from_dict, load
from r1kit.demo import DEFAULT_CONFIG
from r1kit.recipes import dpo, ppo, pretrain, reward_model, sft
from r1kit.recipes.pipeline import PipelineConfig, stage_config
from r1kit.report.logger import console


def build(cls: type, shared: dict[str, Any], overrides: list[str]) -> Any:
    """A recipe config from the demo's shared sections (data, eval) and key=value overrides."""
    raw = {k: copy.deepcopy(v) for k, v in shared.items() if k in cls.__dataclass_fields__}
    for item in overrides:
        apply_override(raw, item)
    return from_dict(cls, raw)


def base_and_sft(pipe: PipelineConfig, out: Path, threads: int) -> tuple[Path, Path]:
    """The demo's base model (from the shared pretrain cache) and its SFT model."""
    stages = {s.name: s for s in pipe.stages}
    base_config = stage_config(pipe, stages["base"], {})
    # The thread count is not part of the cache key: the demo's cached base is reused either way.
    base_config.run.progress, base_config.run.threads = False, threads
    base = pretrain.train(base_config)  # cached under .cache/r1kit, keyed by the demo's settings
    done = Path(pipe.output_dir) / "sft" / "DONE"
    candidates = [Path(done.read_text().strip() or done.parent)] if done.is_file() else []
    for sft_dir in [*candidates, out / "sft"]:
        if _finished_from(sft_dir, base / "model"):
            console.print(f"sft: reusing {sft_dir}")
            return base, sft_dir
    config = stage_config(pipe, stages["sft"], {"base": base})
    config.run.output_dir, config.run.name, config.run.progress, config.run.threads = str(out), "sft", False, threads
    return base, sft.train(config)


def _finished_from(run_dir: Path, base_model: Path) -> bool:
    """True when run_dir holds a finished run that started from base_model (the same base)."""
    if not ((run_dir / "model" / "config.json").is_file() and (run_dir / "eval.json").is_file()):
        return False
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return Path(config["model"]["path"]).resolve() == base_model.resolve()


def run_rm(model: Path, name: str, flip: float, steps: int, shared: dict, common: list[str]) -> dict:
    config = build(reward_model.RewardModelConfig, shared, common + [f"model.path={model}", f"run.name={name}", f"pref.flip_fraction={flip}", f"steps={steps}",
                                  "batch_size=32", "data.train_size=2000", "data.test_size=80", "optim.lr=1e-3", "optim.warmup_steps=5"])  # fmt: skip
    run_dir = reward_model.train(config)
    return {"run": run_dir, **json.loads((run_dir / "eval.json").read_text())}


def run_ppo(model: Path, name: str, reward: str, steps: int, shared: dict, common: list[str], before: dict | None = None) -> dict:
    """PPO from `model`; `before` (the same evaluation of the same model) saves evaluating it again."""
    config = build(ppo.PPOConfig, shared, common + [
        f"model.path={model}", f"run.name={name}", f"rewards=['{reward}']", f"ppo.steps={steps}", "ppo.prompts_per_step=32",
        "ppo.ppo_epochs=2", "ppo.mini_batches=2", "ppo.kl_coef=0.02", "ppo.value_lr=1e-3", "optim.lr=1e-4",
        f"sampling.max_new_tokens={config_eval_tokens(shared)}", "sampling.stop=['</answer>']", f"eval_before={before is None}",
    ])  # fmt: skip
    run_dir = ppo.train(config)
    results = json.loads((run_dir / "eval.json").read_text())
    return {"run": run_dir, "before": results.get("before", before), "after": results["after"]}


def run_dpo(model: Path, steps: int, shared: dict, common: list[str]) -> dict:
    config = build(dpo.DPOConfig, shared, common + [
        f"model.path={model}", "run.name=dpo", f"steps={steps}", "batch_size=32", f"data.train_size={32 * steps}", "data.test_size=80",
        "beta=0.1", "optim.lr=1e-4", "optim.warmup_steps=5", f"task_eval_size={shared['data'].get('test_size', 100)}",
    ])  # fmt: skip
    run_dir = dpo.train(config)
    return {"run": run_dir, **json.loads((run_dir / "eval.json").read_text())}


def config_eval_tokens(shared: dict) -> int:
    return int(shared.get("eval", {}).get("max_new_tokens", 48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-preference", help="parent of the stages' run directories")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="tiny stages: check the script runs, measure nothing")
    args = parser.parse_args()
    out = Path(args.out)
    steps = {"rm": 100, "ppo": 40, "dpo": 60} if not args.quick else {"rm": 3, "ppo": 2, "dpo": 2}
    pipe = load(DEFAULT_CONFIG, [], PipelineConfig)
    shared = {"data": pipe.defaults.get("data", {}), "eval": pipe.defaults.get("eval", {})}  # the demo's task and evaluation
    common = [f"run.output_dir={out}", f"run.threads={args.threads}", "run.progress=false", "model.device=cpu"]
    t0 = time.perf_counter()
    timings = {}
    _, sft_dir = base_and_sft(pipe, out, args.threads)
    sft_model = sft_dir / "model"
    timings["base+sft"] = time.perf_counter() - t0

    rms = {}
    for flip in (0.0, 0.1, 0.3):
        t = time.perf_counter()
        rms[flip] = run_rm(sft_model, f"rm-flip{int(flip * 100)}", flip, steps["rm"], shared, common)
        timings[f"rm flip {flip:.0%}"] = time.perf_counter() - t
    t = time.perf_counter()
    ppo_rule = run_ppo(sft_model, "ppo-rule", "arithmetic", steps["ppo"], shared, common)
    timings["ppo rule"] = time.perf_counter() - t
    t = time.perf_counter()
    ppo_rm = run_ppo(sft_model, "ppo-rm", f"model:{rms[0.0]['run'] / 'model'}", steps["ppo"], shared, common, ppo_rule["before"])
    timings["ppo rm"] = time.perf_counter() - t
    t = time.perf_counter()
    dpo_run = run_dpo(sft_model, steps["dpo"], shared, common)
    timings["dpo"] = time.perf_counter() - t

    wide = Console(width=140, highlight=False)  # tables, unwrapped in logs
    table = Table(title=f"reward model ({steps['rm']} steps x 32 pairs): held-out pairwise accuracy (true labels)")
    kinds = sorted(k for k in rms[0.0]["after"] if k.startswith("accuracy/"))
    for col in ("training labels", "before", "after", *(k.split("/")[1] for k in kinds), "mean margin"):
        table.add_column(col, justify="right")
    for flip, r in rms.items():
        a = r["after"]
        table.add_row(f"{flip:.0%} flipped", f"{r['before']['accuracy']:.3f}", f"{a['accuracy']:.3f}", *(f"{a[k]:.3f}" for k in kinds), f"{a['margin']:.2f}")
    wide.print(table)

    table = Table(title=f"PPO from the SFT model, {steps['ppo']} steps x 32 prompts: test split ({shared['data'].get('test_size', 100)} problems)")
    for col in ("reward", "pass@1 before", "pass@1 after", "greedy before", "greedy after", "mean length after"):
        table.add_column(col, justify="right")
    for name, r in (("rule (arithmetic)", ppo_rule), ("learned RM (clean labels)", ppo_rm)):
        b, a = r["before"], r["after"]
        table.add_row(name, f"{b['pass@1']:.3f}", f"{a['pass@1']:.3f}", f"{b['greedy_acc']:.3f}", f"{a['greedy_acc']:.3f}", f"{a['length_mean']:.1f}")
    wide.print(table)

    table = Table(title=f"DPO (sigmoid, beta 0.1) from the SFT model, {steps['dpo']} steps x 32 pairs")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    b, a = dpo_run["before"], dpo_run["after"]
    for key, label in (("pref/accuracy", "held-out pref accuracy (implicit reward)"), ("pref/logp_accuracy", "held-out pref accuracy (log-likelihood)"),
                       ("greedy_acc", "task greedy accuracy"), ("pass@1", "task pass@1")):  # fmt: skip
        table.add_row(label, f"{b[key]:.3f}", f"{a[key]:.3f}")
    wide.print(table)
    console.print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
