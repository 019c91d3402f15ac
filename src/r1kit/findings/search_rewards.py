"""Findings on what R1 chose not to use, each against the plain RL it was compared with:

- outcome_vs_process: GRPO from the demo's cold-start SFT model rewarded by the task's answer
  check (outcome, R1-Zero's rewards) against the same GRPO rewarded by a process reward model's
  step scores (DeepSeekMath's process supervision; `r1kit prm` on the SFT model's own samples, each
  `a+b=c` partial sum a step, labelled by the task's step checker).
- mcts_vs_rl: a weak base answering by Monte Carlo tree search over reasoning steps, leaves valued
  by a value model fitted by `r1kit search` from it (AlphaZero's v(s); nothing at test time sees
  the gold answer), against the same base trained by R1-Zero GRPO (the demo's settings) answering
  greedily. The weak base is benchmarks/mcts_vs_bestofn.py's: the demo's student base pretrained
  for 150 steps instead of 600. The first 3-seed run used the demo's own base, and there every
  method sat at the ceiling (the R1-Zero model's greedy accuracy 0.975-0.9875, value-model MCTS
  0.9875 on every seed), which cannot tell the methods apart; the criterion is unchanged.

outcome_vs_process trains under `workdir/<finding>/seed-<s>/` from the demo's cached base,
mcts_vs_rl from its own weak base (pretrained once, cached, shared by every seed).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

from r1kit.config import MCTSArgs, deep_merge
from r1kit.eval.evaluate import Evaluator
from r1kit.eval.search import mcts_metrics
from r1kit.findings import demo_stages
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes.pipeline import StageSpec

PRM_SIZES = {  # configs/tiny-arith/prm.yaml's PRM; best-of-n reranking is not part of the finding, so n is small
    "full": {"data": {"train_size": 200, "test_size": 40}, "samples_per_prompt": 4, "steps": 60, "best_of_n": {"n": 2}},
    "smoke": {"data": {"train_size": 4, "test_size": 4}, "samples_per_prompt": 1, "steps": 2, "batch_size": 4, "best_of_n": {"n": 1},
              "sampling": {"max_new_tokens": 8}},
}  # fmt: skip
PRM_CONFIG = {"labels": {"source": "task", "separator": " ", "mode": "soft"}, "batch_size": 32, "max_length": 96,
              "sampling": {"temperature": 1.0, "max_new_tokens": 40, "stop": ["</answer>"]}, "optim": {"lr": 1.0e-3, "warmup_steps": 5},
              "run": {"eval_every": 0}}  # fmt: skip
PROCESS_SETUP = ("From the demo's base: the demo's cold-start SFT (seeded), a process reward model from the SFT model "
                 "(configs/tiny-arith/prm.yaml: 200 prompts x 4 sampled solutions, each `a+b=c` partial sum a step labelled by "
                 "the task's step checker, 60 steps), then GRPO from the SFT model with the demo's R1-Zero settings (40 steps of "
                 "8 prompts x 8) rewarded by the answer check + 0.5 x format (outcome) or by the PRM's step scores + 0.5 x "
                 f"format (process); 80 held-out prompts, pass@1 over {demo_stages.EVAL_SAMPLES} samples at temperature 1. "
                 "Recorded beside it: reward hacking, the process arm's mean PRM score and the verifier's accuracy on the "
                 "same training samples over its first and last 5 steps (process/prm_score_*, process/verified_*); cost, "
                 "seconds per GRPO step of each arm (step_s) and the PRM's fit (prm/fit_s, after its 800 sampled solutions).")

MCTS = {"budget_tokens": 120, "simulations": 2000, "k": 2, "c_puct": 1.0, "widening": 0.5}
SEARCH = {"data": {"train_size": 60}, "mcts": {"budget_tokens": MCTS["budget_tokens"]}, "max_new_tokens": 40, "value_steps": 150}
"""The value model's search (benchmarks/mcts_vs_bestofn.py's `--value-prompts 60`): training prompts
searched with verifier-scored rollouts, then the fit."""
WEAK_BASE = ("student_base", {"steps": 150})
"""(demo stage, overrides): the base of mcts_vs_rl and of benchmarks/mcts_vs_bestofn.py's defaults,
weak enough that greedy decoding is not already always right."""
MCTS_SMOKE = {"budget_tokens": 16, "simulations": 4}
"""At smoke size the base solves nothing for the search to fit a value model on (`r1kit search`
refuses), so the leaves are valued by rollouts: the smoke run checks the plumbing, not the search."""
MCTS_SETUP = ("A weak base (benchmarks/mcts_vs_bestofn.py's: the demo's 0.29M student base pretrained for 150 steps instead "
              "of 600, once, cached; on the demo's own base every method answered at the ceiling, about 0.99), then per "
              "seed R1-Zero GRPO from it with the demo's settings (40 steps of 8 prompts x 8) and a value model fitted by "
              "`r1kit search` from it (60 training prompts searched with verifier-scored rollouts, 150 steps, seeded); the base "
              f"answers each of the 80 held-out prompts by MCTS over steps valued by that model ({MCTS['budget_tokens']} "
              f"generated tokens per problem, k={MCTS['k']}, c_puct={MCTS['c_puct']}, widening={MCTS['widening']}), against the "
              "R1-Zero model's greedy answer to the same prompts (tokens: mean generated tokens per problem of each).")


def outcome_vs_process(seed: int, workdir: Path, size: str) -> dict[str, float]:
    demo = demo_stages.config(seed, workdir, size)
    cold_start = next(s for s in demo.stages if s.name == "sft")
    name = "outcome_vs_process"
    prm_model = Path(demo_stages.config(seed, workdir, size, [], name=name).output_dir) / "prm" / "model"
    stages = [
        StageSpec(name="sft", recipe="sft", start="base", config=cold_start.config),
        StageSpec(name="prm", recipe="prm", start="sft", show=False, config=deep_merge(PRM_CONFIG, PRM_SIZES[size])),
        StageSpec(name="outcome", recipe="grpo", start="sft"),  # the demo's R1-Zero rewards (recipe_defaults)
        StageSpec(name="process", recipe="grpo", start="sft", config={"rewards": [f"prm:{prm_model}", {"name": "format", "weight": 0.5}]}),
    ]
    pipe = demo_stages.config(seed, workdir, size, stages, name=name)
    out = demo_stages.metrics(pipe)
    pipe_dir = Path(pipe.output_dir)
    for key, label in (("prm/score", "prm_score"), ("prm/verified_acc", "verified")):  # the process arm's own samples
        values = demo_stages.logged(pipe_dir, "process", key)
        out[f"process/{label}_start"], out[f"process/{label}_end"] = fmean(values[:5]), fmean(values[-5:])
    for arm in ("outcome", "process"):
        out[f"{arm}/step_s"] = fmean(demo_stages.logged(pipe_dir, arm, "perf/step_s"))
    times = demo_stages.logged(pipe_dir, "prm", "time")
    out["prm/fit_s"] = times[-1] - times[0]
    return out


def mcts_vs_rl(seed: int, workdir: Path, size: str) -> dict[str, float]:
    r1_zero = demo_stages.demo_stage("r1_zero")  # GRPO from "base", the demo's R1-Zero settings (recipe_defaults)
    stages = [r1_zero] if size == "smoke" else [r1_zero, StageSpec(name="value", recipe="search", start="base", show=False, config=SEARCH)]
    pipe = demo_stages.config(seed, workdir, size, stages, name="mcts_vs_rl", base=demo_stages.base_stage(*WEAK_BASE))
    ran = demo_stages.metrics(pipe)  # the base's and R1-Zero model's held-out metrics; finished stages are skipped
    if size == "smoke":
        mcts = MCTSArgs(**{**MCTS, **MCTS_SMOKE})
    else:
        value_model = demo_stages.model_dir(Path(pipe.output_dir), "value").parent / "value_model"
        mcts = MCTSArgs(**MCTS, value="model", value_model=str(value_model))
    searched = _search(demo_stages.model_dir(Path(pipe.output_dir), "base"), mcts, seed)
    return {
        "base/greedy_acc": ran["base/greedy_acc"], "rl/greedy_acc": ran["r1_zero/greedy_acc"], "mcts/acc": searched["mcts_acc"],
        "mcts/answered": searched["mcts_answered"], "mcts/tokens": searched["mcts_tokens"],
        "rl/tokens": json.loads((demo_stages.model_dir(Path(pipe.output_dir), "r1_zero").parent / "eval.json").read_text())["after"]["length_greedy"],
    }  # fmt: skip


def _search(model_dir: Path, mcts: MCTSArgs, seed: int) -> dict[str, float]:
    """MCTS metrics of the model on its recorded test split (the rows the pipeline evaluated it on),
    the search's sampling seeded by `seed`."""
    data, args = demo_stages.recorded_settings(model_dir, k=0, search="mcts", mcts=mcts)
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir))
    e = Evaluator.for_data(tokenizer, data, args)
    return mcts_metrics(model, tokenizer, e.rows, e.score, args, e.task, e.template, e.system_prompt, seed)
