"""Rejection sampling (DeepSeek-R1 stage 3): sample k completions per prompt from a checkpoint, keep
the verified-correct, well-formed ones, and write them as SFT data.

    build (model, prompts) -> per batch: k samples each (rollout engine) -> verifier, format and
          language scores -> filters -> dedup -> per-prompt cap
          -> (optional) mix in non-reasoning SFT rows -> samples.jsonl, metrics, eval.json

R1 kept a completion when its answer was right (rule-based check, or a generative judge for open
questions) and its chain of thought was readable: no language mixing, no over-long paragraphs or
code blocks; it then added about 200k non-reasoning rows (writing, QA, translation) to 600k
reasoning ones. Simplifications here: correctness is the task's verifier (`scorer_for`, the same
one evaluation uses), no generative judge; readability is the strict `format` reward, the
`language` reward (share of chain-of-thought words in the target script, applied only when the
chain of thought has words at all: `12+5=17` has none) and a token cap. A completion is counted
under the first filter it fails, in the order of `FILTERS`.

`samples.jsonl` (in the run directory) has one row per kept completion: `prompt` (raw, not
templated: the SFT stage applies its own template), `completion` (train on it with
`response_column=completion`), `answer`, and provenance: `model`, `step` (of the checkpoint, when
known), `rewards` (score per function), `prompt_index`, `sample_index`, `length` (tokens),
`finish_reason`, `source` (`sample` or `mix`). Rows are shuffled, so a downstream `train_size`
cap takes a fair share of both sources.

`eval.json` holds the sampling statistics under `after`: pass@1 (share of the k samples the
verifier accepts), pass@k and maj@k over the sampled prompts, and the mean length. These are
training prompts, not the held-out split; `evaluate: true` puts a held-out evaluation under
`after` instead and the sampling statistics under `sampling`.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence

from r1kit.config import DataArgs, EvalArgs, ModelArgs, NonNegativeInt, PositiveFloat, PositiveInt, Probability, Range, RunArgs
from r1kit.data.io import load_rows, write_jsonl
from r1kit.data.source import load_split
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.eval.evaluate import Evaluator
from r1kit.eval.metrics import maj_at_k, pass_at_k
from r1kit.eval.scoring import scorer_for
from r1kit.models.load import load_model, load_tokenizer
from r1kit.report.logger import console, format_line, read_metrics
from r1kit.rewards.compose import RewardComposer
from r1kit.rewards.format import think_text
from r1kit.rewards.language import word_scripts
from r1kit.rollout import RolloutBatch, RolloutEngine, SamplingParams
from r1kit.train.progress import progress_bar
from r1kit.train.run import Run

FILTERS = ("incorrect", "format", "language", "overlong", "duplicate", "cap")
"""Why a completion is dropped, in the order the filters apply."""


@dataclass
class SampleConfig:
    """Rejection sampling into an SFT data set."""

    model: ModelArgs = field(default_factory=ModelArgs)
    """The checkpoint to sample from (R1: the RL checkpoint of the reasoning stage)."""
    data: DataArgs = field(default_factory=DataArgs)
    """Prompts and gold answers (data.train_size of them are sampled); the test split for `evaluate`."""
    run: RunArgs = field(default_factory=RunArgs)
    """Run directory, seed, logging."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Held-out evaluation of the model, used only when `evaluate` is true."""
    samples_per_prompt: PositiveInt = 8
    """k: completions sampled per prompt."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature (R1 samples at 0.6 with top-p 0.95 for its reasoning data)."""
    top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """Nucleus sampling."""
    max_new_tokens: PositiveInt = 64
    """Longest completion; one cut off here (finish reason `length`) is dropped as over-long."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, e.g. ["</answer>"] (kept in the completion)."""
    batch_size: PositiveInt = 32
    """Prompts per generation call (each yields samples_per_prompt rows)."""
    max_completion_tokens: NonNegativeInt = 0
    """Drop completions longer than this many tokens (0 = only those cut off at max_new_tokens)."""
    language: str = "en"
    """Target language of the chain of thought, a code (`en`, `zh` ...) or a script (`latin` ...)."""
    language_threshold: Probability = 0.95
    """Drop a completion whose chain of thought has less than this share of target-language words."""
    dedup: bool = True
    """Keep one copy of completions with exactly the same text for the same prompt."""
    max_per_prompt: NonNegativeInt = 4
    """Keep at most this many completions per prompt, the first ones sampled (0 = no cap)."""
    mix_path: str = ""
    """A JSONL (or any data file) of non-reasoning SFT rows with `prompt` and `completion` to add."""
    mix_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.25
    """Share of the written rows that come from mix_path (R1: 200k of 800k); used when mix_path is set."""
    evaluate: bool = False
    """Also evaluate the model on the held-out split and report that as eval.json's `after`."""


