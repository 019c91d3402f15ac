"""Distillation of a teacher into a (usually smaller) student, three ways, chosen by `mode`:

- `sft`: DeepSeek-R1's distillation (DeepSeek-AI 2025, section 2.4): supervised fine-tuning of the
  student on the teacher's rejection-sampled completions (a `sample` stage's samples.jsonl, read
  with response_column=completion). Only text passes between the models, so their tokenizers may
  differ, as they did for R1 into Qwen and Llama.
- `logits`: token-level knowledge distillation (Hinton et al. 2015): on the training rows'
  prompt + response, teacher-forced, the student matches the teacher's next-token distribution at
  every response token: loss = D(teacher, student) + hard_label_weight x cross-entropy.
- `on_policy`: GKD (Agarwal et al. 2024): with probability `lmbda` a batch's responses are sampled
  from the student itself (the rollout engine, no gradient), else taken from the data; the same
  divergence is computed on those sequences, so the student is taught on the states it visits.

    build (student, teacher, rows) -> evaluate before -> loop: a batch (data rows or the student's
          own samples) -> student and teacher logits -> distill_loss (+ CE) -> step -> log
          -> evaluate after -> save model/ and eval.json

The divergence (forward KL, reverse KL or GKD's generalised JSD, times temperature^2) is
`r1kit.algorithms.distill_loss`. The logit modes need the two models to share a tokenizer: same
vocabulary and the same bos/eos/unk tokens. The models' vocabulary sizes may still differ by
padding rows (Qwen2.5-0.5B has 151936 logits, Qwen2.5-7B 152064, one tokenizer): logits are cut to
the shorter, which still covers every token the tokenizer can produce.

The run skeleton (r1kit/train/run.py) gives it LoRA on the student (model.lora_r), checkpoints
that resume exactly (the data position and GKD's coin included), the Ctrl-C / SIGTERM guard and
torchrun: each rank takes batch_size / world_size rows of every batch and holds its own teacher.

Simplifications: the teacher is held in memory beside the student; with grad_accum (and under
torchrun) a step's loss is the mean of its batches' losses (not weighted by token counts); the
hard-label term applies to data batches only (on a student-sampled batch it would teach the student
its own samples); GKD's sequence-level KD (teacher-sampled outputs) is a `sample` stage + mode sft.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

import torch

from r1kit.algorithms import distill_loss, position_ids_from_mask
from r1kit.config import DataArgs, EvalArgs, ModelArgs, NonNegativeFloat, OptimArgs, PositiveFloat, PositiveInt, Probability, Range, RunArgs
from r1kit.data.chat import load_supervised_rows, row_segments
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.data.stream import BatchStream, set_random_state
from r1kit.eval.evaluate import Evaluator
from r1kit.models.load import load_tokenizer, save_model
from r1kit.report.logger import console
from r1kit.rollout import RolloutEngine, SamplingParams
from r1kit.train.distributed import rank_slice
from r1kit.train.microbatch import backward_pieces
from r1kit.train.optim import optimizer_step
from r1kit.train.precision import autocast
from r1kit.train.reference import load_frozen
from r1kit.train.run import Run
from r1kit.train.supervised import IGNORE, Example, collate, fit_supervised, pack, tokenize_segments
from r1kit.train.validate import check_examples

SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token")
"""Special tokens whose role must agree for logit distillation. Padding is left out: it is masked."""


@dataclass
class DistillConfig:
    """Distillation of a teacher into a student."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The student, trained and saved (any causal LM for mode sft; the teacher's tokenizer otherwise)."""
    teacher: ModelArgs = field(default_factory=ModelArgs)
    """The teacher, frozen. Mode sft does not load it (its completions are in the data) unless eval_teacher."""
    data: DataArgs = field(default_factory=DataArgs)
    """Training rows (prompt + response_column; a sample stage's samples.jsonl) and the test split."""
    optim: OptimArgs = field(default_factory=OptimArgs)
    """Optimiser and schedule of the student."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation of the student on the test split before and after."""
    mode: Literal["sft", "logits", "on_policy"] = "sft"
    """`sft` on teacher samples (DeepSeek-R1), `logits`: teacher-forced KD (Hinton et al. 2015),
    `on_policy`: GKD (Agarwal et al. 2024). See the module docstring."""
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    """Logit modes: KL(teacher||student) (classic KD), KL(student||teacher) (MiniLLM, mode-seeking),
    or GKD's generalised Jensen-Shannon divergence with teacher weight `beta`."""
    beta: Probability = 0.5
    """jsd only: weight of the teacher in the mixture (GKD's beta; 0 = forward KL, 1 = reverse KL)."""
    temperature: PositiveFloat = 1.0
    """Softmax temperature of both distributions in the divergence; the loss is scaled by
    temperature^2 so its gradient keeps its size (Hinton et al. 2015)."""
    hard_label_weight: NonNegativeFloat = 0.0
    """Logit modes: add this x the cross-entropy on the data's response tokens (0 = pure KD)."""
    lmbda: Probability = 0.5
    """on_policy: probability that a batch's responses are sampled from the student (GKD's lambda;
    1 = fully on-policy, 0 = supervised KD on the data)."""
    sample_temperature: PositiveFloat = 1.0
    """on_policy: temperature of the student's sampling."""
    sample_top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """on_policy: nucleus sampling of the student."""
    max_new_tokens: PositiveInt = 64
    """on_policy: longest sampled response."""
    stop: list[str] = field(default_factory=list)
    """on_policy: stop strings of the student's sampling, e.g. ["</answer>"]."""
    steps: PositiveInt = 200
    """Optimizer steps."""
    batch_size: PositiveInt = 16
    """Examples per micro-batch (under torchrun, split among the ranks)."""
    grad_accum: PositiveInt = 1
    """Micro-batches per optimizer step."""
    max_length: PositiveInt = 256
    """Longest prompt + response of a data row in tokens (longer ones are truncated and counted)."""
    packing: bool = False
    """mode sft: pack examples into rows of exactly max_length tokens."""
    response_column: str = "completion"
    """Column holding the response (`completion` in a sample stage's rows; `cot` for a built-in task)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for the forward passes where the device supports it (auto = on CUDA with bf16)."""
    eval_before: bool = True
    """Evaluate the starting student too (the before/after table)."""
    eval_teacher: bool = False
    """Also evaluate the teacher on the test split (eval.json's `teacher`): the gap the student closes."""


