"""Run-to-run SOI transitions: matrices, McNemar, paired bootstrap, table comparison, heatmap."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from soi.analysis import analyze_run
from soi.analysis.categories import SOI_CATEGORIES
from soi.analysis.transitions import (
    bootstrap_share_change,
    compare_tables,
    mcnemar,
    row_normalise,
    transition_counts,
)
from soi.errors import SoiError
from soi.report import transition_heatmap
from soi.simulate import simulate_run

K = len(SOI_CATEGORIES)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_table(ids, cats, final, gold=None, task=None, language=None, dictionary=SOI_CATEGORIES,
               source=None) -> pa.Table:
    """A minimal per-example table (what compare_tables reads) with ``soi`` as a dictionary column."""
    n = len(ids)
    names = list(dictionary)
    codes = np.asarray([names.index(SOI_CATEGORIES[c]) for c in cats], np.int32)
    return pa.table({
        "example_id": pa.array([str(x) for x in ids], pa.string()),
        "task": pa.array(task if task is not None else ["t"] * n, pa.string()).dictionary_encode(),
        "source": pa.array(source if source is not None else ["s"] * n, pa.string()).dictionary_encode(),
        "language": pa.array(language if language is not None else ["en"] * n, pa.string()).dictionary_encode(),
        "gold": pa.array(np.zeros(n, np.int16) if gold is None else np.asarray(gold, np.int16)),
        "final_correct": pa.array(np.asarray(final, bool)),
        "soi": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string())),
    })


# ------------------------------------------------------------------------------------ transition matrix


def test_transition_counts_six_examples_by_hand() -> None:
    # (A, B): (0,0) (0,1) (1,1) (3,0) (4,4) (5,3)
    a = np.array([0, 0, 1, 3, 4, 5])
    b = np.array([0, 1, 1, 0, 4, 3])
    expected = np.zeros((6, 6), np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[3, 0] = expected[4, 4] = expected[5, 3] = 1
    counts = transition_counts(a, b, 6)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    share = row_normalise(counts)
    np.testing.assert_allclose(share[0], [0.5, 0.5, 0, 0, 0, 0])
    np.testing.assert_allclose(share[2], np.zeros(6))  # no example in learned_late in A -> zeros, not NaN
    np.testing.assert_allclose(share.sum(axis=1), [1, 1, 0, 1, 1, 1])


def test_transition_counts_rejects_bad_codes() -> None:
    with pytest.raises(SoiError, match=r"\[0, 3\)"):
        transition_counts(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(SoiError, match="equal length"):
        transition_counts(np.array([0, 1]), np.array([0]), 3)


def test_compare_tables_six_examples_by_hand() -> None:
    cats_a = [0, 0, 1, 3, 4, 5]
    cats_b = [0, 1, 1, 0, 4, 3]
    fin_a = [1, 1, 1, 1, 0, 0]
    fin_b = [1, 1, 1, 1, 0, 1]
    task = ["x", "x", "y", "y", "y", "x"]
    ta = make_table(range(6), cats_a, fin_a, task=task)
    # B in a different row order, with a different dictionary order for 'soi'
    perm = np.array([5, 2, 0, 4, 1, 3])
    tb = make_table(perm, np.asarray(cats_b)[perm], np.asarray(fin_b)[perm],
                    dictionary=tuple(reversed(SOI_CATEGORIES)))
    comp = compare_tables(ta, tb, group_by=["task"], n_boot=200, label_a="single", label_b="multi")
    assert [(g.key, g.group, g.n_shared) for g in comp.groups] == [("all", "all", 6), ("task", "x", 3),
                                                                    ("task", "y", 3)]
    overall = comp.overall
    np.testing.assert_array_equal(overall.counts, transition_counts(np.array(cats_a), np.array(cats_b), K))
    x = comp.group("task", "x")  # examples 0, 1, 5: (0,0) (0,1) (5,3)
    expected_x = np.zeros((K, K), np.int64)
    expected_x[0, 0] = expected_x[0, 1] = expected_x[5, 3] = 1
    np.testing.assert_array_equal(x.counts, expected_x)
    assert overall.accuracy_a == pytest.approx(4 / 6) and overall.accuracy_b == pytest.approx(5 / 6)
    assert overall.mcnemar["b"] == 0 and overall.mcnemar["c"] == 1 and overall.mcnemar["p_value"] == 1.0
    np.testing.assert_allclose(overall.share_a, np.bincount(cats_a, minlength=K) / 6)
    np.testing.assert_allclose(overall.share_b, np.bincount(cats_b, minlength=K) / 6)
    np.testing.assert_allclose(overall.share_change["observed"], overall.share_b - overall.share_a)
    top = overall.top_transitions
    assert len(top) == 3 and {(t["from"], t["to"]) for t in top} == {
        ("always_correct", "learned_early"), ("forgettable_recovered", "always_correct"),
        ("never_learned", "forgettable_recovered")}
    assert all(t["count"] == 1 and t["share"] == pytest.approx(1 / 6) for t in top)
    assert comp.n_only_a == comp.n_only_b == 0
    d = comp.to_dict()
    assert d["groups"][0]["counts_a"]["always_correct"] == 2 and d["groups"][0]["counts_b"]["always_correct"] == 2
    long = comp.long_table()
    assert long.num_rows == 3 * K * K
    assert long.column_names == ["group_key", "group", "from", "to", "count", "row_share"]
    assert sum(long["count"].to_pylist()) == 12


def test_partial_overlap_counts_only_a_and_only_b() -> None:
    rng = np.random.default_rng(3)
    ta = make_table([f"e{i}" for i in range(10)], rng.integers(0, K, 10), rng.random(10) < 0.5,
                    language=["en"] * 5 + ["de"] * 5)
    tb = make_table([f"e{i}" for i in range(6, 14)], rng.integers(0, K, 8), rng.random(8) < 0.5,
                    language=["de"] * 8)
    comp = compare_tables(ta, tb, group_by=("language",), n_boot=100)
    assert (comp.n_a, comp.n_b, comp.n_shared, comp.n_only_a, comp.n_only_b) == (10, 8, 4, 6, 4)
    assert [(g.group, g.n_shared, g.n_only_a, g.n_only_b) for g in comp.groups] == [
        ("all", 4, 6, 4), ("de", 4, 1, 4)]  # 'en' has no shared example: not listed


def test_no_shared_ids_names_both_runs() -> None:
    ta = make_table(["a1", "a2"], [0, 1], [1, 1])
    tb = make_table(["b1"], [0], [1])
    with pytest.raises(SoiError, match=r"'single' \(2 examples\) and 'multi' \(1 examples\) share no"):
        compare_tables(ta, tb, label_a="single", label_b="multi")


def test_gold_mismatch_is_reported_with_count() -> None:
    ta = make_table(range(5), [0] * 5, [1] * 5, gold=[0, 1, 2, 0, 1])
    tb = make_table(range(5), [0] * 5, [1] * 5, gold=[0, 2, 1, 0, 1])
    with pytest.raises(SoiError, match=r"differ .* for 2 of 5 shared examples .*label orders"):
        compare_tables(ta, tb)


def test_unknown_category_and_missing_column() -> None:
    ta = make_table(range(3), [0, 1, 2], [1, 1, 1])
    tb = ta.set_column(ta.column_names.index("soi"), "soi", pa.array(["always_correct", "weird", "weird"]))
    with pytest.raises(SoiError, match=r"2 value\(s\) of column 'soi' are not categories.*'weird'"):
        compare_tables(ta, tb)
    with pytest.raises(SoiError, match="no column 'final_correct'"):
        compare_tables(ta, ta.drop_columns(["final_correct"]))
    with pytest.raises(SoiError, match="duplicate example_id '1'"):
        compare_tables(ta, make_table([0, 1, 1], [0, 1, 2], [1, 1, 1]))


# ---------------------------------------------------------------------------------------------- McNemar


def _finals(n11: int, b: int, c: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    fa = np.array([1] * n11 + [1] * b + [0] * c + [0] * n00, bool)
    fb = np.array([1] * n11 + [0] * b + [1] * c + [0] * n00, bool)
    return fa, fb


@pytest.mark.parametrize(("n11", "b", "c", "n00"), [
    (50, 3, 7, 40), (10, 10, 2, 5), (100, 15, 30, 20), (7, 40, 41, 3), (20, 0, 5, 1), (5, 12, 13, 5),
    (300, 101, 60, 80), (0, 1, 0, 0),
])
def test_mcnemar_matches_statsmodels(n11: int, b: int, c: int, n00: int) -> None:
    fa, fb = _finals(n11, b, c, n00)
    res = mcnemar(fa, fb)
    table = np.array([[n11, b], [c, n00]])
    exact = sm_mcnemar(table, exact=True)
    chi2 = sm_mcnemar(table, exact=False, correction=True)
    assert (res["b"], res["c"], res["n_discordant"]) == (b, c, b + c)
    assert res["exact_p"] == pytest.approx(exact.pvalue, rel=1e-12)
    assert res["chi2"] == pytest.approx(chi2.statistic, rel=1e-12)
    assert res["chi2_p"] == pytest.approx(chi2.pvalue, rel=1e-12)
    assert res["method"] == ("exact" if b + c < 25 else "chi2")
    assert res["p_value"] == (res["exact_p"] if b + c < 25 else res["chi2_p"])


def test_mcnemar_hand_values_and_edge_cases() -> None:
    # b=3, c=7: 2 * P(X <= 3), X ~ Bin(10, .5) = 2 * 176/1024
    res = mcnemar(*_finals(5, 3, 7, 5))
    assert res["exact_p"] == pytest.approx(2 * 176 / 1024)
    assert res["chi2"] == pytest.approx((4 - 1) ** 2 / 10)
    none = mcnemar(*_finals(5, 0, 0, 5))
    assert none["exact_p"] == none["chi2_p"] == none["p_value"] == 1.0 and none["chi2"] == 0.0
    tie = mcnemar(*_finals(5, 20, 20, 5))  # continuity correction clipped at 0 when b == c
    assert tie["chi2"] == 0.0 and tie["chi2_p"] == 1.0 and tie["exact_p"] == 1.0 and tie["method"] == "chi2"
    empty = mcnemar(np.zeros(0, bool), np.zeros(0, bool))
    assert empty["p_value"] == 1.0


# -------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_runs_zero_width_at_zero() -> None:
    counts = np.diag([40, 10, 3, 7, 0, 5])
    res = bootstrap_share_change(counts, n_boot=500, seed=1)
    for name in ("observed", "mean", "se", "lo", "hi"):
        np.testing.assert_array_equal(res[name], np.zeros(6))
    assert not res["significant"].any()


def test_bootstrap_is_seeded_and_empty_is_zero() -> None:
    counts = np.random.default_rng(0).integers(0, 30, (6, 6))
    r1 = bootstrap_share_change(counts, n_boot=300, seed=7)
    r2 = bootstrap_share_change(counts, n_boot=300, seed=7)
    r3 = bootstrap_share_change(counts, n_boot=300, seed=8)
    np.testing.assert_array_equal(r1["lo"], r2["lo"])
    assert not np.array_equal(r1["lo"], r3["lo"])
    empty = bootstrap_share_change(np.zeros((3, 3), int))
    assert not empty["significant"].any() and np.all(empty["hi"] == 0)
    with pytest.raises(SoiError, match="n_boot"):
        bootstrap_share_change(counts, n_boot=0)


def test_bootstrap_equals_example_level_resampling() -> None:
    """Multinomial draw of the table == resampling paired examples (compare the two distributions)."""
    rng = np.random.default_rng(5)
    n = 400
    a = rng.integers(0, K, n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, K, n))
    counts = transition_counts(a, b, K)
    fast = bootstrap_share_change(counts, n_boot=4000, seed=11)
    idx = rng.integers(0, n, (4000, n))
    ra, rb = a[idx], b[idx]
    share_a = np.stack([(ra == j).mean(axis=1) for j in range(K)], axis=1)
    share_b = np.stack([(rb == j).mean(axis=1) for j in range(K)], axis=1)
    slow = share_b - share_a
    np.testing.assert_allclose(fast["mean"], slow.mean(axis=0), atol=0.003)
    np.testing.assert_allclose(fast["se"], slow.std(axis=0), rtol=0.08)
    np.testing.assert_allclose(fast["lo"], np.quantile(slow, 0.025, axis=0), atol=0.006)
    np.testing.assert_allclose(fast["hi"], np.quantile(slow, 0.975, axis=0), atol=0.006)


def test_bootstrap_mean_close_to_observed_on_simulated_runs(tmp_path) -> None:
    simulate_run(tmp_path / "a", n=600, checkpoints=4, seed=1, difficulty_seed=9)
    simulate_run(tmp_path / "b", n=600, checkpoints=4, seed=2, skill=1.6, difficulty_seed=9)
    ta = analyze_run(tmp_path / "a", write=False).table
    tb = analyze_run(tmp_path / "b", write=False).table
    g = compare_tables(ta, tb, group_by=(), n_boot=2000).overall
    sc = g.share_change
    assert g.n_shared == 600
    np.testing.assert_allclose(sc["mean"], sc["observed"], atol=0.004)
    assert np.all(sc["lo"] <= sc["observed"]) and np.all(sc["observed"] <= sc["hi"])
    # better skill in B: more always_correct, fewer never_learned, and B is more accurate
    assert sc["significant"][0] and sc["observed"][0] > 0 and sc["observed"][-1] < 0
    assert g.accuracy_b > g.accuracy_a and g.mcnemar["p_value"] < 1e-6
    # the percentile CI has about the normal-theory width
    np.testing.assert_allclose(sc["hi"] - sc["lo"], 2 * 1.96 * sc["se"], rtol=0.15, atol=0.002)


def test_bootstrap_ci_coverage() -> None:
    """Over repeated samples from a known paired population the 90 % CIs cover the true change ~90 %."""
    rng = np.random.default_rng(2024)
    p = rng.dirichlet(np.ones(K * K) * 0.7).reshape(K, K)
    truth = p.sum(axis=0) - p.sum(axis=1)
    reps, n = 300, 500
    covered = np.zeros(K)
    for r in range(reps):
        counts = rng.multinomial(n, p.ravel()).reshape(K, K)
        res = bootstrap_share_change(counts, n_boot=400, seed=r, level=0.90)
        covered += (res["lo"] <= truth) & (truth <= res["hi"])
    coverage = covered / reps
    assert np.all(coverage > 0.83) and np.all(coverage < 0.96), coverage


# ------------------------------------------------------------------------------------ property tests


@st.composite
def paired_runs(draw):
    n_a = draw(st.integers(1, 40))
    n_shared = draw(st.integers(1, n_a))
    n_new = draw(st.integers(0, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids_a = np.array([f"x{i}" for i in range(n_a)])
    shared = rng.choice(n_a, n_shared, replace=False)
    ids_b = np.concatenate([ids_a[shared], [f"y{i}" for i in range(n_new)]])
    gold_a = rng.integers(0, 3, n_a)
    gold_b = np.concatenate([gold_a[shared], rng.integers(0, 3, n_new)])
    tasks = np.array(["t1", "t2", "t3"])
    ta = make_table(ids_a, rng.integers(0, K, n_a), rng.random(n_a) < 0.6, gold=gold_a,
                    task=tasks[rng.integers(0, 3, n_a)], language=tasks[rng.integers(0, 2, n_a)])
    tb = make_table(ids_b, rng.integers(0, K, len(ids_b)), rng.random(len(ids_b)) < 0.6, gold=gold_b,
                    task=tasks[rng.integers(0, 3, len(ids_b))])
    return ta, tb, rng


def _codes(table: pa.Table) -> dict[str, int]:
    ids = table["example_id"].to_pylist()
    cats = table["soi"].to_pylist()
    return {i: SOI_CATEGORIES.index(c) for i, c in zip(ids, cats, strict=True)}


@settings(max_examples=60, deadline=None)
@given(paired_runs())
def test_transitions_conserve_counts(runs) -> None:
    ta, tb, _ = runs
    comp = compare_tables(ta, tb, group_by=("task", "language"), n_boot=50)
    ca, cb = _codes(ta), _codes(tb)
    shared = sorted(set(ca) & set(cb))
    overall = comp.overall
    assert comp.n_shared == overall.n_shared == len(shared) == int(overall.counts.sum())
    np.testing.assert_array_equal(overall.counts.sum(axis=1), np.bincount([ca[i] for i in shared], minlength=K))
    np.testing.assert_array_equal(overall.counts.sum(axis=0), np.bincount([cb[i] for i in shared], minlength=K))
    assert comp.n_only_a == len(ca) - len(shared) and comp.n_only_b == len(cb) - len(shared)
    for key in ("task", "language"):
        parts = [g for g in comp.groups if g.key == key]
        if key in comp.params["skipped_group_by"]:
            # skipped only when A's tags split its examples exactly like an earlier key (or "all")
            earlier = comp.params["skipped_group_by"][key].split("'")[1]
            mine = ta[key].to_pylist()
            theirs = ["all"] * len(mine) if earlier == "all" else ta[earlier].to_pylist()
            assert len(set(zip(mine, theirs, strict=True))) == len(set(mine)) == len(set(theirs))
            assert not parts
            continue
        np.testing.assert_array_equal(sum(g.counts for g in parts), overall.counts)
        # groups are those of A's shared examples; n_only_a counts A-only examples of each listed group
        tag = dict(zip(ta["example_id"].to_pylist(), ta[key].to_pylist(), strict=True))
        assert sorted(g.group for g in parts) == sorted({tag[i] for i in shared})
        for g in parts:
            assert g.n_only_a == sum(1 for i in ca if i not in cb and tag[i] == g.group)
    long = comp.long_table()
    listed_keys = 2 - len(comp.params["skipped_group_by"])  # each listed key's groups partition the shared ids
    assert sum(long["count"].to_pylist()) == overall.n_shared * (1 + listed_keys)
    np.testing.assert_allclose(overall.share_change["observed"],
                               (overall.counts.sum(axis=0) - overall.counts.sum(axis=1)) / len(shared))


@settings(max_examples=40, deadline=None)
@given(paired_runs())
def test_invariant_to_example_order(runs) -> None:
    ta, tb, rng = runs
    base = compare_tables(ta, tb, group_by=("task",), n_boot=100, seed=3)
    shuffled = compare_tables(ta.take(rng.permutation(ta.num_rows)), tb.take(rng.permutation(tb.num_rows)),
                              group_by=("task",), n_boot=100, seed=3)
    assert len(base.groups) == len(shuffled.groups)
    for g1, g2 in zip(base.groups, shuffled.groups, strict=True):
        assert (g1.key, g1.group, g1.n_shared, g1.n_only_a, g1.n_only_b) == \
               (g2.key, g2.group, g2.n_shared, g2.n_only_a, g2.n_only_b)
        np.testing.assert_array_equal(g1.counts, g2.counts)
        assert g1.mcnemar == g2.mcnemar
        assert g1.accuracy_a == g2.accuracy_a and g1.accuracy_b == g2.accuracy_b
        for name in ("observed", "lo", "hi", "mean", "significant"):
            np.testing.assert_array_equal(g1.share_change[name], g2.share_change[name])


@settings(max_examples=30, deadline=None)
@given(paired_runs())
def test_identical_runs_have_diagonal_matrix_and_zero_ci(runs) -> None:
    ta, _, _ = runs
    comp = compare_tables(ta, ta, group_by=("task",), n_boot=100)
    for g in comp.groups:
        np.testing.assert_array_equal(g.counts, np.diag(np.diag(g.counts)))
        for name in ("observed", "lo", "hi", "mean"):
            np.testing.assert_array_equal(g.share_change[name], np.zeros(K))
        assert not g.significant.any()
        assert g.mcnemar["n_discordant"] == 0 and g.mcnemar["p_value"] == 1.0


# ------------------------------------------------------------------------------------------------ heatmap


def test_heatmap_writes_png_atomically(tmp_path) -> None:
    from PIL import Image

    counts = np.arange(36).reshape(6, 6)
    counts[2] = 0  # empty row
    path = transition_heatmap(counts, SOI_CATEGORIES, title="t", label_a="single", label_b="multi",
                              path=tmp_path / "h" / "m.png", significant=[1, 0, 0, 0, 0, 1],
                              share_change=np.linspace(-0.1, 0.1, 6))
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 800
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temp file left behind
    with pytest.raises(SoiError, match="expected \\(6, 6\\)"):
        transition_heatmap(counts[:5], SOI_CATEGORIES, title="t", label_a="a", label_b="b", path=tmp_path / "x.png")


def test_redundant_group_keys_are_skipped() -> None:
    """source == task and a single language would repeat groups already listed: they are skipped."""
    ids = [f"e{i}" for i in range(6)]
    cats = np.array([0, 1, 2, 3, 4, 5])
    task = ["a", "a", "b", "b", "c", "c"]
    ta = make_table(ids, cats, cats < 3, task=task, source=[t.upper() for t in task], language=["en"] * 6)
    tb = make_table(ids, cats[::-1], cats[::-1] < 3, task=task, source=task, language=["en"] * 6)
    comp = compare_tables(ta, tb, group_by=("task", "source", "language"), n_boot=10)
    assert [(g.key, g.group) for g in comp.groups] == [("all", "all"), ("task", "a"), ("task", "b"), ("task", "c")]
    assert comp.params["skipped_group_by"] == {"source": "same groups as 'task'", "language": "same groups as 'all'"}
