"""Paired test-set statistics: clustered McNemar, the two-way bootstrap of the accuracy difference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from soi.analysis.paired import (
    bootstrap_accuracy_difference,
    clustered_mcnemar,
    eval_set_stats,
    matched_pairs,
)
from soi.errors import SoiError

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


def _null_study(seed: int, s: int, n: int, run_effect: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 5])
    difficulty = rng.normal(0, 1.5, n)

    def side() -> np.ndarray:
        u = rng.normal(0, run_effect, (s, 1))
        return rng.random((s, n)) < 1 / (1 + np.exp(-(1.0 + u - difficulty)))

    return side(), side()


@pytest.mark.parametrize(("s", "run_effect"), [(1, 0.0), (3, 0.0), (5, 0.1)])
def test_bootstrap_interval_calibrated_on_null_studies(s: int, run_effect: float) -> None:
    """Both settings the same process: the interval excludes 0 in <= alpha of 200 studies (+ TOL)."""
    hits = 0
    for study in range(N_STUDIES):
        a, b = _null_study(study, s, 400, run_effect)
        hits += bootstrap_accuracy_difference(a, b, n_boot=400, seed=study)["significant"]
    assert hits / N_STUDIES <= ALPHA + TOL


def test_bootstrap_power_on_a_real_difference() -> None:
    found = 0
    for study in range(20):
        a, _ = _null_study(study, 3, 400, 0.1)
        rng = np.random.default_rng(study)
        b = a | (rng.random(a.shape) < 0.3)  # B fixes 30% of the errors (~ +12 pp)
        found += bootstrap_accuracy_difference(a, b, n_boot=400, seed=study)["significant"]
    assert found >= 18


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
