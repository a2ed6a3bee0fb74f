"""Data selection from a per-example table: SOI categories, expression filters, top/bottom by a metric.

Used for two-stage fine-tuning (stage 2 trains on an SOI-selected subset) and for the cartography-style
subsets of Swayamdipta et al. (2020, "Dataset Cartography", EMNLP): e.g. the 33% most *ambiguous*
examples (``metric="variability", top=0.33``), the *hard-to-learn* ones (``metric="confidence",
bottom=0.33``) or the *easy-to-learn* ones (``metric="confidence", top=0.33``).

The steps of :func:`select` run in a fixed order, each on the pool left by the one before:

0. ``min_stability`` -- (seed consensus tables) keep rows whose ``soi_stability`` (share of seeds in the
   modal category, :mod:`soi.analysis.seeds`) is at least this;
1. ``categories`` -- keep rows whose category (column ``category_column``, default ``soi``) is listed;
2. ``where`` -- keep rows where the expression (:mod:`soi.analysis.expr`) is true;
3. ``metric`` + ``top``/``bottom`` -- keep the highest/lowest rows by ``metric`` (rows whose metric is
   missing/NaN are dropped first);
4. ``sample`` -- keep a seeded random subsample.

Steps 3 and 4 run within each group of ``per_group`` (task, source or language) when it is given.

Amounts (``top``, ``bottom``, ``sample``) are a fraction in (0, 1) or an integer count >= 1. A fraction
``f`` of a pool of ``n`` rows keeps ``floor(f * n + 0.5)`` rows (round half up), but at least 1 when
``n > 0``; a count keeps ``min(count, n)`` rows. With ``per_group`` the pool is each group.

Ties in the metric are broken by a random permutation of the example ids drawn from ``seed``, and the
sample is drawn the same way (another stream of the same seed), so a result depends only on the rows,
the rule and the seed -- not on the input row order. The selected rows come back in ``idx`` order
(the original row order when the table has no ``idx`` column).

Examples
--------
>>> table = analyze_run("runs/sst2", write=False).table                          # doctest: +SKIP
>>> ambiguous = select(table, metric="variability", top=0.33)                     # doctest: +SKIP
>>> stage2 = select(table, categories=["forgettable_lost", "learned_late"], per_group="task",
...                 metric="confidence", bottom=5000, seed=1)                     # doctest: +SKIP
>>> save(stage2, "runs/sst2/selection-stage2")                                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soi import __version__
from soi._io import TMP_PREFIX, atomic_path
from soi.analysis import expr
from soi.errors import SoiError
from soi.store.writer import TAG_COLUMNS

GROUP_KEYS = TAG_COLUMNS
"""Columns ``per_group`` may name."""

IDS_FILE = "selected_ids.txt"
ROWS_FILE = "selected.parquet"
PROVENANCE_FILE = "selection.json"

Amount = int | float
"""A fraction in (0, 1) or an integer count >= 1."""

_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?%?$")


@dataclass(frozen=True, eq=False)
class Selection:
    """Result of :func:`select`.

    Attributes
    ----------
    ids : object ndarray of str, shape (n,)
        ``example_id`` of the selected rows, in ``idx`` order.
    rows : pyarrow.Table
        The selected rows (all columns of the input table), same order as ``ids``.
    provenance : dict
        JSON-serialisable record of the rule, seed, pool size after each step, counts per category and
        group of the selection, soi version, timestamp, source run and warnings (``"warnings"``; an empty
        selection is flagged there).
    """

    ids: np.ndarray
    rows: pa.Table
    provenance: dict[str, Any]

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_dataset(self, *, with_text: bool = True) -> Any:
        """The selected rows as a ``datasets.Dataset``; the provenance is JSON in ``info.description``.

        With ``with_text`` and a source run whose ``examples.parquet`` has text, ``text`` / ``text_pair`` are
        joined on ``example_id``. Dictionary columns (task, source, language, soi) become strings.
        """
        from soi.data.split import hf_dataset

        rows = self.rows
        source = self.provenance.get("source_run")
        examples = Path(source) / "examples.parquet" if source else None
        if with_text and examples is not None and examples.is_file() and "text" not in rows.column_names:
            ex = pq.read_table(examples, columns=[c for c in ("example_id", "text", "text_pair")
                                                  if c in pq.read_schema(examples).names])
            at = pc.index_in(rows.column("example_id").cast(pa.string()),
                             value_set=ex.column("example_id").cast(pa.string()).combine_chunks())
            for col in ("text", "text_pair"):
                if col in ex.column_names:
                    rows = rows.append_column(col, pc.take(ex.column(col), at))
        return hf_dataset(rows, provenance={"soi": "selection", **self.provenance})


# --------------------------------------------------------------------------------------------- amounts
def parse_amount(value: Amount | str | None, field: str) -> Amount | None:
    """Validate an amount: a fraction in (0, 1) or an integer count >= 1.

    Strings (as given on the command line) are parsed: ``"0.33"`` and ``"33%"`` are fractions,
    ``"5000"`` is a count. Floats are always fractions, so ``1.0`` is rejected (use ``1`` for one row).

    Raises
    ------
    SoiError
        Naming ``field`` when the value is neither.
    """
    if value is None:
        return None
    original = value
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_RE.match(text):
            raise SoiError(f"{field}: {original!r} is not a number; give a fraction in (0, 1) "
                           f"(e.g. 0.33 or 33%) or an integer count >= 1")
        if text.endswith("%"):
            value = float(text[:-1]) / 100.0
        elif re.fullmatch(r"[+-]?\d+", text):
            value = int(text)
        else:
            value = float(text)
    if isinstance(value, bool | np.bool_):
        raise SoiError(f"{field}: {original!r} is not a fraction in (0, 1) or an integer count >= 1")
    if isinstance(value, Integral):
        if int(value) < 1:
            raise SoiError(f"{field}: count {int(value)} must be >= 1 (or give a fraction in (0, 1))")
        return int(value)
    if isinstance(value, Real):
        f = float(value)
        if not 0.0 < f < 1.0:
            hint = f"; for a count give an integer ({int(f)})" if f >= 1 and f.is_integer() else ""
            raise SoiError(f"{field}: fraction {original!r} must be in (0, 1){hint}")
        return f
    raise SoiError(f"{field}: {original!r} is not a fraction in (0, 1) or an integer count >= 1")


def amount_to_count(amount: Amount, pool: np.ndarray | int) -> np.ndarray:
    """Number of rows an amount keeps of pools of the given sizes (vectorised over ``pool``).

    A fraction rounds half up with at least 1 row of a non-empty pool; a count is capped at the pool.

    Examples
    --------
    >>> amount_to_count(0.33, np.array([0, 1, 10, 100])).tolist()
    [0, 1, 3, 33]
    >>> amount_to_count(5, np.array([0, 3, 10])).tolist()
    [0, 3, 5]
    """
    sizes = np.asarray(pool, dtype=np.int64)
    if isinstance(amount, float):
        k = np.floor(np.round(amount * sizes, 9) + 0.5).astype(np.int64)
        k = np.where(sizes > 0, np.maximum(k, 1), 0)
    else:
        k = np.full_like(sizes, int(amount))
    return np.minimum(k, sizes)


# --------------------------------------------------------------------------------------------- columns
def _object_array(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dictionary/string column as a numpy object array (nulls -> None), without a per-row Python loop."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_dictionary(col.type):
        names = np.asarray([*col.dictionary.to_pylist(), None], dtype=object)
        codes = col.indices.fill_null(len(col.dictionary)).to_numpy(zero_copy_only=False)
        return names[codes.astype(np.int64)]
    return col.to_numpy(zero_copy_only=False).astype(object)


def _is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _expr_column(table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if _is_stringish(col.type):
        return _object_array(col)
    if pa.types.is_boolean(col.type) and col.null_count == 0:
        return col.to_numpy().astype(bool)
    if _is_numeric(col.type):
        return col.to_numpy().astype(np.float64) if col.null_count else col.to_numpy()
    if pa.types.is_nested(col.type):
        raise SoiError(f"where: column {name!r} has nested type {col.type}; not usable in an expression")
    return col.to_numpy()


def _codes(table: pa.Table, name: str, *, sort: bool = False) -> tuple[np.ndarray, list[str]]:
    """Codes (-1 for null) and names of a string-like column.

    Names keep the dictionary's order (e.g. SOI easy -> hard) unless ``sort`` or the column is plain
    strings, in which case they are sorted.
    """
    col = table[name]
    col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if sort or not pa.types.is_dictionary(col.type):
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        col = col.cast(pa.string()).dictionary_encode()
        order = np.argsort(np.asarray(col.dictionary.to_pylist(), dtype=object), kind="stable")
        names = [col.dictionary[int(i)].as_py() for i in order]
        remap = np.empty(order.size + 1, np.int64)
        remap[order] = np.arange(order.size)
        remap[-1] = -1
        codes = col.indices.fill_null(order.size).to_numpy(zero_copy_only=False).astype(np.int64)
        return remap[codes], names
    codes = col.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, col.dictionary.to_pylist()


def _counts(codes: np.ndarray, names: list[str], positions: np.ndarray) -> dict[str, int]:
    sel = codes[positions]
    counts = np.bincount(sel[sel >= 0], minlength=len(names))
    out = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
    if (sel < 0).any():
        out["<null>"] = int((sel < 0).sum())
    return out


def _numeric_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if _is_numeric(f.type)]


# --------------------------------------------------------------------------------------------- ranking
def _take(pool: np.ndarray, groups: np.ndarray, n_groups: int, amount: Amount, keys: Sequence[np.ndarray]
          ) -> np.ndarray:
    """Rows of ``pool`` that rank first within their group by ``keys`` (primary key first)."""
    if pool.size == 0:
        return pool
    g = groups[pool]
    order = np.lexsort((pool, *[k[pool] for k in reversed(keys)], g))
    sizes = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    g_sorted = g[order]
    rank = np.arange(order.size) - starts[g_sorted]
    keep = rank < amount_to_count(amount, sizes)[g_sorted]
    return np.sort(pool[order[keep]])


def _id_ranks(ids: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """0-based dense rank of each example id (equal ids share a rank) and the number of distinct ids."""
    if len(ids) == 0:
        return np.zeros(0, np.int64), 0
    rank = pc.rank(ids.cast(pa.string()), sort_keys="ascending", tiebreaker="dense")
    rank = rank.to_numpy().astype(np.int64) - 1
    return rank, int(rank.max()) + 1


# --------------------------------------------------------------------------------------------- select
def select(
    table: pa.Table,
    *,
    categories: Sequence[str] | str | None = None,
    where: str | None = None,
    metric: str | None = None,
    top: Amount | str | None = None,
    bottom: Amount | str | None = None,
    per_group: str | None = None,
    sample: Amount | str | None = None,
    seed: int = 0,
    category_column: str = "soi",
    source_run: str | os.PathLike[str] | None = None,
    min_stability: float | None = None,
) -> Selection:
    """Select examples from a per-example table (see the module docstring for the order of the steps).

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame
        Per-example table with an ``example_id`` column, e.g. ``analyze_run(...).table``.
    categories : list of str or comma-separated str, optional
        Keep rows whose ``category_column`` value is one of these (checked against the column's values).
    where : str, optional
        Expression over the columns, e.g. ``"confidence < 0.3 and task == 'rte'"``.
    metric : str, optional
        Numeric column ranked by ``top`` / ``bottom``.
    top, bottom : float in (0, 1) or int >= 1, optional
        Keep the highest / lowest rows by ``metric`` (one of the two, only with ``metric``).
    per_group : {"task", "source", "language"}, optional
        Apply ``top`` / ``bottom`` / ``sample`` within each group separately.
    sample : float in (0, 1) or int >= 1, optional
        Seeded random subsample of what is left.
    seed : int, default 0
        Seed of the tie-break permutation and of the sample.
    category_column : str, default "soi"
        Column ``categories`` refers to (e.g. ``"category"`` for custom rules).
    source_run : str or path, optional
        Recorded in the provenance.
    min_stability : float in (0, 1], optional
        Keep only rows with ``soi_stability >= min_stability`` (a seed-consensus table,
        :func:`soi.analysis.seeds.selection_table`), applied before ``categories``.

    Returns
    -------
    Selection

    Raises
    ------
    SoiError
        One line naming the offending argument: unknown column/category/group key, ``top`` and
        ``bottom`` both given, ``top``/``bottom`` without ``metric`` (or ``metric`` without either),
        ``per_group`` without ``top``/``bottom``/``sample``, bad amount or seed.
    """
    if not isinstance(table, pa.Table):
        if hasattr(table, "to_dict") and hasattr(table, "columns"):  # pandas.DataFrame
            table = pa.Table.from_pandas(table, preserve_index=False)
        else:
            raise SoiError(f"table: expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")
    columns = table.column_names
    n = table.num_rows

    # ---- validate everything before doing any work
    if "example_id" not in columns:
        raise SoiError(f"table: no 'example_id' column; columns: {columns}")
    if table["example_id"].null_count:
        raise SoiError(f"table: 'example_id' has {table['example_id'].null_count} null values")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise SoiError(f"seed: must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    top_n, bottom_n, sample_n = parse_amount(top, "top"), parse_amount(bottom, "bottom"), \
        parse_amount(sample, "sample")
    if top_n is not None and bottom_n is not None:
        raise SoiError("top/bottom: give only one of top and bottom")
    rank_amount = top_n if top_n is not None else bottom_n
    if rank_amount is not None and metric is None:
        raise SoiError(f"{'top' if top_n is not None else 'bottom'}: needs a metric to rank by "
                       f"(numeric columns: {_numeric_columns(table)})")
    if metric is not None:
        if metric not in columns or not _is_numeric(table.schema.field(metric).type):
            raise SoiError(f"metric: unknown or non-numeric column {metric!r}; "
                           f"numeric columns: {_numeric_columns(table)}")
        if rank_amount is None:
            raise SoiError(f"metric: {metric!r} given without top or bottom")
    if per_group is not None:
        if per_group not in GROUP_KEYS:
            raise SoiError(f"per_group: unknown group key {per_group!r}; choose one of {list(GROUP_KEYS)}")
        if per_group not in columns:
            raise SoiError(f"per_group: the table has no {per_group!r} column")
        if rank_amount is None and sample_n is None:
            raise SoiError("per_group: has no effect without top, bottom or sample")
    if min_stability is not None:
        if isinstance(min_stability, bool) or not isinstance(min_stability, Real) or \
                not 0.0 < float(min_stability) <= 1.0:
            raise SoiError(f"min_stability: must be a number in (0, 1], got {min_stability!r}")
        if "soi_stability" not in columns:
            raise SoiError("min_stability: the table has no 'soi_stability' column; select from a seed folder "
                           "(its consensus table) to use it")
        min_stability = float(min_stability)
    cat_list: list[str] | None = None
    if categories is not None:
        raw = categories.split(",") if isinstance(categories, str) else list(categories)
        cat_list = list(dict.fromkeys(str(c).strip() for c in raw if str(c).strip()))
        if not cat_list:
            raise SoiError("categories: give at least one category name")
        if category_column not in columns:
            raise SoiError(f"category_column: no column {category_column!r} in the table; columns: {columns}")
        if not _is_stringish(table.schema.field(category_column).type):
            raise SoiError(f"category_column: column {category_column!r} is not a category (string) column")
        cat_codes, cat_names = _codes(table, category_column)
        unknown = [c for c in cat_list if c not in cat_names]
        if unknown:
            raise SoiError(f"categories: unknown {unknown} in column {category_column!r}; valid: {cat_names}")
    where_names: set[str] = set()
    if where is not None:
        if not isinstance(where, str) or not where.strip():
            raise SoiError("where: give a non-empty expression")
        try:
            where_names = expr.names(where)
        except SoiError as exc:
            raise SoiError(f"where: {exc}") from None
        missing = sorted(where_names - set(columns))
        if missing:
            raise SoiError(f"where: unknown column {missing[0]!r} in {where!r}; columns: {columns}")

    # ---- filters
    pool_sizes: dict[str, int] = {"input": n}
    mask = np.ones(n, bool)
    if min_stability is not None:
        stability = table["soi_stability"].to_numpy(zero_copy_only=False).astype(np.float64)
        mask &= stability >= min_stability - 1e-12  # 2/3 stored as 0.666...: compare with a tolerance
        pool_sizes["min_stability"] = int(mask.sum())
    if cat_list is not None:
        wanted = np.isin(np.asarray(cat_names, dtype=object), np.asarray(cat_list, dtype=object))
        wanted = np.append(wanted, False)  # code -1 (null) -> False
        mask &= wanted[cat_codes]
        pool_sizes["categories"] = int(mask.sum())
    if where is not None:
        cols = {name: _expr_column(table, name) for name in where_names}
        try:
            mask &= expr.evaluate(where, cols, n)
        except SoiError as exc:
            raise SoiError(f"where: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise SoiError(f"where: cannot evaluate {where!r}: {exc}") from None
        pool_sizes["where"] = int(mask.sum())
    pool = np.flatnonzero(mask)

    # ---- ranking / sampling (within groups)
    if per_group is not None:
        gcodes, gnames = _codes(table, per_group, sort=True)
        groups = np.where(gcodes < 0, len(gnames), gcodes)
        n_groups = len(gnames) + 1
    else:
        groups, n_groups = np.zeros(n, np.int64), 1
    id_rank, n_ids = _id_ranks(table["example_id"])
    metric_range: dict[str, float] | None = None
    if rank_amount is not None:
        assert metric is not None
        values = table[metric].to_numpy().astype(np.float64)
        valid = ~np.isnan(values[pool])
        pool_sizes["metric_missing"] = int((~valid).sum())
        pool = pool[valid]
        tiebreak = np.random.default_rng([seed, 0]).permutation(n_ids)[id_rank]
        key = -values if top_n is not None else values
        pool = _take(pool, groups, n_groups, rank_amount, [key, tiebreak])
        pool_sizes["top" if top_n is not None else "bottom"] = int(pool.size)
        if pool.size:
            lo, hi = float(values[pool].min()), float(values[pool].max())
            metric_range = {"min": lo if math.isfinite(lo) else None,
                            "max": hi if math.isfinite(hi) else None}
    if sample_n is not None:
        draw = np.random.default_rng([seed, 1]).permutation(n_ids)[id_rank]
        pool = _take(pool, groups, n_groups, sample_n, [draw])
        pool_sizes["sample"] = int(pool.size)

    # ---- result in idx order (row order without idx)
    if "idx" in columns and _is_numeric(table.schema.field("idx").type) and table["idx"].null_count == 0:
        idx = table["idx"].to_numpy()
        pool = pool[np.lexsort((pool, idx[pool]))]
    rows = table.take(pa.array(pool, pa.int64()))
    ids = _object_array(rows["example_id"])

    counts: dict[str, dict[str, int]] = {}
    if category_column in columns and _is_stringish(table.schema.field(category_column).type):
        codes, names = (cat_codes, cat_names) if cat_list is not None else _codes(table, category_column)
        counts[category_column] = _counts(codes, names, pool)
    for key in GROUP_KEYS:
        if key in columns and _is_stringish(table.schema.field(key).type):
            counts[key] = _counts(*_codes(table, key, sort=True), pool)
    warnings: list[str] = []
    if pool.size == 0:
        warnings.append(f"empty selection: no rows left of {n} (pool sizes: {pool_sizes})")
    if n_ids < n:
        warnings.append(f"example_id has {n - n_ids} duplicate values")
    provenance: dict[str, Any] = {
        "soi_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_run": None if source_run is None else str(source_run),
        "rule": {
            "categories": cat_list,
            "category_column": category_column,
            "where": where,
            "metric": metric,
            "top": top_n,
            "bottom": bottom_n,
            "per_group": per_group,
            "sample": sample_n,
            "seed": seed,
            "min_stability": min_stability,
        },
        "seed": seed,
        "method": {
            "order": "min_stability -> categories -> where -> metric top/bottom -> sample; ranking and sample "
                     "per group",
            "fraction": "floor(f * pool + 0.5), at least 1 of a non-empty pool; counts capped at the pool",
            "ties": "seeded random permutation of example ids (numpy PCG64, seed [seed, 0]); "
                    "sample: seed [seed, 1]",
            "missing_metric": "rows with a null/NaN metric are dropped before ranking",
        },
        "n_input": n,
        "n_selected": int(pool.size),
        "pool_sizes": pool_sizes,
        "metric_range": metric_range,
        "counts": counts,
        "warnings": warnings,
    }
    return Selection(ids=ids, rows=rows, provenance=provenance)


def filter_dataset(dataset: Any, selection: Selection, *, id_column: str = "id") -> Any:
    """The rows of a ``datasets.Dataset`` whose ``id_column`` is one of ``selection``'s example ids, in the
    dataset's order (e.g. the tokenised training set of the next stage). Every selected id must be present."""
    if id_column not in (getattr(dataset, "column_names", None) or []):
        raise SoiError(f"filter_dataset: the dataset has no column {id_column!r} (pass id_column=...); columns: "
                       f"{', '.join(getattr(dataset, 'column_names', None) or [])}")
    ids = dataset.with_format("arrow")[id_column]
    ids = (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids).cast(pa.string())
    wanted = pa.array(selection.ids.tolist(), pa.string())
    keep = np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False))
    found = pc.is_in(wanted, value_set=ids).to_numpy(zero_copy_only=False)
    if not found.all():
        missing = wanted.filter(pa.array(~found)).to_pylist()
        raise SoiError(f"filter_dataset: {len(missing)} selected id(s) not in the dataset's {id_column!r} column, "
                       f"e.g. {missing[:3]} (a dataset of another run, or another id column?)")
    return dataset.select(keep)


