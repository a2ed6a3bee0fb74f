"""Transfer statistics with intervals (soi.analysis.transfer): hand-computed cases, the bootstrap's variance,
pairing, and calibration on simulated k-grid studies (false-positive rate under a planted null, power under a
planted gain, interval coverage)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from soi.analysis.transfer import bootstrap_scores, plateau_index, transfer_statistics
from soi.errors import SoiError
from soi.simulate import simulate_transfer_study

KS = [0, 16, 64]
SEEN, UNSEEN = ["es"], ["de"]


def constant_runs(values: list[float], n: int = 5, s: int = 1) -> np.ndarray:
    """(K, S, n) where every item of the run at k scores values[k]."""
    return np.broadcast_to(np.asarray(values, float)[:, None, None], (len(values), s, n)).copy()


def test_observed_values_by_hand() -> None:
    x = {"en": constant_runs([0.5, 0.5, 0.5]), "es": constant_runs([0.2, 0.4, 0.5]),
         "de": constant_runs([0.1, 0.1, 0.3])}
    st = transfer_statistics(x, KS, seen=SEEN, unseen=UNSEEN, n_boot=50)
    assert st["data"] == "test set"
    es = st["languages"]["es"]
    assert es["score"]["16"]["mean"] == pytest.approx(0.4)
    assert es["gain"]["64"]["mean"] == pytest.approx(0.3)
    # items are constant within a run: every replicate equals the observed value, the interval is a point
    assert es["gain"]["64"]["lo"] == pytest.approx(0.3) and es["gain"]["64"]["hi"] == pytest.approx(0.3)
    assert es["gain"]["16"]["significant"] and "significant" not in es["gain"]["0"]
    assert not st["languages"]["en"]["gain"]["64"]["significant"]  # 0 gain, point interval at 0
    # gap = seen - unseen: 0.1, 0.3, 0.2; OLS slope over k = (sum (k - kbar)(g - gbar)) / sum (k - kbar)^2
    k = np.array(KS, float)
    g = np.array([0.1, 0.3, 0.2])
    slope = ((k - k.mean()) * (g - g.mean())).sum() / ((k - k.mean()) ** 2).sum()
    assert st["gap"]["16"]["mean"] == pytest.approx(0.3)
    assert st["gap_slope"]["per_100"] == pytest.approx(100 * slope)
    assert st["correlation"]["r"] == pytest.approx(np.corrcoef([0.2, 0.4, 0.5], [0.1, 0.1, 0.3])[0, 1])
    # plateau: gains 0.2 (k=16), 0.3 (k=64); 90% of 0.3 = 0.27 -> k=64
    assert es["plateau"]["k"] == 64 and es["plateau"]["lo"] == 64 and es["plateau"]["hi"] == 64
    assert st["languages"]["en"]["plateau"]["k"] is None
    assert st["notes"]  # one seed: the note says seed noise is not in the intervals


def test_plateau_index_by_hand() -> None:
    gains = np.array([[0.1, 0.3, 0.28], [0.3, 0.2, 0.1], [-0.1, 0.0, -0.2], [0.05, 0.2, 0.181]])
    assert plateau_index(gains, 0.9).tolist() == [1, 0, -1, 1]
    assert plateau_index(gains, 0.5).tolist() == [1, 0, -1, 1]
    assert plateau_index(np.array([[0.1, 0.3, 0.28]]), 0.3).tolist() == [1 - 1]


def test_gain_is_paired_over_items() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(30)
    x = np.stack([base, base + 0.1, base + 0.2])[:, None, :]  # every item +0.1 per step: gains exact
    st = transfer_statistics({"es": x, "de": x.copy()}, KS, seen=SEEN, unseen=UNSEEN, n_boot=200)
    g = st["languages"]["es"]["gain"]["16"]
    assert g["lo"] == pytest.approx(0.1) and g["hi"] == pytest.approx(0.1)
    assert st["languages"]["es"]["score"]["16"]["hi"] - st["languages"]["es"]["score"]["16"]["lo"] > 0.1


def test_bootstrap_variance_is_unbiased() -> None:
    """Expanded bootstrap: the replicate variance of a language's score equals s^2 / n (items, ddof 1) plus the
    seed level's s^2 / S -- here items only (S = 1) and seeds only (identical items)."""
    rng = np.random.default_rng(1)
    n = 12
    x = rng.random(n)[None, None, :]
    rep = bootstrap_scores({"a": x}, n_boot=40_000, seed=3)["a"][:, 0]
    assert rep.var() == pytest.approx(x.var(ddof=1) / n, rel=0.03)
    s_vals = np.array([0.1, 0.4, 0.3])
    y = np.broadcast_to(s_vals[None, :, None], (1, 3, 8)).copy()  # three seeds, items constant within a run
    rep = bootstrap_scores({"a": y}, n_boot=40_000, seed=4)["a"][:, 0]
    assert rep.var() == pytest.approx(s_vals.var(ddof=1) / 3, rel=0.03)


