"""language_mixing (DeepSeek-R1, section 2.3.2): R1-Zero's chain of thought mixed languages, and R1's
language-consistency reward removed the mixing at a small cost in accuracy.

A base that knows two languages for the same reasoning: the demo's base pretraining, at the demo
student's width (0.29M parameters), on a corpus whose worked solutions (untagged and tagged) join
their partial results with English words (`7+8=15 then 15+6=21 so 21`) or Greek ones (`7+8=15
μετά 15+6=21 άρα 21`), one language per document, and a tenth of them switching language part way
(`ArithmeticTask(languages=..., code_switch=...)`); its character vocabulary gains the Greek
letters. It is pretrained once (`run.seed: 0`), cached, and shared by every seed. From it, per
seed: R1-Zero (GRPO with the demo's R1-Zero rewards and settings, for 200 steps) and the same GRPO
with the language-consistency reward added at weight 1.0, R1's direct sum of accuracy and
consistency (`consistent`).

A sample is mixed when its chain of thought (the `<think>` text; the whole text without tags) has
words of two scripts. Each model is evaluated on the demo's held-out prompts with the demo's
sampling (the pipeline's own evaluation settings), and the sampled completions give `mixed` (the
share that is mixed), `latin_share` (the mean share of Latin-script words, over samples with
words) and `pass@1`.

How the setup came to be (the criterion never changed). The first runs used the demo's 1M base
(1000 steps) and the demo's 40 GRPO steps. Its base: pass@1 0.76 (greedy 1.00), 5% of samples
mixed. R1-Zero kept both languages and mixed 0.069-0.081 of samples; the consistency reward moved
most Greek to English in 40 steps (Latin-word share 0.41-0.50 -> 0.83-0.86) at no more than 0.016
pass@1 but left the mixed share at 0.078-0.081: a reward proportional to the English words scores
a half-switched chain above a Greek one, so mixing is the way from Greek to English, and its mean
was still rising at step 40 (0.78-0.83). With 120 steps on that base (chosen on pilot seeds 7
and 8, not reported; 80 steps on 7-9 came too close to half) it held on seeds 0-2 (R1-Zero mixed
0.084/0.066/0.081, consistent 0.022 each), but the finding then took 10.5 minutes, over the 8 a
finding may take alone. The base is therefore the
student's width, which pretrains and trains about three times faster; on pilot seeds 7-9 (not
reported) it mixed 0.034 before RL, and at 120 steps the consistent arm stayed at 0.037 (R1-Zero
0.081/0.062/0.078, too close to half), at 200 steps 0.022/0.025/0.016 against R1-Zero's
0.072/0.062/0.078: 200 steps it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from r1kit.config import load
from r1kit.demo import DEFAULT_CONFIG
from r1kit.findings import demo_stages
from r1kit.recipes.pipeline import PipelineConfig, StageSpec
from r1kit.rewards.language import cot_scripts

NAME = "language_mixing"
CODE_SWITCH = 0.1
"""The share of worked documents that switch language part way: the base mixes, but modestly."""
BASE = {"task_params": {"languages": ["en", "el"], "code_switch": CODE_SWITCH}, "steps": 1000,
        "tiny": demo_stages.demo_stage("student_base").config["tiny"]}
"""Laid over the demo's base stage: the bilingual corpus, 1000 steps instead of the demo's 600 (after
600 a 1M bilingual base copied the prompt's operands wrong too often: greedy accuracy 0.34), and
the student's width."""
STEPS = 200
"""GRPO steps of both arms (the demo's R1-Zero settings otherwise): long enough for the consistency
reward to finish moving the Greek chains to English."""
CONSISTENCY = {"name": "language", "weight": 1.0, "kwargs": {"target": "en"}}
"""R1's language-consistency reward (the share of target-language words), summed with accuracy."""
MODELS = ("base", "r1_zero", "consistent")
SETUP = ("A bilingual base: the demo's base pretraining at the demo student's width (0.29M parameters, 1000 steps) "
         "on the demo's corpus (sums of three one-digit numbers) with every worked solution, untagged or tagged, "
         "written in words of English (`7+8=15 then 15+6=21 so 21`) or "
         f"Greek (`7+8=15 μετά 15+6=21 άρα 21`), one language per document, {CODE_SWITCH:g} of them switching language at "
         "a random word; pretrained once and cached. Per seed from it: R1-Zero GRPO with the demo's R1-Zero rewards and "
         f"settings but {STEPS} steps (of 8 prompts x 8; accuracy + 0.5 x format), and the same GRPO plus the language-consistency "
         "reward for English at weight 1.0 (consistent). A sample is mixed when its chain of thought has words of both "
         f"scripts; mixed share, mean Latin-word share and pass@1 over the 80 held-out prompts x {demo_stages.EVAL_SAMPLES} samples at temperature 1.")


def run(seed: int, workdir: Path, size: str) -> dict[str, float]:
    pipe = demo_stages.config(seed, workdir, size, stages(), name=NAME, base=demo_stages.base_stage("base", BASE))
    demo_stages.metrics(pipe)  # trains the stages (skipped when done); the samples are measured below
    out: dict[str, float] = {}
    for stage, (metrics, completions) in demo_stages.sampled(Path(pipe.output_dir), MODELS, like="r1_zero").items():
        out[f"{stage}/pass@1"] = metrics["pass@1"]
        out.update({f"{stage}/{k}": v for k, v in mixing(completions).items()})
    return out


def stages() -> list[StageSpec]:
    """R1-Zero from the base, and the same GRPO with the consistency reward added."""
    r1_zero_rewards = load(DEFAULT_CONFIG, [], PipelineConfig).recipe_defaults["grpo"]["rewards"]
    grpo = {"grpo": {"steps": STEPS}}
    return [
        StageSpec(name="r1_zero", recipe="grpo", start="base", config=grpo),
        StageSpec(name="consistent", recipe="grpo", start="base", config={**grpo, "rewards": [*r1_zero_rewards, CONSISTENCY]}),
    ]


def mixing(completions: Sequence[str]) -> dict[str, float]:
    """`mixed`: the share of completions whose chain of thought has words of two scripts or more;
    `latin_share`: the mean share of Latin-script words over completions with words (NaN if none).
    Tags are markup, not words: `<answer>` left in a completion without `<think>` is not English."""
    scripts = [cot_scripts(c) for c in completions]
    worded = [s for s in scripts if s]
    return {
        "mixed": sum(len(set(s)) > 1 for s in scripts) / len(scripts) if scripts else math.nan,
        "latin_share": sum(s.count("latin") / len(s) for s in worded) / len(worded) if worded else math.nan,
    }
