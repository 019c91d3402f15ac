"""The findings: each claim quoted from the documents r1kit was started from (or the R1 paper),
the experiment that tests it, and the criterion it is held to.

A criterion is a function of one seed's metrics, written here before any run and never moved to
make a finding pass; its margin is fixed in the code and stated in its text. A finding is held on
a seed when its criterion is true on that seed's metrics; `held` in findings.json lists the seeds.
A finding with no experiment yet has `run = None` and is reported as not implemented (held: null).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from r1kit.findings import demo_stages, generalize, language, search_rewards, sharpen, training, variance

Metrics = Mapping[str, float]
RunFn = Callable[[int, Path, str], dict[str, float]]
"""run(seed, workdir, size) -> one seed's metrics; size is "full" or "smoke" (seconds, for tests)."""

# The seed documents the quotes come from (each quote is verbatim).
VIDEO_NOTES = "seeds: notes on a video explanation of DeepSeek-R1's reinforcement learning (RLHF, GRPO, distillation)"
R1_EXPLAINED = "seeds: summary of the video \"Reinforcement Learning in DeepSeek R1 Explained\""
RL_REVIEW = "seeds: \"Deepseek R1 - RL review\" (notes on EZ Encoder Academy's videos)"


@dataclass(frozen=True)
class Finding:
    """One claim and the test it is held to."""

    name: str
    claim: str
    """The claim, quoted."""
    source: str
    """Where the quote comes from."""
    setup: str = ""
    """What the experiment trains and measures."""
    criterion: str = ""
    """The criterion in words; `held` is the same test in code."""
    held: Callable[[Metrics], bool] | None = None
    run: RunFn | None = None
    plot: tuple[str, ...] = ()
    """The metrics drawn side by side in the report (one bar each, a dot per seed)."""

    @property
    def implemented(self) -> bool:
        return self.run is not None and self.held is not None


ROUNDING = 1e-12
"""Slack for float64 rounding in a criterion's own arithmetic, far below any metric's resolution (a
pass@1 over 80 prompts x 16 samples moves in steps of 1/1280). Without it a difference exactly at
its margin can fail: 0.96328125 - 0.91328125 is 0.05 (64 samples of 1280) but computes as
0.04999999999999993."""


def _ge(x: float, bound: float) -> bool:
    return x >= bound - ROUNDING


def _le(x: float, bound: float) -> bool:
    return x <= bound + ROUNDING


def _gap(after: str, before: str, margin: float) -> Callable[[Metrics], bool]:
    """metrics[after] - metrics[before] >= margin (the demo's margins: wider than the seed-to-seed
    noise of an 80-item test split)."""
    return lambda m: _ge(m[after] - m[before], margin)


def _variance_cut(m: Metrics) -> bool:
    # Both baselines must cut the no-baseline estimator's noise by a quarter or more.
    return _le(m["rel_var/mean"], 0.75 * m["rel_var/none"]) and _le(m["rel_var/group"], 0.75 * m["rel_var/none"])


def _grpo_matches_ppo(m: Metrics) -> bool:
    # GRPO must learn (as r1_zero_learns asks) and end level with PPO or above, within 0.05.
    return _ge(m["grpo/pass@1"] - m["base/pass@1"], 0.08) and _ge(m["grpo/pass@1"] - m["ppo/pass@1"], -0.05)


def _generalizes(m: Metrics) -> bool:
    # RL's out-of-distribution pass@1 holds (no more than 0.05 below the base's) and beats SFT's by 0.05 or more.
    return _ge(m["rl/ood/pass@1"] - m["base/ood/pass@1"], -0.05) and _ge(m["rl/ood/pass@1"] - m["sft/ood/pass@1"], 0.05)


def _mixing_removed(m: Metrics) -> bool:
    # R1-Zero mixes (5% of samples or more); the consistency reward halves that or better, at a cost of 0.10 pass@1 at most.
    return (_ge(m["r1_zero/mixed"], 0.05) and _le(m["consistent/mixed"], 0.5 * m["r1_zero/mixed"])
            and _le(m["r1_zero/pass@1"] - m["consistent/pass@1"], 0.10))  # fmt: skip


def _sharpens(m: Metrics) -> bool:
    gain_1, gain_k = m["rl/pass@1"] - m["base/pass@1"], m["rl/pass@large"] - m["base/pass@large"]
    return _ge(gain_1, 0.05) and _le(gain_k, gain_1 / 2)


DEMO_SETUP = ("The demo pipeline's first two stages (configs/demo.yaml) on sums of three one-digit numbers: a "
              "1M-parameter base pretrained once and cached, then per seed R1-Zero (40 steps of GRPO on the base with "
              "R1-Zero's accuracy and format rewards, 8 prompts x 8 samples a step); 80 held-out prompts, pass@1 over "
              f"{demo_stages.EVAL_SAMPLES} samples at temperature 1; format: the share of those samples in the R1 format.")

