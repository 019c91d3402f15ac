"""Findings that train models of their own from the demo's shared base (each a small pipeline
under `workdir/<finding>/seed-<s>/`, with the demo's data, rewards and evaluation):

- off_policy_reuse: GRPO for 20 steps taking one gradient step per batch of samples
  (grpo.num_iterations 1) against four steps per batch (4), the ratio to the sampling policy
  clipped; both see the same number of samples.
- grpo_matches_ppo: PPO (value model, GAE, per-token KL penalty) from the base for the same 40
  steps of 64 samples as the demo's R1-Zero GRPO, whose result it is compared with.
"""

from __future__ import annotations

from pathlib import Path

from r1kit.findings import demo_stages
from r1kit.recipes.pipeline import StageSpec

REUSE_STEPS = 20
OFF_POLICY_SETUP = (f"GRPO from the demo's base with R1-Zero's rewards, {REUSE_STEPS} steps of 8 prompts x 8 samples each: "
                    "grpo.num_iterations=1 (one update per batch, on-policy) vs 4 (the batch reused for four updates "
                    "through the clipped ratio to the policy that sampled it); 80 held-out prompts, pass@1 over 4 samples.")
PPO_SETUP = ("PPO from the demo's base with R1-Zero's rule rewards (value model from the policy, GAE, clipped policy and "
             "value losses, per-token KL penalty 0.04), 40 steps of 64 prompts x 1 sample = the 64 samples a step of the "
             "demo's R1-Zero GRPO draws (8 prompts x 8); compared with that GRPO run of the same seed.")


def off_policy_reuse(seed: int, workdir: Path, size: str) -> dict[str, float]:
    stages = [StageSpec(name=f"mu{mu}", recipe="grpo", start="base", config={"grpo": {"steps": REUSE_STEPS, "num_iterations": mu}})
              for mu in (1, 4)]  # fmt: skip
    return demo_stages.metrics(demo_stages.config(seed, workdir, size, stages, name="off_policy_reuse"))


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
    ran = demo_stages.run(seed, workdir, size)  # the demo's R1-Zero GRPO of this seed: shared, skipped when done
    out.update({k.replace("r1_zero/", "grpo/"): v for k, v in ran.items() if k.startswith("r1_zero/")})
    return out
