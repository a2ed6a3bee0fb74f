"""Hardening, class 4: expressions (``--where``, rules files) are bounded and fail with one line, never a traceback."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_common import run_soi
from soi.analysis import expr
from soi.errors import SoiError

COLS = {
    "confidence": np.array([0.1, 0.4, 0.5, 0.9]),
    "forgetting_events": np.array([0, 2, 1, 0], np.int64),
    "final_correct": np.array([False, True, True, True]),
    "task": np.array(["rte", "sst2", "rte", "mnli"], dtype=object),
}


def ev(expression: str) -> list[bool]:
    return expr.evaluate(expression, COLS).tolist()


def refused(expression: str) -> str:
    with pytest.raises(SoiError) as info:
        expr.evaluate(expression, COLS)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600
    return msg


def test_division_by_zero_is_inf_not_an_error() -> None:
    assert ev("1/0 > confidence") == [True] * 4
    assert ev("confidence / 0 > 1") == [True] * 4
    assert ev("-1/0 < confidence") == [True] * 4


def test_huge_literals_are_floats() -> None:
    assert ev("confidence < " + "9" * 400) == [True] * 4
    assert ev("confidence < 1e999") == [True] * 4
    assert ev("forgetting_events == 1" + "0" * 30) == [False] * 4
    assert ev("forgetting_events * " + "9" * 400 + " > 0") == [False, True, True, False]


@pytest.mark.parametrize("expression", [
    "'a' * 999999999999 == task",
    "[1] * 999999999 == [1]",
    "task * 1000000000 == task",
    "[0.5] * forgetting_events == [1]",
    "'x' + task == task",
    "[1] + [2] == [1, 2]",
    "abs(task) > 0",
    "-task == task",
])
def test_no_string_or_list_arithmetic(expression: str) -> None:
    assert "arithmetic needs numbers" in refused(expression)


def test_repetition_does_not_allocate() -> None:
    """A 40-character expression that would allocate gigabytes is refused without allocating."""
    limit = resource.getrlimit(resource.RLIMIT_AS)
    assert "arithmetic needs numbers" in refused("'ab' * 100000000000 == task")
    assert resource.getrlimit(resource.RLIMIT_AS) == limit


@pytest.mark.parametrize(("expression", "expect"), [
    ("-" * 5000 + "1 > 0", "nested too deeply"),
    ("+".join(["1"] * 4000) + " > 0", "nested too deeply"),
    ("not " * 2000 + "final_correct", "nested too deeply"),
    ("(" * 500 + "1" + ")" * 500 + " > 0", "nested too deeply"),
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ("abs(" * 1000 + "1" + ")" * 1000 + " > 0", "nested too deeply"),
    ("confidence > 0 or " * 2000 + "final_correct", "too long"),
    ("x\x00", "null bytes"),
    ("confidence <", "cannot parse"),
    ("confidence < [0.1, 0.2, 0.3]", "cannot evaluate"),
    ("confidence", "not a condition"),
    ("__import__('os')", "unsupported syntax"),
    ("confidence.real > 0", "unsupported syntax"),
    ("2 ** 100000 > 1", "unsupported syntax"),
])
def test_bounded_and_one_line(expression: str, expect: str) -> None:
    msg = refused(expression)
    assert expect in msg or (expect == "nested too deeply" and "too many nested parentheses" in msg)


def test_depth_limit_boundary() -> None:
    ok = "(" * 10 + "confidence" + ")" * 10 + " > 0"
    assert ev(ok) == [True] * 4
    chain = "-" * (expr.MAX_DEPTH - 3) + "confidence < 0"
    assert ev(chain) == [True] * 4
    assert "nested too deeply" in refused("-" * (expr.MAX_DEPTH + 1) + "confidence < 0")


def test_non_string_expression() -> None:
    with pytest.raises(SoiError, match="must be a string"):
        expr.parse(3)  # type: ignore[arg-type]


# random expressions over a small grammar, with huge numbers, strings, lists and deep nesting
_atoms = st.one_of(
    st.sampled_from(list(COLS)),
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["'rte'", "''", "'x' * 3", "[1, 2]", "[]", "True", "None", "1e309", "0"]),
)


def _grow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binop = st.tuples(children, st.sampled_from([" + ", " - ", " * ", " / ", " < ", " == ", " != ", " >= ",
                                                 " and ", " or ", " in ", " not in ", " % ", " ** "]), children)
    return st.one_of(binop.map("".join), children.map(lambda c: f"({c})"), children.map(lambda c: f"not {c}"),
                     children.map(lambda c: f"-{c}"), children.map(lambda c: f"abs({c})"),
                     st.lists(children, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"))


@settings(max_examples=300, deadline=None)
@given(st.recursive(_atoms, _grow, max_leaves=30))
def test_random_expressions_never_crash(expression: str) -> None:
    """Any expression from the grammar: a boolean mask of the right length, or one SoiError line."""
    assert_mask_or_one_line_error(expression)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_text_never_crashes(expression: str) -> None:
    assert_mask_or_one_line_error(expression)


def assert_mask_or_one_line_error(expression: str) -> None:
    """``expression`` over COLS evaluates to a boolean mask of its 4 rows, or fails with a one-line SoiError."""
    try:
        out = expr.evaluate(expression, COLS)
    except SoiError as exc:
        assert "\n" not in str(exc)
        return
    assert out.dtype == bool and out.shape == (4,)


# ---------------------------------------------------------------------------------------------- rules files
@pytest.mark.parametrize(("name", "content", "expect"), [
    ("rules.yaml", b"rules:\n  hard: confidence < 0.3 # caf\xe9\n", "rules file is not UTF-8 text (byte 0xe9"),
    ("rules.json", b'{"rules": {"hard": "confidence < 0.3 \xff"}}', "rules file is not UTF-8 text (byte 0xff"),
    ("rules.json", b'{"rules": {"hard": "1/0 > confidence"}}', None),
    ("rules.json", b'{"rules": {"hard": "' + b"-" * 200 + b'confidence < 0"}}', "nested too deeply"),
    ("rules.json", b'{"rules": {"hard": "\'a\' * 99999999999 == task"}}', "arithmetic needs numbers"),
    ("rules.json", b'{"rules": {"hard": 3}}', "must be an expression string"),
    ("rules.json", b'{"rules": {"hard": "confidence < 0.3"}, "default": 5}', "'default' must be a category name"),
    ("rules.json", b"[" * 100_000 + b"]" * 100_000, "cannot parse rules (invalid JSON: nested too deeply)"),
    ("rules.yaml", b"rules: " + b"[" * 20_000 + b"]" * 20_000, "invalid YAML (nested too deeply)"),
])
def test_rules_files(sim_run: Path, tmp_path: Path, capsys, name: str, content: bytes, expect: str | None) -> None:
    rules = tmp_path / name
    rules.write_bytes(content)
    code, err = run_soi(capsys, "analyze", sim_run, "--rules", rules)
    if expect is None:
        assert code == 0, err
        return
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {rules}: ") and expect in err, err
    assert not (sim_run / "analysis").exists()
