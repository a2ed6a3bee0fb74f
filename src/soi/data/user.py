"""User data: JSONL / CSV / TSV / Parquet files described by a :class:`DataSpec` (Python, dict or YAML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from soi.data._canon import INPUT_COLUMNS, Where, as_strings, canonicalize, read_jsonl, sequence_ids
from soi.data.registry import TaskType
from soi.data.split import Split
from soi.errors import SoiError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
_SPEC_KEYS = ("name", "files", "type", "task", "columns", "labels", "label_map", "language", "source", "format",
              "delimiter", "license")


@dataclass(frozen=True)
class DataSpec:
    """Your own data files, one per split, with a column mapping to soi's canonical columns.

    ``columns`` maps canonical column -> your column (``text, text_pair, label, id, language, source,
    parallel_id, orig_id`` for classification; ``prompt, response, answer, id, language, source, parallel_id,
    orig_id`` for generative). Unmapped canonical columns are taken from a column of the same name when the file
    has one; otherwise ``id`` = ``<name>-<split>-<row>``, ``language`` = ``language``, ``source`` = ``source`` (or
    ``name``), ``response`` = ``""``, the rest null.

    Label order (= gold index): ``labels`` if given; else the values of ``label_map`` in order; else the sorted
    unique labels over *all* the spec's files (numeric order for an integer column). ``label_map`` renames raw
    values (keys compared as strings: ``{0: negative}`` matches ``0`` and ``"0"``).
    """

    name: str
    files: Mapping[str, str | Path]
    type: TaskType = "classification"
    task: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    label_map: Mapping[str, str] | None = None
    language: str = "und"
    source: str | None = None
    format: str | None = None  # jsonl | csv | tsv | parquet; default from each file's suffix
    delimiter: str | None = None  # csv only
    license: str | None = None
    base_dir: Path | None = None  # relative file paths resolve here (the YAML file's folder), else the cwd
    spec_path: Path | None = None

    def __post_init__(self) -> None:
        where = self.spec_path or "DataSpec"
        if not isinstance(self.name, str) or not self.name:
            raise SoiError("field 'name' must be a non-empty string", path=where)
        if self.type not in INPUT_COLUMNS:
            raise SoiError(f"field 'type' must be 'classification' or 'generative', got {self.type!r}", path=where)
        if not isinstance(self.files, Mapping) or not self.files:
            raise SoiError("field 'files' must map split name -> file path", path=where)
        allowed = INPUT_COLUMNS[self.type]
        for key, value in self.columns.items():
            if key not in allowed:
                raise SoiError(f"columns: unknown canonical column {key!r} for {self.type} data; "
                               f"allowed: {', '.join(allowed)}", path=where)
            if not isinstance(value, str):
                raise SoiError(f"columns.{key} must be a column name, got {value!r}", path=where)
        if self.type == "generative" and (self.labels is not None or self.label_map is not None):
            raise SoiError("labels / label_map only apply to classification data", path=where)
        if self.labels is not None:
            labels = tuple(self.labels)
            if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
                raise SoiError("field 'labels' must be a list of distinct non-empty names", path=where)
            object.__setattr__(self, "labels", labels)
        if self.label_map is not None:
            object.__setattr__(self, "label_map", {str(k): str(v) for k, v in self.label_map.items()})
        if self.format is not None and self.format not in ("jsonl", "csv", "tsv", "parquet"):
            raise SoiError(f"field 'format' must be jsonl, csv, tsv or parquet, got {self.format!r}", path=where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | Path | None = None,
                  spec_path: str | Path | None = None) -> DataSpec:
        """Build from a plain mapping (e.g. parsed YAML); unknown keys are an error."""
        where = spec_path or "DataSpec"
        if not isinstance(data, Mapping):
            raise SoiError("a data spec must be a mapping", path=where)
        for key in data:
            if key not in _SPEC_KEYS:
                raise SoiError(f"unknown field {key!r}; allowed: {', '.join(_SPEC_KEYS)}", path=where)
        for key in ("name", "files"):
            if key not in data:
                raise SoiError(f"missing field {key!r}", path=where)
        kwargs = dict(data)
        for key in ("columns", "label_map", "files"):
            if key in kwargs and kwargs[key] is not None and not isinstance(kwargs[key], Mapping):
                raise SoiError(f"field {key!r} must be a mapping", path=where)
        kwargs["columns"] = dict(kwargs.get("columns") or {})
        if kwargs.get("labels") is not None:
            if not isinstance(kwargs["labels"], list | tuple):
                raise SoiError("field 'labels' must be a list", path=where)
            kwargs["labels"] = tuple(str(x) for x in kwargs["labels"])
        return cls(**kwargs, base_dir=None if base_dir is None else Path(base_dir),
                   spec_path=None if spec_path is None else Path(spec_path))

    @classmethod
    def from_yaml(cls, path: str | Path) -> DataSpec:
        """Read a YAML spec; relative file paths are relative to the YAML file."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SoiError("spec file not found", path=path) from None
        except yaml.YAMLError as e:
            raise SoiError(f"not valid YAML ({' '.join(str(e).split())})", path=path) from None
        return cls.from_dict(data or {}, base_dir=path.parent, spec_path=path)

    def file(self, split: str) -> Path:
        if split not in self.files:
            raise SoiError(f"split {split!r} not in data spec {self.name!r}; available: {', '.join(self.files)}",
                           path=self.spec_path)
        path = Path(self.files[split]).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def file_format(self, path: Path) -> str:
        if self.format is not None:
            return self.format
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise SoiError(f"cannot tell the file format from {path.suffix!r}; set format: jsonl|csv|tsv|parquet",
                           path=path)
        return fmt


