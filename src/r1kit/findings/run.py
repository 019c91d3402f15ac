"""Run findings seed by seed and write `findings.json` and `report.html`.

Each finding's seed writes `root/<name>/seed-<s>.json` ({size, fingerprint, metrics, seconds})
when it finishes; a re-run reads that back instead of running it again when its size and
fingerprint match (the demo pipeline that several findings share also skips its finished stages).
The fingerprint (`fingerprint`) hashes r1kit's version, the source of this package and the
finding's setup and criterion text: any edit to an experiment, its settings or a criterion makes
its seeds run again, never a stale result read back. It is the whole package rather than the one
module a finding lives in because the experiments share modules (demo_stages.py) and the criteria
live in registry.py; an edit elsewhere costs a rerun, not a wrong verdict, and a rerun's finished
pipeline stages are still skipped by their own config fingerprints. The demo config is covered by
those stage fingerprints; code outside this package (recipes, rewards) only by r1kit's version, so
after changing it between releases, run into a fresh `--output-dir`. findings.json:

    {"seeds": [0, 1, 2], "size": "full",
     "findings": [{"name", "claim", "source", "setup", "criterion", "implemented",
                   "held": [per seed] or null, "verdict", "metrics": {metric: [per seed]}, "seconds"}]}

`held` is null for a finding with no experiment yet; `seconds` is the time its seeds took when
they ran (the first finding on the shared demo pipeline pays for training it).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import r1kit
from r1kit.errors import R1kitError
from r1kit.findings.registry import FINDINGS, NAMES, Finding
from r1kit.report.logger import console

SIZES = ("full", "smoke")


def run_findings(only: Sequence[str] = (), seeds: int = 3, output_dir: str = "runs/findings", size: str = "full") -> dict[str, Any]:
    """Run the findings named in `only` (all when empty) for seeds 0..seeds-1; return findings.json's content."""
    unknown = [n for n in only if n not in NAMES]
    if unknown:
        raise R1kitError(f"--only {' '.join(unknown)}: no such finding; choose from {', '.join(NAMES)}")
    if seeds < 1:
        raise R1kitError(f"--seeds must be >= 1, got {seeds}")
    if size not in SIZES:
        raise R1kitError(f"--size {size!r} must be one of {', '.join(SIZES)}")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    chosen = [f for f in FINDINGS if not only or f.name in only]
    entries = []
    for f in chosen:
        per_seed = [_seed(f, s, root, size) for s in range(seeds)] if f.implemented else []
        entries.append(entry(f, [r["metrics"] for r in per_seed], sum(r["seconds"] for r in per_seed)))
        console.print(f"[bold]{f.name}[/bold]: {entries[-1]['verdict']}")
    summary = {"seeds": list(range(seeds)), "size": size, "findings": entries}
    (root / "findings.json").write_text(json.dumps(summary, indent=2))
    from r1kit.findings.report import write_findings_report

    console.print(f"findings: {root / 'findings.json'}; report: {write_findings_report(root, summary)}")
    return summary


def entry(f: Finding, per_seed: Sequence[dict[str, float]], seconds: float) -> dict[str, Any]:
    """One finding's findings.json entry from its seeds' metrics (none for one not implemented)."""
    held = [bool(f.held(m)) for m in per_seed] if f.implemented else None
    keys = list(dict.fromkeys(k for m in per_seed for k in m))
    return {
        "name": f.name, "claim": f.claim, "source": f.source, "setup": f.setup, "criterion": f.criterion,
        "implemented": f.implemented, "held": held, "verdict": verdict(held), "plot": list(f.plot),
        "metrics": {k: [_number(m.get(k, math.nan)) for m in per_seed] for k in keys}, "seconds": round(seconds, 1),
    }  # fmt: skip


def verdict(held: Sequence[bool] | None) -> str:
    if held is None:
        return "not implemented yet"
    if all(held):
        return "held on every seed"
    return "did not hold on any seed" if not any(held) else f"held on {sum(held)} of {len(held)} seeds"


def fingerprint(f: Finding) -> str:
    """What produced a finding's seed results: r1kit's version, this package's source and the
    finding's setup and criterion (see the module docstring for why these)."""
    h = hashlib.sha256(f"{r1kit.__version__}\n{f.setup}\n{f.criterion}\n".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\n" + source.read_bytes())
    return h.hexdigest()[:16]


def _seed(f: Finding, seed: int, root: Path, size: str) -> dict[str, Any]:
    path = root / f.name / f"seed-{seed}.json"
    made_by = fingerprint(f)
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("size") == size and done.get("fingerprint") == made_by:
            console.print(f"{f.name} seed {seed}: done, skipped")
            return done
        console.print(f"{f.name} seed {seed}: its result was made at another size or by other code; running it again")
    console.rule(f"finding {f.name}, seed {seed}")
    t0 = time.perf_counter()
    metrics = f.run(seed, root, size)
    done = {"size": size, "fingerprint": made_by, "metrics": metrics, "seconds": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(done, indent=2))
    return done


def _number(v: float) -> float | None:
    """JSON has no NaN: a metric that could not be measured is null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
