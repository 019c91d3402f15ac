"""rl_sharpens: does RL teach the model answers its base could not find, or make the ones it
could find more likely? Compare pass@k of the demo's base and its R1-Zero model from k = 1 to a
large k, with n = 4k samples per prompt so that the unbiased pass@k estimate is tight.

A sharpening RL raises pass@1 and leaves pass@K where the base had it; an RL that taught new
answers would raise both.
"""

from __future__ import annotations

from pathlib import Path

from r1kit.eval.evaluate import Evaluator
from r1kit.findings import demo_stages
from r1kit.models.load import load_model, load_tokenizer

K = 16
"""The large k."""
SIZES = {"full": {"k": K, "n": 4 * K}, "smoke": {"k": 2, "n": 4}}
SETUP = (f"The demo pipeline's base and R1-Zero models of each seed (see r1_zero_learns), evaluated on the 80 "
         f"held-out prompts with n = {4 * K} samples per prompt at temperature 1: pass@k for k = 1, 2, 4, ..., {K} "
         f"and maj@{4 * K} (the majority answer of the {4 * K}).")


def run(seed: int, workdir: Path, size: str) -> dict[str, float]:
    pipe_dir = Path(demo_stages.config(seed, workdir, size).output_dir)
    demo_stages.run(seed, workdir, size, needs=("r1_zero",))  # the shared pipeline's first stages: skipped when done
    k = SIZES[size]["k"]
    out: dict[str, float] = {"k_large": k}
    for label, stage in (("base", "base"), ("rl", "r1_zero")):
        metrics = _evaluate(demo_stages.model_dir(pipe_dir, stage), **SIZES[size])
        out.update({f"{label}/{key}": value for key, value in metrics.items() if key.startswith(("pass@", "maj@"))})
        out[f"{label}/pass@large"] = metrics[f"pass@{k}"]
    return out


def _evaluate(model_dir: Path, k: int, n: int) -> dict[str, float]:
    data, args = demo_stages.recorded_settings(model_dir, k=k, n=n)
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir))
    return Evaluator.for_data(tokenizer, data, args)(model)
