"""The HTML report: a single self-contained page per run or pipeline, with inline PNG plots, the
evaluation numbers, and every string from the run escaped."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest

from r1kit.errors import R1kitError
from r1kit.report.html import directory_kind, write_report
from r1kit.report.plots import comparison_plots, ema, ema_weight, run_plots, series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_grpo_run(run_dir: Path, reward_shift: float = 0.0) -> Path:
    """A GRPO-like run directory as the recipes write it, with made-up numbers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("recipe: grpo\nmodel:\n  path: tiny-base\nsteps: 4\noptim:\n  lr: 0.001\n")
    (run_dir / "env.json").write_text(json.dumps({"torch": "2.x", "device": "cpu", "seed": 0}))
    rows = [
        {
            "step": s, "time": 1000.0 + s,
            "reward/mean": 0.1 * s + reward_shift, "reward/math/mean": 0.1 * s, "reward/format/mean": 0.5,
            "completion/length_mean": 20.0 + 5 * s, "kl": 0.01 * s, "entropy": 1.5 - 0.1 * s,
            "clip/ratio_low": 0.0, "clip/ratio_high": 0.02, "loss/policy": -0.1 * s, "grad_norm": 1.0, "lr": 1e-3,
        }
        for s in range(1, 5)
    ]
    rows.append({"step": 2, "time": 1003.0, "eval/pass@1": 0.25, "eval/greedy_acc": 0.3125})
    rows.append({"step": 4, "time": 1005.0, "eval/pass@1": 0.4375, "eval/greedy_acc": 0.5625})
    _jsonl(run_dir / "metrics.jsonl", rows)
    after = {"greedy_acc": 0.5625, "length_greedy": 31.0, "pass@1": 0.4375, "pass@4": 0.8125, "maj@4": 0.6875, "length_mean": 33.25}
    before = {"greedy_acc": 0.125, "length_greedy": 12.0, "pass@1": 0.0625, "pass@4": 0.25, "maj@4": 0.1875, "length_mean": 14.5}
    (run_dir / "eval.json").write_text(json.dumps({"before": before, "after": after}))
    _jsonl(run_dir / "samples.jsonl", [
        {"prompt": "1+2=", "completion": "<think>1+2</think><answer>3</answer>", "correct": True},
        {"prompt": "2+2=", "completion": XSS, "correct": False},
    ])
    for step in (1, 2, 3, 4):
        _jsonl(run_dir / "samples" / f"step_{step}.jsonl", [
            {"step": step, "prompt": "3+4=", "completion": f"answer at step {step}", "reward": 0.25 * step},
        ])
    return run_dir


