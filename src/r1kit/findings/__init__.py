"""`r1kit findings`: the claims the project was started from, each run as a small experiment on
the built-in tasks with locally pretrained tiny models, held to a criterion fixed in code before
it runs, over several seeds.

`registry.py` lists every finding (claim, setup, criterion); `demo_stages.py`, `training.py`,
`variance.py`, `sharpen.py`, `generalize.py`, `search_rewards.py` and `language.py` are the experiments; `run.py` runs them seed by seed and writes findings.json;
`report.py` writes report.html.
"""
