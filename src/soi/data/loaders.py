"""``load_split``: one entry point for registered datasets (local copy or hub) and user data specs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from soi.data._canon import FILE_SCHEMAS, Where, canonicalize, read_jsonl
from soi.data.hub import HubDataset, load_hub_split
from soi.data.registry import REGISTRY, DatasetEntry, dataset_dir, get_entry, read_info, resolve_data_dir
from soi.data.split import Split
from soi.data.translit import DERIVED
from soi.data.user import DataSpec, load_user_split
from soi.errors import SoiError

SpecLike = str | Path | DataSpec | Mapping[str, Any]


def as_spec(name_or_spec: SpecLike) -> DataSpec | None:
    """A :class:`DataSpec` for a spec object, mapping or ``.yaml``/``.yml`` path; ``None`` for a dataset name."""
    if isinstance(name_or_spec, DataSpec):
        return name_or_spec
    if isinstance(name_or_spec, Mapping):
        return DataSpec.from_dict(name_or_spec)
    if isinstance(name_or_spec, str | Path) and str(name_or_spec).lower().endswith((".yaml", ".yml")):
        return DataSpec.from_yaml(name_or_spec)
    return None


def load_local_split(name: str, split: str, data_dir: str | Path | None = None) -> Split:
    """Read ``<data dir>/<name>/<split>.jsonl`` (canonical layout), validated against its ``info.json``.

    Unregistered folders in the canonical layout load too (their ``info.json`` is the only metadata).
    """
    entry: DatasetEntry | None = REGISTRY.get(name)
    if entry is None:
        try:
            root = resolve_data_dir(data_dir)
        except SoiError:
            root = None
        if root is None or not (root / name / "info.json").is_file():
            get_entry(name)  # raises: unknown dataset, listing the known ones
    folder = dataset_dir(name, data_dir)
    info = read_info(folder)
    info_path = folder / "info.json"
    kind = info["type"]
    labels = tuple(info["labels"]) if kind == "classification" else None
    if entry is not None:
        if kind != entry.type:
            raise SoiError(f"field 'type' is {kind!r} but soi registers {name} as {entry.type!r}", path=info_path)
        if labels != entry.labels:
            raise SoiError(f"field 'labels' {list(labels or ())} differs from soi's registry "
                           f"{list(entry.labels or ())} (label order = gold index)", path=info_path)
    splits: dict[str, int] = info["splits"]
    if split not in splits:
        raise SoiError(f"split {split!r} not in dataset {name!r}; available: {', '.join(splits)}", path=info_path)
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        have = [s for s in splits if (folder / f"{s}.jsonl").is_file()]
        raise SoiError(f"file not found (split {split!r}); available: {', '.join(have) or 'none'}", path=path)
    raw = read_jsonl(path, FILE_SCHEMAS[kind])
    where = Where(str(path), path, jsonl=True)
    table = canonicalize({c: raw.column(c) for c in raw.column_names}, type=kind, labels=labels, where=where,
                         languages=info["languages"], labels_what="info.json labels")
    if table.num_rows != splits[split]:
        raise SoiError(f"has {table.num_rows} rows but info.json says {splits[split]} for split {split!r} "
                       "(truncated or edited file?)", path=path)
    hub = entry.hub.hub_id if entry is not None and entry.hub is not None else info.get("hub_equivalent")
    return Split(table, name=name, split=split, task=str(info["task"]), type=kind, labels=labels,
                 languages=tuple(info["languages"]), path=str(path), license=info.get("license"), hub=hub,
                 origin="local", total_rows=table.num_rows)


def load_split(
    name_or_spec: SpecLike,
    split: str,
    *,
    data_dir: str | Path | None = None,
    n: int | float | None = None,
    seed: int = 0,
    languages: Iterable[str] | None = None,
    source: Literal["local", "hub"] = "local",
    hub_kwargs: Mapping[str, Any] | None = None,
) -> Split:
    """Load one split as a validated :class:`Split`.

    Parameters
    ----------
    name_or_spec : a registered dataset name (see ``soi.data.dataset_names()``), a :class:`DataSpec`, a mapping
        with the same fields, or the path of a YAML spec file.
    split : ``train``, ``validation``, ``test`` (or your spec's split names).
    data_dir : where the canonical local copies live; default ``$SOI_DATA_DIR``, else ``./data``.
    n : seeded subsample: an int row count or a float fraction in (0, 1]; rows stay in file order (applied after
        the language filter). ``None`` keeps all.
    seed : subsampling seed (``numpy.random.default_rng``).
    languages : keep only rows in these languages (e.g. ``["de", "fr"]`` of ``mgsm``).
    source : ``"local"`` (default; never touches the network) or ``"hub"`` (``datasets.load_dataset`` on the
        registered hub equivalent; needs internet).
    hub_kwargs : extra keyword arguments for ``datasets.load_dataset`` (``revision``, ``cache_dir``, ...).
    """
    if source not in ("local", "hub"):
        raise SoiError(f"source must be 'local' or 'hub', got {source!r}")
    langs = None if languages is None else [languages] if isinstance(languages, str) else list(languages)
    spec = as_spec(name_or_spec)
    if spec is not None:
        if source == "hub":
            raise SoiError(f"source='hub' only applies to registered datasets, not the data spec {spec.name!r}")
        loaded = load_user_split(spec, split)
    elif not isinstance(name_or_spec, str):
        raise SoiError(f"expected a dataset name, DataSpec, mapping or YAML path, got {type(name_or_spec).__name__}")
    elif name_or_spec in DERIVED:
        loaded = load_derived_split(name_or_spec, split, data_dir=data_dir, source=source, hub_kwargs=hub_kwargs)
        if langs is not None:
            _check_languages(loaded.name, loaded.languages, langs)
    elif source == "hub":
        entry = get_entry(name_or_spec)
        if langs is not None:
            _check_languages(entry.name, entry.languages, langs)
        loaded = load_hub_split(entry, split, languages=langs if entry.hub and entry.hub.configs else None,
                                hub_kwargs=hub_kwargs)
    else:
        loaded = load_local_split(name_or_spec, split, data_dir)
        if langs is not None:
            _check_languages(loaded.name, loaded.languages, langs)
    if langs is not None:
        loaded = loaded.filter_languages(langs)
    return loaded.subsample(n, seed) if n is not None else loaded


def load_derived_split(name: str, split: str, *, data_dir: str | Path | None = None,
                       source: Literal["local", "hub"] = "local",
                       hub_kwargs: Mapping[str, Any] | None = None) -> Split:
    """One split of a derived dataset (:data:`soi.data.translit.DERIVED`, e.g. ``massive_fa_latn``): its base
    dataset's split (local copy or hub) with ``text`` / ``text_pair`` transformed, every row's ``language`` set to
    the derived code, ``id`` and ``source`` renamed (``massive_fa-test-0`` -> ``massive_fa_latn-test-0``);
    ``parallel_id``, labels and row order are the base's."""
    import pyarrow as pa

    d = DERIVED[name]
    base = load_split(d["base"], split, data_dir=data_dir, source=source, hub_kwargs=hub_kwargs)
    t = base.table
    cols = {c: t.column(c) for c in t.column_names}
    for c in ("text", "text_pair", "prompt"):
        if c in cols:
            cols[c] = pa.array([None if x is None else d["transform"](x) for x in cols[c].to_pylist()], pa.string())
    prefix = d["base"] + "-"
    cols["id"] = pa.array([name + "-" + x[len(prefix):] if x.startswith(prefix) else f"{name}-{x}"
                           for x in cols["id"].to_pylist()], pa.string())
    cols["language"] = pa.array([d["language"]] * t.num_rows, pa.string())
    if "source" in cols:
        cols["source"] = pa.array([name] * t.num_rows, pa.string())
    table = pa.table(cols, schema=t.schema)
    return Split(table, name=name, split=split, task=base.task, type=base.type, labels=base.labels,
                 languages=(d["language"],), path=base.path, license=base.license, hub=base.hub, origin=base.origin,
                 total_rows=table.num_rows)


def _check_languages(name: str, available: Iterable[str], wanted: list[str]) -> None:
    have = list(available)
    unknown = [x for x in wanted if x not in have]
    if unknown:
        raise SoiError(f"{name} has no language(s) {unknown}; available: {', '.join(have)}")


Origin = Literal["local", "hub", "auto"]


@dataclass(frozen=True)
class DataSource:
    """Where one dataset of a study comes from: a registered name or canonical folder (``origin="local"``), the
    registered name's hub equivalent (``origin="hub"``), either (``"auto"``: the local copy when the data dir has
    one, else the hub), any hub dataset (``hub``: a :class:`HubDataset`) or a data-spec YAML file (``spec``)."""

    name: str
    origin: Origin = "local"
    data_dir: str | Path | None = None
    hub: HubDataset | None = None
    spec: str | Path | None = None
    hub_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def kind(self) -> Literal["local", "hub", "file", "custom-hub"]:
        """What :meth:`load` reads: the local copy, the registered hub equivalent, a spec file or ``hub``."""
        if self.spec is not None:
            return "file"
        if self.hub is not None:
            return "custom-hub"
        if self.origin == "auto":
            try:
                dataset_dir(self.name, self.data_dir)
            except SoiError:
                return "hub"
            return "local"
        return self.origin

    def splits(self) -> tuple[str, ...]:
        """The split names available from this source."""
        kind = self.kind()
        if kind == "file":
            return tuple(DataSpec.from_yaml(self.spec).files)  # type: ignore[arg-type]
        if kind == "custom-hub":
            return tuple(self.hub.splits)  # type: ignore[union-attr]
        if kind == "hub":
            entry = get_entry(self.name)
            if entry.hub is None:
                raise SoiError(f"{self.name} has no hub equivalent soi can load ({entry.hub_note}); use a local copy")
            return tuple(entry.hub.splits)
        return tuple(read_info(dataset_dir(self.name, self.data_dir))["splits"])

    def load(self, split: str) -> Split:
        """One split as a validated :class:`Split`."""
        kind = self.kind()
        if kind == "file":
            return load_user_split(DataSpec.from_yaml(self.spec), split)  # type: ignore[arg-type]
        if kind == "custom-hub":
            return self.hub.load(split)  # type: ignore[union-attr]
        return load_split(self.name, split, data_dir=self.data_dir, source="hub" if kind == "hub" else "local",
                          hub_kwargs=self.hub_kwargs if kind == "hub" else None)
