"""soi.data: registry vs the shared copies, subsampling, user files, errors, hub mapping (fake load_dataset)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_data import SHARED, needs_dataset
from soi.data import (
    REGISTRY,
    DataSpec,
    common_parallel_ids,
    dataset_names,
    get_entry,
    load_split,
    registry_table,
    resolve_data_dir,
    run_tasks,
    subsample_indices,
    to_examples_table,
)
from soi.data.registry import HUB_ONLY
from soi.errors import SoiError

REPO = Path(__file__).resolve().parents[1]
needs_shared = needs_dataset("sst2")
ALL = sorted(n for n in REGISTRY if n not in HUB_ONLY)  # the datasets with a shared local copy


def _info(name: str) -> dict:
    return json.loads((SHARED / name / "info.json").read_text(encoding="utf-8"))


@pytest.fixture
def shared_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    return SHARED


# ---------------------------------------------------------------- registry vs the shared copies


def test_registry_names() -> None:
    assert sorted(["sst2", "mr", "cr", "trec", "airline", "mrpc", "rte", "farstail", "massive_en",
                          "massive_fa", "gsm8k", "mgsm", "oasst_fr"]) == ALL
    assert dataset_names() == sorted(ALL + list(HUB_ONLY)) and len(HUB_ONLY) == 49  # the other MASSIVE locales


@needs_shared
@pytest.mark.parametrize("name", ALL)
def test_registry_matches_info_json(name: str) -> None:
    info, e = _info(name), REGISTRY[name]
    assert (e.task, e.type, list(e.languages), dict(e.splits), e.license) == (
        info["task"], info["type"], info["languages"], info["splits"], info["license"])
    assert e.labels == (tuple(info["labels"]) if e.type == "classification" else None)
    unverified = "unverified" in info["hub_equivalent"] or "not compared" in info["hub_equivalent"]
    if e.hub is not None:
        assert e.hub.verified is not unverified
        assert e.hub.path in info["hub_equivalent"]
        assert set(e.hub.splits) <= set(e.splits)
        assert (e.hub.language in e.languages) if e.hub.configs is None else set(e.hub.configs) == set(e.languages)
        assert set(e.hub.label_map.values()) <= set(e.labels or ())


@needs_shared
@pytest.mark.parametrize("name", ALL)
def test_every_split_loads_with_info_counts(name: str, shared_env: Path) -> None:
    info = _info(name)
    for split, rows in info["splits"].items():
        s = load_split(name, split)
        t = s.table
        assert len(s) == s.total_rows == rows
        assert (s.name, s.split, s.type, s.task, s.origin) == (name, split, info["type"], info["task"], "local")
        assert list(s.languages) == info["languages"] and s.license == info["license"]
        assert s.path == str(SHARED / name / f"{split}.jsonl")
        ids = t.column("id").to_pylist()
        assert len(set(ids)) == rows and ids[0] == f"{name}-{split}-0"
        assert set(t.column("language").to_pylist()) <= set(info["languages"])
        assert set(t.column("source").to_pylist()) == {name}
        if s.type == "classification":
            assert list(s.labels) == info["labels"]
            names = t.column("label").to_pylist()
            assert [s.labels[g] for g in s.gold] == names
            counts = {lab: int(c) for lab, c in zip(s.labels, np.bincount(s.gold, minlength=len(s.labels)),
                                                     strict=True)}
            assert {k: v for k, v in counts.items() if v} == {k: v for k, v in info["label_counts"][split].items()
                                                             if v}
        else:
            assert s.labels is None and t.column_names[:3] == ["id", "prompt", "response"]


@needs_shared
def test_default_data_dir_and_explicit_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(SHARED)
    assert resolve_data_dir() == Path("data")
    assert len(load_split("rte", "validation")) == 277
    assert len(load_split("rte", "validation", data_dir=SHARED)) == 277


@needs_shared
def test_parallel_massive_and_mgsm(shared_env: Path) -> None:
    en, fa = load_split("massive_en", "validation"), load_split("massive_fa", "validation")
    assert en.parallel_ids == fa.parallel_ids and (en.gold == fa.gold).all()
    en_s, fa_s = load_split("massive_en", "test", n=50, seed=3), load_split("massive_fa", "test", n=50, seed=3)
    assert en_s.parallel_ids == fa_s.parallel_ids  # same row count + seed -> same positions
    gsm = load_split("gsm8k", "test")
    mgsm = load_split("mgsm", "test", languages=["de"])
    shared = common_parallel_ids(gsm, mgsm)
    assert len(shared) == 250
    a, b = gsm.select_parallel(shared), mgsm.select_parallel(shared)
    assert a.table.column("answer").to_pylist() == b.table.column("answer").to_pylist()


@needs_shared
def test_language_filter(shared_env: Path) -> None:
    s = load_split("mgsm", "test", languages=["fr", "ja"], n=20, seed=1)
    assert len(s) == 20 and s.total_rows == 2750 and s.languages == ("fr", "ja")
    assert set(s.table.column("language").to_pylist()) <= {"fr", "ja"}
    with pytest.raises(SoiError, match=r"mgsm has no language\(s\) \['fa'\]; available: en, bn"):
        load_split("mgsm", "test", languages=["fa"])


# ---------------------------------------------------------------- subsampling


def test_subsample_pinned_values() -> None:
    """Pinned: the PCG64 stream and the selection rule must not drift across platforms / versions."""
    assert subsample_indices(10, 3, seed=0).tolist() == [1, 2, 3]
    assert subsample_indices(20, 0.25, seed=13).tolist() == [3, 4, 7, 12, 17]


@settings(max_examples=150, deadline=None)
@given(num_rows=st.integers(0, 400), n=st.integers(1, 500), seed=st.integers(0, 2**32 - 1))
def test_subsample_properties(num_rows: int, n: int, seed: int) -> None:
    idx = subsample_indices(num_rows, n, seed)
    assert len(idx) == min(n, num_rows)
    assert np.all(np.diff(idx) > 0)  # sorted (file order) and without replacement
    assert idx.size == 0 or (idx[0] >= 0 and idx[-1] < num_rows)
    assert np.array_equal(idx, subsample_indices(num_rows, n, seed))  # deterministic
    smaller = subsample_indices(num_rows, max(1, n // 2), seed)
    assert set(smaller.tolist()) <= set(idx.tolist())  # nested in n
    if n >= num_rows:
        assert np.array_equal(idx, np.arange(num_rows))


@settings(max_examples=100, deadline=None)
@given(num_rows=st.integers(0, 300), frac=st.floats(0.001, 1.0), seed=st.integers(0, 1000))
def test_subsample_fraction(num_rows: int, frac: float, seed: int) -> None:
    idx = subsample_indices(num_rows, frac, seed)
    assert len(idx) == min(num_rows, int(np.floor(frac * num_rows + 0.5)))
    assert np.array_equal(subsample_indices(num_rows, 1.0, seed), np.arange(num_rows))


@pytest.mark.parametrize("bad", [0, -3, 1.5, 0.0, True, "10"])
def test_subsample_rejects_bad_n(bad) -> None:
    with pytest.raises(SoiError, match="n "):
        subsample_indices(10, bad)


@needs_shared
def test_load_split_subsample_keeps_file_order(shared_env: Path) -> None:
    full = load_split("sst2", "validation")
    a = load_split("sst2", "validation", n=100, seed=7)
    assert len(a) == 100 and a.ids == load_split("sst2", "validation", n=100, seed=7).ids
    pos = [int(i.rsplit("-", 1)[1]) for i in a.ids]
    assert pos == sorted(pos) and a.ids == [full.ids[p] for p in pos]
    assert a.ids != load_split("sst2", "validation", n=100, seed=8).ids
    assert len(load_split("sst2", "validation", n=10_000)) == 872
    assert len(load_split("sst2", "validation", n=0.5)) == 436


# ---------------------------------------------------------------- user files


ROWS = [
    {"rid": 10, "review": "great phone", "second": None, "stars": "pos", "lang": "en"},
    {"rid": 11, "review": "awful battery", "second": "really", "stars": "neg", "lang": "en"},
    {"rid": 12, "review": "très bien", "second": None, "stars": "pos", "lang": "fr"},
]
MAPPING = {"id": "rid", "text": "review", "text_pair": "second", "label": "stars", "language": "lang"}


def _write(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_user_file_with_mapping(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path / f"train.{fmt}", ROWS, fmt)
    spec = DataSpec(name="reviews", files={"train": path}, columns=MAPPING, source="shop", task="sentiment")
    s = load_split(spec, "train")
    assert s.labels == ("neg", "pos")  # inferred: sorted unique
    assert s.table.column("id").to_pylist() == ["10", "11", "12"]
    assert s.gold.tolist() == [1, 0, 1]
    assert s.table.column("text_pair").to_pylist() == [None, "really", None]  # "" in CSV -> null
    assert s.table.column("language").to_pylist() == ["en", "en", "fr"] and s.languages == ("en", "fr")
    assert set(s.table.column("source").to_pylist()) == {"shop"}
    assert (s.origin, s.task, s.total_rows) == ("file", "sentiment", 3)
    assert load_split(spec, "train", languages=["fr"]).ids == ["12"]


def test_user_yaml_spec_labels_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    rows = [{"sentence": f"s{i}", "y": y} for i, y in enumerate([2, 10, 2, 1])]
    _write(tmp_path / "d" / "train.jsonl", rows, "jsonl")
    _write(tmp_path / "d" / "dev.jsonl", [{"sentence": "t", "y": 3}], "jsonl")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("name: toy\nfiles: {train: d/train.jsonl, validation: d/dev.jsonl}\n"
                         "columns: {text: sentence, label: y}\nlanguage: de\n", encoding="utf-8")
    s = load_split(str(spec_path), "train")
    assert s.labels == ("1", "2", "3", "10")  # integer labels: numeric order, over all the spec's files
    assert s.gold.tolist() == [1, 3, 1, 0]
    assert s.ids == ["toy-train-0", "toy-train-1", "toy-train-2", "toy-train-3"]
    assert set(s.table.column("language").to_pylist()) == {"de"} and s.task == "toy"
    mapped = DataSpec(name="toy", files={"train": tmp_path / "d" / "train.jsonl"},
                      columns={"text": "sentence", "label": "y"},
                      label_map={1: "low", 2: "low", 3: "high", 10: "high"})
    s2 = load_split(mapped, "train")
    assert s2.labels == ("low", "high") and s2.gold.tolist() == [0, 1, 0, 0]
    given_labels = load_split({"name": "toy", "files": {"train": str(tmp_path / "d" / "train.jsonl")},
                               "columns": {"text": "sentence", "label": "y"}, "labels": ["10", "2", "1"]}, "train")
    assert given_labels.gold.tolist() == [1, 0, 1, 2]


def test_user_tsv_and_generative(tmp_path: Path) -> None:
    path = tmp_path / "qa.tsv"
    path.write_text("q\ta\tnum\nWhat is 2+2?\tIt is 4.\t4\n\"Multi\nline\"\t\t7.0\n", encoding="utf-8")
    spec = DataSpec(name="qa", type="generative", files={"test": path},
                    columns={"prompt": "q", "response": "a", "answer": "num"})
    s = load_split(spec, "test")
    assert s.table.column("prompt").to_pylist() == ["What is 2+2?", "Multi\nline"]
    assert s.table.column("response").to_pylist() == ["It is 4.", ""]
    assert s.table.column("answer").to_pylist() == ["4", "7"]
    assert s.labels is None
    with pytest.raises(SoiError, match="generative"):
        s.to_examples_table()


# ---------------------------------------------------------------- errors


def _toy(root: Path, rows: list[str] | None = None, **info_over) -> Path:
    """A canonical folder ``root/toy`` (unregistered name) with a train split."""
    folder = root / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows if rows is not None else [
        json.dumps({"id": f"toy-train-{i}", "text": f"t{i}", "text_pair": None, "label": lab, "language": "en",
                    "source": "toy"}) for i, lab in enumerate(["b", "a", "b"])]
    info = {"name": "toy", "task": "sentiment", "type": "classification", "labels": ["b", "a"], "languages": ["en"],
            "splits": {"train": len([r for r in rows if r.strip()]), "test": 1}, "license": "CC0"} | info_over
    (folder / "info.json").write_text(json.dumps(info), encoding="utf-8")
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _row(i: int, **over) -> str:
    r = {"id": f"toy-train-{i}", "text": f"t{i}", "text_pair": None, "label": "a", "language": "en",
         "source": "toy"} | over
    return json.dumps({k: v for k, v in r.items() if v is not ...})


def test_unregistered_canonical_folder_loads(tmp_path: Path) -> None:
    _toy(tmp_path)
    s = load_split("toy", "train", data_dir=tmp_path)
    assert s.labels == ("b", "a") and s.gold.tolist() == [0, 1, 0]


def test_unknown_dataset_lists_known(tmp_path: Path) -> None:
    with pytest.raises(SoiError, match=r"unknown dataset 'sst3'; known: airline, cr, .*trec"):
        load_split("sst3", "train", data_dir=tmp_path)
    with pytest.raises(SoiError, match="unknown dataset"):
        get_entry("nope")


def test_data_dir_not_found_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SoiError, match=r"data dir not found: .*nowhere \(from the data_dir argument\); "
                                       r"set SOI_DATA_DIR=<dir>, pass data_dir=<dir>, or load from the hub with "
                                       r"source='hub'"):
        load_split("sst2", "train", data_dir=missing)
    monkeypatch.setenv("SOI_DATA_DIR", str(missing))
    with pytest.raises(SoiError, match=r"nowhere \(from \$SOI_DATA_DIR\)"):
        load_split("sst2", "train")
    monkeypatch.delenv("SOI_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SoiError, match=r"data dir not found: data \(from the default ./data"):
        load_split("sst2", "train")
    with pytest.raises(SoiError, match=r"dataset 'sst2' not found in data dir .*present: toy"):
        _toy(tmp_path / "d")
        load_split("sst2", "train", data_dir=tmp_path / "d")


def test_missing_split_lists_available(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    with pytest.raises(SoiError, match=r"info.json: split 'validation' not in dataset 'toy'; available: train, test"):
        load_split("toy", "validation", data_dir=tmp_path)
    with pytest.raises(SoiError, match=r"test.jsonl: file not found \(split 'test'\); available: train"):
        load_split("toy", "test", data_dir=tmp_path)
    assert folder.is_dir()


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([_row(0), _row(1, label="zzz")], r"train.jsonl:2 \(id 'toy-train-1'\): label 'zzz' not in info.json labels"),
        ([_row(0), "", _row(1, text="  ")], r"train.jsonl:3 \(id 'toy-train-1'\): empty text"),
        ([_row(0), '{"id": "x", "text": oops}'], r"train.jsonl:2: bad JSON"),
        ([_row(0), "[1, 2]"], r"train.jsonl:2: not a JSON object"),
        ([_row(0), _row(1, label=3)], r"train.jsonl:2: field 'label' must be a string or null, got number"),
        ([_row(0, label=...), _row(1, label=...)], r"train.jsonl: missing column 'label'"),
        ([_row(0), _row(1, label=None)], r"train.jsonl:2 \(id 'toy-train-1'\): missing value for 'label'"),
        ([_row(0), _row(0)], r"train.jsonl:2: duplicate id 'toy-train-0' \(first at line 1\)"),
        ([_row(0), _row(1, language="xx")], r"train.jsonl:2 \(id 'toy-train-1'\): language 'xx' not in info.json"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, rows: list[str], pattern: str) -> None:
    _toy(tmp_path, rows)
    with pytest.raises(SoiError, match=pattern) as err:
        load_split("toy", "train", data_dir=tmp_path)
    assert str(tmp_path / "toy" / "train.jsonl") in str(err.value) and "\n" not in str(err.value)


def test_row_count_and_info_problems(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    info = json.loads((folder / "info.json").read_text())
    (folder / "info.json").write_text(json.dumps(info | {"splits": {"train": 5}}))
    with pytest.raises(SoiError, match=r"train.jsonl: has 3 rows but info.json says 5"):
        load_split("toy", "train", data_dir=tmp_path)
    (folder / "info.json").write_text(json.dumps({k: v for k, v in info.items() if k != "labels"}))
    with pytest.raises(SoiError, match=r"info.json: field 'labels' must be a non-empty list"):
        load_split("toy", "train", data_dir=tmp_path)
    (folder / "info.json").write_text("{nope")
    with pytest.raises(SoiError, match=r"info.json: not valid JSON"):
        load_split("toy", "train", data_dir=tmp_path)


@needs_shared
def test_info_labels_must_match_registry(tmp_path: Path) -> None:
    shutil.copytree(SHARED / "rte", tmp_path / "rte")
    info = json.loads((tmp_path / "rte" / "info.json").read_text())
    (tmp_path / "rte" / "info.json").write_text(json.dumps(info | {"labels": info["labels"][::-1]}))
    with pytest.raises(SoiError, match=r"rte/info.json: field 'labels' .* differs from soi's registry"):
        load_split("rte", "validation", data_dir=tmp_path)


def test_user_file_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.csv", ROWS, "csv")
    with pytest.raises(SoiError, match=r"train.csv: missing column 'body' \(mapped to text\); columns: rid, review"):
        load_split(DataSpec(name="r", files={"train": path}, columns={"text": "body", "label": "stars"}), "train")
    with pytest.raises(SoiError, match=r"train.csv: missing column 'text' \(map yours with columns"):
        load_split(DataSpec(name="r", files={"train": path}, columns={"label": "stars"}), "train")
    with pytest.raises(SoiError, match=r"train.csv: row 1 \(id '11'\): label 'neg' not in the spec's labels"):
        load_split(DataSpec(name="r", files={"train": path}, columns=MAPPING, labels=("pos", "meh")), "train")
    with pytest.raises(SoiError, match=r"split 'test' not in data spec 'r'; available: train"):
        load_split(DataSpec(name="r", files={"train": path}, columns=MAPPING), "test")
    with pytest.raises(SoiError, match=r"columns: unknown canonical column 'txt'"):
        DataSpec(name="r", files={"train": path}, columns={"txt": "review"})
    empty = _write(tmp_path / "e.jsonl", [{"text": "ok", "label": "a"}, {"text": "", "label": "a"}], "jsonl")
    with pytest.raises(SoiError, match=r"e.jsonl:2 \(id 'r-train-1'\): empty text"):
        load_split(DataSpec(name="r", files={"train": empty}), "train")
    mixed = _write(tmp_path / "m.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "x"}], "jsonl")
    with pytest.raises(SoiError, match=r"m.jsonl:2: field 'label' is string here but number on line 1"):
        load_split(DataSpec(name="r", files={"train": mixed}), "train")
    bad_yaml = tmp_path / "s.yaml"
    bad_yaml.write_text("name: r\nfiles: {train: x.jsonl}\ncolumn: {text: a}\n")
    with pytest.raises(SoiError, match=r"s.yaml: unknown field 'column'"):
        load_split(bad_yaml, "train")
    with pytest.raises(SoiError, match=r"cannot tell the file format from '.txt'"):
        load_split(DataSpec(name="r", files={"train": tmp_path / "a.txt"}), "train")
    with pytest.raises(SoiError, match="source='hub' only applies to registered datasets"):
        load_split(DataSpec(name="r", files={"train": path}), "train", source="hub")


# ---------------------------------------------------------------- hub (fake datasets.load_dataset)


class FakeHub:
    """Stands in for ``datasets.load_dataset``: returns in-memory Datasets and records the calls."""

    def __init__(self, tables: dict) -> None:
        self.tables = tables
        self.calls: list[tuple] = []

    def __call__(self, path: str, name: str | None = None, split: str | None = None, **kwargs):
        self.calls.append((path, name, split, kwargs))
        key = (path, name, split)
        if key not in self.tables:
            raise ValueError(f"Unknown split {split!r}")
        return self.tables[key]()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch):
    datasets = pytest.importorskip("datasets")

    def install(tables: dict) -> FakeHub:
        fake = FakeHub(tables)
        monkeypatch.setattr(datasets, "load_dataset", fake)
        return fake

    return datasets, install


def test_hub_massive_reordered_classlabel_maps_by_name(fake_hub) -> None:
    datasets, install = fake_hub
    labels = list(REGISTRY["massive_en"].labels)
    hub_order = labels[::-1]  # the hub's ClassLabel order differs from soi's alphabetical order
    rows = {"id": ["1", "7", "9"], "utt": ["wake me up at five", "quiet", "pink is all we need"],
            "intent": [hub_order.index("alarm_set"), hub_order.index("audio_volume_mute"),
                       hub_order.index("iot_hue_lightchange")], "scenario": [0, 1, 2]}
    features = datasets.Features({"id": datasets.Value("string"), "utt": datasets.Value("string"),
                                  "intent": datasets.ClassLabel(names=hub_order),
                                  "scenario": datasets.Value("int64")})
    fake = install({("AmazonScience/massive", "en-US", "test"): lambda: datasets.Dataset.from_dict(rows, features)})
    s = load_split("massive_en", "test", source="hub", hub_kwargs={"revision": "abc"})
    assert fake.calls == [("AmazonScience/massive", "en-US", "test", {"revision": "abc"})]
    assert s.table.column("label").to_pylist() == ["alarm_set", "audio_volume_mute", "iot_hue_lightchange"]
    assert s.gold.tolist() == [labels.index("alarm_set"), labels.index("audio_volume_mute"),
                               labels.index("iot_hue_lightchange")]
    assert s.ids == ["massive_en-test-0", "massive_en-test-1", "massive_en-test-2"]
    assert s.parallel_ids == ["massive-test-0", "massive-test-1", "massive-test-2"]
    assert s.table.column("orig_id").to_pylist() == ["1", "7", "9"]
    assert (s.origin, s.hub, s.labels) == ("hub", "AmazonScience/massive:en-US", tuple(labels))
    assert s.table.schema == load_split_schema("classification")


def load_split_schema(kind: str) -> pa.Schema:
    from soi.data import CLASSIFICATION_SCHEMA, GENERATIVE_SCHEMA

    return CLASSIFICATION_SCHEMA if kind == "classification" else GENERATIVE_SCHEMA


def test_hub_int_labels_pairs_and_errors(fake_hub) -> None:
    datasets, install = fake_hub
    sst = {"text": ["good", "bad"], "label": [1, 0], "label_text": ["positive", "negative"]}
    glue = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                              "idx": datasets.Value("int32")})
    rte = {"sentence1": ["A man sleeps.", "It rains."], "sentence2": ["A man rests.", "It is dry."], "label": [0, 1],
           "idx": [0, 1]}
    hidden = {**rte, "label": [-1, -1]}
    install({
        ("SetFit/sst2", None, "train"): lambda: datasets.Dataset.from_dict(sst),
        ("nyu-mll/glue", "rte", "validation"): lambda: datasets.Dataset.from_dict(rte, glue),
        ("nyu-mll/glue", "rte", "train"): lambda: datasets.Dataset.from_dict(hidden, glue),
    })
    s = load_split("sst2", "train", source="hub")
    assert s.table.column("label").to_pylist() == ["positive", "negative"] and s.gold.tolist() == [1, 0]
    r = load_split("rte", "validation", source="hub", n=1, seed=0)
    assert len(r) == 1 and r.table.column("text_pair").to_pylist()[0] in ("A man rests.", "It is dry.")
    with pytest.raises(SoiError, match=r"hub nyu-mll/glue:rte\[train\]: row 0: label id -1 is not a ClassLabel"):
        load_split("rte", "train", source="hub")
    with pytest.raises(SoiError, match=r"split 'test' of mrpc is not available from the hub .* available: train, "
                                       r"validation"):
        load_split("mrpc", "test", source="hub")
    with pytest.raises(SoiError, match=r"farstail has no hub equivalent soi can load"):
        load_split("farstail", "train", source="hub")
    with pytest.raises(SoiError, match=r"could not load hub SetFit/sst2\[test\] \(ValueError: Unknown split"):
        load_split("sst2", "test", source="hub")


def test_hub_generative_mgsm_and_gsm8k(fake_hub) -> None:
    datasets, install = fake_hub

    def mgsm(lang: str):
        return lambda: datasets.Dataset.from_dict({"question": [f"{lang} q0", f"{lang} q1"], "answer": [None, None],
                                                   "answer_number": [18, 1200], "equation_solution": [None, None]})

    gsm = {"question": ["How many?"], "answer": ["3 + 4 = <<3+4=7>>7\n#### 1,007"]}
    install({("juletxara/mgsm", lang, "test"): mgsm(lang) for lang in ("de", "fr")}
            | {("openai/gsm8k", "main", "test"): lambda: datasets.Dataset.from_dict(gsm)})
    m = load_split("mgsm", "test", source="hub", languages=["fr", "de"])
    assert m.ids == ["mgsm-test-fr-0", "mgsm-test-fr-1", "mgsm-test-de-0", "mgsm-test-de-1"]
    assert m.table.column("answer").to_pylist() == ["18", "1200"] * 2
    assert m.table.column("response").to_pylist() == [""] * 4
    assert m.parallel_ids == ["mgsm-0", "mgsm-1"] * 2 and m.languages == ("fr", "de")
    g = load_split("gsm8k", "test", source="hub")
    assert g.table.column("answer").to_pylist() == ["1007"]
    assert g.table.column("response").to_pylist() == gsm["answer"]


# ---------------------------------------------------------------- store bridge, docs


@needs_shared
def test_examples_table_round_trip(shared_env: Path, tmp_path: Path) -> None:
    from soi.store import RunMeta, RunWriter, read_examples

    sst, mr = load_split("sst2", "validation", n=30, seed=1), load_split("mr", "validation", n=20, seed=1)
    ex = to_examples_table(sst, mr)
    assert ex.num_rows == 50 and ex.column("example_id").to_pylist() == sst.ids + mr.ids
    assert ex.column("gold").to_pylist() == sst.gold.tolist() + mr.gold.tolist()
    assert set(ex.column("task").to_pylist()) == {"sst2", "mr"}
    assert ex.column("text").to_pylist()[:30] == sst.table.column("text").to_pylist()
    RunWriter(tmp_path / "run", RunMeta(tasks=run_tasks(sst, mr))).write_examples(ex)
    assert read_examples(tmp_path / "run").column("example_id").to_pylist() == ex.column("example_id").to_pylist()
    joint = to_examples_table(sst, mr, task="sentiment")
    assert set(joint.column("task").to_pylist()) == {"sentiment"}
    assert set(joint.column("source").to_pylist()) == {"sst2", "mr"}
    air = load_split("airline", "validation", n=5)
    with pytest.raises(SoiError, match=r"task 'sentiment': airline has labels"):
        to_examples_table(sst, air, task="sentiment")
    rte = load_split("rte", "validation", n=5).to_examples_table()
    assert rte.column("text_pair").null_count == 0


def test_docs_list_every_dataset() -> None:
    doc = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    for name in ALL:
        assert re.search(rf"^\| `{name}` \|", doc, flags=re.M), name
    assert registry_table() in doc