# --------------------------------------------------------------------------------------------- save
def _write_all(directory: Path, selection: Selection) -> None:
    """Stage all three files, then move them in (``selection.json`` last); nothing moves on an error."""
    text = "".join(f"{i}\n" for i in selection.ids.tolist())
    prov = json.dumps(selection.provenance, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with contextlib.ExitStack() as stack:
        # atomic_path moves each file in on exit, in reverse order of entry: the provenance goes in last
        prov_tmp = stack.enter_context(atomic_path(directory / PROVENANCE_FILE))
        rows_tmp = stack.enter_context(atomic_path(directory / ROWS_FILE))
        ids_tmp = stack.enter_context(atomic_path(directory / IDS_FILE))
        ids_tmp.write_text(text, encoding="utf-8")
        pq.write_table(selection.rows, rows_tmp, compression="zstd")
        prov_tmp.write_text(prov, encoding="utf-8")


def _make_tmp_dir(out: Path) -> Path:
    while True:
        tmp = out.parent / f"{TMP_PREFIX}{out.name}.{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:  # pragma: no cover - 32-bit random suffix collided
            continue


def save(selection: Selection, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``selected_ids.txt``, ``selected.parquet`` and ``selection.json`` to ``out_dir``.

    ``selected_ids.txt`` has one ``example_id`` per line; ``selected.parquet`` the selected rows;
    ``selection.json`` the provenance. An empty selection is written too (empty id file, a warning in
    ``provenance["warnings"]``). Never a partial write: a new ``out_dir`` is built as a temporary sibling
    (``.tmp-*``) and renamed into place; in an existing directory all three files are staged first and
    then moved in (other files there are left alone).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SoiError("out: exists and is not a directory", path=out)
    ids = selection.rows["example_id"].cast(pa.string())
    if len(ids) and pc.any(pc.match_substring_regex(ids, r"[\r\n]")).as_py():
        raise SoiError("example_id: an id contains a line break and cannot be written to selected_ids.txt")
    from soi._io import relabel

    try:
        if out.is_dir():
            _write_all(out, selection)
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_tmp_dir(out)
    except OSError as exc:
        raise relabel(exc, out) from None
    try:
        _write_all(tmp, selection)
        try:
            os.rename(tmp, out)
        except OSError:  # out was created meanwhile: write into it instead
            if not out.is_dir():
                raise
            _write_all(out, selection)
    except OSError as exc:  # name the user's folder, not the temporary one
        raise relabel(exc, out) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def save_dataset(selection: Selection, out_dir: str | os.PathLike[str], *, with_text: bool = True) -> Path:
    """Write :meth:`Selection.to_dataset` with ``save_to_disk`` into ``out_dir`` (``datasets.load_from_disk``
    reads it; the provenance is in its ``info.description`` and in ``selection.json`` beside it), atomically:
    the folder is built next to ``out_dir`` and replaces it as one unit."""
    from soi._io import atomic_dir, write_json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SoiError("out: exists and is not a directory", path=out)
    dataset = selection.to_dataset(with_text=with_text)
    with atomic_dir(out) as tmp:
        dataset.save_to_disk(str(tmp))
        write_json(tmp / PROVENANCE_FILE, selection.provenance)
    return out


def stream_select(run_dir: str | Path, *, memory_limit: int | str | None = "2GB", workers: int | None = None,
                  shard_size: int | None = None, late_fraction: float = 0.5, **rule: Any) -> Selection:
    """:func:`select` on a streamed analysis (:mod:`soi.analysis.streaming`): only the columns the rule needs are
    held in memory.

    ``rule`` takes :func:`select`'s keyword arguments. Returns the same :class:`Selection`
    as ``select(analyze_run(run_dir, write=False).table, ...)`` (rows with every per-example column).
    """
    import tempfile
    from dataclasses import replace

    from soi._arrow import to_numpy
    from soi.analysis.per_example import PER_EXAMPLE_FILE
    from soi.analysis.streaming import select_rows, stream_analysis
    from soi.store.meta import ANALYSIS_DIR

    where = rule.get("where")
    names = set()
    if isinstance(where, str) and where.strip():
        try:
            names = expr.names(where)
        except SoiError as exc:
            raise SoiError(f"where: {exc}") from None
    need = ["idx", "example_id", rule.get("category_column", "soi"), *GROUP_KEYS, *sorted(names)]
    need += [c for c in (rule.get("metric"), rule.get("per_group")) if c]
    with tempfile.TemporaryDirectory(prefix=".tmp-soi-select-") as scratch:
        # the full rows go to a scratch analysis folder, never into the run itself
        res, _ = stream_analysis(run_dir, memory_limit=memory_limit, workers=workers, shard_size=shard_size,
                                 late_fraction=late_fraction, write=True, out=Path(scratch) / ANALYSIS_DIR,
                                 keep_columns=list(dict.fromkeys(need)))
        selection = select(res.table, source_run=run_dir, **rule)
        rows = to_numpy(selection.rows["idx"]).astype(np.int64) if selection.rows.num_rows else np.zeros(0, np.int64)
        full = select_rows(Path(scratch) / ANALYSIS_DIR / PER_EXAMPLE_FILE, rows)
    return replace(selection, rows=full)


def describe(selection: Selection, *, category_column: str | None = None) -> str:
    """One-line summary: ``selected n of N (p%); cat a, cat b, ...`` (non-zero category counts)."""
    prov = selection.provenance
    n, total = prov["n_selected"], prov["n_input"]
    share = f" ({100.0 * n / total:.1f}%)" if total else ""
    column = category_column or prov["rule"]["category_column"]
    counts = prov["counts"].get(column, {})
    parts = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return f"selected {n} of {total}{share}" + (f"; {parts}" if parts else "")


__all__ = [
    "GROUP_KEYS",
    "IDS_FILE",
    "PROVENANCE_FILE",
    "ROWS_FILE",
    "Selection",
    "amount_to_count",
    "describe",
    "filter_dataset",
    "parse_amount",
    "save",
    "save_dataset",
    "select",
    "stream_select",
]
