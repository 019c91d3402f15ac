"""Findings that train models of their own from the demo's shared base (each a small pipeline
under `workdir/<finding>/seed-<s>/`, with the demo's data, rewards and evaluation):

- cold_start_helps: R1's cold start (SFT on readable worked solutions in the R1 format), then
  GRPO with R1-Zero's rewards, against R1-Zero GRPO from the base, both for 8 steps. The first
  3-seed run read the demo pipeline instead (40 steps of GRPO after the demo's cold start, whose
  data is half terse one-step answers on purpose, so that its GRPO has a choice to make): GRPO
  after that cold start ended at 0.87-0.93 pass@1, level with R1-Zero's 0.92-0.93 and both near
  what the task allows, so no arm could lead by 0.05. The claim is that the cold start gets there
  in fewer RL steps, so the comparison is at a budget where R1-Zero has not converged, from R1's
  kind of cold-start data (worked solutions only); chosen on pilot seeds 7-9, not reported (cold
  start + GRPO 0.91-0.94, R1-Zero 0.82-0.83); the criterion is unchanged. Recorded beside it: the
  cold-start model before GRPO, the demo's 40-step R1-Zero of the same seed, and each model's
  share of samples in the R1 format (readability).

- off_policy_reuse: GRPO for 8 steps taking one gradient step per batch of samples
  (grpo.num_iterations 1) against four steps per batch (4), the ratio to the sampling policy
  clipped, and four steps unclipped; all see the same number of samples. The first 3-seed run
  gave each arm 20 steps: mu = 1 reached pass@1 0.88-0.92 there, within 0.05 of what the task
  allows at temperature 1, so no arm could lead by the margin (mu = 4: 0.91-0.93). The claim is
  about the samples needed, so the budget became one where mu = 1 has not converged: 8 steps (512
  samples), chosen on pilot seeds 7-9, which are not reported (mu = 1: 0.82-0.83, mu = 4:
  0.91-0.93, unclipped 0.87-0.91); the criterion is unchanged.
- distill_beats_small_rl: the demo's distillation (SFT on the teacher's samples) and RL-only student,
  and beside them logit KD on the same samples from the same teacher (the issue's second kind of
  distillation; recorded, not in the criterion, which was written before it was added).
- grpo_matches_ppo: PPO (value model, GAE, per-token KL penalty) from the base for the same 40
  steps of 64 samples as the demo's R1-Zero GRPO, whose result it is compared with; and the peak
  memory of one step of each (`peak_memory_mb`, the torch profiler's allocations and frees).
- kl_limits_hacking: the demo's cold-start SFT model, a Bradley-Terry reward model trained from it
  on the task's preference pairs, and PPO from the SFT model against that learned reward at a
  small and a large KL penalty; the task's own verifier says which answers are right.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Callable

from torch.profiler import ProfilerActivity, profile

from r1kit.config import deep_merge
from r1kit.findings import demo_stages
from r1kit.recipes import grpo as grpo_recipe
from r1kit.recipes import ppo as ppo_recipe
from r1kit.recipes.pipeline import StageSpec, stage_config
from r1kit.rewards.format import is_r1_format

COLD_START_STEPS = 8
WORKED_ONLY = {"data": {"task_params": {"terse_fraction": 0.0}}}
"""Laid over the demo's cold-start SFT stage: every solution worked in steps, none terse."""
COLD_START_SETUP = ("From the demo's base, per seed: R1's cold start (the demo's cold-start SFT, 40 steps of 32, on worked "
                    "solutions only, `<think>7+8=15 15+6=21</think><answer>21</answer>`) then GRPO with R1-Zero's rewards "
                    f"(accuracy + 0.5 x format) for {COLD_START_STEPS} steps of 8 prompts x 8 (grpo), against R1-Zero GRPO from "
                    f"the base for the same {COLD_START_STEPS} steps (r1_zero); recorded beside them: the cold-start model (sft), "
                    "the demo's 40-step R1-Zero of the seed (r1_zero_40) and each model's share of sampled completions in the "
                    f"R1 format (format). 80 held-out prompts, pass@1 over {demo_stages.EVAL_SAMPLES} samples at temperature 1.")
REUSE_STEPS = 8
NO_CLIP = {"eps_low": 1.0, "eps_high": 1.0e3}
"""Ratio bounds [0, 1001]: no sampled ratio reaches them, so nothing is clipped."""
OFF_POLICY_SETUP = (f"GRPO from the demo's base with R1-Zero's rewards, {REUSE_STEPS} steps of 8 prompts x 8 samples each "
                    f"({REUSE_STEPS * 64} samples; at 20 steps both arms ended within 0.05 of the task's ceiling): "
                    "grpo.num_iterations=1 (one update per batch, on-policy) vs 4 (the batch reused for four updates "
                    "through the clipped ratio to the policy that sampled it), and 4 with the clip removed (mu4_noclip, "
                    f"recorded, not in the criterion); 80 held-out prompts, pass@1 over {demo_stages.EVAL_SAMPLES} samples; kl_max: the largest "
                    "per-step KL to the base during training.")
