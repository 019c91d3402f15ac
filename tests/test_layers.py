"""The layers of docs/ARCHITECTURE.md hold: import-linter's contracts in pyproject.toml are kept
(the layers, `r1kit.algorithms` free of model, rollout, accel and training code, no import cycles
between sibling packages or modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"


def test_the_import_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter is not installed; `pip install -e .[test]` brings it")
    # This checkout's source first, whatever copy of r1kit the environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    result = subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout
