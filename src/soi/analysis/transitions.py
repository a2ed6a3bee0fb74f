"""Run-to-run SOI transitions: how each example's category moves from run A to run B.

The SOI picture compares a single-setting run (A) with a multi-setting run (B) trained on the same
examples: a k x k matrix counts the examples that are in category i in A and category j in B, per task /
source / language. Alongside it:

* McNemar's test on final correctness (McNemar, 1947, "Note on the sampling error of the difference
  between correlated proportions or percentages", Psychometrika 12; continuity correction by Edwards,
  1948, "Note on the 'correction for continuity' in testing the significance of the difference between
  correlated proportions", Psychometrika 13);
* a paired bootstrap (Efron & Tibshirani, 1993, "An Introduction to the Bootstrap", ch. 13, percentile
  interval) of the change in each category's share.

Everything is vectorised NumPy / Arrow: no Python loop runs over examples (loops run over groups and
categories only).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from soi._arrow import first_duplicate
from soi.analysis.categories import SOI_CATEGORIES
from soi.errors import SoiError
from soi.store.reader import tag_codes

DEFAULT_GROUP_BY: tuple[str, ...] = ("task", "source", "language")
OVERALL = "all"
"""Key and name of the group holding every shared example."""
EXACT_BELOW = 25
"""McNemar: the exact binomial test is the headline when the discordant count b + c is below this."""
TOP_TRANSITIONS = 5

SeedLike = int | Sequence[int] | np.random.SeedSequence


# --------------------------------------------------------------------------------------------- matrices


def transition_counts(cat_a: np.ndarray, cat_b: np.ndarray, k: int) -> np.ndarray:
    """Transition matrix: ``counts[i, j]`` = number of examples in category i in A and j in B.

    Parameters
    ----------
    cat_a, cat_b : int arrays (n,), paired category codes in ``[0, k)``
    k : number of categories

    Returns
    -------
    int64 array (k, k); ``np.bincount(a * k + b)`` reshaped, so O(n).

    Examples
    --------
    >>> transition_counts(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    array([[1, 1],
           [0, 1]])
    """
    a = np.asarray(cat_a).astype(np.int64, copy=False)
    b = np.asarray(cat_b).astype(np.int64, copy=False)
    if a.shape != b.shape or a.ndim != 1:
        raise SoiError(f"category codes must be two 1-d arrays of equal length, got {a.shape} and {b.shape}")
    if k < 1:
        raise SoiError(f"number of categories must be >= 1, got {k}")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= k):
        raise SoiError(f"category codes must be in [0, {k}); found {min(a.min(), b.min())}.."
                       f"{max(a.max(), b.max())}")
    return np.bincount(a * k + b, minlength=k * k).astype(np.int64).reshape(k, k)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Row shares ``counts[i, j] / counts[i, :].sum()`` (float64).

    A row with zero total (no example in that category in A) is all zeros rather than NaN, so the
    result is always finite; check the row totals to tell "0 %" from "no examples".
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


# ------------------------------------------------------------------------------------------- statistics


def mcnemar(final_a: np.ndarray, final_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test for paired final correctness of runs A and B.

    ``b`` = examples correct in A and wrong in B, ``c`` = wrong in A and correct in B. Under H0 (same
    accuracy) ``b ~ Binomial(b + c, 1/2)``.

    * exact: two-sided binomial p-value ``min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))`` (McNemar, 1947);
    * chi2: ``(|b - c| - 1)^2 / (b + c)`` with Edwards' (1948) continuity correction, 1 degree of freedom.
      When ``b == c`` the corrected difference is clipped at 0 (statistic 0, p = 1) instead of the
      over-correction ``1 / (b + c)`` that statsmodels and R report; otherwise the numbers agree with
      ``statsmodels.stats.contingency_tables.mcnemar(exact=False, correction=True)``.

    The headline ``p_value`` is the exact one when ``b + c < 25`` (the chi-square approximation is poor
    for few discordant pairs), the chi-square one otherwise. With ``b + c == 0`` both p-values are 1.

    Returns
    -------
    dict with ``b``, ``c``, ``n_discordant``, ``exact_p``, ``chi2``, ``chi2_p``, ``method``
    (``"exact"`` or ``"chi2"``), ``p_value`` and ``statistic`` (``min(b, c)`` for exact, as statsmodels).
    """
    a = np.asarray(final_a, dtype=bool)
    bb = np.asarray(final_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise SoiError(f"final correctness must be two 1-d arrays of equal length, "
                       f"got {a.shape} and {bb.shape}")
    from scipy.special import bdtr, chdtrc  # binomial CDF, chi-square survival (lazy: import cost)

    b = int(np.count_nonzero(a & ~bb))
    c = int(np.count_nonzero(~a & bb))
    n = b + c
    if n == 0:
        exact_p, chi2, chi2_p = 1.0, 0.0, 1.0
    else:
        exact_p = float(min(1.0, 2.0 * bdtr(min(b, c), n, 0.5)))
        chi2 = float(max(abs(b - c) - 1, 0) ** 2 / n)
        chi2_p = float(chdtrc(1, chi2))
    method = "exact" if n < EXACT_BELOW else "chi2"
    return {
        "b": b,
        "c": c,
        "n_discordant": n,
        "exact_p": exact_p,
        "chi2": chi2,
        "chi2_p": chi2_p,
        "method": method,
        "statistic": float(min(b, c)) if method == "exact" else chi2,
        "p_value": exact_p if method == "exact" else chi2_p,
    }


def bootstrap_share_change(counts: np.ndarray, n_boot: int = 2000, seed: SeedLike = 0,
                           level: float = 0.95) -> dict[str, np.ndarray]:
    """Paired bootstrap of the change in each category's share, ``share_B - share_A``.

    Resampling the n paired examples with replacement only matters through the resampled transition
    table, and that table is exactly ``Multinomial(n, counts / n)`` over the k*k cells. Drawing it
    directly is equivalent to the example-level bootstrap and costs O(n_boot * k^2) whatever n. The
    interval is the percentile interval (Efron & Tibshirani, 1993, §13.3).

    Parameters
    ----------
    counts : int array (k, k), the observed transition matrix (rows = A, columns = B)
    n_boot : number of bootstrap replicates (>= 1)
    seed : seed for :func:`numpy.random.default_rng`
    level : confidence level in (0, 1)

    Returns
    -------
    dict of float64 arrays (k,): ``observed`` (change of share), ``mean`` (bootstrap mean), ``se``
    (bootstrap standard deviation), ``lo`` / ``hi`` (percentile interval), ``share_a``, ``share_b``, and
    bool ``significant`` (the interval excludes 0). With no example every value is 0 (not significant).
    Identical runs (a diagonal table) give a zero-width interval at 0.
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise SoiError(f"counts must be a square (k, k) matrix, got shape {c.shape}")
    if (c < 0).any():
        raise SoiError("counts must be non-negative")
    if n_boot < 1:
        raise SoiError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise SoiError(f"level must be in (0, 1), got {level}")
    c = c.astype(np.int64)
    k = c.shape[0]
    n = int(c.sum())
    if n == 0:
        zero = np.zeros(k)
        return {"observed": zero, "mean": zero.copy(), "se": zero.copy(), "lo": zero.copy(),
                "hi": zero.copy(), "share_a": zero.copy(), "share_b": zero.copy(),
                "significant": np.zeros(k, bool)}
    share_a = c.sum(axis=1) / n
    share_b = c.sum(axis=0) / n
    observed = share_b - share_a
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, c.ravel() / n, size=n_boot).reshape(n_boot, k, k)
    # column sums minus row sums; exact integers, so identical runs give exactly 0
    change = (draws.sum(axis=1) - draws.sum(axis=2)) / n
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(change, [alpha, 1.0 - alpha], axis=0)
    return {
        "observed": observed,
        "mean": change.mean(axis=0),
        "se": change.std(axis=0),
        "lo": lo,
        "hi": hi,
        "share_a": share_a,
        "share_b": share_b,
        "significant": (lo > 0) | (hi < 0),
    }


def group_seed(seed: int, key: str, group: str) -> list[int]:
    """Per-group seed: the same group gets the same draws whatever other groups are compared."""
    return [int(seed), zlib.crc32(f"{key}={group}".encode())]


# ------------------------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class GroupComparison:
    """Transitions and statistics of one group (``key`` = tag column or ``"all"``, ``group`` = value)."""

    key: str
    group: str
    categories: tuple[str, ...]
    n_shared: int
    n_only_a: int
    n_only_b: int
    counts: np.ndarray
    mcnemar: dict[str, Any]
    accuracy_a: float
    accuracy_b: float
    share_change: dict[str, np.ndarray]
    top_transitions: list[dict[str, Any]]

    @property
    def row_share(self) -> np.ndarray:
        """Row-normalised transition matrix (see :func:`row_normalise`)."""
        return row_normalise(self.counts)

    @property
    def share_a(self) -> np.ndarray:
        return self.share_change["share_a"]

    @property
    def share_b(self) -> np.ndarray:
        return self.share_change["share_b"]

    @property
    def significant(self) -> np.ndarray:
        """Bool (k,): the share-change interval of the category excludes 0."""
        return self.share_change["significant"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (matrices as nested lists, per-category values keyed by name)."""
        cats = self.categories
        sc = self.share_change
        return {
            "key": self.key,
            "group": self.group,
            "n_shared": self.n_shared,
            "n_only_a": self.n_only_a,
            "n_only_b": self.n_only_b,
            "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b,
            "mcnemar": dict(self.mcnemar),
            "counts": self.counts.tolist(),
            "row_share": self.row_share.tolist(),
            "counts_a": dict(zip(cats, self.counts.sum(axis=1).tolist(), strict=True)),
            "counts_b": dict(zip(cats, self.counts.sum(axis=0).tolist(), strict=True)),
            "share_a": dict(zip(cats, self.share_a.tolist(), strict=True)),
            "share_b": dict(zip(cats, self.share_b.tolist(), strict=True)),
            "share_change": {
                name: {"observed": float(sc["observed"][i]), "mean": float(sc["mean"][i]),
                       "se": float(sc["se"][i]), "lo": float(sc["lo"][i]), "hi": float(sc["hi"][i]),
                       "significant": bool(sc["significant"][i])}
                for i, name in enumerate(cats)
            },
            "significant": [name for i, name in enumerate(cats) if sc["significant"][i]],
            "top_transitions": [dict(t) for t in self.top_transitions],
        }


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_tables`: every group's :class:`GroupComparison` and the join counts."""

    categories: tuple[str, ...]
    label_a: str
    label_b: str
    n_a: int
    n_b: int
    n_shared: int
    n_only_a: int
    n_only_b: int
    groups: list[GroupComparison]
    params: dict[str, Any] = field(default_factory=dict)

    def group(self, key: str, name: str | None = None) -> GroupComparison:
        """The group ``key=name`` (``comparison.group("all")`` is the overall one)."""
        name = OVERALL if name is None and key == OVERALL else name
        for g in self.groups:
            if g.key == key and g.group == name:
                return g
        raise SoiError(f"no group {key}={name}; groups: {[f'{g.key}={g.group}' for g in self.groups]}")

    @property
    def overall(self) -> GroupComparison:
        return self.group(OVERALL, OVERALL)

    def long_table(self) -> pa.Table:
        """Long format, one row per (group, from, to): ``group_key, group, from, to, count, row_share``."""
        k = len(self.categories)
        n_groups = len(self.groups)
        cat_dict = pa.array(list(self.categories), pa.string())
        frm = np.tile(np.repeat(np.arange(k, dtype=np.int32), k), n_groups)
        to = np.tile(np.tile(np.arange(k, dtype=np.int32), k), n_groups)
        gidx = np.repeat(np.arange(n_groups, dtype=np.int32), k * k)
        counts = np.concatenate([g.counts.ravel() for g in self.groups] + [np.zeros(0, np.int64)])
        shares = np.concatenate([g.row_share.ravel() for g in self.groups] + [np.zeros(0)])
        keys = pa.array([g.key for g in self.groups], pa.string())
        names = pa.array([g.group for g in self.groups], pa.string())
        return pa.table({
            "group_key": pc.take(keys, pa.array(gidx)),
            "group": pc.take(names, pa.array(gidx)),
            "from": pa.DictionaryArray.from_arrays(pa.array(frm), cat_dict),
            "to": pa.DictionaryArray.from_arrays(pa.array(to), cat_dict),
            "count": pa.array(counts.astype(np.int64)),
            "row_share": pa.array(shares.astype(np.float64)),
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the whole comparison."""
        return {
            "label_a": self.label_a,
            "label_b": self.label_b,
            "categories": list(self.categories),
            "n_a": self.n_a,
            "n_b": self.n_b,
            "n_shared": self.n_shared,
            "n_only_a": self.n_only_a,
            "n_only_b": self.n_only_b,
            "params": dict(self.params),
            "groups": [g.to_dict() for g in self.groups],
        }


def _category_codes(table: pa.Table, column: str, categories: Sequence[str], label: str) -> np.ndarray:
    """Codes of ``column`` as positions in ``categories`` (the table's dictionary order may differ)."""
    if column not in table.column_names:
        raise SoiError(f"run {label}: per-example table has no column {column!r}")
    col = table[column].combine_chunks() if table.num_rows else pa.array([], pa.string())
    if col.null_count:
        raise SoiError(f"run {label}: column {column!r} has {col.null_count} null value(s)")
    value_set = pa.array(list(categories), pa.string())
    if pa.types.is_dictionary(col.type):
        dict_pos = pc.index_in(col.dictionary.cast(pa.string()), value_set=value_set).fill_null(-1)
        indices = col.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        codes = dict_pos.to_numpy(zero_copy_only=False).astype(np.int64)[indices]
    else:
        codes = pc.index_in(col.cast(pa.string()), value_set=value_set).fill_null(-1)
        codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    bad = np.flatnonzero(codes < 0)
    if bad.size:
        raise SoiError(f"run {label}: {bad.size} value(s) of column {column!r} are not categories "
                       f"{list(categories)}, e.g. {col[int(bad[0])].as_py()!r}")
    return codes


def _column(table: pa.Table, name: str, label: str) -> np.ndarray:
    if name not in table.column_names:
        raise SoiError(f"run {label}: per-example table has no column {name!r}")
    col = table[name].combine_chunks() if table.num_rows else pa.array([], table.schema.field(name).type)
    if col.null_count:
        raise SoiError(f"run {label}: column {name!r} has {col.null_count} null value(s)")
    return col.to_numpy(zero_copy_only=False)


def _ids(table: pa.Table, label: str) -> pa.Array:
    if "example_id" not in table.column_names:
        raise SoiError(f"run {label}: per-example table has no column 'example_id'")
    ids = table["example_id"].combine_chunks().cast(pa.string())
    if ids.null_count:
        raise SoiError(f"run {label}: column 'example_id' has {ids.null_count} null value(s)")
    dup = first_duplicate(ids) if len(ids) else None
    if dup is not None:
        raise SoiError(f"run {label}: duplicate example_id {dup!r}")
    return ids


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two code arrays split the examples into the same groups (up to renaming)."""
    if a.size == 0:
        return True
    ua, ub = np.unique(a).size, np.unique(b).size
    if ua != ub:
        return False
    pairs = np.unique(a.astype(np.int64) * (int(b.max()) + 1) + b)
    return pairs.size == ua


def top_transitions(counts: np.ndarray, categories: Sequence[str], limit: int) -> list[dict[str, Any]]:
    k = counts.shape[0]
    n = int(counts.sum())
    off = counts.astype(np.int64).copy()
    off[np.diag_indices(k)] = -1
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[:limit]
    order = order[flat[order] > 0]
    rows = counts.sum(axis=1)
    out = []
    for cell in order:
        i, j = divmod(int(cell), k)
        out.append({"from": categories[i], "to": categories[j], "count": int(counts[i, j]),
                    "share": float(counts[i, j] / n) if n else 0.0,
                    "row_share": float(counts[i, j] / rows[i]) if rows[i] else 0.0})
    return out


def group_selections(table_a: pa.Table, table_b: pa.Table, rows_a: np.ndarray, only_a: np.ndarray,
                     only_b: np.ndarray, group_by: Sequence[str]
                     ) -> tuple[list[tuple[str, str, np.ndarray | None, int, int]], dict[str, str]]:
    """The groups of a comparison: ``(key, name, rows, n_only_a, n_only_b)`` per group, and skipped keys.

    ``rows`` index the shared examples (positions in ``rows_a``; ``None`` for the overall group, which is
    first). Groups take run A's tags; a key that splits run A exactly like an earlier one (source == task,
    one language = all) is skipped and reported in the second value. Only groups with shared examples.
    """
    n_a = table_a.num_rows
    out: list[tuple[str, str, np.ndarray | None, int, int]] = [
        (OVERALL, OVERALL, None, int(only_a.sum()), int(only_b.sum()))]
    skipped: dict[str, str] = {}
    seen_partitions: list[tuple[str, np.ndarray]] = [(OVERALL, np.zeros(n_a, np.int64))]
    for key in group_by:
        if key == OVERALL:
            raise SoiError(f"group key {OVERALL!r} is reserved for the overall group")
        codes_a, names = tag_codes(table_a, key)
        codes_a = codes_a.astype(np.int64)
        shared_codes = codes_a[rows_a]
        same = next((k for k, c in seen_partitions if same_partition(c, codes_a)), None)
        if same is not None:
            skipped[key] = f"same groups as {same!r}"
            continue
        seen_partitions.append((key, codes_a))
        only_a_count = np.bincount(codes_a[only_a], minlength=len(names))
        only_b_count = np.zeros(len(names), np.int64)
        if key in table_b.column_names and only_b.any():
            codes_b, names_b = tag_codes(table_b, key)
            per_b = np.bincount(codes_b.astype(np.int64)[only_b], minlength=len(names_b))
            lookup = {nm: i for i, nm in enumerate(names)}
            for j, nm in enumerate(names_b):  # loop over group names, not examples
                if nm in lookup:
                    only_b_count[lookup[nm]] = per_b[j]
        order = np.argsort(shared_codes, kind="stable")
        bounds = np.searchsorted(shared_codes[order], np.arange(len(names) + 1))
        for g, name in enumerate(names):
            sel = order[bounds[g]:bounds[g + 1]]
            if sel.size:
                out.append((key, name, sel, int(only_a_count[g]), int(only_b_count[g])))
    return out, skipped


def compare_tables(
    table_a: pa.Table,
    table_b: pa.Table,
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    categories: Sequence[str] = SOI_CATEGORIES,
    category_column: str = "soi",
    label_a: str = "A",
    label_b: str = "B",
    top: int = TOP_TRANSITIONS,
) -> Comparison:
    """Compare the per-example tables of two runs on their shared examples.

    Parameters
    ----------
    table_a, table_b : per-example tables (:func:`soi.analysis.analyze_run`), with ``example_id``,
        ``gold``, ``final_correct``, ``category_column`` and the ``group_by`` tag columns (in A)
    group_by : tag columns to group by; groups take run A's tags. The overall group ``all=all`` is
        always first. Only groups with at least one shared example are listed.
    n_boot, seed, level : bootstrap of the share changes (:func:`bootstrap_share_change`); each group's
        generator is seeded from ``(seed, "key=group")``, so a group's interval does not depend on which
        other groups are compared
    categories : category names in display order (codes are positions); the tables' dictionary order
        may differ, but every value must be one of these
    label_a, label_b : run names used in error messages and outputs
    top : number of largest off-diagonal transitions to keep per group

    Returns
    -------
    :class:`Comparison`

    Raises
    ------
    SoiError
        No shared ``example_id``; a gold label differs for a shared example (the runs likely use
        different label orders); missing columns, nulls, duplicate ids or unknown categories.
    """
    categories = tuple(categories)
    k = len(categories)
    if k < 1 or len(set(categories)) != k:
        raise SoiError(f"categories must be non-empty and distinct, got {list(categories)}")
    group_by = tuple(group_by)
    ids_a = _ids(table_a, label_a)
    ids_b = _ids(table_b, label_b)
    pos = pc.index_in(ids_a, value_set=ids_b)  # row of B for each row of A (null when only in A)
    in_b = pos.is_valid().to_numpy(zero_copy_only=False)
    rows_a = np.flatnonzero(in_b)
    rows_b = pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
    n_a, n_b, n_shared = len(ids_a), len(ids_b), int(rows_a.size)
    if n_shared == 0:
        raise SoiError(f"runs {label_a!r} ({n_a} examples) and {label_b!r} ({n_b} examples) share no "
                       f"example_id; compare runs recorded on the same examples")
    gold_a = _column(table_a, "gold", label_a)[rows_a].astype(np.int64)
    gold_b = _column(table_b, "gold", label_b)[rows_b].astype(np.int64)
    diff = np.flatnonzero(gold_a != gold_b)
    if diff.size:
        first = ids_a[int(rows_a[diff[0]])].as_py()
        raise SoiError(f"gold labels differ between {label_a!r} and {label_b!r} for {diff.size} of "
                       f"{n_shared} shared examples (e.g. {first!r}: {gold_a[diff[0]]} vs "
                       f"{gold_b[diff[0]]}); the runs probably use different label orders")
    cat_a = _category_codes(table_a, category_column, categories, label_a)[rows_a]
    cat_b = _category_codes(table_b, category_column, categories, label_b)[rows_b]
    fin_a = _column(table_a, "final_correct", label_a)[rows_a].astype(bool)
    fin_b = _column(table_b, "final_correct", label_b)[rows_b].astype(bool)
    only_a = ~in_b
    in_a_of_b = np.zeros(n_b, bool)
    in_a_of_b[rows_b] = True
    only_b = ~in_a_of_b

    def one(key: str, name: str, sel: np.ndarray | None, n_only_a: int, n_only_b: int) -> GroupComparison:
        ca, cb = (cat_a, cat_b) if sel is None else (cat_a[sel], cat_b[sel])
        fa, fb = (fin_a, fin_b) if sel is None else (fin_a[sel], fin_b[sel])
        counts = transition_counts(ca, cb, k)
        n = int(ca.size)
        return GroupComparison(
            key=key, group=name, categories=categories, n_shared=n, n_only_a=n_only_a, n_only_b=n_only_b,
            counts=counts, mcnemar=mcnemar(fa, fb),
            accuracy_a=float(fa.mean()) if n else 0.0, accuracy_b=float(fb.mean()) if n else 0.0,
            share_change=bootstrap_share_change(counts, n_boot=n_boot, seed=group_seed(seed, key, name),
                                                level=level),
            top_transitions=top_transitions(counts, categories, top),
        )

    selections, skipped = group_selections(table_a, table_b, rows_a, only_a, only_b, group_by)
    groups = [one(key, name, sel, na, nb) for key, name, sel, na, nb in selections]
    params = {"group_by": list(group_by), "skipped_group_by": skipped, "n_boot": int(n_boot), "seed": int(seed),
              "level": float(level),
              "category_column": category_column, "mcnemar_exact_below": EXACT_BELOW}
    return Comparison(categories=categories, label_a=label_a, label_b=label_b, n_a=n_a, n_b=n_b,
                      n_shared=n_shared, n_only_a=int(only_a.sum()), n_only_b=int(only_b.sum()),
                      groups=groups, params=params)
