"""Where a run's and a pipeline's files are, and reading them for a report without failing on a
run that is still writing: `stage_dirs` finds each stage's run directory (stages.json, the DONE
files, or the usual layout), `stage_results` their held-out metrics; missing files and broken
lines give None or are skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from r1kit.report.logger import read_metrics

RUN_MARKERS = ("metrics.jsonl", "eval.json", "config.yaml")
"""Files of which a run directory holds at least one."""


def stage_dirs(pipe_dir: Path) -> dict[str, Path | None]:
    """Stage name -> its run directory (None when it cannot be found), in pipeline order.

    stages.json is the record; a stage's run directory may live elsewhere (a cache). Paths were
    written relative to wherever the pipeline ran, so when one does not resolve from here the
    usual layout `pipe_dir/<stage>` is tried."""
    recorded = recorded_stages(pipe_dir)
    results = _results_json(pipe_dir)
    names = list(recorded) + [n for n in results if n not in recorded]
    return {name: _resolve(pipe_dir, name, recorded.get(name)) for name in names}


def stage_results(pipe_dir: Path, stages: Mapping[str, Path | None]) -> dict[str, dict[str, Any]]:
    """Held-out metrics per stage: results.json when the pipeline wrote it (it leaves out stages
    marked show: false), otherwise the `after` block of each stage's eval.json."""
    results = _results_json(pipe_dir)
    if results:
        return results
    out = {}
    for name, run_dir in stages.items():
        ev = read_json(run_dir / "eval.json") if run_dir is not None else None
        if isinstance(ev, dict) and isinstance(ev.get("after"), dict):
            out[name] = ev["after"]
    return out


def _results_json(pipe_dir: Path) -> dict[str, dict[str, Any]]:
    """results.json as stage -> metrics: a pipeline's own, or the demo's (per-seed lists under
    "stages", shown here as their means)."""
    results = read_json(pipe_dir / "results.json")
    if not isinstance(results, dict):
        return {}
    if isinstance(results.get("stages"), dict) and "seeds" in results:
        k = results.get("k", 4)
        names = {"greedy_acc": "greedy_acc", "pass@1": "pass@1", "maj@k": f"maj@{k}", "pass@k": f"pass@{k}", "mean_length": "length_mean"}
        return {
            stage: {names.get(m, m): sum(v) / len(v) for m, v in metrics.items() if isinstance(v, list) and v}
            for stage, metrics in results["stages"].items()
        }
    return {n: m for n, m in results.items() if isinstance(m, dict)}


def read_run_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Rows of metrics.jsonl and a warning. A run still writing may have a half-written last line;
    the report then keeps every complete row instead of failing."""
    try:
        return read_metrics(run_dir), ""
    except (ValueError, UnicodeDecodeError):
        rows = read_jsonl(run_dir / "metrics.jsonl")
        return rows, "metrics.jsonl has lines that are not JSON (a run still writing?); they were skipped."


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or not JSON: a report shows what it can."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; missing files and broken lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_stages(pipe_dir: Path) -> dict[str, str]:
    """stages.json, or for a pipeline still running (or stopped) before writing it, its stages on disk."""
    data = read_json(pipe_dir / "stages.json")
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    return stages_on_disk(pipe_dir)


def stages_on_disk(pipe_dir: Path) -> dict[str, str]:
    """Stage name -> run dir for each subdirectory that is a finished stage (its DONE file holds the
    run dir, which may be a cache) or a stage in progress (a run dir without DONE), oldest first."""
    found = []
    for sub in pipe_dir.iterdir() if pipe_dir.is_dir() else ():
        done = sub / "DONE"
        if done.is_file():
            try:
                found.append((done.stat().st_mtime, sub.name, _done_run_dir(done) or str(sub)))
            except OSError:
                continue
        elif sub.is_dir() and (sub / "config.yaml").is_file():
            found.append(((sub / "config.yaml").stat().st_mtime, sub.name, str(sub)))
    return {name: path for _, name, path in sorted(found)}


def _done_run_dir(done: Path) -> str:
    """The run dir a DONE file records: JSON {"run_dir", "config"}, or a bare path."""
    text = done.read_text(encoding="utf-8").strip()
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return text
    return str(record.get("run_dir", "")) if isinstance(record, dict) else text


def _resolve(pipe_dir: Path, name: str, recorded: str | None) -> Path | None:
    """The run dir of a stage. A relative recorded path is relative to where the pipeline ran, which
    is an ancestor of pipe_dir whenever output_dir was relative, so each ancestor is tried."""
    candidates = []
    if recorded:
        path = Path(recorded)
        candidates.append(path)
        if not path.is_absolute():
            candidates += [base / path for base in pipe_dir.resolve().parents]
    candidates.append(pipe_dir / name)
    for c in candidates:
        if c.is_dir() and any((c / m).is_file() for m in RUN_MARKERS):
            return c
    return None
