"""Paired test-set statistics of two settings with seeds: a seed-aware test of the accuracy difference,
McNemar per seed pair and the item-level clustered McNemar.

Input: each seed's ``eval/<key>.parquet`` (``example_id, gold, pred, p_gold, correct, language``), i.e.
per-item correctness of the trained model on a held-out set -- these tests are on **test data**, unlike
the McNemar of ``soi compare``'s groups, which runs on the final train-pass correctness of the training
examples (training dynamics).

**Headline (>= 2 seeds per side): a t-test over seeds and items** (:func:`seed_item_t_test`). The runs form a
crossed design: seeds nested in the setting, every seed predicting the same n items. The accuracy difference
D = (mean over B's seeds) - (mean over A's seeds) varies with the seeds (a seed's luck is shared by all its
items) and with the items (the item x setting interaction). With Y_kse the correctness of seed s of setting k
on item e, its variance is estimated by the quasi-F denominator of the crossed random-effects ANOVA
(Satterthwaite 1946, Biometrics Bulletin 2; Clark 1973, "The language-as-fixed-effect fallacy", Journal of
Verbal Learning and Verbal Behavior 12 -- subjects there are seeds here):

    V = V_seeds + max(V_items - V_res, 0)
    V_seeds = var(acc_a,s)/S_a + var(acc_b,s)/S_b          (per-seed accuracies; Welch 1947, Biometrika 34)
    V_items = var_e(d_e) / n,  d_e = mean_s Y_be - mean_s Y_ae   (item differences of the seed means)
    V_res   = MS_res,a / (n S_a) + MS_res,b / (n S_b)     (two-way residual mean squares, df (S-1)(n-1))

V_seeds already holds each seed's item-level noise, V_items - V_res is what the item x setting interaction adds
(it is ~0 when the settings differ only by seed luck), and t = D / sqrt(V) is referred to Student's t with
Satterthwaite's degrees of freedom of the linear combination (dominated by the seeds: between S-1 and
S_a + S_b - 2 when the interaction part is small). The interval D +- t_(df, 1-alpha/2) sqrt(V) and the
p-value agree (the interval excludes 0 exactly when p < alpha). The clustered McNemar below treats the items as
the only random unit and is anti-conservative when the seeds of the two settings differ by luck (a seed effect
of 2-5 accuracy points): ``tests/test_paired.py`` measures both.

Alongside, the exact permutation test of the seed labels on the per-seed accuracies (Fisher 1935; conditional on
these items): exact under exchangeable runs without a normality assumption, but it cannot go below
2 / C(2S, S) (0.1 for 3 + 3 seeds, 0.029 for 4 + 4, 0.008 for 5 + 5), hence not the headline.

**One seed on a side:** seed-to-seed variation cannot be estimated. With one seed per side McNemar's test
(:func:`soi.analysis.transitions.mcnemar`; McNemar 1947, exact binomial below 25 discordant items) is the test
and the interval is over items only (``ci_over: "items only (1 seed per side)"``); with one seed on one side
only, the t-test over items of the d_e (conditional on these seeds).

Descriptive figures:

* per seed pair: McNemar's test (exact below 25 discordant items);
* combined over seed pairs: the clustered McNemar test of Durkalski, Palesch, Lipsitz & Rust (2003),
  "Analysis of clustered matched-pair data", Statistics in Medicine 22 -- items are the clusters and the
  seed pairs the matched pairs within a cluster, X^2 = (sum_e D_e)^2 / sum_e D_e^2 with D_e the sum over
  seed pairs of (B correct - A correct) on item e, chi-square with 1 df (it equals McNemar's statistic
  without continuity correction for one seed pair). **Item-level, conditional on these seeds.**
* the two-way percentile bootstrap of D (items resampled with replacement and, independently, each setting's
  seeds; Efron & Tibshirani 1993 ch. 13; Owen 2007, "The pigeonhole bootstrap", Annals of Applied Statistics 1).
  Items are resampled through their distinct correctness patterns over all seeds (exactly equivalent, cheap).
  Resampling 3 seeds with replacement understates their variance by (S-1)/S and uses normal rather than t
  quantiles, so with few seeds it is too narrow (measured in ``docs/statistics.md``); it is reported as
  ``difference.bootstrap`` without a significance flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soi._arrow import first_duplicate, to_numpy
from soi.analysis.transitions import mcnemar
from soi.errors import SoiError

EVAL_DIR = "eval"
EVAL_COLUMNS = ("example_id", "correct")
TEST_DATA = "test set"
TRAINING_DATA = "training dynamics"
CLUSTERED_METHOD = ("item-level clustered McNemar (Durkalski et al., 2003): items as clusters, chi-square 1 df; "
                    "conditional on these seeds")
SEED_T_METHOD = ("t-test over seeds and items: Welch per-seed accuracy variance + item x setting interaction "
                 "(crossed random-effects ANOVA, Satterthwaite df)")
ITEM_T_METHOD = "paired t-test over items of the seed-mean differences (conditional on these seeds)"
MAX_LABELINGS = 5000


def _ddof1_var(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.shape[axis]
    return ((x - x.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis) / (m - 1)


def two_way_t(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, np.ndarray]:
    """The seed-and-item t statistic of the accuracy difference, vectorised over leading axes.

    Parameters
    ----------
    correct_a, correct_b : (..., S_a, n), (..., S_b, n) correctness (bool or 0/1) on the same n items, S >= 2

    Returns
    -------
    dict of arrays over the leading axes: ``observed`` (D), ``v_seeds``, ``v_items`` (V_items - V_res, clipped at
    0), ``se`` (sqrt V), ``df`` (Satterthwaite), ``statistic`` (D / se; 0 where se = 0 and D = 0, +-inf where
    se = 0 < |D|) and ``p_value`` (two-sided, Student t). See the module docstring for the formulas.
    """
    from scipy.special import stdtr

    a = np.asarray(correct_a, np.float64)
    b = np.asarray(correct_b, np.float64)
    s_a, n = a.shape[-2:]
    s_b = b.shape[-2]
    if s_a < 2 or s_b < 2 or b.shape[-1] != n or n < 2:
        raise SoiError(f"the seed-and-item t-test needs >= 2 seeds per side and >= 2 shared items, "
                       f"got {a.shape[-2:]} and {b.shape[-2:]}")
    acc_a, acc_b = a.mean(axis=-1), b.mean(axis=-1)  # (..., S) per-seed accuracies
    observed = acc_b.mean(axis=-1) - acc_a.mean(axis=-1)
    seed_a = _ddof1_var(acc_a, -1) / s_a
    seed_b = _ddof1_var(acc_b, -1) / s_b
    d = b.mean(axis=-2) - a.mean(axis=-2)  # (..., n) item differences of the seed means
    items = _ddof1_var(d, -1) / n

    def ms_res(y: np.ndarray) -> np.ndarray:
        r = (y - y.mean(axis=-1, keepdims=True) - y.mean(axis=-2, keepdims=True)
             + y.mean(axis=(-2, -1), keepdims=True))
        return (r * r).sum(axis=(-2, -1)) / ((y.shape[-2] - 1) * (n - 1))

    res_a, res_b = ms_res(a) / (n * s_a), ms_res(b) / (n * s_b)
    net = items - res_a - res_b
    keep = net > 0
    v_items = np.where(keep, net, 0.0)
    v = seed_a + seed_b + v_items
    # Satterthwaite (1946): df = V^2 / sum_j term_j^2 / df_j over the mean-square terms of V
    den = seed_a ** 2 / (s_a - 1) + seed_b ** 2 / (s_b - 1)
    den = den + np.where(keep, items ** 2 / (n - 1) + (res_a ** 2 / (s_a - 1) + res_b ** 2 / (s_b - 1)) / (n - 1),
                         0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, v * v / np.where(den > 0, den, 1.0), np.inf)
        se = np.sqrt(v)
        stat = np.where(se > 0, observed / np.where(se > 0, se, 1.0),
                        np.where(observed == 0, 0.0, np.sign(observed) * np.inf))
    df = np.maximum(df, 1.0)
    p = np.where(np.isfinite(stat), 2.0 * stdtr(df, -np.abs(np.where(np.isfinite(stat), stat, 0.0))), 0.0)
    return {"observed": observed, "v_seeds": seed_a + seed_b, "v_items": v_items, "se": se, "df": df,
            "statistic": stat, "p_value": np.minimum(p, 1.0)}


def eval_keys(run: Path) -> set[str]:
    """Eval set keys with a per-item prediction file ``run/eval/<key>.parquet``."""
    d = Path(run) / EVAL_DIR
    return {p.stem for p in d.glob("*.parquet") if not p.name.startswith(".")} if d.is_dir() else set()


def read_eval(path: Path) -> tuple[pa.Array, np.ndarray]:
    """``(example_id, correct)`` of one eval prediction file, validated."""
    try:
        table = pq.ParquetFile(path).read()
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet ({exc})", path=path) from None
    for col in EVAL_COLUMNS:
        if col not in table.column_names:
            raise SoiError(f"missing column {col!r}", path=path)
        if table[col].null_count:
            raise SoiError(f"column {col!r} has {table[col].null_count} null value(s)", path=path)
    ids = table["example_id"].combine_chunks().cast(pa.string())
    dup = first_duplicate(ids) if len(ids) else None
    if dup is not None:
        raise SoiError(f"duplicate example_id {dup!r}", path=path)
    return ids, to_numpy(table["correct"]).astype(bool)


def aligned_correct(runs: list[Path], key: str) -> tuple[pa.Array, np.ndarray]:
    """Correctness (S, n) of every seed on one eval set, aligned on the first seed's items."""
    ids0, first = read_eval(Path(runs[0]) / EVAL_DIR / f"{key}.parquet")
    out = np.empty((len(runs), first.size), bool)
    out[0] = first
    for s, run in enumerate(runs[1:], start=1):
        path = Path(run) / EVAL_DIR / f"{key}.parquet"
        ids, corr = read_eval(path)
        pos = pc.index_in(ids0, value_set=ids)
        if len(ids) != len(ids0) or pos.null_count:
            raise SoiError(f"eval items differ from {Path(runs[0]).name}'s {key}.parquet", path=path)
        out[s] = corr[to_numpy(pos).astype(np.int64)]
    return ids0, out


