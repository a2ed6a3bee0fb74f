"""SOI categories against a plain-Python reference of the definitions; user CategoryRules."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from soi.analysis.categories import SOI_CATEGORIES, CategoryRules, category_labels, early_cutoff, soi_categories
from soi.errors import SoiError


def reference_category(seq: tuple[int, ...], late_fraction: float = 0.5) -> str:
    """Each SOI definition evaluated on its own; exactly one must hold."""
    e = len(seq)
    events = sum(1 for t in range(e - 1) if seq[t] == 1 and seq[t + 1] == 0)
    # the intended rational (0.1 -> 1/10), so ceil(0.1 * 30) is exactly 3
    cutoff = math.ceil(Fraction(late_fraction).limit_denominator(10_000) * e)
    k = next((t + 1 for t, ok in enumerate(seq) if ok), None)  # 1-based first correct
    learned = k is not None and k > 1 and all(seq[k - 1:])
    holds = {
        "always_correct": all(seq),
        "never_learned": not any(seq),
        "learned_early": learned and k <= cutoff,
        "learned_late": learned and k > cutoff,
        "forgettable_recovered": events >= 1 and seq[-1] == 1,
        "forgettable_lost": events >= 1 and seq[-1] == 0,
    }
    hits = [name for name, ok in holds.items() if ok]
    assert len(hits) == 1, (seq, hits)  # the definitions are exclusive and exhaustive
    return hits[0]


def all_sequences(e: int) -> np.ndarray:
    return np.array(list(itertools.product([0, 1], repeat=e)), dtype=bool)


def test_category_names_and_order():
    assert SOI_CATEGORIES == ("always_correct", "learned_early", "learned_late", "forgettable_recovered",
                              "forgettable_lost", "never_learned")


@pytest.mark.parametrize("late_fraction", [0.5, 1.0, 0.1, 0.25, 1 / 3, 0.75, 0.01])
@pytest.mark.parametrize("e", range(1, 7))
def test_exhaustive_against_reference(e, late_fraction):
    seqs = all_sequences(e)
    codes = soi_categories(seqs, late_fraction=late_fraction)
    assert codes.dtype == np.int8
    got = [SOI_CATEGORIES[k] for k in codes]
    want = [reference_category(tuple(int(x) for x in s), late_fraction) for s in seqs]
    assert got == want
    # every sequence in exactly one category; for E >= 3 at the default all six occur
    if e >= 3 and late_fraction == 0.5:
        assert set(got) == set(SOI_CATEGORIES)


def test_doc_example_and_labels():
    c = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
    assert list(category_labels(soi_categories(c))) == list(SOI_CATEGORIES)


def test_default_cutoff_hand():
    # E = 4, late_fraction .5: cutoff ceil(2) = 2 -> first correct at 2 early, at 3 late
    c = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], bool)
    assert soi_categories(c).tolist() == [1, 2]
    # E = 5: cutoff ceil(2.5) = 3 -> first correct at 3 is early, at 4 late
    c = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], bool)
    assert soi_categories(c).tolist() == [1, 2]


def _learned_at(k: int, e: int) -> np.ndarray:
    """0 .. 0 1 .. 1 with the first 1 at 1-based checkpoint k."""
    row = np.zeros(e, bool)
    row[k - 1:] = True
    return row


def test_e30_late_fraction_0_1_rounding():
    # 0.1 * 30 = 3.0000000000000004 in floating point; the cutoff must still be 3
    assert early_cutoff(30, 0.1) == 3
    c = np.stack([_learned_at(k, 30) for k in range(2, 31)])
    got = soi_categories(c, late_fraction=0.1).tolist()
    assert got == [1, 1] + [2] * 27  # k = 2, 3 early; k = 4..30 late


def test_e30_late_fraction_1_everything_learned_is_early():
    c = np.stack([_learned_at(k, 30) for k in range(2, 31)])
    assert early_cutoff(30, 1.0) == 30
    assert soi_categories(c, late_fraction=1.0).tolist() == [1] * 29
    # forgetting still wins over learning speed
    assert soi_categories(np.array([[1, 0] + [1] * 28], bool), late_fraction=1.0).tolist() == [3]


@pytest.mark.parametrize(("e", "f", "cutoff"), [(1, 0.5, 1), (4, 0.5, 2), (5, 0.5, 3), (30, 0.1, 3),
                                                (10, 0.3, 3), (3, 1 / 3, 1), (7, 1.0, 7), (100, 0.07, 7),
                                                (10, 0.01, 1)])
def test_early_cutoff_values(e, f, cutoff):
    assert early_cutoff(e, f) == cutoff


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.0000001, 1.5, float("nan"), float("inf")])
def test_invalid_late_fraction(bad):
    with pytest.raises(SoiError, match="late_fraction"):
        soi_categories(np.ones((2, 3), bool), late_fraction=bad)
    with pytest.raises(SoiError, match="late_fraction"):
        early_cutoff(3, bad)


def test_bad_shape():
    with pytest.raises(SoiError):
        soi_categories(np.ones(3, bool))
    with pytest.raises(SoiError):
        soi_categories(np.ones((3, 0), bool))


def test_f_order_input():
    seqs = all_sequences(6)
    np.testing.assert_array_equal(soi_categories(np.asfortranarray(seqs)), soi_categories(seqs))
    np.testing.assert_array_equal(soi_categories(np.ascontiguousarray(seqs.T).T), soi_categories(seqs))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)),
       st.sampled_from([0.1, 0.25, 0.5, 0.9, 1.0]), st.randoms(use_true_random=False))
def test_partition_and_order_invariance(c, late_fraction, rnd):
    codes = soi_categories(c, late_fraction=late_fraction)
    assert codes.shape == (c.shape[0],)
    assert ((codes >= 0) & (codes < 6)).all()
    events = (c[:, :-1] & ~c[:, 1:]).sum(axis=1)
    # each category's defining property, vectorised
    assert ((codes == 0) == c.all(axis=1)).all()
    assert ((codes == 5) == ~c.any(axis=1)).all()
    assert ((codes == 3) == ((events > 0) & c[:, -1])).all()
    assert ((codes == 4) == ((events > 0) & ~c[:, -1])).all()
    learned = (events == 0) & c.any(axis=1) & ~c.all(axis=1)
    assert (((codes == 1) | (codes == 2)) == learned).all()
    for row, code in zip(c, codes, strict=True):
        assert SOI_CATEGORIES[code] == reference_category(tuple(int(x) for x in row), late_fraction)
    perm = list(range(c.shape[0]))
    rnd.shuffle(perm)
    np.testing.assert_array_equal(soi_categories(c[perm], late_fraction=late_fraction), codes[perm])


# --------------------------------------------------------------------------------------------------------
# CategoryRules

COLUMNS = {
    "confidence": np.array([0.1, 0.5, 0.9, 0.2, 0.6]),
    "variability": np.array([0.0, 0.3, 0.05, 0.35, 0.1]),
    "soi": np.array(["never_learned", "forgettable_lost", "always_correct", "learned_late", "learned_early"],
                    dtype=object),
    "task": np.array(["rte", "rte", "sst2", "sst2", "rte"], dtype=object),
}


def test_rules_first_match_wins_and_default():
    rules = CategoryRules({
        "hard": "confidence < 0.25",        # rows 0, 3
        "ambiguous": "variability > 0.2",   # rows 1, 3 -> row 3 already 'hard'
        "rte_rest": "task == 'rte'",        # rows 0, 1, 4 -> only row 4 left
    }, default="easy")
    codes, names = rules.assign(COLUMNS)
    assert names == ("hard", "ambiguous", "rte_rest", "easy")
    assert rules.names == names
    assert codes.tolist() == [0, 1, 3, 0, 2]
    assert list(category_labels(codes, names)) == ["hard", "ambiguous", "easy", "hard", "rte_rest"]


def test_rules_order_matters():
    a = CategoryRules({"x": "confidence < 0.6", "y": "confidence < 0.95"})
    b = CategoryRules({"y": "confidence < 0.95", "x": "confidence < 0.6"})
    assert list(category_labels(*a.assign(COLUMNS))) == ["x", "x", "y", "x", "y"]
    assert list(category_labels(*b.assign(COLUMNS))) == ["y"] * 5
    assert a.default == "other" and a.names[-1] == "other"


def test_rules_on_soi_lists():
    rules = CategoryRules({"bad": "soi in ['forgettable_lost', 'never_learned']",
                           "rte_good": "task == 'rte' and soi not in ['forgettable_lost', 'never_learned']"},
                          default="rest")
    assert list(category_labels(*rules.assign(COLUMNS))) == ["bad", "bad", "rest", "rest", "rte_good"]


def test_rules_default_clash():
    with pytest.raises(SoiError, match="default 'hard'"):
        CategoryRules({"hard": "confidence < 0.2"}, default="hard")


@pytest.mark.parametrize("bad", ["confidence <", "__import__('os')", "confidence.mean() > 0", "x[0] > 1"])
def test_rules_bad_expression(bad):
    with pytest.raises(SoiError):
        CategoryRules({"r": bad})


def test_rules_non_string_and_empty():
    with pytest.raises(SoiError, match="'r'"):
        CategoryRules({"r": 0.5})
    with pytest.raises(SoiError, match="at least one"):
        CategoryRules({})


def test_rules_unknown_column_named():
    rules = CategoryRules({"r": "confidence < 0.2 and varability > 0.1"})
    with pytest.raises(SoiError, match="varability"):
        rules.assign(COLUMNS)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.sampled_from([0.1, 0.25, 0.5, 0.9, 1.0]), st.integers(0, 2**32 - 1))
def test_categories_from_stats_equals_soi_categories(e, n, late_fraction, seed):
    """The per-example table derives SOI codes from all_metrics' statistics; it must match the direct rule."""
    from soi.analysis.categories import categories_from_stats
    from soi.analysis.metrics import all_metrics

    c = np.random.default_rng(seed).random((n, e)) < 0.6
    m = all_metrics(c.astype(float), c)
    got = categories_from_stats(m["first_correct"], m["forgetting_events"], m["correctness"], m["final_correct"], e,
                                late_fraction=late_fraction)
    np.testing.assert_array_equal(got, soi_categories(c, late_fraction=late_fraction))
