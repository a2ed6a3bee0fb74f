"""Reading a run directory into dense (examples x checkpoints) arrays, with strict validation.

Every problem (missing file or column, checkpoint gaps, duplicate or missing examples in a checkpoint,
NaN/inf values, labels out of range) raises :class:`~soi.errors.SoiError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soi._arrow import first_duplicate, to_numpy
from soi._io import TMP_PREFIX
from soi.errors import SoiError
from soi.store.meta import EXAMPLES_FILE, PART_RE, RunMeta, dynamics_dir
from soi.store.writer import DYNAMICS_SCHEMA, FLOAT_COLUMNS, GENERATIVE_COLUMNS, LOGITS_FIELD

DENSE_COLUMNS = ("pred", "p_gold", "margin", "loss")
_REQUIRED_PART_COLUMNS = ("idx", "checkpoint", "step", "gold", *DENSE_COLUMNS)
_PART_COLUMNS = {*DYNAMICS_SCHEMA.names, LOGITS_FIELD.name}
_GENERATIVE_FLOATS = ("token_acc", "logp")
_REQUIRED_EXAMPLE_COLUMNS = ("idx", "example_id", "task", "source", "language", "gold")


def _read_parquet(path: Path, columns: Sequence[str] | None = None, *, allowed: set[str] | None = None,
                  optional: Sequence[str] = ()) -> pa.Table:
    """Read ``columns`` (all when None) plus the ``optional`` ones present; with ``allowed``, refuse other columns."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise SoiError(f"missing column(s) {missing}", path=path)
        columns = [*columns, *(c for c in optional if c in schema.names)]
    if allowed is not None:
        unknown = [c for c in schema.names if c not in allowed]
        if unknown:
            raise SoiError(f"unexpected column(s) {unknown}; only generative runs (run.json extra.generative) may "
                           f"add {list(GENERATIVE_COLUMNS)}", path=path)
    try:  # ParquetFile.read, not pq.read_table: the latter imports pyarrow.dataset and pandas (~0.4 s)
        with pq.ParquetFile(path) as pf:
            table = pf.read(columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None
    check_utf8(table, path)
    return table


def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a Parquet file (``columns``, all when None): an unreadable file, missing columns or string columns that
    are not valid UTF-8 are a one-line :class:`SoiError` naming the file."""
    return _read_parquet(Path(path), columns)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_utf8(table: pa.Table, path: Path) -> None:
    """Refuse string columns (plain or dictionary) holding bytes that are not UTF-8.

    Parquet's string type promises UTF-8 but readers do not check it; soi refuses such text where it enters
    (docs/errors.md, "Text encodings") instead of failing later in the report or in comparisons.
    """
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        values = t.value_type if pa.types.is_dictionary(t) else t
        if not _is_text(values):
            continue
        for chunk in col.chunks:
            arr = chunk.dictionary if pa.types.is_dictionary(t) else chunk
            try:
                arr.validate(full=True)
            except pa.ArrowInvalid:
                raise SoiError(f"column {name!r} holds text that is not valid UTF-8; soi reads UTF-8 text only",
                               path=path) from None


_PART_TYPES = {"idx": pa.int32(), "checkpoint": pa.int32(), "step": pa.int64(), "gold": pa.int16(),
               "pred": pa.int16(), "p_gold": pa.float32(), "margin": pa.float32(), "loss": pa.float32(),
               **GENERATIVE_COLUMNS}
_EXAMPLE_TYPES = {"idx": pa.int32(), "gold": pa.int16(), "example_id": pa.string(), "task": pa.string(),
                  "source": pa.string(), "language": pa.string(), "text": pa.string(), "text_pair": pa.string()}
_NULLABLE = {"text", "text_pair", "generation", "source", "language"}


def _kind_ok(t: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_integer(expected):
        return pa.types.is_integer(t)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if pa.types.is_string(expected):
        return _is_text(t.value_type if pa.types.is_dictionary(t) else t)
    return True


def conform(table: pa.Table, types: dict[str, pa.DataType], path: Path, what: str = "") -> pa.Table:
    """``table`` with its known columns checked (type kind, no nulls) and numeric ones cast to the store types.

    A float ``pred``, a string ``p_gold``, nulls in ``step``, an int64 value beyond int16 ... are one-line
    :class:`SoiError` naming the file and column, never a silent truncation or a null read as 0.
    """
    for i, name in enumerate(table.column_names):
        expected = types.get(name)
        if expected is None:
            continue
        col = table.column(i)
        if not _kind_ok(col.type, expected):
            kind = "integers" if pa.types.is_integer(expected) else (
                "numbers" if pa.types.is_floating(expected) else "strings")
            raise SoiError(f"column {name!r}{what} must hold {kind}, found type {col.type}", path=path)
        if col.null_count and name not in _NULLABLE:
            raise SoiError(f"column {name!r}{what} has {col.null_count} null value(s)", path=path)
        if col.type != expected and not pa.types.is_string(expected):
            try:
                table = table.set_column(i, name, col.cast(expected, safe=True))
            except pa.ArrowInvalid:
                lo, hi = pc.min_max(col).values()
                raise SoiError(f"column {name!r}{what} has values out of range for {expected} "
                               f"({lo.as_py()}..{hi.as_py()})", path=path) from None
    return table


def _check_unique_ids(table: pa.Table, path: Path) -> None:
    dup = first_duplicate(table["example_id"])
    if dup is not None:
        raise SoiError(f"duplicate example_id {dup!r}", path=path)


def _labels_per_example(table: pa.Table, meta: RunMeta) -> np.ndarray:
    """Number of classes of each example's task (int64, shape (N,))."""
    codes, names = tag_codes(table, "task")
    return np.asarray([meta.num_labels(t) for t in names], np.int64)[codes]


def read_examples(run_dir: str | Path, meta: RunMeta | None = None, *, check_unique: bool = True) -> pa.Table:
    """Read and validate ``examples.parquet`` (row ``i`` has ``idx == i``, unique ``example_id``)."""
    run_dir = Path(run_dir)
    meta = meta or RunMeta.load(run_dir)
    path = run_dir / EXAMPLES_FILE
    if not path.is_file():
        raise SoiError("missing examples.parquet", path=path)
    table = _read_parquet(path)
    missing = [c for c in _REQUIRED_EXAMPLE_COLUMNS if c not in table.column_names]
    if missing:
        raise SoiError(f"missing column(s) {missing}", path=path)
    table = conform(table, _EXAMPLE_TYPES, path)
    n = table.num_rows
    idx = to_numpy(table["idx"])
    if not np.array_equal(idx, np.arange(n)):
        raise SoiError("column 'idx' must be 0..N-1 in row order", path=path)
    ids = table["example_id"]
    if ids.null_count:
        raise SoiError(f"column 'example_id' has {ids.null_count} null value(s)", path=path)
    if check_unique:
        _check_unique_ids(table, path)
    gold = to_numpy(table["gold"]).astype(np.int64)
    codes, names = tag_codes(table, "task")
    unknown = sorted(set(names) - set(meta.tasks))
    if unknown:
        raise SoiError(f"task {unknown[0]!r} is not in run.json tasks {sorted(meta.tasks)}", path=path)
    bad = np.flatnonzero((gold < 0) | (gold >= _labels_per_example(table, meta))) if n else []
    if len(bad):
        task = names[codes[bad[0]]]
        raise SoiError(f"gold label {int(gold[bad[0]])} of example {ids[int(bad[0])].as_py()!r} out of range "
                       f"for task {task!r} ({meta.num_labels(task)} labels)", path=path)
    return table


def list_parts(run_dir: str | Path, mode: str | None = None) -> dict[int, list[Path]]:
    """Dynamics parts by checkpoint index (checks the checkpoints are 0..E-1 without gaps)."""
    folder = dynamics_dir(run_dir, mode)
    if not folder.is_dir():
        raise SoiError("missing dynamics folder", path=folder)
    parts: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith((TMP_PREFIX, ".")) or path.suffix != ".parquet":
            continue
        m = PART_RE.match(path.name)
        if not m:
            raise SoiError("unexpected file name; parts are named ckpt-NNNNNN.rank-NNNN.parquet", path=path)
        parts.setdefault(int(m.group(1)), []).append(path)
    if not parts:
        raise SoiError("no dynamics parts found", path=folder)
    found = sorted(parts)
    missing = sorted(set(range(found[-1] + 1)) - set(found))
    if missing:
        raise SoiError(f"checkpoint gap: checkpoint(s) {missing[:5]} missing "
                       f"(found {len(found)} checkpoints up to {found[-1]})", path=folder)
    return parts


@dataclass(frozen=True, eq=False)
class Dynamics:
    """Dense per-example training dynamics of one run.

    Arrays are (N examples x E checkpoints) in ``examples.parquet`` row order; ``checkpoints`` and
    ``steps`` have length E.
    """

    meta: RunMeta
    examples: pa.Table
    checkpoints: np.ndarray
    steps: np.ndarray
    pred: np.ndarray
    p_gold: np.ndarray
    margin: np.ndarray
    loss: np.ndarray

    @property
    def n_examples(self) -> int:
        return self.examples.num_rows

    @property
    def n_checkpoints(self) -> int:
        return int(self.checkpoints.shape[0])

    @cached_property
    def gold(self) -> np.ndarray:
        return to_numpy(self.examples["gold"]).astype(np.int16)

    @cached_property
    def correct(self) -> np.ndarray:
        """Boolean (N, E): prediction equals gold."""
        return self.pred == self.gold[:, None]

    @cached_property
    def example_ids(self) -> np.ndarray:
        return self.examples["example_id"].to_numpy(zero_copy_only=False)

    def group_codes(self, key: str) -> tuple[np.ndarray, list[str]]:
        """Integer codes (N,) and their names for a tag column (``task``, ``source``, ``language``)."""
        return tag_codes(self.examples, key)


def tag_codes(table: pa.Table, key: str) -> tuple[np.ndarray, list[str]]:
    """Codes and names of a (dictionary) string column, names sorted."""
    if key not in table.column_names:
        raise SoiError(f"unknown group column {key!r}; available: {table.column_names}")
    col = table[key].combine_chunks() if table.num_rows else pa.array([], pa.string())
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    col = col.fill_null("") if col.null_count else col
    names = col.dictionary.to_pylist()
    codes = to_numpy(col.indices)
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    used = np.bincount(codes, minlength=order.size)[order] > 0  # by sorted position
    lut = np.empty(order.size, np.int32)  # dictionary position -> rank among the used names
    lut[order] = np.cumsum(used, dtype=np.int32) - 1
    sorted_names = [names[i] for i in order]
    out_names = [n for n, u in zip(sorted_names, used.tolist(), strict=True) if u]
    if np.array_equal(lut, np.arange(order.size)):  # sorted dictionary, every name used: the codes as they are
        return codes.astype(np.int32), out_names
    return lut[codes], out_names  # one gather through a small table (int32 in, int32 out)


def iter_checkpoints(run_dir: str | Path, columns: Sequence[str] = _REQUIRED_PART_COLUMNS,
                     mode: str | None = None) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(checkpoint, table)`` with all ranks' rows of each checkpoint (out-of-core friendly)."""
    for ckpt, paths in sorted(list_parts(run_dir, mode).items()):
        tables = [_read_parquet(p, columns) for p in paths]
        yield ckpt, pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _fill_checkpoint(j: int, ckpt: int, paths: list[Path], examples: pa.Table, gold: np.ndarray,
                     n_labels: np.ndarray, dense: dict[str, np.ndarray], generative: bool = False) -> int:
    """Read, validate and copy one checkpoint into row ``j`` of the checkpoint-major arrays; return its step."""
    where = paths[0] if len(paths) == 1 else paths[0].parent
    allowed = _PART_COLUMNS | set(GENERATIVE_COLUMNS) if generative else _PART_COLUMNS
    extra_floats = _GENERATIVE_FLOATS if generative else ()
    tables = [conform(_read_parquet(p, _REQUIRED_PART_COLUMNS, allowed=allowed, optional=extra_floats),
                      _PART_TYPES, p) for p in paths]
    if len(paths) > 1:
        sets = [_schema_names(p) for p in paths]
        for p, names in zip(paths[1:], sets[1:], strict=True):
            if names != sets[0]:
                diff = sorted(names ^ sets[0])
                raise SoiError(f"the rank parts of checkpoint {ckpt} have different columns: {paths[0].name} and "
                               f"{p.name} differ in {diff}", path=where)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return fill_checkpoint_table(j, ckpt, table, where, examples, gold, n_labels, dense, generative=generative)


def _schema_names(path: Path) -> set[str]:
    try:
        return set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None


def part_columns(generative: bool = False) -> tuple[tuple[str, ...], set[str], tuple[str, ...]]:
    """``(required, allowed, optional float)`` column names of a dynamics part (generative runs allow more)."""
    allowed = _PART_COLUMNS | set(GENERATIVE_COLUMNS) if generative else _PART_COLUMNS
    return _REQUIRED_PART_COLUMNS, allowed, (_GENERATIVE_FLOATS if generative else ())


def conform_examples(table: pa.Table, path: Path) -> pa.Table:
    """:func:`conform` with the ``examples.parquet`` column types (for readers of a slice, e.g. a shard)."""
    return conform(table, _EXAMPLE_TYPES, path)


def labels_per_example(table: pa.Table, meta: RunMeta) -> np.ndarray:
    """Number of classes of each example's task (int64, shape (N,))."""
    return _labels_per_example(table, meta)


def fill_checkpoint_table(j: int, ckpt: int, table: pa.Table, where: Path, examples: pa.Table, gold: np.ndarray,
                          n_labels: np.ndarray, dense: dict[str, np.ndarray], *, generative: bool = False,
                          offset: int = 0, step: int | None = None) -> int:
    """Validate one checkpoint's rows against ``examples`` and copy them into row ``j`` of ``dense``; its step.

    ``examples`` (and ``gold``, ``n_labels``) may be the slice of examples ``offset .. offset + len`` (a shard of
    :mod:`soi.store.shards`); ``table`` then holds exactly the rows whose ``idx`` falls in that range. With
    ``step``, the caller has checked the ``checkpoint`` and ``step`` columns already (from Parquet statistics) and
    ``table`` may lack them.
    """
    n = examples.num_rows
    extra_floats = _GENERATIVE_FLOATS if generative else ()
    table = conform(table, _PART_TYPES, where, f" at checkpoint {ckpt}")
    if n and not table.num_rows:
        raise SoiError(f"checkpoint {ckpt} has no rows ({n} example(s) missing)", path=where)
    if step is None:
        lo, hi = (pc.min_max(table["checkpoint"]).values() if table.num_rows else (None, None))
        if table.num_rows and not (lo.as_py() == hi.as_py() == ckpt):
            raise SoiError(f"column 'checkpoint' disagrees with the file name (checkpoint {ckpt})", path=where)
        lo, hi = (pc.min_max(table["step"]).values() if table.num_rows else (None, None))
        if lo is None or lo.as_py() != hi.as_py():
            raise SoiError(f"checkpoint {ckpt} must have one 'step' value in all rows", path=where)
        step = int(lo.as_py())
    raw = to_numpy(table["idx"])
    # fast path: n rows, strictly increasing from offset to offset + n - 1, i.e. exactly offset .. offset + n - 1
    contiguous = raw.size == n and (n == 0 or (int(raw[0]) == offset and int(raw[-1]) == offset + n - 1
                                               and bool((raw[1:] > raw[:-1]).all())))
    idx = raw
    order = None
    if not contiguous:
        idx = raw.astype(np.int64)
        idx = idx - offset if offset else idx
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise SoiError(f"idx out of range [0, {n}) at checkpoint {ckpt}", path=where)
        seen = np.bincount(idx, minlength=n)
        if (seen > 1).any():
            dup = int(np.flatnonzero(seen > 1)[0])
            raise SoiError(f"duplicate rows for example {examples['example_id'][dup].as_py()!r} "
                           f"(idx {dup + offset}) at checkpoint {ckpt}", path=where)
        if (seen == 0).any():
            miss = np.flatnonzero(seen == 0)
            raise SoiError(f"{miss.size} example(s) missing at checkpoint {ckpt}, e.g. "
                           f"{examples['example_id'][int(miss[0])].as_py()!r}", path=where)
        order = np.empty(n, np.int64)
        order[idx] = np.arange(n)
    for name in (*FLOAT_COLUMNS, *(c for c in extra_floats if c in table.column_names)):
        values = to_numpy(table[name])
        if not values.size:
            continue
        vmin, vmax = values.min(), values.max()  # NaN propagates through min/max: finite bounds = all finite
        if not (np.isfinite(vmin) and np.isfinite(vmax)):
            raise SoiError(f"column {name!r} has NaN or inf at checkpoint {ckpt}", path=where)
        if name in ("p_gold", "token_acc") and (vmin < 0 or vmax > 1):
            bad = int(np.flatnonzero((values < 0) | (values > 1))[0])
            row = bad if order is None else int(idx[bad])
            raise SoiError(f"column {name!r} is a probability but has {float(values[bad]):g} for example "
                           f"{examples['example_id'][row].as_py()!r} at checkpoint {ckpt}", path=where)
    part_gold = to_numpy(table["gold"])
    part_gold = part_gold if order is None else part_gold[order]
    if not np.array_equal(part_gold, gold):
        bad = int(np.flatnonzero(part_gold != gold)[0])
        raise SoiError(f"gold label of example {examples['example_id'][bad].as_py()!r} differs from "
                       f"examples.parquet at checkpoint {ckpt}", path=where)
    for name, out in dense.items():
        values = to_numpy(table[name])
        out[j] = values if order is None else values[order]
    pred = dense["pred"][j]
    bad = []
    if n and (pred.min() < 0 or pred.max() >= n_labels.min()):  # the full check only when the bounds say so
        bad = np.flatnonzero((pred < 0) | (pred >= n_labels))
    if len(bad):
        raise SoiError(f"predicted label {int(pred[bad[0]])} of example "
                       f"{examples['example_id'][int(bad[0])].as_py()!r} out of range "
                       f"[0, {int(n_labels[bad[0]])}) at checkpoint {ckpt}", path=where)
    return step


def check_max_checkpoints(max_checkpoints: int | None) -> None:
    """``max_checkpoints`` is None (all) or an integer >= 1 (0 or -1 would silently mean all / drop the last)."""
    if max_checkpoints is not None and (isinstance(max_checkpoints, bool) or not isinstance(max_checkpoints, int)
                                        or max_checkpoints < 1):
        raise SoiError(f"max_checkpoints must be an integer >= 1 (or None for all), got {max_checkpoints!r}")


def load_dynamics(run_dir: str | Path, *, mode: str | None = None,
                  max_checkpoints: int | None = None) -> Dynamics:
    """Read a run into dense arrays, validating every part against ``examples.parquet``.

    Checkpoints are read and validated in parallel threads (Parquet decoding and NumPy release the GIL).

    Parameters
    ----------
    run_dir : path of the run directory
    mode : secondary recording mode folder (``dynamics-<mode>/``); ``None`` reads ``dynamics/``
    max_checkpoints : read only the first checkpoints (like cartography's ``burn_out``)
    """
    check_max_checkpoints(max_checkpoints)
    run_dir = Path(run_dir)
    meta = RunMeta.load(run_dir)
    examples = read_examples(run_dir, meta, check_unique=False)
    gold = to_numpy(examples["gold"]).astype(np.int16)
    n = examples.num_rows
    if n == 0:
        raise SoiError("the run has no examples (examples.parquet has 0 rows); nothing to analyse",
                       path=run_dir / EXAMPLES_FILE)
    n_labels = _labels_per_example(examples, meta)
    parts = list_parts(run_dir, mode)
    ckpts = sorted(parts)[: max_checkpoints or None]
    e = len(ckpts)
    # checkpoint-major storage: each checkpoint is one contiguous row; callers see (N, E) F-ordered views,
    # so per-checkpoint fills and reductions over checkpoints both run over contiguous memory
    dense = {
        "pred": np.empty((e, n), np.int16),
        "p_gold": np.empty((e, n), np.float32),
        "margin": np.empty((e, n), np.float32),
        "loss": np.empty((e, n), np.float32),
    }
    workers = max(1, min(4, e, 2 * (os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:
        unique = pool.submit(_check_unique_ids, examples, run_dir / EXAMPLES_FILE)
        futures = [pool.submit(_fill_checkpoint, j, ckpt, parts[ckpt], examples, gold, n_labels, dense,
                               meta.is_generative) for j, ckpt in enumerate(ckpts)]
        unique.result()
        steps = np.asarray([f.result() for f in futures], np.int64)
    return Dynamics(meta=meta, examples=examples, checkpoints=np.asarray(ckpts, np.int64), steps=steps,
                    **{k: v.T for k, v in dense.items()})


def read_logits(run_dir: str | Path, checkpoint: int, *, mode: str | None = None) -> tuple[np.ndarray, list]:
    """``(idx, logits)`` of one checkpoint, when the run stored full logit vectors."""
    parts = list_parts(run_dir, mode)
    if checkpoint not in parts:
        raise SoiError(f"no checkpoint {checkpoint}", path=dynamics_dir(run_dir, mode))
    tables = [_read_parquet(p, ["idx", "logits"]) for p in parts[checkpoint]]
    table = pa.concat_tables(tables)
    return to_numpy(table["idx"]), table["logits"].to_pylist()
