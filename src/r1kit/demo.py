"""`r1kit demo [--seeds N]`: the R1 recipe in miniature, on CPU, in minutes.

The pipeline in `configs/demo.yaml` pretrains two tiny bases (a teacher-sized one and a smaller
student; they play the role of DeepSeek-V3-Base, pretrained once, cached and shared by every seed)
and then runs every later stage — R1-Zero, cold start → GRPO → rejection sampling → SFT → GRPO (R1),
distillation and RL on the student — once per seed. It prints per stage the held-out greedy
accuracy, pass@1, maj@k, pass@k and mean length (mean ± sd over seeds), then each finding of the R1
paper the miniature reproduces, as a sentence with its numbers and whether it held on every seed.

One seed runs in `output_dir/`; several run in `output_dir/seed-<s>/`. `output_dir/results.json`:
`{"seeds", "k", "stages": {stage: {metric: [per seed]}}, "findings": [{"name", "claim", "held":
[per seed], "detail"}]}`.
"""

from __future__ import annotations

import json
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from r1kit.config import load
from r1kit.errors import R1kitError
from r1kit.recipes.pipeline import PipelineConfig, run_pipeline
from r1kit.report.logger import console
from r1kit.report.tables import METRICS, mean_sd, stage_metrics, stage_table

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"

Stages = Mapping[str, Mapping[str, float]]  # one seed: stage -> metric -> value


@dataclass(frozen=True)
class Finding:
    """A claim of the R1 paper and the per-seed test the demo holds it to. The margins are fixed
    here, before any run, and are wider than the seed-to-seed noise of an 80-item test split."""

    name: str
    claim: str
    before: tuple[str, str]
    """(stage, metric) compared against..."""
    after: tuple[str, str]
    """...this (stage, metric)."""
    margin: float
    """`after` must reach `before` + margin (a negative margin allows a small shortfall)."""

    def gap(self, stages: Stages) -> float:
        return stages[self.after[0]][self.after[1]] - stages[self.before[0]][self.before[1]]

    def held(self, stages: Stages) -> bool:
        return self.gap(stages) >= self.margin


FINDINGS = (
    Finding("r1_zero_learns", "R1-Zero: RL alone on the base, with rule rewards, raises accuracy",
            ("base", "pass@1"), ("r1_zero", "pass@1"), 0.08),
    Finding("grpo_lifts_cold_start", "GRPO lifts the cold-start SFT model",
            ("sft", "pass@1"), ("grpo", "pass@1"), 0.15),
    Finding("r1_level_with_r1_zero", "R1 (cold start, RL, rejection sampling, SFT, RL) is level with or above R1-Zero",
            ("r1_zero", "pass@1"), ("r1", "pass@1"), -0.02),
    Finding("distill_beats_small_rl", "For a small model, distilling the teacher's samples beats RL on its own",
            ("student_rl", "pass@1"), ("distilled", "pass@1"), 0.05),
    Finding("responses_grow", "Responses grow under RL (R1-Zero's mean completion length rises)",
            ("base", "mean_length"), ("r1_zero", "mean_length"), 1.0),
)


def run_demo(config_path: str | None, overrides: list[str], seeds: int = 1) -> Path:
    """Run the demo pipeline for seeds 0..seeds-1; print the table and findings; return output_dir."""
    if seeds < 1:
        raise R1kitError(f"--seeds must be >= 1, got {seeds}")
    config = load(config_path or DEFAULT_CONFIG, overrides, PipelineConfig)
    root = Path(config.output_dir)
    k = int(config.defaults.get("eval", {}).get("k", 4))
    per_seed: list[dict[str, dict[str, float]]] = []
    for seed in range(seeds):
        pipe = deepcopy(config)
        pipe.seed = seed
        if seeds > 1:
            pipe.output_dir = str(root / f"seed-{seed}")
            console.rule(f"seed {seed} of {seeds}")
        out = run_pipeline(pipe)
        results = json.loads((out / "results.json").read_text())
        per_seed.append({name: stage_metrics(r, k) for name, r in results.items()})
    summary = summarize(per_seed, list(range(seeds)), k)
    console.print(stage_table(summary["stages"], k, f"r1kit demo: held-out test split, {_seeds_text(seeds)}"))
    for f in summary["findings"]:
        console.print(f"{'[green]held[/green]' if all(f['held']) else '[red]did not hold[/red]'}: {f['detail']}")
    (root / "results.json").write_text(json.dumps(summary, indent=2))
    if seeds > 1 and config.report:
        from r1kit.report.seeds import write_seeds_report

        console.print(f"report: {write_seeds_report(root, summary)}")
    return root


def summarize(per_seed: Sequence[Mapping[str, Mapping[str, float]]], seeds: Sequence[int], k: int) -> dict:
    """results.json's content from each seed's stage metrics (the stages of seed 0, in order)."""
    names = list(per_seed[0])
    stages = {name: {m: [s[name][m] for s in per_seed] for m in METRICS} for name in names}
    findings = []
    for f in FINDINGS:
        if not all(f.before[0] in s and f.after[0] in s for s in per_seed):
            continue  # a pipeline without these stages (a user's own demo config)
        held = [f.held(s) for s in per_seed]
        findings.append({"name": f.name, "claim": f.claim, "held": held, "detail": _detail(f, per_seed, held)})
    return {"seeds": list(seeds), "k": k, "stages": stages, "findings": findings}


def _detail(f: Finding, per_seed: Sequence[Stages], held: Sequence[bool]) -> str:
    (b_stage, b_metric), (a_stage, a_metric) = f.before, f.after
    before = _mean_text([s[b_stage][b_metric] for s in per_seed])
    after = _mean_text([s[a_stage][a_metric] for s in per_seed])
    gaps = [f.gap(s) for s in per_seed]
    verdict = "on every seed" if all(held) else "on no seed" if not any(held) else f"on {sum(held)} of {len(held)} seeds"
    return (f"{f.claim}: {b_metric} {b_stage} {before} -> {a_stage} {after} "
            f"(gap {_mean_text(gaps, signed=True)}, smallest {min(gaps):+.3f}; needs >= {f.margin:+.2f}) — held {verdict}")


def _mean_text(values: Sequence[float], signed: bool = False) -> str:
    mean, sd = mean_sd(values)
    sign = "+" if signed else ""
    return f"{mean:{sign}.3f}" if len(values) == 1 else f"{mean:{sign}.3f} ± {sd:.3f}"


def _seeds_text(n: int) -> str:
    return "1 seed" if n == 1 else f"mean ± sd over {n} seeds"

