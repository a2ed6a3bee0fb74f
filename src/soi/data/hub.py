"""Loading a registered dataset from its Hugging Face hub equivalent (only when asked: ``source="hub"``).

Hub rows are mapped to the same canonical rows as the local copies: columns renamed, labels mapped **by name**
(a ``ClassLabel``'s integer ids are turned into its names first, then renamed through the registry's
``label_map``), gold = index in the registry's label list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from soi.data._canon import Where, as_strings, canonicalize, sequence_ids
from soi.data.registry import DatasetEntry, HubSource, TaskType
from soi.data.split import Split
from soi.errors import SoiError

_S = pa.string()
PARQUET_REVISION = "refs/convert/parquet"  # the hub's automatic parquet export of every dataset repo


def _arrow(ds: Any) -> pa.Table:
    """A ``datasets.Dataset`` as a pyarrow table (respecting any indices mapping)."""
    if isinstance(ds, pa.Table):
        return ds
    return ds.with_format("arrow")[:]


def _class_names(ds: Any, column: str) -> list[str] | None:
    feature = getattr(ds, "features", {}).get(column)
    names = getattr(feature, "names", None)
    return list(names) if names is not None else None


def _label_names(raw: pa.ChunkedArray, names: list[str] | None, where: Where) -> pa.Array:
    """Hub label values as names: ClassLabel ids -> ``names[id]`` (out-of-range ids, e.g. GLUE's hidden -1, fail)."""
    raw = raw.combine_chunks()
    if names is None or not pa.types.is_integer(raw.type):
        return raw
    ids = raw.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((ids < 0) | (ids >= len(names))) if raw.null_count == 0 else np.array([], np.int64)
    if bad.size:
        row = int(bad[0])
        raise where.err(row, f"label id {int(ids[row])} is not a ClassLabel index 0..{len(names) - 1} "
                             "(hidden test labels?)")
    return pc.take(pa.array(names, _S), raw)


def _answer(table_cols: dict[str, Any], how: str | None, where: Where) -> pa.Array | None:
    if how == "gsm8k":
        found = pc.extract_regex(table_cols["response"].combine_chunks(), r"####\s*(?P<a>[^\n]*?)\s*$")
        return pc.replace_substring(found.field("a"), ",", "")
    if how == "number":
        return as_strings(table_cols["answer"], "answer", where)
    return table_cols.get("answer")


def _offline_hint() -> str:
    on = [k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k, "").lower() in ("1", "true")]
    return f"the hub is offline ({'/'.join(on)} set): unset it, or use a local copy (docs/data.md); " if on else ""


def _is_script_refusal(e: Exception) -> bool:
    text = str(e).lower()
    return "script" in text and ("no longer supported" in text or "not supported" in text or "trust_remote" in text)


def _fetch(hub: HubSource, split: str, config: str | None, hub_kwargs: Mapping[str, Any], label: str) -> Any:
    """``datasets.load_dataset`` with one-line errors; a refused loading script is retried on the parquet export."""
    import datasets

    kwargs = dict(hub_kwargs)
    try:
        try:
            ds = datasets.load_dataset(hub.path, config, split=hub.splits[split], **kwargs)
        except Exception as e:
            if not (hub.parquet_fallback and "revision" not in kwargs and _is_script_refusal(e)):
                raise
            ds = datasets.load_dataset(hub.path, config, split=hub.splits[split], revision=PARQUET_REVISION,
                                       **kwargs)
    except Exception as e:  # network, auth, missing repo / config / split, scripts refused by datasets>=4, ...
        first = " ".join(str(e).split())[:300]
        raise SoiError(f"could not load {label} ({type(e).__name__}: {first}); {_offline_hint()}{hub.note}") from None
    if isinstance(ds, Mapping):  # a DatasetDict (split ignored)
        ds = ds[hub.splits[split]]
    return ds


def _load_one(entry: DatasetEntry, hub: HubSource, split: str, config: str | None, language: str,
              hub_kwargs: Mapping[str, Any], id_prefix: str) -> tuple[dict[str, pa.Array], list[str] | None]:
    """Canonical columns of one hub split (labels as names) and the label column's ClassLabel names, if any."""
    hub_split = hub.splits[split]
    label = f"hub {hub.path}" + (f":{config}" if config else "") + f"[{hub_split}]"
    ds = _fetch(hub, split, config, hub_kwargs, label)
    table = _arrow(ds)
    where = Where(label)
    n = table.num_rows
    cols: dict[str, Any] = {}
    for canonical, column in hub.columns.items():
        if column not in table.column_names:
            raise SoiError(f"{label}: no column {column!r} (for {canonical}; map yours with columns: {{{canonical}: "
                           f"<column>}}); columns: {', '.join(table.column_names)}")
        cols[canonical] = table.column(column)
    names = None
    if "label" in cols:
        names = _class_names(ds, hub.columns["label"])
        cols["label"] = _label_names(cols["label"], names, where)
    if entry.type == "generative":
        cols["answer"] = _answer(cols, hub.answer_from, where)
        cols.setdefault("response", pa.repeat(pa.scalar("", _S), n))
    cols["id"] = sequence_ids(id_prefix, n)
    cols["language"] = pa.repeat(pa.scalar(language, _S), n)
    cols["source"] = pa.repeat(pa.scalar(entry.name, _S), n)
    if hub.parallel_id:
        head, _, tail = hub.parallel_id.partition("{row}")
        rows = sequence_ids(head.format(split=split), n)
        cols["parallel_id"] = pc.binary_join_element_wise(rows, pa.scalar(tail.format(split=split), _S), "")
    return cols, names


