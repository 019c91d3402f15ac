"""The findings report's Markdown verdict table (the README's), from a hand-made findings.json."""

from __future__ import annotations

from r1kit.findings.report import verdict_table

SUMMARY = {
    "seeds": [0, 1],
    "findings": [
        {"name": "r1_zero_learns", "criterion": "r1_zero pass@1 - base pass@1 >= 0.08", "held": [True, False],
         "verdict": "held on 1 of 2 seeds", "plot": ["base/pass@1", "r1_zero/pass@1"],
         "metrics": {"base/pass@1": [0.65, 0.65], "r1_zero/pass@1": [0.9, 0.7], "other": [1.0, 2.0]}},
        {"name": "length_grows", "criterion": "len", "held": [True, True], "verdict": "held on every seed",
         "plot": ["base/mean_length"], "metrics": {"base/mean_length": [14.06, None]}},
        {"name": "language_mixing", "criterion": "", "held": None, "verdict": "not implemented yet", "plot": [], "metrics": {}},
    ],
}  # fmt: skip


def test_the_verdict_table_has_a_row_per_finding_with_each_seeds_mark_and_compared_values():
    lines = verdict_table(SUMMARY).splitlines()
    assert lines[0] == "| finding | criterion (per seed) | compared | seed 0 | seed 1 | verdict |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == ("| r1_zero_learns | `r1_zero pass@1 - base pass@1 >= 0.08` | base/pass@1 · r1_zero/pass@1 "
                        "| ✓ 0.650 · 0.900 | ✗ 0.650 · 0.700 | held on 1 of 2 seeds |")  # fmt: skip
    # Lengths of 10 or more with one decimal; a metric that could not be measured is a dash.
    assert lines[3] == "| length_grows | `len` | base/mean_length | ✓ 14.1 | ✓ – | held on every seed |"
    assert lines[4] == "| language_mixing | – | – | – | – | not implemented yet |"
    assert len(lines) == 5
