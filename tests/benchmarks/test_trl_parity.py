"""r1kit's GRPO loss is TRL's on the same batch: same value, same gradient, for the loss modes the
speed and learning benchmarks compare (learning_vs_trl.py, grpo_vs_trl.py). Runs where TRL is
installed (the `bench` extra); CI's test extra has no TRL, so there it is skipped."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from r1kit.algorithms import completion_logprobs, group_advantages, policy_loss  # noqa: E402
from r1kit.models.load import load_model, load_tokenizer  # noqa: E402

G, PROMPTS, C = 4, 3, 7


def trl_loss_and_grad(model, ref_logp, batch, advantages, **trl_args):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    tok = batch["tokenizer"]
    args = GRPOConfig(output_dir=str(batch["tmp"]), per_device_train_batch_size=G * PROMPTS, num_generations=G, max_completion_length=C,
                      beta=0.04, use_cpu=True, report_to=[], bf16=False, gradient_checkpointing=False, **trl_args)
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_list([{"prompt": "1+2=?"}] * PROMPTS), processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1  # set by its training loop, which this test skips
    inputs = {"prompt_ids": batch["prompt_ids"], "prompt_mask": batch["prompt_mask"], "completion_ids": batch["completion_ids"],
              "completion_mask": batch["completion_mask"], "advantages": advantages, "ref_per_token_logps": ref_logp,
              "old_per_token_logps": None, "num_items_in_batch": batch["completion_mask"].sum()}
    model.zero_grad()
    model.train()
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.fixture()
def batch(tiny_model_dir, tmp_path):
    """Three prompts of different lengths (left-padded), four completions each of 2-7 tokens
    (right-padded), rewards that vary within groups, a policy moved away from its reference."""
    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_model_dir))
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Q: 1+2=?\nA: ", "Q: 3+4+5=?\nA: ", "Q: 9=?\nA: ")]
    P = max(map(len, prompts))
    prompt_ids = torch.full((G * PROMPTS, P), tok.pad_token_id)
    prompt_mask = torch.zeros(G * PROMPTS, P, dtype=torch.long)
    for i, ids in enumerate(prompts):
        prompt_ids[i * G:(i + 1) * G, P - len(ids):] = torch.tensor(ids)
        prompt_mask[i * G:(i + 1) * G, P - len(ids):] = 1
    lengths = torch.tensor([2, 7, 5, 3, 7, 6, 4, 2, 3, 5, 7, 6])
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    completion_ids = torch.randint(10, len(tok), (G * PROMPTS, C)).masked_fill(completion_mask == 0, tok.pad_token_id)
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.5, 1.5, 1.0, 0.0, 1.0])
    return {"tokenizer": tok, "tmp": tmp_path, "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
            "completion_ids": completion_ids, "completion_mask": completion_mask, "rewards": rewards}


@pytest.mark.parametrize(
    ("r1kit_args", "trl_args"),
    [
        ({}, {"loss_type": "grpo", "use_bias_correction_kl": False}),  # DeepSeekMath GRPO
        ({"kl_ratio": True}, {"loss_type": "grpo", "use_bias_correction_kl": True}),  # TRL's default KL
        ({"loss_agg": "token_mean"}, {"loss_type": "bnpo", "use_bias_correction_kl": False}),  # DAPO's token mean, one process
        ({"loss_agg": "seq_mean_token_sum_norm", "max_len": C}, {"loss_type": "dr_grpo", "use_bias_correction_kl": False}),  # Dr. GRPO
        ({"ratio_level": "sequence"}, {"loss_type": "grpo", "importance_sampling_level": "sequence", "use_bias_correction_kl": False}),  # GSPO
    ],
    ids=["grpo", "grpo-kl-ratio", "token-mean", "dr-grpo", "gspo"],
)
@pytest.mark.numerics
def test_r1kit_loss_and_gradient_equal_trls(tiny_model_dir, batch, r1kit_args, trl_args):
    model, ref = load_model(str(tiny_model_dir)), load_model(str(tiny_model_dir))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # so that the KL term and its gradient are not zero
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        ref_logp = completion_logprobs(ref, input_ids, attn, C)
    advantages = group_advantages(batch["rewards"], G)

    model.zero_grad()
    logp = completion_logprobs(model, input_ids, attn, C)
    loss, metrics = policy_loss(logp, None, advantages, batch["completion_mask"], ref_logp=ref_logp, beta=0.04, **r1kit_args)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert metrics["kl"] > 1e-4

    trl_loss, trl_grads = trl_loss_and_grad(model, ref_logp, batch, advantages, **trl_args)
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-7)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    diff = torch.sqrt(sum(((g - t) ** 2).sum() for g, t in zip(grads, trl_grads)))
    assert norm > 0 and diff / norm < 1e-5
