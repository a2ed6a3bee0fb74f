"""Seed sets: the consensus kernel, Fleiss' kappa, loading and validating seed folders, soi analyze on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from soi.analysis import analyze_run
from soi.analysis.categories import SOI_CATEGORIES
from soi.analysis.seeds import (
    analyze_seeds,
    consensus,
    fleiss_kappa,
    load_seed_set,
    resolve_seed_set,
    stability_by_group,
)
from soi.errors import SoiError
from soi.simulate import simulate_run, simulate_seed_folder
from soi.store import RunMeta, read_examples, write_examples

GROUPS = {"task": ["nli", "sst"], "language": ["en", "de"]}


def soi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soi.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_consensus_by_hand_and_tie_rule() -> None:
    codes = np.array([[0, 2, 5, 1],
                      [0, 2, 4, 3],
                      [1, 3, 4, 5],
                      [0, 3, 5, 3]])
    counts, modal, stab = consensus(codes, 6)
    assert counts.tolist() == [[3, 1, 0, 0, 0, 0], [0, 0, 2, 2, 0, 0], [0, 0, 0, 0, 2, 2], [0, 1, 0, 2, 0, 1]]
    # example 1: tie 2 vs 3 -> the first in SOI order (2); example 2: tie 4 vs 5 -> 4
    assert modal.tolist() == [0, 2, 4, 3]
    assert stab.tolist() == [0.75, 0.5, 0.5, 0.5]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 10_000))
def test_consensus_properties(s: int, n: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 6, (s, n))
    counts, modal, stab = consensus(codes, 6)
    assert (counts.sum(axis=1) == s).all()
    assert (counts[np.arange(n), modal] == counts.max(axis=1)).all()
    assert ((stab >= 1 / 6 - 1e-12) & (stab <= 1)).all()
    # invariant to seed order
    _, modal2, stab2 = consensus(codes[::-1], 6)
    assert (modal2 == modal).all() and np.allclose(stab2, stab)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 7), st.integers(2, 50), st.integers(0, 10_000))
def test_fleiss_kappa_matches_statsmodels(s: int, n: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 3, (s, n))
    counts, _, _ = consensus(codes, 6)
    got = fleiss_kappa(counts)
    if got["kappa"] is None:
        assert np.unique(codes).size == 1
    else:
        assert got["kappa"] == pytest.approx(sm_fleiss_kappa(counts, method="fleiss"), abs=1e-12)


def test_kappa_edge_cases_and_stability_per_group() -> None:
    counts, _, _ = consensus(np.array([[0, 1, 2], [0, 1, 2]]), 6)
    assert fleiss_kappa(counts)["kappa"] == pytest.approx(1.0)
    assert fleiss_kappa(consensus(np.zeros((3, 4), int), 6)[0])["kappa"] is None  # one category only
    one = stability_by_group(np.array([[0, 1, 2]]), 6, np.zeros(3, np.int64), 1)
    assert one[0]["kappa"] is None and "one seed" in one[0]["note"]
    codes = np.array([[0, 0, 1, 2], [0, 1, 1, 3]])
    per = stability_by_group(codes, 6, np.array([0, 0, 1, 1]), 2)
    assert per[0]["mean_stability"] == pytest.approx(0.75) and per[1]["mean_stability"] == pytest.approx(0.75)
    assert per[0]["agreement"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    return simulate_seed_folder(root / "single", [1, 2, 3], n=120, checkpoints=4, groups=GROUPS, setting="single")


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_load_seed_set_aligns_and_matches_single_runs(seeds: Path) -> None:
    data = load_seed_set(resolve_seed_set(seeds))
    assert data.codes.shape == (3, 120) and data.seed_set.seeds == (1, 2, 3)
    for s, run in enumerate(data.seed_set.runs):
        table = analyze_run(run, write=False).table
        codes = np.asarray(table["soi"].combine_chunks().indices)
        assert (data.codes[s] == codes).all()


def test_analyze_seeds_writes_consensus(seeds: Path, tmp_path: Path) -> None:
    folder = copy(seeds, tmp_path / "s")
    res = analyze_seeds(folder)
    table = pq.read_table(folder / "analysis" / "consensus.parquet")
    assert table.num_rows == 120
    counts = np.stack([table[f"n_{c}"].to_numpy() for c in SOI_CATEGORIES], axis=1)
    assert (counts.sum(axis=1) == 3).all()
    modal = np.asarray(table["soi_consensus"].combine_chunks().indices)
    assert (counts[np.arange(120), modal] == counts.max(axis=1)).all()
    np.testing.assert_allclose(table["soi_stability"].to_numpy(), counts.max(axis=1) / 3)
    # seed means of a metric equal the mean of the seeds' own tables
    conf = np.mean([analyze_run(r, write=False).table["confidence"].to_numpy() for r in res.data.seed_set.runs],
                   axis=0)
    np.testing.assert_allclose(table["confidence_mean"].to_numpy(), conf)
    summary = json.loads((folder / "analysis" / "summary.json").read_text())
    assert summary["n_seeds"] == 3 and set(summary["groups"]) == {"all", "task", "source", "language"}
    g = summary["groups"]["all"]["all"]
    assert g["kappa"] == pytest.approx(fleiss_kappa(counts)["kappa"])
    assert sum(g["consensus_counts"].values()) == 120


def test_cli_analyze_seed_folder(seeds: Path, tmp_path: Path) -> None:
    folder = copy(seeds, tmp_path / "s")
    proc = soi("analyze", folder)
    assert proc.returncode == 0, proc.stderr
    assert "3 seeds" in proc.stdout and "kappa" in proc.stdout
    assert (folder / "analysis" / "consensus.parquet").is_file()


@pytest.mark.parametrize("problem", ["ids", "gold", "checkpoints", "broken", "mixed", "labels"])
def test_bad_seed_folders_one_line_exit_2_nothing_written(seeds: Path, tmp_path: Path, problem: str) -> None:
    folder = copy(seeds, tmp_path / "s")
    bad = folder / "seed-2"
    if problem == "ids":
        ex = read_examples(bad)
        values = ex["example_id"].to_pylist()
        values[0] = "zz"
        write_examples(bad, ex.set_column(ex.column_names.index("example_id"), "example_id", pa.array(values)))
        message = "example ids differ"
    elif problem == "gold":  # same ids, other examples (gold drawn afresh)
        shutil.rmtree(bad)
        simulate_run(bad, n=120, checkpoints=4, seed=2, difficulty_seed=99, groups=GROUPS)
        message = "gold labels differ"
    elif problem == "checkpoints":
        last = sorted((bad / "dynamics").iterdir())[-1]
        last.unlink()
        message = "3 checkpoints"
    elif problem == "broken":
        (bad / "examples.parquet").write_text("not parquet")
        message = "seed-2"
    elif problem == "mixed":  # seed-2 is itself a folder of seed runs, not a run
        nested = folder / "nested"
        bad.rename(nested)
        bad.mkdir()
        nested.rename(bad / "seed-5")
        message = "not a run directory"
    else:
        meta = RunMeta.load(bad)
        meta.tasks = {t: [f"x{i}" for i in range(len(v))] for t, v in meta.tasks.items()}
        meta.save(bad)
        message = "labels per task differ"
    proc = soi("analyze", folder)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert bad.name in lines[0]
    assert not (folder / "analysis").exists()


def test_run_directory_holding_seed_runs_is_refused(seeds: Path, tmp_path: Path) -> None:
    run = copy(seeds / "seed-1", tmp_path / "run")
    shutil.copytree(seeds / "seed-2", run / "seed-2")
    proc = soi("analyze", run)
    assert proc.returncode == 2 and "also holds seed folders" in proc.stderr
    assert not (run / "analysis").exists()


def test_single_run_is_a_seed_set_of_one(seeds: Path) -> None:
    ss = resolve_seed_set(seeds / "seed-1")
    assert ss.single_run and ss.n_seeds == 1
    with pytest.raises(SoiError, match="neither a run directory"):
        resolve_seed_set(seeds / "seed-1" / "dynamics")


def test_cli_select_on_seed_consensus(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "sel"
    proc = soi("select", seeds, "--out", out, "--categories", "never_learned,forgettable_lost", "--min-stability",
               "0.67", "--metric", "confidence", "--bottom", "5")
    assert proc.returncode == 0, proc.stderr
    table = analyze_seeds(seeds, write=False).table
    stab = table["soi_stability"].to_numpy()
    cons = np.asarray(SOI_CATEGORIES, dtype=object)[np.asarray(table["soi_consensus"].combine_chunks().indices)]
    conf = table["confidence_mean"].to_numpy()
    pool = np.flatnonzero((stab >= 2 / 3 - 1e-12) & np.isin(cons, ["never_learned", "forgettable_lost"]))
    expected = set(np.asarray(table["example_id"].to_pylist(), dtype=object)[pool[np.argsort(conf[pool])[:5]]])
    got = set((out / "selected_ids.txt").read_text().split())
    assert got == expected
    prov = json.loads((out / "selection.json").read_text())
    assert prov["rule"]["min_stability"] == 0.67
    assert not (seeds / "analysis").exists()  # selecting does not write the consensus
    bad = soi("select", seeds, "--out", tmp_path / "x", "--min-stability", "0")
    assert bad.returncode == 2 and "--min-stability must be in (0, 1]" in bad.stderr
    bad = soi("select", seeds / "seed-1", "--out", tmp_path / "x", "--min-stability", "0.5")
    assert bad.returncode == 2 and "soi_stability" in bad.stderr


def test_one_seed_folder_works_with_a_note(seeds: Path, tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copytree(seeds / "seed-2", folder / "seed-2")
    proc = soi("analyze", folder)
    assert proc.returncode == 0, proc.stderr
    assert "seed noise cannot be separated" in proc.stdout.replace("\n", " ")
    summary = json.loads((folder / "analysis" / "summary.json").read_text())
    g = summary["groups"]["all"]["all"]
    assert summary["n_seeds"] == 1 and g["kappa"] is None and g["mean_stability"] is None
    table = pq.read_table(folder / "analysis" / "consensus.parquet")
    assert set(table["soi_stability"].to_pylist()) == {1.0}


def test_cached_seed_analysis_used_only_when_fresh(seeds: Path, tmp_path: Path) -> None:
    import os

    from soi.analysis.seeds import load_run_table

    run = copy(seeds / "seed-1", tmp_path / "run")
    table, _, cached = load_run_table(run)
    assert not cached
    analyze_run(run)
    again, info, cached = load_run_table(run)
    assert cached and info["n_checkpoints"] == 4
    assert again["soi"].to_pylist() == table["soi"].to_pylist()
    assert not load_run_table(run, late_fraction=0.75)[2]  # other late_fraction
    analyze_run(run, max_checkpoints=2)
    assert not load_run_table(run)[2]  # analysed on fewer checkpoints
    analyze_run(run)
    part = sorted((run / "dynamics").iterdir())[0]
    later = (run / "analysis" / "summary.json").stat().st_mtime + 10
    os.utime(part, (later, later))
    assert not load_run_table(run)[2]  # dynamics newer than the analysis
