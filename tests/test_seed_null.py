"""The reseeding null: kernels against naive references, calibration on simulated null studies, power on
planted effects."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from soi.analysis.categories import soi_categories
from soi.analysis.seed_null import (
    MIN_SEEDS_TEST,
    benjamini_hochberg,
    example_buckets,
    null_tests,
    pair_bucket_counts,
    permutation_test,
    reseeding_null,
    simes,
)
from soi.analysis.transitions import transition_counts
from soi.errors import SoiError
from soi.simulate import simulate_studies, simulate_study

K = 6
ALPHA = 0.05
N_STUDIES = 200
# one-sided 99% Monte-Carlo tolerance of a rate estimated from N_STUDIES studies at alpha
TOL = 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / N_STUDIES)


def naive_excess(codes: np.ndarray, s_a: int, k: int, rows: np.ndarray | None = None,
                 runs: list[int] | None = None) -> np.ndarray:
    """Between minus pooled within, straight from the definitions (loops over run pairs)."""
    runs = list(range(codes.shape[0])) if runs is None else runs
    c = codes if rows is None else codes[:, rows]
    n = c.shape[1]
    a = [r for r in runs if r < s_a]
    b = [r for r in runs if r >= s_a]
    between = np.mean([transition_counts(c[i], c[j], k) for i in a for j in b], axis=0) / n
    within = [0.5 * (transition_counts(c[i], c[j], k) + transition_counts(c[j], c[i], k))
              for side in (a, b) for i, j in itertools.combinations(side, 2)]
    return between - np.mean(within, axis=0) / n


def null_of(codes: np.ndarray, s_a: int, n_buckets: int = 16, seed: int = 0, **kw):
    n = codes.shape[1]
    buckets = example_buckets(n, n_buckets, seed)
    counts = pair_bucket_counts(codes, K, np.zeros(n, np.int64), 1, buckets, n_buckets)[:, 0]
    return reseeding_null(counts, s_a, codes.shape[0] - s_a, **kw), buckets


def study_codes(seed: int, s: int, n: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    st = simulate_study(n=n, seeds_a=s, seeds_b=s, seed=seed, **kw)
    codes = np.stack([soi_categories(c) for c in [*st["correct_a"], *st["correct_b"]]])
    return codes, st["planted"]


def test_matrices_match_definitions_by_hand() -> None:
    # 2 + 2 runs, 4 examples, 2 categories: every matrix by hand
    codes = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]])
    res, _ = null_of(codes[:, :], 2, n_buckets=2)
    # between: pairs (0,2),(0,3),(1,2),(1,3); e.g. T(0,2) = [[0,2],[1,1]]
    t = {(i, j): transition_counts(codes[i], codes[j], K) for i in range(4) for j in range(4)}
    between = (t[0, 2] + t[0, 3] + t[1, 2] + t[1, 3]) / 4 / 4
    within = (0.5 * (t[0, 1] + t[1, 0]) + 0.5 * (t[2, 3] + t[3, 2])) / 2 / 4
    np.testing.assert_allclose(res.between, between)
    np.testing.assert_allclose(res.within, within)
    np.testing.assert_allclose(res.excess, between - within)
    assert res.between[0, 1] == pytest.approx((2 + 1 + 1 + 0) / 16)
    # 2 seeds per side is below MIN_SEEDS_TEST: no p-values, a note instead
    assert MIN_SEEDS_TEST == 3 and res.p_value is None and res.overall["p_value"] is None
    assert "too few seeds" in res.note
    # share change = B's category shares minus A's (seed means)
    share_a = np.mean([np.bincount(codes[i], minlength=K) for i in (0, 1)], axis=0) / 4
    share_b = np.mean([np.bincount(codes[i], minlength=K) for i in (2, 3)], axis=0) / 4
    np.testing.assert_allclose(res.share_change["observed"], share_b - share_a)


def test_jackknife_variance_matches_naive_recomputation() -> None:
    rng = np.random.default_rng(4)
    s_a, s_b, n, g = 3, 4, 120, 8
    codes = rng.integers(0, K, (s_a + s_b, n))
    res, buckets = null_of(codes, s_a, n_buckets=g, seed=1, permutation=False)
    e = naive_excess(codes, s_a, K)
    np.testing.assert_allclose(res.excess, e, atol=1e-12)
    v_runs = np.zeros((K, K))
    for side in (range(s_a), range(s_a, s_a + s_b)):
        reps = np.stack([naive_excess(codes, s_a, K, runs=[r for r in range(s_a + s_b) if r != d]) for d in side])
        m = len(side)
        v_runs += (m - 1) / m * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0)
    reps = np.stack([naive_excess(codes, s_a, K, rows=np.flatnonzero(buckets != b)) for b in range(g)])
    v_ex = (g - 1) / g * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(res.se ** 2, v_runs + v_ex, rtol=1e-9, atol=1e-15)
    assert np.all((res.p_value >= 0) & (res.p_value <= 1))
    assert np.all(res.q_value >= res.p_value - 1e-15)


def test_permutation_matches_naive_enumeration() -> None:
    rng = np.random.default_rng(9)
    s_a = s_b = 4
    codes = rng.integers(0, 3, (8, 60))
    n = codes.shape[1]
    counts = pair_bucket_counts(codes, K, np.zeros(n, np.int64), 1, np.zeros(n, np.int64), 1)[:, 0, 0]
    got = permutation_test(counts, s_a, s_b)
    obs = np.abs(naive_excess(codes, s_a, K)).sum()
    stats = []
    for subset in itertools.combinations(range(8), s_a):
        order = list(subset) + [r for r in range(8) if r not in subset]
        stats.append(np.abs(naive_excess(codes[order], s_a, K)).sum())
    assert got["n_labelings"] == 70 and got["exact"]
    assert got["statistic"] == pytest.approx(obs)
    assert got["p_value"] == pytest.approx(np.mean(np.array(stats) >= obs - 1e-12))
    # 3 + 3 seeds cannot reach 0.05 by permutation: says so instead of a p-value
    small = permutation_test(counts[:15], 3, 3)
    assert small["p_value"] is None and small["min_p"] == pytest.approx(0.1) and "allow no" in small["note"]


def test_bh_and_simes_against_references() -> None:
    p = np.array([0.001, 0.2, 0.013, 0.04, 0.9, 0.03])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])
    assert simes(p) == pytest.approx(min(6 * 0.001 / 1, 6 * 0.013 / 2, 6 * 0.03 / 3, 6 * 0.04 / 4, 6 * 0.2 / 5,
                                         0.9))
    assert (simes(p) <= ALPHA) == bool((benjamini_hochberg(p) <= ALPHA).any())


def batch_of(s: int, n_studies: int, seed: int, n: int = 800, n_buckets: int = 32, **kw) -> tuple[dict, dict]:
    """``n_studies`` simulated s + s studies (vectorised) and their null tests, one batch member per study."""
    st = simulate_studies(n_studies, n=n, seeds_a=s, seeds_b=s, seed=seed, checkpoints=6, **kw)
    correct = np.concatenate([st["correct_a"], st["correct_b"]], axis=1)  # (N, R, n, E)
    codes = soi_categories(correct.reshape(-1, correct.shape[-1])).reshape(correct.shape[:3]).astype(np.int64)
    buckets = example_buckets(n, n_buckets, seed)
    base = (np.arange(n_studies)[:, None] * n_buckets + buckets[None]) * (K * K)  # (N, n)
    pi, pj = np.triu_indices(2 * s, k=1)
    counts = np.stack([np.bincount((base + codes[:, i] * K + codes[:, j]).ravel(),
                                   minlength=n_studies * n_buckets * K * K).reshape(n_studies, n_buckets, K, K)
                       for i, j in zip(pi, pj, strict=True)], axis=1)  # (N, P, G, K, K)
    return null_tests(counts, s, s), st | {"codes": codes}


def test_null_tests_batch_matches_one_at_a_time() -> None:
    res, st = batch_of(3, 4, seed=3, n=300, n_buckets=8, run_effect=0.3)
    for b in range(4):
        one, _ = null_of(st["codes"][b], 3, n_buckets=8, seed=3, permutation=False)
        np.testing.assert_allclose(res["excess"][b], one.excess, atol=1e-12)
        np.testing.assert_allclose(res["p_value"][b], one.p_value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res["q_value"][b], one.q_value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(res["change_p"][b], one.share_change["p_value"], rtol=1e-9, atol=1e-12)
        assert res["overall_p"][b] == pytest.approx(simes(one.p_value))
    # one df per study (the variance split pooled over the cells), within the run/example bounds
    assert np.all(res["df"] == res["df"][:, :1, :1]) and np.all((res["df"] >= 2) & (res["df"] <= 2 + 7))


# the calibration grid: seeds per setting x run-level seed effect (sd of the skill offset; seed-to-seed
# final accuracy sd ~1 / ~7 / ~11 pp)
GRID = [(s, e) for s in (3, 5) for e in (0.0, 0.3, 0.5)]


@pytest.mark.parametrize(("s", "run_effect"), GRID)
def test_calibrated_on_null_studies(s: int, run_effect: float) -> None:
    """Both settings are the same process (run-level seed effects + example noise), 200 studies of 800
    examples x 6 checkpoints: every reported flag -- any cell with BH q <= alpha (= the overall Simes test),
    each single cell's q flag, each category's share-change flag, the average cell interval missing 0 --
    fires in <= alpha + TOL of the studies (TOL = 0.036, the one-sided 99% Monte-Carlo tolerance)."""
    res, _ = batch_of(s, N_STUDIES, seed=1000 + 10 * s + round(10 * run_effect), run_effect=run_effect)
    flags = res["q_value"] <= ALPHA
    rates = {"any_cell": flags.any(axis=(1, 2)).mean(), "overall": (res["overall_p"] <= ALPHA).mean(),
             "cell_max": flags.mean(axis=0).max(), "share_max": (res["change_p"] <= ALPHA).mean(axis=0).max(),
             "interval_miss": (res["p_value"] <= ALPHA).mean()}
    assert rates["overall"] == rates["any_cell"]  # Simes rejects iff BH flags a cell
    for name, rate in rates.items():
        assert rate <= ALPHA + TOL, (name, rates)


def test_too_few_seeds_say_so() -> None:
    """2 + 2 seeds: no p-value, no flag, a note -- whatever the seed effect."""
    for run_effect in (0.0, 0.5):
        st = simulate_studies(20, n=200, seeds_a=2, seeds_b=2, seed=5, run_effect=run_effect)
        for b in range(20):
            codes = np.stack([soi_categories(c) for c in [*st["correct_a"][b], *st["correct_b"][b]]])
            res, _ = null_of(codes, 2)
            assert res.p_value is None and res.q_value is None and res.overall["p_value"] is None
            assert not res.overall["significant"] and not res.share_change["significant"].any()
            assert "too few seeds" in res.note
    with pytest.raises(SoiError, match="need >= 3 seeds"):
        null_tests(np.zeros((1, 6, 2, K, K)), 2, 2)


def test_the_seed_effect_sizes_of_the_grid() -> None:
    """The grid's run_effect values give the stated seed-to-seed accuracy sd (final checkpoint)."""
    sds = []
    for run_effect in (0.0, 0.3, 0.5):
        st = simulate_studies(100, n=800, seeds_a=3, seeds_b=3, seed=8, run_effect=run_effect)
        acc = np.concatenate([st["correct_a"], st["correct_b"]], axis=1)[..., -1].mean(axis=2)  # (N, R)
        sds.append(float(acc.std(axis=1, ddof=1).mean()))
    assert sds[0] < 0.02 and 0.05 < sds[1] < 0.09 and 0.09 < sds[2] < 0.14, sds


