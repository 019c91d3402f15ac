"""Direct preference optimisation: DPO (Rafailov et al. 2023) and, by `loss_type`, conservative DPO,
robust DPO, IPO and the reference-free SimPO (see `r1kit.algorithms.dpo_loss`); with `rpo_alpha` > 0,
RPO (Pang et al. 2024): the chosen completion's mean per-token NLL, times rpo_alpha, is added to
the loss (`r1kit.algorithms.chosen_nll`).

    build (policy, pairs) -> reference log-probs of every pair, once -> evaluate before
          -> loop: B pairs -> log pi(chosen), log pi(rejected) -> dpo_loss -> step -> log
          -> evaluate after -> save model/ and eval.json

Reference log-probs are computed once, before the first update, for the training and the held-out
pairs, and kept as two numbers per pair; no reference model stays in memory. With `ref_model`
empty the reference is the policy's own starting weights, scored before training starts, so no
second model is ever loaded; SimPO needs no reference at all.

Evaluation, before and after: on held-out pairs, the implicit-reward accuracy (the loss's own
rewards; exactly 0.5 before training, where policy = reference, ties counting half), the
log-likelihood accuracy log pi(chosen) > log pi(rejected) (does the policy itself prefer the chosen
completion), the mean implicit-reward margin and the chosen completions' mean per-token NLL; on the
task's test split, greedy accuracy and pass@1 (r1kit.eval.evaluate), to show whether preference
tuning costs task accuracy.
Completions end with the eos token, so the policy also learns where to stop.
Simplifications: no padding-free packing; the pairs' prompts are rendered with data.template.

The run skeleton (r1kit/train/run.py) gives it LoRA (model.lora_r: the adapters start at zero, so
the starting policy, and with it the reference, is the base model), checkpoints that resume
exactly (the reference log-probs are kept in them), the Ctrl-C / SIGTERM guard and torchrun (each
rank takes batch_size / world_size pairs a step and computes the reference log-probs itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from r1kit import accel
from r1kit.algorithms import chosen_nll, completion_logprobs, dpo_loss, masked_sum
from r1kit.config import DataArgs, EvalArgs, ModelArgs, NonNegativeFloat, NonNegativeInt, OptimArgs, PositiveFloat, PositiveInt, Range, RunArgs
from r1kit.data.preference import EncodedPair, PairBatch, PreferenceArgs, collate_pairs, encode_pairs, load_pairs
from r1kit.data.tasks import get_task
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import check_chunked_head, load_model, load_tokenizer, save_model
from r1kit.report.logger import console
from r1kit.train.pairs import fit_pairs
from r1kit.train.run import Run
from r1kit.train.validate import check_pairs


@dataclass
class DPOConfig:
    """DPO-family training on preference pairs."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The policy to tune (usually the SFT model)."""
    ref_model: str = ""
    """Reference model path; empty = the policy's starting weights (scored before training, no copy kept)."""
    data: DataArgs = field(default_factory=lambda: DataArgs(test_size=200))
    """Pairs: data.path / data.test_path (files or datasets by name; prompt, chosen, rejected as text
    or chat messages), else the built-in arithmetic pairs; data.task also names the task whose test
    split measures task accuracy."""
    pref: PreferenceArgs = field(default_factory=PreferenceArgs)
    """Label noise (flip_fraction) and the built-in set's rejected kinds."""
    loss_type: Literal["sigmoid", "cdpo", "ipo", "robust", "simpo"] = "sigmoid"
    """DPO (Rafailov et al. 2023), conservative DPO, IPO (Azar et al. 2023), robust DPO (Chowdhury et al. 2024), SimPO (Meng et al. 2024)."""
    beta: PositiveFloat = 0.1
    """Strength of the implicit KL constraint (SimPO: the reward scale, ~2)."""
    label_smoothing: Annotated[float, Range(ge=0, lt=0.5)] = 0.0
    """cdpo / robust / simpo: the assumed label-flip rate epsilon."""
    simpo_gamma: float = 0.5
    """SimPO target reward margin gamma."""
    rpo_alpha: NonNegativeFloat = 0.0
    """RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization"; TRL's `rpo_alpha`):
    weight of the chosen completion's mean per-token NLL added to the loss; 0 = the loss alone.
    DPO alone may lower the chosen answer's likelihood too (only the margin matters to it)."""
    steps: PositiveInt = 200
    """Optimizer steps."""
    batch_size: PositiveInt = 16
    """Pairs per step (under torchrun, split among the ranks)."""
    micro_batch_pairs: NonNegativeInt = 0
    """Pairs per forward/backward pass; 0: the whole batch. The step's gradient is accumulated over
    passes of at most this many pairs (each weighted by its share of the batch's pairs), which
    bounds activation memory without changing the update; RPO's NLL term is a token mean per pass
    (the batch's token mean when the passes' chosen completions have equal total lengths)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for the policy's forward passes in training (weights and AdamW stay fp32);
    auto = bf16 on a CUDA device that supports it, else fp32."""
    max_length: PositiveInt = 256
    """Longest prompt + completion in tokens (completions are cut to fit)."""
    eval_batch_size: PositiveInt = 64
    """Pairs per forward pass when scoring (reference log-probs, held-out metrics)."""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-6, warmup_steps=10))
    """Optimiser and schedule."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Task evaluation (greedy accuracy, pass@1 over eval.k samples) before and after."""
    task_eval: bool = True
    """Measure task accuracy on data.task's test split before and after (skipped when data.task is empty)."""
    task_eval_size: NonNegativeInt = 100
    """Test rows for the task evaluation."""


