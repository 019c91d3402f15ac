"""Datasets by name: a local folder laid out like a Hub repository, a saved DatasetDict and a Hub id
load through `data.path` / `data.name` / `data.split` / `data.test_split`; a Hub id that cannot be
reached is one sentence; `data.transform` reshapes rows (GSM8K into the R1 format)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_layout import GSM8K, write_gsm8k

from r1kit.config import DataArgs
from r1kit.data.source import load_split
from r1kit.data.transforms import gsm8k_r1
from r1kit.errors import R1kitError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory) -> Path:
    return write_gsm8k(tmp_path_factory.mktemp("hub") / "openai" / "gsm8k")


def test_a_local_hub_layout_loads_its_config_and_splits(gsm8k_dir):
    data = DataArgs(task="", path=str(gsm8k_dir), name="main", columns={"prompt": "question"})
    train, test = load_split(data, "train", required=("prompt", "answer")), load_split(data, "test")
    assert [r["prompt"] for r in train] == [r["question"] for r in GSM8K["train"]]
    assert [r["answer"] for r in test] == [r["answer"] for r in GSM8K["test"]]
    socratic = DataArgs(task="", path=str(gsm8k_dir), name="socratic")  # the other config holds one row a split here
    assert load_split(socratic, "train", required=()) == GSM8K["train"][:1] and load_split(socratic, "test", required=()) == GSM8K["test"][:1]


def test_split_slices_and_sizes_apply(gsm8k_dir):
    data = DataArgs(task="", path=str(gsm8k_dir), name="main", split="train[1:3]", columns={"prompt": "question"})
    assert [r["prompt"] for r in load_split(data, "train")] == [r["question"] for r in GSM8K["train"][1:3]]
    data = DataArgs(task="", path=str(gsm8k_dir), name="main", test_size=1, columns={"prompt": "question"})
    assert len(load_split(data, "test")) == 1


def test_a_dataset_by_name_is_relative_to_the_working_directory_like_a_hub_id(gsm8k_dir, monkeypatch):
    monkeypatch.chdir(gsm8k_dir.parent.parent)
    rows = load_split(DataArgs(task="", path="openai/gsm8k", name="main", columns={"prompt": "question"}), "test")
    assert len(rows) == 2


def test_a_split_or_config_the_dataset_lacks_is_an_error_naming_the_valid_ones(gsm8k_dir):
    with pytest.raises(R1kitError, match=r"split 'validation': Unknown split \"validation\". Should be one of \['train', 'test'\]; set data.split / data.test_split"):
        load_split(DataArgs(task="", path=str(gsm8k_dir), name="main", test_split="validation"), "test")
    with pytest.raises(R1kitError, match=r"\(config 'mian'\), split 'train': BuilderConfig 'mian' not found. Available: \['main', 'socratic'\]; set data.name"):
        load_split(DataArgs(task="", path=str(gsm8k_dir), name="mian"), "train")


def test_a_saved_dataset_dict_gives_data_split_and_test_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"prompt": "a"}]), "dev": Dataset.from_list([{"prompt": "b"}])}).save_to_disk(str(tmp_path / "dd"))
    data = DataArgs(task="", path=str(tmp_path / "dd"), test_split="dev")
    assert load_split(data, "train") == [{"prompt": "a"}] and load_split(data, "test") == [{"prompt": "b"}]
    with pytest.raises(R1kitError, match=r"dd has no split 'test'; it has \['train', 'dev'\]"):
        load_split(DataArgs(task="", path=str(tmp_path / "dd")), "test")


def test_a_saved_single_dataset_has_no_test_split_to_hold_out(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"prompt": "a"}]).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(R1kitError, match="holds a single saved Dataset, with no test split to hold out; set data.test_path"):
        load_split(DataArgs(task="arithmetic", path=str(tmp_path / "ds")), "test")


def test_a_missing_local_file_is_still_a_missing_file_not_a_hub_id(tmp_path):
    with pytest.raises(R1kitError, match=r"data file '.*nope\.parquet' does not exist"):
        load_split(DataArgs(task="", path=str(tmp_path / "nope.parquet")), "train")


def test_a_hub_id_offline_is_one_sentence_naming_the_id_and_the_cause(tmp_path, tiny_model_dir):
    """The whole command line, offline with an empty cache: exit 2, one line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-m", "r1kit", "grpo", "--config", str(REPO / "configs/tiny-arith/grpo.yaml"), f"model.path={tiny_model_dir}",
            "data.path=openai/gsm8k", "data.name=main", f"run.output_dir={tmp_path / 'runs'}", "run.progress=false", "run.tensorboard=false"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "r1kit: error: dataset 'openai/gsm8k' (config 'main') could not be loaded (ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub "
        "(OfflineModeIsEnabled)); data.path takes a .jsonl/.json/.parquet file, a save_to_disk directory, a local dataset folder or a Hub id "
        "that is reachable or already in the cache"
    ], done.stderr


