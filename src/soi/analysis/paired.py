"""Paired test-set statistics of two settings with seeds: McNemar per seed pair and over seeds, and a
bootstrap CI (items and seeds) of the accuracy difference.

Input: each seed's ``eval/<key>.parquet`` (``example_id, gold, pred, p_gold, correct, language``), i.e.
per-item correctness of the trained model on a held-out set -- these tests are on **test data**, unlike
the McNemar of ``soi compare``'s groups, which runs on the final train-pass correctness of the training
examples (training dynamics).

* per seed pair: McNemar's test (:func:`soi.analysis.transitions.mcnemar`; McNemar 1947, exact binomial
  below 25 discordant items);
* combined over seed pairs: the clustered McNemar test of Durkalski, Palesch, Lipsitz & Rust (2003),
  "Analysis of clustered matched-pair data", Statistics in Medicine 22 -- items are the clusters and the
  seed pairs the matched pairs within a cluster, X^2 = (sum_e D_e)^2 / sum_e D_e^2 with D_e the sum over
  seed pairs of (B correct - A correct) on item e, chi-square with 1 df (it equals McNemar's statistic
  without continuity correction for one seed pair);
* the accuracy difference (mean over B's seeds minus mean over A's seeds) with a two-way bootstrap
  percentile interval: items resampled with replacement and, independently, each setting's seeds
  (Efron & Tibshirani 1993 ch. 13; resampling both ways of a crossed design: Owen 2007, "The pigeonhole
  bootstrap", Annals of Applied Statistics 1). Items are resampled through their distinct correctness
  patterns over all seeds (exactly equivalent, and cheap).
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
    """Clustered McNemar (Durkalski et al., 2003) over matched seed pairs; arrays (P, n) of paired seeds."""
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
            "method": "clustered McNemar (Durkalski et al., 2003), items as clusters, chi-square 1 df"}


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


def matched_pairs(seeds_a: list[Any], seeds_b: list[Any]) -> list[tuple[int, int]]:
    """Seed pairs (positions): equal seed numbers where the sides share seeds, else by sorted position."""
    common = [s for s in seeds_a if s is not None and s in seeds_b]
    if common:
        return [(seeds_a.index(s), seeds_b.index(s)) for s in common]
    return [(i, i) for i in range(min(len(seeds_a), len(seeds_b)))]


def eval_set_stats(runs_a: list[Path], runs_b: list[Path], seeds_a: list[Any], seeds_b: list[Any], *,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """``stats.json``'s ``test_set``: one entry per eval key present in every seed of both sides."""
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
        entry["difference"] = bootstrap_accuracy_difference(ca, cb, n_boot=n_boot, seed=seed, level=level)
        per = []
        for i, j in pairs:
            m = mcnemar(ca[i], cb[j])
            per.append({"seed_a": seeds_a[i], "seed_b": seeds_b[j], "accuracy_a": float(ca[i].mean()),
                        "accuracy_b": float(cb[j].mean()), **m})
        pa_idx = [i for i, _ in pairs]
        pb_idx = [j for _, j in pairs]
        entry["mcnemar"] = {"data": TEST_DATA, "per_seed": per,
                            "combined": clustered_mcnemar(ca[pa_idx], cb[pb_idx])}
        if len(pairs) < 2:
            entry["note"] = "one seed pair: the test cannot account for seed-to-seed variation"
        out[key] = entry
    return out
