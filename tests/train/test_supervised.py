"""Supervised training pieces: prompt masking, eos, packing, collation, the token-sum loss, and
grad-accumulation invariance (batch 8 x accum 1 == batch 4 x accum 2) through the run skeleton's
loop (`fit_supervised`)."""

from __future__ import annotations

import copy

import pytest
import torch
from rounding import adam_first_step_tolerance, assert_same_gradients, assert_within, gradient_atol, record_steps, relative_difference, sgd_for_adamw

from r1kit.config import ModelArgs, OptimArgs, RunArgs
from r1kit.data.stream import BatchStream
from r1kit.errors import R1kitError
from r1kit.models.tiny import TinyModelConfig, build_tiny_model
from r1kit.recipes.sft import SFTConfig
from r1kit.report.logger import read_metrics
from r1kit.train.run import Run
from r1kit.train.supervised import IGNORE, Example, collate, fit_supervised, pack, token_loss_sum, tokenize_examples

PROMPT, RESPONSE = "Q: 1+2=?\nA: ", "<think>1+2=3</think><answer>3</answer>"

# Eight (prompt, response) pairs with responses of different lengths, so that micro-batches hold
# different numbers of target tokens (the case a per-micro-batch mean gets wrong).
PAIRS = [
    (f"Q: {a}+{b}=?\nA: ", f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>" if a % 2 else str(a + b))
    for a, b in [(1, 2), (3, 4), (12, 9), (5, 5), (7, 30), (2, 2), (41, 8), (6, 0)]
]


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def small_model(char_tokenizer):
    torch.manual_seed(0)
    return build_tiny_model(char_tokenizer, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), seed=0)


# -- tokenization ------------------------------------------------------------------------------------


def test_tokenize_masks_the_prompt_and_appends_eos(char_tokenizer):
    (ex,), truncated = tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE)], max_length=64)
    p, r = ids(char_tokenizer, PROMPT), ids(char_tokenizer, RESPONSE)
    assert truncated == 0
    assert len(p) == 12 and len(r) == 4 + 5 + 1  # 12 prompt chars; 4 tags + "1+2=3" + "3"
    assert ex.input_ids == p + r + [char_tokenizer.eos_token_id]
    assert ex.labels == [IGNORE] * 12 + r + [char_tokenizer.eos_token_id]


def test_tokenize_without_completion_only_trains_on_the_prompt_too(char_tokenizer):
    (ex,), _ = tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE)], max_length=64, completion_only=False)
    assert ex.labels == ex.input_ids


def test_tokenize_without_eos(char_tokenizer):
    (ex,), _ = tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE)], max_length=64, add_eos=False)
    assert ex.input_ids == ids(char_tokenizer, PROMPT + RESPONSE)
    assert ex.input_ids[-1] != char_tokenizer.eos_token_id


def test_tokenize_truncates_to_max_length_and_counts_it(char_tokenizer):
    examples, truncated = tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE), ("Q: 1\nA: ", "2")], max_length=15)
    assert truncated == 1
    assert [len(e.input_ids) for e in examples] == [15, 10]  # 12 + 3 response tokens kept; 8 + 1 + eos
    assert examples[0].labels[12:] == ids(char_tokenizer, RESPONSE)[:3]


def test_tokenize_drops_examples_with_no_response_token_within_max_length(char_tokenizer):
    examples, truncated = tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE), ("Q: 2\nA: ", "4")], max_length=12)
    assert truncated == 1 and len(examples) == 1  # the first lost its whole response
    with pytest.raises(R1kitError, match="no training example has a response token within max_length=12; raise max_length"):
        tokenize_examples(char_tokenizer, [(PROMPT, RESPONSE)], max_length=12)


# -- packing and batching ------------------------------------------------------------------------------


def test_pack_gives_rows_of_exactly_max_length_in_order(char_tokenizer):
    examples, _ = tokenize_examples(char_tokenizer, PAIRS, max_length=64)
    flat_ids = [t for e in examples for t in e.input_ids]
    flat_labels = [t for e in examples for t in e.labels]
    rows = pack(examples, 16)
    assert len(rows) == len(flat_ids) // 16
    assert all(len(r.input_ids) == 16 and len(r.labels) == 16 for r in rows)
    assert [t for r in rows for t in r.input_ids] == flat_ids[: 16 * len(rows)]  # the tail is dropped
    assert [t for r in rows for t in r.labels] == flat_labels[: 16 * len(rows)]  # prompts stay masked


