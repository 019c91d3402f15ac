"""Findings that train models of their own from the demo's shared base (each a small pipeline
under `workdir/<finding>/seed-<s>/`, with the demo's data, rewards and evaluation):

- off_policy_reuse: GRPO for 8 steps taking one gradient step per batch of samples
  (grpo.num_iterations 1) against four steps per batch (4), the ratio to the sampling policy
  clipped, and four steps unclipped; all see the same number of samples. The first 3-seed run
  gave each arm 20 steps: mu = 1 reached pass@1 0.88-0.92 there, within 0.05 of what the task
  allows at temperature 1, so no arm could lead by the margin (mu = 4: 0.91-0.93). The claim is
  about the samples needed, so the budget became one where mu = 1 has not converged: 8 steps (512
  samples), chosen on pilot seeds 7-9, which are not reported (mu = 1: 0.82-0.83, mu = 4:
  0.91-0.93, unclipped 0.87-0.91); the criterion is unchanged.
- grpo_matches_ppo: PPO (value model, GAE, per-token KL penalty) from the base for the same 40
  steps of 64 samples as the demo's R1-Zero GRPO, whose result it is compared with.
- kl_limits_hacking: the demo's cold-start SFT model, a Bradley-Terry reward model trained from it
  on the task's preference pairs, and PPO from the SFT model against that learned reward at a
  small and a large KL penalty; the task's own verifier says which answers are right.
"""

from __future__ import annotations

from pathlib import Path

from r1kit.findings import demo_stages
from r1kit.recipes.pipeline import StageSpec

REUSE_STEPS = 8
NO_CLIP = {"eps_low": 1.0, "eps_high": 1.0e3}
"""Ratio bounds [0, 1001]: no sampled ratio reaches them, so nothing is clipped."""
OFF_POLICY_SETUP = (f"GRPO from the demo's base with R1-Zero's rewards, {REUSE_STEPS} steps of 8 prompts x 8 samples each "
                    f"({REUSE_STEPS * 64} samples; at 20 steps both arms ended within 0.05 of the task's ceiling): "
                    "grpo.num_iterations=1 (one update per batch, on-policy) vs 4 (the batch reused for four updates "
                    "through the clipped ratio to the policy that sampled it), and 4 with the clip removed (mu4_noclip, "
                    "recorded, not in the criterion); 80 held-out prompts, pass@1 over 4 samples; kl_max: the largest "
                    "per-step KL to the base during training.")
PPO_SETUP = ("PPO from the demo's base with R1-Zero's rule rewards (value model from the policy, GAE, clipped policy and "
             "value losses, per-token KL penalty 0.04), 40 steps of 64 prompts x 1 sample = the 64 samples a step of the "
             "demo's R1-Zero GRPO draws (8 prompts x 8); compared with that GRPO run of the same seed.")


KL_SMALL, KL_LARGE = 0.02, 0.3
KL_SETUP = ("From the demo's base: the demo's cold-start SFT (seeded), a Bradley-Terry reward model from the SFT model on "
            "2000 of the task's preference pairs (chosen: the correct worked solution; rejected: a slip, missing tags, "
            f"rambling, a bare answer; 100 steps), then PPO from the SFT model for 40 steps of 32 prompts with the "
            f"learned reward alone at per-token KL penalty {KL_SMALL} and {KL_LARGE} (configs/tiny-arith/ppo.yaml's "
            "settings); the task's verifier scores the held-out answers.")


def off_policy_reuse(seed: int, workdir: Path, size: str) -> dict[str, float]:
    arms = {"mu1": {"num_iterations": 1}, "mu4": {"num_iterations": 4}, "mu4_noclip": {"num_iterations": 4, **NO_CLIP}}
    stages = [StageSpec(name=arm, recipe="grpo", start="base", config={"grpo": {"steps": REUSE_STEPS, **grpo}}) for arm, grpo in arms.items()]
    pipe = demo_stages.config(seed, workdir, size, stages, name="off_policy_reuse")
    out = demo_stages.metrics(pipe)
    for arm in arms:
        kl = [row["kl"] for row in demo_stages.training_log(Path(pipe.output_dir), arm) if "kl" in row]
        out[f"{arm}/kl_max"] = max(kl)
    return out


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
    ran = demo_stages.run(seed, workdir, size, upto="r1_zero")  # the demo's R1-Zero GRPO of this seed: shared, skipped when done
    out.update({k.replace("r1_zero/", "grpo/"): v for k, v in ran.items() if k.startswith("r1_zero/")})
    return out


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
    return demo_stages.metrics(demo_stages.config(seed, workdir, size, stages, name=name))
