"""Back to Hugging Face ``datasets``: Split.to_dataset, Selection.to_dataset / filter_dataset, Mixture.to_dataset
and ``soi select --format hf`` (save_to_disk with provenance in its info)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

datasets = pytest.importorskip("datasets")

from shared_data import SHARED, needs_dataset  # noqa: E402
from soi.analysis import analyze_run  # noqa: E402
from soi.data import load_split  # noqa: E402
from soi.errors import SoiError  # noqa: E402
from soi.selection import filter_dataset, save_dataset, select  # noqa: E402
from soi.simulate import simulate_run  # noqa: E402
from soi.store import examples_table, read_examples, write_examples  # noqa: E402

needs_shared = needs_dataset("sst2")


@needs_shared
def test_split_to_dataset_labels_as_classlabel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    s = load_split("massive_fa", "validation", n=40, seed=2)
    ds = s.to_dataset()
    assert len(ds) == 40 and ds.split == "validation" and ds.info.dataset_name == "massive_fa"
    assert ds.features["label"] == datasets.ClassLabel(names=list(s.labels))
    assert ds["label"] == s.gold.tolist() and ds["id"] == s.ids
    assert [ds.features["label"].int2str(g) for g in ds["label"]] == s.table.column("label").to_pylist()
    assert ds["parallel_id"] == s.parallel_ids and "gold" not in ds.column_names
    prov = json.loads(ds.info.description)
    assert prov["soi"] == "split" and prov["name"] == "massive_fa" and prov["rows"] == 40
    gen = load_split("gsm8k", "test", n=3).to_dataset()
    assert gen.column_names[:4] == ["id", "prompt", "response", "answer"] and len(gen) == 3


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("sel") / "run"
    simulate_run(run, n=200, checkpoints=4, seed=5, groups={"language": ["en", "fr"]})
    ex = read_examples(run)  # give the examples a text column, as a real run has
    write_examples(run, examples_table(ex.column("example_id").to_pylist(), ex.column("gold").to_numpy(),
                                       task=ex.column("task").to_pylist(), language=ex.column("language").to_pylist(),
                                       text=[f"sentence {i}" for i in range(ex.num_rows)]))
    analyze_run(run)
    return run


def test_selection_to_dataset_and_filter_dataset(run: Path) -> None:
    table = pq.read_table(run / "analysis" / "per_example.parquet")
    sel = select(table, categories=["forgettable_lost", "never_learned"], seed=0, source_run=run)
    assert len(sel) > 0
    ds = sel.to_dataset()
    assert ds["example_id"] == sel.ids.tolist()
    assert set(ds["soi"]) <= {"forgettable_lost", "never_learned"}  # dictionary columns decoded to strings
    ex = read_examples(run).to_pandas().set_index("example_id")
    assert ds["text"] == [ex.loc[i, "text"] for i in ds["example_id"]]  # joined from the source run
    assert json.loads(ds.info.description)["rule"] == sel.provenance["rule"]
    # the next stage's training set: a tokenised-looking dataset of the whole run, filtered to the selection
    full = datasets.Dataset.from_dict({"id": ex.index.tolist()[::-1], "n": list(range(len(ex)))})
    picked = filter_dataset(full, sel)
    assert sorted(picked["id"]) == sorted(sel.ids.tolist())
    assert picked["n"] == sorted(picked["n"])  # the dataset's own order is kept
    subset = full.select(range(10))
    with pytest.raises(SoiError, match=r"filter_dataset: \d+ selected id\(s\) not in the dataset's 'id' column"):
        filter_dataset(subset, sel)
    with pytest.raises(SoiError, match=r"no column 'example_id' \(pass id_column=...\); columns: id, n"):
        filter_dataset(full, sel, id_column="example_id")


def test_soi_select_format_hf_writes_save_to_disk_with_provenance(run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from soi.cli.main import app

    out = tmp_path / "sel-hf"
    res = CliRunner().invoke(app, ["select", str(run), "--out", str(out), "--metric", "confidence", "--bottom",
                                   "0.25", "--format", "hf"])
    assert res.exit_code == 0, res.output
    ds = datasets.load_from_disk(str(out))
    pe = pq.read_table(run / "analysis" / "per_example.parquet").to_pandas()
    assert len(ds) == 50
    assert np.max(ds["confidence"]) <= np.sort(pe["confidence"].to_numpy())[49] + 1e-12
    prov = json.loads(ds.info.description)
    assert prov["n_selected"] == 50 and prov == json.loads((out / "selection.json").read_text()) | {"soi": "selection"}
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "soi.cli.main", "select", str(run), "--out", str(tmp_path / "x"),
                          "--format", "csv"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --format must be 'files' or 'hf', got 'csv'"
    assert not (tmp_path / "x").exists()
    again = save_dataset(select(pq.read_table(run / "analysis" / "per_example.parquet"), sample=10, seed=1,
                                source_run=run), out)  # replaces the folder as one unit
    assert len(datasets.load_from_disk(str(again))) == 10


@needs_shared
def test_mixture_to_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    from soi.gen.mixture import MixtureSpec, PoolSource, build_mixture

    monkeypatch.setenv("SOI_DATA_DIR", str(SHARED))
    spec = MixtureSpec(seen=("es",), unseen=("de",), ks=(0, 8), english_n=6, n_eval=5, n_validation=2, seed=0,
                       train=(PoolSource("gsm8k", "train"), PoolSource("mgsm", "test", ("es",))),
                       validation=(PoolSource("gsm8k", "validation"), PoolSource("mgsm", "test", ("es",))),
                       eval=(PoolSource("mgsm", "test"),))
    mix = build_mixture(spec, task="math")
    dd = mix.to_dataset(8)
    assert set(dd) == {"train", "validation", "eval"}
    assert dd["train"]["id"] == [r["id"] for r in mix.train_rows(8)]
    assert dd["train"]["response"] == [r["response"] for r in mix.train_rows(8)]
    assert dd["eval"]["id"] == [r["id"] for r in mix.eval_rows()] and set(dd["eval"]["task"]) == {"math"}
    assert sum(dd["train"]["response_filled"]) == 8  # MGSM rows have no solution: '#### N' from the template
    man = json.loads(dd["train"].info.description)
    assert man["k"] == 8 and man["ids"]["train"]["es"] == [r["id"] for r in mix.train_rows(8)][6:]
    assert len(mix.to_dataset(0)["train"]) == 6