def test_pack_of_less_than_one_row_keeps_it_whole():
    rows = pack([Example([1, 2, 3], [IGNORE, 2, 3])], 8)
    assert [(r.input_ids, r.labels) for r in rows] == [([1, 2, 3], [IGNORE, 2, 3])]


def test_collate_right_pads_with_masked_labels():
    batch = collate([Example([5, 6, 7], [IGNORE, 6, 7]), Example([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_batches_cover_every_example_once_per_epoch_and_are_reproducible():
    stream = BatchStream(10, 3, seed=5)
    epoch = [stream.take() for _ in range(3)]  # 3 full batches; the 10th example waits for a reshuffle
    seen = [i for b in epoch for i in b]
    assert len(seen) == 9 and len(set(seen)) == 9
    again = BatchStream(10, 3, seed=5)
    assert [again.take() for _ in range(3)] == epoch
    assert sorted(BatchStream(2, 4, seed=0).take()) == [0, 1]  # fewer than a batch: all of them


def test_a_batch_stream_restored_from_its_state_goes_on_as_the_original():
    stream = BatchStream(10, 3, seed=5)
    for _ in range(4):  # into the second epoch
        stream.take()
    state = copy.deepcopy(stream.state_dict())
    expected = [stream.take() for _ in range(5)]
    restored = BatchStream(10, 3, seed=0)
    restored.load_state_dict(state)
    assert [restored.take() for _ in range(5)] == expected


# -- loss ----------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_token_loss_sum_is_the_sum_of_next_token_nll_over_target_tokens(small_model, char_tokenizer):
    examples, _ = tokenize_examples(char_tokenizer, PAIRS[:3], max_length=64)
    batch = collate(examples, char_tokenizer.pad_token_id)
    loss, count = token_loss_sum(small_model, batch)
    with torch.no_grad():
        logp = torch.log_softmax(small_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    expected, n = 0.0, 0
    for b, ex in enumerate(examples):
        for t in range(1, len(ex.labels)):  # token t is predicted from position t - 1
            if ex.labels[t] != IGNORE:
                expected -= float(logp[b, t - 1, ex.labels[t]])
                n += 1
    assert count == n == sum(len(ids(char_tokenizer, r)) + 1 for _, r in PAIRS[:3])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.numerics
def test_grad_accumulation_gives_the_full_batch_gradient(small_model, char_tokenizer):
    examples, _ = tokenize_examples(char_tokenizer, PAIRS, max_length=64)
    pad = char_tokenizer.pad_token_id

    full = copy.deepcopy(small_model)
    loss, n = token_loss_sum(full, collate(examples, pad))
    (loss / n).backward()

    accum = copy.deepcopy(small_model)
    halves = [collate(examples[:4], pad), collate(examples[4:], pad)]
    n_total = sum(int((h["labels"][:, 1:] != IGNORE).sum()) for h in halves)
    assert n_total == n
    for h in halves:
        loss_h, _ = token_loss_sum(accum, h)
        (loss_h / n_total).backward()  # what fit_supervised does: divide by the step's tokens

    naive = copy.deepcopy(small_model)
    for h in halves:
        loss_h, n_h = token_loss_sum(naive, h)
        (loss_h / n_h / 2).backward()  # mean of per-micro-batch means: weights tokens unequally

    assert_same_gradients([grads(accum)], [grads(full)])  # up to summation order (rounding.py)
    # The check has teeth: the naive mean is off by percents on these uneven examples (4.6% here),
    # where rounding moves gradients by about 1e-6.
    assert relative_difference(grads(naive), grads(full)) > 1e-2


def fit(model, tokenizer, examples, out, *, steps: int, batch_size: int, grad_accum: int, optim: OptimArgs, evaluate=None, eval_every: int = 0) -> Run:
    """`fit_supervised` in a run of its own under `out` (fp32, one process)."""
    run_args = RunArgs(output_dir=str(out), name="fit", progress=False, tensorboard=False, eval_every=eval_every)
    config = SFTConfig(model=ModelArgs(device="cpu"), optim=optim, run=run_args, steps=steps, batch_size=batch_size, grad_accum=grad_accum)
    with Run(config, "sft") as run:
        run.create()
        run.tokenizer = tokenizer
        fit_supervised(run, model, examples, steps=steps, batch_size=batch_size, grad_accum=grad_accum, optim=optim, precision="fp32", evaluate=evaluate)
    return run


@pytest.mark.numerics
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_step_of_batch_8_equals_batch_4_with_accum_2(small_model, char_tokenizer, tmp_path, monkeypatch, optimizer):
    """The step is given the full batch's gradient (recorded before the step, so it is compared where
    the claim lives, up to summation order), and moves the weights as that gradient does: SGD in
    proportion to it, to lr times the gradients' difference; Adam's first step, about lr * sign(grad),
    to the bound of `adam_first_step_tolerance` (up to 2 lr where a gradient is near 0)."""
    if optimizer == "sgd":
        sgd_for_adamw(monkeypatch)
    examples, _ = tokenize_examples(char_tokenizer, PAIRS, max_length=64)
    # Same seed: the one shuffled order of the 8 examples is cut into 1 x 8 or 2 x 4.
    halves = BatchStream(8, 4, 0)
    assert BatchStream(8, 8, 0).take() == halves.take() + halves.take()
    # No clipping: a clipped gradient hides a mis-scaled one.
    optim = OptimArgs(lr=0.5 if optimizer == "sgd" else 1e-2, warmup_steps=0, schedule="constant", max_grad_norm=0.0)
    trained = []
    for batch_size, grad_accum in [(8, 1), (4, 2)]:
        model = copy.deepcopy(small_model)
        with record_steps() as steps:
            run = fit(model, char_tokenizer, examples, tmp_path / f"{batch_size}x{grad_accum}", steps=1, batch_size=batch_size, grad_accum=grad_accum, optim=optim)
        trained.append((model, run.results["loss_first"], steps))
    (a, loss_a, steps_a), (b, loss_b, steps_b) = trained
    assert loss_b == pytest.approx(loss_a, rel=1e-5)  # a float32 mean of ~200 token losses, summed in another order
    assert_same_gradients(steps_b, steps_a)
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), small_model.parameters()))
    assert moved > 1e-3  # the step really changed the weights
    for (name, p), q, grad in zip(a.named_parameters(), b.parameters(), steps_a[0]):
        if optimizer == "sgd":
            allowed = optim.lr * gradient_atol(grad) + 2 * torch.finfo(torch.float32).eps * p.detach().abs().double()
        else:
            allowed = adam_first_step_tolerance(grad, gradient_atol(grad), optim.lr, p)
        assert_within(q, p, allowed, name)


def test_fit_supervised_logs_every_step_with_the_lr_that_step_used(small_model, char_tokenizer, tmp_path):
    examples, _ = tokenize_examples(char_tokenizer, PAIRS, max_length=64)
    optim = OptimArgs(lr=1e-2, warmup_steps=4, schedule="linear", min_lr_ratio=0.0)
    evals: list[int] = []

    def evaluate():
        evals.append(len(evals))
        return {"acc": 0.5}

    run = fit(copy.deepcopy(small_model), char_tokenizer, examples, tmp_path, steps=6, batch_size=4, grad_accum=1, optim=optim, evaluate=evaluate, eval_every=2)
    rows = read_metrics(run.run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["loss/sft"] == pytest.approx(run.results["loss_first"], abs=1e-6)
    assert rows[-1]["loss/sft"] == pytest.approx(run.results["loss_last"], abs=1e-6)
    # warm-up 1/4, 2/4, 3/4, 4/4 of the peak, then linear decay over the last 2 steps: 1, 1/2.
    assert [r["lr"] for r in rows] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 5e-3])
    assert evals == [0, 1]  # at steps 2 and 4, not at the last step: the recipe evaluates there itself
    assert [r.get("eval/acc") for r in rows] == [None, 0.5, None, 0.5, None, None]
    assert all(r["perf/tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in rows)
