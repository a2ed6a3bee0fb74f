"""Paired test-set statistics: the seed-and-item t-test (calibration and power under seed effects), the seed
permutation test, McNemar (per pair, item-level clustered) and the two-way bootstrap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, stdtr
from scipy.stats import ttest_1samp, ttest_ind
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from soi.analysis.paired import (
    bootstrap_accuracy_difference,
    ci_label,
    clustered_mcnemar,
    eval_set_stats,
    matched_pairs,
    permutation_seeds,
    seed_item_t_test,
    seed_note,
    two_way_t,
)
from soi.analysis.transitions import mcnemar
from soi.errors import SoiError
from soi.simulate import simulate_paired_eval

ALPHA = 0.05
N_STUDIES = 200
TOL = 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / N_STUDIES)  # one-sided 99% Monte-Carlo tolerance


def test_clustered_mcnemar_one_pair_is_mcnemar_without_correction() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.7
    b = rng.random(300) < 0.75
    got = clustered_mcnemar(a[None], b[None])
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    ref = sm_mcnemar(table, exact=False, correction=False)
    assert got["statistic"] == pytest.approx(ref.statistic)
    assert got["p_value"] == pytest.approx(ref.pvalue)


def test_clustered_mcnemar_by_hand() -> None:
    # 2 seed pairs, 4 items; D_e = sum over pairs of (B - A): item0 +2, item1 0, item2 -1, item3 +1
    a = np.array([[0, 1, 1, 0], [0, 0, 1, 1]], bool)
    b = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], bool)
    got = clustered_mcnemar(a, b)
    assert got["statistic"] == pytest.approx((2 + 0 - 1 + 1) ** 2 / (4 + 0 + 1 + 1))
    assert got["b"] == 1 and got["c"] == 3


def test_bootstrap_one_seed_matches_paired_standard_error() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((1, 2000)) < 0.7
    b = a.copy()
    flip = rng.random(2000) < 0.2
    b[0, flip] = rng.random(flip.sum()) < 0.8
    res = bootstrap_accuracy_difference(a, b, n_boot=4000, seed=2)
    d = b[0].astype(float) - a[0]
    assert res["observed"] == pytest.approx(d.mean())
    assert res["se"] == pytest.approx(d.std() / math.sqrt(d.size), rel=0.08)
    assert res["lo"] < res["observed"] < res["hi"]
    again = bootstrap_accuracy_difference(a, b, n_boot=4000, seed=2)
    assert again == res  # seeded


def test_identical_single_runs_give_zero_width_interval() -> None:
    # (with several seeds per side the seeds of A and of B are resampled independently: not zero width)
    a = np.random.default_rng(3).random((1, 50)) < 0.5
    res = bootstrap_accuracy_difference(a, a.copy(), n_boot=200)
    assert res["observed"] == 0.0 and res["lo"] == pytest.approx(0.0) and res["hi"] == pytest.approx(0.0)


# ------------------------------------------------------------------------ the seed-and-item t-test (headline)
# Calibration grid: seeds per side x items x seed effect (logit sd of the run-level skill offset; the seed-to-seed
# sd of the population accuracy it gives is checked in test_seed_effect_sizes_of_the_grid).
SEED_SD = {"none": 0.0, "2pp": 0.15, "5pp": 0.37}
N_NULL = 500
TOL_NULL = 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / N_NULL)  # 0.023: one-sided 99% Monte-Carlo tolerance


def _seed_effect_sd(seed_sd: float, n: int = 20_000, draws: int = 4000) -> float:
    """sd over seeds of the population accuracy sigmoid(1.5 - d + u) averaged over items (the model's seed effect)."""
    rng = np.random.default_rng(0)
    d = rng.normal(0, 1.5, n)
    u = rng.normal(0, seed_sd, draws)
    return float(expit(1.5 - d[None, ::10] + u[:, None]).mean(axis=1).std())


def test_seed_effect_sizes_of_the_grid() -> None:
    assert _seed_effect_sd(SEED_SD["none"]) == 0.0
    assert 0.015 <= _seed_effect_sd(SEED_SD["2pp"]) <= 0.025
    assert 0.045 <= _seed_effect_sd(SEED_SD["5pp"]) <= 0.055


def _reference_two_way(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(D, V, df) with explicit loops over seeds and items: an independent implementation of the formulas."""
    a, b = a.astype(float), b.astype(float)
    n = a.shape[1]
    terms = []  # (value, df) of V's mean-square terms
    for y in (a, b):
        s = y.shape[0]
        acc = [sum(row) / n for row in y]
        m = sum(acc) / s
        terms.append((sum((x - m) ** 2 for x in acc) / (s - 1) / s, s - 1))
    d = [b[:, e].mean() - a[:, e].mean() for e in range(n)]
    dm = sum(d) / n
    items = sum((x - dm) ** 2 for x in d) / (n - 1) / n
    res = []
    for y in (a, b):
        s = y.shape[0]
        grand = y.mean()
        ss = sum((y[i, e] - y[i].mean() - y[:, e].mean() + grand) ** 2 for i in range(s) for e in range(n))
        res.append((ss / ((s - 1) * (n - 1)) / (n * s), (s - 1) * (n - 1)))
    v = terms[0][0] + terms[1][0]
    den = terms[0][0] ** 2 / terms[0][1] + terms[1][0] ** 2 / terms[1][1]
    if items - res[0][0] - res[1][0] > 0:
        v += items - res[0][0] - res[1][0]
        den += items ** 2 / (n - 1) + sum(r ** 2 / f for r, f in res)
    return b.mean() - a.mean(), v, v * v / den


@pytest.mark.parametrize("study", range(6))
def test_two_way_t_equals_the_loop_reference_and_batches(study: int) -> None:
    a, b = simulate_paired_eval(1, seeds_a=2 + study % 3, seeds_b=3, n=40, seed_sd=0.3, interaction_sd=study / 3,
                                seed=study)
    got = two_way_t(a, b)
    d, v, df = _reference_two_way(a[0], b[0])
    assert float(got["observed"][0]) == pytest.approx(d)
    assert float(got["se"][0]) ** 2 == pytest.approx(v)
    assert float(got["df"][0]) == pytest.approx(max(df, 1.0))
    assert float(got["p_value"][0]) == pytest.approx(2 * stdtr(max(df, 1.0), -abs(d) / math.sqrt(v)))
    # batched over studies = one study at a time
    aa, bb = simulate_paired_eval(5, seeds_a=3, seeds_b=4, n=30, seed_sd=0.3, seed=study)
    batch = two_way_t(aa, bb)
    for i in range(5):
        one = two_way_t(aa[i], bb[i])
        assert all(float(batch[k][i]) == pytest.approx(float(one[k])) for k in batch)


def test_without_the_item_part_it_is_welchs_t_test_on_seed_accuracies() -> None:
    a, b = simulate_paired_eval(40, seeds_a=3, seeds_b=4, n=300, seed_sd=0.3, seed=9)
    r = two_way_t(a, b)
    no_items = np.flatnonzero(r["v_items"] == 0)
    assert no_items.size >= 5  # under the null the interaction estimate is clipped at 0 about half the time
    for i in no_items:
        ref = ttest_ind(b[i].mean(axis=1), a[i].mean(axis=1), equal_var=False)
        assert float(r["statistic"][i]) == pytest.approx(ref.statistic)
        assert float(r["p_value"][i]) == pytest.approx(ref.pvalue)
        assert float(r["df"][i]) == pytest.approx(ref.df)


def test_the_variance_matches_the_spread_of_the_difference_over_studies() -> None:
    """E[V] = Var(D) with seed effects and an item x setting interaction (items redrawn in every study)."""
    a, b = simulate_paired_eval(3000, seeds_a=3, seeds_b=3, n=200, seed_sd=0.2, interaction_sd=1.0, seed=4)
    r = two_way_t(a, b)
    assert float(np.mean(r["se"] ** 2)) == pytest.approx(float(r["observed"].var()), rel=0.1)
    assert float(np.mean(r["v_items"] / r["se"] ** 2)) > 0.08  # the interaction part is not negligible here


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("n", [200, 1000])
@pytest.mark.parametrize("effect", list(SEED_SD))
def test_seed_aware_flag_is_calibrated_on_null_studies(seeds: int, n: int, effect: str) -> None:
    """Both settings the same process with a seed effect: p <= alpha in <= alpha (+ TOL_NULL) of 500 studies."""
    a, b = simulate_paired_eval(N_NULL, seeds_a=seeds, seeds_b=seeds, n=n, seed_sd=SEED_SD[effect],
                                seed=100 * seeds + n)
    r = two_way_t(a, b)
    rate = float(np.mean(r["p_value"] <= ALPHA))
    assert rate <= ALPHA + TOL_NULL
    if effect == "none" and seeds == 5:
        assert rate >= ALPHA - TOL_NULL  # near alpha, not just conservative, when seeds agree


def test_clustered_mcnemar_is_item_level_only() -> None:
    """Why it is not the flag: valid with no seed effect, far above alpha with a 5 pp seed effect."""
    rates = {}
    for effect in ("none", "5pp"):
        a, b = simulate_paired_eval(200, seeds_a=3, seeds_b=3, n=1000, seed_sd=SEED_SD[effect], seed=7)
        rates[effect] = np.mean([clustered_mcnemar(a[i], b[i])["p_value"] <= ALPHA for i in range(200)])
    assert rates["none"] <= ALPHA + TOL
    assert rates["5pp"] > 5 * ALPHA


@pytest.mark.parametrize(("seeds", "effect", "shift", "at_least"),
                         [(5, "2pp", 0.5, 0.8), (3, "none", 0.3, 0.4), (5, "5pp", 0.5, 0.25)])
def test_seed_aware_flag_finds_a_planted_difference(seeds: int, effect: str, shift: float, at_least: float) -> None:
    """B's logits + shift on every item (0.3 ~ +4 pp, 0.5 ~ +6 pp accuracy); 200 studies of 500 items."""
    a, b = simulate_paired_eval(200, seeds_a=seeds, seeds_b=seeds, n=500, seed_sd=SEED_SD[effect], shift=shift,
                                seed=seeds)
    r = two_way_t(a, b)
    assert float(np.mean((r["p_value"] <= ALPHA) & (r["observed"] > 0))) >= at_least


def test_permutation_of_seed_labels() -> None:
    # 3 + 3: C(6, 3) = 20 labelings; the observed split is the most extreme one (and its mirror)
    got = permutation_seeds(np.array([0.70, 0.71, 0.72]), np.array([0.80, 0.81, 0.82]))
    assert got["exact"] and got["n_labelings"] == 20 and got["p_value"] == pytest.approx(0.1) == got["min_p"]
    got = permutation_seeds(np.array([0.70, 0.80]), np.array([0.75, 0.76, 0.74]))
    assert got["p_value"] == 1.0 and got["min_p"] == pytest.approx(1 / 10)
    # exact under the null: rate <= alpha (5 + 5, min p 0.008, 200 studies with a 5 pp seed effect)
    a, b = simulate_paired_eval(200, seeds_a=5, seeds_b=5, n=200, seed_sd=SEED_SD["5pp"], seed=3)
    rate = np.mean([permutation_seeds(a[i].mean(axis=1), b[i].mean(axis=1))["p_value"] <= ALPHA for i in range(200)])
    assert rate <= ALPHA + TOL


def test_seed_item_t_test_by_seed_count() -> None:
    a, b = simulate_paired_eval(1, seeds_a=3, seeds_b=3, n=400, seed_sd=0.2, shift=0.3, seed=1)
    res = seed_item_t_test(a[0], b[0])
    ref = two_way_t(a[0], b[0])
    assert res["p_value"] == pytest.approx(float(ref["p_value"])) and res["ci_over"] == "items and seeds"
    assert res["significant"] == (res["lo"] > 0 or res["hi"] < 0) == (res["p_value"] <= ALPHA)
    assert res["permutation"]["n_labelings"] == 20
    assert seed_note(res, ALPHA).startswith("3 + 3 seeds: the exact seed-permutation test cannot reach")
    # one seed per side: McNemar's test, interval over items only
    one = seed_item_t_test(a[0, :1], b[0, :1])
    assert one["p_value"] == mcnemar(a[0, 0], b[0, 0])["p_value"] and one["test"].startswith("McNemar")
    assert one["ci_over"] == "items only (1 seed per side)" and "CI over items only" in seed_note(one, ALPHA)
    # one seed on one side: the paired t-test over items of the seed-mean differences
    mixed = seed_item_t_test(a[0, :1], b[0])
    d = b[0].mean(axis=0) - a[0, 0]
    assert mixed["p_value"] == pytest.approx(ttest_1samp(d, 0.0).pvalue) and mixed["test"] == "item t"
    assert mixed["ci_over"] == "items only (1 seed on side a)"
    # two seeds: a note on the power
    two = seed_item_t_test(a[0, :2], b[0, :2])
    assert "little power" in seed_note(two, ALPHA)
    fa, fb = simulate_paired_eval(1, seeds_a=5, seeds_b=5, n=100, seed_sd=0.2, seed=2)
    assert seed_note(seed_item_t_test(fa[0], fb[0]), ALPHA) is None  # 5 + 5: min permutation p 0.008
    with pytest.raises(SoiError, match="level"):
        seed_item_t_test(a[0], b[0], level=1.0)


def _write_eval(run: Path, key: str, ids: list[str], correct: np.ndarray) -> None:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"example_id": ids, "gold": np.zeros(len(ids), np.int64),
                             "pred": np.zeros(len(ids), np.int64), "p_gold": np.full(len(ids), 0.5),
                             "correct": correct, "language": ["en"] * len(ids)}), run / "eval" / f"{key}.parquet")


