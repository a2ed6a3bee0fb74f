"""Transfer statistics with intervals: gains over ``k = 0``, group means and their gap, the gap's trend, the
seen-unseen correlation and a plateau estimate, from per-item **test-set** scores of a k-grid study.

The design is that of Shimabucoro et al. (2025, "A Post-trainer's Guide to Multilingual Training Data"): a fixed
English set plus ``k`` examples per *seen* language, *unseen* languages evaluated only. The same functions serve
classification ``k_grid`` studies (items = eval examples, score = correctness).

Input: per language an array ``(K, S, n)`` of per-item scores (``K`` values of ``k`` in grid order, ``S`` training
seeds per ``k``, ``n`` eval items of that language, the same items at every ``k`` and seed). A language's score at
``k`` is the mean over its items and seeds.

Uncertainty: a hierarchical (two-level) percentile bootstrap (Davison & Hinkley 1997, sec. 3.8; Efron & Tibshirani
1993, ch. 13). In every replicate

* each language's items are resampled with replacement **once for all k and seeds** -- so every gain is *paired*
  over items (the k = 0 run and the k run are scored on the same resampled items) -- independently across
  languages;
* at every ``k`` the ``S`` seeds are resampled with replacement, **shared by all languages** (one training run
  produces every language's scores) and independent across ``k`` (different runs).

Every statistic (gains, group means, gap, its slope over k, the correlation, the plateau) is computed on the same
replicates, so joint quantities keep their dependence. Items are multinomial weights on a ``(B, n)`` matrix and seeds
on ``(B, K, S)``: one ``einsum`` per language, no loop over replicates.

Both levels are *expanded* (Hesterberg 2015, "What teachers should know about the bootstrap", The American
Statistician 69, sec. 3.3): deviations are scaled by sqrt(n / (n - 1)) (items around each run's mean) and
sqrt(S / (S - 1)) (seeds around their mean) before resampling, which removes the plain bootstrap's variance bias
(n - 1) / n -- it matters with a few seeds (2/3 with three) and a few dozen items.

``significant`` is "the (``level``) interval excludes 0". Calibration (false-positive rate under a planted null,
power under a planted gain, coverage) is checked on simulated studies in ``tests/test_transfer_stats.py``.
The seen-unseen correlation has an interval but no flag (with a handful of grid points it is descriptive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from soi.errors import SoiError

TEST_DATA = "test set"
METHOD = ("hierarchical percentile bootstrap: items resampled per language (paired across k and seeds), seeds "
          "resampled per k (shared across languages)")
SEED_NOTE = ("one seed per k: the intervals cover item sampling only; seed-to-seed variation is not in them "
             "(run >= 3 seeds)")


def _interval(rep: np.ndarray, observed: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Percentile interval over axis 0 of the replicates (replicates must be finite)."""
    alpha = (1.0 - level) / 2.0
    if rep.shape[0] == 0:
        nan = np.full(np.shape(observed), np.nan)
        return {"mean": np.asarray(observed, float), "lo": nan, "hi": nan}
    lo, hi = np.quantile(rep, [alpha, 1.0 - alpha], axis=0)
    return {"mean": np.asarray(observed, float), "lo": lo, "hi": hi}


def _num(x: Any) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def _ci_dict(ci: Mapping[str, np.ndarray], i: Any = (), *, flag: bool = False) -> dict[str, Any]:
    out = {"mean": _num(ci["mean"][i]), "lo": _num(ci["lo"][i]), "hi": _num(ci["hi"][i])}
    if flag:
        lo, hi = out["lo"], out["hi"]
        out["significant"] = bool(lo is not None and hi is not None and (lo > 0 or hi < 0))
    return out