def test_seeds_are_shared_across_languages() -> None:
    """One training run scores every language: a seed effect common to both groups cancels in the gap."""
    rng = np.random.default_rng(2)
    seed_effect = rng.normal(0, 0.2, (3, 4))  # (K, S)
    es = np.broadcast_to(0.5 + seed_effect[:, :, None], (3, 4, 20)).copy()
    de = es - 0.05
    st = transfer_statistics({"es": es, "de": de}, KS, seen=SEEN, unseen=UNSEEN, n_boot=500)
    for k in ("0", "16", "64"):
        assert st["gap"][k]["lo"] == pytest.approx(0.05) and st["gap"][k]["hi"] == pytest.approx(0.05)
    # while the seen score itself varies with the seeds
    assert st["groups"]["seen"]["score"]["16"]["hi"] - st["groups"]["seen"]["score"]["16"]["lo"] > 0.05
    assert st["notes"] == []


def simulate(rng: np.random.Generator, n_studies: int, *, n: int, seeds: int, gain: float, seed_sd: float
             ) -> list[dict[str, np.ndarray]]:
    """``n_studies`` k-grid studies of :func:`soi.simulate.simulate_transfer_study` (planted gain on ``es``)."""
    return [simulate_transfer_study(rng, KS, n=n, seeds=seeds, gain=gain, seed_sd=seed_sd) for _ in range(n_studies)]


ALPHA = 0.05
N_NULL = 240
MC_TOL = 3 * np.sqrt(ALPHA * (1 - ALPHA) / N_NULL)  # 3 Monte-Carlo standard errors of a rate of 0.05: 0.042


@pytest.mark.parametrize(("seeds", "seed_sd"), [(1, 0.0), (3, 0.5)])
def test_false_positive_rate_under_null(seeds: int, seed_sd: float) -> None:
    """No planted gain: each flag (gain at k=16 of the seen language, the gap at k=64, the gap's slope) fires in
    <= alpha + 3 MC se of 240 simulated studies (40 items per language)."""
    rng = np.random.default_rng(10 + seeds)
    hits = np.zeros(3)
    for i, study in enumerate(simulate(rng, N_NULL, n=40, seeds=seeds, gain=0.0, seed_sd=seed_sd)):
        st = transfer_statistics(study, KS, seen=SEEN, unseen=UNSEEN, n_boot=300, seed=i)
        hits += [st["languages"]["es"]["gain"]["16"]["significant"], st["languages"]["de"]["gain"]["64"][
            "significant"], st["gap_slope"]["significant"]]
    rates = hits / N_NULL
    assert np.all(rates <= ALPHA + MC_TOL), rates


def test_power_on_a_planted_gain() -> None:
    """A planted gain of +2 logits (about +0.3 in accuracy) on the seen language, 40 items, 3 seeds: the gain is
    flagged in >= 80% of 60 studies, the gap's slope too, the unseen language's (null) gain rarely."""
    rng = np.random.default_rng(20)
    n = 60
    hits = np.zeros(3)
    for i, study in enumerate(simulate(rng, n, n=40, seeds=3, gain=2.0, seed_sd=0.3)):
        st = transfer_statistics(study, KS, seen=SEEN, unseen=UNSEEN, n_boot=300, seed=i)
        hits += [st["languages"]["es"]["gain"]["64"]["significant"], st["gap"]["64"]["significant"],
                 st["languages"]["de"]["gain"]["64"]["significant"]]
    assert hits[0] / n >= 0.8 and hits[1] / n >= 0.5 and hits[2] / n <= 0.2, hits / n


def test_interval_coverage() -> None:
    """Score intervals of a language with known true mean (items drawn from a fixed Beta(2, 3) population,
    mean 0.4, scores Bernoulli): the 95% interval covers 0.4 in >= 95% - 3 MC se of 240 studies."""
    rng = np.random.default_rng(30)
    cover = 0
    for i in range(N_NULL):
        p = rng.beta(2, 3, 50)
        x = (rng.random((3, 1, 50)) < p).astype(float)
        st = transfer_statistics({"es": x}, KS, seen=["es"], unseen=[], n_boot=300, seed=i)
        s = st["languages"]["es"]["score"]["0"]
        cover += s["lo"] <= 0.4 <= s["hi"]
    assert cover / N_NULL >= 0.95 - MC_TOL


def test_bad_input_one_line_errors() -> None:
    x = constant_runs([0.1, 0.2, 0.3])
    cases = [
        (dict(scores={"es": x, "de": x}, ks=[0, 16, 64], seen=["es"], unseen=["es"]), "both seen and unseen"),
        (dict(scores={"es": x}, ks=[16, 0, 64], seen=["es"], unseen=[]), "increasing k grid"),
        (dict(scores={"es": x}, ks=[0, 16], seen=["es"], unseen=[]), "must be (k=2"),
        (dict(scores={"es": x}, ks=KS, seen=["es"], unseen=["de"]), "no scores for language"),
        (dict(scores={"es": x, "de": constant_runs([0.1, 0.2, 0.3], s=2)}, ks=KS, seen=["es"], unseen=["de"]),
         "seed(s)"),
        (dict(scores={"es": x * np.nan}, ks=KS, seen=["es"], unseen=[]), "not all finite"),
        (dict(scores={}, ks=KS, seen=[], unseen=[]), "at least one language"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(SoiError, match=re.escape(msg)) as exc:
            transfer_statistics(**kwargs)
        assert "\n" not in str(exc.value)
    for bad in ({"n_boot": 0}, {"level": 1.0}, {"plateau_fraction": 0.0}):
        with pytest.raises(SoiError):
            transfer_statistics({"es": x}, KS, seen=["es"], unseen=[], **bad)
