"""A loaded split (canonical table + metadata), seeded subsampling, parallel helpers, and the store bridge."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from soi.data.registry import TaskType
from soi.errors import SoiError


def subsample_indices(num_rows: int, n: int | float | None, seed: int = 0) -> np.ndarray:
    """Row positions of a seeded subsample, sorted (so the subsample keeps file order).

    ``n``: ``None`` keeps all rows; an ``int >= 1`` is a row count (``n >= num_rows`` keeps all); a ``float`` in
    ``(0, 1]`` is a fraction (``round(f * num_rows)`` rows, halves rounded up). Without replacement.

    Every row gets a key from ``numpy.random.default_rng(seed).random(num_rows)`` (PCG64 doubles: the same on
    every platform) and the ``k`` smallest keys are kept. So a subsample is a prefix of a fixed random order:
    for one seed, a smaller ``n`` gives a subset of a larger one, and two splits with the same row count (e.g.
    the parallel ``massive_en`` / ``massive_fa``) get the same positions.
    """
    if num_rows < 0:
        raise SoiError(f"num_rows must be >= 0, got {num_rows}")
    k = _count(num_rows, n)
    if k >= num_rows:
        return np.arange(num_rows, dtype=np.int64)
    keys = np.random.default_rng(seed).random(num_rows)
    return np.sort(np.argsort(keys, kind="stable")[:k]).astype(np.int64)


def _count(num_rows: int, n: int | float | None) -> int:
    if n is None:
        return num_rows
    if isinstance(n, bool) or not isinstance(n, int | float | np.integer | np.floating):
        raise SoiError(f"n must be an int (rows) or a float fraction in (0, 1], got {n!r}")
    if isinstance(n, float | np.floating):
        if not 0.0 < n <= 1.0:
            raise SoiError(f"n as a fraction must be in (0, 1], got {n} (pass an int for a row count)")
        return min(num_rows, math.floor(float(n) * num_rows + 0.5))
    if n < 1:
        raise SoiError(f"n must be >= 1, got {n}")
    return min(num_rows, int(n))


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset as a validated pyarrow table plus metadata.

    ``table`` columns, classification: ``id, text, text_pair, label, gold (int32, index in labels), language,
    source, parallel_id, orig_id``; generative: ``id, prompt, response, answer, language, source, parallel_id,
    orig_id``. Rows are in file order (subsamples too).
    """

    table: pa.Table
    name: str  # dataset name (registry name or DataSpec name)
    split: str
    task: str  # task kind from info.json (sentiment, entailment, intent, math, ...)
    type: TaskType
    labels: tuple[str, ...] | None  # canonical label order (classification); None for generative
    languages: tuple[str, ...]
    path: str | None  # the file read (local/user), or the hub id
    license: str | None = None
    hub: str | None = None  # hub equivalent
    origin: str = "local"  # "local" | "hub" | "file"
    total_rows: int = 0  # rows in the split before language filtering / subsampling

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        n_labels = None if self.labels is None else len(self.labels)
        return (f"Split({self.name!r}, {self.split!r}, rows={len(self)}/{self.total_rows}, type={self.type!r}, "
                f"labels={n_labels}, languages={list(self.languages)}, origin={self.origin!r})")

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    @property
    def gold(self) -> np.ndarray:
        """Gold label indices (int64); classification only."""
        if self.type != "classification":
            raise SoiError(f"{self.name} is a generative dataset: it has no gold label indices")
        return np.asarray(self.table.column("gold").to_numpy(), dtype=np.int64)

    @property
    def parallel_ids(self) -> list[str | None]:
        """Per-row ``parallel_id`` (rows that translate the same item share it; ``None`` where unknown)."""
        return self.table.column("parallel_id").to_pylist()

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything but the table, as plain JSON-able values."""
        return {"name": self.name, "split": self.split, "task": self.task, "type": self.type,
                "labels": None if self.labels is None else list(self.labels), "languages": list(self.languages),
                "path": self.path, "license": self.license, "hub": self.hub, "origin": self.origin,
                "rows": len(self), "total_rows": self.total_rows}

    def take(self, positions: Sequence[int] | np.ndarray) -> Split:
        """Rows at ``positions`` (in the order given)."""
        return replace(self, table=self.table.take(pa.array(np.asarray(positions, dtype=np.int64))))

    def subsample(self, n: int | float | None, seed: int = 0) -> Split:
        """Seeded subsample, kept in file order (see :func:`subsample_indices`); a fraction of a non-empty split
        that rounds to 0 rows is a SoiError (it would make an empty run)."""
        idx = subsample_indices(len(self), n, seed)
        if not idx.size and len(self):
            raise SoiError(f"{self.path or self.name}: n = {n} of {len(self)} rows rounds to 0 rows; give a larger "
                           "fraction or a row count")
        return self.take(idx)

    def filter_languages(self, languages: Iterable[str]) -> Split:
        """Rows whose ``language`` is one of ``languages`` (SoiError if none match)."""
        wanted = [str(x) for x in languages]
        mask = pc.is_in(self.table.column("language"), value_set=pa.array(wanted, pa.string()))
        table = self.table.filter(mask)
        if table.num_rows == 0 and self.table.num_rows:
            have = sorted(set(self.table.column("language").to_pylist()))
            raise SoiError(f"{self.path or self.name}: no rows with language {wanted}; languages present: {have}")
        langs = tuple(x for x in self.languages if x in wanted) or tuple(wanted)
        return replace(self, table=table, languages=langs)

    def keep_labels(self, labels: Iterable[str]) -> Split:
        """Rows whose label is one of ``labels``; the label list shrinks to those (canonical order kept) and
        ``gold`` is re-indexed, e.g. airline's negative/positive rows next to binary sentiment datasets."""
        if self.labels is None:
            raise SoiError(f"{self.name} is a generative dataset: it has no labels to keep")
        wanted = [str(x) for x in labels]
        unknown = [x for x in wanted if x not in self.labels]
        if unknown:
            raise SoiError(f"{self.name}: unknown labels {unknown}; the dataset has {list(self.labels)}")
        kept = tuple(x for x in self.labels if x in wanted)
        table = self.table.filter(pc.is_in(self.table.column("label"), value_set=pa.array(kept, pa.string())))
        remap = np.full(len(self.labels), -1, np.int32)
        remap[[self.labels.index(x) for x in kept]] = np.arange(len(kept), dtype=np.int32)
        gold = pa.array(remap[np.asarray(table.column("gold").to_numpy(), np.int64)], table.schema.field("gold").type)
        table = table.set_column(table.schema.get_field_index("gold"), "gold", gold)
        return replace(self, table=table, labels=kept)

    def select_parallel(self, parallel_ids: Iterable[str]) -> Split:
        """Rows whose ``parallel_id`` is in ``parallel_ids`` (file order kept)."""
        value_set = pa.array(list(parallel_ids), pa.string())
        return replace(self, table=self.table.filter(pc.is_in(self.table.column("parallel_id"), value_set)))

    def to_pandas(self) -> Any:
        return self.table.to_pandas()

    def to_examples_table(self, task: str | None = None) -> pa.Table:
        """The dynamics store's examples table for this split (see :func:`to_examples_table`)."""
        return to_examples_table(self, task=task)

    def to_dataset(self) -> Any:
        """This split as a ``datasets.Dataset`` (provenance = :attr:`metadata` as JSON in ``info.description``).

        Classification: ``label`` is a ``ClassLabel`` over :attr:`labels` holding the gold index (the string
        ``label`` and the ``gold`` column become that one column), as ``Trainer`` expects; generative splits keep
        their columns. ``id``, ``language``, ``source``, ``parallel_id``, ``orig_id`` are kept.
        """
        table = self.table
        labels = None
        if self.type == "classification":
            table = table.drop(["label"]).rename_columns(["label" if c == "gold" else c for c in
                                                         table.drop(["label"]).column_names])
            labels = {"label": list(self.labels or ())}
        return hf_dataset(table, provenance={"soi": "split", **self.metadata}, class_labels=labels,
                          split=self.split, name=self.name, license=self.license)