def train(config: SampleConfig) -> Path:
    """Sample, filter and write `samples.jsonl`; returns the run directory."""
    with Run(config, "sample") as run:
        rows = load_split(config.data, "train", required=("prompt",))
        if not any(c in rows[0] for c in ("answer", "solution")):
            raise R1kitError(f"the prompts have no gold `answer` column (columns: {sorted(rows[0])}), so nothing can be verified; map yours with data.columns, e.g. {{answer: solution}}")
        mix_rows = load_rows(config.mix_path, required={"prompt": (str, list), "completion": str}) if config.mix_path else []
        score, extract = scorer_for(config.data)
        composer = RewardComposer([_named(score, verifier_name(config.data)), "format", {"name": "language", "kwargs": {"target": config.language}}])
        tokenizer = load_tokenizer(config.model.path)
        model = run.accelerate(load_model(config.model.path, config.model.dtype, str(run.device), config.model.attn_implementation))
        evaluator = Evaluator.for_data(tokenizer, config.data, config.eval, config.run.rollout_processes) if config.evaluate else None
        run_dir = run.create()
        tally = sample_all(config, run, run.rollout_engine(model, tokenizer), tokenizer, rows, composer, extract)
        kept = tally.kept
        mixed = mix(kept, mix_rows, config.mix_fraction, config.run.seed)
        out = kept + mixed
        random.Random(config.run.seed).shuffle(out)
        write_jsonl(run_dir / "samples.jsonl", out)

        sampling = tally.sampling_metrics()
        run.results.update({"after": sampling, "split": "train (sampled prompts)"})
        final = {**tally.totals(), **{f"sample/{key}": v for key, v in sampling.items()}, "sample/mixed": len(mixed), "sample/rows": len(out)}
        if evaluator is not None:
            run.results.clear()
            run.results.update({"after": evaluator(model), "sampling": sampling})
            final.update({f"eval/{key}": v for key, v in run.results["after"].items()})
        n = tally.completions
        run.results.update({"kept": len(kept), "kept_frac": len(kept) / n, "mixed": len(mixed), "rows": len(out)})
        run.log(final, math.ceil(len(rows) / config.batch_size))
        run.write_results()
    if not kept:
        raise R1kitError(
            f"rejection sampling kept none of the {n} completions of {config.model.path!r} (dropped: {dict(tally.drops)}); "
            "sample more (samples_per_prompt, data.train_size), raise max_new_tokens or start from a stronger checkpoint"
        )
    console.print(f"sample done: kept {len(kept)} of {n} ({len(kept) / n:.1%}), {tally.prompts_with_kept}/{tally.prompts} prompts with one or more, {len(mixed)} mixed in; run {run_dir}")
    return run_dir


