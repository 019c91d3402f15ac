"""Process reward model: a score for every step of a solution (Lightman et al. 2023, "Let's Verify
Step by Step"; Wang et al. 2024, Math-Shepherd) -- the alternative to outcome rewards that
DeepSeek-R1 tried and dropped (section 4.2: a fine-grained step is hard to define, whether an
intermediate step is right is hard to know, and a learned reward invites reward hacking).

    build (policy, scalar-head PRM from a causal LM) -> solutions: the policy's samples of the
          train prompts and best_of_n.n samples of each test prompt, split into steps at
          labels.separator -> a label per step (labels.source) -> held-out step accuracy before
          -> loop: B solutions -> logit at every step's end -> BCE against the labels -> step -> log
          -> held-out step accuracy and AUROC after -> best-of-N on the test split, reranked by the
          PRM (min or product over steps) vs an outcome RM vs majority vote vs oracle
          -> save model/ (an HF directory) with r1kit_prm.json (separator, template)

Labels (r1kit/data/step_labels.py): `task`, the task's own step checker (arithmetic verifies every
partial sum); `rollouts`, Math-Shepherd's labels from labels.rollouts completions of each step's
prefix by the policy (soft: the share reaching the right answer; hard: any); `file`, a JSONL of
`prompt`, `steps`, `labels` (data.path, and data.test_path for the held-out steps; there is then
no policy and no best-of-N).

The held-out solutions, their steps, labels and the trained PRM's scores are written to
test_steps.jsonl in the run directory.

Simplifications: solutions are sampled once before training (no on-policy refresh); the held-out
steps are those of the best-of-N samples; one process (no torchrun). The run skeleton gives exact
resume (the solutions and labels are kept in the checkpoint), the interrupt guard and LoRA.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich import box
from rich.table import Table

from r1kit.algorithms import aggregate_steps, prm_step_loss
from r1kit.config import DataArgs, ModelArgs, OptimArgs, PositiveInt, RunArgs, SamplingArgs
from r1kit.data.io import write_jsonl
from r1kit.data.source import load_split
from r1kit.data.step_labels import checker_labels, load_labelled_steps, shepherd_labels
from r1kit.data.steps import split_steps
from r1kit.data.stream import BatchStream
from r1kit.data.tasks import get_task
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.eval.metrics import auroc, best_of_n, maj_at_k, pass_at_k
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_model, load_tokenizer
from r1kit.models.lora import is_peft_model
from r1kit.models.value_head import save_scalar_model, token_scalars
from r1kit.recipes.reward_model import load_reward_model
from r1kit.report.logger import console
from r1kit.rewards.prm import PRM_META, EncodedSolution, collate_steps, encode_solutions, step_probabilities
from r1kit.train.microbatch import backward_pieces
from r1kit.train.optim import optimizer_step
from r1kit.train.run import Run
from r1kit.train.step_policy import EnginePolicy


@dataclass
class StepLabelArgs:
    """Where each step's label comes from."""

    source: Literal["task", "rollouts", "file"] = "task"
    """`task`: the task's step checker; `rollouts`: Math-Shepherd labels (Wang et al. 2024) from
    the policy's completions of each step's prefix, verified by the task; `file`: data.path's
    `steps` and `labels` columns (PRM800K-like, Lightman et al. 2023)."""
    separator: str = "\n"
    """The text that ends a step (the arithmetic task writes one `a+b=c` per space-separated step)."""
    rollouts: PositiveInt = 4
    """N, completions per step prefix for labels.source=rollouts (Math-Shepherd used 8)."""
    mode: Literal["soft", "hard"] = "soft"
    """Math-Shepherd label: the share of completions reaching the right answer, or whether any does."""


@dataclass
class BestOfNArgs:
    """Reranking N samples per test prompt."""

    n: PositiveInt = 8
    """Samples per test prompt (also the held-out solutions whose steps are evaluated)."""
    orm: str = ""
    """An outcome reward model's directory (`r1kit rm`) to rerank by as well; empty: its row is skipped."""


