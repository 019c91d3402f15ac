"""Cold-start SFT (DeepSeek-R1 stage 1): supervised fine-tuning on chain-of-thought responses in
`<think>…</think><answer>…</answer>` form, loss on response tokens only.

Also serves "SFT from the base on rejection-sampled data" and SFT distillation: any rows with a
prompt and a response column. Simplifications: packing lets attention cross example boundaries;
evaluation is greedy accuracy and pass@1 over k samples on the task's test split.

    build (model, rows) -> evaluate before -> train -> evaluate after -> save model/ and eval.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r1kit import accel
from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, RunArgs
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import evaluate
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_tokenizer, load_trainable, resolve_device, save_model
from r1kit.report.logger import MetricLogger, console
from r1kit.train.run import create_run
from r1kit.train.supervised import pack, tokenize_examples, train_supervised


@dataclass
class SFTConfig:
    """Cold-start SFT."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The model to fine-tune."""
    data: DataArgs = field(default_factory=DataArgs)
    """Training rows (prompt + response column) and the test split."""
    optim: OptimArgs = field(default_factory=OptimArgs)
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation on the test split before and after training."""
    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 32
    """Examples (or packed rows) per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_length: int = 256
    """Longest example in tokens (longer ones are truncated and counted)."""
    packing: bool = False
    """Pack examples into rows of exactly max_length tokens."""
    completion_only: bool = True
    """Loss on response tokens only (prompt tokens masked)."""
    response_column: str = "cot"
    """Column holding the target response (`cot` for built-in tasks; `completion` for sampled data)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast where the device supports it (auto = on CUDA with bf16), else fp32."""
    eval_before: bool = True
    """Evaluate the starting model too (the before/after table)."""


def train(config: SFTConfig) -> Path:
    """Run SFT; returns the run directory (the model is in run_dir/model)."""
    device = resolve_device(config.model.device)
    run_dir = create_run(config, "sft", str(device))
    tokenizer = load_tokenizer(config.model.path)
    model = accel.apply(load_trainable(config.model), device, config.run.accel)
    rows = load_split(config.data, "train", required=("prompt", config.response_column))
    test_rows = load_split(config.data, "test")
    pairs = [(render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt), _text(r[config.response_column], config.response_column)) for r in rows]
    examples, truncated = tokenize_examples(tokenizer, pairs, config.max_length, config.completion_only)
    if config.packing:
        examples = pack(examples, config.max_length)
    score, extract = scorer_for(config.data)

    def run_eval(step: int) -> dict[str, float]:
        return evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, processes=config.run.rollout_processes)

    results = {}
    if config.eval_before:
        results["before"] = run_eval(0)
    logger = MetricLogger(run_dir, config.run.tensorboard)
    logger.log({"data/examples": len(examples), "data/truncated": truncated}, 0)
    losses = train_supervised(
        model, examples, pad_id=tokenizer.pad_token_id, steps=config.steps, batch_size=config.batch_size,
        grad_accum=config.grad_accum, optim=config.optim, logger=logger, seed=config.run.seed,
        precision=config.precision, log_every=config.run.log_every, eval_every=config.run.eval_every,
        on_eval=run_eval, progress=config.run.progress, description="sft", chunked_head=config.model.chunked_lm_head,
    )
    samples: list[dict] = []
    results["after"] = evaluate(model, tokenizer, test_rows, score, extract, config.eval, config.data.template, config.data.system_prompt, samples_out=samples, processes=config.run.rollout_processes)
    logger.log({f"eval/{k}": v for k, v in results["after"].items()}, config.steps)
    logger.close()
    results["loss_first"], results["loss_last"] = losses[0], losses[-1]
    save_model(model, tokenizer, run_dir / "model")
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples[:50]))
    console.print(f"sft done: loss {losses[0]:.3f} -> {losses[-1]:.3f}; greedy acc {results.get('before', {}).get('greedy_acc', float('nan')):.3f} -> {results['after']['greedy_acc']:.3f}; run {run_dir}")
    return run_dir


def _text(value, column: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # chat messages
        return str(value[-1].get("content", ""))
    raise R1kitError(f"column {column!r} must hold text (or chat messages), got {type(value).__name__}")