def sample_all(config: SampleConfig, run: Run, engine: RolloutEngine, tokenizer, rows: Sequence[dict[str, Any]], composer: RewardComposer, extract) -> Tally:
    """Sample k completions of every prompt, batch by batch, score and filter them; log a row per batch."""
    k, B = config.samples_per_prompt, config.batch_size
    n_batches = math.ceil(len(rows) / B)
    tally = Tally(k)
    provenance = {"model": config.model.path, "step": source_step(config.model.path)}
    console.print(f"sample: {len(rows)} prompts x {k} from {config.model.path}; filters {', '.join(FILTERS)}")
    with progress_bar("sample", n_batches, config.run.progress) as bar:
        for b in range(n_batches):
            t0 = time.perf_counter()
            chunk = rows[b * B : (b + 1) * B]
            ids = [tokenizer(render_prompt(r["prompt"], config.data.template, tokenizer, config.data.system_prompt), add_special_tokens=False)["input_ids"] for r in chunk]
            params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, stop=list(config.stop), n=k, seed=config.run.seed * 1_000_003 + b)
            batch = engine.generate(ids, params)
            columns = {c: [r.get(c) for r in chunk for _ in range(k)] for c in chunk[0] if c != "prompt"}
            result = composer(batch.texts, columns)
            scores = score_table(result.per_function, batch.texts, composer.names[0])
            before = len(tally.kept)
            for i, row in enumerate(chunk):
                tally.add_group(config, row, b * B + i, batch, i, scores, extract, provenance)
            dt = time.perf_counter() - t0
            lengths = batch.completion_lengths.float()
            # The composer's reward/mean would add up unrelated scores; its per-function means stay.
            metrics = {**{key: v for key, v in result.metrics.items() if key != "reward/mean"}, "sample/batch_kept_frac": (len(tally.kept) - before) / len(batch), "completion/length_mean": float(lengths.mean()), "perf/step_s": dt, "perf/tokens_per_s": float(lengths.sum()) / dt}
            run.log(metrics, b + 1)
            bar.advance(1, info=f"kept {len(tally.kept)}")
            if not config.run.progress:
                console.print(format_line(b + 1, metrics, ("sample/batch_kept_frac", f"reward/{composer.names[0]}/mean", "completion/length_mean")))
    return tally


class Tally:
    """What sampling has kept and dropped so far, and the verifier's statistics per prompt."""

    def __init__(self, k: int):
        self.k = k
        self.kept: list[dict[str, Any]] = []
        self.drops: Counter[str] = Counter()
        self.prompts = self.prompts_with_kept = self.correct = self.length = 0
        self.pass_k = self.maj_k = 0.0

    @property
    def completions(self) -> int:
        return self.prompts * self.k

    def add_group(self, config: SampleConfig, row: dict[str, Any], prompt_index: int, batch: RolloutBatch, i: int, scores: Sequence[dict[str, Any]], extract, provenance: dict[str, Any]) -> None:
        """Filter the k completions of the batch's prompt i and record them."""
        k = self.k
        group = range(i * k, (i + 1) * k)
        texts = [batch.texts[j] for j in group]
        lengths = batch.completion_lengths[i * k : (i + 1) * k].tolist()
        keep, why = select(texts, [scores[j] for j in group], lengths, [batch.finish_reason[j] for j in group], config)
        correct = [scores[j]["correct"] for j in group]
        self.prompts += 1
        self.prompts_with_kept += bool(keep)
        self.drops.update(why)
        self.correct += sum(correct)
        self.length += sum(lengths)
        self.pass_k += pass_at_k(k, sum(correct), k)
        self.maj_k += maj_at_k([extract(t) for t in texts], correct)
        self.kept.extend(sample_row(row, prompt_index, j, batch, i * k + j, scores[i * k + j], provenance) for j in keep)

    def sampling_metrics(self) -> dict[str, float]:
        """pass@1 (mean over the k samples), pass@k, maj@k and mean length over the sampled prompts."""
        k, n = self.k, max(1, self.completions)
        return {"pass@1": self.correct / n, f"pass@{k}": self.pass_k / max(1, self.prompts), f"maj@{k}": self.maj_k / max(1, self.prompts), "length_mean": self.length / n}

    def totals(self) -> dict[str, float]:
        n = max(1, self.completions)
        out = {"sample/completions": self.completions, "sample/kept": len(self.kept), "sample/kept_frac": len(self.kept) / n}
        out.update({f"sample/dropped/{name}": self.drops.get(name, 0) for name in FILTERS})
        out.update({"sample/prompts": self.prompts, "sample/prompts_with_kept": self.prompts_with_kept, "sample/prompts_with_kept_frac": self.prompts_with_kept / max(1, self.prompts)})
        return out


def verifier_name(data: DataArgs) -> str:
    """The verifier's name in `rewards` and metrics: the built-in task's, else `math`."""
    return data.builtin_task if data.builtin_task and not data.test_path else "math"


