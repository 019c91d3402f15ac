"""Bad input to `r1kit grpo`: each mistake is one sentence on stderr naming the thing and the fix,
exit status 2, and an existing run directory of the same name is left exactly as it was (every
input is checked before the run directory is touched).

tests/test_cli.py already checks the messages for a config-key typo, a missing model directory,
an unknown reward name, a malformed JSONL line and a missing column (through `sft`); here those
cases only check that nothing already written is lost, and the new cases check their messages.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from r1kit.cli import main


def grpo_args(tmp_path: Path, model_dir: Path, *extra: str) -> list[str]:
    """A 1-step GRPO run named `grpo` under tmp_path/runs, small and quiet, evaluated on the
    arithmetic task's test split (named explicitly, so a data.path may be given alone)."""
    return [
        "grpo", f"model.path={model_dir}", "model.device=cpu", "grpo.steps=1", "grpo.prompts_per_step=2", "grpo.group_size=2",
        "grpo.beta=0", "sampling.max_new_tokens=4", "eval.k=0", "eval.max_new_tokens=2", "data.task=arithmetic", "data.test_size=2", "eval_before=false",
        "samples_every=0", f"run.output_dir={tmp_path / 'runs'}", "run.name=grpo", "run.threads=1", "run.progress=false",
        "run.tensorboard=false", *extra,
    ]  # fmt: skip


@pytest.fixture
def earlier_run(tmp_path) -> dict[Path, bytes]:
    """An earlier run in runs/grpo (config, metrics, a checkpoint); returns its files' bytes."""
    run = tmp_path / "runs" / "grpo"
    (run / "checkpoints" / "step_5").mkdir(parents=True)
    (run / "config.yaml").write_text("recipe: grpo\n# the earlier run's config\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "reward/mean": 0.5}) + "\n")
    (run / "checkpoints" / "step_5" / "trainer.pt").write_bytes(b"earlier state")
    return snapshot(run)


def snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def assert_error(capsys, tmp_path, earlier: dict[Path, bytes], argv: list[str], *fragments: str) -> str:
    """Exit 2, one `r1kit: error:` line holding every fragment, no traceback, earlier run intact."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1kit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert snapshot(tmp_path / "runs" / "grpo") == earlier
    return lines[0]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [{"prompt": "1+1", "answer": "2"}, {"prompt": "2+3", "answer": "5"}]


def test_malformed_jsonl_line(capsys, tmp_path, tiny_model_dir, earlier_run):
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD[0], '{"prompt": "2+2", "answer": }'])
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, f"data.path={data}"), f"{data}:2: malformed JSON")


def test_missing_prompt_column(capsys, tmp_path, tiny_model_dir, earlier_run):
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD[0], {"question": "2+2", "answer": "4"}])
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, f"data.path={data}"),
                 f"{data}:2: missing column 'prompt'", "present: ['answer', 'question']", "data.columns")


def test_mistyped_prompt_column(capsys, tmp_path, tiny_model_dir, earlier_run):
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD[0], GOOD[1], {"prompt": 7, "answer": "7"}])
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, f"data.path={data}"),
                 f"{data}:3: column 'prompt' must be str or list, got int 7")


def test_empty_dataset(capsys, tmp_path, tiny_model_dir, earlier_run):
    data = tmp_path / "train.jsonl"
    data.write_text("\n")
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, f"data.path={data}"),
                 f"data file {str(data)!r} is empty; it needs at least one row")


def test_prompts_longer_than_the_context_are_an_error_when_asked(capsys, tmp_path, tiny_model_dir, earlier_run):
    # The tiny model's context is 512 tokens: 500 new tokens leave 12 for a prompt, and the
    # arithmetic task's prompts (rendered with the `tiny` template) are longer.
    argv = grpo_args(tmp_path, tiny_model_dir, "sampling.max_new_tokens=500", "data.long_prompts=error")
    assert_error(capsys, tmp_path, earlier_run, argv, "training prompts are longer than 12 tokens", "set data.long_prompts=skip or truncate")


def test_every_prompt_too_long_is_an_error_even_when_skipping(capsys, tmp_path, tiny_model_dir, earlier_run):
    argv = grpo_args(tmp_path, tiny_model_dir, "data.max_prompt_tokens=3")
    assert_error(capsys, tmp_path, earlier_run, argv, "every training prompt is longer than 3 tokens")


def long_and_short(tmp_path: Path) -> Path:
    rows = [{"prompt": "1+1", "answer": "2"}, {"prompt": "9+" * 20 + "1", "answer": "181"}, {"prompt": "2+3", "answer": "5"}]
    return write_jsonl(tmp_path / "train.jsonl", rows)


def test_long_prompts_are_skipped_and_counted(capsys, tmp_path, tiny_model_dir):
    argv = grpo_args(tmp_path, tiny_model_dir, f"data.path={long_and_short(tmp_path)}", "data.max_prompt_tokens=20")
    assert main(argv) == 0, capsys.readouterr().err
    assert "skipping 1 of 3 training prompts longer than 20 tokens" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "runs" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["data/skipped_long_prompts"] for r in rows if "reward/mean" in r] == [1]


def test_long_prompts_are_truncated_from_the_left(capsys, tmp_path, tiny_model_dir, monkeypatch, char_tokenizer):
    from r1kit.data.templates import render_prompt

    seen: list[list[int]] = []
    from r1kit.rollout import HFEngine

    real = HFEngine.generate
    monkeypatch.setattr(HFEngine, "generate", lambda self, ids, params: (seen.extend(ids), real(self, ids, params))[1])
    argv = grpo_args(tmp_path, tiny_model_dir, f"data.path={long_and_short(tmp_path)}", "data.max_prompt_tokens=20",
                     "data.long_prompts=truncate", "grpo.prompts_per_step=3")
    assert main(argv) == 0, capsys.readouterr().err
    full = char_tokenizer(render_prompt("9+" * 20 + "1", "tiny"), add_special_tokens=False)["input_ids"]
    assert len(full) > 20
    assert max(len(ids) for ids in seen) == 20
    assert full[-20:] in seen  # the end of the prompt, where the question is, survives


def test_tokenizer_without_a_pad_token_uses_eos_with_a_warning(capsys, tmp_path, tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    model_dir = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = None
    tok.save_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token_id is None
    with caplog.at_level(logging.WARNING, logger="r1kit"):
        assert main(grpo_args(tmp_path, model_dir)) == 0, capsys.readouterr().err
    assert "has no pad token; using its eos token '<eos>' for padding" in caplog.text
    assert (tmp_path / "runs" / "grpo" / "model" / "config.json").is_file()


# Messages checked in tests/test_cli.py; here: the earlier run survives.


def test_missing_model_directory_leaves_the_earlier_run(capsys, tmp_path, earlier_run):
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tmp_path / "no-model"), "does not exist; check model.path")


def test_config_key_typo_leaves_the_earlier_run(capsys, tmp_path, tiny_model_dir, earlier_run):
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, "grpo.stepz=3"), "unknown config key 'grpo.stepz'")


def test_unknown_reward_name_leaves_the_earlier_run(capsys, tmp_path, tiny_model_dir, earlier_run):
    assert_error(capsys, tmp_path, earlier_run, grpo_args(tmp_path, tiny_model_dir, "rewards=[nosuch]"), "unknown reward 'nosuch'")
