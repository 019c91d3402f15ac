"""Typed config: YAML plus `key=value` overrides give typed values, and every mistake is one
R1kitError naming the key and what is valid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from r1kit import config as cfg
from r1kit.errors import R1kitError

REPO = Path(__file__).resolve().parents[1]

GRPO_YAML = """
recipe: grpo
model: {path: some/model}
data:
  task: arithmetic
  task_params: {n_operands: [2, 3], digits: 1}
rewards: [arithmetic, {name: format, weight: 0.5}]
grpo: {steps: 40, group_size: 8}
optim: {lr: 2.0e-4, schedule: constant}
run: {name: tiny-grpo}
"""


@pytest.fixture
def grpo_yaml(tmp_path) -> Path:
    path = tmp_path / "grpo.yaml"
    path.write_text(GRPO_YAML)
    return path


def test_yaml_and_overrides_give_typed_values(grpo_yaml):
    from r1kit.recipes.grpo import GRPOConfig

    c = cfg.load(grpo_yaml, ["optim.lr=1e-4", "grpo.steps=5", "run.tensorboard=false", "optim.betas=[0.9, 0.95]", "run.name=2024"])
    assert isinstance(c, GRPOConfig)
    # `1e-4` is a string to YAML 1.1 (no dot); the float field still gets a float.
    assert type(c.optim.lr) is float and c.optim.lr == 1e-4
    assert type(c.grpo.steps) is int and c.grpo.steps == 5
    assert c.run.tensorboard is False
    assert c.optim.betas == [0.9, 0.95] and all(type(b) is float for b in c.optim.betas)
    assert c.run.name == "2024"  # a str field keeps a number-looking name as text
    # Untouched values come from the YAML, the rest from the dataclass defaults.
    assert (c.model.path, c.grpo.group_size, c.optim.schedule) == ("some/model", 8, "constant")
    assert c.data.task_params == {"n_operands": [2, 3], "digits": 1}
    assert c.rewards == ["arithmetic", {"name": "format", "weight": 0.5}]
    assert c.grpo.beta == 0.04 and c.eval.k == 4


def test_integer_valued_float_is_accepted_for_an_int_field_and_int_for_a_float_field(grpo_yaml):
    c = cfg.load(grpo_yaml, ["grpo.steps=10.0", "optim.lr=1"])
    assert type(c.grpo.steps) is int and c.grpo.steps == 10
    assert type(c.optim.lr) is float and c.optim.lr == 1.0


def test_override_of_a_section_left_empty_in_yaml(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("recipe: sft\neval:\nrun:\n  # name: x\n")
    c = cfg.load(path, ["eval.k=2", "run.seed=3"])
    assert (c.eval.k, c.run.seed) == (2, 3)


def test_override_without_a_file_needs_the_class():
    from r1kit.recipes.sft import SFTConfig

    c = cfg.load(None, ["steps=7", "data.task_params={n_operands: 2, ops: '+'}"], SFTConfig)
    assert c.steps == 7 and c.data.task_params == {"n_operands": 2, "ops": "+"}


def test_list_index_override_on_the_pipeline_config():
    path = REPO / "src" / "r1kit" / "configs" / "demo.yaml"
    raw_stages = yaml.safe_load(path.read_text())["stages"]
    c = cfg.load(path, ["stages.0.config.steps=5", "stages.2.config.optim.lr=5e-4"], cfg.recipe_config_class("pipeline"))
    assert [s.name for s in c.stages] == [s["name"] for s in raw_stages]
    assert c.stages[0].config["steps"] == 5
    assert c.stages[2].config["optim"]["lr"] == "5e-4"  # a free-form dict: the stage's recipe types it later
    assert c.stages[2].config["optim"]["warmup_steps"] == raw_stages[2]["config"]["optim"]["warmup_steps"]  # siblings kept


def test_list_index_out_of_range_is_an_error():
    path = REPO / "src" / "r1kit" / "configs" / "demo.yaml"
    with pytest.raises(R1kitError, match=r"override 'stages\.99\.config\.steps=5'"):
        cfg.load(path, ["stages.99.config.steps=5"], cfg.recipe_config_class("pipeline"))


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.parent.name + "/" + p.name)
def test_shipped_configs_load(path):
    assert type(cfg.load(path)).__name__.endswith("Config")


@pytest.mark.parametrize(
    "override, key, suggestion",
    [
        ("optim.lrr=1e-4", "optim.lrr", "optim.lr"),
        ("grpo.stepz=5", "grpo.stepz", "grpo.steps"),
        ("modle.path=x", "modle", "model"),
    ],
)
def test_unknown_key_names_the_key_and_suggests_a_close_match(grpo_yaml, override, key, suggestion):
    with pytest.raises(R1kitError) as e:
        cfg.load(grpo_yaml, [override])
    message = str(e.value)
    assert message.startswith(f"unknown config key {key!r} (did you mean {suggestion!r}?)")
    assert "valid keys here:" in message


def test_unknown_key_with_no_close_match_lists_the_valid_keys(grpo_yaml):
    with pytest.raises(R1kitError) as e:
        cfg.load(grpo_yaml, ["optim.zzzz=1"])
    assert str(e.value) == (
        "unknown config key 'optim.zzzz'; valid keys here: betas, lr, max_grad_norm, min_lr_ratio, schedule, warmup_steps, weight_decay"
    )


def test_unknown_key_in_the_yaml_file_is_an_error_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: sft\nsteps: 5\nbatch_sise: 4\n")
    with pytest.raises(R1kitError, match=r"unknown config key 'batch_sise' \(did you mean 'batch_size'\?\)"):
        cfg.load(path)


def test_bad_literal_lists_the_choices(grpo_yaml):
    with pytest.raises(R1kitError) as e:
        cfg.load(grpo_yaml, ["optim.schedule=cosin"])
    assert str(e.value) == "config key 'optim.schedule' is 'cosin'; choose one of ['cosine', 'constant', 'linear']"


@pytest.mark.parametrize(
    "override, message",
    [
        ("grpo.steps=abc", "config key 'grpo.steps' must be an integer, got 'abc'"),
        ("grpo.steps=2.5", "config key 'grpo.steps' must be an integer, got 2.5"),
        ("grpo.steps=true", "config key 'grpo.steps' must be an integer, got True"),
        ("optim.lr=fast", "config key 'optim.lr' must be a number, got 'fast'"),
        ("run.tensorboard=maybe", "config key 'run.tensorboard' must be true or false, got 'maybe'"),
        ("optim.betas=0.9", "config key 'optim.betas' must be a list, got 0.9"),
        ("optim.betas=[0.9, x]", "config key 'optim.betas[1]' must be a number, got 'x'"),
        ("data.task_params=3", "config key 'data.task_params' must be a mapping, got 3"),
        ("model.path=[a]", "config key 'model.path' must be a string, got ['a']"),
        ("optim=3", "config section optim must be a mapping, got 3"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(grpo_yaml, override, message):
    with pytest.raises(R1kitError) as e:
        cfg.load(grpo_yaml, [override])
    assert str(e.value) == message


def test_override_without_equals_is_an_error(grpo_yaml):
    with pytest.raises(R1kitError, match=r"override 'grpo\.steps' is not of the form key=value"):
        cfg.load(grpo_yaml, ["grpo.steps"])


def test_override_below_a_value_is_an_error(grpo_yaml):
    with pytest.raises(R1kitError, match=r"override 'model\.path\.x=1': 'path' is not a section"):
        cfg.load(grpo_yaml, ["model.path.x=1"])


def test_missing_recipe_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\n")
    with pytest.raises(R1kitError, match=r"does not say which recipe it is for; add `recipe: grpo`"):
        cfg.load(path)


def test_unknown_recipe_is_an_error_listing_recipes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: rlhf\n")
    with pytest.raises(R1kitError, match=r"unknown recipe 'rlhf'; choose one of \[.*'grpo'.*'sft'.*\]"):
        cfg.load(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(R1kitError, match=r"config file '.*nope\.yaml' not found; pass an existing YAML file to --config"):
        cfg.load(tmp_path / "nope.yaml")


def test_invalid_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: sft\nsteps: [1, 2\n")
    with pytest.raises(R1kitError) as e:
        cfg.load(path)
    message = str(e.value)
    assert "\n" not in message  # one sentence, not PyYAML's multi-line drawing
    assert message.endswith("c.yaml' is not valid YAML at line 3, column 1 (expected ',' or ']', but got '<stream end>'); fix the syntax")


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- recipe: sft\n")
    with pytest.raises(R1kitError, match="must hold a mapping of keys to values"):
        cfg.load(path)


def test_dump_round_trips_through_load(grpo_yaml, tmp_path):
    c = cfg.load(grpo_yaml, ["grpo.steps=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.dump(c, "grpo"))
    assert cfg.load(path) == c


def test_every_config_field_has_a_docstring():
    # DESIGN principle 5: each field says what it does. Checked on the shared sections' source.
    import inspect

    for cls in (cfg.ModelArgs, cfg.DataArgs, cfg.OptimArgs, cfg.RunArgs, cfg.EvalArgs):
        lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
        for name in cls.__dataclass_fields__:
            i = next(i for i, line in enumerate(lines) if line.startswith(f"    {name}:"))
            assert lines[i + 1].strip().startswith('"""'), f"{cls.__name__}.{name} has no docstring"
