"""soi.config / soi.study: the study YAML, the end-to-end runner (train -> analyse -> compare -> summary), resume."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import yaml

from soi.config import StudyConfig
from soi.errors import SoiError
from soi.store import RunMeta

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import data_dir, sentiment_study, study_error, tiny_encoder
from shared_data import needs_dataset

pytestmark = needs_dataset("sst2")


def study_dict(model: str) -> dict:
    return sentiment_study(model, "tiny", {"sst2": (16, 16), "mr": (16, 16), "cr": (None, 16)}, [
        {"name": "sst2-only", "setting": "single", "train": ["sst2"]},
        {"name": "mr-only", "setting": "single", "train": ["mr"]},
        {"name": "sentiment-ms", "setting": "multi-source", "train": ["sst2", "mr"]},
    ], train={"epochs": 2, "batch_size": 8, "lr": 1e-3, "sampling": "proportional"}, eval={"ood": ["cr"]})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def study(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from soi.study import run_study

    root = tmp_path_factory.mktemp("study")
    yml = root / "study.yaml"
    yml.write_text(yaml.safe_dump(study_dict(tiny_model)))
    out = root / "out"
    summary = run_study(StudyConfig.from_yaml(yml), out, progress=False)
    return yml, out, summary


def test_runs_written_and_loadable(study: tuple[Path, Path, dict]) -> None:
    from soi.store import load_dynamics

    _, out, _ = study
    for run, setting in (("sst2-only", "single"), ("mr-only", "single"), ("sentiment-ms", "multi-source")):
        rdir = out / "runs" / run / "seed-0"
        meta = RunMeta.load(rdir)
        assert meta.setting == setting and meta.seed == 0 and meta.tasks == {"sentiment": ["negative", "positive"]}
        dyn = load_dynamics(rdir)
        assert dyn.n_examples == (32 if setting == "multi-source" else 16) and dyn.n_checkpoints == 2
        result = json.loads((rdir / "result.json").read_text())
        assert set(result["eval"]) == ({"sst2", "mr", "cr"} if setting != "single" else {run[:-5], "cr"})
        assert result["eval"]["cr"]["kind"] == "ood"
        for ev in result["eval"].values():
            assert 0.0 <= ev["accuracy"] <= 1.0 and 0.0 <= ev["macro_f1"] <= 1.0 and ev["n"] == 16
            assert set(ev["languages"]) == {"en"}
        assert (rdir / "analysis" / "summary.json").is_file()
        assert (rdir / "analysis" / "per_example.parquet").is_file()


def test_compare_and_summary(study: tuple[Path, Path, dict]) -> None:
    _, out, summary = study
    for a in ("sst2-only", "mr-only"):
        cdir = out / "compare" / f"{a}__vs__sentiment-ms"  # the seed folders compared: one seed here
        stats = json.loads((cdir / "stats.json").read_text())
        assert stats["groups"][0]["seeds"] == {"a": [0], "b": [0]}
        assert stats["n_shared"] == 16  # data_seed fixes the subsample: the multi run holds the same 16 ids
        assert list(cdir.glob("heatmaps/*.png"))
    assert json.loads((out / "summary.json").read_text()) == summary
    assert set(summary["runs"]) == {"sst2-only", "mr-only", "sentiment-ms"}
    ms = summary["runs"]["sentiment-ms"]
    assert ms["setting"] == "multi-source"
    assert set(ms["eval"]) == {"sst2", "mr", "cr"}
    assert 0.0 <= ms["eval"]["cr"]["accuracy"]["mean"] <= 1.0 and ms["eval"]["cr"]["accuracy"]["std"] == 0.0
    assert set(ms["soi_shares"]["source"]) == {"sst2", "mr"}
    assert abs(sum(ms["soi_shares"]["all"]["all"].values()) - 1.0) < 1e-9
    assert {(c["a"], c["b"]) for c in summary["comparisons"]} == {
        ("sst2-only", "sentiment-ms"), ("mr-only", "sentiment-ms")}
    comp = summary["comparisons"][0]
    group = comp["groups"][0]
    assert group["key"] == "all" and 0.0 <= group["mcnemar_p"] <= 1.0 and group["data"] == "training dynamics"
    # one seed: the single-seed note instead of a reseeding-null p-value, in the summary and its prose
    assert group["seed_null"]["p_value"] is None and "one seed only" in group["seed_null"]["note"]
    assert any("one seed only" in x for x in summary["findings"])
    assert set(comp["test_set"]) == {comp["a"][:-5], "cr"}  # the eval sets both runs have
    assert all(t["data"] == "test set" and t["n_items"] == 16 for t in comp["test_set"].values())


def test_rerun_skips_finished_runs(study: tuple[Path, Path, dict]) -> None:
    from soi.study import run_study

    yml, out, summary = study
    results = sorted(out.glob("runs/*/seed-0/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    parts = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed-0/dynamics/*.parquet")}
    again = run_study(StudyConfig.from_yaml(yml), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed-0/dynamics/*.parquet")} == parts
    assert again["runs"] == summary["runs"]
    # changed training settings on the same --out: refuse rather than mix results
    changed = yaml.safe_load(yml.read_text())
    changed["train"]["lr"] = 5e-4
    with pytest.raises(SoiError, match="different settings"):
        run_study(StudyConfig.from_dict(changed), out, progress=False)


def test_cli_run_quiet_resumes(study: tuple[Path, Path, dict]) -> None:
    from typer.testing import CliRunner

    from soi.cli.main import app

    yml, out, _ = study
    assert not (out / "report.html").exists()  # run_study (the Python API) writes no report
    res = CliRunner().invoke(app, ["run", str(yml), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == ""
    html = (out / "report.html").read_text(encoding="utf-8")  # soi run does
    assert "sst2-only" in html and "sentiment-ms" in html


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["runs"][1].update(train=["sst3"]), "study.yaml: runs[1].train[0]: unknown dataset 'sst3'"),
    (lambda d: d["datasets"]["mr"].update(name="nope"), "study.yaml: datasets.mr.name: unknown dataset 'nope'"),
    (lambda d: d["train"].update(sampling="random"), "study.yaml: train.sampling: "),
    (lambda d: d["train"].update(epochs=0), "study.yaml: train.epochs: "),
    (lambda d: d.update(seeds=[]), "study.yaml: seeds: "),
    (lambda d: d["datasets"]["sst2"].update(n_trian=5), "study.yaml: datasets.sst2.n_trian: unknown field"),
    (lambda d: d["runs"][0].update(setting="dual"), "study.yaml: runs[0].setting: "),
    (lambda d: d["runs"][0].update(train=["sst2", "mr"]), "study.yaml: runs[0].train: a single-setting run"),
    (lambda d: d["eval"].update(ood=["sst2"]), "study.yaml: eval.ood[0]: dataset 'sst2' is trained on"),
    (lambda d: d.update(recording={"mode": "both"}), "study.yaml: recording.mode: "),
    (lambda d: d["runs"][2].update(k_grid={"datasets": ["cr"], "k": [0, 0]}),
     "study.yaml: runs[2].k_grid.k: k must be distinct"),
    (lambda d: d["runs"][0].update(k_grid={"datasets": ["mr"], "k": [4]}),
     "study.yaml: runs[0].k_grid: a k grid adds datasets"),
    (lambda d: d["runs"][2].update(k_grid={"datasets": ["xx"], "k": [4]}),
     "study.yaml: runs[2].k_grid.datasets[0]: unknown dataset 'xx'"),
    (lambda d: d["runs"][2].update(n_train={"mr": 0}), "study.yaml: runs[2].n_train: "),
    (lambda d: d["runs"][1].update(eval=["nope"]), "study.yaml: runs[1].eval[0]: unknown dataset 'nope'"),
    (lambda d: d["datasets"]["cr"].update(labels=[]), "study.yaml: datasets.cr.labels: "),
    (lambda d: d.update(compare=[{"a": "sst2-only", "b": "x"}]), "study.yaml: compare[0].b: unknown run 'x'"),
    (lambda d: d.pop("model"), "study.yaml: model: field required"),
])
def test_config_errors_name_the_field(tmp_path: Path, edit, expected: str) -> None:
    data = study_dict("some/model")
    edit(data)
    assert study_error(tmp_path, data).startswith(expected)


def test_config_defaults(tmp_path: Path) -> None:
    data = study_dict("minilm-l6")
    del data["train"], data["seeds"]
    data["data_dir"] = os.path.relpath(data_dir(), tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = StudyConfig.from_yaml(path)
    assert cfg.seeds == [0] and cfg.train.epochs == 3 and cfg.recording.mode == "train-pass"
    assert Path(cfg.data_dir).resolve() == data_dir().resolve()
    assert cfg.datasets["cr"].head == "sentiment"
    assert [(c.a, c.b) for c in cfg.comparisons()] == [("sst2-only", "sentiment-ms"), ("mr-only", "sentiment-ms")]
    assert StudyConfig.from_dict({**data, "data_dir": str(data_dir()), "datasets": {"x": {"name": "sst2"}},
                                  "runs": [{"name": "r", "setting": "single", "train": ["x"]}],
                                  "eval": {}}).datasets["x"].head == "sst2"
    with pytest.raises(SoiError, match="study file not found"):
        StudyConfig.from_yaml(tmp_path / "missing.yaml")


def test_a_run_with_no_examples_is_refused_and_never_marked_finished(tiny_model: str, tmp_path: Path,
                                                                      monkeypatch) -> None:
    from soi.study import run_study
    from soi.study.runner import RESULT_FILE, StudyData, run_dir_of

    real = StudyData.get

    def empty_mr(self, key, which, n=None):  # e.g. a label filter that keeps no row
        split = real(self, key, which, n)
        return split.take(np.zeros(0, np.int64)) if key == "mr" and which == "train" else split

    monkeypatch.setattr(StudyData, "get", empty_mr)
    cfg = study_dict(tiny_model) | {"runs": [{"name": "mr-only", "setting": "single", "train": ["mr"]}]}
    with pytest.raises(SoiError, match="no training examples of mr"):
        run_study(StudyConfig.from_dict(cfg), tmp_path / "out", progress=False)
    assert not (run_dir_of(tmp_path / "out", "mr-only", 0) / RESULT_FILE).exists()