def load_hub_split(entry: DatasetEntry, split: str, *, languages: Sequence[str] | None = None,
                   hub_kwargs: Mapping[str, Any] | None = None) -> Split:
    """Load ``split`` of a registered dataset from the hub with ``datasets.load_dataset`` (needs internet)."""
    hub = entry.hub
    if hub is None:
        raise SoiError(f"{entry.name} has no hub equivalent soi can load ({entry.hub_note}); use the local copy")
    if split not in hub.splits:
        raise SoiError(f"split {split!r} of {entry.name} is not available from the hub ({hub.hub_id}); "
                       f"available: {', '.join(hub.splits)}; {hub.note}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise SoiError("loading from the hub needs the 'datasets' package: pip install 'soi[train]'") from None
    if hub.configs is not None:
        wanted = list(languages) if languages is not None else list(hub.configs)
        unknown = [x for x in wanted if x not in hub.configs]
        if unknown:
            raise SoiError(f"{entry.name}: no hub config for language(s) {unknown}; available: "
                           f"{', '.join(hub.configs)}")
        parts = [_load_one(entry, hub, split, hub.configs[lang], lang, hub_kwargs or {},
                           f"{entry.name}-{split}-{lang}-")[0] for lang in wanted]
    else:
        parts = [_load_one(entry, hub, split, hub.config, hub.language or "und", hub_kwargs or {},
                           f"{entry.name}-{split}-")[0]]
    cols = {k: pa.concat_arrays([_chunk(p[k]) for p in parts]) for k in parts[0]}
    where = Where(f"hub {hub.hub_id}[{hub.splits[split]}]")
    table = canonicalize(cols, type=entry.type, labels=entry.labels, where=where, label_map=hub.label_map,
                         labels_what=f"{entry.name}'s labels")
    return Split(table, name=entry.name, split=split, task=entry.task, type=entry.type, labels=entry.labels,
                 languages=tuple(languages) if languages is not None else entry.languages, path=hub.hub_id,
                 license=entry.license, hub=hub.hub_id, origin="hub", total_rows=table.num_rows)


def _chunk(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


_DEFAULT_COLUMNS: dict[str, dict[str, str]] = {"classification": {"text": "text", "label": "label"},
                                               "generative": {"prompt": "prompt"}}


@dataclass(frozen=True)
class HubDataset:
    """Any Hugging Face hub dataset, mapped to canonical rows (a study's ``origin: hub`` entry without a
    registered name).

    ``columns`` maps canonical column -> hub column (default ``text``/``label`` for classification, ``prompt`` for
    generative); ``splits`` maps soi split -> hub split (default identity for ``train``/``validation``/``test``);
    ``labels`` fixes the label order (= gold index); without it a ``ClassLabel`` column gives its names in its own
    order (after ``label_map``), and a plain column is an error. ``label_map`` renames hub label names (ClassLabel
    names, or raw values as strings). ``kwargs`` go to ``datasets.load_dataset`` (``revision``, ...).
    """

    name: str
    path: str
    config: str | None = None
    type: TaskType = "classification"
    columns: Mapping[str, str] = field(default_factory=dict)
    splits: Mapping[str, str] = field(default_factory=lambda: dict(_SPLIT_NAMES))
    labels: tuple[str, ...] | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    language: str = "und"
    task: str | None = None
    license: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    where: str = "hub dataset"  # how errors name this entry (e.g. "datasets.fr.hub")

    def source(self) -> HubSource:
        return HubSource(self.path, {**_DEFAULT_COLUMNS[self.type], **dict(self.columns)}, dict(self.splits),
                         config=self.config, language=self.language, label_map=dict(self.label_map),
                         note=f"check {self.where} (path, config, splits, columns)")

    def load(self, split: str) -> Split:
        """One split as a validated :class:`Split` (``datasets.load_dataset``; needs internet or the hub cache)."""
        hub = self.source()
        if split not in hub.splits:
            raise SoiError(f"{self.where}: split {split!r} not mapped; splits: {', '.join(hub.splits)} (add it to "
                           "splits: {soi split: hub split})")
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise SoiError("loading from the hub needs the 'datasets' package: pip install 'soi[train]'") from None
        entry = DatasetEntry(self.name, self.task or self.name, self.type, (self.language,), {}, self.license or "",
                             self.labels, hub)
        cols, names = _load_one(entry, hub, split, self.config, self.language, self.kwargs, f"{self.name}-{split}-")
        labels = self.labels
        if self.type == "classification" and labels is None:
            if names is None:
                raise SoiError(f"{self.where}: hub column {hub.columns['label']!r} is not a ClassLabel, so the label "
                               "order is unknown; set labels: [name, ...] (index = gold)")
            labels = tuple(dict.fromkeys(hub.label_map.get(x, x) for x in names))
        where = Where(f"hub {hub.hub_id}[{hub.splits[split]}]")
        table = canonicalize(cols, type=self.type, labels=labels, where=where, label_map=hub.label_map,
                             labels_what=f"{self.where}.labels (rename hub labels with label_map)")
        return Split(table, name=self.name, split=split, task=self.task or self.name, type=self.type, labels=labels,
                     languages=(self.language,), path=hub.hub_id, license=self.license, hub=hub.hub_id, origin="hub",
                     total_rows=table.num_rows)


_SPLIT_NAMES = {"train": "train", "validation": "validation", "test": "test"}
