"""Hub and file data in studies: registered MASSIVE locales, any hub dataset (fake ``datasets.load_dataset``;
nothing is downloaded), data-spec files, one-line errors, and a study mixing the three end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from soi.config import StudyConfig  # noqa: E402
from soi.data import REGISTRY, DataSource, HubDataset, load_split, registry_table  # noqa: E402
from soi.data.registry import MASSIVE_LOCALES  # noqa: E402
from soi.errors import SoiError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

LABELS = list(REGISTRY["massive_en"].labels)
SCRIPT_ERROR = RuntimeError("Dataset scripts are no longer supported, but found massive.py")


class FakeHub:
    """``datasets.load_dataset`` stand-in: in-memory Datasets keyed by (path, config, split, revision)."""

    def __init__(self, tables: dict, script_repos: tuple[str, ...] = ()) -> None:
        self.tables, self.script_repos, self.calls = tables, script_repos, []

    def __call__(self, path, name=None, split=None, **kwargs):
        self.calls.append((path, name, split, kwargs.get("revision")))
        if path in self.script_repos and kwargs.get("revision") != "refs/convert/parquet":
            raise SCRIPT_ERROR
        key = (path, name, split)
        if key not in self.tables:
            raise FileNotFoundError(f"Couldn't find a dataset script or data files for {path}")
        return self.tables[key]()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    def install(tables: dict, script_repos: tuple[str, ...] = ()) -> FakeHub:
        fake = FakeHub(tables, script_repos)
        monkeypatch.setattr(datasets, "load_dataset", fake)
        return fake

    return install


def massive_rows(locale: str, intents: list[str], hub_order: list[str]):
    feats = datasets.Features({"id": datasets.Value("string"), "utt": datasets.Value("string"),
                               "intent": datasets.ClassLabel(names=hub_order)})
    rows = {"id": [str(10 + i) for i in range(len(intents))],
            "utt": [f"{locale} utterance {i}" for i in range(len(intents))],
            "intent": [hub_order.index(x) for x in intents]}
    return lambda: datasets.Dataset.from_dict(rows, feats)


def test_every_massive_locale_is_registered() -> None:
    assert len(MASSIVE_LOCALES) == 51
    for locale, lang in MASSIVE_LOCALES.items():
        e = REGISTRY[f"massive_{lang.lower().replace('-', '_')}"]
        assert (e.hub.path, e.hub.config, e.languages, e.labels) == ("AmazonScience/massive", locale, (lang,),
                                                                     tuple(LABELS))
        assert e.hub.columns["label"] == "intent" and e.hub.parquet_fallback
    assert REGISTRY["massive_fr"].hub.hub_id == "AmazonScience/massive:fr-FR"
    assert "`massive_fr`" in registry_table() and "`massive_zh_tw`" in registry_table()


def test_massive_fr_maps_intents_by_name_through_the_parquet_export(hub) -> None:
    intents = ["alarm_set", "weather_query", "alarm_set", "iot_coffee"]
    hub_order = sorted(LABELS, key=lambda x: (len(x), x))  # any order other than soi's alphabetical one
    fake = hub({("AmazonScience/massive", "fr-FR", "train"): massive_rows("fr", intents, hub_order)},
               script_repos=("AmazonScience/massive",))
    s = load_split("massive_fr", "train", source="hub")
    # the loading script is refused first, then the parquet export is read
    assert fake.calls == [("AmazonScience/massive", "fr-FR", "train", None),
                          ("AmazonScience/massive", "fr-FR", "train", "refs/convert/parquet")]
    assert s.table.column("label").to_pylist() == intents
    assert s.gold.tolist() == [LABELS.index(x) for x in intents]
    assert s.ids == [f"massive_fr-train-{i}" for i in range(4)]
    assert s.parallel_ids == [f"massive-train-{i}" for i in range(4)]
    assert (s.languages, s.origin, s.hub) == (("fr",), "hub", "AmazonScience/massive:fr-FR")


def test_hub_errors_are_one_line_and_say_how_to_fix(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'AmazonScience/massive' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SoiError) as err:
        load_split("massive_fr", "train", source="hub")
    msg = str(err.value)
    assert "\n" not in msg and "AmazonScience/massive:fr-FR[train]" in msg and "HF_HUB_OFFLINE" in msg
    assert "$SOI_DATA_DIR/<name>/" in msg  # the offline recipe
    feats = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.Value("string")})
    hub({("org/ds", None, "train"): lambda: datasets.Dataset.from_dict(
        {"sentence": ["a", "b"], "label": ["yes", "maybe"]}, feats)})
    with pytest.raises(SoiError, match=r"hub org/ds\[train\]: no column 'text' \(for text; map yours with columns: "
                                       r"\{text: <column>\}\); columns: sentence, label"):
        HubDataset("mine", "org/ds", labels=("yes", "no")).load("train")
    with pytest.raises(SoiError, match=r"hub org/ds\[train\]: row 1 \(id 'mine-train-1'\): label 'maybe' not in "
                                       r"datasets.x.hub.labels \(rename hub labels with label_map\) \['yes', 'no'\]"):
        HubDataset("mine", "org/ds", columns={"text": "sentence"}, labels=("yes", "no"),
                   where="datasets.x.hub").load("train")
    with pytest.raises(SoiError, match=r"datasets.x.hub: hub column 'label' is not a ClassLabel, so the label order "
                                       r"is unknown; set labels"):
        HubDataset("mine", "org/ds", columns={"text": "sentence"}, where="datasets.x.hub").load("train")
    with pytest.raises(SoiError, match=r"could not load hub org/missing\[train\] \(FileNotFoundError: Couldn't find"):
        HubDataset("mine", "org/missing", labels=("a",)).load("train")
    with pytest.raises(SoiError, match=r"split 'test' not mapped; splits: train"):
        HubDataset("mine", "org/ds", splits={"train": "train"}, labels=("a",)).load("test")


def test_any_hub_dataset_with_mapping_and_classlabel_order(hub) -> None:
    feats = datasets.Features({"q": datasets.Value("string"), "topic": datasets.ClassLabel(names=["b", "a", "c"])})
    hub({("org/topics", "v2", "validation"): lambda: datasets.Dataset.from_dict(
        {"q": ["x", "y", "z"], "topic": [0, 2, 1]}, feats)})
    s = HubDataset("topics", "org/topics", config="v2", columns={"text": "q", "label": "topic"},
                   splits={"test": "validation"}, label_map={"c": "sea"}, language="de").load("test")
    assert s.labels == ("b", "a", "sea")  # the ClassLabel's own order, renamed
    assert s.table.column("label").to_pylist() == ["b", "sea", "a"] and s.gold.tolist() == [0, 2, 1]
    assert (s.split, s.languages, s.path) == ("test", ("de",), "org/topics:v2")
    assert DataSource("topics", hub=HubDataset("topics", "org/topics", splits={"test": "validation"})).splits() \
        == ("test",)


def _study(data_dir: Path, model: str, spec: Path) -> dict:
    return {"name": "mixed", "model": model, "data_dir": str(data_dir), "seeds": [0], "max_length": 16,
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3},
            "datasets": {"reg": {"name": "sst2", "n_train": 16, "n_eval": 12},
                         "hubds": {"name": "topics", "origin": "hub", "task": "topic",
                                   "hub": {"path": "org/topics", "columns": {"text": "q", "label": "topic"},
                                           "splits": {"train": "train", "test": "test"}, "language": "de"}},
                         "file": {"spec": str(spec), "n_train": 12}},
            "runs": [{"name": "reg-only", "setting": "single", "train": ["reg"]},
                     {"name": "all", "setting": "multi-task", "train": ["reg", "hubds", "file"]}]}


def test_study_config_origin_rules(tmp_path: Path) -> None:
    from hf_common import study_error

    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\nfiles: {train: t.jsonl}\n")
    base = _study(tmp_path, "m", spec)
    cfg = StudyConfig.from_dict(base)
    assert cfg.datasets["file"].name == "mine" and cfg.datasets["hubds"].hub.path == "org/topics"
    bad = json.loads(json.dumps(base))
    bad["datasets"]["hubds"]["origin"] = "local"
    assert "datasets.hubds: hub: needs origin: hub" in study_error(tmp_path, bad)
    bad = json.loads(json.dumps(base))
    bad["datasets"]["reg"] = {"name": "sst9", "origin": "hub"}
    assert "datasets.reg.name: origin: hub needs a registered dataset, not 'sst9'" in study_error(tmp_path, bad)
    bad["datasets"]["reg"] = {"name": "farstail", "origin": "hub"}
    assert "farstail has no hub equivalent soi can load" in study_error(tmp_path, bad)
    bad["datasets"]["reg"] = {"spec": "x.yaml", "origin": "hub"}
    assert "spec (a data-spec file) cannot be combined with origin / hub" in study_error(tmp_path, bad)
    # a relative spec path resolves against the study file's folder
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.yaml").write_text(json.dumps(base | {"datasets": {"f": {"spec": "../mine.yaml"}},
                                                                  "runs": [{"name": "f", "setting": "single",
                                                                            "train": ["f"]}]}))
    cfg = StudyConfig.from_yaml(tmp_path / "s" / "study.yaml")
    assert Path(cfg.datasets["f"].spec).resolve() == spec.resolve()


def test_packaged_fr_en_fa_study_loads_fr_from_a_canonical_folder_or_the_hub(tmp_path: Path, hub) -> None:
    from soi.study.packaged import packaged_studies
    from soi.study.runner import _Data

    path = packaged_studies()["multilingual-fr-en-fa"]
    cfg = StudyConfig.from_yaml(path)
    assert {k: d.name for k, d in cfg.datasets.items()} == {"en": "massive_en", "fa": "massive_fa", "fr": "massive_fr"}
    assert [r.name for r in cfg.runs] == ["en-only", "fa-only", "fr-only", "fr+en+fa"]
    empty = tmp_path / "data"
    empty.mkdir()
    data = _Data(cfg.model_copy(update={"data_dir": str(empty)}))
    assert data.source("fr").kind() == "hub" and data.source("en").kind() == "local"
    intents = ["alarm_set", "play_music", "qa_maths"]
    hub({("AmazonScience/massive", "fr-FR", "test"): massive_rows("fr", intents, LABELS[::-1])})
    assert data.get("fr", "eval").table.column("label").to_pylist() == intents
    # the offline recipe: a canonical folder massive_fr/ in the data dir wins over the hub
    folder = empty / "massive_fr"
    folder.mkdir()
    rows = [{"id": f"fr-{i}", "text": f"phrase {i}", "label": x, "language": "fr", "source": "massive_fr"}
            for i, x in enumerate(intents)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "info.json").write_text(json.dumps({"name": "massive_fr", "task": "intent", "type": "classification",
                                                  "languages": ["fr"], "splits": {"test": 3}, "labels": LABELS}))
    data = _Data(cfg.model_copy(update={"data_dir": str(empty)}))
    assert data.source("fr").kind() == "local"
    assert data.get("fr", "eval").ids == ["fr-0", "fr-1", "fr-2"]


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2").is_dir()
                    and not Path(__import__("os").environ.get("SOI_DATA_DIR", "/nonexistent"), "sst2").is_dir(),
                    reason="shared data missing")
def test_study_mixing_registered_hub_and_file_data_runs_end_to_end(tmp_path: Path, hub) -> None:
    pytest.importorskip("torch")
    import pyarrow.parquet as pq

    from hf_common import data_dir, tiny_encoder
    from soi.study import run_study

    feats = datasets.Features({"q": datasets.Value("string"), "topic": datasets.ClassLabel(names=["sport", "art"])})

    def topics(n: int, offset: int):
        return lambda: datasets.Dataset.from_dict(
            {"q": [f"question {offset + i}" for i in range(n)], "topic": [i % 2 for i in range(n)]}, feats)

    fake = hub({("org/topics", None, "train"): topics(10, 0), ("org/topics", None, "test"): topics(6, 100)})
    files = tmp_path / "mine"
    files.mkdir()
    for split, n in (("train", 14), ("test", 8)):
        (files / f"{split}.csv").write_text("sentence,tag\n" + "".join(f"row {split} {i},{'xyz'[i % 3]}\n"
                                                                          for i in range(n)))
    spec = files / "mine.yaml"
    spec.write_text("name: mine\ntask: tags\nfiles: {train: train.csv, test: test.csv}\n"
                    "columns: {text: sentence, label: tag}\nlanguage: fr\n")
    model = tiny_encoder(tmp_path / "tiny")
    out = tmp_path / "out"
    summary = run_study(StudyConfig.from_dict(_study(data_dir(), model, spec)), out, progress=False)
    ex = pq.read_table(out / "runs" / "all" / "seed-0" / "examples.parquet").to_pandas()
    assert ex.groupby("task").size().to_dict() == {"sst2": 16, "topic": 10, "mine": 12}
    assert set(ex.loc[ex["task"] == "topic", "language"]) == {"de"}
    assert set(ex.loc[ex["task"] == "mine", "source"]) == {"mine"}
    run = json.loads((out / "runs" / "all" / "seed-0" / "run.json").read_text())
    assert run["tasks"] == {"sst2": ["negative", "positive"], "topic": ["sport", "art"], "mine": ["x", "y", "z"]}
    evals = summary["runs"]["all"]["eval"]
    assert {k: v["n"] for k, v in evals.items()} == {"reg": 12, "hubds": 6, "file": 8}
    assert {c for c in fake.calls if c[2] == "test"} == {("org/topics", None, "test", None)}
    assert summary["comparisons"] and list((out / "compare" / "reg-only__vs__all").rglob("stats.json"))


def test_docs_offline_recipe_writes_a_canonical_folder(tmp_path: Path, hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs/data.md offline recipe, run verbatim on a faked hub: its folder then loads locally."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Offline recipe"):]
    (block,) = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ")], flags=re.S)
    intents = {"train": ["alarm_set", "qa_maths", "alarm_set"], "validation": ["play_music"],
               "test": ["weather_query", "iot_coffee"]}
    hub({("AmazonScience/massive", "fr-FR", split): massive_rows("fr", rows, LABELS[::-1])
         for split, rows in intents.items()})
    monkeypatch.setenv("SOI_DATA_DIR", str(tmp_path))
    exec(block, {})
    for split, rows in intents.items():
        s = load_split("massive_fr", split)
        assert (s.origin, s.table.column("label").to_pylist()) == ("local", rows)
        assert s.ids == [f"massive_fr-{split}-{i}" for i in range(len(rows))]
        assert s.parallel_ids == [f"massive-{split}-{i}" for i in range(len(rows))]
