"""baselines_cut_variance: how noisy the policy gradient is with no baseline, with the group's
mean reward as baseline, and with GRPO's group normalisation, at one fixed policy.

No training: the demo's teacher base is the policy. Each seed draws `batches` batches of the same
prompts, `group_size` completions each (R1-Zero's rewards and sampling), and computes the
REINFORCE gradient g = (1/N) sum_i A_i grad log pi(y_i | x_i) under each advantage A:

  none   A = r                         (the Monte Carlo estimate)
  mean   A = r - mean of r's group     (a baseline: same expected direction, less noise)
  group  A = (r - mean) / std of group (GRPO)

The noise of an estimator is its relative variance E||g - g_bar||^2 / ||g_bar||^2 over the
batches (g_bar their mean): scale-free, so the normalised estimator compares with the others. The
criterion reads it. Each estimator's plain variance E||g - g_bar||^2 is recorded too (`var/`):
none and mean have nearly the same expectation, so theirs compare directly.

Learning speed (recorded beside the criterion, not in it): GRPO from the same base for
TRAIN_STEPS steps with each estimator as its advantage (grpo.advantage reinforce; grpo.scale none,
Dr. GRPO's group mean; GRPO's default), the mean training accuracy over those steps and the
held-out pass@1 after them.

What a first 3-seed run at the demo's base showed: both baselines raised the noise, by either
measure (plain variance too, about 3 to 7 times). A likely reason: the variance-minimising
baseline is E[r ||grad log pi||^2] / E[||grad log pi||^2], a mean weighted by each completion's
gradient norm; at this base the completions with the largest gradients are the unlikely, mostly
wrong ones (r near 0), so that baseline sits near 0, and the plain mean (about 0.9) weights those
completions heavily instead of zeroing them.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import torch

from r1kit.algorithms import completion_logprobs, group_advantages
from r1kit.findings import demo_stages
from r1kit.models.load import load_model, load_tokenizer
from r1kit.recipes.pipeline import StageSpec, stage_config
from r1kit.rewards.compose import RewardComposer
from r1kit.rollout import SamplingParams
from r1kit.accel import rollout_engine
from r1kit.data.templates import render_prompt
from r1kit.train.rollouts import load_prompts, score

TRAIN_STEPS = 8
TRAINED = {"none": {"advantage": "reinforce"}, "mean": {"scale": "none"}, "group": {}}
"""Each estimator as GRPO's advantage: A = r; r - its group's mean (Dr. GRPO); GRPO's normalisation."""
SIZES = {"full": {"prompts": 8, "group_size": 8, "batches": 16}, "smoke": {"prompts": 2, "group_size": 2, "batches": 3}}
SETUP = ("At the demo's pretrained base (no training), per seed: 16 batches of the same 8 arithmetic prompts x 8 "
         "completions (R1-Zero's rewards, temperature 1); the REINFORCE gradient of every batch with no baseline, the "
         "group-mean baseline and GRPO's group normalisation; noise = E||g - mean g||^2 / ||mean g||^2. Recorded "
         f"beside it: GRPO from the base for {TRAIN_STEPS} steps of 8 prompts x 8 with each estimator as the advantage "
         "(train_<estimator>): mean training accuracy over the steps (train_accuracy) and held-out pass@1 after them "
         f"(80 prompts x {demo_stages.EVAL_SAMPLES} samples).")
ESTIMATORS = ("none", "mean", "group")


def run(seed: int, workdir: Path, size: str) -> dict[str, float]:
    shape = SIZES[size]
    base = demo_stages.base_model(workdir, size)
    pipe = demo_stages.config(seed, workdir, size)
    stage = next(s for s in pipe.stages if s.name == "r1_zero")
    grpo = stage_config(pipe, stage, {stage.start: base.parent})
    torch.manual_seed(seed)
    model, tokenizer = load_model(str(base)), load_tokenizer(str(base))
    rows = load_prompts(grpo.data)
    start = seed * shape["prompts"] % max(1, len(rows) - shape["prompts"])
    rows = rows[start : start + shape["prompts"]]  # each seed its own prompts, the same in every batch
    ids = [tokenizer(render_prompt(r["prompt"], grpo.data.template, tokenizer, grpo.data.system_prompt), add_special_tokens=False)["input_ids"]
           for r in rows]  # fmt: skip
    composer = RewardComposer(grpo.rewards)
    engine = rollout_engine(model, tokenizer)
    grads: dict[str, list[torch.Tensor]] = {e: [] for e in ESTIMATORS}
    rewards = []
    G = shape["group_size"]
    for b in range(shape["batches"]):
        params = SamplingParams(temperature=grpo.sampling.temperature, max_new_tokens=grpo.sampling.max_new_tokens,
                                stop=list(grpo.sampling.stop), n=G, seed=seed * 1_000_003 + b)  # fmt: skip
        batch = engine.generate(ids, params)
        r, _ = score(composer, batch, rows, G)
        r = torch.nan_to_num(r)
        rewards.append(r)
        for name, adv in _advantages(r, G).items():
            grads[name].append(_gradient(model, batch, adv))
    engine.close()
    out = {f"rel_var/{e}": _relative_variance(torch.stack(g)) for e, g in grads.items()}
    out.update({f"var/{e}": _variance(torch.stack(g)) for e, g in grads.items()})
    out["reward_mean"] = float(torch.cat(rewards).mean())
    out.update(_learning(seed, workdir, size))
    return out


def _learning(seed: int, workdir: Path, size: str) -> dict[str, float]:
    """Each estimator trained with: GRPO from the demo's base for TRAIN_STEPS steps."""
    stages = [StageSpec(name=f"train_{e}", recipe="grpo", start="base", config={"grpo": {"steps": TRAIN_STEPS, **grpo}})
              for e, grpo in TRAINED.items()]  # fmt: skip
    pipe = demo_stages.config(seed, workdir, size, stages, name="baselines_cut_variance")
    ran = demo_stages.metrics(pipe)
    out = {}
    for e in TRAINED:
        out[f"train_{e}/train_accuracy"] = fmean(demo_stages.logged(Path(pipe.output_dir), f"train_{e}", "reward/arithmetic/mean"))
        out[f"train_{e}/pass@1"] = ran[f"train_{e}/pass@1"]
    return out


def _advantages(r: torch.Tensor, G: int) -> dict[str, torch.Tensor]:
    return {"none": r, "mean": group_advantages(r, G, scale="none"), "group": group_advantages(r, G, scale="group")}


def _gradient(model, batch, adv: torch.Tensor) -> torch.Tensor:
    """grad of (1/N) sum_i A_i log pi(y_i | x_i), flattened over every parameter."""
    model.zero_grad(set_to_none=True)
    logp = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1])
    seq = (logp * batch.completion_mask).sum(dim=1)
    (adv * seq).mean().backward()
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


def _variance(g: torch.Tensor) -> float:
    """E||g - g_bar||^2 over the rows of g [batches, params]."""
    return float(((g - g.mean(dim=0)) ** 2).sum(dim=1).mean())


def _relative_variance(g: torch.Tensor) -> float:
    """E||g - g_bar||^2 / ||g_bar||^2 over the rows of g [batches, params]; NaN when every batch's
    rewards were equal within their groups (no gradient, nothing to compare)."""
    mean = g.mean(dim=0)
    signal = (mean**2).sum()
    if not signal > 0:
        return float("nan")
    return float(((g - mean) ** 2).sum(dim=1).mean() / signal)