def train(config: DPOConfig) -> Path:
    """Run DPO; returns the run directory (the policy, or its LoRA adapter, is saved in run_dir/model)."""
    with Run(config, "dpo") as run:
        tokenizer = load_tokenizer(config.model.path)
        train_rows, test_rows = load_pairs(config.data, config.pref, "train"), load_pairs(config.data, config.pref, "test")
        encode = dict(template=config.data.template, system_prompt=config.data.system_prompt, max_length=config.max_length, add_eos=True)
        train_pairs, truncated = encode_pairs(tokenizer, train_rows, **encode)
        test_pairs, _ = encode_pairs(tokenizer, test_rows, **encode)
        task_eval = _task_evaluator(config, tokenizer)
        model = run.policy(config.model)
        check_pairs(model, train_pairs, config.data)  # before run.create: rows the model cannot take
        check_pairs(model, test_pairs, config.data, "test")
        run_dir = run.create()
        run.tokenizer, pad = tokenizer, tokenizer.pad_token_id
        # From the starting weights, so a resumed run takes them from its checkpoint.
        ref_train, ref_test = run.once("reference_logps", lambda: reference_logps(config, model, train_pairs, test_pairs, pad))

        def run_eval() -> dict[str, float]:
            return {**evaluate_pairs(config, model, test_pairs, ref_test, pad), **(task_eval(model) if task_eval else {})}

        def step_loss(learner, idx: list[int], batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
            ref = None if ref_train is None else tuple(r[idx].to(batch.input_ids.device) for r in ref_train)
            return pair_loss(config, learner, batch, ref)

        flipped = sum(bool(r.get("flipped")) for r in train_rows)
        run.evaluate_before(run_eval, **{"data/pairs": len(train_pairs), "data/flipped": flipped, "data/truncated": truncated})
        if run.is_main:
            console.print(f"dpo ({config.loss_type}, beta {config.beta}, rpo_alpha {config.rpo_alpha}): {len(train_pairs)} pairs ({flipped} flipped), {len(test_pairs)} held out")

        fit_pairs(
            run, model, train_pairs, step_loss, steps=config.steps, batch_size=config.batch_size, optim=config.optim,
            micro_batch_pairs=config.micro_batch_pairs, precision=config.precision, evaluate=run_eval,
            line_keys=("loss/dpo", "rewards/accuracy", "rewards/margin"),
        )  # fmt: skip

        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
        run.evaluate_after(lambda samples: run_eval(), config.steps)
        if run.is_main:
            run.write_results()
            _print_summary(run.results, run_dir)
    return run_dir


def _print_summary(results: dict[str, Any], run_dir: Path) -> None:
    b, a = results["before"], results["after"]
    line = f"dpo done: held-out pref accuracy {b['pref/accuracy']:.3f} -> {a['pref/accuracy']:.3f} (log-lik {b['pref/logp_accuracy']:.3f} -> {a['pref/logp_accuracy']:.3f})"
    if "greedy_acc" in a:
        line += f"; task greedy acc {b['greedy_acc']:.3f} -> {a['greedy_acc']:.3f}, pass@1 {b.get('pass@1', float('nan')):.3f} -> {a.get('pass@1', float('nan')):.3f}"
    console.print(f"{line}; run {run_dir}")


# --------------------------------------------------------------------------------------------
# Log-probabilities


def sequence_logps(model, batch: PairBatch, chunked_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs [2B] (chosen rows first) and completion lengths [2B]."""
    C = batch.completion_mask.shape[1]
    logp = completion_logprobs(model, batch.input_ids, batch.attention_mask, C, chunked_head=chunked_head)  # [2B, C]
    return masked_sum(logp, batch.completion_mask, dim=-1), batch.completion_mask.sum(-1).to(logp.dtype)


@torch.no_grad()
def score_pairs(model, pairs: list[EncodedPair], pad_id: int, batch_size: int, chunked_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(chosen) [N] and log pi(rejected) [N] of every pair, in batches, on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start : start + batch_size], pad_id).to(device)
        logps, _ = sequence_logps(model, batch, chunked_head)
        chosen.append(logps[: batch.num_pairs].cpu())
        rejected.append(logps[batch.num_pairs :].cpu())
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def reference_logps(config: DPOConfig, policy, train_pairs, test_pairs, pad_id: int):
    """(train, test) reference log-probs, each a (chosen [N], rejected [N]) pair, or (None, None)
    for SimPO. Computed once; a separately loaded reference model goes out of scope on return."""
    if config.loss_type == "simpo":
        return None, None
    ref = policy  # the starting weights: scored before any update, so no copy is needed
    if config.ref_model:
        device = str(next(policy.parameters()).device)
        loaded = load_model(config.ref_model, config.model.dtype, device, config.model.attn_implementation)
        ref = check_chunked_head(accel.apply(loaded, torch.device(device), accel.current()), config.model)  # the policy's fast paths
    return tuple(score_pairs(ref, pairs, pad_id, config.eval_batch_size, config.model.chunked_lm_head) for pairs in (train_pairs, test_pairs))


# --------------------------------------------------------------------------------------------
# Loss and evaluation


def pair_loss(config: DPOConfig, model, batch: PairBatch, ref: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured DPO-family loss (+ rpo_alpha * NLL of the chosen side) over a batch, and the
    TRL-style metrics."""
    B = batch.num_pairs
    logps, lengths = sequence_logps(model, batch, config.model.chunked_lm_head)
    pref_loss, r_c, r_r = dpo_loss(
        logps[:B], logps[B:], *(ref if ref is not None else (None, None)),
        beta=config.beta, loss_type=config.loss_type, label_smoothing=config.label_smoothing,
        simpo_gamma=config.simpo_gamma, chosen_len=lengths[:B], rejected_len=lengths[B:],
    )  # fmt: skip
    nll = chosen_nll(logps[:B], lengths[:B])
    loss = pref_loss + config.rpo_alpha * nll if config.rpo_alpha else pref_loss
    return loss, {
        "loss/dpo": float(pref_loss.detach()),
        "loss/nll": float(nll.detach()),
        "loss/total": float(loss.detach()),
        "rewards/chosen": float(r_c.mean()),
        "rewards/rejected": float(r_r.mean()),
        "rewards/accuracy": float((r_c > r_r).float().mean()),
        "rewards/margin": float((r_c - r_r).mean()),
        "logps/chosen": float(logps[:B].detach().mean()),
        "logps/rejected": float(logps[B:].detach().mean()),
    }


@torch.no_grad()
def evaluate_pairs(config: DPOConfig, model, pairs: list[EncodedPair], ref: tuple[torch.Tensor, torch.Tensor] | None, pad_id: int) -> dict[str, float]:
    """Held-out implicit-reward accuracy (ties half), log-likelihood accuracy, mean margin and the
    chosen completions' mean per-token NLL."""
    pc, pr = score_pairs(model, pairs, pad_id, config.eval_batch_size, config.model.chunked_lm_head)
    chosen_len = torch.tensor([len(p.chosen) for p in pairs], dtype=pc.dtype)
    rejected_len = torch.tensor([len(p.rejected) for p in pairs], dtype=pc.dtype)
    _, r_c, r_r = dpo_loss(
        pc, pr, *(ref if ref is not None else (None, None)), beta=config.beta, loss_type=config.loss_type,
        label_smoothing=config.label_smoothing, simpo_gamma=config.simpo_gamma, chosen_len=chosen_len, rejected_len=rejected_len,
    )  # fmt: skip
    margin = r_c - r_r
    return {
        "pref/accuracy": float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean()),
        "pref/logp_accuracy": float((pc > pr).float().mean()),
        "pref/margin": float(margin.mean()),
        "pref/chosen_nll": float(chosen_nll(pc, chosen_len)),
    }


def _task_evaluator(config: DPOConfig, tokenizer) -> Evaluator | None:
    """Greedy accuracy, pass@1 ... on the task's test split, or None without task_eval or a task."""
    if not (config.task_eval and config.data.builtin_task):
        return None
    task = get_task(config.data.builtin_task, **config.data.task_params)
    rows = task.generate("test", config.task_eval_size, seed=config.data.seed)
    return Evaluator(tokenizer, rows, task.reward, task.extract_answer, config.eval, config.data.template, config.data.system_prompt, config.run.rollout_processes, task=config.data.builtin_task)
