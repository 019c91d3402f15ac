"""`load_rows`: every file format loads, columns map, and each mistake a user can make in a data
file is one R1kitError naming the file, the line (for JSONL) and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1kit.data.io import load_rows, write_jsonl
from r1kit.errors import R1kitError

ROWS = [{"prompt": "1+2=?", "answer": "3"}, {"prompt": "2+2=?", "answer": "4"}, {"prompt": "5-1=?", "answer": "4"}]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- formats --------------------------------------------------------------------------------------


def test_jsonl_loads_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", "   ", json.dumps(ROWS[1]), json.dumps(ROWS[2])])
    assert load_rows(path, required={"prompt": str, "answer": str}) == ROWS


def test_json_list_and_data_wrapper_load(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    assert load_rows(tmp_path / "list.json", required=["prompt"]) == ROWS
    assert load_rows(tmp_path / "wrapped.json", required=["prompt"]) == ROWS


def test_parquet_loads(tmp_path):
    from datasets import Dataset

    Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    assert load_rows(tmp_path / "d.parquet", required={"prompt": str, "answer": str}) == ROWS


def test_saved_hf_dataset_directory_loads(tmp_path):
    from datasets import Dataset

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert load_rows(tmp_path / "ds", required=["prompt", "answer"]) == ROWS


def test_saved_hf_dataset_dict_uses_its_train_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"test": Dataset.from_list(ROWS[:1]), "train": Dataset.from_list(ROWS[1:])}).save_to_disk(str(tmp_path / "dd"))
    assert load_rows(tmp_path / "dd") == ROWS[1:]


def test_column_mapping_renames_their_columns_to_ours(tmp_path):
    theirs = [{"question": r["prompt"], "solution": r["answer"], "id": i} for i, r in enumerate(ROWS)]
    path = write_jsonl(tmp_path / "theirs.jsonl", theirs)
    rows = load_rows(path, required={"prompt": str, "answer": str}, columns={"prompt": "question", "answer": "solution"})
    assert [{k: r[k] for k in ("prompt", "answer")} for r in rows] == ROWS
    assert "question" not in rows[0] and "solution" not in rows[0]
    assert [r["id"] for r in rows] == [0, 1, 2]  # other columns are kept


def test_limit_keeps_the_first_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert load_rows(path, limit=2) == ROWS[:2]
    assert load_rows(path, limit=0) == ROWS


def test_write_jsonl_round_trips_and_leaves_no_temp_file(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "out.jsonl", ROWS + [{"prompt": "√2 ≈ ?", "answer": "1.41"}])
    assert load_rows(path) == ROWS + [{"prompt": "√2 ≈ ?", "answer": "1.41"}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


# -- errors ---------------------------------------------------------------------------------------


def test_malformed_jsonl_line_names_file_line_and_column(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(ROWS[0]), "", '{"prompt": "2+2=?", "answer": 4,}', json.dumps(ROWS[2])])
    with pytest.raises(R1kitError) as e:
        load_rows(path)
    message = str(e.value)
    assert f"{path}:3:" in message  # line 3 of the file (the blank line 2 still counts)
    assert "malformed JSON at column 33" in message
    assert "fix or remove that line" in message


def test_missing_column_names_the_column_the_line_and_the_present_columns(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", json.dumps({"question": "3+3=?", "answer": "6"})])
    with pytest.raises(R1kitError) as e:
        load_rows(path, required=["prompt", "answer"])
    message = str(e.value)
    assert f"{path}:3:" in message
    assert "missing column 'prompt'" in message
    assert "present: ['answer', 'question']" in message
    assert "data.columns" in message  # the fix


def test_missing_mapped_column_says_what_it_was_mapped_from(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "1+2=?", "answer": "3"}])
    with pytest.raises(R1kitError, match=r"d\.jsonl:1: missing column 'prompt' \(mapped from 'question'\); present: \['answer', 'text'\]"):
        load_rows(path, required=["prompt"], columns={"prompt": "question"})


def test_wrong_type_names_the_column_the_line_the_wanted_and_the_found_type(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), json.dumps({"prompt": 12, "answer": "3"})])
    with pytest.raises(R1kitError) as e:
        load_rows(path, required={"prompt": str})
    message = str(e.value)
    assert f"{path}:2:" in message
    assert "column 'prompt' must be str, got int 12" in message


def test_wrong_type_with_several_accepted_types_lists_them(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": None}])
    with pytest.raises(R1kitError, match=r"column 'prompt' must be str or list, got NoneType None"):
        load_rows(path, required={"prompt": (str, list)})


def test_row_that_is_not_an_object_is_an_error(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["[1, 2]"])
    with pytest.raises(R1kitError, match=r"d\.jsonl:1: each row must be a JSON object, got list"):
        load_rows(path)


def test_errors_in_non_jsonl_files_name_the_row(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([ROWS[0], {"answer": "1"}]))
    with pytest.raises(R1kitError, match=r"d\.json row 1: missing column 'prompt'"):
        load_rows(tmp_path / "d.json", required=["prompt"])


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n  \n"), ("empty.json", ""), ("list.json", "[]")])
def test_empty_file_is_an_error(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(R1kitError, match=rf"data file '.*{name}' is empty; it needs at least one row"):
        load_rows(tmp_path / name)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(R1kitError, match=r"data file '.*nope\.jsonl' does not exist; check the path"):
        load_rows(tmp_path / "nope.jsonl")


def test_unknown_extension_is_an_error_listing_the_formats(tmp_path):
    (tmp_path / "d.csv").write_text("prompt,answer\n1+2=?,3\n")
    with pytest.raises(R1kitError, match=r"d\.csv' has an unknown type; use one of \.jsonl, \.json, \.parquet or a saved HF dataset"):
        load_rows(tmp_path / "d.csv")


def test_malformed_json_file_names_line_and_column(tmp_path):
    (tmp_path / "d.json").write_text('[\n  {"prompt": "1"},\n  {"prompt" "2"}\n]')
    with pytest.raises(R1kitError, match=r"d\.json:3: malformed JSON at column 13"):
        load_rows(tmp_path / "d.json")


def test_json_object_without_data_is_an_error(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"rows": ROWS}))
    with pytest.raises(R1kitError, match=r"must hold a list of objects"):
        load_rows(tmp_path / "d.json")


def test_unreadable_parquet_is_an_error(tmp_path):
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(R1kitError, match=r"d\.parquet: not a readable parquet file"):
        load_rows(tmp_path / "d.parquet")


def test_directory_with_no_dataset_in_it_is_an_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(R1kitError, match=r"plain' could not be loaded \(EmptyDatasetError: .* doesn't contain any data files\); data.path takes"):
        load_rows(tmp_path / "plain")
