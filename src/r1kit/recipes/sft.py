"""Cold-start SFT (DeepSeek-R1 stage 1): supervised fine-tuning on chain-of-thought responses in
`<think>…</think><answer>…</answer>` form, loss on response tokens only.

Also serves "SFT from the base on rejection-sampled data" and SFT distillation: any rows with a
prompt and a response column, or chat conversations in a `messages` column (loss on the assistant
turns, rendered through the tokenizer's chat template: r1kit/data/chat.py). Simplifications: packing lets attention cross example boundaries;
evaluation is greedy accuracy and pass@1 over k samples on the task's test split.

    build (model, rows) -> evaluate before -> train -> evaluate after -> save model/ and eval.json

The run skeleton (r1kit/train/run.py) gives it LoRA (model.lora_r), checkpoints that resume
exactly (run.save_every, --resume), the Ctrl-C / SIGTERM guard and torchrun: each rank takes
batch_size / world_size of every micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r1kit.config import DataArgs, EvalArgs, ModelArgs, OptimArgs, PositiveInt, RunArgs
from r1kit.data.chat import load_supervised_rows, row_segments
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_tokenizer, save_model
from r1kit.report.logger import console
from r1kit.train.run import Run
from r1kit.train.supervised import fit_supervised, pack, tokenize_segments
from r1kit.train.validate import check_examples


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
    steps: PositiveInt = 200
    """Optimizer steps."""
    batch_size: PositiveInt = 32
    """Examples (or packed rows) per micro-batch (under torchrun, split among the ranks)."""
    grad_accum: PositiveInt = 1
    """Micro-batches per optimizer step."""
    max_length: PositiveInt = 256
    """Longest example in tokens (longer ones are truncated and counted)."""
    packing: bool = False
    """Pack examples into rows of exactly max_length tokens."""
    completion_only: bool = True
    """Loss on response tokens only (prompt tokens masked; with `messages`, on assistant turns only)."""
    response_column: str = "cot"
    """Column holding the target response (`cot` for built-in tasks; `completion` for sampled data):
    text, or assistant messages after a message-list `prompt`. Rows with a `messages` column and no
    `prompt` are whole conversations instead (TRL's format), trained on their assistant turns."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast where the device supports it (auto = on CUDA with bf16), else fp32."""
    eval_before: bool = True
    """Evaluate the starting model too (the before/after table)."""


def train(config: SFTConfig) -> Path:
    """Run SFT; returns the run directory (the model, or the LoRA adapter, is in run_dir/model)."""
    with Run(config, "sft") as run:
        tokenizer = load_tokenizer(config.model.path)
        rows = load_supervised_rows(config.data, config.response_column)
        segments = [row_segments(r, config.data, tokenizer, config.response_column) for r in rows]
        examples, truncated = tokenize_segments(tokenizer, segments, config.max_length, config.completion_only)
        if config.packing:
            examples = pack(examples, config.max_length)
        evaluator = Evaluator.for_data(tokenizer, config.data, config.eval, config.run.rollout_processes)
        model = run.policy(config.model)
        check_examples(model, examples, config.data)
        run_dir = run.create()
        run.tokenizer = tokenizer
        run.evaluate_before((lambda: evaluator(model)) if config.eval_before else None, **{"data/examples": len(examples), "data/truncated": truncated})

        fit_supervised(
            run, model, examples, steps=config.steps, batch_size=config.batch_size, grad_accum=config.grad_accum, optim=config.optim,
            precision=config.precision, chunked_head=config.model.chunked_lm_head, evaluate=lambda: evaluator(model),
        )  # fmt: skip

        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
        samples = run.evaluate_after(lambda out: evaluator(model, out), config.steps)
        if run.is_main:
            run.write_results(samples)
            r = run.results
            console.print(f"sft done: loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}; greedy acc {r.get('before', {}).get('greedy_acc', float('nan')):.3f} -> {r['after']['greedy_acc']:.3f}; run {run_dir}")
    return run_dir

