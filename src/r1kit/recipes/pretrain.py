"""Base-model pretraining for the demo: a tiny causal LM trained from scratch on a synthetic corpus
written by a task generator, so the demo has a "base model" without any hub.

The corpus mixes styles (bare answers, untagged working, the tagged R1 format), so the base is a
plausible stand-in for a pretrained LM: it sometimes reasons, sometimes uses the tags and is
sometimes right, leaving room for RL. The result is cached under `cache_dir`, keyed by a hash of
everything that shapes it, so a second `make demo` reuses it.

It trains in the run skeleton (r1kit/train/run.py) like every recipe: checkpoints that resume
exactly (with cache=false: a cached build starts afresh), the Ctrl-C / SIGTERM guard, torchrun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.config import EvalArgs, NonNegativeInt, OptimArgs, PositiveInt, RunArgs
from r1kit.data.tasks import get_task
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_model, save_model
from r1kit.models.tiny import TinyModelConfig, alphabet_for, build_char_tokenizer, build_tiny_model
from r1kit.report.logger import console
from r1kit.train.run import Run
from r1kit.train.supervised import fit_supervised, pack, tokenize_examples


@dataclass
class PretrainConfig:
    """Pretraining of a tiny base model on a task's synthetic corpus."""

    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model."""
    task: str = "arithmetic"
    """Built-in task whose generator writes the corpus (it must have pretrain_documents)."""
    task_params: dict = field(default_factory=dict)
    """Difficulty of the task, e.g. {n_operands: [2, 3], digits: 1}; arithmetic's `languages` and
    `code_switch` write its worked solutions in words (the vocabulary gains the letters they use)."""
    documents: PositiveInt = 20000
    """Documents in the corpus."""
    style_weights: list[float] = field(default_factory=lambda: [0.4, 0.3, 0.3])
    """Weights of the document styles: bare answer, untagged working, tagged R1 format."""
    max_length: PositiveInt = 128
    """Packed row length in tokens."""
    steps: PositiveInt = 300
    """Optimizer steps."""
    batch_size: PositiveInt = 32
    """Packed rows per step."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=3e-3, warmup_steps=20, weight_decay=0.01))
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging (with `cache`, the run directory is the cache entry)."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation of the base model on the task's test split."""
    test_size: NonNegativeInt = 100
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
        if config.run.resume:
            raise R1kitError(f"pretrain cannot honour run.resume={config.run.resume!r} with cache=true (each attempt builds the base in a directory of its own); set cache=false to resume a pretraining run")
        # Build under a private name and rename when complete, so two processes building the same
        # base never see each other's half-written directory.
        config.run.output_dir, config.run.name = config.cache_dir, f"{cached.name}.partial-{os.getpid()}"
    task = get_task(config.task, **config.task_params)
    if not hasattr(task, "pretrain_documents"):
        raise R1kitError(f"task {config.task!r} cannot write a pretraining corpus; use arithmetic")
    with Run(config, "pretrain") as run:
        docs = task.pretrain_documents(config.documents, seed=config.run.seed, style_weights=config.style_weights)
        tokenizer = build_char_tokenizer(alphabet_for(docs))  # the default vocabulary, plus letters of other scripts the corpus writes
        saved = run.weights("model")
        model = load_model(str(saved), device=str(run.device)) if saved else build_tiny_model(tokenizer, config.tiny, seed=config.run.seed).to(run.device)
        examples, _ = tokenize_examples(tokenizer, [("", d) for d in docs], config.max_length, completion_only=False)
        rows = pack(examples, config.max_length)
        evaluator = Evaluator(tokenizer, task.generate("test", config.test_size, seed=0), task.reward, task.extract_answer, config.eval, "tiny", processes=config.run.rollout_processes, task=config.task)
        run_dir = run.create()
        run.tokenizer = tokenizer
        n_params = sum(p.numel() for p in model.parameters())
        run.evaluate_before(None, **{"model/params": n_params, "data/documents": len(docs), "data/rows": len(rows)})
        if run.is_main:
            console.print(f"pretrain: {n_params / 1e6:.2f}M-parameter {config.tiny.arch} on {len(docs)} documents ({len(rows)} rows of {config.max_length} tokens)")

        fit_supervised(run, model, rows, steps=config.steps, batch_size=config.batch_size, grad_accum=1, optim=config.optim)

        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
        run.evaluate_after(lambda samples: evaluator(model), config.steps)
        run.write_results()
        if run.is_main:
            r = run.results
            console.print(f"pretrain done: loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}; base greedy acc {r['after']['greedy_acc']:.3f}, pass@1 {r['after'].get('pass@1', float('nan')):.3f}")
    if cached is None or not run.is_main:
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
