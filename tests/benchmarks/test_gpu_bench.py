"""The GPU benchmark script runs end to end (on CPU, at a tiny shape) and reports sane numbers, so
that a run on an accelerator measures rather than crashes."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rounding import assert_same_gradients, record_steps

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


@pytest.mark.numerics
def test_micro_batches_give_the_whole_batchs_update():
    """The step is given the whole batch's gradient, up to summation order (`rounding.py`): compared
    before the step, since Adam's step of about lr * sign(grad) would turn a near-zero gradient's
    rounding into a full lr (SGD steps here, in proportion to the gradient)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_bench

    from r1kit.rollout import HFEngine, SamplingParams

    device = torch.device("cpu")
    models = [gpu_bench.build_model("tiny", device) for _ in range(2)]
    refs = [copy.deepcopy(m).eval().requires_grad_(False) for m in models]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    batch = HFEngine(models[0], pad_token_id=0, eos_token_id=[]).generate([[5, 6, 7], [8, 9, 10]], SamplingParams(max_new_tokens=6, n=4, seed=0))
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(0))
    losses, steps = [], []
    for m, r, o, micro in zip(models, refs, opts, (0, 3)):  # 8 rows whole, or 3 + 3 + 2
        with record_steps() as recorded:
            losses.append(gpu_bench.train_step(m, r, o, batch, advantages, device, "fp32", micro))
        steps.append(recorded)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)
    assert_same_gradients(steps[1], steps[0])
    assert not torch.equal(next(models[0].parameters()), next(refs[0].parameters()))  # the update moved the weights