def common_parallel_ids(*splits: Split) -> list[str]:
    """``parallel_id`` values present in every split, in the first split's row order."""
    if not splits:
        return []
    shared = set(x for x in splits[0].parallel_ids if x is not None)
    for s in splits[1:]:
        shared &= set(s.parallel_ids)
    return [x for x in splits[0].parallel_ids if x in shared]


def _task_of(split: Split, task: str | Mapping[str, str] | None) -> str:
    if task is None:
        return split.name
    if isinstance(task, str):
        return task
    return task.get(split.name, split.name)


def run_tasks(*splits: Split, task: str | Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{task: label names}`` for :class:`soi.store.RunMeta` (``tasks=``), matching :func:`to_examples_table`.

    Splits that share a task must share the label list (SoiError otherwise).
    """
    out: dict[str, list[str]] = {}
    for s in splits:
        if s.labels is None:
            raise SoiError(f"{s.name} is a generative dataset: the dynamics store needs classification labels")
        name = _task_of(s, task)
        if name in out and out[name] != list(s.labels):
            raise SoiError(f"task {name!r}: {s.name} has labels {list(s.labels)} but another split has "
                           f"{out[name]}; give them different task names")
        out[name] = list(s.labels)
    return out


def to_examples_table(*splits: Split, task: str | Mapping[str, str] | None = None) -> pa.Table:
    """Rows of one or more classification splits as a dynamics-store examples table (``soi.store.examples_table``).

    ``example_id`` = ``id``, ``gold`` = label index, ``source``, ``language``, ``text``, ``text_pair``; ``task`` is
    the dataset name by default (each dataset has its own label list; e.g. ``sst2`` and ``airline`` are both
    "sentiment" with 2 vs 3 labels), or ``task`` (one name for all, or ``{dataset name: task}``). Use
    :func:`run_tasks` for the matching ``RunMeta(tasks=...)``.
    """
    from soi.store import examples_table

    if not splits:
        raise SoiError("to_examples_table needs at least one split")
    run_tasks(*splits, task=task)  # generative / label-list conflicts
    tables = [s.table for s in splits]
    ids = pa.concat_arrays([t.column("id").combine_chunks() for t in tables])
    if pc.count_distinct(ids).as_py() != len(ids):
        raise SoiError("duplicate example ids across the splits (load each split of a dataset once)")
    col = {c: pa.concat_arrays([t.column(c).combine_chunks() for t in tables])
           for c in ("gold", "source", "language", "text", "text_pair")}
    tasks = np.concatenate([np.full(len(s), _task_of(s, task), dtype=object) for s in splits]) \
        if len(splits) > 1 else _task_of(splits[0], task)
    return examples_table(
        ids, col["gold"].to_numpy(zero_copy_only=False), task=tasks, source=col["source"].to_pylist(),
        language=col["language"].to_pylist(), text=col["text"].to_pylist(), text_pair=col["text_pair"].to_pylist(),
    )


def hf_dataset(table: pa.Table, *, provenance: Mapping[str, Any] | None = None,
               class_labels: Mapping[str, Sequence[str]] | None = None, split: str | None = None,
               name: str | None = None, license: str | None = None) -> Any:
    """A ``datasets.Dataset`` over ``table`` (Arrow memory shared, no row loop).

    Dictionary-encoded columns become plain strings; ``class_labels`` ``{column: names}`` turn integer columns into
    ``ClassLabel`` features; ``provenance`` is stored as JSON in ``info.description`` (``json.loads`` it back).
    """
    import json

    try:
        import datasets
        from datasets.table import InMemoryTable
    except ImportError:
        raise SoiError("converting to a datasets.Dataset needs the 'datasets' package: pip install 'soi[train]'") \
            from None
    cols = []
    for field_ in table.schema:
        col = table.column(field_.name)
        if pa.types.is_dictionary(field_.type):
            col = col.cast(field_.type.value_type)
        if class_labels and field_.name in class_labels:
            col = col.cast(pa.int64())
        cols.append(col)
    table = pa.table(cols, names=table.column_names)
    features = datasets.Features.from_arrow_schema(table.schema)
    for column, names in (class_labels or {}).items():
        if column not in features:
            raise SoiError(f"class_labels: no column {column!r}; columns: {', '.join(table.column_names)}")
        features[column] = datasets.ClassLabel(names=list(names))
    info = datasets.DatasetInfo(
        description=json.dumps(dict(provenance or {}), ensure_ascii=False, sort_keys=True, default=str),
        features=features, license=license or "", dataset_name=name)
    return datasets.Dataset(InMemoryTable(table), info=info, split=datasets.NamedSplit(split) if split else None)
