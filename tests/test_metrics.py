"""Per-example metrics (cartography, forgetting events, AUM) against hand-computed values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from soi.analysis import metrics as M
from soi.errors import SoiError
from soi.store import rows_from_logits

# --------------------------------------------------------------------------------------------------------
# hand-computed cases

# p_gold rows (E = 3):
#   [0.2, 0.6, 0.7]: conf = 1.5/3 = 0.5; deviations -.3, .1, .2 -> var = (.09 + .01 + .04)/3 = .14/3 = 7/150
#                    std = sqrt(7/150); include_ci: v + v^2/2 = 7/150 + 49/45000 = 2149/45000
#                    threshold closeness = .5 * .5 = .25
#   [1.0, 1.0, 0.0]: conf = 2/3; deviations 1/3, 1/3, -2/3 -> var = (1/9 + 1/9 + 4/9)/3 = 2/9
#                    include_ci: 2/9 + (4/81)/2 = 18/81 + 2/81 = 20/81; closeness = 2/3 * 1/3 = 2/9
#   [0.5, 0.5, 0.5]: conf = .5, var = 0, include_ci 0, closeness .25
#   [0.0, 0.0, 0.0]: conf = 0, var = 0, closeness 0
P_HAND = np.array([[0.2, 0.6, 0.7], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
CONF_HAND = [0.5, 2 / 3, 0.5, 0.0]
VAR_HAND = [math.sqrt(7 / 150), math.sqrt(2 / 9), 0.0, 0.0]
VAR_CI_HAND = [math.sqrt(2149 / 45000), math.sqrt(20 / 81), 0.0, 0.0]
CLOSE_HAND = [0.25, 2 / 9, 0.25, 0.0]

# correctness rows (E = 4) and, by hand:        correctness  frac  events  forgetfulness  first_c  first_l  final
C_HAND = np.array([
    [1, 1, 1, 1],  # always correct               4        1.0     0          0           0        0     T
    [0, 1, 1, 1],  # learned at 1                 3        .75     0          0           1        1     T
    [0, 0, 0, 1],  # learned at 3                 1        .25     0          0           3        3     T
    [1, 0, 1, 1],  # one event, recovered         3        .75     1          1           0        2     T
    [1, 0, 1, 0],  # two events, lost             2        .5      2          2           0       -1     F
    [0, 0, 0, 0],  # never correct                0        0       0       1000          -1       -1     F
    [0, 1, 0, 0],  # one event, lost              1        .25     1          1           1       -1     F
    [1, 1, 0, 1],  # one event late, recovered    3        .75     1          1           0        3     T
], dtype=bool)
CORRECTNESS_HAND = [4, 3, 1, 3, 2, 0, 1, 3]
FRAC_HAND = [1.0, 0.75, 0.25, 0.75, 0.5, 0.0, 0.25, 0.75]
EVENTS_HAND = [0, 0, 0, 1, 2, 0, 1, 1]
FORGET_HAND = [0, 0, 0, 1, 2, 1000, 1, 1]
FIRST_CORRECT_HAND = [0, 1, 3, 0, 0, -1, 1, 0]
FIRST_LEARNED_HAND = [0, 1, 3, 2, -1, -1, -1, 3]
FINAL_HAND = [True, True, True, True, False, False, False, True]


def test_confidence_hand():
    np.testing.assert_allclose(M.confidence(P_HAND), CONF_HAND, rtol=0, atol=1e-12)


def test_variability_hand():
    np.testing.assert_allclose(M.variability(P_HAND), VAR_HAND, rtol=0, atol=1e-12)


def test_variability_include_ci_hand():
    np.testing.assert_allclose(M.variability(P_HAND, include_ci=True), VAR_CI_HAND, rtol=0, atol=1e-12)


def test_variability_two_checkpoints_include_ci():
    # [0, 1]: var = .25 -> include_ci sqrt(.25 + .0625/1) = sqrt(.3125); plain sqrt(.25) = .5
    p = np.array([[0.0, 1.0]])
    assert M.variability(p)[0] == 0.5
    assert M.variability(p, include_ci=True)[0] == pytest.approx(math.sqrt(0.3125), abs=1e-12)


def test_threshold_closeness_hand():
    np.testing.assert_allclose(M.threshold_closeness(M.confidence(P_HAND)), CLOSE_HAND, rtol=0, atol=1e-12)
    # on raw confidences: .1 * .9 = .09, .75 * .25 = .1875
    np.testing.assert_allclose(M.threshold_closeness(np.array([0.1, 0.75])), [0.09, 0.1875], atol=1e-12)


def test_float32_input_gives_float64_results():
    p = P_HAND.astype(np.float32)
    conf = M.confidence(p)
    var = M.variability(p)
    assert conf.dtype == np.float64 and var.dtype == np.float64
    np.testing.assert_allclose(conf, CONF_HAND, atol=1e-7)
    np.testing.assert_allclose(var, VAR_HAND, atol=1e-7)


def test_correctness_hand():
    assert M.correctness(C_HAND).tolist() == CORRECTNESS_HAND
    assert M.correctness(C_HAND).dtype == np.int64
    assert M.correctness_fraction(C_HAND).tolist() == FRAC_HAND


def test_forgetting_events_hand():
    assert M.forgetting_events(C_HAND).tolist() == EVENTS_HAND


def test_forgetfulness_hand():
    assert M.forgetfulness(C_HAND).tolist() == FORGET_HAND
    assert M.NEVER_CORRECT_FORGETFULNESS == 1000


def test_first_correct_hand():
    assert M.first_correct(C_HAND).tolist() == FIRST_CORRECT_HAND


def test_first_learned_hand():
    assert M.first_learned(C_HAND).tolist() == FIRST_LEARNED_HAND


def test_final_correct_hand():
    out = M.final_correct(C_HAND)
    assert out.dtype == bool
    assert out.tolist() == FINAL_HAND


def test_integer_correctness_input():
    """0/1 integers are accepted like booleans."""
    ints = C_HAND.astype(np.int8)
    assert M.forgetting_events(ints).tolist() == EVENTS_HAND
    assert M.first_learned(ints).tolist() == FIRST_LEARNED_HAND
    assert M.final_correct(ints).tolist() == FINAL_HAND


def test_aum_and_mean_loss_hand():
    # margins [1, -1, 3, 1] -> 4/4 = 1; [-2, -4, 0, 2] -> -4/4 = -1; [0.5, 0.25, 0, 0.25] -> 1/4
    margin = np.array([[1, -1, 3, 1], [-2, -4, 0, 2], [0.5, 0.25, 0, 0.25]], np.float32)
    np.testing.assert_allclose(M.aum(margin), [1.0, -1.0, 0.25], atol=1e-12)
    # losses [.5, 1.5, 1, 1] -> 1; [2, 0, 0, 0] -> .5
    loss = np.array([[0.5, 1.5, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(M.mean_loss(loss), [1.0, 0.5], atol=1e-12)


def test_all_metrics_hand():
    # p_gold with E = 4 for the first two rows of C_HAND:
    #   [.2, .4, .6, .8]: conf .5, var (.09 + .01 + .01 + .09)/4 = .05, closeness .25
    #   [.1, .1, .1, .9]: conf .3, var (.04 * 3 + .36)/4 = .12, closeness .21
    p = np.array([[0.2, 0.4, 0.6, 0.8], [0.1, 0.1, 0.1, 0.9]])
    c = C_HAND[:2]
    margin = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, -1.0, -1.0, 1.0]])  # AUM 2.5, -0.5
    loss = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # mean 2.5, 1
    out = M.all_metrics(p, c, margin, loss)
    assert set(out) == {"confidence", "variability", "correctness", "correctness_frac", "forgetfulness",
                        "forgetting_events", "threshold_closeness", "first_correct", "first_learned",
                        "final_correct", "aum", "mean_loss"}
    np.testing.assert_allclose(out["confidence"], [0.5, 0.3], atol=1e-12)
    np.testing.assert_allclose(out["variability"], [math.sqrt(0.05), math.sqrt(0.12)], atol=1e-12)
    np.testing.assert_allclose(out["threshold_closeness"], [0.25, 0.21], atol=1e-12)
    assert out["correctness"].tolist() == [4, 3]
    assert out["correctness_frac"].tolist() == [1.0, 0.75]
    assert out["forgetfulness"].tolist() == [0, 0]
    assert out["first_correct"].tolist() == [0, 1]
    assert out["first_learned"].tolist() == [0, 1]
    assert out["final_correct"].tolist() == [True, True]
    np.testing.assert_allclose(out["aum"], [2.5, -0.5], atol=1e-12)
    np.testing.assert_allclose(out["mean_loss"], [2.5, 1.0], atol=1e-12)
    # without margin / loss those columns are absent
    assert "aum" not in M.all_metrics(p, c) and "mean_loss" not in M.all_metrics(p, c)


def test_all_metrics_shape_mismatch():
    with pytest.raises(SoiError, match="shape"):
        M.all_metrics(np.zeros((3, 4)), np.zeros((3, 5), bool))


# --------------------------------------------------------------------------------------------------------
# E = 1 and bad shapes

def test_single_checkpoint():
    p = np.array([[0.3], [1.0]])
    c = np.array([[True], [False]])
    np.testing.assert_allclose(M.confidence(p), [0.3, 1.0], atol=1e-12)
    assert M.variability(p).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(M.threshold_closeness(M.confidence(p)), [0.21, 0.0], atol=1e-12)
    assert M.correctness(c).tolist() == [1, 0]
    assert M.correctness_fraction(c).tolist() == [1.0, 0.0]
    assert M.forgetting_events(c).tolist() == [0, 0]
    assert M.forgetfulness(c).tolist() == [0, 1000]
    assert M.first_correct(c).tolist() == [0, -1]
    assert M.first_learned(c).tolist() == [0, -1]
    assert M.final_correct(c).tolist() == [True, False]
    out = M.all_metrics(p, c, p, p)
    assert out["forgetfulness"].tolist() == [0, 1000]
    assert out["first_learned"].tolist() == [0, -1]


def test_include_ci_needs_two_checkpoints():
    with pytest.raises(SoiError, match="2 checkpoints"):
        M.variability(np.array([[0.3], [0.5]]), include_ci=True)
    with pytest.raises(SoiError):
        M.all_metrics(np.array([[0.3]]), np.array([[True]]), include_ci=True)


@pytest.mark.parametrize("func", [M.confidence, M.variability, M.correctness, M.correctness_fraction,
                                  M.forgetting_events, M.forgetfulness, M.first_correct, M.first_learned,
                                  M.final_correct, M.aum, M.mean_loss])
@pytest.mark.parametrize("shape", [(4,), (3, 0), (2, 2, 2)])
def test_bad_shapes_raise(func, shape):
    with pytest.raises(SoiError, match="checkpoints"):
        func(np.zeros(shape))


def test_zero_examples():
    out = M.all_metrics(np.zeros((0, 3), np.float32), np.zeros((0, 3), bool))
    assert all(v.shape == (0,) for v in out.values())


# --------------------------------------------------------------------------------------------------------
# rows_from_logits: argmax ties, margin, loss, p_gold dtype

def test_rows_from_logits_tie_goes_to_lowest_index():
    # logits [1, 1, 0]: argmax tie between 0 and 1 -> 0; gold 1: margin 1 - max(1, 0) = 0
    # p_gold = e / (2e + 1) = 2.718281828 / 6.436563657 = 0.4223188
    # loss = ln(2e + 1) - 1 = 1.8619948 - 1 = 0.8619948
    rows = rows_from_logits(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]), np.array([1, 0]))
    assert rows["pred"].tolist() == [0, 0]
    assert rows["margin"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(rows["p_gold"], [0.4223188, 0.4223188], atol=1e-6)
    np.testing.assert_allclose(rows["loss"], [0.8619948, 0.8619948], atol=1e-6)


def test_rows_from_logits_three_way_tie_and_later_tie():
    # [2, 2, 2] -> pred 0, p_gold 1/3, loss ln 3 = 1.0986123, margin 0
    # [0, 3, 3] gold 0 -> pred 1 (lowest of the tied maxima), margin 0 - 3 = -3
    rows = rows_from_logits(np.array([[2.0, 2.0, 2.0], [0.0, 3.0, 3.0]]), np.array([2, 0]))
    assert rows["pred"].tolist() == [0, 1]
    assert rows["margin"].tolist() == [0.0, -3.0]
    np.testing.assert_allclose(rows["p_gold"][0], 1 / 3, atol=1e-6)
    np.testing.assert_allclose(rows["loss"][0], 1.0986123, atol=1e-6)


def test_rows_from_logits_hand_values():
    # logits [3, 1, 2], gold 1: pred 0, margin 1 - 3 = -2
    # sum exp = e^3 + e + e^2 = 20.0855369 + 2.7182818 + 7.3890561 = 30.1928748
    # p_gold = 2.7182818 / 30.1928748 = 0.0900306; loss = ln 30.1928748 - 1 = 3.4076059 - 1 = 2.4076059
    # gold 0: p_gold = 20.0855369 / 30.1928748 = 0.6652410, margin 3 - 2 = 1, loss = 3.4076059 - 3 = 0.4076059
    z = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]], np.float32)
    rows = rows_from_logits(z, np.array([1, 0]))
    assert rows["pred"].tolist() == [0, 0]
    assert rows["margin"].tolist() == [-2.0, 1.0]
    np.testing.assert_allclose(rows["p_gold"], [0.0900306, 0.6652410], atol=1e-6)
    np.testing.assert_allclose(rows["loss"], [2.4076059, 0.4076059], atol=1e-6)
    assert rows["p_gold"].dtype == np.float32
    assert rows["loss"].dtype == np.float32
    assert rows["margin"].dtype == np.float32
    assert rows["pred"].dtype == np.int16


def test_rows_from_logits_large_logits_are_stable():
    # [1000, 0], gold 1: loss = 1000 + ln(1 + e^-1000) - 0 = 1000; p_gold underflows to 0; margin -1000
    rows = rows_from_logits(np.array([[1000.0, 0.0]]), np.array([1]))
    assert rows["loss"].tolist() == [1000.0]
    assert rows["p_gold"].tolist() == [0.0]
    assert rows["margin"].tolist() == [-1000.0]


def test_rows_from_logits_rejects_bad_input():
    with pytest.raises(SoiError):
        rows_from_logits(np.array([[1.0], [2.0]]), np.array([0, 0]))  # C < 2
    with pytest.raises(SoiError):
        rows_from_logits(np.array([[1.0, 2.0]]), np.array([2]))  # gold out of range
    with pytest.raises(SoiError):
        rows_from_logits(np.array([[1.0, np.nan]]), np.array([0]))


# --------------------------------------------------------------------------------------------------------
# memory layout: C-order, F-order and the store's transposed checkpoint-major views give identical results

def _layouts(a: np.ndarray) -> list[np.ndarray]:
    store_view = np.ascontiguousarray(a.T).T  # what load_dynamics returns: an (N, E) view of (E, N) memory
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    return [np.ascontiguousarray(a), np.asfortranarray(a), store_view, wide[:, ::2]]


def test_layouts_give_identical_results():
    rng = np.random.default_rng(5)
    p = rng.random((37, 6)).astype(np.float32)
    c = rng.random((37, 6)) < 0.6
    margin = rng.normal(size=(37, 6)).astype(np.float32)
    loss = rng.random((37, 6)).astype(np.float32)
    assert _layouts(p)[2].flags.f_contiguous and not _layouts(p)[2].flags.c_contiguous
    ref = M.all_metrics(p, c, margin, loss, include_ci=True)
    for pl, cl, ml, ll in zip(_layouts(p), _layouts(c), _layouts(margin), _layouts(loss), strict=True):
        out = M.all_metrics(pl, cl, ml, ll, include_ci=True)
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
        np.testing.assert_array_equal(M.variability(pl), M.variability(p))
        np.testing.assert_array_equal(M.first_correct(cl), M.first_correct(c))
        np.testing.assert_array_equal(M.first_learned(cl), M.first_learned(c))
        np.testing.assert_array_equal(M.forgetfulness(cl), M.forgetfulness(c))


# --------------------------------------------------------------------------------------------------------
# an independent per-example loop, as cartography computes (lists of floats, np.mean / np.std, state machine)

def _cartography_forgetfulness(trend: list[bool]) -> int:
    if not any(trend):
        return 1000
    learnt, forgotten = False, 0
    for ok in trend:
        if learnt and not ok:
            learnt, forgotten = False, forgotten + 1
        elif not learnt and ok:
            learnt = True
    return forgotten


def _reference(p: np.ndarray, c: np.ndarray, margin: np.ndarray, include_ci: bool) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("confidence", "variability", "correctness", "correctness_frac",
                                            "forgetfulness", "forgetting_events", "threshold_closeness",
                                            "first_correct", "first_learned", "final_correct", "aum")}
    for i in range(p.shape[0]):
        probs = [float(x) for x in p[i]]
        trend = [bool(x) for x in c[i]]
        e = len(probs)
        conf = np.mean(probs)
        var = np.sqrt(np.var(probs) + np.var(probs) ** 2 / (e - 1)) if include_ci else np.std(probs)
        events = sum(1 for t in range(e - 1) if trend[t] and not trend[t + 1])
        first = next((t for t, ok in enumerate(trend) if ok), -1)
        learned = -1
        if trend[-1]:
            learned = e
            while learned > 0 and trend[learned - 1]:
                learned -= 1
        out["confidence"].append(conf)
        out["variability"].append(var)
        out["correctness"].append(sum(trend))
        out["correctness_frac"].append(sum(trend) / e)
        out["forgetfulness"].append(_cartography_forgetfulness(trend))
        out["forgetting_events"].append(events)
        out["threshold_closeness"].append(conf * (1 - conf))
        out["first_correct"].append(first)
        out["first_learned"].append(learned)
        out["final_correct"].append(trend[-1])
        out["aum"].append(float(np.mean([float(x) for x in margin[i]])))
    return out


@pytest.mark.parametrize("include_ci", [False, True])
def test_parity_with_per_example_loop(include_ci):
    rng = np.random.default_rng(11)
    n, e = 300, 7
    p = rng.random((n, e)).astype(np.float32)
    # correctness with runs (so forgetting and learning patterns are frequent), plus all-0 and all-1 rows
    c = rng.random((n, e)) < np.linspace(0.2, 0.9, e)
    c[:10] = False
    c[10:20] = True
    margin = rng.normal(size=(n, e)).astype(np.float32)
    got = M.all_metrics(np.ascontiguousarray(p.T).T, c, margin, include_ci=include_ci)
    ref = _reference(p, c, margin, include_ci)
    for key, values in ref.items():
        np.testing.assert_allclose(got[key], np.asarray(values, dtype=got[key].dtype), rtol=0, atol=1e-6,
                                   err_msg=key)
    assert got["forgetfulness"][:10].tolist() == [1000] * 10


# --------------------------------------------------------------------------------------------------------
# properties

@st.composite
def dynamics(draw, max_n: int = 12, max_e: int = 8):
    n = draw(st.integers(1, max_n))
    e = draw(st.integers(1, max_e))
    p = draw(hnp.arrays(np.float32, (n, e), elements=st.floats(0, 1, width=32)))
    c = draw(hnp.arrays(np.bool_, (n, e)))
    return p, c


@settings(max_examples=60, deadline=None)
@given(dynamics(), st.randoms(use_true_random=False))
def test_permuting_examples_permutes_rows(data, rnd):
    p, c = data
    perm = list(range(p.shape[0]))
    rnd.shuffle(perm)
    ref = M.all_metrics(p, c, p, p)
    out = M.all_metrics(p[perm], c[perm], p[perm], p[perm])
    for key in ref:
        np.testing.assert_array_equal(out[key], ref[key][perm], err_msg=key)


@settings(max_examples=60, deadline=None)
@given(dynamics())
def test_metric_properties(data):
    p, c = data
    out = M.all_metrics(p, c)
    ever = c.any(axis=1)
    events = M.forgetting_events(c)
    # forgetfulness is the number of events unless the example is never correct
    np.testing.assert_array_equal(out["forgetfulness"][ever], events[ever])
    assert (out["forgetfulness"][~ever] == 1000).all()
    assert ((out["variability"] >= 0) & (out["variability"] <= 0.5)).all()
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()
    assert (out["threshold_closeness"] <= 0.25).all() and (out["threshold_closeness"] >= 0).all()
    both = (out["first_learned"] >= 0) & (out["first_correct"] >= 0)
    assert (out["first_learned"][both] >= out["first_correct"][both]).all()
    # first_learned is -1 exactly when the final checkpoint is wrong; first_correct -1 when never correct
    assert ((out["first_learned"] == -1) == ~c[:, -1]).all()
    assert ((out["first_correct"] == -1) == ~ever).all()
    # events never exceed the number of correct checkpoints
    assert (events <= out["correctness"]).all()


@settings(max_examples=60, deadline=None)
@given(dynamics(), st.booleans())
def test_all_metrics_equals_individual_functions(data, with_ci):
    p, c = data
    include_ci = with_ci and p.shape[1] >= 2
    margin = p * 2 - 1
    out = M.all_metrics(p, c, margin, 1 - p, include_ci=include_ci)
    conf = M.confidence(p)
    expected = {
        "confidence": conf,
        "variability": M.variability(p, include_ci=include_ci),
        "correctness": M.correctness(c),
        "correctness_frac": M.correctness_fraction(c),
        "forgetfulness": M.forgetfulness(c),
        "forgetting_events": M.forgetting_events(c),
        "threshold_closeness": M.threshold_closeness(conf),
        "first_correct": M.first_correct(c),
        "first_learned": M.first_learned(c),
        "final_correct": M.final_correct(c),
        "aum": M.aum(margin),
        "mean_loss": M.mean_loss(1 - p),
    }
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].dtype == value.dtype, key
        np.testing.assert_array_equal(out[key], value, err_msg=key)