def clustered_mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Clustered McNemar (Durkalski et al., 2003) over matched seed pairs; arrays (P, n) of paired seeds.

    Item-level: the items are the only random unit, so the p-value is conditional on these seeds (it does not
    account for a seed effect shared by all items of a run; see the module docstring)."""
    from scipy.special import chdtrc

    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 2:
        raise SoiError(f"correctness must be two (pairs, items) arrays of equal shape, got {a.shape}, {b.shape}")
    d = b.astype(np.int64).sum(axis=0) - a.astype(np.int64).sum(axis=0)  # per item: B wins minus A wins
    num = float(d.sum())
    den = float((d * d).sum())
    stat = num * num / den if den > 0 else 0.0
    p = float(chdtrc(1, stat)) if den > 0 else 1.0
    return {"statistic": stat, "p_value": p, "n_pairs": int(a.shape[0]), "n_items": int(a.shape[1]),
            "b": int((a & ~b).sum()), "c": int((~a & b).sum()),
            "method": CLUSTERED_METHOD}


def bootstrap_accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000,
                                  seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Accuracy of B minus A (means over seeds) with a bootstrap over items and seeds.

    Parameters
    ----------
    correct_a, correct_b : bool (S_a, n), (S_b, n), correctness of each seed on the same n items
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise SoiError(f"correctness must be (seeds, items) arrays on the same items, got {a.shape}, {b.shape}")
    if n_boot < 1:
        raise SoiError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise SoiError(f"level must be in (0, 1), got {level}")
    s_a, n = a.shape
    s_b = b.shape[0]
    observed = float(b.mean() - a.mean()) if n else 0.0
    if n == 0:
        return {"observed": 0.0, "mean": 0.0, "se": 0.0, "lo": 0.0, "hi": 0.0, "level": level, "n_boot": n_boot,
                "significant": False}
    rng = np.random.default_rng([int(seed), 3])
    # distinct item patterns (correctness over all seeds): a multinomial over patterns resamples items exactly
    both = np.concatenate([a, b]).T  # (n, S_a + S_b)
    patterns, counts = np.unique(both, axis=0, return_counts=True)
    w_items = rng.multinomial(n, counts / n, size=n_boot).astype(np.float64)  # (n_boot, n_patterns)
    per_seed = w_items @ patterns.astype(np.float64) / n  # (n_boot, S_a + S_b) accuracy of each seed
    va = rng.multinomial(s_a, np.full(s_a, 1.0 / s_a), size=n_boot) / s_a
    vb = rng.multinomial(s_b, np.full(s_b, 1.0 / s_b), size=n_boot) / s_b
    diff = (per_seed[:, s_a:] * vb).sum(axis=1) - (per_seed[:, :s_a] * va).sum(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return {"observed": observed, "mean": float(diff.mean()), "se": float(diff.std()), "lo": float(lo),
            "hi": float(hi), "level": level, "n_boot": int(n_boot), "significant": bool(lo > 0 or hi < 0),
            "method": "percentile bootstrap over items and seeds (two-way)"}


def permutation_seeds(acc_a: np.ndarray, acc_b: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Exact permutation test of the seed labels on per-seed accuracies (conditional on the items).

    Statistic |mean(B) - mean(A)| over all C(S_a + S_b, S_a) labelings (a seeded random 5,000 beyond that);
    ``min_p`` is the smallest p-value the labelings can give (2 / C for equal sides, 1 / C otherwise)."""
    from itertools import combinations
    from math import comb

    x = np.concatenate([np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)])
    s_a, total = len(acc_a), len(acc_a) + len(acc_b)
    n_lab = comb(total, s_a)
    exact = n_lab <= MAX_LABELINGS
    if exact:
        idx = np.array(list(combinations(range(total), s_a)), np.int64)
        mask = np.zeros((idx.shape[0], total), bool)
        mask[np.arange(idx.shape[0])[:, None], idx] = True
    else:
        rng = np.random.default_rng([int(seed), 11])
        mask = np.argsort(rng.random((MAX_LABELINGS, total)), axis=1) < s_a
    mean_a = (mask * x).sum(axis=1) / s_a
    mean_b = (~mask * x).sum(axis=1) / (total - s_a)
    stats = np.abs(mean_b - mean_a)
    obs = abs(float(x[s_a:].mean() - x[:s_a].mean()))
    hits = int((stats >= obs - 1e-12).sum())
    p = hits / stats.size if exact else (hits + 1) / (stats.size + 1)
    min_p = (2.0 if s_a == total - s_a else 1.0) / n_lab
    return {"p_value": float(p), "n_labelings": int(n_lab), "exact": bool(exact), "min_p": float(min_p),
            "method": "permutation of the seed labels on per-seed accuracies (conditional on these items)"}


