"""The reseeding null: which SOI transitions from setting A to setting B exceed seed-to-seed noise.

Given the category codes of S_a seeds of A and S_b seeds of B on the same n examples:

* **between** = mean over the S_a x S_b seed pairs (A_i, B_j) of the transition matrix (as shares of n);
* **within** = mean over the unordered pairs of different seeds of one setting (A with A, B with B) of the
  symmetrised matrix (T + T') / 2, pooled over both settings; ``within_a`` / ``within_b`` are reported too;
* **excess** = between - within. When both settings are the same process, every run is exchangeable with
  every other, so E[between] = E[within] and the excess has mean exactly 0 in every cell.

Uncertainty (example AND seed sampling): all pair matrices are computed once per (pair, example bucket)
with one ``bincount`` per pair; examples are split at random into ``n_buckets`` buckets. Two
delete-one jackknives re-combine these arrays without touching examples again:

* over runs (the two-sample jackknife of a generalised U-statistic, Arvesen 1969, "Jackknifing
  U-statistics", Ann. Math. Statist. 40): V_runs = sum over settings of (S-1)/S sum_r (E_(-r) - mean)^2;
* over example buckets (the delete-a-group jackknife, Kott 2001, J. Official Statistics 17):
  V_examples = (G-1)/G sum_g (E_(-g) - mean)^2.

se = sqrt(V_runs + V_examples) (both estimate variance components of the same statistic; adding them
double-counts the per-run example noise, which errs on the conservative side), a t reference with the
Welch-Satterthwaite degrees of freedom (Satterthwaite 1946, Biometrics Bulletin 2) of the two parts
(R - 2 for runs, G - 1 for buckets), two-sided p-values per cell, Benjamini-Hochberg (1995) q-values
over the k x k cells, and the overall test as the Simes (1986) combination of the cell p-values (it
rejects exactly when BH flags at least one cell). An exact permutation test of the run labels
(statistic: sum of |excess|) is reported alongside where the labelings allow p <= alpha.
Calibration and power are shown on simulated studies in ``tests/test_seed_null.py`` and
``docs/statistics.md``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from soi.errors import SoiError

MIN_SEEDS_TEST = 3
"""Seeds per setting needed for p-values (fewer: matrices only, and a note)."""
N_BUCKETS = 64
MAX_LABELINGS = 5000
TOO_FEW_NOTE = (f"too few seeds for a valid test of the reseeding null (need >= {MIN_SEEDS_TEST} per setting); "
                "no p-values")


def pairs_of(n_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered run pairs (i < j) in lexicographic order."""
    i, j = np.triu_indices(n_runs, k=1)
    return i.astype(np.int64), j.astype(np.int64)


def example_buckets(n: int, n_buckets: int = N_BUCKETS, seed: int = 0) -> np.ndarray:
    """Random, balanced bucket of each example (a seeded permutation, modulo ``n_buckets``)."""
    if n_buckets < 2:
        raise SoiError(f"n_buckets must be >= 2, got {n_buckets}")
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    out = np.empty(n, np.int64)
    out[perm] = np.arange(n) % n_buckets
    return out


def pair_bucket_counts(codes: np.ndarray, k: int, strata: np.ndarray, n_strata: int,
                       buckets: np.ndarray, n_buckets: int) -> np.ndarray:
    """Transition counts of every unordered run pair per (stratum, bucket): int64 (P, n_strata, G, k, k).

    ``codes`` is (R, n) with runs of A first; one ``bincount`` over n per pair.
    """
    c = np.asarray(codes)
    r = c.shape[0]
    base = (np.asarray(strata, np.int64) * n_buckets + np.asarray(buckets, np.int64)) * (k * k)
    size = n_strata * n_buckets * k * k
    pi, pj = pairs_of(r)
    out = np.empty((pi.size, n_strata, n_buckets, k, k), np.int64)
    c64 = c.astype(np.int64)
    for p, (i, j) in enumerate(zip(pi.tolist(), pj.tolist(), strict=True)):  # loop over run pairs
        out[p] = np.bincount(base + c64[i] * k + c64[j], minlength=size).reshape(n_strata, n_buckets, k, k)
    return out