def train(config: DistillConfig) -> Path:
    """Distil the teacher into the student; returns the run directory (the student in run_dir/model)."""
    _check(config)
    with Run(config, "distill") as run:
        tokenizer = load_tokenizer(config.model.path)
        if config.mode != "sft":
            check_shared_tokenizer(tokenizer, load_tokenizer(config.teacher.path), config.model.path, config.teacher.path, config.mode)
        needs_responses = not (config.mode == "on_policy" and config.lmbda >= 1.0)
        rows = load_supervised_rows(config.data, config.response_column) if needs_responses else load_split(config.data, "train", required=("prompt",))
        prompt_ids, examples, truncated = encode(config, tokenizer, rows, needs_responses)
        evaluator = Evaluator.for_data(tokenizer, config.data, config.eval, config.run.rollout_processes)
        model = run.policy(config.model)
        check_examples(model, pack(examples, config.max_length) if config.packing and examples else examples or [], config.data)
        teacher = run.accelerate(load_frozen(config.teacher, device=run.device)) if config.mode != "sft" or config.eval_teacher else None
        if config.mode != "sft":
            check_vocab_sizes(model, teacher, tokenizer, config)
        run_dir = run.create()
        run.tokenizer = tokenizer
        run.evaluate_before((lambda: evaluator(model)) if config.eval_before else None, **{"data/examples": len(prompt_ids), "data/truncated": truncated})
        if config.eval_teacher and run.is_main and "teacher" not in run.results:
            run.results["teacher"] = evaluator(teacher)
        if run.is_main:
            console.print(f"distill ({config.mode}{'' if config.mode == 'sft' else ', ' + config.divergence}): {len(prompt_ids)} rows into {config.model.path}" + ("" if teacher is None else f" from {config.teacher.path}"))

        if config.mode == "sft":
            fit_supervised(
                run, model, pack(examples, config.max_length) if config.packing else examples, steps=config.steps, batch_size=config.batch_size,
                grad_accum=config.grad_accum, optim=config.optim, precision=config.precision, chunked_head=config.model.chunked_lm_head,
                evaluate=lambda: evaluator(model),
            )  # fmt: skip
        else:
            fit_kd(config, run, model, teacher, tokenizer, prompt_ids, examples, evaluate=lambda: evaluator(model))

        if run.is_main:
            save_model(model, tokenizer, run_dir / "model")  # before evaluation: nothing trained is lost
        samples = run.evaluate_after(lambda out: evaluator(model, out), config.steps)
        if run.is_main:
            run.write_results(samples)
            r = run.results
            console.print(f"distill done: loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}; greedy acc {r.get('before', {}).get('greedy_acc', float('nan')):.3f} -> {r['after']['greedy_acc']:.3f}; run {run_dir}")
    return run_dir


