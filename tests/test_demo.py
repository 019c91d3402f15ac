"""`r1kit demo --seeds N`: the bases are shared by every seed, later stages run once per seed,
results.json holds per-seed lists, and each finding's verdict is computed from the numbers."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from r1kit.demo import FINDINGS, run_demo, summarize
from r1kit.report.tables import METRICS


def stage(pass1, length=10.0):
    return {"greedy_acc": 0.9, "pass@1": pass1, "maj@k": 0.9, "pass@k": 0.95, "mean_length": length}


def seed_results(base=0.70, r1_zero=0.80, sft=0.40, grpo=0.60, r1=0.79, student_rl=0.50, distilled=0.56, lengths=(10.0, 11.5)):
    return {
        "base": stage(base, lengths[0]), "r1_zero": stage(r1_zero, lengths[1]), "sft": stage(sft),
        "grpo": stage(grpo), "r1": stage(r1), "student_rl": stage(student_rl), "distilled": stage(distilled),
    }


def test_findings_hold_exactly_at_their_margins_and_fail_just_below():
    # Each gap equals its margin: r1_zero - base = 0.08, grpo - sft = 0.15 (0.55 - 0.40), r1 - r1_zero
    # = -0.02, distilled - student_rl = 0.05, length 11 - 10 = 1 token. Values are binary fractions
    # plus the margin, so the subtraction is exact enough: compare with a 1e-9 slack either way.
    at = seed_results(base=0.5, r1_zero=0.58 + 1e-9, sft=0.25, grpo=0.40 + 1e-9, r1=0.56 + 2e-9,
                      student_rl=0.5, distilled=0.55 + 1e-9, lengths=(10.0, 11.0))
    below = seed_results(base=0.5, r1_zero=0.58 - 1e-9, sft=0.25, grpo=0.40 - 1e-9, r1=0.56 - 3e-9,
                         student_rl=0.5, distilled=0.55 - 1e-9, lengths=(10.0, 11.0 - 1e-9))
    summary = summarize([at, below], [0, 1], k=4)
    assert [f["name"] for f in summary["findings"]] == [f.name for f in FINDINGS]
    for f in summary["findings"]:
        assert f["held"] == [True, False], f["name"]
        assert "held on 1 of 2 seeds" in f["detail"]


def test_summary_lists_every_metric_per_seed_in_seed_order():
    a, b = seed_results(base=0.6), seed_results(base=0.7)
    summary = summarize([a, b], [0, 1], k=4)
    assert summary["seeds"] == [0, 1] and summary["k"] == 4
    assert list(summary["stages"]) == list(a)
    assert set(summary["stages"]["base"]) == set(METRICS)
    assert summary["stages"]["base"]["pass@1"] == [0.6, 0.7]
    detail = next(f["detail"] for f in summary["findings"] if f["name"] == "r1_zero_learns")
    assert "0.650 ± 0.071" in detail  # base pass@1 mean and sample sd of 0.6, 0.7


def test_a_finding_whose_stages_are_missing_is_left_out():
    summary = summarize([{"base": stage(0.5), "r1_zero": stage(0.7)}], [0], k=4)
    assert [f["name"] for f in summary["findings"]] == ["r1_zero_learns", "responses_grow"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_seeds_share_the_base_and_rerun_later_stages(tmp_path, one_thread):
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
    config = {
        "output_dir": str(tmp_path / "demo"),
        "defaults": {
            "data": {"task": "arithmetic", "task_params": {"n_operands": 2, "digits": 1}, "test_size": 4, "train_size": 32},
            "eval": {"k": 2, "max_new_tokens": 6},
            "run": {"threads": 1, "progress": False, "tensorboard": False},
        },
        "stages": [
            {"name": "base", "recipe": "pretrain", "config": {"tiny": tiny, "documents": 100, "steps": 2, "test_size": 4,
                                                               "cache_dir": str(tmp_path / "cache"), "run": {"seed": 0}}},
            {"name": "r1_zero", "recipe": "sft", "start": "base", "config": {"steps": 2, "batch_size": 4, "optim": {"lr": 0.05}}},
        ],
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    root = run_demo(str(path), [], seeds=2)
    stages = [json.loads((root / f"seed-{s}" / "stages.json").read_text()) for s in (0, 1)]
    assert stages[0]["base"] == stages[1]["base"]  # one cached base for both seeds
    assert stages[0]["r1_zero"] != stages[1]["r1_zero"]
    seeds = [yaml.safe_load((root / f"seed-{s}" / "r1_zero" / "config.yaml").read_text())["run"]["seed"] for s in (0, 1)]
    assert seeds == [0, 1]
    results = json.loads((root / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert all(len(v) == 2 for v in results["stages"]["r1_zero"].values())
    assert [f["name"] for f in results["findings"]] == ["r1_zero_learns", "responses_grow"]
    assert all(len(f["held"]) == 2 for f in results["findings"])
    page = (root / "report.html").read_text()
    assert "r1_zero_learns" in page and "seed-1/report.html" in page