def _named(fn: Callable[..., list[float | None]], name: str) -> Callable[..., list[float | None]]:
    """`fn` under `name`, which the reward composer uses for its metrics."""

    def verifier(completions, **columns):
        return fn(completions, **columns)

    verifier.__name__ = name
    return verifier


def score_table(per_function: dict[str, list[float | None]], texts: Sequence[str], verifier: str) -> list[dict[str, Any]]:
    """Per completion: every function's score and the verdicts `correct` (verifier full marks).

    The language score is None for a chain of thought without words (`3+4=7`): the language
    filter does not apply to it (the reward itself would give 0.0, as it has nothing to count).
    """
    out = []
    for i, text in enumerate(texts):
        scores = {name: values[i] for name, values in per_function.items()}
        if not word_scripts(think_text(text)):
            scores["language"] = None
        v = scores[verifier]
        out.append({"rewards": scores, "correct": v is not None and v >= 1.0, "format": scores["format"] == 1.0, "language": scores["language"]})
    return out


def select(
    texts: Sequence[str],
    scores: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    finish: Sequence[str],
    config: SampleConfig,
) -> tuple[list[int], Counter[str]]:
    """The completions of one prompt to keep (indices, in sampling order) and why the rest went."""
    keep: list[int] = []
    why: Counter[str] = Counter()
    seen: set[str] = set()
    for j, (text, s, length, reason) in enumerate(zip(texts, scores, lengths, finish, strict=True)):
        if not s["correct"]:
            why["incorrect"] += 1
        elif not s["format"]:
            why["format"] += 1
        elif s["language"] is not None and s["language"] < config.language_threshold:
            why["language"] += 1
        elif reason == "length" or (config.max_completion_tokens and length > config.max_completion_tokens):
            why["overlong"] += 1
        elif config.dedup and text in seen:
            why["duplicate"] += 1
        elif config.max_per_prompt and len(keep) >= config.max_per_prompt:
            why["cap"] += 1
        else:
            keep.append(j)
            seen.add(text)
    return keep, why


def sample_row(row: dict[str, Any], prompt_index: int, sample_index: int, batch: RolloutBatch, i: int, scores: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """One kept completion as an SFT row with its provenance."""
    return {
        "prompt": row["prompt"],
        "completion": batch.texts[i],
        "answer": row.get("answer"),
        **provenance,
        "rewards": scores["rewards"],
        "correct": True,
        "prompt_index": prompt_index,
        "sample_index": sample_index,
        "length": int(batch.completion_lengths[i]),
        "finish_reason": batch.finish_reason[i],
        "source": "sample",
    }


def mix(kept: Sequence[dict[str, Any]], mix_rows: Sequence[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """Rows drawn from `mix_rows` so they make up `fraction` of kept + mixed (all of them if too few)."""
    if not mix_rows or not kept or fraction <= 0:
        return []
    want = round(len(kept) * fraction / (1.0 - fraction))
    if want > len(mix_rows):
        console.print(f"sample: mix_path has {len(mix_rows)} rows, fewer than the {want} that mix_fraction={fraction} asks for; adding all of them")
    picked = random.Random(seed).sample(list(mix_rows), min(want, len(mix_rows)))
    empty = {"model": None, "step": None, "rewards": None, "correct": None, "prompt_index": None, "sample_index": None, "length": None, "finish_reason": None}
    return [{"prompt": r["prompt"], "completion": r["completion"], "answer": r.get("answer"), **empty, "source": "mix"} for r in picked]


def source_step(model_path: str) -> int | None:
    """The training step of a checkpoint, when its path tells: `.../step_120` or `checkpoint-120`,
    or a run's final `model/` directory (the last step in the run's metrics.jsonl)."""
    p = Path(model_path)
    m = re.fullmatch(r"(?:step|checkpoint)[_-](\d+)", p.name)
    if m:
        return int(m.group(1))
    if p.name == "model" and (p.parent / "metrics.jsonl").is_file():
        steps = [r["step"] for r in read_metrics(p.parent) if isinstance(r.get("step"), int)]
        return max(steps) if steps else None
    return None