def _check(config: DistillConfig) -> None:
    if config.mode != "sft" and not config.teacher.path:
        raise R1kitError(f"mode={config.mode} needs the teacher's logits; set teacher.path to the teacher model")
    if config.mode != "sft" and config.model.chunked_lm_head:
        raise R1kitError(f"mode={config.mode} compares the student's full logits with the teacher's, which model.chunked_lm_head never builds; set model.chunked_lm_head=false (it serves mode=sft)")
    if config.eval_teacher and not config.teacher.path:
        raise R1kitError("eval_teacher is true but teacher.path is empty; set teacher.path or eval_teacher=false")


def encode(config: DistillConfig, tokenizer, rows: Sequence[dict[str, Any]], with_responses: bool) -> tuple[list[list[int]], list[Example] | None, int]:
    """Prompt token ids, examples (a prompt and its response, or a conversation: r1kit/data/chat.py)
    in step with them (None without responses) and how many examples were truncated to max_length.
    An example's prompt is everything before its first trained token; a row whose response falls
    wholly past max_length is dropped from both lists."""
    if not with_responses:
        prompts = [render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt) for r in rows]
        return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts], None, 0
    if config.mode == "on_policy" and "prompt" not in rows[0]:
        raise R1kitError("mode=on_policy samples the student from each row's prompt; give rows with a `prompt` (text or chat messages) and a response, not `messages` conversations")
    segments = [row_segments(r, config.data, tokenizer, config.response_column) for r in rows]
    examples, truncated = tokenize_segments(tokenizer, segments, config.max_length)
    prompt_ids = [e.input_ids[: next(i for i, label in enumerate(e.labels) if label != IGNORE)] for e in examples]
    return prompt_ids, examples, truncated


def check_shared_tokenizer(student, teacher, student_name: str, teacher_name: str, mode: str = "logits") -> None:
    """An R1kitError unless both tokenizers map every token to the same id and agree on bos/eos/unk."""
    sv, tv = student.get_vocab(), teacher.get_vocab()
    problem = ""
    if sv != tv:
        common = sv.keys() & tv.keys()
        moved = sum(sv[t] != tv[t] for t in common)
        problem = f"their vocabularies differ ({len(sv.keys() - tv.keys())} tokens only in the student, {len(tv.keys() - sv.keys())} only in the teacher, {moved} with different ids)"
    else:
        for role in SPECIAL_ROLES:
            s, t = getattr(student, role, None), getattr(teacher, role, None)
            if s != t:
                problem = f"their {role} differs ({s!r} in the student, {t!r} in the teacher)"
                break
    if problem:
        raise R1kitError(
            f"mode={mode} compares next-token distributions, so student {student_name!r} and teacher {teacher_name!r} "
            f"must share a tokenizer, but {problem}; use mode=sft to distil through the teacher's sampled text"
        )


