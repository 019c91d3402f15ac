"""GRPO and PPO train with dropout off (r1kit/models/dropout.py): on a GPT-2 with dropout 0.1, the
learner's log-probs of a rollout are the engine's and, before any update, the KL to the reference
is 0. With dropout on, the learner scored the rollout under a randomly thinned network: the KL at
step 1 was about 1e-3 and the ratio of an unchanged policy was not 1."""

from __future__ import annotations

import pytest
import torch

from r1kit.models.dropout import disable_dropout
from r1kit.recipes import grpo, ppo
from recipe_runs import recipe_overrides, step_rows, train

SETTINGS = ["data.task_params={n_operands: 2, digits: 1}", "sampling.max_new_tokens=4", "eval.max_new_tokens=4"]
"""Prompts of 12 tokens, completions of at most 4: within GPT-2's 16 positions."""


@pytest.mark.numerics
@pytest.mark.parametrize("recipe", ["grpo", "ppo"])
def test_the_learner_scores_the_rollout_as_the_engine_did_and_the_first_kl_is_zero(recipe, gpt2_model_dir, tmp_path, monkeypatch, restore_threads):
    module = grpo if recipe == "grpo" else ppo
    seen = []
    real_loss, real_update = module.policy_loss, module.update

    def update(config, learner, ref, opt, sched, batch, *args, **kwargs):
        seen.append({"engine": batch.logprobs.clone(), "mask": batch.completion_mask.bool()})
        return real_update(config, learner, ref, opt, sched, batch, *args, **kwargs)

    def policy_loss(logp, old_logp, adv, mask, **kwargs):
        seen[-1].setdefault("learner", logp.detach().clone())
        if kwargs.get("ref_logp") is not None:
            seen[-1].setdefault("ref", kwargs["ref_logp"].clone())
        return real_loss(logp, old_logp, adv, mask, **kwargs)

    monkeypatch.setattr(module, "update", update)
    monkeypatch.setattr(module, "policy_loss", policy_loss)
    extra = ["ppo.mini_batches=1", "ppo.ppo_epochs=1"] if recipe == "ppo" else ["grpo.beta=0.1"]
    run_dir = train(recipe, recipe_overrides(recipe, gpt2_model_dir, tmp_path, steps=1) + SETTINGS + extra + ["run.name=dropout"])

    (step,) = seen
    m = step["mask"]
    # The engine decodes with a KV cache, the learner runs one full forward: the same fp32 sums in
    # another order (the rollout tests' 1e-5). With dropout on, 10% of activations are zeroed and
    # the rest scaled by 1/0.9: differences of order 1e-2 here.
    torch.testing.assert_close(step["learner"][m], step["engine"][m], rtol=0, atol=1e-5)
    (row,) = [r for r in step_rows(run_dir) if r["step"] == 1 and ("kl" in r or "objective/kl" in r)]
    if recipe == "grpo":
        # The reference is a frozen copy of the starting policy: the same weights and forward, so
        # the same log-probs and k3 = exp(0) - 0 - 1 = 0 up to float rounding of that forward.
        torch.testing.assert_close(step["ref"][m], step["learner"][m], rtol=0, atol=1e-6)
        assert abs(row["kl"]) < 1e-6
    else:  # one pass of one mini-batch: the policy has not moved, its ratio to the rollout is 1
        assert row["ppo/approx_kl"] < 1e-10


def test_disable_dropout_zeroes_every_dropout_in_memory_and_leaves_the_config(gpt2_model_dir):
    from r1kit.models.load import load_model

    model = disable_dropout(load_model(str(gpt2_model_dir), device="cpu"))
    probabilities = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert probabilities and set(probabilities) == {0.0}
    assert model.config.resid_pdrop == 0.1  # the saved model keeps its own setting
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        train_mode, eval_mode = model.train()(ids).logits, model.eval()(ids).logits
    assert torch.equal(train_mode, eval_mode)