def make_sft_run(run_dir: Path) -> Path:
    """An SFT-like run: losses and a final eval only, no samples/ directory, no env.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("recipe: sft\nsteps: 3\n")
    _jsonl(run_dir / "metrics.jsonl", [{"step": s, "loss/sft": 2.0 / s, "lr": 1e-3 * s / 3} for s in (1, 2, 3)])
    (run_dir / "eval.json").write_text(json.dumps({"after": {"greedy_acc": 0.25, "pass@1": 0.1875, "maj@4": 0.3125, "pass@4": 0.375, "length_mean": 17.5}}))
    return run_dir


def images(page: str) -> dict[str, bytes]:
    """data-plot name -> decoded PNG bytes of every inline image on the page."""
    found = re.findall(r'<img data-plot="([^"]+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {name: base64.b64decode(data) for name, data in found}


def test_run_report_embeds_reward_and_length_plots_as_inline_pngs(tmp_path):
    out = write_report(make_grpo_run(tmp_path / "run"))
    assert out == tmp_path / "run" / "report.html" and out.is_file()
    imgs = images(out.read_text())
    for name in ("reward", "length", "accuracy", "kl", "entropy", "clip", "loss"):
        assert imgs[name].startswith(PNG_MAGIC), name


def test_run_report_shows_eval_before_after_numbers(tmp_path):
    page = write_report(make_grpo_run(tmp_path / "run")).read_text()
    for number in ("0.5625", "0.125", "0.8125", "0.6875", "33.25", "+0.4375"):  # +0.4375 = greedy 0.5625 - 0.125
        assert number in page, number


def test_run_report_escapes_model_output(tmp_path):
    page = write_report(make_grpo_run(tmp_path / "run")).read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_run_report_has_no_external_resources(tmp_path):
    page = write_report(make_grpo_run(tmp_path / "run")).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page


def test_run_report_shows_samples_at_training_steps_and_config(tmp_path):
    page = write_report(make_grpo_run(tmp_path / "run")).read_text()
    for step in (1, 2, 3, 4):
        assert f"answer at step {step}" in page
    assert "<details><summary>config.yaml</summary>" in page and "tiny-base" in page
    assert "Environment" in page


def test_run_report_without_optional_files(tmp_path):
    run = make_sft_run(tmp_path / "sft")
    page = write_report(run).read_text()
    assert set(images(page)) == {"loss", "lr"}  # figures with no data are left out
    assert "0.3125" in page and "Sample completions" not in page


def test_run_report_survives_a_half_written_metrics_line(tmp_path):
    run = make_sft_run(tmp_path / "sft")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss/s')
    page = write_report(run).read_text()
    assert "loss" in images(page) and "were skipped" in page


def test_pipeline_report_compares_stages(tmp_path):
    pipe = tmp_path / "pipe"
    make_grpo_run(pipe / "zero")
    make_grpo_run(pipe / "r1", reward_shift=0.2)
    (pipe / "stages.json").write_text(json.dumps({"zero": str(pipe / "zero"), "r1": str(pipe / "r1")}))
    (pipe / "results.json").write_text(json.dumps({
        "zero": json.loads((pipe / "zero" / "eval.json").read_text())["after"],
        "r1": {"greedy_acc": 0.9375, "pass@1": 0.875, "maj@4": 0.9, "pass@4": 1.0, "length_mean": 41.5},
    }))
    page = write_report(pipe).read_text()
    assert directory_kind(pipe) == "pipeline"
    table = re.search(r"<table class=results>.*?</table>", page, re.S).group(0)
    assert 'href="#stage-zero"' in table and 'href="#stage-r1"' in table
    for number in ("0.9375", "0.875", "41.5", "0.5625"):
        assert number in table, number
    assert 'id="stage-zero"' in page and 'id="stage-r1"' in page
    imgs = images(page)
    assert imgs["compare-reward/mean"].startswith(PNG_MAGIC)
    assert imgs["compare-completion/length_mean"].startswith(PNG_MAGIC)
    assert imgs["stage-bars"].startswith(PNG_MAGIC)
    assert "<script" not in page.lower()


def test_pipeline_report_reads_the_demos_per_seed_results_as_their_means(tmp_path):
    """`r1kit demo` writes results.json as per-seed lists under "stages"; the report of its
    directory shows each stage's mean (0.5 and 0.75 -> 0.625) and no stage named "seeds" or "k"."""
    pipe = tmp_path / "demo"
    make_grpo_run(pipe / "r1_zero")
    (pipe / "stages.json").write_text(json.dumps({"r1_zero": str(pipe / "r1_zero")}))
    (pipe / "results.json").write_text(json.dumps({
        "seeds": [0, 1], "k": 4,
        "stages": {"r1_zero": {"greedy_acc": [0.5, 0.75], "pass@1": [0.25, 0.5], "maj@k": [0.5, 0.5], "pass@k": [1.0, 1.0], "mean_length": [10.0, 12.0]}},
        "findings": [],
    }))
    page = write_report(pipe).read_text()
    table = re.search(r"<table class=results>.*?</table>", page, re.S).group(0)
    for number in ("0.625", "0.375", "11"):
        assert number in table, number
    assert "maj@4" in table and "pass@4" in table
    assert 'id="stage-seeds"' not in page and 'id="stage-k"' not in page


def test_pipeline_report_follows_stages_json_to_a_cached_run_and_reads_eval_json(tmp_path):
    """Without results.json the table comes from each stage's eval.json; a stage's run dir may live
    outside the pipeline directory (a cache)."""
    pipe = tmp_path / "pipe"
    base = make_sft_run(tmp_path / "cache" / "base-abc")
    make_grpo_run(pipe / "grpo")
    pipe.joinpath("stages.json").write_text(json.dumps({"base": str(base), "grpo": str(pipe / "grpo")}))
    page = write_report(pipe).read_text()
    table = re.search(r"<table class=results>.*?</table>", page, re.S).group(0)
    assert ">base<" in table and ">grpo<" in table
    assert "0.3125" in table and "0.6875" in table  # maj@4 of base and of grpo
    assert images(page)["compare-lr"].startswith(PNG_MAGIC)  # both stages logged lr