@dataclass
class PRMConfig:
    """Process reward model training."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The PRM's starting point: a causal-LM directory (a new scalar head is added)."""
    policy: str = ""
    """The model that writes solutions and Math-Shepherd completions; empty: model.path."""
    data: DataArgs = field(default_factory=lambda: DataArgs(train_size=200, test_size=50))
    """Prompts (a task with a verifier) or, with labels.source=file, step-labelled files."""
    labels: StepLabelArgs = field(default_factory=StepLabelArgs)
    """Step labels."""
    samples_per_prompt: PositiveInt = 4
    """Solutions sampled from the policy per training prompt."""
    sampling: SamplingArgs = field(default_factory=SamplingArgs)
    """How the policy samples solutions and completions."""
    best_of_n: BestOfNArgs = field(default_factory=BestOfNArgs)
    """Best-of-N reranking on the test split."""
    steps: PositiveInt = 100
    """Optimizer steps."""
    batch_size: PositiveInt = 32
    """Solutions per step."""
    max_length: PositiveInt = 256
    """Longest prompt + steps in tokens (steps that do not fit whole are left out)."""
    eval_batch_size: PositiveInt = 64
    """Solutions per forward pass when scoring."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-4))
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging (run.eval_every measures held-out steps during training)."""


def train(config: PRMConfig) -> Path:
    """Train a PRM; returns the run directory (the model is in run_dir/model)."""
    _check(config)
    with Run(config, "prm") as run:
        tokenizer = load_tokenizer(config.model.path)
        verify, extract = scorer_for(config.data) if config.labels.source != "file" else (None, None)
        policy = _policy(run, config) if config.labels.source != "file" else None
        model = load_reward_model(config, tokenizer.pad_token_id, run.device, run.weights("model"))
        run_dir = run.create()
        run.tokenizer = tokenizer
        train_set, test_set = run.once("solutions", lambda: (labelled(config, policy, verify, "train"), labelled(config, policy, verify, "test")))
        train_enc = [s for s in encode(config, tokenizer, train_set) if s.ends]  # a solution without steps teaches nothing
        test_enc = encode(config, tokenizer, test_set)
        pad = tokenizer.pad_token_id

        def run_eval() -> dict[str, float]:
            return step_metrics(step_probabilities(model, test_enc, pad, config.eval_batch_size), [s.labels for s in test_enc])

        n_steps = sum(len(s.ends) for s in train_enc)
        run.evaluate_before(run_eval, **{"data/solutions": len(train_enc), "data/steps": n_steps, "data/positive_frac": _positive(train_enc)})
        if run.is_main:
            console.print(f"prm: {len(train_enc)} solutions ({n_steps} steps, {_positive(train_enc):.2f} labelled right) from labels.source={config.labels.source}, "
                          f"{len(test_enc)} held out; held-out step accuracy {run.results['before']['step_accuracy']:.3f}")  # fmt: skip
        fit_steps(run, model, train_enc, config, run_eval)
        run.evaluate_after(lambda samples: run_eval(), config.steps)
        if run.is_main:
            save_prm(model.merge_and_unload() if is_peft_model(model) else model, tokenizer, run_dir / "model", config)
        probs = step_probabilities(model, test_enc, pad, config.eval_batch_size)
        write_jsonl(run_dir / "test_steps.jsonl", [{**r, "labels": e.labels, "scores": p} for r, e, p in zip(test_set, test_enc, probs)])
        if policy is not None:
            run.results["best_of_n"] = rerank(config, test_set, probs, verify, extract)
            console.print(best_of_n_table(run.results["best_of_n"], config.best_of_n.n))
        run.write_results()
        after = run.results["after"]
        console.print(f"prm done: held-out step accuracy {run.results['before']['step_accuracy']:.3f} -> {after['step_accuracy']:.3f}, AUROC {after['auroc']:.3f}; run {run_dir}")
    return run_dir


