"""Pure functions over tensors that the trainers compose: no trainer state, no model calls
except `completion_logprobs`, each tested against numbers worked out by hand.

Shapes: N = B * G rows (B prompts, G completions each), T completion tokens, V vocabulary.
Masks are bool or float [N, T], 1 on real tokens.
"""

from r1kit.algorithms.advantages import gae, group_advantages, process_advantages, reinforce_advantages, rloo_advantages, whiten
from r1kit.algorithms.prm import aggregate_steps, prm_step_loss
from r1kit.algorithms.distill import distill_loss, token_divergence
from r1kit.algorithms.kl import kl_estimate
from r1kit.algorithms.logprobs import (
    completion_logprobs,
    entropy_from_logits,
    position_ids_from_mask,
    selective_log_softmax,
)
from r1kit.algorithms.masked import masked_mean, masked_sum, masked_var
from r1kit.algorithms.policy import aggregate, policy_loss
from r1kit.algorithms.preference import bradley_terry_loss, chosen_nll, christiano_pair_loss, dpo_loss
from r1kit.algorithms.value import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    value_loss,
)

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "aggregate",
    "aggregate_steps",
    "bradley_terry_loss",
    "chosen_nll",
    "christiano_pair_loss",
    "completion_logprobs",
    "distill_loss",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "group_advantages",
    "kl_estimate",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "policy_loss",
    "position_ids_from_mask",
    "prm_step_loss",
    "process_advantages",
    "reinforce_advantages",
    "rloo_advantages",
    "selective_log_softmax",
    "token_divergence",
    "value_loss",
    "whiten",
]