def _weights(active: np.ndarray, s_a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Pair weights of one configuration of active runs: between, within (pooled), within A, within B."""
    r = active.size
    pi, pj = pairs_of(r)
    both = active[pi] & active[pj]
    cross = both & (pi < s_a) & (pj >= s_a)
    in_a = both & (pj < s_a)
    in_b = both & (pi >= s_a)
    if not cross.any():
        return None
    within = in_a | in_b
    if not within.any():
        return None
    wb = cross / cross.sum()
    ww = within / within.sum()
    wa = in_a / in_a.sum() if in_a.any() else np.zeros(pi.size)
    wbb = in_b / in_b.sum() if in_b.any() else np.zeros(pi.size)
    return wb, ww, wa, wbb


def _sym(t: np.ndarray) -> np.ndarray:
    return 0.5 * (t + np.swapaxes(t, -1, -2))


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values) of a flat array."""
    m = p.size
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) q-values, same shape as ``p_values``."""
    p = np.asarray(p_values, np.float64)
    return _bh(p.ravel()).reshape(p.shape)


def simes(p_values: np.ndarray) -> float:
    """Simes' (1986) global p-value min_i m p_(i) / i (Biometrika 73); <= alpha iff BH rejects something."""
    p = np.sort(np.asarray(p_values, np.float64).ravel())
    return float(min(1.0, (p * p.size / np.arange(1, p.size + 1)).min())) if p.size else 1.0


@dataclass(frozen=True)
class NullResult:
    """Reseeding null of one group (shares of the group's examples; rows = A's category, columns = B's)."""

    n: int
    s_a: int
    s_b: int
    between: np.ndarray
    within: np.ndarray
    within_a: np.ndarray | None
    within_b: np.ndarray | None
    excess: np.ndarray
    se: np.ndarray | None
    df: np.ndarray | None
    p_value: np.ndarray | None
    q_value: np.ndarray | None
    lo: np.ndarray | None
    hi: np.ndarray | None
    share_change: dict[str, np.ndarray]
    overall: dict[str, Any]
    note: str | None


def _t_stats(est: np.ndarray, v_runs: np.ndarray, v_ex: np.ndarray, df_runs: int, df_ex: int,
             level: float) -> tuple[np.ndarray, ...]:
    from scipy.special import stdtr, stdtrit  # Student t CDF and its inverse (lighter than scipy.stats)

    var = v_runs + v_ex
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = (v_runs ** 2) / max(df_runs, 1) + (v_ex ** 2) / max(df_ex, 1)
        df = np.where(denom > 0, var * var / denom, float(df_runs))
        df = np.clip(df, min(df_runs, df_ex), df_runs + df_ex)
        tstat = np.where(se > 0, np.abs(est) / se, 0.0)
    p = np.where(se > 0, 2.0 * stdtr(df, -tstat), 1.0)
    half = stdtrit(df, 0.5 + level / 2.0) * se
    return se, df, p, est - half, est + half


