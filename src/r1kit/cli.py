"""`r1kit <verb> --config FILE [key=value ...]`, `r1kit demo`, `r1kit findings`, `r1kit eval`, `r1kit report RUN_DIR`,
`r1kit merge-lora ADAPTER_DIR OUT_DIR`.

A problem the user can fix (an R1kitError) prints one sentence and exits with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from r1kit.accel.openmp import default_waits

# OpenMP threads that spin while waiting make torch on a busy CPU far slower; threads that sleep at
# once pay a wake-up per parallel region. PASSIVE waits after a short spin (r1kit/accel/openmp.py). Set
# before torch is imported; a user's own setting wins.
default_waits()

from r1kit.errors import R1kitError

TRAIN_VERBS = {
    "pretrain": "train a tiny base model on a task's synthetic corpus",
    "sft": "supervised fine-tuning (cold start) on chain-of-thought data",
    "grpo": "GRPO and its variants (Dr. GRPO, DAPO, GSPO, RLOO) with verifiable rewards",
    "ppo": "PPO with a value model, GAE and a per-token KL penalty",
    "rm": "train a reward model on preference pairs",
    "prm": "train a process reward model that scores every step of a solution",
    "dpo": "DPO and its variants on preference pairs",
    "sample": "rejection sampling: keep verified completions as SFT data",
    "search": "MCTS over reasoning steps: verified solutions as SFT data, a value model from rollout outcomes",
    "distill": "distil a teacher into a smaller student",
    "pipeline": "run a multi-stage recipe declared in YAML",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1kit", description="Train language models to reason the way DeepSeek-R1 was trained.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, help_text in TRAIN_VERBS.items():
        p = sub.add_parser(verb, help=help_text)
        p.add_argument("--config", "-c", help="YAML config file")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint (same as run.resume=auto)")
        p.add_argument("overrides", nargs="*", help="key=value or section.key=value overrides")
    demo = sub.add_parser("demo", help="the R1 recipe in miniature on CPU")
    demo.add_argument("overrides", nargs="*", help="key=value overrides of the demo config")
    demo.add_argument("--config", "-c", default=None, help="demo config (defaults to the built-in tiny arithmetic one)")
    demo.add_argument("--seeds", type=int, default=1, help="run every stage after the pretrained bases with seeds 0..N-1 and report mean ± sd")
    fnd = sub.add_parser("findings", help="the claims r1kit was started from, each as a small experiment over seeds: findings.json and report.html")
    fnd.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these findings (default: all)")
    fnd.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1 of each finding (default 3)")
    fnd.add_argument("--output-dir", default="runs/findings", help="where findings.json, report.html and each finding's runs go")
    fnd.add_argument("--size", choices=("full", "smoke"), default="full", help="smoke: every experiment at toy size, to check it runs")
    ev = sub.add_parser("eval", help="evaluate a model: greedy acc, pass@1 over n samples, pass@k for k = 1, 2, 4 ... <= n, maj@n, length",
                        description="A model inside a run directory (RUN/model) is evaluated on the task, task parameters and "
                                    "eval settings the run recorded; flags and overrides win.")  # fmt: skip
    ev.add_argument("--model", "-m", required=True, help="model directory or hub id")
    ev.add_argument("--task", "-t", default=None, help="built-in task (default: the run's, else arithmetic; or use --data)")
    ev.add_argument("--data", default="", help="held-out JSONL/parquet with prompt and answer columns")
    ev.add_argument("--k", type=int, default=None, help="the k of pass@k (default: the run's eval.k, else 4; 0 = greedy only)")
    ev.add_argument("--n", type=int, default=None, help="samples per prompt, at least k (default: k)")
    ev.add_argument("--rows", type=int, default=None, help="test rows (default: the run's test_size, else 100)")
    ev.add_argument("--out", default="", help="write the metrics as JSON here")
    ev.add_argument("overrides", nargs="*", help="eval.* / data.* overrides, e.g. eval.temperature=0.6")
    rep = sub.add_parser("report", help="write an HTML report with curves for a run or pipeline directory")
    rep.add_argument("run_dir")
    merge = sub.add_parser("merge-lora", help="fold a LoRA adapter into its base model and write a full model directory")
    merge.add_argument("adapter_dir", help="the `model` directory of a LoRA run (or one of its checkpoints)")
    merge.add_argument("out_dir", help="where to write the merged model and tokenizer")
    merge.add_argument("--base", default="", help="base model (defaults to the one the adapter was trained on)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except R1kitError as e:
        print(f"r1kit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("r1kit: interrupted", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace) -> int:
    import importlib

    from r1kit import config as cfg

    if args.verb in TRAIN_VERBS:
        cls = cfg.recipe_config_class(args.verb)
        overrides = list(args.overrides) + (["run.resume=auto"] if args.resume else [])
        config = cfg.load(args.config, overrides, cls)
        module = importlib.import_module(cfg.RECIPES[args.verb].split(":")[0])
        out = module.train(config)
        print(out)
        return 0
    if args.verb == "demo":
        from r1kit.demo import run_demo

        run_demo(args.config, list(args.overrides), seeds=args.seeds)
        return 0
    if args.verb == "findings":
        from r1kit.findings.run import run_findings

        run_findings(args.only, args.seeds, args.output_dir, args.size)
        return 0
    if args.verb == "eval":
        from r1kit.eval.cli import run_eval

        run_eval(args)
        return 0
    if args.verb == "report":
        from r1kit.report.html import write_report

        print(write_report(args.run_dir))
        return 0
    if args.verb == "merge-lora":
        from r1kit.models.load import merge_lora

        print(merge_lora(args.adapter_dir, args.out_dir, base=args.base))
        return 0
    raise AssertionError(args.verb)