FINDINGS: tuple[Finding, ...] = (
    Finding("r1_zero_learns", "It highlights the use of reinforcement learning without supervised data, emphasizing the "
            "self-evolution aspect of the model's learning process", VIDEO_NOTES, DEMO_SETUP,
            "r1_zero pass@1 - base pass@1 >= 0.08", _gap("r1_zero/pass@1", "base/pass@1", 0.08),
            demo_stages.r1_zero, ("base/pass@1", "r1_zero/pass@1")),
    Finding("length_grows", "the model's ability to generate longer responses through reinforcement learning", VIDEO_NOTES,
            DEMO_SETUP, "r1_zero mean sampled length - base mean sampled length >= 1 token",
            _gap("r1_zero/mean_length", "base/mean_length", 1.0), demo_stages.r1_zero, ("base/mean_length", "r1_zero/mean_length")),
    Finding("cold_start_helps", "R1 uses initial supervised CoT data", R1_EXPLAINED, training.COLD_START_SETUP,
            "grpo pass@1 - r1_zero pass@1 >= 0.05", _gap("grpo/pass@1", "r1_zero/pass@1", 0.05),
            training.cold_start_helps, ("r1_zero/pass@1", "grpo/pass@1", "r1_zero_40/pass@1")),
    Finding("language_mixing", "potential side effects of training language models solely on reinforcement learning, "
            "such as the model mixing languages", VIDEO_NOTES, language.SETUP,
            "r1_zero mixed share >= 0.05; consistent mixed share <= 0.5 x r1_zero's; r1_zero pass@1 - consistent pass@1 <= 0.10",
            _mixing_removed, language.run, ("base/mixed", "r1_zero/mixed", "consistent/mixed")),
    Finding("grpo_matches_ppo", "A key advantage of GRPO is that it doesn't require training a separate value function, "
            "simplifying the training process.", VIDEO_NOTES, training.PPO_SETUP,
            "grpo pass@1 - base pass@1 >= 0.08, and grpo pass@1 - ppo pass@1 >= -0.05", _grpo_matches_ppo,
            training.grpo_matches_ppo, ("base/pass@1", "ppo/pass@1", "grpo/pass@1")),
    Finding("kl_limits_hacking", "without this term, the model might engage in \"reward hacking,\" prioritizing maximizing "
            "reward over generating useful and factual responses", VIDEO_NOTES, training.KL_SETUP,
            f"ppo_kl{training.KL_LARGE} pass@1 - ppo_kl{training.KL_SMALL} pass@1 >= 0.05",
            _gap(f"ppo_kl{training.KL_LARGE}/pass@1", f"ppo_kl{training.KL_SMALL}/pass@1", 0.05), training.kl_limits_hacking,
            ("sft/pass@1", f"ppo_kl{training.KL_SMALL}/pass@1", f"ppo_kl{training.KL_LARGE}/pass@1")),
    Finding("baselines_cut_variance", "Monte Carlo estimation as an approximation, leading to high variance due to reliance "
            "on a limited sample of trajectories, and introduces the concept of baselines as a variance reduction technique",
            VIDEO_NOTES, variance.SETUP,
            "rel. variance with the mean baseline <= 0.75 x without, and with group normalisation <= 0.75 x without",
            _variance_cut, variance.run, ("rel_var/none", "rel_var/mean", "rel_var/group")),
    Finding("off_policy_reuse", "Policy ratio: Ratio of the new policy to the old policy along with the advantage function.",
            R1_EXPLAINED, training.OFF_POLICY_SETUP, "mu4 pass@1 - mu1 pass@1 >= 0.05", _gap("mu4/pass@1", "mu1/pass@1", 0.05),
            training.off_policy_reuse, ("base/pass@1", "mu1/pass@1", "mu4/pass@1", "mu4_noclip/pass@1")),
    Finding("outcome_vs_process", "the challenges of using process reward models in reinforcement learning, highlighting the "
            "difficulty of dividing problems into sub-problems and assigning rewards to individual steps", VIDEO_NOTES,
            search_rewards.PROCESS_SETUP, "outcome pass@1 - process pass@1 >= 0.05", _gap("outcome/pass@1", "process/pass@1", 0.05),
            search_rewards.outcome_vs_process, ("sft/pass@1", "process/pass@1", "outcome/pass@1")),
    Finding("mcts_vs_rl", "Monte Carlo Tree Search, a technique that explores successful solution paths more extensively, "
            "but still yields inferior results compared to reinforcement learning approaches", VIDEO_NOTES,
            search_rewards.MCTS_SETUP, "rl greedy accuracy - mcts (value model) accuracy >= 0.05", _gap("rl/greedy_acc", "mcts/acc", 0.05),
            search_rewards.mcts_vs_rl, ("base/greedy_acc", "mcts/acc", "rl/greedy_acc")),
    Finding("distill_beats_small_rl", "knowledge distillation, a technique to transfer knowledge from a large, pre-trained "
            "model (\"big brother\") to a smaller model", VIDEO_NOTES, training.DISTILL_SETUP,
            "distilled pass@1 - student_rl pass@1 >= 0.05", _gap("distilled/pass@1", "student_rl/pass@1", 0.05),
            training.distill_beats_small_rl, ("student_rl/pass@1", "distilled/pass@1", "distilled_kd/pass@1")),
    Finding("sft_memorizes_rl_generalizes", "A paper summarized it as \u201cSFT Memorizes, RL Generalizes\u201d", RL_REVIEW,
            generalize.SETUP, "rl ood pass@1 - base ood pass@1 >= -0.05, and rl ood pass@1 - sft ood pass@1 >= 0.05",
            _generalizes, generalize.run, ("base/ood/pass@1", "sft/ood/pass@1", "rl/ood/pass@1")),
    Finding("rl_sharpens", "while RLVR-trained models outperform their base models at smaller values of k (e.g., k=1), "
            "base models achieve higher pass@k score when k is large",
            "paper: Yue et al. 2025, Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base "
            "Model? (arXiv 2504.13837), abstract",
            sharpen.SETUP, f"RL pass@1 gain over the base >= 0.05, and its pass@{sharpen.K} gain (pass@large) <= half its pass@1 gain",
            _sharpens, sharpen.run, ("base/pass@1", "rl/pass@1", "base/pass@large", "rl/pass@large")),
)

NAMES = tuple(f.name for f in FINDINGS)


def by_name(name: str) -> Finding:
    for f in FINDINGS:
        if f.name == name:
            return f
    raise KeyError(name)
