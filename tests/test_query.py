"""DuckDB and polars read a run's store and per_example.parquet; every SQL / polars example of docs/store.md is
executed and checked against soi's own analysis (load_dynamics, analyze_run's summary)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

duckdb_mod = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

import soi.store  # noqa: E402
from soi.analysis import analyze_run  # noqa: E402
from soi.errors import SoiError  # noqa: E402
from soi.simulate import simulate_run  # noqa: E402
from soi.store import load_dynamics, read_examples  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "store.md"


def _blocks(lang: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Querying with DuckDB")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("q") / "run"
    simulate_run(run, n=400, checkpoints=5, seed=3, groups={"task": ["a", "b"], "language": ["en", "fa"]})
    ex = read_examples(run)
    analyze_run(run)
    (run / "dynamics" / ".tmp-ckpt-000009.rank-0000.parquet").write_bytes(b"half a file")  # must be ignored
    assert ex.num_rows == 400
    return run


def _sql(block: str, run: Path) -> str:
    return block.replace("runs/sst2", run.as_posix()).strip().rstrip(";")


def test_docs_sql_from_the_files_matches_soi_confidence(run: Path) -> None:
    first = _blocks("sql")[0]
    assert "'runs/sst2/dynamics/ckpt-*.parquet'" in first
    got = duckdb_mod.sql(_sql(first, run)).df()
    ref = pd.read_parquet(run / "analysis" / "per_example.parquet").sort_values("example_id")
    assert got["example_id"].tolist() == ref["example_id"].tolist()
    np.testing.assert_allclose(got["confidence"].to_numpy(), ref["confidence"].to_numpy(), rtol=1e-6)


def test_docs_sql_through_the_connection(run: Path) -> None:
    con = soi.store.duckdb(run)
    assert set(soi.store.run_tables(run)) == {"examples", "dynamics", "per_example"}
    blocks = _blocks("sql")
    assert len(blocks) == 4
    dyn = load_dynamics(run)
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    # accuracy per checkpoint and language = the dense arrays' mean correctness per group
    acc = con.sql(_sql(blocks[1], run)).df()
    lang = np.asarray(read_examples(run).column("language").to_pylist())
    for (ckpt, language), value in acc.set_index(["checkpoint", "language"])["accuracy"].items():
        assert value == pytest.approx(dyn.correct[lang == language, ckpt].mean())
    assert len(acc) == dyn.correct.shape[1] * 2
    # SOI shares per task = summary.json's
    shares = con.sql(_sql(blocks[2], run)).df()
    for task, rows in shares.groupby("task"):
        want = {k: v for k, v in summary["groups"]["task"][task]["shares"].items() if v > 0}
        assert dict(zip(rows["soi"], rows["share"], strict=True)) == pytest.approx(want)
    # forgettable_lost rows with their text: the per_example <-> examples join on idx
    lost = con.sql(_sql(blocks[3], run)).df()
    pe = pd.read_parquet(run / "analysis" / "per_example.parquet")
    ref = pe[pe["soi"] == "forgettable_lost"].sort_values(["forgetting_events", "idx"], ascending=[False, True])
    assert lost["example_id"].tolist() == ref["example_id"].head(10).tolist()
    assert lost["forgetting_events"].tolist() == ref["forgetting_events"].head(10).tolist()
    texts = dict(zip(read_examples(run).column("example_id").to_pylist(), read_examples(run).column("text")
                     .to_pylist(), strict=True))
    assert lost["text"].tolist() == [texts[i] for i in lost["example_id"]]
    assert 0 < len(lost) <= 10


def test_docs_polars_example_and_lazy_tables(run: Path) -> None:
    (block,) = _blocks("python")
    scope: dict = {}
    exec(block.replace("runs/sst2", run.as_posix()), scope)  # the documented snippet, verbatim
    conf = scope["conf"].sort("example_id")
    ref = pd.read_parquet(run / "analysis" / "per_example.parquet").sort_values("example_id")
    assert conf["example_id"].to_list() == ref["example_id"].tolist()
    np.testing.assert_allclose(conf["confidence"].to_numpy(), ref["confidence"].to_numpy(), rtol=1e-6)
    lazy = soi.store.polars(run)
    assert set(lazy) == {"examples", "dynamics", "per_example"}
    counts = lazy["per_example"].group_by("soi").len().collect()
    want = pd.read_parquet(run / "analysis" / "per_example.parquet")["soi"].astype(str).value_counts().to_dict()
    assert dict(zip(counts["soi"].cast(pl.Utf8), counts["len"], strict=True)) == want
    n_rows = lazy["dynamics"].select(pl.len()).collect().item()
    assert n_rows == 400 * 5  # the half-written .tmp part is not read


def test_second_mode_views_and_errors(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copytree(copy / "dynamics", copy / "dynamics-eval-pass")
    con = soi.store.duckdb(copy)
    assert con.sql("SELECT count(*) FROM dynamics_eval_pass").fetchall()[0][0] == 400 * 5
    assert "per_example" in soi.store.run_tables(copy)
    quote = tmp_path / "it's a run"
    shutil.copytree(run, quote)
    con = soi.store.duckdb(quote)  # keep the connection: a relation of a collected one is closed
    assert con.sql("SELECT count(*) FROM examples").fetchall()[0][0] == 400
    with pytest.raises(SoiError, match=r"not a soi run directory"):
        soi.store.duckdb(tmp_path / "nothing")
