"""Writing a run directory: ``examples.parquet`` and atomic dynamics parts.

Rows are derived from logits with :func:`rows_from_logits` (pure NumPy), so every recorder, importer
and test computes p_gold, prediction, margin and loss the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from soi._arrow import to_numpy
from soi._io import atomic_path, write_parquet
from soi.errors import SoiError
from soi.store.meta import EXAMPLES_FILE, RunMeta, dynamics_dir, part_name

TAG_COLUMNS = ("task", "source", "language")
_DICT = pa.dictionary(pa.int32(), pa.string())

EXAMPLES_SCHEMA = pa.schema(
    [
        ("idx", pa.int32()),
        ("example_id", pa.string()),
        ("task", _DICT),
        ("source", _DICT),
        ("language", _DICT),
        ("gold", pa.int16()),
        ("text", pa.string()),
        ("text_pair", pa.string()),
    ]
)

DYNAMICS_SCHEMA = pa.schema(
    [
        ("idx", pa.int32()),
        ("checkpoint", pa.int32()),
        ("step", pa.int64()),
        ("gold", pa.int16()),
        ("pred", pa.int16()),
        ("p_gold", pa.float32()),
        ("margin", pa.float32()),
        ("loss", pa.float32()),
    ]
)
LOGITS_FIELD = pa.field("logits", pa.list_(pa.float32()))
FLOAT_COLUMNS = ("p_gold", "margin", "loss")
GENERATIVE_COLUMNS = {"token_acc": pa.float32(), "logp": pa.float32(), "n_tokens": pa.int32(),
                      "generation": pa.string()}
"""Extra part columns allowed only in generative runs (run.json ``extra.generative``; see docs/store.md)."""

# Encodings chosen for size and read speed (see docs/store.md): sorted idx delta-packs to ~0 bits (lz4:
# zstd decodes that column ~10x slower for no gain), labels RLE, floats byte-stream-split so zstd can
# squeeze the sign/exponent bytes.
_PART_WRITE_OPTIONS = {
    "compression": {c: ("lz4" if c == "idx" else "zstd")
                    for c in (*DYNAMICS_SCHEMA.names, "logits", *GENERATIVE_COLUMNS)},
    "use_dictionary": ["checkpoint", "step", "gold", "pred", "n_tokens"],
    "column_encoding": {"idx": "DELTA_BINARY_PACKED",
                        **{c: "BYTE_STREAM_SPLIT" for c in (*FLOAT_COLUMNS, "token_acc", "logp")}},
    "write_statistics": ["idx", "checkpoint", "step"],
}
PART_WRITE_OPTIONS = _PART_WRITE_OPTIONS
"""Parquet writer options of every dynamics part (for writers outside this module, e.g. chunked ones)."""


def rows_from_logits(logits: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row dynamics from raw logits.

    Parameters
    ----------
    logits : array of shape (n, C), C >= 2
    gold : int array of shape (n,), values in [0, C)

    Returns
    -------
    dict with ``pred`` (argmax, ties to the lowest index as in NumPy and cartography), ``p_gold``
    (softmax probability of the gold class), ``margin`` (gold logit minus the largest other logit;
    Pleiss et al., 2020, AUM) and ``loss`` (cross-entropy, ``logsumexp(z) - z_gold``). Computed in
    float64 and stored as float32: ``p_gold`` is then within ~1e-7 of cartography's float32 torch softmax.
    """
    z = np.asarray(logits)
    gold = np.asarray(gold, dtype=np.int64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise SoiError(f"logits must have shape (n, C) with C >= 2, got {z.shape}")
    if gold.shape != (z.shape[0],):
        raise SoiError(f"gold must have shape ({z.shape[0]},), got {gold.shape}")
    if gold.size and (gold.min() < 0 or gold.max() >= z.shape[1]):
        raise SoiError(f"gold label out of range [0, {z.shape[1]}): found {int(gold.min())}..{int(gold.max())}")
    if not np.isfinite(z).all():
        raise SoiError("logits contain NaN or inf")
    rows = (_rows_by_class if z.shape[1] <= _COLUMN_LOOP_MAX_CLASSES else _rows_2d)(z, gold)
    return {
        "pred": rows[0].astype(np.int16),
        "p_gold": rows[1].astype(np.float32),
        "margin": rows[2].astype(np.float32),
        "loss": rows[3].astype(np.float32),
    }


_COLUMN_LOOP_MAX_CLASSES = 64


def _rows_by_class(z: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`rows_from_logits` for few classes: one pass per class, vectorised over rows (no (n, C) temporaries)."""
    n, c = z.shape
    col = [z[:, k].astype(np.float64, copy=False) for k in range(c)]
    zmax, pred = col[0].copy(), np.zeros(n, np.int64)
    for k in range(1, c):
        np.copyto(pred, k, where=col[k] > zmax)  # strict: ties keep the lower index
        np.maximum(zmax, col[k], out=zmax)
    z_gold = np.zeros(n, np.float64)
    other = np.full(n, -np.inf)
    sum_exp = np.zeros(n, np.float64)
    for k in range(c):
        is_gold = gold == k
        np.copyto(z_gold, col[k], where=is_gold)
        np.maximum(other, col[k], out=other, where=~is_gold)
        sum_exp += np.exp(col[k] - zmax)
    return pred, np.exp(z_gold - zmax) / sum_exp, z_gold - other, np.log(sum_exp) + zmax - z_gold


def _rows_2d(z: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`rows_from_logits` for many classes, with (n, C) array operations."""
    z64 = z.astype(np.float64, copy=False)
    rows = np.arange(z.shape[0])
    pred = z64.argmax(axis=1)
    z_gold = z64[rows, gold]
    others = z64.copy()
    others[rows, gold] = -np.inf
    zmax = z64.max(axis=1)
    sum_exp = np.exp(z64 - zmax[:, None]).sum(axis=1)
    return pred, np.exp(z_gold - zmax) / sum_exp, z_gold - others.max(axis=1), np.log(sum_exp) + zmax - z_gold


def _dict_column(values: Sequence[str] | np.ndarray | str | None, n: int, default: str) -> pa.Array:
    if values is None or isinstance(values, str):
        names = pa.array([values or default], pa.string())  # explicit type: no pyarrow pandas probe
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), names)
    arr = pa.array(values, pa.string())
    if len(arr) != n:
        raise SoiError(f"tag column has {len(arr)} values for {n} examples")
    return arr.fill_null(default).dictionary_encode()