# --------------------------------------------------------------------------------------------
# Row transforms


def test_gsm8k_r1_gives_prompt_the_final_number_and_the_solution_in_r1_form():
    row = gsm8k_r1({"question": "Q?", "answer": "Half of 48 is 48/2 = <<48/2=24>>24.\nThen 24 + 48 = <<24+48=72>>72.\n#### 72"})
    assert row == {
        "prompt": "Q?",
        "answer": "72",
        "solution": "Half of 48 is 48/2 = <<48/2=24>>24.\nThen 24 + 48 = <<24+48=72>>72.\n#### 72",
        "cot": "<think>Half of 48 is 48/2 = 24.\nThen 24 + 48 = 72.</think><answer>72</answer>",
    }
    assert gsm8k_r1({"question": "Q", "answer": "big\n#### 1,200", "id": 3}) == {"prompt": "Q", "answer": "1200", "solution": "big\n#### 1,200", "cot": "<think>big</think><answer>1200</answer>", "id": 3}


def test_data_transform_applies_before_the_checks_and_names_bad_rows(gsm8k_dir, tmp_path):
    data = DataArgs(task="", path=str(gsm8k_dir), name="main", transform="gsm8k_r1")
    rows = load_split(data, "train", required=("prompt", "cot", "answer"))
    assert [r["answer"] for r in rows] == ["7", "42", "12", "15"]
    assert rows[0]["cot"] == "<think>He has 3 + 4 = 7 apples.</think><answer>7</answer>"
    with pytest.raises(R1kitError, match=r"data.transform=gsm8k_r1 needs GSM8K's columns: `question` and an `answer` ending in `#### n`; got \{'prompt'"):
        from r1kit.data.io import write_jsonl

        load_split(DataArgs(task="", path=str(write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p"}])), transform="gsm8k_r1"), "train")


def test_a_users_transform_by_module_path_and_unknown_names(tmp_path, monkeypatch):
    from r1kit.data.io import write_jsonl

    (tmp_path / "my_rows.py").write_text("def upper(row):\n    return {'prompt': row['q'].upper()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "abc"}])
    assert load_split(DataArgs(task="", path=str(path), transform="my_rows:upper"), "train") == [{"prompt": "ABC"}]
    with pytest.raises(R1kitError, match=r"unknown data.transform 'gsm8k'; choose one of \['gsm8k_r1'\] or give package.module:function"):
        load_split(DataArgs(task="", path=str(path), transform="gsm8k"), "train")


def test_a_dataset_by_name_evaluates_on_its_own_test_split_scored_by_the_math_reward(gsm8k_dir):
    """With a built-in task configured too (the tiny-arith configs), the test rows and their
    verifier both come from the named dataset, not the task."""
    from r1kit.eval.scoring import scorer_for

    data = DataArgs(task="arithmetic", path=str(gsm8k_dir), name="main", transform="gsm8k_r1")
    assert [r["answer"] for r in load_split(data, "test")] == ["20", "18"]
    score, _ = scorer_for(data)
    assert score(["<answer>\\frac{40}{2}</answer>"], answer=["20"]) == [1.0]  # math-verify equivalence, not the task's integer check
