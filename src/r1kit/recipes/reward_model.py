"""Reward model from pairwise preferences: InstructGPT's Bradley-Terry reward model (Ouyang et al.
2022) or the per-step form of Christiano et al. 2017.

    build (scalar-head model from a causal LM, pairs) -> held-out accuracy before
          -> loop: B pairs -> rewards of chosen and rejected -> pair loss -> step -> log
          -> save model/ (an HF directory) -> held-out accuracy after -> eval.json

The model is `AutoModelForSequenceClassification` with one output, built from the causal LM's
weights (the backbone) plus a new linear `score` head (see `r1kit.models.value_head`), so the saved
directory loads anywhere with transformers, and as a reward function with `model:PATH`.

- `loss: bradley_terry`: r(x, y) is the head's output at the last token of prompt + completion;
  loss -log sigmoid(r_c - r_r - margin) (the margin column, Llama 2), plus optional reward
  centring center_coef * mean((r_c + r_r)^2) (Eisenstein et al. 2023).
- `loss: christiano`: the head gives a reward at every completion position; a completion's return
  is their sum and P(c > r) = softmax over the pair of the returns. Margins and centring do not apply.

Sequences are scored without an eos token, because reward functions see decoded text. Next to the
weights, `r1kit_reward.json` records the template and the pooling (last token or sum), which
`r1kit.rewards.model` needs to score completions as training did.
Simplifications: one epoch-free stream of shuffled pairs; no ensembling.

The run skeleton (r1kit/train/run.py) gives it checkpoints that resume exactly (run.save_every,
--resume), the Ctrl-C / SIGTERM guard and torchrun (each rank takes batch_size / world_size pairs a
step) and LoRA (model.lora_r: adapters on the backbone, the new head trained in full, merged into a
full directory at the end so that `model:PATH` loads it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from r1kit.algorithms import bradley_terry_loss, christiano_pair_loss
from r1kit.config import DataArgs, ModelArgs, NonNegativeFloat, NonNegativeInt, OptimArgs, PositiveInt, RunArgs
from r1kit.data.preference import PairBatch, PreferenceArgs, collate_pairs, encode_pairs, load_pairs
from r1kit.errors import R1kitError
from r1kit.models.load import load_tokenizer, training_options
from r1kit.models.lora import apply_lora, is_peft_model, load_adapter
from r1kit.models.value_head import load_scalar_model, save_scalar_model, sequence_scalar, token_scalars
from r1kit.report.logger import console
from r1kit.rewards.model import META_FILE
from r1kit.train.pairs import fit_pairs
from r1kit.train.run import Run
from r1kit.train.validate import check_pairs

POOLING = {"bradley_terry": "last", "christiano": "sum"}


@dataclass
class RewardModelConfig:
    """Reward-model training on preference pairs."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The starting point: a causal-LM directory (a new scalar head is added) or a reward model."""
    data: DataArgs = field(default_factory=lambda: DataArgs(test_size=200))
    """Pairs: data.path / data.test_path (files or datasets by name; prompt, chosen, rejected as
    text or chat messages, [margin]), else the built-in arithmetic pairs; data.template renders
    the prompts."""
    pref: PreferenceArgs = field(default_factory=PreferenceArgs)
    """Label noise (flip_fraction) and the built-in set's rejected kinds."""
    loss: Literal["bradley_terry", "christiano"] = "bradley_terry"
    """Bradley-Terry on last-token rewards (InstructGPT) or per-step rewards summed (Christiano et al. 2017)."""
    center_coef: NonNegativeFloat = 0.0
    """Reward centring coefficient (Eisenstein et al. 2023; TRL uses 0.01); bradley_terry only."""
    use_margin: bool = True
    """Subtract the pairs' `margin` column inside the sigmoid (Llama 2); bradley_terry only."""
    steps: PositiveInt = 200
    """Optimizer steps."""
    batch_size: PositiveInt = 16
    """Pairs per step (under torchrun, split among the ranks)."""
    micro_batch_pairs: NonNegativeInt = 0
    """Pairs per forward/backward pass; 0: the whole batch. The step's gradient is accumulated over
    passes of at most this many pairs, each weighted by its share of the batch's pairs, which
    bounds activation memory without changing the update."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for the forward passes in training (weights and AdamW stay fp32); auto = bf16
    on a CUDA device that supports it, else fp32."""
    max_length: PositiveInt = 256
    """Longest prompt + completion in tokens (completions are cut to fit)."""
    eval_batch_size: PositiveInt = 64
    """Pairs per forward pass when measuring held-out accuracy."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-5))
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging (run.eval_every measures held-out accuracy during training)."""


