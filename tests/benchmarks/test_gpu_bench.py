"""The GPU benchmark script runs end to end (on CPU, at a tiny shape) and reports sane numbers, so
that a run on an accelerator measures rather than crashes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke_run_on_cpu_reports_consistent_numbers(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--shape", "tiny", "--device", "cpu", "--dtype", "fp32",
           "--prompts", "2", "--group", "4", "--prompt-len", "6", "--completion", "10", "--warmup", "1", "--steps", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    r = json.loads(out.read_text())
    assert r["rows"] == 8 and r["completion"] == 10  # no eos: every row runs to the full length
    assert math.isclose(r["rollout_tokens_per_s"], 8 * 10 / r["rollout_s"])
    assert math.isclose(r["train_mfu"], r["train_flops"] / r["train_step_s"] / r["matmul_peak_flops_per_s"])
    assert 0 < r["train_mfu"] < 1 and 0 < r["rollout_mfu"] < 1
    # the model.generate baseline generated every token (the script asserts it) and is reported consistently
    assert math.isclose(r["generate_tokens_per_s"], 8 * 10 / r["generate_s"])
    assert math.isclose(r["rollout_speedup_vs_generate"], r["generate_s"] / r["rollout_s"])