def test_eval_set_stats_per_key_and_seed_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ids = [f"t{i}" for i in range(60)]
    runs_a, runs_b = [tmp_path / f"a{s}" for s in (1, 2)], [tmp_path / f"b{s}" for s in (1, 2)]
    ca, cb = rng.random((2, 60)) < 0.6, rng.random((2, 60)) < 0.7
    for s in range(2):
        _write_eval(runs_a[s], "test", ids, ca[s])
        perm = rng.permutation(60)  # B's rows in another order: aligned by example_id
        _write_eval(runs_b[s], "test", [ids[i] for i in perm], cb[s][perm])
        _write_eval(runs_a[s], "only_a", ids, ca[s])
    out = eval_set_stats(runs_a, runs_b, [1, 2], [1, 2], n_boot=200)
    assert list(out) == ["test"]
    e = out["test"]
    assert e["data"] == "test set" and e["n_items"] == 60
    assert e["accuracy_a"]["per_seed"] == pytest.approx(ca.mean(axis=1).tolist())
    assert e["difference"]["observed"] == pytest.approx(cb.mean() - ca.mean())
    assert e["difference"]["p_value"] == pytest.approx(float(two_way_t(ca, cb)["p_value"]))
    assert e["difference"]["ci_over"] == "items and seeds" and "little power" in e["note"]  # 2 + 2 seeds
    assert "significant" not in e["difference"]["bootstrap"] and e["difference"]["bootstrap"]["n_boot"] == 200
    assert [(p["seed_a"], p["seed_b"]) for p in e["mcnemar"]["per_seed"]] == [(1, 1), (2, 2)]
    assert e["mcnemar"]["per_seed"][0]["b"] == int((ca[0] & ~cb[0]).sum())
    assert e["mcnemar"]["combined"]["statistic"] == pytest.approx(clustered_mcnemar(ca, cb)["statistic"])
    # a broken file names itself
    (runs_b[1] / "eval" / "test.parquet").write_text("nope")
    with pytest.raises(SoiError, match=r"test\.parquet"):
        eval_set_stats(runs_a, runs_b, [1, 2], [1, 2])