def train(config: RewardModelConfig) -> Path:
    """Train a reward model; returns the run directory (the model is in run_dir/model)."""
    _check(config)
    with Run(config, "rm") as run:
        tokenizer = load_tokenizer(config.model.path)
        train_rows, test_rows = load_pairs(config.data, config.pref, "train"), load_pairs(config.data, config.pref, "test")
        encode = dict(template=config.data.template, system_prompt=config.data.system_prompt, max_length=config.max_length)
        train_pairs, truncated = encode_pairs(tokenizer, train_rows, **encode)
        test_pairs, _ = encode_pairs(tokenizer, test_rows, **encode)
        model = load_reward_model(config, tokenizer.pad_token_id, run.device, run.weights("model"))
        check_pairs(model, train_pairs, config.data)  # before run.create: rows the model cannot take
        check_pairs(model, test_pairs, config.data, "test")
        run_dir = run.create()
        run.tokenizer, pad = tokenizer, tokenizer.pad_token_id

        def run_eval() -> dict[str, float]:
            return evaluate_pairs(model, test_pairs, test_rows, pad, POOLING[config.loss], config.eval_batch_size)

        flipped = sum(bool(r.get("flipped")) for r in train_rows)
        run.evaluate_before(run_eval, **{"data/pairs": len(train_pairs), "data/flipped": flipped, "data/truncated": truncated})
        if run.is_main:
            console.print(f"rm: {len(train_pairs)} pairs ({flipped} flipped), {len(test_pairs)} held out, loss {config.loss}; held-out accuracy {run.results['before']['accuracy']:.3f}")

        fit_pairs(
            run, model, train_pairs, lambda learner, idx, batch: pair_loss(learner, batch, config), steps=config.steps,
            batch_size=config.batch_size, optim=config.optim, micro_batch_pairs=config.micro_batch_pairs, precision=config.precision,
            evaluate=run_eval, line_keys=("loss/rm", "rm/accuracy", "rm/margin", "eval/accuracy"),
        )  # fmt: skip

        if is_peft_model(model):  # merged, so that `model:PATH` loads a full directory; scores as the adapters do
            model = model.merge_and_unload()
        if run.is_main:
            save_reward_model(model, tokenizer, run_dir / "model", config)  # before evaluation: nothing trained is lost
        run.evaluate_after(lambda samples: run_eval(), config.steps)
        if run.is_main:
            run.write_results()
            console.print(f"rm done: held-out accuracy {run.results['before']['accuracy']:.3f} -> {run.results['after']['accuracy']:.3f}; run {run_dir}")
    return run_dir


def _check(config: RewardModelConfig) -> None:
    if config.loss == "christiano" and config.center_coef:
        raise R1kitError("center_coef applies to loss=bradley_terry only; set it to 0 for christiano")


def load_reward_model(config: RewardModelConfig, pad_token_id: int, device, checkpoint: Path | None):
    """The scalar-head model to train: from model.path (a new head) or the checkpoint's weights;
    with model.lora_r, LoRA adapters on the backbone and the head trained in full."""
    path = checkpoint if checkpoint is not None and not config.model.lora_r else config.model.path
    model = training_options(load_scalar_model(str(path), pad_token_id, config.model.dtype, str(device)), config.model)
    if not config.model.lora_r:
        return model
    return load_adapter(model, checkpoint) if checkpoint is not None else apply_lora(model, config.model, task_type="SEQ_CLS")


def pair_loss(model, batch: PairBatch, config: RewardModelConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured pair loss over a batch, and its metrics (loss, batch accuracy, mean margin)."""
    B = batch.num_pairs
    scalars = token_scalars(model, batch.input_ids, batch.attention_mask)  # [2B, L]
    rewards = sequence_scalar(scalars, batch.attention_mask, batch.completion_mask, POOLING[config.loss])  # [2B]
    if config.loss == "christiano":
        steps, m = scalars[:, -batch.completion_mask.shape[1] :], batch.completion_mask  # [2B, C] per-step rewards
        loss = christiano_pair_loss(steps[:B], m[:B], steps[B:], m[B:], torch.ones(B, device=steps.device))
    else:
        margin = batch.margin if config.use_margin and bool(batch.margin.any()) else None
        loss = bradley_terry_loss(rewards[:B], rewards[B:], margin, config.center_coef)
    r_c, r_r = rewards[:B].detach(), rewards[B:].detach()
    return loss, {
        "loss/rm": float(loss.detach()),
        "rm/accuracy": float((r_c > r_r).float().mean()),
        "rm/margin": float((r_c - r_r).mean()),
        "rm/chosen": float(r_c.mean()),
        "rm/rejected": float(r_r.mean()),
    }


@torch.no_grad()
def evaluate_pairs(model, pairs, rows, pad_id: int, pooling: str, batch_size: int = 64) -> dict[str, float]:
    """Held-out pairwise accuracy (ties count half), mean margin r_c - r_r and, when the rows
    carry a `kind` column, accuracy per kind (`accuracy/<kind>`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    margins = []
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start : start + batch_size], pad_id).to(device)
        r = sequence_scalar(token_scalars(model, batch.input_ids, batch.attention_mask), batch.attention_mask, batch.completion_mask, pooling)
        B = batch.num_pairs
        margins.extend((r[:B] - r[B:]).tolist())
    model.train(was_training)
    wins = [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]
    out = {"accuracy": sum(wins) / len(wins), "margin": sum(margins) / len(margins)}
    by_kind: dict[str, list[float]] = defaultdict(list)
    for row, w in zip(rows, wins):
        if row.get("kind"):
            by_kind[row["kind"]].append(w)
    out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())})
    return out


def save_reward_model(model, tokenizer, path: Path, config: RewardModelConfig) -> Path:
    """The HF directory plus `r1kit_reward.json` (template and pooling, for `model:PATH`)."""
    save_scalar_model(model, tokenizer, path)
    meta = {"pooling": POOLING[config.loss], "loss": config.loss, "template": config.data.template, "system_prompt": config.data.system_prompt}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    return path