def reseeding_null(counts: np.ndarray, s_a: int, s_b: int, *, alpha: float = 0.05, level: float = 0.95,
                   permutation: bool = True, seed: int = 0) -> NullResult:
    """Between, within and excess transition matrices of one group with tests (see the module docstring).

    Parameters
    ----------
    counts : int (P, G, k, k), :func:`pair_bucket_counts` of this group (runs of A first)
    s_a, s_b : number of seeds of A and of B (R = s_a + s_b runs, P = R (R - 1) / 2)
    alpha : level of the significance flags (BH q <= alpha per cell; interval excludes 0 for shares)
    level : confidence level of the intervals
    permutation : also run the exact run-label permutation test when it can reach p <= alpha
    seed : seed of the random labelings when there are more than :data:`MAX_LABELINGS`
    """
    t = np.asarray(counts, np.float64)
    r = s_a + s_b
    if s_a < 1 or s_b < 1:
        raise SoiError(f"need >= 1 seed per setting, got {s_a} and {s_b}")
    if t.ndim != 4 or t.shape[0] != r * (r - 1) // 2 or t.shape[2] != t.shape[3]:
        raise SoiError(f"counts must be (pairs, buckets, k, k) for {r} runs, got shape {t.shape}")
    k = t.shape[2]
    n_g = t[0].sum(axis=(1, 2))  # bucket sizes (the same for every pair)
    n = int(n_g.sum())
    total = t.sum(axis=1)  # (P, k, k)
    full = _weights(np.ones(r, bool), s_a)
    if full is None or n == 0:
        raise SoiError(f"the reseeding null needs >= 2 seeds in at least one setting and >= 1 example "
                       f"(got {s_a} + {s_b} seeds, {n} examples)")
    wb, ww, wa, wbb = full
    between = np.tensordot(wb, total, axes=1) / n
    within = np.tensordot(ww, _sym(total), axes=1) / n
    within_a = np.tensordot(wa, _sym(total), axes=1) / n if s_a >= 2 else None
    within_b = np.tensordot(wbb, _sym(total), axes=1) / n if s_b >= 2 else None
    excess = between - within
    change = between.sum(axis=0) - between.sum(axis=1)  # share in B minus share in A, per category
    share = {"observed": change, "share_a": between.sum(axis=1), "share_b": between.sum(axis=0)}
    overall: dict[str, Any] = {"statistic": float(0.5 * np.abs(excess).sum()),
                               "statistic_name": "half the sum of |excess| (share of examples moved beyond "
                                                 "reseeding noise)"}
    if min(s_a, s_b) < MIN_SEEDS_TEST:
        share |= {"se": None, "lo": None, "hi": None, "p_value": None,
                  "significant": np.zeros(k, bool)}
        overall |= {"p_value": None, "method": None, "significant": False, "note": TOO_FEW_NOTE}
        return NullResult(n=n, s_a=s_a, s_b=s_b, between=between, within=within, within_a=within_a,
                          within_b=within_b, excess=excess, se=None, df=None, p_value=None, q_value=None, lo=None,
                          hi=None, share_change=share, overall=overall, note=TOO_FEW_NOTE)

    # jackknife over runs: delete each run once (configurations recombine the pair totals)
    reps = []
    for drop in range(r):  # R configurations, each a few (P, k, k) tensor products
        active = np.ones(r, bool)
        active[drop] = False
        w = _weights(active, s_a)
        assert w is not None  # s_a, s_b >= 2 keeps a cross pair and a within pair
        reps.append((np.tensordot(w[0], total, axes=1) - np.tensordot(w[1], _sym(total), axes=1)) / n)
    rep = np.stack(reps)  # (R, k, k)
    v_runs = np.zeros((k, k))
    for lo_, hi_ in ((0, s_a), (s_a, r)):
        part = rep[lo_:hi_]
        m = part.shape[0]
        v_runs += (m - 1) / m * ((part - part.mean(axis=0)) ** 2).sum(axis=0)
    # delete-a-bucket jackknife over examples (non-empty buckets only)
    keep = np.flatnonzero(n_g > 0)
    g = keep.size
    rest = total[:, None] - t[:, keep]  # (P, G', k, k)
    n_rest = n - n_g[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        brep = ((np.tensordot(wb, rest, axes=1) - np.tensordot(ww, _sym(rest), axes=1))
                / np.where(n_rest > 0, n_rest, 1)[:, None, None])
    v_ex = (g - 1) / g * ((brep - brep.mean(axis=0)) ** 2).sum(axis=0) if g >= 2 else np.zeros((k, k))
    df_runs, df_ex = min(s_a, s_b) - 1, max(g - 1, 1)
    se, df, p, lo, hi = _t_stats(excess, v_runs, v_ex, df_runs, df_ex, level)
    q = benjamini_hochberg(p)
    # share changes: the same linear functional of every replicate
    rep_c = rep.sum(axis=1) - rep.sum(axis=2)
    v_runs_c = np.zeros(k)
    for lo_, hi_ in ((0, s_a), (s_a, r)):
        part = rep_c[lo_:hi_]
        m = part.shape[0]
        v_runs_c += (m - 1) / m * ((part - part.mean(axis=0)) ** 2).sum(axis=0)
    brep_c = brep.sum(axis=1) - brep.sum(axis=2)
    v_ex_c = (g - 1) / g * ((brep_c - brep_c.mean(axis=0)) ** 2).sum(axis=0) if g >= 2 else np.zeros(k)
    se_c, _, p_c, lo_c, hi_c = _t_stats(change, v_runs_c, v_ex_c, df_runs, df_ex, level)
    share |= {"se": se_c, "lo": lo_c, "hi": hi_c, "p_value": p_c, "significant": p_c <= 1.0 - level}
    p_all = simes(p)
    overall |= {"p_value": p_all, "significant": bool(p_all <= alpha),
                "method": "Simes (1986) combination of the per-cell jackknife t-tests (seeds and examples)"}
    if permutation:
        overall["permutation"] = permutation_test(total, s_a, s_b, alpha=alpha, seed=seed)
    return NullResult(n=n, s_a=s_a, s_b=s_b, between=between, within=within, within_a=within_a, within_b=within_b,
                      excess=excess, se=se, df=df, p_value=p, q_value=q, lo=lo, hi=hi, share_change=share,
                      overall=overall, note=None)


def permutation_test(total: np.ndarray, s_a: int, s_b: int, *, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Permutation test of the run labels on sum |excess| (exact: every labeling, up to MAX_LABELINGS).

    Under the null every assignment of S_a of the R runs to A is equally likely; p = share of labelings
    whose statistic is >= the observed one (observed included). The smallest reachable p is
    2 / C(R, S_a) (the statistic is symmetric in A and B), e.g. 0.008 for 5 + 5 seeds.
    """
    r = s_a + s_b
    n_lab = math.comb(r, s_a)
    min_p = (2.0 if s_a == s_b else 1.0) / n_lab
    if min_p > alpha:
        return {"p_value": None, "n_labelings": n_lab, "min_p": min_p,
                "note": f"{s_a} + {s_b} seeds allow no permutation p-value <= {alpha}"}
    n = total[0].sum()
    pi, pj = pairs_of(r)
    if n_lab <= MAX_LABELINGS:
        subsets = np.array(list(itertools.combinations(range(r), s_a)), np.int64)
        exact = True
    else:
        rng = np.random.default_rng([int(seed), 11])
        subsets = np.vstack([np.arange(s_a)[None], np.sort(np.argsort(rng.random((MAX_LABELINGS - 1, r)),
                                                                     axis=1)[:, :s_a], axis=1)])
        exact = False
    in_a = np.zeros((subsets.shape[0], r), bool)
    in_a[np.arange(subsets.shape[0])[:, None], subsets] = True
    ai, aj = in_a[:, pi], in_a[:, pj]
    fwd = ai & ~aj  # i in A, j in B: T_ij as is
    bwd = ~ai & aj  # i in B, j in A: transpose
    within = ai == aj
    n_cross = s_a * s_b
    wf, wr = fwd / n_cross, bwd / n_cross
    ww = within / within.sum(axis=1, keepdims=True)
    e = (np.tensordot(wf, total, axes=1) + np.tensordot(wr, np.swapaxes(total, 1, 2), axes=1)
         - np.tensordot(ww, _sym(total), axes=1)) / n
    stat = np.abs(e).sum(axis=(1, 2))
    obs = stat[0]  # the first subset is the observed labeling (runs 0..s_a-1)
    p = float(np.mean(stat >= obs - 1e-12 * max(1.0, obs)))
    return {"p_value": p, "n_labelings": int(subsets.shape[0]), "exact": exact, "min_p": min_p,
            "statistic": float(obs), "method": "permutation of run labels, statistic sum |excess|"}


def cells_list(res: NullResult, categories: tuple[str, ...], alpha: float) -> list[dict[str, Any]]:
    """The ``seed_null.cells`` entries of stats.json (k x k, row-major)."""
    out = []
    k = len(categories)
    for i in range(k):
        for j in range(k):
            tested = res.p_value is not None
            out.append({
                "from": categories[i], "to": categories[j],
                "observed": float(res.between[i, j]), "null": float(res.within[i, j]),
                "excess": float(res.excess[i, j]),
                "se": float(res.se[i, j]) if tested else None,
                "lo": float(res.lo[i, j]) if tested else None,
                "hi": float(res.hi[i, j]) if tested else None,
                "p_value": float(res.p_value[i, j]) if tested else None,
                "q_value": float(res.q_value[i, j]) if tested else None,
                "significant": bool(tested and res.q_value[i, j] <= alpha),
            })
    return out


def null_to_dict(res: NullResult, categories: tuple[str, ...], alpha: float, level: float) -> dict[str, Any]:
    """The per-group ``seed_null`` block of stats.json."""
    def mat(x: np.ndarray | None) -> list[list[float]] | None:
        return None if x is None else np.asarray(x, np.float64).tolist()

    return {
        "data": "training dynamics",
        "n": res.n,
        "n_seeds": {"a": res.s_a, "b": res.s_b},
        "alpha": alpha,
        "level": level,
        "method": ("between-setting minus within-setting transition shares; jackknife over runs (Arvesen 1969) "
                   "plus delete-a-bucket jackknife over examples (Kott 2001), t with Satterthwaite df, "
                   "Benjamini-Hochberg q-values over the cells"),
        "overall": res.overall,
        "between": mat(res.between),
        "within": mat(res.within),
        "within_a": mat(res.within_a),
        "within_b": mat(res.within_b),
        "excess": mat(res.excess),
        "cells": cells_list(res, categories, alpha),
        "significant_cells": [f"{c['from']} -> {c['to']}" for c in cells_list(res, categories, alpha)
                              if c["significant"]],
        "note": res.note,
    }
