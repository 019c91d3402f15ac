"""Trackers hold what metrics.jsonl holds: TensorBoard events (RUN/tb) and, with run.wandb, a W&B
run (offline here: RUN/wandb/offline-run-*/run-ID.wandb, read back record by record)."""

from __future__ import annotations

import json
import struct

import pytest
from recipe_runs import train

from r1kit.errors import R1kitError
from r1kit.report import tracking

GRPO_RUN = [
    "model.device=cpu", "run.threads=1", "run.progress=false", "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.group_size=2",
    "sampling.max_new_tokens=6", "data.train_size=8", "data.test_size=2", "eval.k=0", "eval.max_new_tokens=4",
]  # fmt: skip


def grpo_run(model_dir, out, *extra: str):
    return train("grpo", [f"model.path={model_dir}", f"run.output_dir={out}", "run.name=run", *GRPO_RUN, *extra])


def jsonl_values(run_dir) -> dict[tuple[int, str], float]:
    """(step, key) -> value of every number metrics.jsonl logged (the time stamp aside)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], k): v for r in rows for k, v in r.items() if k not in ("step", "time") and isinstance(v, (int, float))}


def wandb_records(path) -> list:
    """The protobuf records of a W&B run file: a 7-byte header (":W&B", magic, version), then
    LevelDB-log chunks of 32 KiB blocks, each with a 7-byte header (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, records, pending = path.read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_every_step_metric_and_the_resolved_config(small_model_dir, tmp_path, monkeypatch, restore_threads):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "r1kit-tests")
    run_dir = grpo_run(small_model_dir, tmp_path, "run.wandb=true", "run.tensorboard=false", "grpo.preset=dapo")
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(path)
    history: dict[tuple[int, str], float] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            history.update({(r.history.step.num, i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    logged = jsonl_values(run_dir)
    assert {"reward/mean", "reward/overlong/mean", "loss/policy", "eval/greedy_acc"} <= {k for _, k in logged}
    assert {key: history.get(key) for key in logged} == logged  # every number, at its step
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name) == ("r1kit-tests", "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert (config["grpo"]["preset"], config["grpo"]["eps_high"], config["sampling"]["max_new_tokens"]) == ("dapo", 0.28, 6)


@pytest.mark.slow
def test_tensorboard_events_hold_the_step_metrics(small_model_dir, tmp_path, restore_threads):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_dir = grpo_run(small_model_dir, tmp_path, "run.tensorboard=true")
    events = event_accumulator.EventAccumulator(str(run_dir / "tb"), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    logged = jsonl_values(run_dir)
    for key in ("reward/mean", "loss/policy", "kl", "completion/length_mean"):
        jsonl = {step: v for (step, k), v in logged.items() if k == key}
        tb = {e.step: e.value for e in events.Scalars(key)}
        assert tb == pytest.approx(jsonl, rel=1e-6, abs=1e-7), key  # TensorBoard keeps float32


def test_wandb_asked_for_but_not_installed_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(R1kitError, match=r"run.wandb=true needs the wandb package; install it \(pip install 'r1kit\[wandb\]'\) or set run.wandb=false"):
        tracking.check_wandb(True)
    tracking.check_wandb(False)
