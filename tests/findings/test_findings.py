"""`r1kit findings`: every criterion on hand-made metrics (held exactly at its margin, not just
below), findings.json's shape, and every implemented experiment at smoke size."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from r1kit.errors import R1kitError
from r1kit.findings import demo_stages, generalize, language, registry, search_rewards, training, variance
from r1kit.findings import run as run_module
from r1kit.findings.registry import FINDINGS, NAMES, by_name
from r1kit.findings.run import entry, run_findings, verdict

ISSUE_NAMES = (
    "r1_zero_learns", "length_grows", "cold_start_helps", "language_mixing", "grpo_matches_ppo", "kl_limits_hacking",
    "baselines_cut_variance", "off_policy_reuse", "outcome_vs_process", "mcts_vs_rl", "distill_beats_small_rl",
    "sft_memorizes_rl_generalizes", "rl_sharpens",
)  # fmt: skip
IMPLEMENTED = ("r1_zero_learns", "length_grows", "cold_start_helps", "language_mixing", "grpo_matches_ppo", "kl_limits_hacking",
               "baselines_cut_variance", "off_policy_reuse", "outcome_vs_process", "mcts_vs_rl", "distill_beats_small_rl", "sft_memorizes_rl_generalizes", "rl_sharpens")  # fmt: skip


def test_the_registry_lists_the_thirteen_findings_and_which_have_experiments():
    assert sorted(NAMES) == sorted(ISSUE_NAMES)
    assert tuple(f.name for f in FINDINGS if f.implemented) == IMPLEMENTED
    for f in FINDINGS:
        assert f.claim and f.source, f.name
        if f.implemented:
            assert f.setup and f.criterion and f.plot, f.name


# (finding, metrics exactly at its margin, metrics just below). Values are binary fractions plus the
# margin, so each subtraction is exact to far within the 1e-9 nudges either side.
EDGES = [
    ("r1_zero_learns", {"base/pass@1": 0.5, "r1_zero/pass@1": 0.58 + 1e-9}, {"base/pass@1": 0.5, "r1_zero/pass@1": 0.58 - 1e-9}),
    ("length_grows", {"base/mean_length": 10.0, "r1_zero/mean_length": 11.0}, {"base/mean_length": 10.0, "r1_zero/mean_length": 11.0 - 1e-9}),
    ("cold_start_helps", {"r1_zero/pass@1": 0.5, "grpo/pass@1": 0.55 + 1e-9}, {"r1_zero/pass@1": 0.5, "grpo/pass@1": 0.55 - 1e-9}),
    ("distill_beats_small_rl", {"student_rl/pass@1": 0.5, "distilled/pass@1": 0.55 + 1e-9},
     {"student_rl/pass@1": 0.5, "distilled/pass@1": 0.55 - 1e-9}),
    ("kl_limits_hacking", {"ppo_kl0.02/pass@1": 0.5, "ppo_kl0.3/pass@1": 0.55 + 1e-9},
     {"ppo_kl0.02/pass@1": 0.5, "ppo_kl0.3/pass@1": 0.55 - 1e-9}),
    ("off_policy_reuse", {"mu1/pass@1": 0.5, "mu4/pass@1": 0.55 + 1e-9}, {"mu1/pass@1": 0.5, "mu4/pass@1": 0.55 - 1e-9}),
    ("outcome_vs_process", {"process/pass@1": 0.5, "outcome/pass@1": 0.55 + 1e-9}, {"process/pass@1": 0.5, "outcome/pass@1": 0.55 - 1e-9}),
    ("mcts_vs_rl", {"mcts/acc": 0.5, "rl/greedy_acc": 0.55 + 1e-9}, {"mcts/acc": 0.5, "rl/greedy_acc": 0.55 - 1e-9}),
    # GRPO learns by 0.08 exactly and ends 0.05 below PPO exactly: held; a hair lower is not.
    ("grpo_matches_ppo", {"base/pass@1": 0.5, "grpo/pass@1": 0.58 + 1e-9, "ppo/pass@1": 0.63},
     {"base/pass@1": 0.5, "grpo/pass@1": 0.58 + 1e-9, "ppo/pass@1": 0.63 + 2e-9}),
    # 0.75 x 4 = 3 exactly: both baselines at 3 hold; one of them a hair above fails.
    ("baselines_cut_variance", {"rel_var/none": 4.0, "rel_var/mean": 3.0, "rel_var/group": 3.0},
     {"rel_var/none": 4.0, "rel_var/mean": 3.0, "rel_var/group": 3.0 + 1e-9}),
    # RL's ood pass@1 0.05 below the base's and 0.05 above SFT's, both exactly: held; a hair lower is not.
    ("sft_memorizes_rl_generalizes", {"base/ood/pass@1": 0.5, "sft/ood/pass@1": 0.4, "rl/ood/pass@1": 0.45 + 1e-9},
     {"base/ood/pass@1": 0.5, "sft/ood/pass@1": 0.4, "rl/ood/pass@1": 0.45 - 1e-9}),
    # R1-Zero mixes 1/16 of samples (>= 0.05), the consistency reward half of that exactly, at a cost of 0.10 pass@1 (a
    # hair under): held; consistent mixing a hair above half is not.
    ("language_mixing", {"r1_zero/mixed": 0.0625, "consistent/mixed": 0.03125, "r1_zero/pass@1": 0.5, "consistent/pass@1": 0.4 + 1e-9},
     {"r1_zero/mixed": 0.0625, "consistent/mixed": 0.03125 + 1e-9, "r1_zero/pass@1": 0.5, "consistent/pass@1": 0.4 + 1e-9}),
    # pass@1 gain 0.25 (>= 0.05), pass@large gain 0.125 = half of it: held; a hair more is not.
    ("rl_sharpens", {"base/pass@1": 0.5, "rl/pass@1": 0.75, "base/pass@large": 0.75, "rl/pass@large": 0.875},
     {"base/pass@1": 0.5, "rl/pass@1": 0.75, "base/pass@large": 0.75, "rl/pass@large": 0.875 + 1e-9}),
]  # fmt: skip


@pytest.mark.parametrize("name,at,below", EDGES, ids=[e[0] for e in EDGES])
def test_each_criterion_holds_at_its_margin_and_not_below(name, at, below):
    f = by_name(name)
    assert f.held(at) is True
    assert f.held(below) is False
    assert f.held({k: math.nan for k in at}) is False  # an unmeasured metric never makes a finding hold


def test_a_difference_exactly_at_its_margin_holds_despite_float_rounding():
    # 1233/1280 - 1169/1280 = 64/1280 = 0.05 exactly (pass@1 over 80 x 16 samples); in floats the
    # difference is 0.04999999999999993. One sample fewer (1/1280 below the margin) does not hold.
    at = {"student_rl/pass@1": 1169 / 1280, "distilled/pass@1": 1233 / 1280}
    assert at["distilled/pass@1"] - at["student_rl/pass@1"] < 0.05 and by_name("distill_beats_small_rl").held(at) is True
    assert by_name("distill_beats_small_rl").held({**at, "distilled/pass@1": 1232 / 1280}) is False
    assert registry.ROUNDING < 1e-9  # far inside EDGES' nudges and every metric's resolution


def test_grpo_matches_ppo_needs_grpo_to_learn():
    assert registry._grpo_matches_ppo({"base/pass@1": 0.5, "grpo/pass@1": 0.5, "ppo/pass@1": 0.5}) is False


def test_sft_memorizes_rl_generalizes_needs_both_halves():
    # RL far ahead of SFT but fallen from the base's level: it did not hold its accuracy.
    assert registry._generalizes({"base/ood/pass@1": 0.5, "sft/ood/pass@1": 0.125, "rl/ood/pass@1": 0.25}) is False
    # RL holds the base's level but SFT holds it too.
    assert registry._generalizes({"base/ood/pass@1": 0.5, "sft/ood/pass@1": 0.5, "rl/ood/pass@1": 0.5}) is False


def test_language_mixing_needs_mixing_to_remove_and_a_small_cost():
    held = {"r1_zero/mixed": 0.0625, "consistent/mixed": 0.0, "r1_zero/pass@1": 0.5, "consistent/pass@1": 0.5}
    assert registry._mixing_removed(held) is True
    # R1-Zero a hair under 5% mixed: nothing for the reward to remove (0 <= half of it would pass alone).
    assert registry._mixing_removed({**held, "r1_zero/mixed": 0.05 - 1e-9}) is False
    # No mixing left, but pass@1 fell by a hair more than 0.10.
    assert registry._mixing_removed({**held, "consistent/pass@1": 0.4 - 1e-9}) is False


def test_a_sample_is_mixed_when_its_chain_of_thought_has_words_of_two_scripts():
    completions = [
        "<think>7+8=15 then 15+6=21 so 21</think><answer>21</answer>",  # English: Latin share 1
        "<think>7+8=15 μετά 15+6=21 so 21</think><answer>21</answer>",  # mixed: 1 of 2 words Latin
        "7+8=15 μετά 15+6=21 άρα 21<answer>21</answer>",  # Greek: no <think>, the whole text, tags aside
        "<answer>21</answer>",  # no words: neither mixed nor in the Latin share
    ]
    assert language.mixing(completions) == {"mixed": 0.25, "latin_share": (1 + 0.5 + 0) / 3}
    assert math.isnan(language.mixing(["21"])["latin_share"]) and language.mixing(["21"])["mixed"] == 0.0


def test_rl_sharpens_needs_a_pass_at_1_gain_too():
    # No gain at all (0 <= 0 / 2 would pass the second half alone).
    assert registry._sharpens({"base/pass@1": 0.5, "rl/pass@1": 0.5, "base/pass@large": 0.9, "rl/pass@large": 0.9}) is False


def test_entry_shape_and_verdicts():
    f = by_name("r1_zero_learns")
    seeds = [{"base/pass@1": 0.5, "r1_zero/pass@1": 0.75}, {"base/pass@1": 0.5, "r1_zero/pass@1": 0.5, "extra": math.nan}]
    e = entry(f, seeds, 12.34)
    assert e["held"] == [True, False] and e["verdict"] == "held on 1 of 2 seeds"
    assert e["metrics"] == {"base/pass@1": [0.5, 0.5], "r1_zero/pass@1": [0.75, 0.5], "extra": [None, None]}
    assert e["seconds"] == 12.3 and e["implemented"] is True
    todo = entry(dataclasses.replace(f, run=None), [], 0.0)  # a finding with no experiment yet
    assert todo["held"] is None and todo["verdict"] == "not implemented yet" and todo["metrics"] == {}
    assert verdict([True, True]) == "held on every seed" and verdict([False]) == "did not hold on any seed"


def test_relative_variance_by_hand():
    # Rows [1, 0] and [3, 0]: mean [2, 0], each row 1 away (squared), signal 4 -> 1 / 4.
    assert variance._relative_variance(torch.tensor([[1.0, 0.0], [3.0, 0.0]])) == 0.25
    assert variance._variance(torch.tensor([[1.0, 0.0], [3.0, 0.0]])) == 1.0
    assert math.isnan(variance._relative_variance(torch.zeros(3, 2)))  # no gradient: nothing to compare


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(R1kitError, match="no such finding"):
        run_findings(["r1_zero_learn"], output_dir=str(tmp_path))
    with pytest.raises(R1kitError, match="--seeds"):
        run_findings([], seeds=0, output_dir=str(tmp_path))


def test_a_finished_seed_runs_again_when_its_fingerprint_differs_and_is_skipped_when_it_matches(tmp_path):
    calls = []
    f = dataclasses.replace(by_name("r1_zero_learns"), run=lambda seed, root, size: calls.append(seed) or {"x": float(len(calls))})
    path = tmp_path / f.name / "seed-0.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"size": "smoke", "fingerprint": "made-by-other-code", "metrics": {"x": 0.0}, "seconds": 1.0}))
    assert run_module._seed(f, 0, tmp_path, "smoke")["metrics"] == {"x": 1.0} and calls == [0]  # stale: ran again
    assert json.loads(path.read_text())["fingerprint"] == run_module.fingerprint(f)
    assert run_module._seed(f, 0, tmp_path, "smoke")["metrics"] == {"x": 1.0} and calls == [0]  # same fingerprint: skipped
    # Another setup or criterion text is another fingerprint; the experiment's function is not part of it.
    assert run_module.fingerprint(dataclasses.replace(f, setup=f.setup + ".")) != run_module.fingerprint(f)
    assert run_module.fingerprint(dataclasses.replace(f, criterion=f.criterion + ".")) != run_module.fingerprint(f)
    assert run_module.fingerprint(by_name("r1_zero_learns")) == run_module.fingerprint(f)


def test_the_findings_own_bases_are_the_demos_pretraining_with_their_changes():
    weak, student = demo_stages.base_stage(*search_rewards.WEAK_BASE), demo_stages.demo_stage("student_base")
    assert (weak.name, weak.recipe, weak.config) == ("base", "pretrain", {**student.config, "steps": 150})
    wide, base = demo_stages.base_stage("base", generalize.BASE), demo_stages.demo_stage("base")
    assert wide.config == {**base.config, "task_params": {"n_operands": [2, 5], "digits": 1, "ops": "+"}}
    bilingual = demo_stages.base_stage("base", language.BASE)
    languages = {**base.config["task_params"], "languages": ["en", "el"], "code_switch": language.CODE_SWITCH}
    assert bilingual.config == {**base.config, "task_params": languages, "steps": 1000, "tiny": student.config["tiny"]}
    assert weak.config["run"]["seed"] == wide.config["run"]["seed"] == bilingual.config["run"]["seed"] == 0  # pinned: cached and shared by every seed
    pipe = demo_stages.config(1, Path("w"), "full", [demo_stages.demo_stage("sft")], name="x", base=wide)
    assert [s.name for s in pipe.stages] == ["base", "sft"] and pipe.stages[0].config == wide.config


def test_a_finding_runs_the_demo_stages_it_reads_and_their_inputs_only():
    stages = demo_stages.config(0, Path("w"), "full").stages
    assert [s.name for s in demo_stages.inputs_of(stages, ["r1_zero"])] == ["base", "r1_zero"]
    # distilled starts from the student base and reads the samples of the teacher's GRPO model
    assert [s.name for s in demo_stages.inputs_of(stages, ["distilled", "student_rl"])] == [
        "base", "sft", "grpo", "samples", "student_base", "distilled", "student_rl"]  # fmt: skip


def test_every_finding_evaluates_with_the_same_number_of_samples():
    for pipe in (demo_stages.config(0, Path("w"), "full"), demo_stages.config(0, Path("w"), "full", [], name="x")):
        assert pipe.defaults["eval"]["k"] == demo_stages.EVAL_SAMPLES == 16
    assert generalize.SIZES["full"]["n"] == demo_stages.EVAL_SAMPLES
    assert demo_stages.config(0, Path("w"), "smoke").defaults["eval"]["k"] == 2


def test_peak_memory_is_the_running_sum_of_allocations_and_frees():
    def work():  # 4 MB, then 4 MB more, one freed, then 8 MB: at most 12 MB held at once
        a = torch.ones(1_000_000)
        b = a * 2
        del a
        c = torch.ones(2_000_000)
        return b, c

    assert training.peak_memory_mb(work) == pytest.approx(12.0, abs=0.01)  # float32: 4 bytes an element


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_every_experiment_runs_at_smoke_size_and_reruns_skip_finished_seeds(tmp_path, one_thread, monkeypatch):
    summary = run_findings([], seeds=1, output_dir=str(tmp_path), size="smoke")
    written = json.loads((tmp_path / "findings.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["seeds"] == [0] and [f["name"] for f in written["findings"]] == list(NAMES)
    for f in written["findings"]:
        assert set(f) >= {"name", "claim", "criterion", "held", "metrics", "seconds"}
        if f["name"] in IMPLEMENTED:
            assert len(f["held"]) == 1 and isinstance(f["held"][0], bool), f["name"]
            assert all(len(v) == 1 for v in f["metrics"].values()) and set(f["plot"]) <= set(f["metrics"]), f["name"]
        else:
            assert f["held"] is None and f["metrics"] == {}, f["name"]
    assert "r1_zero_learns" in (tmp_path / "report.html").read_text()
    mixing = next(f for f in written["findings"] if f["name"] == "language_mixing")["metrics"]
    assert {f"{m}/{k}" for m in language.MODELS for k in ("pass@1", "mixed", "latin_share")} == set(mixing)
    ood = next(f for f in written["findings"] if f["name"] == "sft_memorizes_rl_generalizes")["metrics"]
    for model in ("base", "sft", "rl"):  # in distribution, both shifted sets, and ood their mean
        parts = [ood[f"{model}/{name}/pass@1"][0] for name in ("ood_len", "ood_digits")]
        assert ood[f"{model}/ood/pass@1"][0] == pytest.approx(sum(parts) / 2) and f"{model}/id/pass@1" in ood
    cold = next(f for f in written["findings"] if f["name"] == "cold_start_helps")["metrics"]
    assert {f"{m}/format" for m in ("base", "sft", "r1_zero", "grpo")} | {"r1_zero_40/pass@1"} <= set(cold)
    cold_start = yaml.safe_load((tmp_path / "cold_start_helps-smoke" / "seed-0" / "sft" / "config.yaml").read_text())["data"]
    assert cold_start["task_params"]["terse_fraction"] == 0.0  # R1's cold start: worked solutions only
    reuse = next(f for f in written["findings"] if f["name"] == "off_policy_reuse")["metrics"]
    assert {f"{arm}/{k}" for arm in ("mu1", "mu4", "mu4_noclip") for k in ("pass@1", "kl_max")} <= set(reuse)
    noclip = yaml.safe_load((tmp_path / "off_policy_reuse-smoke" / "seed-0" / "mu4_noclip" / "config.yaml").read_text())["grpo"]
    assert (noclip["num_iterations"], noclip["eps_low"], noclip["eps_high"]) == (4, 1.0, 1000.0)  # ratio bounds [0, 1001]

    process = next(f for f in written["findings"] if f["name"] == "outcome_vs_process")["metrics"]
    recorded = {f"process/{m}_{t}" for m in ("prm_score", "verified") for t in ("start", "end")} | {"outcome/step_s", "process/step_s", "prm/fit_s"}
    assert recorded <= set(process)  # reward hacking and cost beside the criterion's accuracy
    assert {"mcts/tokens", "rl/tokens"} <= set(next(f for f in written["findings"] if f["name"] == "mcts_vs_rl")["metrics"])
    hacking = next(f for f in written["findings"] if f["name"] == "kl_limits_hacking")["metrics"]
    assert {f"ppo_kl{kl}/rm_score_{t}" for kl in (0.02, 0.3) for t in ("start", "end")} <= set(hacking)
    learns = next(f for f in written["findings"] if f["name"] == "r1_zero_learns")["metrics"]
    assert 0 <= learns["base/format"][0] <= 1 and 0 <= learns["r1_zero/format"][0] <= 1
    assert {"base/maj@4", "rl/maj@4"} <= set(next(f for f in written["findings"] if f["name"] == "rl_sharpens")["metrics"])
    memory = next(f for f in written["findings"] if f["name"] == "grpo_matches_ppo")["metrics"]
    assert memory["grpo/peak_mb"][0] > 0 and memory["ppo/peak_mb"][0] > 0
    ran = {p.name for p in (tmp_path / "demo-smoke" / "seed-0").iterdir() if p.is_dir()}
    assert ran == {"base", "r1_zero", "sft", "grpo", "student_base", "distilled", "student_rl", "distilled_kd"}  # no sft2, r1
    distill = next(f for f in written["findings"] if f["name"] == "distill_beats_small_rl")["metrics"]
    assert {"distilled/pass@1", "student_rl/pass@1", "distilled_kd/pass@1"} <= set(distill)
    kd, sft = (yaml.safe_load((tmp_path / "demo-smoke" / "seed-0" / arm / "config.yaml").read_text()) for arm in ("distilled_kd", "distilled"))
    assert (kd["mode"], kd["hard_label_weight"], sft["mode"]) == ("logits", 0.0, "sft")
    assert Path(kd["teacher"]["path"]).parent.name == "grpo" and kd["model"] == sft["model"]  # the same student base
    baselines = next(f for f in written["findings"] if f["name"] == "baselines_cut_variance")["metrics"]
    assert {f"train_{e}/{k}" for e in variance.ESTIMATORS for k in ("train_accuracy", "pass@1")} <= set(baselines)
    trained = {e: yaml.safe_load((tmp_path / "baselines_cut_variance-smoke" / "seed-0" / f"train_{e}" / "config.yaml").read_text())["grpo"]
               for e in variance.ESTIMATORS}  # fmt: skip
    assert [(trained[e]["advantage"], trained[e]["scale"]) for e in variance.ESTIMATORS] == [("reinforce", "group"), ("grpo", "none"), ("grpo", "group")]

    def refuse(*args):
        raise AssertionError("a finished seed ran again")

    monkeypatch.setattr(run_module, "FINDINGS", tuple(dataclasses.replace(f, run=refuse) if f.implemented else f for f in FINDINGS))
    again = run_findings(["rl_sharpens", "mcts_vs_rl"], seeds=1, output_dir=str(tmp_path), size="smoke")
    assert [f["name"] for f in again["findings"]] == ["mcts_vs_rl", "rl_sharpens"]  # registry order
    assert again["findings"][1]["metrics"] == written["findings"][-1]["metrics"]


def test_cli_parses_the_findings_verb():
    from r1kit.cli import build_parser

    args = build_parser().parse_args(["findings", "--only", "rl_sharpens", "r1_zero_learns", "--seeds", "2"])
    assert (args.only, args.seeds, args.output_dir, args.size) == (["rl_sharpens", "r1_zero_learns"], 2, "runs/findings", "full")
    assert build_parser().parse_args(["findings"]).seeds == 3
