"""Local folders laid out like Hugging Face Hub dataset repositories, for tests that load datasets
by name without a hub: `datasets.load_dataset(folder, name, split=...)` reads them exactly as it
reads the repository they copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Rows = list[dict[str, Any]]


def write_hub_dataset(root: Path, configs: dict[str | None, dict[str, Rows]]) -> Path:
    """A dataset repository at `root`: per config, `<config>/<split>-00000-of-00001.parquet` and a
    README.md whose YAML header lists the configs (the layout of openai/gsm8k). The config None
    writes `<split>.jsonl` files at the top with no header (the layout of HuggingFaceH4/MATH-500),
    whose splits `datasets` infers from the file names."""
    from datasets import Dataset

    root.mkdir(parents=True, exist_ok=True)
    header = []
    for name, splits in configs.items():
        for split, rows in splits.items():
            if name is None:
                Dataset.from_list(rows).to_json(str(root / f"{split}.jsonl"))
            else:
                (root / name).mkdir(exist_ok=True)
                Dataset.from_list(rows).to_parquet(str(root / name / f"{split}-00000-of-00001.parquet"))
        if name is not None:
            header.append({"config_name": name, "data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in splits]})
    readme = f"---\n{yaml.safe_dump({'configs': header}, sort_keys=False)}---\n" if header else ""
    (root / "README.md").write_text(readme + f"# {root.name}\n")
    return root


GSM8K = {
    "train": [
        {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
        {"question": "A box holds 6 eggs. How many eggs are in 7 boxes?", "answer": "7 boxes hold 7 * 6 = <<7*6=42>>42 eggs.\n#### 42"},
        {"question": "Ann had 20 dollars and spent 8. How much is left?", "answer": "20 - 8 = <<20-8=12>>12 dollars are left.\n#### 12"},
        {"question": "Half of 30 pens are red. How many are red?", "answer": "30 / 2 = <<30/2=15>>15 pens are red.\n#### 15"},
    ],
    "test": [
        {"question": "Sam reads 5 pages a day. How many in 4 days?", "answer": "5 * 4 = <<5*4=20>>20 pages.\n#### 20"},
        {"question": "Mia has 9 cards and gets 9 more. How many now?", "answer": "9 + 9 = <<9+9=18>>18 cards.\n#### 18"},
    ],
}
"""A few rows with openai/gsm8k's columns and answer convention (worked solution, `#### n`)."""


def write_gsm8k(root: Path) -> Path:
    """A copy of openai/gsm8k's layout (configs `main` and `socratic`) with the rows of `GSM8K`."""
    return write_hub_dataset(root, {"main": GSM8K, "socratic": {s: rows[:1] for s, rows in GSM8K.items()}})