def test_power_and_the_planted_cells() -> None:
    """5 + 5 seeds, moderate seed effects (run_effect 0.3, accuracy sd ~7 pp); B makes 30% of the examples
    much harder: the overall test rejects in >= 70% of 40 studies (measured 87.5%), and the flagged cells
    are the planted examples' transitions: their part of a flagged cell's excess has its sign and is most
    of it (median share > 0.5; summed over the flagged cells >= 75% of |excess|)."""
    n_st, n = 40, 800
    res, st = batch_of(5, n_st, seed=50, n=n, run_effect=0.3, planted_fraction=0.3, planted_shift=-2.0)
    found = res["overall_p"] <= ALPHA
    assert found.mean() >= 0.7, found.mean()
    shares: list[float] = []
    planted_part = total_part = 0.0
    for b in np.flatnonzero(found):
        planted = st["planted"][b]
        e_planted = naive_excess(st["codes"][b], 5, K, rows=np.flatnonzero(planted)) * planted.sum() / n
        for i, j in np.argwhere(res["q_value"][b] <= ALPHA):
            shares.append(e_planted[i, j] / res["excess"][b, i, j])
            planted_part += abs(e_planted[i, j])
            total_part += abs(res["excess"][b, i, j])
    assert len(shares) >= found.sum() and np.median(shares) > 0.5, shares
    print(f"power {found.mean():.3f}, planted share of flagged |excess| {planted_part / total_part:.3f}")
    assert planted_part / total_part >= 0.75, planted_part / total_part


