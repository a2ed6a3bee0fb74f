"""The safe expression language of category rules and selection filters."""

from __future__ import annotations

import numpy as np
import pytest

from soi.analysis import expr
from soi.errors import SoiError

COLS = {
    "confidence": np.array([0.1, 0.4, 0.5, 0.9]),
    "variability": np.array([0.3, 0.2, 0.0, 0.05]),
    "correctness": np.array([0, 2, 3, 6], np.int64),
    "first_learned": np.array([-1, 3, 2, 0], np.int64),
    "final_correct": np.array([False, True, True, True]),
    "task": np.array(["rte", "sst2", "rte", "mnli"], dtype=object),
    "soi": np.array(["never_learned", "learned_late", "forgettable_lost", "always_correct"], dtype=object),
    "language": np.array(["en", "de", "en", "fr"]),  # a NumPy unicode array, not object
}


def ev(expression: str) -> list[bool]:
    out = expr.evaluate(expression, COLS)
    assert out.dtype == bool and out.shape == (4,)
    return out.tolist()


@pytest.mark.parametrize(("expression", "expected"), [
    ("confidence < 0.4", [True, False, False, False]),
    ("confidence <= 0.4", [True, True, False, False]),
    ("confidence > 0.5", [False, False, False, True]),
    ("confidence >= 0.5", [False, False, True, True]),
    ("correctness == 3", [False, False, True, False]),
    ("correctness != 3", [True, True, False, True]),
    ("0.4 <= confidence", [False, True, True, True]),
    ("first_learned == -1", [True, False, False, False]),
])
def test_comparisons(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("0.2 < confidence < 0.9", [False, True, True, False]),
    ("0.1 <= confidence <= 0.5", [True, True, True, False]),
    ("0 < correctness < 6 != first_learned", [False, True, True, False]),
    ("confidence < 0.45 < variability + 0.5", [True, True, False, False]),
])
def test_chained_comparisons(expression, expected):
    # a < b < c means (a < b) and (b < c), the middle operand compared twice:
    #   0 < correctness [0, 2, 3, 6] -> F T T T; correctness < 6 -> T T T F; 6 != first_learned -> T T T T
    #   confidence < .45 -> T T F F; .45 < variability + .5 = [.8, .7, .5, .55] -> T T T T
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("confidence < 0.45 and variability > 0.1", [True, True, False, False]),
    ("confidence < 0.2 or confidence > 0.8", [True, False, False, True]),
    ("not final_correct", [True, False, False, False]),
    ("not (confidence < 0.45)", [False, False, True, True]),
    ("final_correct and not task == 'rte'", [False, True, False, True]),
    ("confidence > 0.3 and variability < 0.25 and correctness >= 3", [False, False, True, True]),
    ("confidence < 0.2 or confidence > 0.8 and task == 'rte'", [True, False, False, False]),  # and binds tighter
    ("(confidence < 0.2 or confidence > 0.8) and task == 'mnli'", [False, False, False, True]),
    ("final_correct", [False, True, True, True]),
    ("True", [True, True, True, True]),
    ("1 > 2", [False, False, False, False]),
])
def test_boolean_logic(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("task in ['rte', 'mnli']", [True, False, True, True]),
    ("task not in ['rte', 'mnli']", [False, True, False, False]),
    ("task in ('sst2',)", [False, True, False, False]),
    ("soi in ['forgettable_lost', 'never_learned']", [True, False, True, False]),
    ("correctness in [0, 6]", [True, False, False, True]),
    ("task in []", [False, False, False, False]),
    ("language in ['en']", [True, False, True, False]),
    ("language == 'de'", [False, True, False, False]),
    ("task == 'rte'", [True, False, True, False]),
    ("task != 'rte'", [False, True, False, True]),
    ("task == 'RTE'", [False, False, False, False]),
    ("'rte' == task", [True, False, True, False]),
])
def test_strings_and_membership(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("confidence + variability > 0.45", [False, True, True, True]),     # .4, .6, .5, .95
    ("confidence - variability < 0", [True, False, False, False]),      # -.2, .2, .5, .85
    ("correctness * 2 >= 6", [False, False, True, True]),
    ("correctness / 4 > 0.6", [False, False, True, True]),              # 0, .5, .75, 1.5
    ("-first_learned > 0", [True, False, False, False]),
    ("+correctness == 2", [False, True, False, False]),
    ("abs(confidence - 0.5) < 0.15", [False, True, True, False]),       # .4, .1, 0, .4
    ("abs(first_learned) == 1", [True, False, False, False]),
    ("correctness + 1 * 2 == 4", [False, True, False, False]),          # precedence: c + 2
    ("(correctness + 1) * 2 == 8", [False, False, True, False]),
])
def test_arithmetic(expression, expected):
    assert ev(expression) == expected


