"""Base-model pretraining for the demo: a tiny causal LM trained from scratch on a synthetic corpus
written by a task generator, so the demo has a "base model" without any hub.

The corpus mixes styles (bare answers, untagged working, the tagged R1 format), so the base is a
plausible stand-in for a pretrained LM: it sometimes reasons, sometimes uses the tags and is
sometimes right, leaving room for RL. The result is cached under `cache_dir`, keyed by a hash of
everything that shapes it, so a second `make demo` reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.config import EvalArgs, OptimArgs, RunArgs
from r1kit.data.tasks import get_task
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import evaluate
from r1kit.models.load import resolve_device, save_model
from r1kit.models.tiny import TinyModelConfig, build_char_tokenizer, build_tiny_model
from r1kit.report.logger import MetricLogger, console
from r1kit.train.run import create_run
from r1kit.train.supervised import pack, tokenize_examples, train_supervised


@dataclass
class PretrainConfig:
    """Pretraining of a tiny base model on a task's synthetic corpus."""

    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model."""
    task: str = "arithmetic"
    """Built-in task whose generator writes the corpus (it must have pretrain_documents)."""
    task_params: dict = field(default_factory=dict)
    """Difficulty of the task, e.g. {n_operands: [2, 3], digits: 1}."""
    documents: int = 20000
    """Documents in the corpus."""
    style_weights: list[float] = field(default_factory=lambda: [0.4, 0.3, 0.3])
    """Weights of the document styles: bare answer, untagged working, tagged R1 format."""
    max_length: int = 128
    """Packed row length in tokens."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """Packed rows per step."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=3e-3, warmup_steps=20, weight_decay=0.01))
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging (with `cache`, the run directory is the cache entry)."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation of the base model on the task's test split."""
    test_size: int = 100
    """Test rows for the base model's evaluation."""
    cache: bool = True
    """Reuse a finished base with the same settings from cache_dir."""
    cache_dir: str = ".cache/r1kit"
    """Where cached base models live."""
    device: str = "auto"
    """Device to train on."""


def cache_key(config: PretrainConfig) -> str:
    shaping = {k: v for k, v in asdict(config).items() if k not in ("run", "cache", "cache_dir", "eval", "test_size", "device")}
    shaping["seed"] = config.run.seed
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


def train(config: PretrainConfig) -> Path:
    """Pretrain (or reuse the cached) base model; returns its run directory (model in run_dir/model)."""
    cached = None
    if config.cache:
        cached = Path(config.cache_dir) / f"base-{cache_key(config)}"
        if _complete(cached):
            console.print(f"pretrain: reusing cached base model {cached}")
            return cached
        # Build under a private name and rename when complete, so two processes building the same
        # base never see each other's half-written directory.
        config.run.output_dir, config.run.name = config.cache_dir, f"{cached.name}.partial-{os.getpid()}"
    task = get_task(config.task, **config.task_params)
    if not hasattr(task, "pretrain_documents"):
        raise R1kitError(f"task {config.task!r} cannot write a pretraining corpus; use arithmetic")
    device = resolve_device(config.device)
    run_dir = create_run(config, "pretrain", str(device))
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, config.tiny, seed=config.run.seed).to(device)
    docs = task.pretrain_documents(config.documents, seed=config.run.seed, style_weights=config.style_weights)
    examples, _ = tokenize_examples(tokenizer, [("", d) for d in docs], config.max_length, completion_only=False)
    rows = pack(examples, config.max_length)
    logger = MetricLogger(run_dir, config.run.tensorboard)
    n_params = sum(p.numel() for p in model.parameters())
    logger.log({"model/params": n_params, "data/documents": len(docs), "data/rows": len(rows)}, 0)
    console.print(f"pretrain: {n_params / 1e6:.2f}M-parameter {config.tiny.arch} on {len(docs)} documents ({len(rows)} rows of {config.max_length} tokens)")
    losses = train_supervised(
        model, rows, pad_id=tokenizer.pad_token_id, steps=config.steps, batch_size=config.batch_size,
        grad_accum=1, optim=config.optim, logger=logger, seed=config.run.seed, precision="auto",
        log_every=config.run.log_every, progress=config.run.progress, description="pretrain",
    )
    save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
    test_rows = task.generate("test", config.test_size, seed=0)
    result = evaluate(model, tokenizer, test_rows, task.reward, task.extract_answer, config.eval, "tiny", processes=config.run.rollout_processes)
    logger.log({f"eval/{k}": v for k, v in result.items()}, config.steps)
    logger.close()
    (run_dir / "eval.json").write_text(json.dumps({"after": result, "loss_first": losses[0], "loss_last": losses[-1]}, indent=2))
    console.print(f"pretrain done: loss {losses[0]:.3f} -> {losses[-1]:.3f}; base greedy acc {result['greedy_acc']:.3f}, pass@1 {result.get('pass@1', float('nan')):.3f}")
    if cached is None:
        return run_dir
    if cached.exists() and not _complete(cached):
        shutil.rmtree(cached, ignore_errors=True)  # left by an interrupted run of an older version
    try:
        os.rename(run_dir, cached)
    except OSError:  # another process finished the same base first: keep theirs
        shutil.rmtree(run_dir, ignore_errors=True)
    return cached


def _complete(path: Path) -> bool:
    return (path / "model" / "config.json").is_file() and (path / "eval.json").is_file()
