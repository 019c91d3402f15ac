"""Every input is checked before a run makes anything (r1kit/train/validate.py, config ranges,
r1kit/models/hub.py): each mistake is one sentence on stderr naming the field, or the file, line
and column, and the fix; exit status 2; no traceback; no run directory left behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from r1kit import config as cfg
from r1kit.cli import main
from r1kit.config import DataArgs, ModelArgs, OptimArgs, RunArgs
from r1kit.errors import R1kitError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-arith"


def argv(recipe: str, tmp_path: Path, model_dir: Path, *extra: str) -> list[str]:
    """`r1kit RECIPE --config configs/tiny-arith/RECIPE.yaml` on the tiny model, writing under tmp_path/runs."""
    return [recipe, "--config", str(TINY / f"{recipe}.yaml"), f"model.path={model_dir}", "model.device=cpu", f"run.output_dir={tmp_path / 'runs'}",
            "run.threads=1", "run.progress=false", "run.tensorboard=false", *extra]  # fmt: skip


def assert_refused(capsys, tmp_path: Path, args: list[str], *fragments: str) -> str:
    """Exit 2, one `r1kit: error:` line holding every fragment, no traceback, no run directory."""
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1kit: error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "runs").exists(), sorted((tmp_path / "runs").rglob("*"))
    return lines[0]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    return path


# --------------------------------------------------------------------------------------------
# Config values: ranges declared next to the fields


@pytest.mark.parametrize("recipe", ["grpo", "sft"])
def test_negative_learning_rate_is_refused_before_the_run_directory(capsys, tmp_path, tiny_model_dir, recipe):
    assert_refused(capsys, tmp_path, argv(recipe, tmp_path, tiny_model_dir, "optim.lr=-0.001"),
                   "config key 'optim.lr' must be greater than 0, got -0.001", "set optim.lr to a value greater than 0")  # fmt: skip


@pytest.mark.parametrize(
    "recipe, override, message",
    [
        ("sft", "batch_size=0", "config key 'batch_size' must be at least 1, got 0"),
        ("sft", "optim.lr=.nan", "config key 'optim.lr' must be greater than 0, got nan"),
        ("sft", "optim.betas=[0.9, 1.0]", "config key 'optim.betas[1]' must be at least 0 and less than 1, got 1.0"),
        ("sft", "optim.min_lr_ratio=1.5", "config key 'optim.min_lr_ratio' must be at least 0 and at most 1, got 1.5"),
        ("grpo", "sampling.top_p=0", "config key 'sampling.top_p' must be greater than 0 and at most 1, got 0.0"),
        ("grpo", "sampling.temperature=0", "config key 'sampling.temperature' must be greater than 0, got 0.0"),
        ("grpo", "grpo.group_size=1", "config key 'grpo.group_size' must be at least 2, got 1"),
        ("grpo", "run.eval_every=-1", "config key 'run.eval_every' must be at least 0, got -1"),
        ("dpo", "pref.flip_fraction=1.2", "config key 'pref.flip_fraction' must be at least 0 and at most 1, got 1.2"),
        ("dpo", "label_smoothing=0.5", "config key 'label_smoothing' must be at least 0 and less than 0.5, got 0.5"),
        ("sample", "mix_fraction=1", "config key 'mix_fraction' must be at least 0 and less than 1, got 1.0"),
        ("prm", "best_of_n.n=0", "config key 'best_of_n.n' must be at least 1, got 0"),
        ("prm", "labels.rollouts=0", "config key 'labels.rollouts' must be at least 1, got 0"),
        ("search", "value_batch_size=0", "config key 'value_batch_size' must be at least 1, got 0"),
        ("search", "value_steps=-1", "config key 'value_steps' must be at least 0, got -1"),
        ("search", "mcts.budget_tokens=0", "config key 'mcts.budget_tokens' must be at least 1, got 0"),
    ],
)
def test_a_value_out_of_its_declared_range_names_the_key_and_the_range(recipe, override, message):
    with pytest.raises(R1kitError) as e:
        cfg.load(TINY / f"{recipe}.yaml", [override], cfg.recipe_config_class(recipe))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("recipe", ["sample", "search", "prm"])
def test_a_one_process_recipe_refuses_torchrun_before_anything_loads(recipe):
    from r1kit.train.validate import check_config

    with pytest.raises(R1kitError, match=rf"^{recipe} runs in one process \(.+\); start it without torchrun"):
        check_config(cfg.recipe_config_class(recipe)(), recipe, world_size=2)
    check_config(cfg.recipe_config_class(recipe)(), recipe, world_size=1)  # one process: nothing to refuse


def test_every_shipped_default_is_inside_its_range():
    for recipe in cfg.RECIPES:
        cfg.check_ranges(cfg.recipe_config_class(recipe)())


def test_a_config_built_in_python_is_checked_by_the_run_skeleton(tmp_path, tiny_model_dir):
    from r1kit.recipes import sft

    config = sft.SFTConfig(model=ModelArgs(path=str(tiny_model_dir), device="cpu"), optim=OptimArgs(lr=-1e-3), run=RunArgs(output_dir=str(tmp_path / "runs")))
    with pytest.raises(R1kitError, match="config key 'optim.lr' must be greater than 0, got -0.001"):
        sft.train(config)
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# Rows against the model's context (the tiny model takes 512 positions)


def long_rows(tmp_path: Path, response_key: str = "cot") -> Path:
    """Two short rows, a blank line, then a row of about 900 tokens (line 4)."""
    short = {"prompt": "1+1", "cot": "<answer>2</answer>", "answer": "2", "chosen": "<answer>2</answer>", "rejected": "<answer>3</answer>"}
    long = {**short, response_key: "<think>" + "1+1=2 " * 150 + "</think><answer>2</answer>"}
    return write_jsonl(tmp_path / "train.jsonl", [short, short, "", long])


def test_sft_row_longer_than_the_context_names_its_line_and_the_setting(capsys, tmp_path, tiny_model_dir):
    data = long_rows(tmp_path)
    args = argv("sft", tmp_path, tiny_model_dir, f"data.path={data}", f"data.test_path={data}", "max_length=1024")
    assert_refused(capsys, tmp_path, args, f"{data}:4: the example is", "longer than the model's context of 512 tokens (its config's max_position_embeddings)",
                   "set max_length=512 or less (longer rows are truncated to it)")  # fmt: skip


def test_sft_rows_cut_to_max_length_within_the_context_train(capsys, tmp_path, tiny_model_dir):
    data = long_rows(tmp_path)
    args = argv("sft", tmp_path, tiny_model_dir, f"data.path={data}", f"data.test_path={data}", "steps=1", "batch_size=2", "eval_before=false",
                "eval.k=0", "eval.max_new_tokens=2", "data.test_size=1")  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "runs" / "tiny-sft" / "metrics.jsonl").read_text().splitlines()[0])["data/truncated"] == 1


def test_packed_rows_longer_than_the_context_name_packing(capsys, tmp_path, tiny_model_dir):
    assert_refused(capsys, tmp_path, argv("sft", tmp_path, tiny_model_dir, "packing=true", "max_length=600", "data.train_size=100"),
                   "packing=true: a packed row is 600 tokens", "set max_length=512 or less")  # fmt: skip


@pytest.mark.parametrize("recipe", ["dpo", "rm"])
def test_preference_pair_longer_than_the_context_names_its_line(capsys, tmp_path, tiny_model_dir, recipe):
    data = long_rows(tmp_path, "chosen")
    args = argv(recipe, tmp_path, tiny_model_dir, f"data.path={data}", f"data.test_path={data}", "max_length=1024")
    assert_refused(capsys, tmp_path, args, f"{data}:4: the pair (prompt and longer completion) is", "set max_length=512 or less")


# --------------------------------------------------------------------------------------------
# The test split comes from the training rows' source


@pytest.mark.parametrize("recipe", ["sft", "grpo"])
def test_data_path_without_a_test_path_is_refused(capsys, tmp_path, tiny_model_dir, recipe):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", [{"prompt": "Tom has 3 apples ...", "answer": "5", "cot": "<answer>5</answer>"}])
    assert_refused(capsys, tmp_path, argv(recipe, tmp_path, tiny_model_dir, f"data.path={data}"),
                   "data.path is set but data.test_path is not", "set data.test_path to a held-out file")  # fmt: skip


def test_dpo_pairs_without_test_pairs_are_refused_before_loading(capsys, tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "1+1", "chosen": "2", "rejected": "3"}])
    assert_refused(capsys, tmp_path, argv("dpo", tmp_path, tiny_model_dir, f"data.path={data}"), "set data.test_path to a held-out preference file")


def test_auto_task_is_arithmetic_without_a_file_and_none_with_one():
    assert DataArgs().builtin_task == "arithmetic"
    assert DataArgs(path="mine.jsonl").builtin_task == ""
    assert DataArgs(path="samples.jsonl", task="arithmetic").builtin_task == "arithmetic"  # named: rows sampled from that task
    assert DataArgs(task="countdown").builtin_task == "countdown"


def test_a_named_task_scores_a_file_run_on_its_test_split():
    from r1kit.data.source import load_split

    rows = load_split(DataArgs(path="samples.jsonl", task="arithmetic", test_size=3), "test")
    assert len(rows) == 3 and all("answer" in r for r in rows)


# --------------------------------------------------------------------------------------------
# Model paths: a missing directory or an unreachable Hub, at once


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to load from the Hub fails the test (and no socket reaches the network)."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called: the model path should have been refused first")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError(101, "Network is unreachable")))


def test_hub_id_with_the_hub_offline_fails_at_once(capsys, tmp_path, monkeypatch, no_download):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    args = ["sft", "model.path=nobody/no-such-model", f"run.output_dir={tmp_path / 'runs'}"]
    assert_refused(capsys, tmp_path, args, "model.path 'nobody/no-such-model' is not a local path, and the Hub is unreachable (HF_HUB_OFFLINE is set)")


def test_hub_id_with_no_connection_fails_at_once(capsys, tmp_path, monkeypatch, no_download):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    args = ["grpo", "model.path=nobody/no-such-model", f"run.output_dir={tmp_path / 'runs'}"]
    assert_refused(capsys, tmp_path, args, "is not a local path, and the Hub is unreachable (huggingface.co:443 did not answer (Network is unreachable))")


def test_mistyped_relative_path_under_an_existing_folder_is_a_missing_directory(capsys, tmp_path, monkeypatch, no_download):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    args = ["sft", "model.path=models/tiny-sfft", f"run.output_dir={tmp_path / 'runs'}"]
    assert_refused(capsys, tmp_path, args, "model directory 'models/tiny-sfft' does not exist; check model.path")


# --------------------------------------------------------------------------------------------
# Data files


def test_jsonl_line_cut_short_names_its_real_column(capsys, tmp_path, tiny_model_dir):
    good = json.dumps({"prompt": "1+1", "cot": "<answer>2</answer>"})
    cut = '{"prompt": "2+2", "cot": '  # 25 characters, then the line ends
    data = write_jsonl(tmp_path / "train.jsonl", [good, cut])
    args = argv("sft", tmp_path, tiny_model_dir, f"data.path={data}", f"data.test_path={data}")
    assert_refused(capsys, tmp_path, args, f"{data}:2: malformed JSON at column {len(cut) + 1} (Expecting value)")
    assert len(cut) + 1 == 26