def _check(config: PRMConfig) -> None:
    if config.labels.source == "file" and not (config.data.path and config.data.test_path):
        raise R1kitError("labels.source=file needs data.path and data.test_path (JSONL with prompt, steps and labels); set both")
    if config.best_of_n.orm and config.labels.source == "file":
        raise R1kitError("best_of_n.orm needs policy samples to rerank, which labels.source=file has none of; remove best_of_n.orm")


def _policy(run: Run, config: PRMConfig) -> EnginePolicy:
    """The solution-writing policy behind a rollout engine (frozen: it is never trained here)."""
    path = config.policy or config.model.path
    tokenizer = load_tokenizer(path)
    model = run.accelerate(load_model(path, config.model.dtype, str(run.device)).eval().requires_grad_(False))
    return EnginePolicy(run.rollout_engine(model, tokenizer), tokenizer, config.sampling, config.data.template, config.data.system_prompt, config.run.seed)


def encode(config: PRMConfig, tokenizer, rows: list[dict[str, Any]]) -> list[EncodedSolution]:
    """Labelled solutions as token ids, prompts rendered with data.template."""
    prompts = [render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt) for r in rows]
    return encode_solutions(tokenizer, prompts, [r["steps"] for r in rows], [r["labels"] for r in rows], config.labels.separator, config.max_length)


def labelled(config: PRMConfig, policy: EnginePolicy | None, verify, split: str) -> list[dict[str, Any]]:
    """Solutions of `split` with per-step labels: rows {prompt, answer, group, text, steps, labels}."""
    lab = config.labels
    if lab.source == "file":
        path = config.data.path if split == "train" else config.data.test_path
        return load_labelled_steps(path, config.data.columns, config.data.train_size if split == "train" else config.data.test_size)
    rows = load_split(config.data, split, required=("prompt", "answer"))
    n = config.samples_per_prompt if split == "train" else config.best_of_n.n
    texts = policy.sample([r["prompt"] for r in rows], n)
    solutions = [{"prompt": r["prompt"], "answer": r["answer"], "group": g, "text": t, "steps": split_steps(t, lab.separator)}
                 for g, (r, group) in enumerate(zip(rows, texts)) for t in group]  # fmt: skip
    if lab.source == "task":
        task = get_task(config.data.builtin_task, **config.data.task_params) if config.data.builtin_task and not config.data.path else None
        if task is None or not hasattr(task, "check_steps"):
            raise R1kitError(f"labels.source=task needs a built-in task with a step checker (arithmetic has one), not {config.data.builtin_task or config.data.path!r}; use labels.source=rollouts")
        labels = checker_labels(task.check_steps, solutions, [s["steps"] for s in solutions])
    else:
        labels = shepherd_labels(policy, verify, solutions, [s["steps"] for s in solutions], lab.separator, lab.rollouts, lab.mode)
    return [{**s, "labels": lab_} for s, lab_ in zip(solutions, labels)]


def fit_steps(run: Run, model, solutions, config: PRMConfig, evaluate) -> None:
    """config.steps optimizer steps of BCE at the step ends, batch_size solutions a step."""
    learner = run.learner(model)
    opt, sched = run.optimizer(model.parameters(), config.optim, config.steps)
    stream = BatchStream(len(solutions), config.batch_size, config.run.seed)
    run.track(stream=stream)
    device, pad = next(model.parameters()).device, run.tokenizer.pad_token_id
    model.train()
    metrics: dict[str, float] = {}

    def loss_of(idx: list[int]) -> torch.Tensor:
        batch = collate_steps([solutions[i] for i in idx], pad).to(device)
        logits = token_scalars(learner, batch.input_ids, batch.attention_mask)  # [B, L]
        loss = prm_step_loss(logits, batch.labels, batch.label_mask)
        m = batch.label_mask.bool()
        predicted, target = logits.detach()[m] > 0, batch.labels[m] >= 0.5
        metrics.update({"loss/prm": float(loss.detach()), "prm/step_accuracy": float((predicted == target).float().mean()) if m.any() else 0.0})
        return loss

    with run.loop(config.steps, evaluate=evaluate, model=model, line_keys=("loss/prm", "prm/step_accuracy", "eval/step_accuracy")) as loop:
        for step in loop:
            idx = stream.take()
            with loop.guard:
                finite = backward_pieces(learner, [idx], loss_of, run.dist)
                grad_norm, lr = optimizer_step(learner, opt, sched, config.optim.max_grad_norm, finite)
                loop.end_step(step, {**metrics, "grad_norm": grad_norm, "lr": lr})