def bootstrap_scores(scores: Mapping[str, np.ndarray], *, n_boot: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap replicates ``(n_boot, K)`` of every language's score (mean over items and seeds).

    ``scores[lang]`` is ``(K, S, n)``; ``S`` and ``K`` must agree across languages. Seeds are resampled per ``k``
    and shared across languages; items per language, shared across ``k`` and seeds (see the module docstring).
    """
    langs = list(scores)
    k_count, s_count = np.asarray(scores[langs[0]]).shape[:2]
    rng = np.random.default_rng([int(seed), 11])
    if s_count > 1:
        seed_w = rng.multinomial(s_count, np.full(s_count, 1.0 / s_count), size=(n_boot, k_count)) / s_count
    else:
        seed_w = np.ones((n_boot, k_count, 1))
    out = {}
    for lang in langs:
        x = np.asarray(scores[lang], np.float64)
        n = x.shape[2]
        if n > 1:  # expanded bootstrap: item deviations from each run's mean scaled by sqrt(n / (n - 1))
            run_mean = x.mean(axis=2, keepdims=True)
            x = run_mean + np.sqrt(n / (n - 1.0)) * (x - run_mean)
        item_w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n  # (B, n)
        per_seed = np.einsum("bn,ksn->bks", item_w, x)  # (B, K, S) item means of each run
        if s_count > 1:  # the same expansion at the seed level: sqrt(S / (S - 1))
            seed_mean = per_seed.mean(axis=2, keepdims=True)
            per_seed = seed_mean + np.sqrt(s_count / (s_count - 1.0)) * (per_seed - seed_mean)
        out[lang] = (per_seed * seed_w).sum(axis=2)
    return out


def align_items(runs: Mapping[tuple[int, int], tuple[Any, Any, Any]], ks: Sequence[int], seeds: Sequence[int], *,
                what: str = "") -> dict[str, np.ndarray]:
    """Per-item scores ``{language: (K, S, n)}`` (the input of :func:`transfer_statistics`) from every run's items.

    ``runs[(k, seed)]`` is ``(ids, languages, scores)``, three equal-length sequences of one run's eval items in
    any order; items are aligned by id (within a language) on the order of the run ``(ks[0], seeds[0])``. A
    language whose items differ between runs is an error (``what`` prefixes its message, e.g. the task).
    """
    def arrays(k: int, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, langs, vals = runs[k, s]
        return (np.asarray(ids, dtype=str), np.asarray(langs, dtype=str), np.asarray(vals, np.float64))

    ids0, langs0, _ = arrays(ks[0], seeds[0])
    ref = {lang: ids0[langs0 == lang] for lang in dict.fromkeys(langs0.tolist())}
    out = {lang: np.empty((len(ks), len(seeds), want.size)) for lang, want in ref.items()}
    for i, k in enumerate(ks):
        for j, s in enumerate(seeds):
            ids, langs, vals = arrays(k, s)
            for lang, want in ref.items():
                sel = langs == lang
                have, v = ids[sel], vals[sel]
                order = np.argsort(have, kind="stable")
                pos = np.searchsorted(have[order], want)
                if have.size != want.size or np.any(pos >= have.size) or np.any(
                        have[order][np.minimum(pos, max(have.size - 1, 0))] != want):
                    raise SoiError(f"{what}language {lang!r}: the eval items at k={k} seed {s} differ from those at "
                                   f"k={ks[0]} seed {seeds[0]}")
                out[lang][i, j] = v[order][pos]
    return out


def plateau_index(gains: np.ndarray, fraction: float) -> np.ndarray:
    """Index (into the k > 0 columns) of the smallest k whose gain reaches ``fraction`` of the largest gain, per
    row of ``gains`` ``(..., K-1)``; -1 where the largest gain is <= 0 (no gain, no plateau)."""
    g = np.asarray(gains, np.float64)
    gmax = g.max(axis=-1, keepdims=True)
    reach = g >= fraction * gmax
    idx = np.argmax(reach, axis=-1)
    return np.where(gmax[..., 0] > 0, idx, -1)


def _plateau(obs_gain: np.ndarray, rep_gain: np.ndarray, ks: np.ndarray, fraction: float,
             level: float) -> dict[str, Any]:
    """Plateau k (observed) with a percentile interval over the replicates that have a positive gain."""
    pos = ks[1:]
    i_obs = int(plateau_index(obs_gain[None, 1:], fraction)[0])
    i_rep = plateau_index(rep_gain[:, 1:], fraction)
    ok = i_rep >= 0
    alpha = (1.0 - level) / 2.0
    out: dict[str, Any] = {"k": None if i_obs < 0 else int(pos[i_obs]), "fraction": fraction,
                           "share_with_gain": float(ok.mean()), "lo": None, "hi": None}
    if ok.any():
        vals = pos[i_rep[ok]]
        out["lo"] = int(np.quantile(vals, alpha, method="lower"))
        out["hi"] = int(np.quantile(vals, 1.0 - alpha, method="higher"))
    if i_obs < 0:
        out["note"] = "no positive gain at any k > 0"
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of ``y (..., K)`` on ``x (K,)`` along the last axis."""
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / float(xc @ xc)


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (NaN where either side is constant)."""
    ac = a - a.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((ac * ac).sum(-1) * (bc * bc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (ac * bc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _validate(scores: Mapping[str, Any], ks: Sequence[int], seen: Sequence[str], unseen: Sequence[str],
              n_boot: int, level: float, fraction: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    if not scores:
        raise SoiError("transfer statistics need scores for at least one language")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise SoiError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise SoiError(f"level must be in (0, 1), got {level!r}")
    if not 0.0 < fraction <= 1.0:
        raise SoiError(f"plateau fraction must be in (0, 1], got {fraction!r}")
    k_arr = np.asarray(ks, np.int64)
    if k_arr.ndim != 1 or k_arr.size == 0 or k_arr[0] != 0 or np.any(np.diff(k_arr) <= 0):
        raise SoiError(f"transfer statistics need an increasing k grid starting at 0, got {list(ks)}")
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise SoiError(f"languages both seen and unseen: {overlap}")
    missing = [x for x in [*seen, *unseen] if x not in scores]
    if missing:
        raise SoiError(f"transfer statistics: no scores for language(s) {missing}")
    arrays: dict[str, np.ndarray] = {}
    shape = None
    for lang, v in scores.items():
        x = np.asarray(v, np.float64)
        if x.ndim != 3 or x.shape[0] != k_arr.size or x.shape[1] < 1 or x.shape[2] < 1:
            raise SoiError(f"scores of language {lang!r} must be (k={k_arr.size}, seeds, items >= 1), got {x.shape}")
        if shape is not None and x.shape[1] != shape:
            raise SoiError(f"language {lang!r} has {x.shape[1]} seed(s), others {shape}")
        if not np.isfinite(x).all():
            raise SoiError(f"scores of language {lang!r} are not all finite")
        shape = x.shape[1]
        arrays[str(lang)] = x
    return arrays, k_arr


def transfer_statistics(scores: Mapping[str, Any], ks: Sequence[int], *, seen: Sequence[str],
                        unseen: Sequence[str], metric: str = "score", n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95, plateau_fraction: float = 0.9) -> dict[str, Any]:
    """Transfer statistics with bootstrap intervals (the ``summary["transfer_stats"][key]`` schema).

    Parameters
    ----------
    scores : ``{language: (K, S, n) per-item scores}``, the same items at every k and seed
    ks : the k grid (increasing, starting at 0), one entry per first axis of the arrays
    seen, unseen : the language groups (disjoint); other languages (English) get per-language statistics only
    metric : name of the score, for the output
    n_boot, seed : bootstrap replicates (>= 1) and their seed
    level : interval level in (0, 1); ``significant`` = the interval excludes 0
    plateau_fraction : the plateau is the smallest k whose gain reaches this fraction of the largest gain (0.9)

    Returns
    -------
    ``{data: "test set", metric, ks, seen, unseen, level, n_boot, n_seeds, n_items, method, notes,
    languages: {lang: {group, score, gain, plateau}}, groups: {seen|unseen: {score, gain, plateau}},
    gap: {k: {mean, lo, hi, significant}}, gap_slope: {per_100, lo, hi, significant},
    correlation: {r, lo, hi, n_points, n_valid}}``; ``score``/``gain`` are ``{k: {mean, lo, hi[, significant]}}``
    with string keys.
    """
    arrays, k_arr = _validate(scores, ks, seen, unseen, n_boot, level, plateau_fraction)
    n_seeds = next(iter(arrays.values())).shape[1]
    rep = bootstrap_scores(arrays, n_boot=n_boot, seed=seed)
    obs = {lang: x.mean(axis=(1, 2)) for lang, x in arrays.items()}
    keys = [str(int(k)) for k in k_arr]
    notes = [] if n_seeds > 1 else [SEED_NOTE]

    def block(o: np.ndarray, r: np.ndarray) -> dict[str, Any]:
        score = _interval(r, o, level)
        gain = _interval(r - r[:, :1], o - o[0], level)
        return {"score": {k: _ci_dict(score, i) for i, k in enumerate(keys)},
                "gain": {k: _ci_dict(gain, i, flag=i > 0) for i, k in enumerate(keys)},
                "plateau": (_plateau(o - o[0], r - r[:, :1], k_arr, plateau_fraction, level)
                            if k_arr.size > 1 else None)}

    languages = {}
    for lang in arrays:
        group = "seen" if lang in seen else "unseen" if lang in unseen else "other"
        languages[lang] = {"group": group, **block(obs[lang], rep[lang])}
    groups: dict[str, Any] = {}
    group_obs: dict[str, np.ndarray] = {}
    group_rep: dict[str, np.ndarray] = {}
    for name, members in (("seen", seen), ("unseen", unseen)):
        if members:
            group_obs[name] = np.mean([obs[x] for x in members], axis=0)
            group_rep[name] = np.mean([rep[x] for x in members], axis=0)
            groups[name] = {"languages": list(members), **block(group_obs[name], group_rep[name])}
    out: dict[str, Any] = {"data": TEST_DATA, "metric": metric, "ks": [int(k) for k in k_arr], "seen": list(seen),
                           "unseen": list(unseen), "level": level, "n_boot": n_boot, "n_seeds": int(n_seeds),
                           "n_items": {lang: int(x.shape[2]) for lang, x in arrays.items()}, "method": METHOD,
                           "languages": languages, "groups": groups, "gap": None, "gap_slope": None,
                           "correlation": None, "notes": notes}
    if "seen" in groups and "unseen" in groups:
        gap_o = group_obs["seen"] - group_obs["unseen"]
        gap_r = group_rep["seen"] - group_rep["unseen"]
        gap = _interval(gap_r, gap_o, level)
        out["gap"] = {k: _ci_dict(gap, i, flag=True) for i, k in enumerate(keys)}
        if k_arr.size >= 2:
            x = k_arr.astype(np.float64)
            sl = _interval(100.0 * _slope(x, gap_r), 100.0 * _slope(x, gap_o), level)
            out["gap_slope"] = {"per_100": _num(sl["mean"]), **_ci_dict(sl, flag=True),
                                "method": "OLS slope of the gap over k (per 100 examples per seen language)"}
            del out["gap_slope"]["mean"]
        if k_arr.size >= 3:
            r_obs = float(_corr(group_obs["seen"], group_obs["unseen"]))
            r_rep = _corr(group_rep["seen"], group_rep["unseen"])
            valid = r_rep[np.isfinite(r_rep)]
            ci = _interval(valid, np.asarray(r_obs), level)
            out["correlation"] = {"r": _num(r_obs), "lo": _num(ci["lo"]), "hi": _num(ci["hi"]),
                                  "n_points": int(k_arr.size), "n_valid": int(valid.size),
                                  "method": "Pearson r of the seen and unseen means over the k grid"}
        else:
            notes.append("correlation needs >= 3 values of k")
    return out