def seed_item_t_test(correct_a: np.ndarray, correct_b: np.ndarray, *, level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """Seed-aware test and interval of the accuracy difference B - A (means over seeds) on the same items.

    >= 2 seeds per side: the t-test over seeds and items (:func:`two_way_t`), with the exact seed-permutation
    p-value alongside. One seed per side: McNemar's test (item-level; the right test for one run pair) with the
    paired t interval over items. One seed on one side: the paired t-test over items of the seed-mean
    differences. ``ci_over`` says which variation the interval covers; ``test`` names the p-value's test.

    Parameters
    ----------
    correct_a, correct_b : bool (S_a, n), (S_b, n), correctness of each seed on the same n items
    """
    from scipy.special import stdtr, stdtrit

    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or 0 in a.shape or 0 in b.shape:
        raise SoiError(f"correctness must be non-empty (seeds, items) arrays on the same items, got {a.shape}, "
                       f"{b.shape}")
    if not 0.0 < level < 1.0:
        raise SoiError(f"level must be in (0, 1), got {level}")
    s_a, n = a.shape
    s_b = b.shape[0]
    alpha = 1.0 - level
    out: dict[str, Any] = {"n_seeds_a": int(s_a), "n_seeds_b": int(s_b), "n_items": int(n), "level": level}
    d = b.mean(axis=0) - a.mean(axis=0)
    observed = float(d.mean())
    item = {"se": float(d.std(ddof=1) / np.sqrt(n)) if n >= 2 else 0.0, "df": float(max(n - 1, 1)),
            "test": "item t", "method": ITEM_T_METHOD}
    if min(s_a, s_b) >= 2 and n >= 2:
        r = {k: float(v) for k, v in two_way_t(a, b).items()}
        out |= {"observed": observed, "se": r["se"], "df": r["df"], "test": "seeds and items t",
                "method": SEED_T_METHOD, "ci_over": "items and seeds",
                "variance": {"seeds": r["v_seeds"], "items": r["v_items"]},
                "permutation": permutation_seeds(a.mean(axis=1), b.mean(axis=1), seed=seed)}
        if r["se"] == 0:  # the seeds' accuracies do not vary (tiny sets): nothing to scale a seed-aware test by
            out |= item | {"ci_over": "items only (no seed-to-seed spread)"}
    elif s_a == s_b == 1:
        m = mcnemar(a[0], b[0])
        out |= item | {"observed": observed, "p_value": float(m["p_value"]), "test": f"McNemar ({m['method']})",
                       "method": "McNemar's test (one run pair; item-level); paired t interval over items",
                       "ci_over": "items only (1 seed per side)"}
    else:
        out |= item | {"observed": observed, "ci_over": f"items only (1 seed on side {'a' if s_a == 1 else 'b'})"}
    se, df = out["se"], out["df"]
    out["statistic"] = observed / se if se > 0 else None
    if "p_value" not in out:
        out["p_value"] = float(min(1.0, 2.0 * stdtr(df, -abs(observed) / se))) if se > 0 else float(observed == 0)
    half = float(stdtrit(df, 1.0 - alpha / 2.0)) * se
    out["lo"], out["hi"] = observed - half, observed + half
    out["significant"] = bool(out["p_value"] <= alpha)
    return out


def ci_label(ci_over: str | None) -> str:
    """How soi prints an interval's ``ci_over``: "CI over items and seeds", "1 seed: CI over items only" (one seed
    per side), "1 seed on side a: CI over items only" or, when the seeds' accuracies do not vary at all, "CI over
    items only (no seed-to-seed spread)"; ``None`` (older stats) reads as items and seeds."""
    if not ci_over or ci_over == "items and seeds":
        return "CI over items and seeds"
    if "per side" in ci_over:
        return "1 seed: CI over items only"
    if "on side" in ci_over:
        return f"1 seed on side {ci_over.rstrip(')')[-1]}: CI over items only"
    return "CI over items only (no seed-to-seed spread)"


def seed_note(test: dict[str, Any], alpha: float) -> str | None:
    """What the seed counts allow the test to say (``None`` when nothing needs saying)."""
    s_a, s_b = test["n_seeds_a"], test["n_seeds_b"]
    if s_a == s_b == 1:
        return ("1 seed per side: CI over items only; McNemar's test is item-level and cannot account for "
                "seed-to-seed variation")
    if min(s_a, s_b) == 1:
        side = "a" if s_a == 1 else "b"
        return (f"1 seed on side {side}: its seed-to-seed variation cannot be estimated; CI and p over items only "
                "(conditional on these seeds)")
    if test.get("ci_over") == "items only (no seed-to-seed spread)":
        return ("the seeds of each side have identical accuracies: no seed-to-seed spread to scale a seed-aware test "
                "by; CI and p over items only (conditional on these seeds)")
    if min(s_a, s_b) == 2:
        return (f"2 seeds on a side: the seed-aware test has {test['df']:.1f} degrees of freedom and little power; "
                "a non-significant result is not evidence of no effect")
    perm = test.get("permutation") or {}
    if perm and perm["min_p"] > alpha:
        return (f"{s_a} + {s_b} seeds: the exact seed-permutation test cannot reach p <= {alpha:g} (min p = "
                f"{perm['min_p']:.2g}); the t-test assumes roughly normal per-seed accuracies")
    return None


def matched_pairs(seeds_a: list[Any], seeds_b: list[Any]) -> list[tuple[int, int]]:
    """Seed pairs (positions): equal seed numbers where the sides share seeds, else by sorted position."""
    common = [s for s in seeds_a if s is not None and s in seeds_b]
    if common:
        return [(seeds_a.index(s), seeds_b.index(s)) for s in common]
    return [(i, i) for i in range(min(len(seeds_a), len(seeds_b)))]


def eval_set_stats(runs_a: list[Path], runs_b: list[Path], seeds_a: list[Any], seeds_b: list[Any], *,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """``stats.json``'s ``test_set``: one entry per eval key present in every seed of both sides.

    ``difference`` is :func:`seed_item_t_test` (its ``p_value``/``significant`` is the flag soi prints) with the
    two-way bootstrap as ``difference.bootstrap`` (descriptive); ``mcnemar`` holds McNemar per seed pair and the
    item-level clustered McNemar (conditional on these seeds)."""
    keys_a = set.intersection(*(eval_keys(r) for r in runs_a)) if runs_a else set()
    keys_b = set.intersection(*(eval_keys(r) for r in runs_b)) if runs_b else set()
    pairs = matched_pairs(list(seeds_a), list(seeds_b))
    out: dict[str, Any] = {}
    for key in sorted(keys_a & keys_b):
        ids_a, ca = aligned_correct(runs_a, key)
        ids_b, cb = aligned_correct(runs_b, key)
        pos = pc.index_in(ids_a, value_set=ids_b)
        rows_a = np.flatnonzero(pos.is_valid().to_numpy(zero_copy_only=False))
        rows_b = to_numpy(pos.filter(pos.is_valid())).astype(np.int64)
        entry: dict[str, Any] = {"data": TEST_DATA, "n_items": int(rows_a.size),
                                 "n_only_a": int(len(ids_a) - rows_a.size), "n_only_b": int(len(ids_b) - rows_a.size),
                                 "seeds": {"a": list(seeds_a), "b": list(seeds_b)}}
        if rows_a.size == 0:
            entry["note"] = "the two sides share no eval item"
            out[key] = entry
            continue
        ca, cb = ca[:, rows_a], cb[:, rows_b]
        entry["accuracy_a"] = {"mean": float(ca.mean()), "per_seed": ca.mean(axis=1).tolist()}
        entry["accuracy_b"] = {"mean": float(cb.mean()), "per_seed": cb.mean(axis=1).tolist()}
        test = seed_item_t_test(ca, cb, level=level, seed=seed)
        boot = bootstrap_accuracy_difference(ca, cb, n_boot=n_boot, seed=seed, level=level)
        test["bootstrap"] = {k: boot[k] for k in ("mean", "se", "lo", "hi", "n_boot", "method")}
        entry["difference"] = test
        per = []
        for i, j in pairs:
            m = mcnemar(ca[i], cb[j])
            per.append({"seed_a": seeds_a[i], "seed_b": seeds_b[j], "accuracy_a": float(ca[i].mean()),
                        "accuracy_b": float(cb[j].mean()), **m})
        pa_idx = [i for i, _ in pairs]
        pb_idx = [j for _, j in pairs]
        entry["mcnemar"] = {"data": TEST_DATA, "per_seed": per,
                            "combined": clustered_mcnemar(ca[pa_idx], cb[pb_idx])}
        note = seed_note(test, 1.0 - level)
        if note:
            entry["note"] = note
        out[key] = entry
    return out