# --------------------------------------------------------------------------------------------
# Logit distillation


@dataclass
class KDBatch:
    """Sequences the divergence is computed on; L = longest prompt + response."""

    input_ids: torch.Tensor
    """[B, L] long."""
    attention_mask: torch.Tensor
    """[B, L] long: 1 on real tokens (data rows are right-padded, sampled ones left-padded prompts)."""
    targets: torch.Tensor
    """[B, L] bool: the response tokens, whose prediction (from the position before) is distilled."""
    on_policy: bool
    """Sampled from the student (no hard-label term) rather than read from the data."""


def data_batch(examples: Sequence[Example], pad_id: int) -> KDBatch:
    c = collate(examples, pad_id)
    return KDBatch(c["input_ids"], c["attention_mask"], c["labels"] != IGNORE, on_policy=False)


def student_batch(engine: RolloutEngine, prompt_ids: list[list[int]], params: SamplingParams) -> KDBatch:
    """The student's own responses to the prompts (GKD's on-policy data)."""
    rollout = engine.generate(prompt_ids, params)
    targets = torch.cat([torch.zeros_like(rollout.prompt_mask), rollout.completion_mask], dim=1).bool()
    return KDBatch(rollout.input_ids.clone(), rollout.attention_mask.clone(), targets, on_policy=True)


def lm_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits, positions counted from the attention mask (left padding included)."""
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits


def kd_loss(config: DistillConfig, student, teacher, batch: KDBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The step loss of one batch: distill_loss over response tokens (+ hard-label CE on data batches)."""
    device = next(student.parameters()).device
    ids, attn, targets = batch.input_ids.to(device), batch.attention_mask.to(device), batch.targets.to(device)
    with autocast(device, config.precision):
        s_logits = lm_logits(student, ids, attn)[:, :-1]  # [B, L-1, Vs]: position t predicts token t+1
    t_device = next(teacher.parameters()).device
    with torch.no_grad(), autocast(t_device, config.precision):
        t_logits = lm_logits(teacher, ids.to(t_device), attn.to(t_device))[:, :-1].to(device)  # [B, L-1, Vt]
    vocab = min(s_logits.shape[-1], t_logits.shape[-1])  # padding rows past the tokenizer may differ
    s_logits, t_logits = s_logits[..., :vocab], t_logits[..., :vocab]
    mask = targets[:, 1:]  # [B, L-1]
    loss = distill_loss(s_logits, t_logits, mask, config.divergence, config.beta, config.temperature)
    metrics = {"loss/distill": float(loss.detach())}
    if config.hard_label_weight and not batch.on_policy:
        labels = ids[:, 1:].masked_fill(~mask, IGNORE)
        ce = torch.nn.functional.cross_entropy(s_logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=IGNORE)
        loss = loss + config.hard_label_weight * ce
        metrics["loss/hard"] = float(ce.detach())
    metrics["loss/total"] = float(loss.detach())
    return loss, metrics


class Coin:
    """GKD's draw of a batch's source, on-policy with probability lmbda, from a generator of its
    own (so the data order does not depend on lmbda); its state is part of a checkpoint."""

    def __init__(self, seed: int):
        self.rng = random.Random(f"{seed}-gkd")

    def __call__(self, p: float) -> bool:
        return self.rng.random() < p

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_random_state(self.rng, state["rng"])