@pytest.mark.parametrize("expression", [
    "confidence.mean() > 0",                  # attribute + call
    "task.upper == 'RTE'",                    # attribute
    "np.ones(4) > 0",                         # attribute access on a name
    "len(task) > 0",                          # call other than abs
    "max(confidence) > 0",
    "abs(confidence, 1) > 0",                 # abs with two arguments
    "abs(x=confidence) > 0",                  # abs with a keyword
    "abs(*confidence) > 0",                   # starred
    "confidence[0] > 0",                      # subscript
    "COLS['confidence'] > 0",
    "(lambda: 1)() == 1",                     # lambda
    "[x for x in confidence] == 1",           # comprehensions
    "{x for x in confidence} == 1",
    "{x: 1 for x in confidence} == 1",
    "any(x > 0 for x in confidence)",
    "__import__('os').system('true') == 0",   # import
    "__import__('os') == 0",
    "open('/etc/passwd')",
    "confidence ** 2 > 0",                    # operators outside the language
    "correctness // 2 == 1",
    "correctness % 2 == 1",
    "final_correct & final_correct",
    "~final_correct",
    "task is task",
    "(y := 1) == 1",
    "confidence if True else 0",
    "f'{task}' == 'rte'",
    "{'a': 1} == 1",
    "{1, 2} == 1",
])
def test_unsafe_constructs_rejected(expression):
    with pytest.raises(SoiError, match="unsupported"):
        expr.parse(expression)
    with pytest.raises(SoiError):
        expr.evaluate(expression, COLS)


@pytest.mark.parametrize("expression", ["confidence <", "and", "", "task ==", "confidence < 0.3)"])
def test_syntax_errors(expression):
    with pytest.raises(SoiError, match="cannot parse"):
        expr.parse(expression)


@pytest.mark.parametrize("expression", ["None == confidence", "b'x' == task", "1j == confidence",
                                        "... == confidence"])
def test_unsupported_constants(expression):
    with pytest.raises(SoiError, match="unsupported constant"):
        expr.evaluate(expression, COLS)


@pytest.mark.parametrize("expression", ["confidence", "confidence + 1", "correctness", "task", "1", "'rte'",
                                        "abs(first_learned)"])
def test_non_boolean_result_rejected(expression):
    with pytest.raises(SoiError, match="not a condition"):
        expr.evaluate(expression, COLS)


@pytest.mark.parametrize("expression", ["not confidence", "confidence and final_correct",
                                        "final_correct or correctness"])
def test_boolean_operators_need_conditions(expression):
    with pytest.raises(SoiError, match="need conditions"):
        expr.evaluate(expression, COLS)


def test_in_needs_a_list():
    with pytest.raises(SoiError, match="'in' needs a list"):
        expr.evaluate("task in 'rte'", COLS)
    with pytest.raises(SoiError, match="'in' needs a list"):
        expr.evaluate("task not in soi", COLS)


def test_unknown_column_named():
    with pytest.raises(SoiError, match="'confidnce'"):
        expr.evaluate("confidnce < 0.3", COLS)


@pytest.mark.parametrize("expression", ["task > 0.5", "abs(task) > 1", "task + 1 == 2", "confidence < 'x'"])
def test_type_mismatch_is_a_user_error(expression):
    """Comparing or computing with a column of the wrong type is a user error, not a crash (see report)."""
    with pytest.raises(SoiError):
        expr.evaluate(expression, COLS)


def test_constant_result_broadcast_and_n():
    out = expr.evaluate("1 < 2", COLS, n=3)
    assert out.tolist() == [True, True, True]
    out[0] = False  # a writable copy, not a broadcast view
    assert expr.evaluate("2 < 1", {}, n=2).tolist() == [False, False]
    assert expr.evaluate("1 < 2", {}).shape == (0,)


def test_evaluate_does_not_modify_columns():
    before = {k: v.copy() for k, v in COLS.items()}
    expr.evaluate("-confidence < 0 and abs(first_learned) >= 0", COLS)
    for k, v in before.items():
        np.testing.assert_array_equal(COLS[k], v)


@pytest.mark.parametrize(("expression", "expected"), [
    ("confidence < 0.3 and variability > 0.2", {"confidence", "variability"}),
    ("abs(confidence - 0.5) < margin", {"confidence", "margin"}),
    ("soi in ['forgettable_lost'] and task == 'rte'", {"soi", "task"}),
    ("0.2 < confidence < threshold", {"confidence", "threshold"}),
    ("1 < 2", set()),
    ("abs(abs(aum)) > 1", {"aum"}),
])
def test_names(expression, expected):
    assert expr.names(expression) == expected


def test_names_rejects_unsafe():
    with pytest.raises(SoiError):
        expr.names("confidence.real > 0")