LOGIT_KD = {"mode": "logits", "divergence": "forward_kl", "temperature": 1.0, "hard_label_weight": 0.0}
"""Laid over the demo's distilled stage: the student matches the teacher's next-token distribution at
every token of the same samples (Hinton et al. 2015), no cross-entropy on the sampled tokens."""
DISTILL_SETUP = ("The demo pipeline's stages that lead to its 0.29M student (configs/demo.yaml): the 1M teacher's cold start "
                 "and GRPO, ~800 verified completions rejection-sampled from it, then per seed the student base (pretrained "
                 "once, cached) distilled by SFT on those completions (distilled, R1's distillation; 250 steps of 32) or "
                 "trained by the demo's 40 GRPO steps alone (student_rl); recorded beside them, not in the criterion: the "
                 "same 250 steps of logit KD instead of SFT, the student matching the teacher's next-token distribution at "
                 "every token of the same completions (distilled_kd; forward KL, temperature 1, no hard-label loss). 80 "
                 f"held-out prompts, pass@1 over {demo_stages.EVAL_SAMPLES} samples at temperature 1.")
PPO_SETUP = ("PPO from the demo's base with R1-Zero's rule rewards (value model from the policy, GAE, clipped policy and "
             "value losses, per-token KL penalty 0.04), 40 steps of 64 prompts x 1 sample = the 64 samples a step of the "
             "demo's R1-Zero GRPO draws (8 prompts x 8); compared with that GRPO run of the same seed. Recorded beside "
             "it: the peak CPU tensor memory of one step of each from the base (torch profiler: models, reference, value "
             "model, optimizer state, the step's rollout and update; peak_mb).")


KL_SMALL, KL_LARGE = 0.02, 0.3
KL_SETUP = ("From the demo's base: the demo's cold-start SFT (seeded), a Bradley-Terry reward model from the SFT model on "
            "2000 of the task's preference pairs (chosen: the correct worked solution; rejected: a slip, missing tags, "
            f"rambling, a bare answer; 100 steps), then PPO from the SFT model for 40 steps of 32 prompts with the "
            f"learned reward alone at per-token KL penalty {KL_SMALL} and {KL_LARGE} (configs/tiny-arith/ppo.yaml's "
            "settings); the task's verifier scores the held-out answers. Recorded beside it: the learned reward's mean "
            "score of each arm's training samples over its first and last 5 steps (rm_score_start, rm_score_end).")


def cold_start_helps(seed: int, workdir: Path, size: str) -> dict[str, float]:
    cold_start = deep_merge(demo_stages.demo_stage("sft").config, WORKED_ONLY)
    grpo = {"grpo": {"steps": COLD_START_STEPS}}
    stages = [StageSpec(name="sft", recipe="sft", start="base", config=cold_start),
              StageSpec(name="r1_zero", recipe="grpo", start="base", config=grpo),
              StageSpec(name="grpo", recipe="grpo", start="sft", config=grpo)]  # fmt: skip
    pipe = demo_stages.config(seed, workdir, size, stages, name="cold_start_helps")
    out = demo_stages.metrics(pipe)
    for stage, (_, completions) in demo_stages.sampled(Path(pipe.output_dir), ("base", "sft", "r1_zero", "grpo"), like="grpo").items():
        out[f"{stage}/format"] = sum(map(is_r1_format, completions)) / len(completions)
    demo = demo_stages.run(seed, workdir, size, needs=("r1_zero",))  # the demo's R1-Zero of this seed: shared, skipped when done
    out["r1_zero_40/pass@1"] = demo["r1_zero/pass@1"]
    return out


def off_policy_reuse(seed: int, workdir: Path, size: str) -> dict[str, float]:
    arms = {"mu1": {"num_iterations": 1}, "mu4": {"num_iterations": 4}, "mu4_noclip": {"num_iterations": 4, **NO_CLIP}}
    stages = [StageSpec(name=arm, recipe="grpo", start="base", config={"grpo": {"steps": REUSE_STEPS, **grpo}}) for arm, grpo in arms.items()]
    pipe = demo_stages.config(seed, workdir, size, stages, name="off_policy_reuse")
    out = demo_stages.metrics(pipe)
    for arm in arms:
        out[f"{arm}/kl_max"] = max(demo_stages.logged(Path(pipe.output_dir), arm, "kl"))
    return out