def read_table(path: Path, fmt: str, delimiter: str | None = None) -> pa.Table:
    """Read a whole user file (types inferred)."""
    if not path.is_file():
        raise SoiError("file not found", path=path)
    if fmt == "jsonl":
        return read_jsonl(path)
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        sep = delimiter or ("\t" if fmt == "tsv" else ",")
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True),
                             convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError) as e:
        raise SoiError(f"cannot read as {fmt} ({' '.join(str(e).split())[:300]})", path=path) from None


def _column(table: pa.Table, spec: DataSpec, canonical: str, required: bool, path: Path) -> pa.ChunkedArray | None:
    mapped = spec.columns.get(canonical)
    name = mapped or canonical
    if name in table.column_names:
        return table.column(name)
    have = ", ".join(table.column_names)
    if mapped is not None:
        raise SoiError(f"missing column {mapped!r} (mapped to {canonical}); columns: {have}", path=path)
    if required:
        raise SoiError(f"missing column {canonical!r} (map yours with columns: {{{canonical}: <column>}}); "
                       f"columns: {have}", path=path)
    return None


def infer_labels(spec: DataSpec) -> tuple[str, ...]:
    """Label order for a classification spec (see :class:`DataSpec`)."""
    if spec.labels is not None:
        return spec.labels
    if spec.label_map:
        return tuple(dict.fromkeys(spec.label_map.values()))
    values: list[pa.Array] = []
    numeric = True
    for split in spec.files:
        path = spec.file(split)
        fmt = spec.file_format(path)
        table = read_table(path, fmt, spec.delimiter)
        col = _column(table, spec, "label", True, path)
        col = col.combine_chunks().drop_null()
        numeric &= pa.types.is_integer(col.type)
        values.append(col)
    if numeric:
        uniq = np.unique(np.concatenate([v.to_numpy(zero_copy_only=False) for v in values]))
        return tuple(str(int(x)) for x in uniq)
    where = Where(str(spec.spec_path or spec.name))
    names = {x for v in values for x in as_strings(v, "label", where).to_pylist()}
    return tuple(sorted(names))


def load_user_split(spec: DataSpec, split: str) -> Split:
    """Load one split of a :class:`DataSpec` as a validated :class:`Split`."""
    path = spec.file(split)
    fmt = spec.file_format(path)
    table = read_table(path, fmt, spec.delimiter)
    n = table.num_rows
    required = {"text", "label"} if spec.type == "classification" else {"prompt"}
    cols: dict[str, pa.Array | pa.ChunkedArray | None] = {}
    for canonical in INPUT_COLUMNS[spec.type]:
        cols[canonical] = _column(table, spec, canonical, canonical in required, path)
    if cols["id"] is None:
        cols["id"] = sequence_ids(f"{spec.name}-{split}-", n)
    if cols["language"] is None:
        cols["language"] = pa.repeat(pa.scalar(spec.language, pa.string()), n)
    if cols["source"] is None:
        cols["source"] = pa.repeat(pa.scalar(spec.source or spec.name, pa.string()), n)
    if spec.type == "generative" and cols["response"] is None:
        cols["response"] = pa.repeat(pa.scalar("", pa.string()), n)
    labels = infer_labels(spec) if spec.type == "classification" else None
    out = canonicalize(cols, type=spec.type, labels=labels, where=Where(str(path), path, jsonl=fmt == "jsonl"),
                       label_map=spec.label_map, labels_what="the spec's labels")
    languages = tuple(sorted(set(pc.unique(out.column("language")).to_pylist())))
    return Split(out, name=spec.name, split=split, task=spec.task or spec.name, type=spec.type, labels=labels,
                 languages=languages, path=str(path), license=spec.license, origin="file", total_rows=n)
