"""The `code` reward: the fraction of a row's tests that the completion's program passes.

It is the built-in code task's verifier, `r1kit.data.tasks.code_reward` (which has the details:
what counts as the program, the sandbox, `all_or_nothing`), and serves any rows that carry a
`tests` column under the name `code` (`REWARDS["code"]`).
"""

from __future__ import annotations

from r1kit.data.tasks.code_reward import code_reward, extract_code

__all__ = ["code_reward", "extract_code"]
