"""Recipes on named datasets and chat data, end to end on the tiny model: GRPO from a local copy of
openai/gsm8k through the command line, a system message reaching GRPO's rollouts, SFT on whole
conversations, DPO on conversational pairs, and message-list prompts through PPO, rejection
sampling and distillation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hub_layout import write_gsm8k

from r1kit.cli import main
from r1kit.config import load, recipe_config_class
from r1kit.data.io import write_jsonl
from r1kit.recipes import dpo, grpo, sft
from r1kit.rollout import HFEngine

REPO = Path(__file__).resolve().parents[2]
QUIET = ["run.threads=1", "run.progress=false", "run.tensorboard=false", "model.device=cpu"]
SYSTEM = "Be brief."


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def chat_prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory) -> dict[str, Path]:
    """Conversational data: prompts as message lists (with a system message), SFT conversations and
    DPO pairs whose prompt, chosen and rejected are message lists."""
    root = tmp_path_factory.mktemp("chat-data")
    problems = [(a, b) for a in range(1, 5) for b in range(1, 4)]
    prompts = [{"prompt": chat_prompt(f"{a}+{b}=?"), "answer": str(a + b)} for a, b in problems]
    conversations = [{"messages": [*chat_prompt(f"{a}+{b}=?"), {"role": "assistant", "content": f"<answer>{a + b}</answer>"}]} for a, b in problems]
    pairs = [
        {"prompt": chat_prompt(f"{a}+{b}=?"), "chosen": [{"role": "assistant", "content": f"<answer>{a + b}</answer>"}],
         "rejected": [{"role": "assistant", "content": f"<answer>{a + b + 1}</answer>"}]}
        for a, b in problems
    ]  # fmt: skip
    return {
        "prompts": write_jsonl(root / "prompts.jsonl", prompts),
        "conversations": write_jsonl(root / "conversations.jsonl", conversations),
        "pairs": write_jsonl(root / "pairs.jsonl", pairs),
    }


def test_grpo_trains_and_evaluates_on_a_local_copy_of_gsm8k_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    folder = write_gsm8k(tmp_path / "openai" / "gsm8k")
    argv = [
        "grpo", "--config", str(REPO / "configs/tiny-arith/grpo.yaml"), f"model.path={tiny_model_dir}",
        f"data.path={folder}", "data.name=main", "data.transform=gsm8k_r1", "data.test_size=2", "rewards=[math, format]",
        "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.group_size=2", "sampling.max_new_tokens=8",
        "eval.k=1", "eval.max_new_tokens=8", "run.eval_every=0", f"run.output_dir={tmp_path / 'runs'}", "run.name=gsm8k", *QUIET,
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "gsm8k"
    steps = [r for r in metrics(run_dir) if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["reward/math/none_frac"] == 0.0 and r.get("reward/math/gold_unparseable", 0) == 0 for r in steps)  # every gold read
    evals = json.loads((run_dir / "eval.json").read_text())
    assert {"before", "after"} <= set(evals) and "pass@1" in evals["after"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} == {"Sam reads 5 pages a day. How many in 4 days?", "Mia has 9 cards and gets 9 more. How many now?"}


def test_a_system_message_reaches_grpos_rendered_prompts(tiny_model_dir, chat_files, tmp_path, char_tokenizer, monkeypatch):
    rendered: list[str] = []
    real = HFEngine.generate

    def generate(self, prompt_ids, params):
        rendered.extend(char_tokenizer.decode(ids) for ids in prompt_ids)
        return real(self, prompt_ids, params)

    monkeypatch.setattr(HFEngine, "generate", generate)
    config = load(None, [
        f"model.path={tiny_model_dir}", f"data.path={chat_files['prompts']}", f"data.test_path={chat_files['prompts']}", "data.template=chat", "rewards=[arithmetic]",
        "grpo.steps=1", "grpo.prompts_per_step=2", "grpo.group_size=2", "sampling.max_new_tokens=4", "eval_before=false", "eval.k=0",
        "eval.max_new_tokens=4", "data.test_size=2", f"run.output_dir={tmp_path}", *QUIET,
    ], recipe_config_class("grpo"))  # fmt: skip
    grpo.train(config)
    # the step's 2 prompts and the final evaluation's 2, every one with its system turn
    assert len(rendered) == 4 and all(t.startswith(f"system: {SYSTEM}\nuser: ") and t.endswith("=?\nassistant: ") for t in rendered), rendered


def test_sft_on_conversations_trains_on_assistant_turns(tiny_model_dir, chat_files, tmp_path):
    config = load(None, [
        f"model.path={tiny_model_dir}", f"data.path={chat_files['conversations']}", "data.template=chat", "data.task=arithmetic", "steps=3", "batch_size=4",
        "max_length=64", "optim.lr=3e-3", "optim.warmup_steps=0", "eval_before=false", "eval.k=0", "eval.max_new_tokens=4", "data.test_size=2",
        f"run.output_dir={tmp_path}", *QUIET,
    ], sft.SFTConfig)  # fmt: skip
    rows = metrics(sft.train(config))
    first = next(r for r in rows if "data/examples" in r)
    assert first["data/examples"] == 12 and first["data/truncated"] == 0
    losses = [r["loss/sft"] for r in rows if "loss/sft" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_dpo_trains_on_conversational_pairs(tiny_model_dir, chat_files, tmp_path):
    config = load(None, [
        f"model.path={tiny_model_dir}", f"data.path={chat_files['pairs']}", f"data.test_path={chat_files['pairs']}", "data.template=chat",
        "data.test_size=0", "steps=4", "batch_size=12", "task_eval=false", "optim.lr=1e-3", "optim.warmup_steps=0", "optim.schedule=constant",
        f"run.output_dir={tmp_path}", *QUIET,
    ], dpo.DPOConfig)  # fmt: skip
    run_dir = dpo.train(config)
    losses = [r["loss/dpo"] for r in metrics(run_dir) if "loss/dpo" in r]
    results = json.loads((run_dir / "eval.json").read_text())
    # The policy starts as its reference: every margin is 0 and the sigmoid loss is log 2. Every
    # step takes all 12 pairs at a small lr (descent on one fixed loss), and the held-out set is
    # those pairs, so the loss falls and the margin rises.
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and results["before"]["pref/margin"] == 0.0
    assert len(losses) == 4 and losses[-1] < losses[0] and results["after"]["pref/margin"] > 0.0


@pytest.mark.parametrize("recipe, extra", [
    ("ppo", ["rewards=[arithmetic]", "ppo.steps=1", "ppo.prompts_per_step=2", "ppo.mini_batches=1", "sampling.max_new_tokens=4"]),
    ("sample", ["samples_per_prompt=2", "max_new_tokens=4", "data.train_size=2"]),
    ("distill", ["mode=on_policy", "lmbda=1.0", "steps=1", "batch_size=2", "max_new_tokens=4", "max_length=48"]),
])  # fmt: skip
def test_message_list_prompts_run_through_ppo_sampling_and_distillation(recipe, extra, tiny_model_dir, chat_files, tmp_path):
    from r1kit.errors import R1kitError

    teacher = [f"teacher.path={tiny_model_dir}", "teacher.device=cpu"] if recipe == "distill" else []
    evals = [] if recipe == "sample" else ["eval_before=false", "eval.k=0", "eval.max_new_tokens=4", "data.test_size=2"]
    overrides = [f"model.path={tiny_model_dir}", f"data.path={chat_files['prompts']}", f"data.test_path={chat_files['prompts']}", "data.template=chat",
                 *teacher, *evals, *extra, f"run.output_dir={tmp_path}", *QUIET]  # fmt: skip
    module = __import__(f"r1kit.recipes.{ {'sample': 'rejection_sampling', 'ppo': 'ppo', 'distill': 'distill'}[recipe] }", fromlist=["train"])
    config = load(None, overrides, recipe_config_class(recipe))
    try:
        run_dir = module.train(config)
    except R1kitError as e:  # an untrained model may keep no sample: the prompts were still rendered and scored
        assert recipe == "sample" and "kept none" in str(e), e
        return
    assert (run_dir / "config.yaml").is_file()
