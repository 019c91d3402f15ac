"""Preference learning on the tiny arithmetic task, end to end on CPU: reward models under label
noise, PPO with a rule reward and with a learned reward model, and DPO.

Starting point: the demo's base model (`r1kit.recipes.pretrain` with the settings of the built-in
demo config, so its cache is shared with `r1kit demo`) and its cold-start SFT model (reused from
the demo's run directory when the demo has finished it, else trained here with the demo's SFT
settings). Then, on the built-in arithmetic preference pairs (chosen: the correct worked solution;
rejected: an arithmetic slip, missing tags, a rambling chain, or the right answer with no working):

1. reward models (Bradley-Terry) trained on clean labels and with 10% / 30% of the labels flipped:
   held-out pairwise accuracy against the true labels, overall and per rejected kind;
2. PPO from the SFT model with the task's rule reward, and with the clean-label reward model
   (`model:PATH`) at each --rm-kl coefficient of the per-token KL penalty: test pass@1 (over
   eval.k samples) and greedy accuracy before -> after, and the KL at the end (the SFT model is
   evaluated once, by the first PPO run, with the same seed and settings). A learned reward model
   can be over-optimised (Gao et al. 2022): with too small a KL penalty the policy finds what the
   reward model scores highly but the task does not;
3. DPO (sigmoid) from the SFT model, with RPO's NLL term on the chosen completion (rpo_alpha):
   held-out preference accuracy before -> after (implicit reward, and the policy's own
   log-likelihood preference), the held-out chosen completions' per-token NLL and task accuracy
   before -> after, for each --beta x --rpo-alpha given (one run by default).

    python benchmarks/preference.py [--out runs/bench-preference] [--threads 1] [--seed 0] [--quick]
                                    [--only rm|ppo|dpo ...] [--beta 0.5 ...] [--rpo-alpha 1.0 ...]
                                    [--rule-kl 0.02] [--rm-kl 0.02 0.1 0.3 ...]

Sizes: reward models 100 steps x 32 pairs, PPO 40 steps x 32 prompts (2 epochs x 2 mini-batches),
DPO 60 steps x 32 pairs, 80 held-out pairs and test problems; about 5 minutes on one CPU core once
the base and SFT models exist (each extra DPO setting about a minute more). With 80 held-out items
an accuracy moves by about 0.03 per 2-3 items.

`--only` runs some stages (PPO brings the clean-label reward model it needs). The DPO defaults
(beta 0.5, rpo_alpha 1.0) were chosen with `--only dpo --beta 0.1 0.5 --rpo-alpha 0 0.5 1 2`: plain
DPO at beta 0.1 cut task accuracy (greedy 0.613 -> 0.400 from the demo's earlier SFT model) while
doubling the chosen answers' NLL; with the NLL term, and more so at beta 0.5, task accuracy stayed
within noise (docs/BENCHMARKS.md, "Preference learning").

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
from r1kit.report.logger import console, read_metrics


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
    candidates = [Path(json.loads(done.read_text())["run_dir"])] if done.is_file() else []  # the pipeline's DONE record
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


def run_ppo(model: Path, name: str, reward: str, steps: int, kl_coef: float, shared: dict, common: list[str], before: dict | None = None) -> dict:
    """PPO from `model`; `before` (the same evaluation of the same model) saves evaluating it again."""
    config = build(ppo.PPOConfig, shared, common + [
        f"model.path={model}", f"run.name={name}", f"rewards=['{reward}']", f"ppo.steps={steps}", "ppo.prompts_per_step=32",
        "ppo.ppo_epochs=2", "ppo.mini_batches=2", f"ppo.kl_coef={kl_coef}", "ppo.value_lr=1e-3", "optim.lr=1e-4",
        f"sampling.max_new_tokens={config_eval_tokens(shared)}", "sampling.stop=['</answer>']", f"eval_before={before is None}",
    ])  # fmt: skip
    run_dir = ppo.train(config)
    results = json.loads((run_dir / "eval.json").read_text())
    kl = [r["objective/kl"] for r in read_metrics(run_dir) if "objective/kl" in r]
    return {"run": run_dir, "before": results.get("before", before), "after": results["after"], "kl_end": sum(kl[-5:]) / max(1, len(kl[-5:]))}


def run_dpo(model: Path, steps: int, beta: float, rpo_alpha: float, shared: dict, common: list[str]) -> dict:
    config = build(dpo.DPOConfig, shared, common + [
        f"model.path={model}", f"run.name=dpo-beta{beta:g}-rpo{rpo_alpha:g}", f"steps={steps}", "batch_size=32", f"data.train_size={32 * steps}",
        "data.test_size=80", f"beta={beta}", f"rpo_alpha={rpo_alpha}", "optim.lr=1e-4", "optim.warmup_steps=5", f"task_eval_size={shared['data'].get('test_size', 100)}",
    ])  # fmt: skip
    run_dir = dpo.train(config)
    return {"run": run_dir, **json.loads((run_dir / "eval.json").read_text())}


def rm_table(rms: dict[float, dict], steps: int) -> Table:
    table = Table(title=f"reward model ({steps} steps x 32 pairs): held-out pairwise accuracy (true labels)")
    kinds = sorted(k for k in rms[0.0]["after"] if k.startswith("accuracy/"))
    for col in ("training labels", "before", "after", *(k.split("/")[1] for k in kinds), "mean margin"):
        table.add_column(col, justify="right")
    for flip, r in rms.items():
        a = r["after"]
        table.add_row(f"{flip:.0%} flipped", f"{r['before']['accuracy']:.3f}", f"{a['accuracy']:.3f}", *(f"{a[k]:.3f}" for k in kinds), f"{a['margin']:.2f}")
    return table


def ppo_table(ppos: dict[str, dict], steps: int, test_size: int) -> Table:
    table = Table(title=f"PPO from the SFT model, {steps} steps x 32 prompts: test split ({test_size} problems)")
    for col in ("reward", "kl_coef", "pass@1 before", "pass@1 after", "greedy before", "greedy after", "mean length after", "KL at the end"):
        table.add_column(col, justify="right")
    for (name, kl_coef), r in ppos.items():
        b, a = r["before"], r["after"]
        table.add_row(name, f"{kl_coef:g}", f"{b['pass@1']:.3f}", f"{a['pass@1']:.3f}", f"{b['greedy_acc']:.3f}", f"{a['greedy_acc']:.3f}",
                      f"{a['length_mean']:.1f}", f"{r['kl_end']:.2f}")
    return table


def dpo_table(dpos: dict[tuple[float, float], dict], steps: int) -> Table:
    """One row per (beta, rpo_alpha): before -> after of the held-out pair metrics and the task."""
    table = Table(title=f"DPO (sigmoid) + rpo_alpha * NLL(chosen) from the SFT model, {steps} steps x 32 pairs: before -> after")
    columns = (("pref/accuracy", "pref acc (implicit reward)"), ("pref/logp_accuracy", "pref acc (log-lik)"),
               ("pref/chosen_nll", "chosen NLL/token"), ("greedy_acc", "task greedy"), ("pass@1", "task pass@1"))  # fmt: skip
    for col in ("beta", "rpo_alpha", *(label for _, label in columns)):
        table.add_column(col, justify="right")
    for (beta, alpha), r in dpos.items():
        b, a = r["before"], r["after"]
        table.add_row(f"{beta:g}", f"{alpha:g}", *(f"{b[k]:.3f} -> {a[k]:.3f}" for k, _ in columns))
    return table


def config_eval_tokens(shared: dict) -> int:
    return int(shared.get("eval", {}).get("max_new_tokens", 48))


STAGES = ("rm", "ppo", "dpo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-preference", help="parent of the stages' run directories")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="run.seed of the reward-model, PPO and DPO runs (not of base and SFT)")
    parser.add_argument("--quick", action="store_true", help="tiny stages: check the script runs, measure nothing")
    parser.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run (default: all)")
    parser.add_argument("--beta", nargs="+", type=float, default=[0.5], help="DPO beta values (one run per beta x rpo-alpha)")
    parser.add_argument("--rpo-alpha", nargs="+", type=float, default=[1.0], help="DPO rpo_alpha values: weight of the chosen NLL")
    parser.add_argument("--rule-kl", type=float, default=0.02, help="PPO kl_coef with the rule reward")
    parser.add_argument("--rm-kl", nargs="+", type=float, default=[0.02, 0.1, 0.3], help="PPO kl_coef values with the learned reward model")
    args = parser.parse_args()
    out = Path(args.out)
    steps = {"rm": 100, "ppo": 40, "dpo": 60} if not args.quick else {"rm": 3, "ppo": 2, "dpo": 2}
    pipe = load(DEFAULT_CONFIG, [], PipelineConfig)
    shared = {"data": pipe.defaults.get("data", {}), "eval": pipe.defaults.get("eval", {})}  # the demo's task and evaluation
    common = [f"run.output_dir={out}", f"run.threads={args.threads}", f"run.seed={args.seed}", "run.progress=false", "model.device=cpu"]
    t0 = time.perf_counter()
    timings = {}
    _, sft_dir = base_and_sft(pipe, out, args.threads)
    sft_model = sft_dir / "model"
    timings["base+sft"] = time.perf_counter() - t0

    rms, ppos, dpos = {}, {}, {}
    flips = (0.0, 0.1, 0.3) if "rm" in args.only else (0.0,) if "ppo" in args.only else ()
    for flip in flips:
        t = time.perf_counter()
        rms[flip] = run_rm(sft_model, f"rm-flip{int(flip * 100)}", flip, steps["rm"], shared, common)
        timings[f"rm flip {flip:.0%}"] = time.perf_counter() - t
    if "ppo" in args.only:
        t = time.perf_counter()
        rule = ppos["rule (arithmetic)", args.rule_kl] = run_ppo(sft_model, "ppo-rule", "arithmetic", steps["ppo"], args.rule_kl, shared, common)
        timings["ppo rule"] = time.perf_counter() - t
        for kl_coef in args.rm_kl:
            t = time.perf_counter()
            reward = f"model:{rms[0.0]['run'] / 'model'}"
            ppos["learned RM (clean labels)", kl_coef] = run_ppo(sft_model, f"ppo-rm-kl{kl_coef:g}", reward, steps["ppo"], kl_coef, shared, common, rule["before"])
            timings[f"ppo rm kl {kl_coef:g}"] = time.perf_counter() - t
    if "dpo" in args.only:
        for beta in args.beta:
            for alpha in args.rpo_alpha:
                t = time.perf_counter()
                dpos[beta, alpha] = run_dpo(sft_model, steps["dpo"], beta, alpha, shared, common)
                timings[f"dpo beta {beta:g} rpo {alpha:g}"] = time.perf_counter() - t

    wide = Console(width=160, highlight=False)  # tables, unwrapped in logs
    if "rm" in args.only:
        wide.print(rm_table(rms, steps["rm"]))
    if ppos:
        wide.print(ppo_table(ppos, steps["ppo"], shared["data"].get("test_size", 100)))
    if dpos:
        wide.print(dpo_table(dpos, steps["dpo"]))
    console.print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
