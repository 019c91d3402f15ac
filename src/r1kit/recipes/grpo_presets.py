"""The GRPO variants as their papers set them: `grpo.preset: grpo | dr_grpo | dapo | gspo | rloo`.

A preset fills in the algorithm's settings below; a field the user gives (in the YAML or as
`grpo.eps_high=0.3` on the command line) wins over it, and the run's config.yaml holds the
resolved values. Every preset sets the same algorithm fields, so switching presets never leaves
one paper's setting behind in another's run. Sizes (group size, batch, lengths, learning rate)
are the user's compute and stay as the config gives them, with one exception: DAPO's overlong
zone is a fifth of the generation limit, as in the paper.

- grpo: DeepSeekMath (Shao et al. 2024): per-token ratio clipped at 1 +- 0.2, group-normalised
  advantages, the per-sequence token mean, beta = 0.04 with the k3 estimator (its section 4.2).
- dr_grpo: Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): no std
  normalisation of the advantages and no length normalisation (each sequence's token sum divided
  by the constant max_new_tokens), both of which it shows bias GRPO; beta = 0 (the training
  section of its repository).
- dapo: DAPO (Yu et al. 2025), its Table 1's full recipe: clip-higher (eps_low 0.2, eps_high 0.28,
  section 4.1), token-level loss, dynamic sampling, overlong filtering and soft overlong
  punishment (L_cache = 4096 of L_max = 20480, section 4.1: a fifth of max_new_tokens here), and
  no KL term (section 2.3).
- gspo: GSPO (Zheng et al. 2025): the sequence-level, length-normalised importance ratio clipped
  to [1 - 3e-4, 1 + 4e-4], each rollout batch split into 4 mini-batches (paper v2, section 5.1;
  with no update between, the ratio is exactly 1 and the clip never acts), beta = 0.
- rloo: RLOO (Ahmadian et al. 2024, after Kool et al. 2019): each completion's baseline is the
  mean reward of the other G - 1 in its group, with no std scaling; the rest as GRPO.
"""

from __future__ import annotations

import copy
from typing import Any

from r1kit.config import SamplingArgs

GRPO: dict[str, Any] = {
    "eps_low": 0.2, "eps_high": 0.2, "ratio_level": "token", "loss_agg": "seq_mean_token_mean",
    "advantage": "grpo", "scale": "group", "beta": 0.04, "kl_kind": "k3",
    "dynamic_sampling": False, "mask_truncated": False, "overlong_cache": 0, "mini_batches": 1,
}  # fmt: skip
"""DeepSeekMath's GRPO; the other presets change only what their papers change."""

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": GRPO,
    "dr_grpo": {**GRPO, "scale": "none", "loss_agg": "seq_mean_token_sum_norm", "beta": 0.0},
    "dapo": {**GRPO, "eps_high": 0.28, "loss_agg": "token_mean", "dynamic_sampling": True, "mask_truncated": True, "beta": 0.0},
    "gspo": {**GRPO, "ratio_level": "sequence", "eps_low": 3e-4, "eps_high": 4e-4, "mini_batches": 4, "beta": 0.0},
    "rloo": {**GRPO, "advantage": "rloo"},
}
"""Preset name -> the grpo.* settings it gives (DAPO's overlong_cache is set from max_new_tokens)."""

DAPO_CACHE_FRACTION = 4096 / 20480
"""DAPO's soft overlong zone as a share of the generation limit (section 4.1)."""


def preset_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The settings that the GRPO config mapping `raw`'s grpo.preset gives, as a mapping
    ({"grpo": {...}}) to lay under `raw`; {} when there is no preset or the name is unknown (the
    field's own check then names the valid ones)."""
    section = raw.get("grpo")
    name = section.get("preset") if isinstance(section, dict) else None
    if name not in PRESETS:
        return {}
    settings = copy.deepcopy(PRESETS[name])
    if name == "dapo":
        sampling = raw.get("sampling") if isinstance(raw.get("sampling"), dict) else {}
        max_new = sampling.get("max_new_tokens", SamplingArgs().max_new_tokens)
        if isinstance(max_new, int) and max_new > 0:
            settings["overlong_cache"] = max(1, round(max_new * DAPO_CACHE_FRACTION))
    return {"grpo": settings}