def test_pipeline_report_of_a_pipeline_still_running(tmp_path):
    """No stages.json yet: a finished stage has DONE (holding its run dir, relative to where the
    pipeline ran) and the running stage is a run dir without DONE."""
    pipe = tmp_path / "runs" / "pipe"
    make_sft_run(tmp_path / "cache" / "base-abc")
    (pipe / "base").mkdir(parents=True)
    (pipe / "base" / "DONE").write_text("cache/base-abc")
    make_sft_run(pipe / "sft")
    assert directory_kind(pipe) == "pipeline"
    page = write_report(pipe).read_text()
    assert 'id="stage-base"' in page and 'id="stage-sft"' in page
    assert "not found" not in page
    assert images(page)["compare-loss/sft"].startswith(PNG_MAGIC)


def test_pipeline_report_names_a_missing_stage_dir(tmp_path):
    pipe = tmp_path / "pipe"
    make_sft_run(pipe / "sft")
    pipe.joinpath("stages.json").write_text(json.dumps({"sft": str(pipe / "sft"), "gone": "somewhere/else"}))
    page = write_report(pipe).read_text()
    assert "Run directory not found: somewhere/else" in page


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_report_of_neither_run_nor_pipeline_is_a_user_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(R1kitError, match=re.escape(str(path))) as err:
        write_report(path)
    assert "run directory" in str(err.value) and "pipeline directory" in str(err.value)


def test_cli_report_exits_2_with_one_line_on_a_bad_path(tmp_path, capsys):
    from r1kit.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_series_sorts_by_step_and_skips_missing_and_non_finite_values():
    rows = [{"step": 3, "kl": 0.3}, {"step": 1, "kl": 0.1}, {"step": 2}, {"step": 4, "kl": None}, {"step": 5, "kl": math.nan}]
    assert series(rows, "kl") == ([1.0, 3.0], [0.1, 0.3])


def test_ema_is_debiased_so_it_starts_at_the_first_value():
    # weight 0.5: acc1 = 0.5*2 = 1 -> 1/(1-0.5) = 2; acc2 = 0.5*1 + 0.5*4 = 2.5 -> 2.5/(1-0.25) = 3.333...
    assert ema([2.0, 4.0], weight=0.5) == pytest.approx([2.0, 10 / 3])


def test_short_curves_are_not_smoothed_and_long_ones_are_capped():
    assert ema_weight(12) == 0.0 and ema_weight(25) == 0.0
    assert ema_weight(100) == pytest.approx(0.75) and ema_weight(10_000) == 0.9


def test_run_plots_draw_only_figures_with_a_curve():
    rows = [{"step": 1, "loss/sft": 1.0, "reward/mean": None}, {"step": 2, "loss/sft": 0.5, "eval/pass@1": 0.5}]
    assert [p.name for p in run_plots(rows)] == ["loss"]  # one eval point is no curve; it is in the eval table
    assert run_plots([]) == []


def test_a_constant_learning_rate_gets_no_figure():
    rows = [{"step": s, "lr": 1e-3, "loss/sft": 1.0 / s} for s in (1, 2, 3)]
    assert [p.name for p in run_plots(rows)] == ["loss"]


def test_comparison_plots_only_keys_logged_by_two_stages():
    a = [{"step": s, "reward/mean": 0.1 * s, "kl": 0.0, "eval/pass@1": 0.5} for s in (1, 2)]
    b = [{"step": s, "reward/mean": 0.2 * s, "loss/sft": 1.0} for s in (1, 2)] + [{"step": 2, "eval/pass@1": 0.7}]
    # kl and loss/sft: one stage each; eval/pass@1: b has a single point, so only a is left.
    assert [p.name for p in comparison_plots({"a": a, "b": b})] == ["compare-reward/mean"]
