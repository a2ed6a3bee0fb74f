"""Loading a registered dataset from its Hugging Face hub equivalent (only when asked: ``source="hub"``).

Hub rows are mapped to the same canonical rows as the local copies: columns renamed, labels mapped **by name**
(a ``ClassLabel``'s integer ids are turned into its names first, then renamed through the registry's
``label_map``), gold = index in the registry's label list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from soi.data._canon import Where, as_strings, canonicalize, sequence_ids
from soi.data.registry import DatasetEntry, HubSource
from soi.data.split import Split
from soi.errors import SoiError

_S = pa.string()


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


def _load_one(entry: DatasetEntry, hub: HubSource, split: str, config: str | None, language: str,
              hub_kwargs: Mapping[str, Any], id_prefix: str) -> dict[str, pa.Array]:
    import datasets

    hub_split = hub.splits[split]
    label = f"hub {hub.path}" + (f":{config}" if config else "") + f"[{hub_split}]"
    try:
        ds = datasets.load_dataset(hub.path, config, split=hub_split, **dict(hub_kwargs))
    except Exception as e:  # network, auth, missing repo, scripts refused by datasets>=4, ...
        first = " ".join(str(e).split())[:300]
        raise SoiError(f"could not load {label} ({type(e).__name__}: {first}); {hub.note}") from None
    if isinstance(ds, Mapping):  # a DatasetDict (split ignored)
        ds = ds[hub_split]
    table = _arrow(ds)
    where = Where(label)
    n = table.num_rows
    cols: dict[str, Any] = {}
    for canonical, column in hub.columns.items():
        if column not in table.column_names:
            raise SoiError(f"{label}: no column {column!r} (for {canonical}); columns: {', '.join(table.column_names)}")
        cols[canonical] = table.column(column)
    if "label" in cols:
        cols["label"] = _label_names(cols["label"], _class_names(ds, hub.columns["label"]), where)
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
    return cols


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
                           f"{entry.name}-{split}-{lang}-") for lang in wanted]
    else:
        parts = [_load_one(entry, hub, split, hub.config, hub.language or "und", hub_kwargs or {},
                           f"{entry.name}-{split}-")]
    cols = {k: pa.concat_arrays([_chunk(p[k]) for p in parts]) for k in parts[0]}
    where = Where(f"hub {hub.hub_id}[{hub.splits[split]}]")
    table = canonicalize(cols, type=entry.type, labels=entry.labels, where=where, label_map=hub.label_map,
                         labels_what=f"{entry.name}'s labels")
    return Split(table, name=entry.name, split=split, task=entry.task, type=entry.type, labels=entry.labels,
                 languages=tuple(languages) if languages is not None else entry.languages, path=hub.hub_id,
                 license=entry.license, hub=hub.hub_id, origin="hub", total_rows=table.num_rows)


def _chunk(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
