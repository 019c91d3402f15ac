"""The pipeline runner: stages chain, finished stages are skipped on a re-run (unless their config
changed), and a failing stage stops the pipeline keeping what earlier stages produced."""

from __future__ import annotations

import json

import pytest
import torch

from r1kit.config import from_dict
from r1kit.errors import R1kitError
from r1kit.recipes.pipeline import PipelineConfig, StageSpec, run_pipeline


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pipeline(tmp_path, sft_steps=2, sft_extra=None):
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
    return from_dict(PipelineConfig, {
        "output_dir": str(tmp_path / "pipe"),
        "report": False,
        "defaults": {
            "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "test_size": 4, "train_size": 32},
            "eval": {"k": 0, "max_new_tokens": 6},
            "run": {"threads": 1, "progress": False, "tensorboard": False},
        },
        "stages": [
            {"name": "base", "recipe": "pretrain", "config": {"tiny": tiny, "documents": 100, "steps": 2, "test_size": 4, "cache_dir": str(tmp_path / "cache")}},
            {"name": "sft", "recipe": "sft", "start": "base", "config": {"steps": sft_steps, "batch_size": 4, **(sft_extra or {})}},
        ],
    })


def test_stages_chain_and_a_rerun_skips_finished_stages(tmp_path, capsys, one_thread):
    out = run_pipeline(pipeline(tmp_path))
    stages = json.loads((out / "stages.json").read_text())
    sft_config = (out / "sft" / "config.yaml").read_text()
    assert stages["base"] in sft_config  # the sft stage started from the base stage's model
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"base", "sft"}
    mtime = (out / "sft" / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    run_pipeline(pipeline(tmp_path))
    printed = capsys.readouterr().out
    assert printed.count("already done, skipped") == 2
    assert (out / "sft" / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_a_stage_whose_config_changed_runs_again(tmp_path, capsys, one_thread):
    run_pipeline(pipeline(tmp_path))
    capsys.readouterr()
    run_pipeline(pipeline(tmp_path, sft_steps=3))
    printed = capsys.readouterr().out
    assert "stage base: already done, skipped" in printed.replace("[bold]", "").replace("[/bold]", "")
    assert "config changed since it ran" in printed
    rows = [json.loads(line) for line in (tmp_path / "pipe" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3


def test_a_failing_stage_stops_and_keeps_earlier_stages(tmp_path, one_thread):
    bad = pipeline(tmp_path, sft_extra={"response_column": "no_such_column"})
    with pytest.raises(R1kitError, match="stage 'sft' failed: .*no_such_column"):
        run_pipeline(bad)
    assert (tmp_path / "pipe" / "base" / "DONE").is_file()
    assert not (tmp_path / "pipe" / "sft" / "DONE").exists()


def test_a_bad_value_in_a_later_stage_fails_before_the_first_stage_runs(tmp_path):
    bad = pipeline(tmp_path, sft_extra={"optim": {"lr": -1.0}})
    with pytest.raises(R1kitError, match=r"stage 'sft': config key 'optim.lr' must be greater than 0, got -1.0"):
        run_pipeline(bad)
    assert not (tmp_path / "pipe").exists()  # not even the base stage ran


def test_a_later_stage_on_sampled_data_without_a_task_or_test_file_fails_at_once(tmp_path):
    bad = pipeline(tmp_path)
    bad.defaults["data"]["task"] = "auto"
    bad.stages.append(StageSpec(name="sft2", recipe="sft", start="base", data_from="sft"))
    with pytest.raises(R1kitError, match=r"stage 'sft2': data.path is set but data.test_path is not"):
        run_pipeline(bad)
    assert not (tmp_path / "pipe").exists()
