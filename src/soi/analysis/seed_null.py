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
(min(S_a, S_b) - 1 for runs, G - 1 for buckets) from their variance split pooled over the k x k cells
(one df per group: a cell's own split rests on S - 1 df and made single cells anti-conservative with
strong seed effects), two-sided p-values per cell, Benjamini-Hochberg (1995) q-values over the k x k cells,
and the overall test as the Simes (1986) combination of the cell p-values (it
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
    rows = base[None] + c64 * k  # (R, n): each run's "from" part of the cell index, computed once
    buf = np.empty(c.shape[1], np.int64)
    for p, (i, j) in enumerate(zip(pi.tolist(), pj.tolist(), strict=True)):  # loop over run pairs
        np.add(rows[i], c64[j], out=buf)
        out[p] = np.bincount(buf, minlength=size).reshape(n_strata, n_buckets, k, k)
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


def _row_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of each row of a 2-D array."""
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * m / np.arange(1, m + 1)
    q = np.minimum(np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1], 1.0)
    out = np.empty_like(q)
    np.put_along_axis(out, order, q, axis=1)
    return out


def _row_simes(p: np.ndarray) -> np.ndarray:
    """Simes p-value of each row of a 2-D array."""
    m = p.shape[1]
    return np.minimum(1.0, (np.sort(p, axis=1) * m / np.arange(1, m + 1)).min(axis=1))


def _t_stats(est: np.ndarray, v_runs: np.ndarray, v_ex: np.ndarray, df_runs: int, df_ex: np.ndarray,
             level: float) -> tuple[np.ndarray, ...]:
    """se, df, p, lo, hi of ``est`` (B, ...): t with the Satterthwaite df of the run and example parts,
    their variance split pooled over all entries of a batch member (one df per member)."""
    from scipy.special import stdtr, stdtrit  # Student t CDF and its inverse (lighter than scipy.stats)

    var = v_runs + v_ex
    se = np.sqrt(var)
    axes = tuple(range(1, est.ndim))
    dfe = np.maximum(np.asarray(df_ex, np.float64), 1.0).reshape(-1, *(1,) * len(axes))
    a, b = v_runs.sum(axis=axes, keepdims=True), v_ex.sum(axis=axes, keepdims=True)
    denom = a * a / max(df_runs, 1) + b * b / dfe
    df = np.where(denom > 0, (a + b) ** 2 / np.where(denom > 0, denom, 1.0), float(df_runs))
    df = np.broadcast_to(np.clip(df, np.minimum(df_runs, dfe), df_runs + dfe), est.shape)
    tstat = np.abs(est) / np.where(se > 0, se, 1.0)
    p = np.where(se > 0, 2.0 * stdtr(df, -tstat), 1.0)
    half = stdtrit(df, 0.5 + level / 2.0) * se
    return se, df, p, est - half, est + half


def _side_var(rep: np.ndarray, s_a: int) -> np.ndarray:
    """Two-sample delete-one-run jackknife variance from replicates ``rep`` (R, ...), runs of A first."""
    out = np.zeros(rep.shape[1:])
    for lo_, hi_ in ((0, s_a), (s_a, rep.shape[0])):
        part = rep[lo_:hi_]
        m = part.shape[0]
        out += (m - 1) / m * ((part - part.mean(axis=0)) ** 2).sum(axis=0)
    return out


def _contrast(x: np.ndarray, wb: np.ndarray, ww: np.ndarray) -> np.ndarray:
    """Between minus symmetrised within of pair tensors ``x`` (B, P, ..., k, k), summed over pairs."""
    return np.einsum("bp...,p->b...", x, wb) - _sym(np.einsum("bp...,p->b...", x, ww))


def null_tests(counts: np.ndarray, s_a: int, s_b: int, *, level: float = 0.95) -> dict[str, np.ndarray]:
    """The reseeding-null tests of a batch of groups (or simulated studies) at once.

    ``counts`` int (B, P, G, k, k): :func:`pair_bucket_counts` of each member (runs of A first, every
    member with the same runs); needs >= :data:`MIN_SEEDS_TEST` seeds per setting. Returns arrays with a
    leading B axis: ``excess``, ``se``, ``df``, ``p_value``, ``q_value`` (BH over the k x k cells), ``lo``,
    ``hi`` (k, k each), ``overall_p`` (Simes), and ``change_*`` (share B - share A per category: ``observed``,
    ``se``, ``lo``, ``hi``, ``p``). Degrees of freedom: Satterthwaite (1946) from the run/example variance
    split pooled over the member's cells (see the module docstring).
    """
    t = np.asarray(counts, np.float64)
    if t.ndim != 5:
        raise SoiError(f"counts must be (members, pairs, buckets, k, k), got shape {t.shape}")
    if min(s_a, s_b) < MIN_SEEDS_TEST:
        raise SoiError(f"the reseeding-null tests need >= {MIN_SEEDS_TEST} seeds per setting, got {s_a} + {s_b}")
    r = s_a + s_b
    k = t.shape[-1]
    n_g = t[:, 0].sum(axis=(2, 3))  # (B, G) bucket sizes (the same for every pair)
    n = n_g.sum(axis=1)
    n_safe = np.where(n > 0, n, 1.0)[:, None, None]
    total = t.sum(axis=2)  # (B, P, k, k)
    full = _weights(np.ones(r, bool), s_a)
    assert full is not None  # s_a, s_b >= 2
    wb, ww = full[0], full[1]
    excess = _contrast(total, wb, ww) / n_safe
    reps = []
    for drop in range(r):  # delete each run once: R re-weightings of the pair totals
        active = np.ones(r, bool)
        active[drop] = False
        w = _weights(active, s_a)
        assert w is not None  # s_a, s_b >= 2 keeps a cross pair and a within pair
        reps.append(_contrast(total, w[0], w[1]) / n_safe)
    rep = np.stack(reps)  # (R, B, k, k)
    v_runs = _side_var(rep, s_a)
    # delete-a-bucket jackknife over examples: the contrast is linear, so E_(-g) = (full - bucket g) / n_(-g)
    part = _contrast(t, wb, ww)  # (B, G, k, k)
    keep = n_g > 0
    g = keep.sum(axis=1)
    n_rest = n[:, None] - n_g
    brep = (excess * n_safe)[:, None] - part
    brep = brep / np.where(n_rest > 0, n_rest, 1.0)[:, :, None, None]
    gk = np.maximum(g, 1)[:, None, None]
    kw = keep[:, :, None, None]
    mean = np.where(kw, brep, 0.0).sum(axis=1) / gk

    def bucket_var(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        kx = keep.reshape(keep.shape + (1,) * (x.ndim - 2))
        d = np.where(kx, x - m[:, None], 0.0)
        return np.where((g >= 2).reshape(-1, *(1,) * (x.ndim - 2)),
                        (g - 1).reshape(-1, *(1,) * (x.ndim - 2)) / gk.reshape(-1, *(1,) * (x.ndim - 2))
                        * (d ** 2).sum(axis=1), 0.0)

    v_ex = bucket_var(brep, mean)
    df_runs, df_ex = min(s_a, s_b) - 1, np.maximum(g - 1, 1)
    se, df, p, lo, hi = _t_stats(excess, v_runs, v_ex, df_runs, df_ex, level)
    b_ = p.shape[0]
    q = _row_bh(p.reshape(b_, -1)).reshape(p.shape)
    # share changes: the same linear functional (column sums minus row sums) of every replicate
    change = excess.sum(axis=1) - excess.sum(axis=2)
    v_runs_c = _side_var(rep.sum(axis=2) - rep.sum(axis=3), s_a)
    brep_c = brep.sum(axis=2) - brep.sum(axis=3)
    v_ex_c = bucket_var(brep_c, np.where(keep[:, :, None], brep_c, 0.0).sum(axis=1) / gk[:, :, 0])
    se_c, _, p_c, lo_c, hi_c = _t_stats(change, v_runs_c, v_ex_c, df_runs, df_ex, level)
    return {"excess": excess, "se": se, "df": df, "p_value": p, "q_value": q, "lo": lo, "hi": hi,
            "overall_p": _row_simes(p.reshape(b_, -1)), "change_observed": change, "change_se": se_c,
            "change_lo": lo_c, "change_hi": hi_c, "change_p": p_c, "n": n, "n_seeds": np.array([s_a, s_b]),
            "k": np.array(k)}


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
    n = int(t[0].sum())
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
    res = {key: v[0] for key, v in null_tests(t[None], s_a, s_b, level=level).items() if key not in ("n_seeds", "k")}
    share |= {"se": res["change_se"], "lo": res["change_lo"], "hi": res["change_hi"], "p_value": res["change_p"],
              "significant": res["change_p"] <= 1.0 - level}
    p_all = float(res["overall_p"])
    overall |= {"p_value": p_all, "significant": bool(p_all <= alpha),
                "method": "Simes (1986) combination of the per-cell jackknife t-tests (seeds and examples)",
                "df": float(res["df"][0, 0])}
    if permutation:
        overall["permutation"] = permutation_test(total, s_a, s_b, alpha=alpha, seed=seed)
    return NullResult(n=n, s_a=s_a, s_b=s_b, between=between, within=within, within_a=within_a, within_b=within_b,
                      excess=excess, se=res["se"], df=res["df"], p_value=res["p_value"], q_value=res["q_value"],
                      lo=res["lo"], hi=res["hi"], share_change=share, overall=overall, note=None)


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
