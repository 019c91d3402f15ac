"""`r1kit.algorithms` re-exports the pure functions, and they compose into a GRPO step."""

import inspect

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import r1kit.algorithms as algorithms


def test_every_public_name_is_exported_and_documented():
    expected = {
        "selective_log_softmax", "entropy_from_logits", "completion_logprobs", "group_advantages",
        "rloo_advantages", "reinforce_advantages", "whiten", "gae", "kl_estimate", "policy_loss", "value_loss",
        "explained_variance", "AdaptiveKLController", "FixedKLController", "bradley_terry_loss",
        "christiano_pair_loss", "dpo_loss", "chosen_nll", "distill_loss",
    }  # fmt: skip
    assert expected <= set(algorithms.__all__)
    for name in algorithms.__all__:
        assert inspect.getdoc(getattr(algorithms, name)), name


def test_a_grpo_step_on_a_tiny_model_composes_and_moves_the_policy():
    # log-probs -> group advantages -> policy loss -> gradient step: the log-prob of the
    # completion with reward 1 rises and that of the reward-0 completion falls.
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    prompt = torch.randint(0, 32, (1, 4)).repeat(2, 1)  # one prompt, G = 2 completions
    input_ids = torch.cat([prompt, torch.randint(0, 32, (2, 3))], dim=1)
    attention_mask, completion_mask = torch.ones_like(input_ids), torch.ones(2, 3)
    advantages = algorithms.group_advantages(torch.tensor([1.0, 0.0]), group_size=2)

    before = algorithms.completion_logprobs(model, input_ids, attention_mask, 3)
    loss, metrics = algorithms.policy_loss(before, None, advantages, completion_mask)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
        after = algorithms.completion_logprobs(model, input_ids, attention_mask, 3)

    change = (after - before.detach()).sum(-1)
    assert change[0] > 0 > change[1]
    assert metrics["ratio/mean"] == 1.0
