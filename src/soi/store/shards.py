"""Reading a run by example range: shard planning and validated per-shard dense arrays (out-of-core analysis).

A *shard* is a range ``lo .. hi`` of ``idx`` (rows of ``examples.parquet``) with all its checkpoints. Parts are
read by Parquet row group: a row group is read by a shard when its ``idx`` statistics (min/max, written by
:func:`soi.store.write_part`) overlap the shard's range, and its rows outside the range are dropped. Parts
written by :func:`soi.store.write_part` have one row group per block of :data:`soi.store.writer.ROW_BLOCK`
``idx`` values for every rank, so shards cut at those block edges decode each row exactly once.

:func:`plan_shards` reads only footers (plus the ``task`` column of ``examples.parquet``) and checks what can
be checked globally: columns, checkpoint gaps, ``idx`` out of range. :func:`read_shard` validates each shard's
rows with the same checks as :func:`soi.store.load_dynamics` (:func:`soi.store.reader.fill_checkpoint_table`).
Every problem is a :class:`~soi.errors.SoiError` naming the file, also when a part vanishes or is corrupt
between planning and reading.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soi._arrow import to_numpy
from soi._io import atomic_path
from soi.errors import SoiError
from soi.store import writer as store_writer
from soi.store.meta import EXAMPLES_FILE, RunMeta, dynamics_dir, part_name
from soi.store.reader import (
    DENSE_COLUMNS,
    Dynamics,
    check_max_checkpoints,
    check_utf8,
    conform_examples,
    fill_checkpoint_table,
    labels_per_example,
    list_parts,
    part_columns,
    tag_codes,
)
from soi.store.writer import EXAMPLES_SCHEMA, EXAMPLES_WRITE_OPTIONS, PART_WRITE_OPTIONS

_EXAMPLE_COLUMNS = ("idx", "example_id", "task", "source", "language", "gold")
_TEXT_COLUMNS = ("text", "text_pair")


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise SoiError("missing Parquet file (removed while the run was being read?)", path=path) from None
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None


def _read_row_groups(path: Path, groups: Sequence[int], columns: Sequence[str] | None) -> pa.Table:
    try:
        with _open(path) as pf:
            table = pf.read_row_groups(list(groups), columns=list(columns) if columns is not None else None)
    except SoiError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None
    check_utf8(table, path)
    return table


@dataclass(frozen=True, eq=False)
class PartIndex:
    """One dynamics part: its path, the columns to read and the ``idx`` range of each row group."""

    path: Path
    columns: tuple[str, ...]
    rg_min: np.ndarray
    rg_max: np.ndarray
    names: frozenset[str] = frozenset()
    """Every column of the part (rank parts of a checkpoint must agree)."""
    constants: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """``checkpoint`` / ``step`` -> min and max per row group, when every row group has exact statistics (no
    nulls, the store's integer type): :func:`read_shard` then checks those columns without decoding them."""

    def groups_for(self, lo: int, hi: int) -> np.ndarray:
        """Row groups holding rows with ``lo <= idx < hi``."""
        return np.flatnonzero((self.rg_max >= lo) & (self.rg_min < hi))


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """What :func:`read_shard` needs: the run's layout, checked globally, and the shard bounds."""

    run_dir: Path
    meta: RunMeta
    mode: str | None
    n_examples: int
    checkpoints: tuple[int, ...]
    parts: dict[int, list[PartIndex]]
    example_starts: np.ndarray
    """First row of each row group of ``examples.parquet`` (and the row count at the end)."""
    grid: np.ndarray
    """Sorted ``idx`` values where row groups of the first checkpoint start: the preferred shard edges."""
    tasks: tuple[str, ...]
    """Tasks used by at least one example, sorted."""
    text_columns: tuple[str, ...]
    """``text`` / ``text_pair`` when present with at least one non-null value (kept in per-example tables)."""
    example_columns: tuple[str, ...] = ()
    """Every column of ``examples.parquet``."""
    bounds: tuple[tuple[int, int], ...] = field(default=())

    @property
    def n_checkpoints(self) -> int:
        return len(self.checkpoints)

    def with_shard_size(self, shard_size: int) -> ShardPlan:
        """The same plan cut into shards of at most ``shard_size`` examples, preferring row-group edges."""
        if shard_size < 1:
            raise SoiError(f"shard_size must be >= 1, got {shard_size}")
        return replace(self, bounds=cut_shards(self.grid, self.n_examples, shard_size))


def cut_shards(grid: np.ndarray, n: int, shard_size: int) -> tuple[tuple[int, int], ...]:
    """Consecutive ``(lo, hi)`` ranges covering ``0 .. n``, each at most ``shard_size`` long.

    Ranges are unions of consecutive grid intervals (row groups) while they fit; a grid interval longer
    than ``shard_size`` is split into equal pieces.
    """
    edges = np.unique(np.concatenate([[0, n], np.asarray(grid, np.int64)]))
    edges = edges[(edges >= 0) & (edges <= n)]
    out: list[tuple[int, int]] = []
    lo = 0
    for a, b in itertools.pairwise(edges.tolist()):
        if b - a > shard_size:
            if a > lo:
                out.append((lo, a))
            pieces = -(-(b - a) // shard_size)
            cuts = np.linspace(a, b, pieces + 1).round().astype(np.int64).tolist()
            out.extend(itertools.pairwise(cuts))
            lo = b
        elif b - lo > shard_size:
            out.append((lo, a))
            lo = a
    if lo < n:
        out.append((lo, n))
    return tuple(out)


def cut_points(parts: Sequence[PartIndex]) -> np.ndarray:
    """``idx`` values where no row group of ``parts`` is cut: the starts of the connected unions of their ranges.

    With parts written by :func:`soi.store.write_part` (one row group per ``ROW_BLOCK`` block for every rank) these
    are the block edges; a part with one row group spanning everything (an interleaved rank of an older store)
    leaves only 0.
    """
    mins = np.concatenate([p.rg_min[p.rg_max >= p.rg_min] for p in parts] + [np.zeros(0, np.int64)])
    maxs = np.concatenate([p.rg_max[p.rg_max >= p.rg_min] for p in parts] + [np.zeros(0, np.int64)])
    if mins.size == 0:
        return np.zeros(1, np.int64)
    order = np.argsort(mins, kind="stable")
    mins, maxs = mins[order], np.maximum.accumulate(maxs[order])
    return np.unique(np.concatenate([[0], mins[1:][mins[1:] > maxs[:-1]]]))


def _idx_ranges(path: Path, pf: pq.ParquetFile, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max ``idx`` per row group (from statistics; read from the data where statistics are absent)."""
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("idx")
    mins = np.empty(md.num_row_groups, np.int64)
    maxs = np.empty(md.num_row_groups, np.int64)
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        stats = rg.column(col).statistics
        if rg.num_rows == 0:
            mins[g], maxs[g] = n, -1  # overlaps no range
        elif stats is not None and stats.has_min_max:
            mins[g], maxs[g] = stats.min, stats.max
        else:
            idx = to_numpy(_read_row_groups(path, [g], ["idx"])["idx"])
            mins[g], maxs[g] = idx.min(), idx.max()
    return mins, maxs


_CONSTANT_TYPES = {"checkpoint": pa.int32(), "step": pa.int64()}


def _constant_stats(pf: pq.ParquetFile) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Min/max per row group of the ``checkpoint`` and ``step`` columns, from exact statistics only."""
    md, schema = pf.metadata, pf.schema_arrow
    out = {}
    for name, kind in _CONSTANT_TYPES.items():
        col = schema.get_field_index(name)
        if col < 0 or schema.field(col).type != kind:
            continue
        mins, maxs = np.zeros(md.num_row_groups, np.int64), np.zeros(md.num_row_groups, np.int64)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            stats = rg.column(col).statistics
            if rg.num_rows == 0:
                continue
            if stats is None or not stats.has_min_max or not stats.has_null_count or stats.null_count:
                break
            mins[g], maxs[g] = stats.min, stats.max
        else:
            out[name] = (mins, maxs)
    return out


def _used_tasks(path: Path, pf: pq.ParquetFile) -> set[str]:
    used: set[str] = set()
    for g in range(pf.metadata.num_row_groups):
        col = _read_row_groups(path, [g], ["task"])["task"]
        for chunk in col.chunks:
            if pa.types.is_dictionary(chunk.type):  # the names whose codes occur (one bincount, no hashing)
                codes = to_numpy(chunk.indices.drop_null() if chunk.null_count else chunk.indices)
                present = np.flatnonzero(np.bincount(codes, minlength=len(chunk.dictionary)))
                chunk = chunk.dictionary.take(pa.array(present, pa.int64()))
            used.update(x for x in pc.unique(chunk.fill_null("")).to_pylist())
    return used


def _text_columns(path: Path, pf: pq.ParquetFile) -> tuple[str, ...]:
    names = pf.schema_arrow.names
    md = pf.metadata
    keep = []
    for name in _TEXT_COLUMNS:
        if name not in names:
            continue
        col = names.index(name)
        nulls = 0
        for g in range(md.num_row_groups):
            stats = md.row_group(g).column(col).statistics
            if stats is not None and stats.null_count is not None and stats.has_null_count:
                nulls += stats.null_count
            else:
                nulls += _read_row_groups(path, [g], [name])[name].null_count
        if nulls < md.num_rows:
            keep.append(name)
    return tuple(keep)


def plan_shards(run_dir: str | Path, *, mode: str | None = None, max_checkpoints: int | None = None,
                shard_size: int | None = None) -> ShardPlan:
    """Check a run's layout from the Parquet footers and cut it into example-range shards.

    Parameters
    ----------
    run_dir : run directory
    mode : read ``dynamics-<mode>/`` instead of ``dynamics/``
    max_checkpoints : use only the first checkpoints
    shard_size : most examples per shard (default: one shard per row group of the first checkpoint)
    """
    check_max_checkpoints(max_checkpoints)  # the same refusal, and message, as soi.store.load_dynamics
    run_dir = Path(run_dir)
    meta = RunMeta.load(run_dir)
    ex_path = run_dir / EXAMPLES_FILE
    if not ex_path.is_file():
        raise SoiError("missing examples.parquet", path=ex_path)
    with _open(ex_path) as pf:
        missing = [c for c in _EXAMPLE_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise SoiError(f"missing column(s) {missing}", path=ex_path)
        md = pf.metadata
        n = md.num_rows
        starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)]).astype(np.int64)
        tasks = _used_tasks(ex_path, pf)
        text_columns = _text_columns(ex_path, pf)
        example_columns = tuple(pf.schema_arrow.names)
    unknown = sorted(tasks - set(meta.tasks))
    if unknown:
        raise SoiError(f"task {unknown[0]!r} is not in run.json tasks {sorted(meta.tasks)}", path=ex_path)
    required, allowed, optional = part_columns(meta.is_generative)
    all_parts = list_parts(run_dir, mode)
    ckpts = sorted(all_parts)[: max_checkpoints or None]
    parts: dict[int, list[PartIndex]] = {}
    for ckpt in ckpts:
        indexes = []
        for path in all_parts[ckpt]:
            with _open(path) as pf:
                names = pf.schema_arrow.names
                miss = [c for c in required if c not in names]
                if miss:
                    raise SoiError(f"missing column(s) {miss}", path=path)
                extra = [c for c in names if c not in allowed]
                if extra:
                    raise SoiError(f"unexpected column(s) {extra}; only generative runs (run.json extra.generative) "
                                   f"may add their columns (docs/store.md)", path=path)
                columns = (*required, *(c for c in optional if c in names))
                mins, maxs = _idx_ranges(path, pf, n)
                constants = _constant_stats(pf)
            rows = maxs >= mins
            if rows.any() and (mins[rows].min() < 0 or maxs[rows].max() >= n):
                raise SoiError(f"idx out of range [0, {n}) at checkpoint {ckpt}", path=path)
            indexes.append(PartIndex(path, columns, mins, maxs, frozenset(names), constants))
        for part in indexes[1:]:
            if part.names != indexes[0].names:
                raise SoiError(f"the rank parts of checkpoint {ckpt} have different columns: {indexes[0].path.name} "
                               f"and {part.path.name} differ in {sorted(part.names ^ indexes[0].names)}",
                               path=part.path.parent)
        parts[ckpt] = indexes
    grid = cut_points(parts[ckpts[0]])
    plan = ShardPlan(run_dir=run_dir, meta=meta, mode=mode, n_examples=n, checkpoints=tuple(ckpts), parts=parts,
                     example_starts=starts, grid=grid, tasks=tuple(sorted(tasks)), text_columns=text_columns,
                     example_columns=example_columns)
    return plan.with_shard_size(shard_size if shard_size is not None else max(n, 1))


def _rows_in_range(table: pa.Table, lo: int, hi: int) -> pa.Table:
    idx = to_numpy(table["idx"])
    if idx.size == 0:
        return table
    if idx.size < 2 or (idx[1:] >= idx[:-1]).all():
        if idx[0] >= lo and idx[-1] < hi:  # the usual case: row groups cut at the shard's edges
            return table
        # bounds in idx's own dtype: a Python int would make searchsorted copy idx to int64 first
        a = int(np.searchsorted(idx, idx.dtype.type(lo), side="left"))
        b = int(np.searchsorted(idx, idx.dtype.type(hi - 1), side="right"))
        return table if (a, b) == (0, idx.size) else table.slice(a, b - a)
    return table.filter(pa.array((idx >= lo) & (idx < hi)))


def read_examples_range(plan: ShardPlan, lo: int, hi: int) -> pa.Table:
    """Rows ``lo .. hi`` of ``examples.parquet``, validated as :func:`soi.store.read_examples` does."""
    return _examples_range(plan, lo, hi)[0]


def _examples_range(plan: ShardPlan, lo: int, hi: int) -> tuple[pa.Table, np.ndarray]:
    """:func:`read_examples_range` and the number of labels of each example's task."""
    path = plan.run_dir / EXAMPLES_FILE
    starts = plan.example_starts
    groups = np.flatnonzero((starts[1:] > lo) & (starts[:-1] < hi))
    # every column but text columns that are null throughout the run (nothing in them to check or keep)
    skip = [c for c in _TEXT_COLUMNS if c not in plan.text_columns]
    columns = [c for c in plan.example_columns if c not in skip] if plan.example_columns else None
    table = _read_row_groups(path, groups.tolist(), columns)
    first = int(starts[groups[0]]) if groups.size else lo
    table = conform_examples(table.slice(lo - first, hi - lo), path)
    if table.num_rows != hi - lo or not np.array_equal(to_numpy(table["idx"]), np.arange(lo, hi)):
        raise SoiError("column 'idx' must be 0..N-1 in row order", path=path)
    ids = table["example_id"]
    if ids.null_count:
        raise SoiError(f"column 'example_id' has {ids.null_count} null value(s)", path=path)
    gold = to_numpy(table["gold"])
    n_labels = labels_per_example(table, plan.meta) if table.num_rows else np.zeros(0, np.int64)
    bad = np.zeros(0, np.int64)
    if gold.size and (gold.min() < 0 or gold.max() >= n_labels.min()):  # the full check only when bounds say so
        bad = np.flatnonzero((gold < 0) | (gold >= n_labels))
    if bad.size:
        codes, names = tag_codes(table, "task")
        task = names[codes[bad[0]]]
        raise SoiError(f"gold label {int(gold[bad[0]])} of example {ids[int(bad[0])].as_py()!r} out of range "
                       f"for task {task!r} ({plan.meta.num_labels(task)} labels)", path=path)
    return table, n_labels


def _step_from_statistics(reads: list[tuple[PartIndex, np.ndarray]], ckpt: int, where: Path) -> int | None:
    """The checkpoint's step from the row groups' statistics, after the checks :func:`fill_checkpoint_table` makes
    on the decoded ``checkpoint`` / ``step`` columns; None when some row group lacks exact statistics."""
    if not reads or any(len(part.constants) < len(_CONSTANT_TYPES) for part, _ in reads):
        return None
    ck = [(part.constants["checkpoint"][0][g], part.constants["checkpoint"][1][g]) for part, g in reads]
    if any((lo_ != ckpt).any() or (hi_ != ckpt).any() for lo_, hi_ in ck):
        raise SoiError(f"column 'checkpoint' disagrees with the file name (checkpoint {ckpt})", path=where)
    st = np.concatenate([np.concatenate([part.constants["step"][0][g], part.constants["step"][1][g]])
                         for part, g in reads])
    if (st != st[0]).any():
        raise SoiError(f"checkpoint {ckpt} must have one 'step' value in all rows", path=where)
    return int(st[0])


REUSED_COLUMNS = ("p_gold", "margin", "loss")
"""Dense float columns :func:`read_shard` can fill into the buffers of a previous shard."""


def _dense(e: int, m: int, dtype: type, buffers: dict[str, np.ndarray] | None, name: str) -> np.ndarray:
    """An (e, m) C-ordered array: fresh, or the first ``e * m`` values of a reused flat buffer (same layout)."""
    if buffers is None:
        return np.empty((e, m), dtype)
    buf = buffers.get(name)
    if buf is None or buf.size < e * m or buf.dtype != dtype:
        buf = buffers[name] = np.empty(e * m, dtype)
    return buf[:e * m].reshape(e, m)


def read_shard(plan: ShardPlan, lo: int, hi: int, *, buffers: dict[str, np.ndarray] | None = None) -> Dynamics:
    """Validated dense dynamics of examples ``lo .. hi`` (a pure function of the files and the range).

    The arrays have the same layout as :func:`soi.store.load_dynamics` (checkpoint-major, exposed as (N, E)
    views), so every per-example kernel gives bit-identical values on a shard and on the whole run.

    ``buffers`` (a dict kept by the caller between shards): the :data:`REUSED_COLUMNS` arrays are filled into the
    previous call's memory instead of fresh pages (touching fresh memory is a large part of the cost of a shard:
    the kernel zeroes every new page), so the previous shard's ``p_gold`` / ``margin`` / ``loss`` are
    overwritten -- pass it only when nothing holds them any more (the per-example kernels return new arrays).
    """
    examples, n_labels = _examples_range(plan, lo, hi)
    gold = to_numpy(examples["gold"]).astype(np.int16)
    m, e = hi - lo, plan.n_checkpoints
    dense = {"pred": np.empty((e, m), np.int16),
             **{name: _dense(e, m, np.float32, buffers, name) for name in REUSED_COLUMNS}}
    assert tuple(dense) == DENSE_COLUMNS
    steps = np.empty(e, np.int64)
    for j, ckpt in enumerate(plan.checkpoints):
        paths = [p.path for p in plan.parts[ckpt]]
        where = paths[0] if len(paths) == 1 else paths[0].parent
        reads = [(part, part.groups_for(lo, hi)) for part in plan.parts[ckpt]]
        reads = [(part, groups) for part, groups in reads if groups.size]
        step = _step_from_statistics(reads, ckpt, where)
        tables = []
        for part, groups in reads:
            columns = part.columns if step is None else [c for c in part.columns if c not in _CONSTANT_TYPES]
            tables.append(_rows_in_range(_read_row_groups(part.path, groups.tolist(), columns), lo, hi))
        if not tables:
            raise SoiError(f"{m} example(s) missing at checkpoint {ckpt}, e.g. "
                           f"{examples['example_id'][0].as_py()!r}", path=where)
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        steps[j] = fill_checkpoint_table(j, ckpt, table, where, examples, gold, n_labels, dense,
                                         generative=plan.meta.is_generative, offset=lo, step=step)
    return Dynamics(meta=plan.meta, examples=examples, checkpoints=np.asarray(plan.checkpoints, np.int64),
                    steps=steps, **{k: v.T for k, v in dense.items()})


# ------------------------------------------------------------------------------------------- chunked writers
class _ChunkedFile:
    """A Parquet file written in row groups of pending chunks; it appears atomically on :meth:`close` (or at
    the end of a ``with`` block), and an exception discards it."""

    path: Path

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(path))
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
            assert self._writer is not None
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            self._pending, self._pending_rows = [], 0

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self._writer is None:
            raise SoiError("no rows written", path=self.path)
        self._flush()
        self._stack.close()
        return self.path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)


