"""`grpo.preset`: each paper's settings, laid under what the user gives, resolved in config.yaml."""

from __future__ import annotations

import pytest
import yaml
from recipe_runs import COMMON, train

from r1kit.config import dump, load
from r1kit.errors import R1kitError
from r1kit.recipes.grpo import GRPOArgs, GRPOConfig
from r1kit.recipes.grpo_presets import PRESETS


def resolved(*overrides: str) -> GRPOArgs:
    return load(None, list(overrides), GRPOConfig).grpo


def test_dapo_preset_gives_clip_higher_token_loss_dynamic_sampling_overlong_shaping_and_no_kl():
    g = resolved("grpo.preset=dapo", "sampling.max_new_tokens=40")
    assert (g.eps_low, g.eps_high, g.loss_agg, g.beta) == (0.2, 0.28, "token_mean", 0.0)
    assert g.dynamic_sampling and g.mask_truncated
    assert g.overlong_cache == 8  # DAPO's 4096 of 20480 is a fifth: 40 / 5


def test_dapo_overlong_zone_follows_the_default_generation_limit():
    assert resolved("grpo.preset=dapo").overlong_cache == 13  # 64 / 5 = 12.8, rounded


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("grpo", {"eps_low": 0.2, "eps_high": 0.2, "beta": 0.04, "kl_kind": "k3", "scale": "group", "loss_agg": "seq_mean_token_mean"}),
        ("dr_grpo", {"scale": "none", "loss_agg": "seq_mean_token_sum_norm", "beta": 0.0, "advantage": "grpo"}),
        ("gspo", {"ratio_level": "sequence", "eps_low": 3e-4, "eps_high": 4e-4, "mini_batches": 4, "beta": 0.0}),
        ("rloo", {"advantage": "rloo", "beta": 0.04, "ratio_level": "token"}),
    ],
)
def test_each_preset_sets_its_papers_values(preset, expected):
    g = resolved(f"grpo.preset={preset}")
    assert {k: getattr(g, k) for k in expected} == expected


def test_every_preset_sets_the_same_fields_so_none_leaks_into_another():
    keys = {name: set(settings) for name, settings in PRESETS.items()}
    assert all(k == keys["grpo"] for k in keys.values())
    assert keys["grpo"] <= set(GRPOArgs.__dataclass_fields__)


def test_explicit_fields_win_over_the_preset_from_yaml_and_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grpo: {preset: dapo, beta: 0.01}\n")
    g = load(path, ["grpo.eps_high=0.3"], GRPOConfig).grpo
    assert (g.beta, g.eps_high, g.loss_agg) == (0.01, 0.3, "token_mean")


def test_no_preset_leaves_the_defaults():
    assert resolved() == GRPOArgs()


def test_an_unknown_preset_names_the_field_and_the_choices():
    with pytest.raises(R1kitError, match=r"'grpo.preset' is 'dappo'; choose one of \['none', 'grpo', 'dr_grpo', 'dapo'"):
        resolved("grpo.preset=dappo")


def test_the_resolved_config_reloads_to_the_same_values(tmp_path):
    config = load(None, ["grpo.preset=gspo", "grpo.eps_high=5e-4"], GRPOConfig)
    path = tmp_path / "config.yaml"
    path.write_text(dump(config, "grpo"))
    assert load(path) == config


@pytest.mark.slow
def test_a_dapo_run_writes_the_resolved_settings_to_config_yaml(small_model_dir, tmp_path, restore_threads):
    run_dir = train("grpo", [
        f"model.path={small_model_dir}", "model.device=cpu", f"run.output_dir={tmp_path}", "run.name=dapo", *COMMON,
        "grpo.preset=dapo", "grpo.steps=1", "grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.max_resample=0",
        "sampling.max_new_tokens=10", "data.train_size=8", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4", "eval_before=false",
    ])  # fmt: skip
    g = yaml.safe_load((run_dir / "config.yaml").read_text())["grpo"]
    assert (g["preset"], g["eps_high"], g["loss_agg"], g["beta"], g["dynamic_sampling"], g["overlong_cache"]) == ("dapo", 0.28, "token_mean", 0.0, True, 2)