def step_metrics(probs: list[list[float]], labels: list[list[float]]) -> dict[str, float]:
    """Held-out step accuracy (probability > 0.5 vs label >= 0.5), AUROC and the step count."""
    p = [x for row in probs for x in row]
    y = [v >= 0.5 for row in labels for v in row]
    accuracy = sum((a > 0.5) == b for a, b in zip(p, y, strict=True)) / len(p) if p else float("nan")
    return {"step_accuracy": accuracy, "auroc": auroc(p, y), "steps": float(len(p)), "positive_frac": sum(y) / len(y) if y else float("nan")}


def rerank(config: PRMConfig, solutions: list[dict[str, Any]], probs: list[list[float]], verify, extract) -> dict[str, float | str]:
    """Best-of-N accuracy on the test prompts under each selector."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(solutions):
        groups.setdefault(s["group"], []).append(i)
    order = [groups[g] for g in sorted(groups)]
    scores = verify([s["text"] for s in solutions], answer=[s["answer"] for s in solutions])
    correct = [[scores[i] is not None and scores[i] >= 1.0 for i in idx] for idx in order]
    S = max([len(p) for p in probs] + [1])
    table = torch.tensor([p + [0.0] * (S - len(p)) for p in probs])
    mask = torch.tensor([[1] * len(p) + [0] * (S - len(p)) for p in probs])
    out: dict[str, float | str] = {}
    for how in ("min", "prod"):
        agg = aggregate_steps(table, mask, how).tolist()
        out[f"prm_{how}"] = best_of_n([[agg[i] for i in idx] for idx in order], correct)
    if config.best_of_n.orm:
        from r1kit.rewards.model import load_reward_model_fn

        orm = load_reward_model_fn(config.best_of_n.orm)([s["text"] for s in solutions], prompt=[s["prompt"] for s in solutions])
        out["orm"] = best_of_n([[orm[i] if orm[i] is not None else -1e9 for i in idx] for idx in order], correct)
    else:
        out["orm"] = "skipped: no outcome reward model (set best_of_n.orm to an `r1kit rm` run's model directory)"
    out["majority"] = statistics.fmean(maj_at_k([extract(solutions[i]["text"]) for i in idx], c) for idx, c in zip(order, correct))
    out["oracle"] = statistics.fmean(float(any(c)) for c in correct)
    out["pass@1"] = statistics.fmean(pass_at_k(len(c), sum(c), 1) for c in correct)
    return out


def best_of_n_table(result: dict[str, float | str], n: int) -> Table:
    table = Table(title=f"best-of-{n} on the test split", box=box.SIMPLE_HEAD)
    table.add_column("selector", no_wrap=True)
    table.add_column("accuracy", justify="right")
    names = {"prm_min": "PRM (min over steps)", "prm_prod": "PRM (product over steps)", "orm": "outcome RM", "majority": "majority vote",
             "oracle": "oracle (any right)", "pass@1": "one sample (pass@1)"}  # fmt: skip
    for key, name in names.items():
        value = result[key]
        table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


def save_prm(model, tokenizer, path: Path, config: PRMConfig) -> Path:
    """The HF directory plus r1kit_prm.json: what `StepScorer.load` needs to lay out steps."""
    save_scalar_model(model, tokenizer, path)
    meta = {"separator": config.labels.separator, "template": config.data.template, "system_prompt": config.data.system_prompt}
    (path / PRM_META).write_text(json.dumps(meta, indent=2))
    return path


def _positive(solutions) -> float:
    labels = [v for s in solutions for v in s.labels]
    return sum(v >= 0.5 for v in labels) / len(labels) if labels else float("nan")