def examples_table(
    example_ids: Sequence[str] | np.ndarray,
    gold: Sequence[int] | np.ndarray,
    *,
    task: Sequence[str] | np.ndarray | str,
    source: Sequence[str] | np.ndarray | str | None = None,
    language: Sequence[str] | np.ndarray | str | None = None,
    text: Sequence[str | None] | None = None,
    text_pair: Sequence[str | None] | None = None,
) -> pa.Table:
    """Build a valid ``examples.parquet`` table (row order = ``idx``).

    ``source`` defaults to the task name and ``language`` to ``"und"`` (ISO 639 "undetermined").
    """
    ids = pa.array([str(x) for x in example_ids] if not isinstance(example_ids, pa.Array) else example_ids,
                   pa.string())
    n = len(ids)
    gold_arr = np.asarray(gold)
    if gold_arr.shape != (n,):
        raise SoiError(f"gold has {gold_arr.size} values for {n} examples")
    task_col = _dict_column(task, n, "default")
    source_col = _dict_column(source, n, "") if source is not None else task_col
    cols = {
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "example_id": ids,
        "task": task_col,
        "source": source_col,
        "language": _dict_column(language, n, "und"),
        "gold": pa.array(gold_arr.astype(np.int16)),
        "text": pa.array(text if text is not None else [None] * n, pa.string()),
        "text_pair": pa.array(text_pair if text_pair is not None else [None] * n, pa.string()),
    }
    return pa.Table.from_pydict(cols, schema=EXAMPLES_SCHEMA)


EXAMPLES_WRITE_OPTIONS = {
    "compression": {c: ("lz4" if c == "idx" else "zstd") for c in EXAMPLES_SCHEMA.names},
    "use_dictionary": ["task", "source", "language", "gold"],
    "column_encoding": {"idx": "DELTA_BINARY_PACKED"},
}
"""Parquet writer options of ``examples.parquet``: ``idx`` delta-packed (0..N-1 packs to ~0 bits), no dictionary
for ids and texts (unique values; a dictionary only costs decoding). Row groups hold :data:`ROW_BLOCK` rows,
so a shard (:mod:`soi.store.shards`) decodes only its own examples."""


def write_examples(run_dir: str | Path, table: pa.Table) -> None:
    """Write ``examples.parquet`` atomically (one row group per :data:`ROW_BLOCK` rows)."""
    write_parquet(Path(run_dir) / EXAMPLES_FILE, table.cast(EXAMPLES_SCHEMA), row_group_size=ROW_BLOCK,
                  **EXAMPLES_WRITE_OPTIONS)


