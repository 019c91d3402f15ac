"""Datasets by name: a `save_to_disk` directory, a local dataset repository folder or a Hub id.

Everything that is not a plain data file goes through the `datasets` library, so a folder laid out
like a Hub repository (`main/train-00000-of-00001.parquet` with a README.md whose YAML header lists
the configs) loads exactly as its Hub id would: `load_dataset(path, name, split=split)`. A Hub id is
read from the local cache when it is there (`HF_DATASETS_OFFLINE=1` reads nothing else).

Every failure -- an id the Hub does not know, no network and nothing cached, a config or split the
dataset does not have -- is one `R1kitError` naming the id, the config, the split and the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError

SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""Files `save_to_disk` writes at the top of its directory (a DatasetDict, a Dataset)."""


def is_saved_dataset(path: Path) -> bool:
    """True for a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def read_dataset(path: str, name: str = "", split: str = "train", held_out: bool = False) -> list[dict[str, Any]]:
    """The rows of `split` of the dataset at `path` (config `name`, if the dataset has several).

    held_out: the rows are the test split read from the training path, which a saved single
    Dataset (one split, no names) cannot give without evaluating on the training rows.
    """
    if is_saved_dataset(Path(path)):
        return _read_saved(Path(path), split, held_out)
    import datasets

    where = f"dataset {path!r}" + (f" (config {name!r})" if name else "")
    try:
        ds = datasets.load_dataset(path, name or None, split=split)
    except ValueError as e:  # a config or split the dataset lacks; the message lists the valid ones
        field = "data.split / data.test_split" if "split" in str(e).lower() else "data.name"
        raise R1kitError(f"{where}, split {split!r}: {_first_line(e)}; set {field} to one of those") from None
    except Exception as e:  # noqa: BLE001 - not found, offline, unreadable: one sentence, no traceback
        raise R1kitError(
            f"{where} could not be loaded ({type(e).__name__}: {_first_line(e)}); data.path takes a .jsonl/.json/.parquet file, "
            "a save_to_disk directory, a local dataset folder or a Hub id that is reachable or already in the cache"
        ) from None
    return ds.to_list()


def _read_saved(path: Path, split: str, held_out: bool) -> list[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise R1kitError(f"{path}: not a readable save_to_disk directory ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise R1kitError(f"{path} has no split {split!r}; it has {list(ds)}: set data.split / data.test_split to one of those")
        return ds[split].to_list()
    if held_out:
        raise R1kitError(f"{path} holds a single saved Dataset, with no test split to hold out; set data.test_path")
    return ds.to_list()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0].rstrip(".") if text else "no message"