def test_matched_pairs() -> None:
    assert matched_pairs([1, 2, 3], [3, 1]) == [(0, 1), (2, 0)]
    assert matched_pairs([1, 2], [7, 8, 9]) == [(0, 0), (1, 1)]


def test_identical_seed_accuracies_fall_back_to_items_and_stay_json_finite() -> None:
    # every seed of a side has the same accuracy (tiny sets): the seed part is 0, so the test is over items only
    a = np.array([[1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], bool)
    b = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    res = seed_item_t_test(a, b)
    d = b.mean(axis=0) - a.mean(axis=0)
    assert res["ci_over"] == "items only (no seed-to-seed spread)" and res["test"] == "item t"
    assert res["p_value"] == pytest.approx(ttest_1samp(d, 0.0).pvalue)
    assert "identical accuracies" in seed_note(res, ALPHA)
    same = seed_item_t_test(b, b)  # no difference and no variation at all
    assert same["p_value"] == 1.0 and same["statistic"] is None and not same["significant"]
    assert same["lo"] == same["hi"] == 0.0
    json.dumps(res | {"permutation": None}, allow_nan=False)
    json.dumps(same, allow_nan=False)


def test_ci_labels_say_what_the_interval_covers() -> None:
    assert ci_label("items and seeds") == ci_label(None) == "CI over items and seeds"
    assert ci_label("items only (1 seed per side)") == "1 seed: CI over items only"
    assert ci_label("items only (1 seed on side b)") == "1 seed on side b: CI over items only"
    assert ci_label("items only (no seed-to-seed spread)") == "CI over items only (no seed-to-seed spread)"


def test_findings_and_tables_name_the_test_and_what_the_ci_covers() -> None:
    from soi.study.tables import findings, test_set_rows

    def summary(ci_over: str, test: str) -> dict:
        ts = {"data": "test set", "n_items": 400, "note": None, "accuracy_a": 0.8, "accuracy_b": 0.83,
              "difference": 0.03, "lo": 0.01, "hi": 0.05, "level": 0.95, "significant": True, "p_value": 0.01,
              "test": test, "ci_over": ci_over, "mcnemar_p": 0.001, "mcnemar_p_per_seed": [0.01]}
        return {"comparisons": [{"a": "single", "b": "multi", "seeds": {"a": [0], "b": [0]}, "groups": [],
                                 "test_set": {"sst2": ts}}]}

    [many] = findings(summary("items and seeds", "seeds and items t"))  # type: ignore[arg-type]
    assert "(CI over items and seeds, 95%: +1.0 pp to +5.0 pp; seeds and items t p = 0.01, significant" in many
    assert "item-level McNemar p = 0.001, conditional on these seeds" in many
    [one] = findings(summary("items only (1 seed per side)", "McNemar (chi2)"))  # type: ignore[arg-type]
    assert "(1 seed: CI over items only, 95%: +1.0 pp" in one and "item-level" not in one
    assert "McNemar (chi2) p = 0.01, significant" in one
    [row] = test_set_rows(summary("items and seeds", "seeds and items t"))  # type: ignore[arg-type]
    assert (row["ci_over"], row["p_value"], row["mcnemar_p_item_level"]) == ("items and seeds", 0.01, 0.001)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 4), st.integers(5, 60))
def test_two_way_t_symmetries(seed: int, s_a: int, s_b: int, n: int) -> None:
    """Swapping the sides negates D and keeps p; reordering items or a side's seeds changes nothing."""
    a, b = simulate_paired_eval(1, seeds_a=s_a, seeds_b=s_b, n=n, seed_sd=0.3, shift=0.2, seed=seed)
    a, b = a[0], b[0]
    ref = two_way_t(a, b)
    swapped = two_way_t(b, a)
    assert float(swapped["observed"]) == pytest.approx(-float(ref["observed"]), abs=1e-12)
    for k in ("p_value", "se", "df"):
        assert float(swapped[k]) == pytest.approx(float(ref[k]))
    rng = np.random.default_rng(seed)
    items = rng.permutation(n)
    shuffled = two_way_t(a[rng.permutation(s_a)][:, items], b[rng.permutation(s_b)][:, items])
    for k in ("observed", "p_value", "se", "df"):
        assert float(shuffled[k]) == pytest.approx(float(ref[k]), abs=1e-12)
    assert 0.0 <= float(ref["p_value"]) <= 1.0 and float(ref["df"]) >= 1.0
