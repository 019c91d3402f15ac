"""Test specifications: what a test is, what of it enters the sandbox, and how the host judges it.

Two shapes of test:

* **assert test** -- a string of Python run after the program, in the program's namespace
  (`"assert add(2, 3) == 5"`). It passes when it runs to its end without an exception. Every
  top-level `assert EXPR == LITERAL` (or `LITERAL == EXPR`) is split on the host: only EXPR enters
  the sandbox, its value comes back as the repr of its plain-Python form, and the host compares it
  with LITERAL, which the sandbox never sees. Such asserts cannot be passed by anything short of
  producing the right value: no object with an `__eq__` that always says yes, no forged report.
  Asserts nested in functions or loops, and comparisons with a non-literal side, run as written.
* **stdio test** -- `{"input": str, "output": str}`. The program reads `input` on stdin and passes
  when it exits with status 0 and its stdout equals `output` after dropping trailing whitespace on
  every line and trailing blank lines. The host compares; the expected output never enters the
  sandbox.

`parse_tests` accepts one test or a list; a dict `{"inputs": [...], "outputs": [...]}` (the stdio
column shape of APPS, TACO and open-r1's code datasets); or a JSON string holding any of these.
A string that is not JSON is one assert test: give a list for fractional credit.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

from r1kit.errors import R1kitError

CHECK_NAME = "__r1kit_check__"
UNREPRESENTABLE = "!unrepresentable"


@dataclass(frozen=True)
class AssertTest:
    source: str
    """What the sandbox runs: the test with each split assert replaced by `__r1kit_check__(k, EXPR)`."""
    expected: tuple[Any, ...] = ()
    """The hidden literal of split assert k, for k = 0, 1, ...; never sent to the sandbox."""


@dataclass(frozen=True)
class StdioTest:
    input: str
    output: str


Test = AssertTest | StdioTest


def parse_tests(tests: Any) -> list[Test]:
    """The list of tests in a `tests` value (see the module docstring for the accepted shapes)."""
    if tests is None:
        return []
    if isinstance(tests, (AssertTest, StdioTest)):
        return [tests]
    if isinstance(tests, str):
        stripped = tests.strip()
        if stripped[:1] in ("[", "{"):
            try:
                decoded = json.loads(stripped)
            except ValueError:
                decoded = None
            if isinstance(decoded, (list, dict)):
                return parse_tests(decoded)
        return [split_asserts(tests)] if stripped else []
    if isinstance(tests, dict):
        if "input" in tests and "output" in tests:
            return [StdioTest(_text(tests["input"]), _text(tests["output"]))]
        if "inputs" in tests and "outputs" in tests:
            if tests.get("fn_name"):
                raise R1kitError(
                    "call-based tests (`fn_name`) are not supported; write them as assert strings "
                    "such as \"assert f(1, 2) == 3\""
                )
            if len(tests["inputs"]) != len(tests["outputs"]):
                raise R1kitError(
                    f"stdio tests have {len(tests['inputs'])} inputs but {len(tests['outputs'])} outputs; "
                    "give one output per input"
                )
            return [StdioTest(_text(i), _text(o)) for i, o in zip(tests["inputs"], tests["outputs"])]
        raise R1kitError(
            f"a stdio test needs the keys `input` and `output` (or `inputs` and `outputs`), got {sorted(tests)}"
        )
    if isinstance(tests, (list, tuple)):
        out: list[Test] = []
        for item in tests:
            if isinstance(item, (AssertTest, StdioTest)):
                out.append(item)
                continue
            if not isinstance(item, (str, dict)):
                raise R1kitError(
                    f"a test is an assert string or an {{'input': ..., 'output': ...}} dict, got {type(item).__name__}"
                )
            out.extend(parse_tests(item) if isinstance(item, dict) else [split_asserts(item)])
        return out
    raise R1kitError(
        f"tests must be an assert string, an {{'input', 'output'}} dict or a list of them, got {type(tests).__name__}"
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    return str(value)


def split_asserts(source: str) -> AssertTest:
    """Move the LITERAL of each top-level `assert EXPR == LITERAL` out of the test (see module doc)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise R1kitError(f"test is not valid Python ({exc.msg}, line {exc.lineno}): {source[:80]!r}") from None
    expected: list[Any] = []
    body: list[ast.stmt] = []
    for node in tree.body:
        split = _split(node)
        if split is None:
            body.append(node)
            continue
        expr, literal = split
        call = ast.Call(ast.Name(CHECK_NAME, ast.Load()), [ast.Constant(len(expected)), expr], [])
        body.append(ast.copy_location(ast.Expr(call), node))
        expected.append(literal)
    if not expected:
        return AssertTest(source)
    tree.body = body
    return AssertTest(ast.unparse(ast.fix_missing_locations(tree)), tuple(expected))


def _split(node: ast.stmt) -> tuple[ast.expr, Any] | None:
    if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)):
        return None
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return None
    left, right = test.left, test.comparators[0]
    for expr, other in ((left, right), (right, left)):
        literal = _literal(other)
        if literal is not _NOT_LITERAL and _literal(expr) is _NOT_LITERAL:
            return expr, literal
    return None


_NOT_LITERAL = object()


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def parse_value(payload: str) -> Any:
    """The value a sandbox reported for a split assert (the repr of a plain-Python value)."""
    if payload == UNREPRESENTABLE:
        raise ValueError("the program returned a value that is not a built-in type")
    return ast.literal_eval(_NonFinite().visit(ast.parse(payload, mode="eval")))


class _NonFinite(ast.NodeTransformer):
    """repr writes non-finite floats as the bare names `inf` and `nan`."""

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return ast.Constant(float(node.id)) if node.id in ("inf", "nan") else node


def value_mismatch(test: AssertTest, reported: dict[int, list[str]]) -> str | None:
    """Why the reported values fail the split asserts, or None when each was reported exactly once
    and equals its hidden literal."""
    if set(reported) - set(range(len(test.expected))):
        return "the sandbox reported values for asserts the test does not have"
    for k, want in enumerate(test.expected):
        got_payloads = reported.get(k, [])
        if len(got_payloads) != 1:
            return f"assert {k} was reported {len(got_payloads)} times instead of once"
        try:
            got = parse_value(got_payloads[0])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return f"assert {k}: the value is not a built-in type ({got_payloads[0][:100]})"
        try:
            equal = bool(got == want)
        except Exception:  # e.g. comparing containers that hold nan
            equal = False
        if not equal:
            return f"assert {k}: got {got_payloads[0][:200]}, expected {want!r:.200}"
    return None


def stdout_matches(actual: str, expected: str) -> bool:
    """Equal after dropping trailing whitespace on each line and trailing blank lines."""
    return _lines(actual) == _lines(expected)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
