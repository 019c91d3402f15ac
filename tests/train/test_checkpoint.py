"""Checkpoints: atomic (a half-written one is never picked), rotated to the newest N, found by
`auto`, and holding every RNG and the optimizer exactly; Ctrl-C is deferred to the end of a step."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.train.checkpoint import (
    InterruptGuard,
    capture_rng,
    checkpoint_dirs,
    find_run_dir,
    latest_checkpoint,
    load_trainer_state,
    resolve_resume,
    restore_rng,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def parts(tiny_model_dir, char_tokenizer):
    model = load_model(str(tiny_model_dir), device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    return {"model": model, "tokenizer": char_tokenizer, "optimizer": opt, "scheduler": sched}


def save(run_dir, step, parts, keep=2, **state):
    return save_checkpoint(run_dir, step, state={"rng": [capture_rng()], **state}, keep=keep, **parts)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path, parts):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save(tmp_path, 1, parts)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)  # anything in between
    restore_rng(load_trainer_state(path)["rng"][0])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_optimizer_and_scheduler_state_round_trip(tmp_path, parts):
    model, opt, sched = parts["model"], parts["optimizer"], parts["scheduler"]
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step(), sched.step(), sched.step()
    opt.zero_grad()
    state = load_trainer_state(save(tmp_path, 2, parts, counters={"skipped": 3}))
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh, lambda s: 0.5 ** s)
    fresh.load_state_dict(state["optimizer"]), fresh_sched.load_state_dict(state["scheduler"])
    assert fresh_sched.get_last_lr() == sched.get_last_lr() == [0.25e-3]
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state[p][key], opt.state[p][key])
    assert state["step"] == 2 and state["counters"] == {"skipped": 3}


def test_checkpoint_holds_a_loadable_model_and_its_tokenizer(tmp_path, parts):
    path = save(tmp_path, 1, parts)
    reloaded = load_model(str(path / "model"), device="cpu")
    for name, tensor in parts["model"].state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert (path / "model" / "tokenizer.json").is_file()
    assert not (path / "ref").exists()


def test_only_the_newest_checkpoints_are_kept(tmp_path, parts):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, parts, keep=2)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [3, 4]
    save(tmp_path, 5, parts, keep=0)  # 0 keeps all
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [3, 4, 5]


def test_a_half_written_checkpoint_is_never_picked_and_is_cleaned_up(tmp_path, parts):
    save(tmp_path, 1, parts)
    crashed = tmp_path / "checkpoints" / "step_2.tmp"  # a crash mid-write leaves this
    (crashed / "model").mkdir(parents=True)
    no_state = tmp_path / "checkpoints" / "step_3"  # not produced by save_checkpoint, but be safe
    no_state.mkdir()
    assert latest_checkpoint(tmp_path).name == "step_1"
    assert resolve_resume(tmp_path, "auto").name == "step_1"
    save(tmp_path, 2, parts)
    assert not crashed.exists()
    assert latest_checkpoint(tmp_path).name == "step_2"


def test_saving_after_resuming_from_an_older_checkpoint_drops_the_abandoned_newer_ones(tmp_path, parts):
    for step in (1, 2, 3):
        save(tmp_path, step, parts, keep=0)
    save(tmp_path, 2, parts, keep=0)  # resumed from step_1, now at step 2 again
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [1, 2]


def test_resume_settings(tmp_path, parts):
    assert resolve_resume(tmp_path, "") is None
    assert resolve_resume(tmp_path, "auto") is None  # nothing yet: start afresh
    path = save(tmp_path, 7, parts)
    assert resolve_resume(tmp_path, str(path)) == path
    with pytest.raises(R1kitError, match="is not a complete checkpoint"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoints" / "step_6"))


def test_auto_resume_without_a_run_name_finds_the_newest_run_with_a_checkpoint(tmp_path, parts):
    (tmp_path / "grpo-20250101-000000").mkdir()  # no checkpoint
    save(tmp_path / "grpo-20250102-000000", 1, parts)
    assert find_run_dir(tmp_path, "grpo", "auto").name == "grpo-20250102-000000"
    assert find_run_dir(tmp_path, "sft", "auto") is None
    ckpt = tmp_path / "grpo-20250102-000000" / "checkpoints" / "step_1"
    assert find_run_dir(tmp_path, "grpo", str(ckpt)) == tmp_path / "grpo-20250102-000000"


def test_ctrl_c_inside_the_guard_waits_for_its_end():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    done = []
    with pytest.raises(KeyboardInterrupt):
        with InterruptGuard() as guard:
            os.kill(os.getpid(), signal.SIGINT)
            done.append("rest of the step")
    assert done == ["rest of the step"] and not guard.aborted
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_ctrl_c_aborts_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with InterruptGuard() as guard:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            done.append("never")
    assert done == [] and guard.aborted