def test_needs_a_within_pair_and_examples() -> None:
    codes = np.zeros((2, 5), np.int64)
    counts = pair_bucket_counts(codes, K, np.zeros(5, np.int64), 1, np.zeros(5, np.int64), 2)[:, 0]
    with pytest.raises(SoiError, match="needs >= 2 seeds"):
        reseeding_null(counts, 1, 1)


def test_both_simulators_take_the_fields_of_one_model() -> None:
    """simulate_study and simulate_studies read one SeedStudyModel: the same fields, defaults and checks."""
    for bad in ({"n": 0}, {"seeds_b": 0}, {"classes": 0}, {"checkpoints": 0}):
        with pytest.raises(ValueError, match="must be >= 1"):
            simulate_study(**bad)
        with pytest.raises(ValueError, match="must be >= 1"):
            simulate_studies(2, **bad)
    with pytest.raises(ValueError, match="n_studies must be >= 1"):
        simulate_studies(0)
    with pytest.raises(TypeError, match="skil_a"):
        simulate_study(skil_a=1.0)
    one = simulate_study(n=30, seeds_a=2, seeds_b=4, checkpoints=5)
    many = simulate_studies(3, n=30, seeds_a=2, seeds_b=4, checkpoints=5)
    assert one["correct_a"].shape == (2, 30, 5) and one["correct_b"].shape == (4, 30, 5)
    assert many["correct_a"].shape == (3, 2, 30, 5) and many["correct_b"].shape == (3, 4, 30, 5)
    assert simulate_study(checkpoints=1)["gold"].shape == (2000,)  # the model's default n
    assert simulate_studies(1, checkpoints=1)["gold"].shape == (1, 800)  # simulate_studies' own default n