def distill_beats_small_rl(seed: int, workdir: Path, size: str) -> dict[str, float]:
    distilled = demo_stages.demo_stage("distilled")
    kd = StageSpec(name="distilled_kd", recipe="distill", start=distilled.start, data_from=distilled.data_from, teacher="grpo",
                   config=deep_merge(distilled.config, LOGIT_KD))  # fmt: skip
    return demo_stages.run(seed, workdir, size, needs=("distilled", "student_rl"), extra=[kd])


def grpo_matches_ppo(seed: int, workdir: Path, size: str) -> dict[str, float]:
    demo = demo_stages.config(seed, workdir, size)
    grpo = demo.recipe_defaults["grpo"]
    ppo = {
        "rewards": grpo["rewards"], "sampling": grpo["sampling"], "optim": grpo["optim"],
        "ppo": {"steps": grpo["grpo"]["steps"], "prompts_per_step": grpo["grpo"]["prompts_per_step"] * grpo["grpo"]["group_size"],
                "ppo_epochs": 2, "mini_batches": 2, "kl_coef": grpo["grpo"]["beta"], "value_lr": 1.0e-3},
    }  # fmt: skip
    out = demo_stages.metrics(demo_stages.config(seed, workdir, size, [StageSpec(name="ppo", recipe="ppo", start="base", config=ppo)],
                                                 name="grpo_matches_ppo"))  # fmt: skip
    ran = demo_stages.run(seed, workdir, size, needs=("r1_zero",))  # the demo's R1-Zero GRPO of this seed: shared, skipped when done
    out.update({k.replace("r1_zero/", "grpo/"): v for k, v in ran.items() if k.startswith("r1_zero/")})
    # Peak memory: one step of each from the base, as configured above, evaluation cut to one greedy prompt.
    one_step = {"eval_before": False, "data": {"test_size": 1}, "eval": {"k": 0}}
    arms = {grpo_recipe: StageSpec(name="grpo", recipe="grpo", start="base", config=deep_merge(one_step, {"grpo": {"steps": 1}})),
            ppo_recipe: StageSpec(name="ppo", recipe="ppo", start="base", config=deep_merge(ppo, {**one_step, "ppo": {"steps": 1}}))}  # fmt: skip
    pipe = demo_stages.config(seed, workdir, size, list(arms.values()), name="grpo_matches_ppo_memory")
    base = {"base": demo_stages.base_model(workdir, size).parent}
    for recipe, stage in arms.items():
        config = stage_config(pipe, stage, base)
        out[f"{stage.name}/peak_mb"] = peak_memory_mb(lambda: recipe.train(config))
    return out


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """The peak of the CPU tensor memory `fn()` allocates, in MB (10^6 bytes): the running sum of
    every allocation and free the torch profiler records, in time order (memory held before the
    call is not counted; a peak inside one operator is seen as that operator's net)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    usage = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        usage += event.self_cpu_memory_usage
        peak = max(peak, usage)
    return peak / 1e6


def kl_limits_hacking(seed: int, workdir: Path, size: str) -> dict[str, float]:
    demo = demo_stages.config(seed, workdir, size)
    cold_start = next(s for s in demo.stages if s.name == "sft")
    name = "kl_limits_hacking"
    rm_model = Path(demo_stages.config(seed, workdir, size, [], name=name).output_dir) / "rm" / "model"
    ppo = {
        "rewards": [f"model:{rm_model}"], "sampling": demo.recipe_defaults["grpo"]["sampling"],
        "optim": {"lr": 1.0e-4, "warmup_steps": 0, "schedule": "constant"},
        "ppo": {"steps": 40, "prompts_per_step": 32, "ppo_epochs": 2, "mini_batches": 2, "value_lr": 1.0e-3},
    }  # fmt: skip
    stages = [
        StageSpec(name="sft", recipe="sft", start="base", config=cold_start.config),
        StageSpec(name="rm", recipe="rm", start="sft", show=False, config={
            "data": {"train_size": 2000}, "pref": {"rejected_kinds": ["wrong", "malformed", "rambling", "unexplained"]},
            "steps": 100, "batch_size": 32, "optim": {"lr": 1.0e-3, "warmup_steps": 5}}),
        *(StageSpec(name=f"ppo_kl{kl}", recipe="ppo", start="sft", config={**ppo, "ppo": {**ppo["ppo"], "kl_coef": kl}})
          for kl in (KL_SMALL, KL_LARGE)),
    ]  # fmt: skip
    pipe = demo_stages.config(seed, workdir, size, stages, name=name)
    out = demo_stages.metrics(pipe)
    for kl in (KL_SMALL, KL_LARGE):  # the learned reward of the training samples, over the first and last 5 steps
        scores = demo_stages.logged(Path(pipe.output_dir), f"ppo_kl{kl}", "reward/mean")
        out[f"ppo_kl{kl}/rm_score_start"], out[f"ppo_kl{kl}/rm_score_end"] = fmean(scores[:5]), fmean(scores[-5:])
    return out