class ChunkedPartWriter(_ChunkedFile):
    """Write one dynamics part (checkpoint, rank) chunk by chunk, for recordings too large for one table.

    Chunks (:func:`soi.store.dynamics_table` tables) must come in increasing ``idx`` order; rows are grouped
    into one row group per :data:`~soi.store.writer.ROW_BLOCK` block of ``idx`` like
    :func:`soi.store.write_part`, so the part stays readable by example range. The file appears atomically
    on :meth:`close` (or at the end of a ``with`` block); an exception discards it.

    Examples
    --------
    >>> with ChunkedPartWriter("runs/big", checkpoint=0) as w:           # doctest: +SKIP
    ...     for lo in range(0, n, chunk):
    ...         w.write(dynamics_table(checkpoint=0, step=100, idx=np.arange(lo, lo + chunk), ...))
    """

    def __init__(self, run_dir: str | Path, *, checkpoint: int, rank: int = 0, mode: str | None = None) -> None:
        super().__init__(dynamics_dir(run_dir, mode) / part_name(checkpoint, rank))
        self._block = -1
        self._last = -1

    def write(self, table: pa.Table) -> None:
        """Append rows (sorted by ``idx``, all above the previous chunk's)."""
        if table.num_rows == 0:
            return
        idx = to_numpy(table["idx"]).astype(np.int64)
        if idx[0] <= self._last or (idx.size > 1 and np.any(np.diff(idx) <= 0)):
            raise SoiError("chunks must come in strictly increasing idx order", path=self.path)
        self._last = int(idx[-1])
        if self._writer is None:
            self._writer = self._stack.enter_context(pq.ParquetWriter(self._tmp, table.schema, **PART_WRITE_OPTIONS))
        block = idx // store_writer.ROW_BLOCK
        cuts = np.flatnonzero(np.diff(block)) + 1
        for a, b in itertools.pairwise([0, *cuts.tolist(), idx.size]):
            if block[a] != self._block:
                self._flush()
                self._block = int(block[a])
            self._pending.append(table.slice(a, b - a))


class ChunkedExamplesWriter(_ChunkedFile):
    """Write ``examples.parquet`` chunk by chunk (:func:`soi.store.examples_table` tables, ``idx`` renumbered).

    The file appears atomically at the end of the ``with`` block; ``example_id`` uniqueness is checked by the
    readers (``soi analyze``), not here.
    """

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(Path(run_dir) / EXAMPLES_FILE)
        self._writer = self._stack.enter_context(pq.ParquetWriter(self._tmp, EXAMPLES_SCHEMA,
                                                                  **EXAMPLES_WRITE_OPTIONS))
        self.n = 0

    def write(self, table: pa.Table) -> None:
        """Append examples; their ``idx`` becomes ``n .. n + len - 1`` (row groups of ``ROW_BLOCK`` rows)."""
        table = table.cast(EXAMPLES_SCHEMA)
        table = table.set_column(0, "idx", pa.array(np.arange(self.n, self.n + table.num_rows, dtype=np.int32)))
        self.n += table.num_rows
        block = store_writer.ROW_BLOCK
        while table.num_rows:
            take = min(table.num_rows, block - self._pending_rows)
            self._pending.append(table.slice(0, take))
            self._pending_rows += take
            table = table.slice(take)
            if self._pending_rows == block:
                self._flush()