def dynamics_table(
    *,
    checkpoint: int,
    step: int,
    idx: np.ndarray,
    gold: np.ndarray,
    pred: np.ndarray,
    p_gold: np.ndarray,
    margin: np.ndarray,
    loss: np.ndarray,
    logits: np.ndarray | list[np.ndarray] | None = None,
    sort: bool = True,
) -> pa.Table:
    """Build one dynamics part (rows sorted by ``idx`` unless ``sort=False``)."""
    idx = np.asarray(idx, dtype=np.int32)
    n = idx.shape[0]
    cols: dict[str, np.ndarray] = {
        "idx": idx,
        "checkpoint": np.full(n, checkpoint, np.int32),
        "step": np.full(n, step, np.int64),
        "gold": np.asarray(gold, np.int16),
        "pred": np.asarray(pred, np.int16),
        "p_gold": np.asarray(p_gold, np.float32),
        "margin": np.asarray(margin, np.float32),
        "loss": np.asarray(loss, np.float32),
    }
    for name, col in cols.items():
        if col.shape != (n,):
            raise SoiError(f"dynamics column {name!r} has shape {col.shape}, expected ({n},)")
    for name in FLOAT_COLUMNS:
        if not np.isfinite(cols[name]).all():
            raise SoiError(f"dynamics column {name!r} contains NaN or inf at checkpoint {checkpoint}")
    order = np.argsort(idx, kind="stable") if sort and n and np.any(np.diff(idx) < 0) else None
    if order is not None:
        cols = {k: v[order] for k, v in cols.items()}
    arrays = [pa.array(cols[f.name], f.type) for f in DYNAMICS_SCHEMA]
    schema = DYNAMICS_SCHEMA
    if logits is not None:
        rows = list(logits) if not isinstance(logits, np.ndarray) else logits
        if order is not None:
            rows = [rows[i] for i in order] if isinstance(rows, list) else rows[order]
        if isinstance(rows, np.ndarray) and rows.ndim == 2:
            flat = pa.array(rows.astype(np.float32, copy=False).ravel())
            offsets = pa.array(np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int32))
            arrays.append(pa.ListArray.from_arrays(offsets, flat))
        else:
            arrays.append(pa.array([np.asarray(r, np.float32) for r in rows], LOGITS_FIELD.type))
        schema = schema.append(LOGITS_FIELD)
    return pa.Table.from_arrays(arrays, schema=schema)


ROW_BLOCK = 1 << 17
"""Dynamics parts are written with one row group per block of ``ROW_BLOCK`` consecutive ``idx`` values (rows
``idx // ROW_BLOCK == k`` form row group k), so every rank's part of every checkpoint can be read by example
range (:mod:`soi.store.shards`) without decoding rows of other ranges."""


def write_part(run_dir: str | Path, table: pa.Table, *, checkpoint: int, rank: int = 0,
               mode: str | None = None) -> Path:
    """Write one dynamics part atomically; rewriting the same (checkpoint, rank) replaces it.

    Row groups follow ``idx`` blocks of :data:`ROW_BLOCK` when the rows are sorted by ``idx`` (see there).
    """
    path = dynamics_dir(run_dir, mode) / part_name(checkpoint, rank)
    idx = to_numpy(table["idx"]) if table.num_rows else np.zeros(0, np.int32)
    if idx.size < 2 or np.any(np.diff(idx) < 0):
        write_parquet(path, table, **_PART_WRITE_OPTIONS)
        return path
    cuts = np.searchsorted(idx, np.arange(idx[0] // ROW_BLOCK + 1, idx[-1] // ROW_BLOCK + 1) * ROW_BLOCK)
    bounds = [0, *cuts.tolist(), idx.size]
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, table.schema, **_PART_WRITE_OPTIONS) as out:
        for a, b in itertools.pairwise(bounds):
            if b > a:
                out.write_table(table.slice(a, b - a), row_group_size=b - a)
    return path


class RunWriter:
    """Write a run directory from Python.

    Examples
    --------
    >>> meta = RunMeta(tasks={"sst2": ["negative", "positive"]})
    >>> w = RunWriter("runs/demo", meta)                                   # doctest: +SKIP
    >>> w.write_examples(examples_table(ids, gold, task="sst2"))          # doctest: +SKIP
    >>> w.write_logits(checkpoint=0, step=100, idx=idx, logits=logits, gold=gold)  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | Path, meta: RunMeta, *, mode: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.mode = mode
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta.save(self.run_dir)

    def write_examples(self, table: pa.Table) -> None:
        write_examples(self.run_dir, table)

    def write_logits(self, *, checkpoint: int, step: int, idx: np.ndarray, logits: np.ndarray,
                     gold: np.ndarray, rank: int = 0, keep_logits: bool = False) -> Path:
        """Derive rows from ``logits`` (n, C) and write them as the part (checkpoint, rank)."""
        rows = rows_from_logits(logits, gold)
        table = dynamics_table(checkpoint=checkpoint, step=step, idx=idx, gold=gold, **rows,
                               logits=np.asarray(logits) if keep_logits else None)
        return write_part(self.run_dir, table, checkpoint=checkpoint, rank=rank, mode=self.mode)
