"""Canonical split tables: reading JSONL fast, validating rows, mapping label names to gold indices.

All checks are vectorised (pyarrow compute); Python only runs per row on the error path, to find the line
to report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from soi.data.registry import TaskType
from soi.errors import SoiError

_S = pa.string()
CLASSIFICATION_SCHEMA = pa.schema(
    [("id", _S), ("text", _S), ("text_pair", _S), ("label", _S), ("gold", pa.int32()), ("language", _S),
     ("source", _S), ("parallel_id", _S), ("orig_id", _S)]
)
GENERATIVE_SCHEMA = pa.schema(
    [("id", _S), ("prompt", _S), ("response", _S), ("answer", _S), ("language", _S), ("source", _S),
     ("parallel_id", _S), ("orig_id", _S)]
)
SCHEMAS: dict[str, pa.Schema] = {"classification": CLASSIFICATION_SCHEMA, "generative": GENERATIVE_SCHEMA}
REQUIRED = {"classification": ("id", "text", "label", "language", "source"),
            "generative": ("id", "prompt", "response", "language", "source")}
OPTIONAL = {"classification": ("text_pair", "parallel_id", "orig_id"),
            "generative": ("answer", "parallel_id", "orig_id")}
NON_EMPTY = {"classification": ("text",), "generative": ("prompt",)}
# Input columns per task type (what files hold and a user mapping may name): everything but the derived gold index.
INPUT_COLUMNS = {t: tuple(c for c in s.names if c != "gold") for t, s in SCHEMAS.items()}
FILE_SCHEMAS = {t: pa.schema([f for f in s if f.name != "gold"]) for t, s in SCHEMAS.items()}


def _json_line_of_row(path: Path, row: int) -> int:
    """1-based line number of the ``row``-th JSON object (pyarrow skips blank lines, so count non-blank ones)."""
    seen = -1
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip(b" \t\r\n"):
                seen += 1
                if seen == row:
                    return lineno
    return -1


@dataclass(frozen=True)
class Where:
    """Where rows came from, to name them in errors: a JSONL file (file:line), another file or a hub split (row)."""

    label: str
    path: Path | None = None
    jsonl: bool = False

    def row_name(self, row: int) -> str:
        """``line N`` (1-based, JSONL files) or ``row N`` (0-based data row)."""
        if self.jsonl and self.path is not None:
            return f"line {_json_line_of_row(self.path, row)}"
        return f"row {row}"

    def err(self, row: int, message: str, row_id: str | None = None) -> SoiError:
        if self.jsonl and self.path is not None:
            loc = f"{self.label}:{_json_line_of_row(self.path, row)}"
        else:
            loc = f"{self.label}: row {row}"
        if row_id is not None:
            loc += f" (id {row_id!r})"
        e = SoiError(f"{loc}: {message}")
        e.path = self.path
        return e

    def whole(self, message: str) -> SoiError:
        e = SoiError(f"{self.label}: {message}")
        e.path = self.path
        return e


def read_jsonl(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """Read a JSONL file with pyarrow (``schema``: explicit column types, other fields ignored).

    Parse problems are re-diagnosed line by line and reported as ``file:line: ...``.
    """
    if not path.is_file():
        raise SoiError("file not found", path=path)
    opts = (pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema is not None
            else pj.ParseOptions())
    try:
        return pj.read_json(path, parse_options=opts, read_options=pj.ReadOptions(block_size=1 << 22))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        _diagnose_jsonl(path, set(schema.names) if schema is not None else None)
        raise SoiError(f"cannot read as JSONL ({str(e).splitlines()[0]})", path=path) from None


def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), "null")


def _diagnose_jsonl(path: Path, string_fields: set[str] | None) -> None:
    """Raise SoiError at the first line pyarrow could not have read (bad JSON, not an object, wrong/mixed types)."""
    first_kind: dict[str, tuple[str, int]] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip(b" \t\r\n"):
                continue
            loc = f"{path}:{lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SoiError(f"{loc}: not valid UTF-8") from None
            except json.JSONDecodeError as e:
                raise SoiError(f"{loc}: bad JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise SoiError(f"{loc}: not a JSON object (got {_json_kind(obj)})")
            for key, value in obj.items():
                kind = _json_kind(value)
                if string_fields is not None:
                    if key in string_fields and kind not in ("string", "null"):
                        raise SoiError(f"{loc}: field {key!r} must be a string or null, got {kind}")
                elif kind != "null":
                    seen = first_kind.setdefault(key, (kind, lineno))
                    if seen[0] != kind:
                        raise SoiError(f"{loc}: field {key!r} is {kind} here but {seen[0]} on line {seen[1]}")


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    """Index of the first true value of a boolean array (-1 if none)."""
    idx = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
    return int(idx[0]) if idx.size else -1


def _combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def as_strings(arr: pa.Array | pa.ChunkedArray, name: str, where: Where) -> pa.Array:
    """Cast a column of scalars to ``string`` (ints become ``"1"``; integral floats ``"1"``, not ``"1.0"``)."""
    arr = _combine(arr)
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_large_string(t) or pa.types.is_null(t) or pa.types.is_dictionary(t):
        return arr.cast(_S)
    if pa.types.is_floating(t):
        vals = arr.drop_null().to_numpy(zero_copy_only=False)
        if np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)) and np.all(np.abs(vals) < 2**53):
            arr = arr.cast(pa.int64())
        return arr.cast(_S)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return arr.cast(_S)
    raise where.whole(f"column {name!r} must hold strings or numbers, got {t}")


def gold_indices(raw: pa.Array, labels: Sequence[str], where: Where, label_map: Mapping[str, str] | None = None,
                 ids: pa.Array | None = None, what: str = "labels") -> tuple[pa.Array, pa.Array]:
    """Map raw label values (names, or values renamed by ``label_map``) to (label names, int32 gold indices).

    Vectorised through dictionary encoding: Python only touches the distinct values.
    """
    enc = pc.dictionary_encode(_combine(as_strings(raw, "label", where)))
    distinct = enc.dictionary.to_pylist()
    index = {name: i for i, name in enumerate(labels)}
    mapped = [(label_map or {}).get(v, v) for v in distinct]
    code_to_gold = np.array([index.get(m, -1) for m in mapped] + [-1], dtype=np.int32)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    gold = code_to_gold[codes]
    bad = np.flatnonzero(gold < 0)
    if bad.size:
        row = int(bad[0])
        value = distinct[codes[row]]
        shown = f"{value!r}" + (f" (mapped to {mapped[codes[row]]!r})" if mapped[codes[row]] != value else "")
        raise where.err(row, f"label {shown} not in {what} {list(labels)}", _id(ids, row))
    names = pc.take(pa.array(list(labels), _S), pa.array(gold))
    return names, pa.array(gold, pa.int32())


def _id(ids: pa.Array | None, row: int) -> str | None:
    return None if ids is None or not ids[row].is_valid else ids[row].as_py()


def canonicalize(cols: Mapping[str, pa.Array | pa.ChunkedArray | None], *, type: TaskType,
                 labels: Sequence[str] | None, where: Where, label_map: Mapping[str, str] | None = None,
                 languages: Sequence[str] | None = None, labels_what: str = "labels") -> pa.Table:
    """Validate canonical columns and build the split table (schema :data:`SCHEMAS` ``[type]``).

    ``cols`` holds canonical column name -> array; absent optional columns become null. Checks: required columns
    present and non-null, non-empty text/prompt, labels in ``labels`` (gold = index in that list), languages in
    ``languages`` (when given), unique ids. Empty optional values (``""``) become null.
    """
    present = {k: v for k, v in cols.items() if v is not None}
    n = len(next(iter(present.values()))) if present else 0
    out: dict[str, pa.Array] = {}
    for name in REQUIRED[type]:
        arr = present.get(name)
        if arr is None or (n and arr.null_count == n):
            raise where.whole(f"missing column {name!r}")
        arr = as_strings(arr, name, where) if name != "label" else _combine(arr)
        if arr.null_count:
            row = _first(pc.is_null(arr))
            raise where.err(row, f"missing value for {name!r}", _id(out.get("id"), row))
        out[name] = arr
    ids = out["id"]
    for name in NON_EMPTY[type]:
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(out[name])), 0)
        if pc.any(empty).as_py():
            row = _first(empty)
            raise where.err(row, f"empty {name}", _id(ids, row))
    for name in OPTIONAL[type]:
        arr = present.get(name)
        if arr is None:
            out[name] = pa.nulls(n, _S)
            continue
        arr = as_strings(arr, name, where)
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0)
        out[name] = pc.if_else(blank, pa.scalar(None, _S), arr) if pc.any(blank).as_py() else arr
    if type == "classification":
        if labels is None:
            raise where.whole("classification data needs a label list")
        out["label"], out["gold"] = gold_indices(out["label"], labels, where, label_map, ids, labels_what)
    if languages is not None:
        bad = pc.invert(pc.is_in(out["language"], value_set=pa.array(list(languages), _S)))
        if pc.any(bad).as_py():
            row = _first(bad)
            raise where.err(row, f"language {out['language'][row].as_py()!r} not in info.json languages "
                                 f"{list(languages)}", _id(ids, row))
    if n and pc.count_distinct(ids).as_py() != n:
        seen: dict[str, int] = {}
        for row, value in enumerate(ids.to_pylist()):
            if value in seen:
                raise where.err(row, f"duplicate id {value!r} (first at {where.row_name(seen[value])})")
            seen[value] = row
    schema = SCHEMAS[type]
    return pa.Table.from_arrays([out[f.name] for f in schema], schema=schema)


def sequence_ids(prefix: str, n: int) -> pa.Array:
    """``prefix0 .. prefix{n-1}`` as a string array, without a Python loop over rows."""
    nums = pa.array(np.arange(n, dtype=np.int64)).cast(_S)
    return pc.binary_join_element_wise(pa.scalar(prefix, _S), nums, "")
