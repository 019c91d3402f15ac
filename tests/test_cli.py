"""The command line: a mistake the user can make is one sentence on stderr starting
`r1kit: error:`, exit status 2, and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from r1kit.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_sentence_error(code: int, out: str, err: str, *fragments: str) -> str:
    """Exit 2, exactly one stderr line `r1kit: error: ...` containing every fragment, no traceback."""
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("r1kit: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def quiet(tmp_path: Path) -> list[str]:
    """Overrides that keep a recipe's output inside tmp_path and its console small."""
    return [f"run.output_dir={tmp_path / 'runs'}", "run.tensorboard=false", "run.progress=false", "model.device=cpu"]


def test_python_dash_m_r1kit_help_exits_0():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "r1kit", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: r1kit")
    for verb in ("demo", "pretrain", "sft", "grpo", "eval", "report", "pipeline"):
        assert verb in result.stdout


def test_config_key_typo_on_the_command_line(capsys):
    line = assert_one_sentence_error(*run_cli(capsys, ["sft", "modle.path=x"]), "unknown config key 'modle'", "did you mean 'model'?")
    assert line.endswith("valid keys here: batch_size, completion_only, data, eval, eval_before, grad_accum, max_length, model, optim, packing, precision, response_column, run, steps")


def test_config_key_typo_in_the_yaml_file(capsys, tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("recipe: sft\noptim: {lr: 1.0e-3, warmup: 5}\n")
    assert_one_sentence_error(*run_cli(capsys, ["sft", "--config", str(path)]), "unknown config key 'optim.warmup'", "'optim.warmup_steps'")


def test_bad_choice_lists_the_choices(capsys):
    assert_one_sentence_error(*run_cli(capsys, ["sft", "data.template=qa"]), "'data.template' is 'qa'; choose one of ['tiny', 'r1zero', 'chat', 'plain']")


def test_override_without_equals(capsys):
    assert_one_sentence_error(*run_cli(capsys, ["grpo", "steps"]), "override 'steps' is not of the form key=value")


def test_nonexistent_config_file(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_one_sentence_error(*run_cli(capsys, ["grpo", "--config", str(missing)]), f"config file {str(missing)!r} not found")


def test_invalid_yaml_config_file(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recipe: sft\nsteps: [1, 2\n")
    assert_one_sentence_error(*run_cli(capsys, ["sft", "-c", str(path)]), "is not valid YAML at line 3")


def test_missing_model_directory(capsys, tmp_path):
    missing = tmp_path / "no-model"
    assert_one_sentence_error(
        *run_cli(capsys, ["sft", f"model.path={missing}", *quiet(tmp_path)]),
        f"model directory {str(missing)!r} does not exist; check model.path",
    )


def test_empty_model_path(capsys, tmp_path):
    assert_one_sentence_error(*run_cli(capsys, ["sft", *quiet(tmp_path)]), "no model given; set model.path")


def test_unknown_reward_name(capsys, tmp_path, tiny_model_dir):
    argv = ["grpo", f"model.path={tiny_model_dir}", "rewards=[arithmetic, nosuch]", *quiet(tmp_path)]
    line = assert_one_sentence_error(*run_cli(capsys, argv), "unknown reward 'nosuch'", "arithmetic", "format", "math")
    assert "package.module:function" in line  # and how to plug in your own


def test_malformed_data_jsonl(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=?", "cot": "<answer>2</answer>"}) + "\n" + '{"prompt": "2+2=?", "cot": }\n')
    argv = ["sft", f"model.path={tiny_model_dir}", f"data.path={data}", f"data.test_path={data}", *quiet(tmp_path)]
    assert_one_sentence_error(*run_cli(capsys, argv), f"{data}:2: malformed JSON at column 28")


def test_data_file_missing_the_response_column(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=?", "completion": "2"}) + "\n")
    argv = ["sft", f"model.path={tiny_model_dir}", f"data.path={data}", f"data.test_path={data}", *quiet(tmp_path)]
    assert_one_sentence_error(*run_cli(capsys, argv), f"{data}:1: missing column 'cot'", "present: ['completion', 'prompt']")


def test_misspelt_task_param(capsys, tmp_path, tiny_model_dir):
    argv = ["sft", f"model.path={tiny_model_dir}", "data.task_params={n_operand: 2}", *quiet(tmp_path)]
    assert_one_sentence_error(*run_cli(capsys, argv), "unknown parameter(s) ['n_operand'] of task 'arithmetic'")


def test_eval_with_a_missing_model(capsys, tmp_path):
    missing = tmp_path / "gone"
    assert_one_sentence_error(*run_cli(capsys, ["eval", "--model", str(missing)]), f"model directory {str(missing)!r} does not exist")


def test_pretrain_succeeds_and_prints_its_run_directory(capsys, tmp_path):
    argv = [
        "pretrain", "steps=1", "documents=20", "batch_size=2", "max_length=32", "tiny.hidden_size=16", "tiny.num_heads=2",
        "tiny.num_kv_heads=1", "tiny.num_layers=1", "test_size=2", "eval.k=0", "eval.max_new_tokens=2", f"cache_dir={tmp_path}",
        "run.tensorboard=false", "run.progress=false", "device=cpu",
    ]  # fmt: skip
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and run_dir.name.startswith("base-")
    assert (run_dir / "model" / "config.json").is_file()