def fit_kd(config: DistillConfig, run, model, teacher, tokenizer, prompt_ids: list[list[int]], examples: list[Example] | None, evaluate: Callable[[], dict[str, float]]) -> None:
    """The logits / on_policy loop in `run`: grad_accum batches a step, each from the data or
    (with probability lmbda) sampled by the student; prompt_ids[i] is the prompt of examples[i]
    (examples is None when every batch is sampled)."""
    learner = run.learner(model)
    engine = run.rollout_engine(model, tokenizer) if config.mode == "on_policy" and config.lmbda > 0 else None
    lmbda = config.lmbda if engine is not None else 0.0
    opt, sched = run.optimizer(model.parameters(), config.optim, config.steps)
    stream, coin = BatchStream(len(prompt_ids), config.batch_size, config.run.seed), Coin(config.run.seed)
    run.track(stream=stream, coin=coin)
    model.train()
    with run.loop(config.steps, evaluate=evaluate, model=model, line_keys=("loss/distill", "loss/hard", "distill/on_policy_frac")) as loop:
        for step in loop:
            batches = []
            for micro in range(config.grad_accum):
                idx = rank_slice(stream.take(), run.dist, "batch_size")
                if coin(lmbda):
                    seed = config.run.seed * 1_000_003 + step * config.grad_accum + micro + (run.dist.rank << 40)
                    params = SamplingParams(temperature=config.sample_temperature, top_p=config.sample_top_p, max_new_tokens=config.max_new_tokens, stop=list(config.stop), n=1, seed=seed)
                    batches.append(student_batch(engine, [prompt_ids[i] for i in idx], params))
                else:
                    batches.append(data_batch([examples[i] for i in idx], tokenizer.pad_token_id))
            with loop.guard:
                metrics, finite = kd_backward(config, learner, teacher, batches, run.dist)
                grad_norm, lr = optimizer_step(learner, opt, sched, config.optim.max_grad_norm, finite)
                if engine is not None:
                    engine.sync_weights(model)
                run.results.setdefault("loss_first", metrics["loss/distill"])
                run.results["loss_last"] = metrics["loss/distill"]
                tokens = sum(int(b.targets[:, 1:].sum()) for b in batches)
                loop.end_step(step, {**metrics, "grad_norm": grad_norm, "lr": lr}, tokens=tokens)


def kd_backward(config: DistillConfig, learner, teacher, batches: list[KDBatch], dist) -> tuple[dict[str, float], bool]:
    """Back-propagate the mean of the batches' losses; returns their mean metrics (with the share
    of on-policy batches and the sampled completions' mean length) and whether all were finite."""
    sums: dict[str, float] = {}

    def loss_of(batch: KDBatch) -> torch.Tensor:
        loss, m = kd_loss(config, learner, teacher, batch)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
        return loss / len(batches)

    finite = backward_pieces(learner, batches, loss_of, dist)
    metrics: dict[str, Any] = {k: v / len(batches) for k, v in sums.items()}
    metrics["distill/on_policy_frac"] = sum(b.on_policy for b in batches) / len(batches)
    sampled = [n for b in batches if b.on_policy for n in b.targets.sum(dim=1).tolist()]
    if sampled:
        metrics["completion/length_mean"] = sum(sampled) / len(sampled)
    return metrics, finite


def check_vocab_sizes(model, teacher, tokenizer, config: DistillConfig) -> None:
    """Both models must have a logit for every token the shared tokenizer can produce."""
    sizes = {name: getattr(m.config, "vocab_size", None) for name, m in (("student", model), ("teacher", teacher))}
    small = [name for name, n in sizes.items() if isinstance(n, int) and n < len(tokenizer)]
    if small:
        paths = {"student": config.model.path, "teacher": config.teacher.path}
        raise R1kitError(
            f"the {small[0]} {paths[small[0]]!r} has {sizes[small[0]]} logits, fewer than the tokenizer's {len(tokenizer)} tokens; "
            "the logit modes need both models to cover the shared vocabulary (use mode=sft otherwise)"
        )
