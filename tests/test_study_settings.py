"""Multi-task and multi-lingual studies end to end, k-grid mixtures, eval-pass recording, label filters, tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import yaml

from soi.config import StudyConfig
from soi.errors import SoiError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import data_dir, tiny_encoder, tokenizer

pytestmark = pytest.mark.skipif(not (data_dir() / "massive_fa" / "info.json").is_file(), reason="shared data missing")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def _base(model: str) -> dict:
    return {"name": "t", "model": model, "data_dir": str(data_dir()), "seeds": [0], "data_seed": 1, "max_length": 24,
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3}}


def multilingual(model: str) -> dict:
    return _base(model) | {
        "datasets": {"en": {"name": "massive_en", "task": "intent", "n_train": 24, "n_eval": 20},
                     "fa": {"name": "massive_fa", "task": "intent", "n_train": 24, "n_eval": 20}},
        "runs": [{"name": "en-only", "setting": "single", "train": ["en"]},
                 {"name": "en+fa", "setting": "multi-lingual", "train": ["en"],
                  "k_grid": {"datasets": ["fa"], "k": [8, 0]}}]}


def multitask(model: str) -> dict:
    return _base(model) | {
        "recording": {"mode": "eval-pass"},
        "datasets": {"sst2": {"name": "sst2", "n_train": 16, "n_eval": 16},
                     "mrpc": {"name": "mrpc", "n_train": 16, "n_eval": 16},
                     "airline": {"name": "airline", "task": "sst2", "labels": ["positive", "negative"], "n_eval": 24}},
        "runs": [{"name": "sst2-only", "setting": "single", "train": ["sst2"]},
                 {"name": "mt", "setting": "multi-task", "train": ["sst2", "mrpc"]}],
        "eval": {"ood": ["airline"]}}


def test_k_grid_expands_into_one_run_per_k(tmp_path: Path) -> None:
    cfg = StudyConfig.from_dict(multilingual("m"))
    runs = {r.name: r for r in cfg.runs}
    assert list(runs) == ["en-only", "en+fa-k0", "en+fa-k8"]  # k sorted
    assert runs["en+fa-k0"].train == ["en"] and runs["en+fa-k0"].eval == ["fa"] and runs["en+fa-k0"].n_train == {}
    assert runs["en+fa-k8"].train == ["en", "fa"] and runs["en+fa-k8"].n_train == {"fa": 8}
    assert runs["en+fa-k8"].eval == [] and runs["en+fa-k8"].k == 8 and runs["en+fa-k8"].family == "en+fa"
    # default comparisons: the English single run against both mixtures (it is contained in both)
    assert [(c.a, c.b) for c in cfg.comparisons()] == [("en-only", "en+fa-k0"), ("en-only", "en+fa-k8")]
    # the expanded config round-trips (config.json is re-readable)
    again = StudyConfig.from_dict(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert [r.name for r in again.runs] == list(runs)
    with pytest.raises(SoiError, match=r"runs\[2\].name: duplicate run name 'en\+fa-k8'"):
        data = multilingual("m")
        data["runs"].append({"name": "en+fa-k8", "setting": "multi-lingual", "train": ["en", "fa"]})
        StudyConfig.from_dict(data)


@pytest.fixture(scope="module")
def ml_study(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from soi.study import run_study

    out = tmp_path_factory.mktemp("ml") / "out"
    return out, run_study(StudyConfig.from_dict(multilingual(tiny_model)), out, progress=False)


def test_multilingual_k_grid_study(ml_study: tuple[Path, dict]) -> None:
    import pyarrow.parquet as pq

    from soi.data import load_split

    out, summary = ml_study
    k8 = pq.read_table(out / "runs" / "en+fa-k8" / "seed-0" / "examples.parquet").to_pandas()
    k0 = pq.read_table(out / "runs" / "en+fa-k0" / "seed-0" / "examples.parquet").to_pandas()
    assert (k8["language"] == "fa").sum() == 8 and (k8["language"] == "en").sum() == 24
    assert set(k0["language"]) == {"en"} and len(k0) == 24
    # the k examples are the data_seed subsample of 8 rows, which is nested in the 24-row subsample
    fa8 = load_split("massive_fa", "train", data_dir=data_dir(), n=8, seed=1).ids
    fa24 = load_split("massive_fa", "train", data_dir=data_dir(), n=24, seed=1).ids
    assert sorted(k8.loc[k8["language"] == "fa", "example_id"]) == sorted(fa8) and set(fa8) <= set(fa24)
    runs = summary["runs"]
    assert runs["en+fa-k0"]["eval"]["fa"]["kind"] == "transfer" and runs["en+fa-k0"]["k"] == 0
    assert runs["en+fa-k8"]["eval"]["fa"]["kind"] == "in-distribution" and runs["en+fa-k8"]["family"] == "en+fa"
    assert runs["en+fa-k8"]["n_train"] == 32
    assert set(runs["en+fa-k8"]["soi_shares"]["language"]) == {"en", "fa"}
    for run in runs.values():
        for ev in run["eval"].values():
            assert ev["n"] == 20 and 0 <= ev["accuracy"]["mean"] <= 1


def test_tables_match_summary(ml_study: tuple[Path, dict]) -> None:
    import csv

    out, summary = ml_study
    rows = list(csv.DictReader((out / "tables" / "eval.csv").open()))
    expected = [(r, k, ev["accuracy"]["mean"]) for r, run in summary["runs"].items() for k, ev in run["eval"].items()]
    got = [(r["run"], r["eval_set"], float(r["accuracy_mean"])) for r in rows if r["language"] == "all"]
    assert got == expected
    shares = list(csv.DictReader((out / "tables" / "soi_shares.csv").open()))
    row = next(r for r in shares if r["run"] == "en+fa-k8" and r["group_by"] == "language" and r["group"] == "fa")
    assert float(row["never_learned"]) == pytest.approx(summary["runs"]["en+fa-k8"]["soi_shares"]["language"]["fa"]
                                                       ["never_learned"])
    comps = list(csv.DictReader((out / "tables" / "comparisons.csv").open()))
    assert len(comps) == sum(len(c["groups"]) for c in summary["comparisons"])
    md = (out / "summary.md").read_text()
    assert md.startswith("# t\n") and "| en+fa-k8 | multi-lingual | 8 | fa | in-distribution |" in md


def test_multitask_eval_pass_study(tiny_model: str, tmp_path: Path) -> None:
    from soi.store import RunMeta, load_dynamics
    from soi.study import run_study

    out = tmp_path / "out"
    summary = run_study(StudyConfig.from_dict(multitask(tiny_model)), out, progress=False)
    rdir = out / "runs" / "mt" / "seed-0"
    meta = RunMeta.load(rdir)
    assert meta.recording_mode == "eval-pass" and meta.tasks == {"sst2": ["negative", "positive"],
                                                                 "mrpc": ["not_equivalent", "equivalent"]}
    dyn = load_dynamics(rdir)
    assert dyn.p_gold.shape == (32, 2)
    ev = summary["runs"]["mt"]["eval"]
    assert set(ev) == {"sst2", "mrpc", "airline"} and ev["airline"]["kind"] == "ood" and ev["airline"]["n"] == 24
    assert summary["runs"]["sst2-only"]["eval"]["airline"]["n"] == 24
    from soi.store.summary import undeclared_fields

    assert undeclared_fields(json.loads((out / "summary.json").read_text(encoding="utf-8"))) == []


def test_eval_pass_records_the_model_at_each_checkpoint(tiny_model: str, tmp_path: Path) -> None:
    """Eval-pass values at the last checkpoint equal a fresh no-grad forward of the final model."""
    from plain_loop import train
    from soi.data import load_split
    from soi.record import DynamicsRecorder
    from soi.store import RunMeta, load_dynamics
    from soi.train import MultiHeadClassifier, run_examples

    split = load_split("sst2", "train", data_dir=data_dir(), n=20, seed=0)
    tasks = {"sst2": [split]}
    examples, labels = run_examples(tasks)
    torch.manual_seed(0)
    model = MultiHeadClassifier(tiny_model, {"sst2": 2})
    rec = DynamicsRecorder(tmp_path / "run", RunMeta(tasks=labels, recording_mode="eval-pass"), examples=examples)
    train(model, tokenizer(), tasks, epochs=2, batch_size=8, lr=1e-3, max_length=24, recorder=rec,
          record_mode="eval-pass")
    rec.close()
    assert model.training  # the eval pass restores train mode
    model.eval()
    enc = tokenizer()(split.table.column("text").to_pylist(), truncation=True, max_length=24, padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc, task="sst2"), -1).numpy()
    gold = split.gold
    dyn = load_dynamics(tmp_path / "run")
    np.testing.assert_allclose(dyn.p_gold[:, -1], probs[np.arange(20), gold], atol=1e-5)
    assert not np.allclose(dyn.p_gold[:, 0], dyn.p_gold[:, 1])  # a different model at each checkpoint


def test_keep_labels_reindexes_gold() -> None:
    from soi.data import load_split

    full = load_split("airline", "validation", data_dir=data_dir())
    kept = full.keep_labels(["positive", "negative"])
    assert kept.labels == ("negative", "positive")  # canonical order, not the order asked for
    names = np.asarray(full.table.column("label").to_pylist())
    assert len(kept) == int(np.isin(names, ["negative", "positive"]).sum())
    assert [kept.labels[g] for g in kept.gold] == kept.table.column("label").to_pylist()
    with pytest.raises(SoiError, match=r"airline: unknown labels \['mixed'\]"):
        full.keep_labels(["mixed"])


def test_scale_and_packaged_studies(tmp_path: Path) -> None:
    from soi.study.packaged import packaged_studies, read_study, scale

    studies = packaged_studies()
    assert {"multitask", "multisource", "multilingual"} <= set(studies)
    for name, path in studies.items():
        data = read_study(path)
        if data.get("type") != "generative":
            StudyConfig.from_dict(data | {"data_dir": str(data_dir())}, source=f"{name}.yaml")  # valid
    data = read_study(studies["multitask"])
    small = scale(data, n_train=40, n_eval=7, epochs=1)
    assert {k: (d["n_train"], d["n_eval"]) for k, d in small["datasets"].items()} == {
        "sst2": (40, 7), "mrpc": (40, 7), "rte": (40, 7)}
    assert small["train"]["epochs"] == 1 and small["train"]["lr"] == data["train"]["lr"]
    fresh = read_study(studies["multitask"])
    assert data == fresh and data["datasets"]["sst2"]["n_train"] != 40  # the original is untouched
    assert len(data["seeds"]) >= 3  # the demo's comparisons test transitions against reseeding noise
    # the packaged data-matched controls: the pooled mixtures cut to one single run's size
    for name, run, target in (("multisource", "multisource-matched", "sst2-only"),
                              ("multilingual", "en+fa-matched", "en-only")):
        cfg = StudyConfig.from_dict(read_study(studies[name]) | {"data_dir": str(data_dir())})
        assert cfg.run(run).match_size == target
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(SoiError, match=r"x\.yaml: the study must be a mapping, got list"):
        read_study(path)


def test_demo_cli_errors_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    from soi.cli.main import app

    res = CliRunner().invoke(app, ["demo", "--list"])
    assert res.exit_code == 0 and "multilingual" in res.output and "synthetic" in res.output
    res = CliRunner().invoke(app, ["demo", "--study", "nope"])
    assert res.exit_code != 0 and "unknown study 'nope'" in str(res.exception)
    for bad, msg in (("0,x", "expected comma-separated integers"), ("1,1", "seeds must be distinct")):
        res = CliRunner().invoke(app, ["demo", "--seeds", bad, "--out", "unused"])
        assert res.exit_code != 0 and f"--seeds: {msg}" in (str(res.exception) + res.output)
    from soi.cli.demo import parse_seeds

    assert parse_seeds("3,0,1") == [3, 0, 1] and parse_seeds(None) is None


def test_k_grid_transfer_summary(ml_study: tuple[Path, dict]) -> None:
    """summary["transfer"][family]: accuracy per language against k, gains against k = 0 (hand-checked)."""
    _, summary = ml_study
    t = summary["transfer"]["en+fa"]
    runs = summary["runs"]
    assert t["metric"] == "accuracy" and t["ks"] == [0, 8] and t["seen"] == ["fa"] and t["unseen"] == []
    for lang, key in (("fa", "fa"), ("en", "en")):
        for k in (0, 8):
            want = runs[f"en+fa-k{k}"]["eval"][key]["languages"][lang]["accuracy"]["mean"]
            assert t["scores"][lang][str(k)]["mean"] == pytest.approx(want)
        assert t["gain"][lang]["8"] == pytest.approx(t["scores"][lang]["8"]["mean"] - t["scores"][lang]["0"]["mean"])
    assert t["seen_mean"]["8"] == pytest.approx(t["scores"]["fa"]["8"]["mean"])


def test_k_grid_transfer_stats(ml_study: tuple[Path, dict]) -> None:
    """summary["transfer_stats"][family] from the per-item eval/<key>.parquet (test set): the scores are the
    per-item means of the predictions, their gains have intervals, and the tables, console and report show them."""
    import csv

    import pyarrow.parquet as pq
    from rich.console import Console

    from soi.report import read_report_data, write_report
    from soi.store.summary import load_summary, undeclared_fields
    from soi.study.runner import print_summary

    out, summary = ml_study
    st, t = summary["transfer_stats"]["en+fa"], summary["transfer"]["en+fa"]
    assert st["data"] == "test set" and st["metric"] == "accuracy" and st["ks"] == [0, 8] and st["n_seeds"] == 1
    assert st["seen"] == ["fa"] and st["unseen"] == [] and st["gap"] is None and st["n_items"] == {"en": 20, "fa": 20}
    for lang in ("en", "fa"):
        for k in (0, 8):
            correct = pq.read_table(out / "runs" / f"en+fa-k{k}" / "seed-0" / "eval" / f"{lang}.parquet")["correct"]
            mean = float(sum(correct.to_pylist()) / len(correct))
            block = st["languages"][lang]
            assert block["score"][str(k)]["mean"] == pytest.approx(mean) == t["scores"][lang][str(k)]["mean"]
        gain = block["gain"]["8"]
        assert gain["mean"] == pytest.approx(t["gain"][lang]["8"]) and gain["lo"] <= gain["mean"] <= gain["hi"]
    assert st["groups"]["seen"]["gain"]["8"] == st["languages"]["fa"]["gain"]["8"]
    saved = load_summary(out / "summary.json", strict=True)
    assert saved["transfer_stats"] == summary["transfer_stats"]
    assert undeclared_fields(saved) == []  # docs/summary-schema.md lists every field written
    rows = list(csv.DictReader((out / "tables" / "transfer_stats.csv").open(encoding="utf-8")))
    fa8 = next(r for r in rows if r["language"] == "fa" and r["k"] == "8")
    assert float(fa8["gain_lo"]) == pytest.approx(st["languages"]["fa"]["gain"]["8"]["lo"])
    assert (out / "tables" / "transfer_trend.csv").is_file()
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Transfer: gain over k = 0 with its interval over test items and seeds (test data)" in md
    assert f"| en+fa | fa | seen | 8 | {float(fa8['score']):.3f} | {float(fa8['gain']):.3f} |" in md
    from soi.study.tables import rebuild_tables

    (out / "tables" / "transfer_stats.csv").unlink()
    assert rebuild_tables(out)["transfer_stats"].read_text(encoding="utf-8").count("\n") == len(rows) + 1
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = " ".join(console.export_text().split())
    assert "en+fa: gain in accuracy over k=0, 95% intervals (test set, 1 seed(s); * excludes 0)" in text
    assert "one seed per k: the intervals cover item sampling only" in text
    report = write_report(out)
    data = read_report_data(report)
    fa_gain = st["languages"]["fa"]["gain"]["8"]
    assert data["transfer_stats"]["en+fa"]["languages"]["fa"]["gain"]["8"]["mean"] == pytest.approx(fa_gain["mean"],
                                                                                                    abs=1e-4)
    assert (report.parent / "figures" / "transfer_en+fa_intervals.png").stat().st_size > 1000


def test_freeze_embeddings_keeps_word_embeddings(tiny_model: str) -> None:
    from plain_loop import train
    from soi.data import load_split
    from soi.train import MultiHeadClassifier

    split = load_split("sst2", "train", data_dir=data_dir(), n=16, seed=0)
    for freeze in (True, False):
        torch.manual_seed(0)
        model = MultiHeadClassifier(tiny_model, {"sst2": 2}, freeze_embeddings=freeze)
        words = model.encoder.get_input_embeddings().weight.detach().clone()
        layer = model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
        train(model, tokenizer(), {"sst2": [split]}, epochs=1, batch_size=8, lr=1e-2, max_length=24)
        assert torch.equal(model.encoder.get_input_embeddings().weight, words) is freeze
        assert not torch.equal(model.encoder.encoder.layer[0].attention.self.query.weight, layer)
    cfg = StudyConfig.from_dict(multitask("m") | {"train": {"freeze_embeddings": True}})
    assert cfg.train.freeze_embeddings and not StudyConfig.from_dict(multitask("m")).train.freeze_embeddings
