"""MCTS over reasoning steps against best-of-n sampling and greedy decoding, at the same budget of
generated tokens per problem. The numbers proposed for docs/BENCHMARKS.md, "MCTS vs best-of-n".

On the demo's arithmetic setting (three one-digit operands, `+`), with a tiny base pretrained the
way the demo pretrains its bases (a stage of the demo config, optionally with fewer steps so that
greedy decoding is not already always right; cached like the demo's), each held-out problem is
answered by

- greedy: one completion at temperature 0;
- best-of-n, oracle: completions at temperature 1 while they fit in the budget (whole samples only);
  solved when the verifier accepts any of them (pass@n with the gold answer as judge); its tokens
  are those up to the first accepted sample, where an oracle sampling one at a time would stop;
- best-of-n, majority: the same samples; the most common extracted answer (maj@n, no oracle);
- MCTS, rollouts: the test-time search with leaves valued by rollouts scored by the verifier, so an
  oracle like best-of-n's (`eval.search=mcts`, r1kit/eval/search.py);
- MCTS, value model (with --value-prompts > 0): leaves valued by a value model fitted by
  `r1kit search` on that many training prompts (AlphaZero's v(s)); nothing sees the gold answer;
- GRPO policy (with --grpo-steps > 0): the base trained by GRPO with the demo's R1-Zero settings
  (accuracy + format rewards, 8 prompts x 8 per step) for that many steps under the seed, then
  answering greedily and by best-of-n at the same budget. Its training tokens (every sampled
  completion) are printed beside the table: the search spends at test time what RL spends before.

Every method but greedy runs once per seed; the table gives mean ± sd over seeds of the accuracy
and of the generated tokens per problem.

    python benchmarks/mcts_vs_bestofn.py [--seeds 3] [--n 40] [--budget 120] [--base-steps 150] [--grpo-steps 40] [--out runs/mcts_bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from r1kit import accel
from r1kit.config import EvalArgs, MCTSArgs, deep_merge, from_dict
from r1kit.data.tasks import get_task
from r1kit.data.templates import render_prompt
from r1kit.demo import DEFAULT_CONFIG
from r1kit.eval.metrics import majority_vote
from r1kit.eval.search import mcts_metrics
from r1kit.findings import demo_stages
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes import grpo as grpo_recipe
from r1kit.recipes import pretrain, search as search_recipe
from r1kit.report.logger import read_metrics
from r1kit.rollout import SamplingParams

TASK_PARAMS = {"n_operands": 3, "digits": 1, "ops": "+"}
MAX_NEW_TOKENS = 40


def build_base(stage: str, steps: int, cache_dir: str) -> Path:
    """The demo's pretraining stage `stage`, with `steps` optimizer steps (0 = the demo's), cached:
    with the defaults, the weak base the finding mcts_vs_rl runs on (findings/search_rewards.py)."""
    config = demo_stages.base_stage(stage, {"steps": steps} if steps else {}).config
    over = {"run": {"progress": False, "tensorboard": False}, "cache_dir": cache_dir}
    return pretrain.train(from_dict(pretrain.PretrainConfig, deep_merge(config, over))) / "model"


@torch.inference_mode()
def best_of_n(model, tokenizer, rows, task, budget: int, seed: int) -> dict[str, float]:
    """Oracle and majority accuracy of the samples that fit in `budget` tokens, and their tokens."""
    engine = accel.rollout_engine(model, tokenizer, processes=1)
    n = max(1, budget // 8)  # more than ever fit: completions are longer than 8 tokens
    oracle = majority = tokens = oracle_tokens = 0
    for i, row in enumerate(rows):
        ids = tokenizer(render_prompt(row["prompt"], "tiny"), add_special_tokens=False)["input_ids"]
        batch = engine.generate([ids], SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, stop=["</answer>"], n=n, seed=seed * 100_003 + i))
        lengths = batch.completion_lengths.tolist()
        kept, spent = [], 0
        for text, length in zip(batch.texts, lengths):
            if spent + length > budget:
                break
            kept.append(text)
            spent += length
        correct = task.reward(kept, answer=[row["answer"]] * len(kept))
        first = next((j for j, c in enumerate(correct) if c == 1.0), None)
        oracle += first is not None
        # Sampling one at a time, an oracle stops at the first correct sample (as MCTS with
        # rollouts stops at its first verified solution); majority voting needs them all.
        oracle_tokens += spent if first is None else sum(lengths[: first + 1])
        majority += majority_vote([task.extract_answer(t) for t in kept]) == row["answer"]
        tokens += spent
    engine.close()
    n_rows = len(rows)
    return {"oracle": oracle / n_rows, "oracle_tokens": oracle_tokens / n_rows, "majority": majority / n_rows, "tokens": tokens / n_rows}


@torch.inference_mode()
def greedy(model, tokenizer, rows, task) -> dict[str, float]:
    engine = accel.rollout_engine(model, tokenizer, processes=1)
    ids = [tokenizer(render_prompt(r["prompt"], "tiny"), add_special_tokens=False)["input_ids"] for r in rows]
    batch = engine.generate(ids, SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, stop=["</answer>"]))
    engine.close()
    correct = task.reward(batch.texts, answer=[r["answer"] for r in rows])
    return {"acc": sum(correct) / len(rows), "tokens": float(batch.completion_lengths.float().mean())}


def fit_value_model(base: Path, prompts: int, budget: int, out: Path) -> Path:
    overrides = {"model": {"path": str(base), "device": "cpu"}, "data": {"task": "arithmetic", "task_params": TASK_PARAMS, "train_size": prompts},
                 "run": {"output_dir": str(out), "name": "value-search", "progress": False, "tensorboard": False, "seed": 0},
                 "mcts": {"budget_tokens": budget}, "max_new_tokens": MAX_NEW_TOKENS, "value_steps": 150}  # fmt: skip
    return search_recipe.train(from_dict(search_recipe.SearchConfig, overrides)) / "value_model"


def train_grpo(base: Path, steps: int, seed: int, out: Path) -> tuple[Path, float]:
    """The base after `steps` GRPO steps with the demo's R1-Zero stage settings, and the completion
    tokens its training sampled."""
    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    fields = {f for f in grpo_recipe.GRPOConfig.__dataclass_fields__}
    config = deep_merge({k: v for k, v in raw["defaults"].items() if k in fields}, raw["recipe_defaults"]["grpo"])
    config = deep_merge(config, {"model": {"path": str(base), "device": "cpu"}, "data": {"task_params": TASK_PARAMS}, "grpo": {"steps": steps},
                                 "eval": {"k": 0}, "eval_before": False, "samples_every": 0,
                                 "run": {"output_dir": str(out), "name": f"grpo-seed{seed}", "seed": seed, "progress": False, "tensorboard": False, "threads": torch.get_num_threads()}})  # fmt: skip
    run_dir = grpo_recipe.train(from_dict(grpo_recipe.GRPOConfig, config))
    g = config["grpo"]
    tokens = sum(m["completion/length_mean"] * g["prompts_per_step"] * g["group_size"] for m in read_metrics(run_dir) if "completion/length_mean" in m)
    return run_dir / "model", tokens


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=40, help="held-out problems")
    ap.add_argument("--budget", type=int, default=120, help="generated tokens per problem for best-of-n and MCTS")
    ap.add_argument("--stage", default="student_base", help="the demo's pretraining stage whose settings build the base")
    ap.add_argument("--base-steps", type=int, default=150, help="its pretraining steps (0 = the demo's own)")
    ap.add_argument("--value-prompts", type=int, default=0, help="training prompts searched to fit a value model (0 = no value-model row)")
    ap.add_argument("--grpo-steps", type=int, default=0, help="GRPO steps from the base per seed (0 = no GRPO-policy rows)")
    ap.add_argument("--c-puct", type=float, default=1.0)
    ap.add_argument("--k", type=int, default=2, help="steps sampled per expansion")
    ap.add_argument("--widening", type=float, default=0.5, help="progressive widening exponent (0 = expand each node once)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=".cache/r1kit")
    ap.add_argument("--out", default="runs/mcts_bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = build_base(args.stage, args.base_steps, args.cache_dir)
    model, tokenizer = load_model(str(base)), load_tokenizer(str(base))
    task = get_task("arithmetic", **TASK_PARAMS)
    rows = task.generate("test", args.n, seed=0)
    mcts = MCTSArgs(budget_tokens=args.budget, simulations=2000, k=args.k, c_puct=args.c_puct, widening=args.widening)
    eval_args = EvalArgs(k=0, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, search="mcts", mcts=mcts)
    value_model = fit_value_model(base, args.value_prompts, args.budget, out) if args.value_prompts else None

    t0 = time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    answered: dict[str, list[float]] = {}  # share of problems where the search completed any solution
    training_tokens: list[float] = []  # completion tokens sampled by each seed's GRPO run

    def add(method: str, acc: float, tokens: float) -> None:
        results.setdefault(method, {"acc": [], "tokens": []})
        results[method]["acc"].append(acc)
        results[method]["tokens"].append(tokens)

    g = greedy(model, tokenizer, rows, task)
    for seed in range(args.seeds):
        add("greedy", g["acc"], g["tokens"])
        b = best_of_n(model, tokenizer, rows, task, args.budget, seed)
        add("best-of-n, oracle", b["oracle"], b["oracle_tokens"])
        add("best-of-n, majority", b["majority"], b["tokens"])
        m = mcts_metrics(model, tokenizer, rows, task.reward, eval_args, task="arithmetic", seed=seed)
        add("MCTS, rollouts (oracle)", m["mcts_acc"], m["mcts_tokens"])
        answered.setdefault("MCTS, rollouts (oracle)", []).append(m["mcts_answered"])
        if value_model is not None:
            v = mcts_metrics(model, tokenizer, rows, task.reward, replace(eval_args, mcts=replace(mcts, value="model", value_model=str(value_model))), task="arithmetic", seed=seed)
            add("MCTS, value model", v["mcts_acc"], v["mcts_tokens"])
            answered.setdefault("MCTS, value model", []).append(v["mcts_answered"])
        if args.grpo_steps:
            policy_dir, spent = train_grpo(base, args.grpo_steps, seed, out)
            training_tokens.append(spent)
            policy = load_model(str(policy_dir))
            pg = greedy(policy, tokenizer, rows, task)
            add(f"GRPO policy ({args.grpo_steps} steps), greedy", pg["acc"], pg["tokens"])
            pb = best_of_n(policy, tokenizer, rows, task, args.budget, seed)
            add(f"GRPO policy ({args.grpo_steps} steps), best-of-n, oracle", pb["oracle"], pb["oracle_tokens"])
            add(f"GRPO policy ({args.grpo_steps} steps), best-of-n, majority", pb["majority"], pb["tokens"])
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"\n{args.n} held-out problems, budget {args.budget} generated tokens per problem, {args.seeds} seeds, base {base}")
    print(f"MCTS: k={args.k}, c_puct={args.c_puct}, widening={args.widening}; share of problems answered at all: " + ", ".join(f"{m} {mean_sd(a)}" for m, a in answered.items()))
    if training_tokens:
        print(f"GRPO training sampled {mean_sd(training_tokens)} completion tokens per seed ({mean_sd([t / args.n for t in training_tokens])} per held-out problem)")
    print("| method | accuracy | generated tokens per problem |\n|---|---|---|")
    for method, r in results.items():
        print(f"| {method} | {mean_sd(r['acc'])} | {mean_sd(r['tokens'])} |")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "base": str(base), "results": results, "answered": answered, "grpo_training_tokens": training_tokens}, indent=2))


if __name__ == "__main__":
    main()
