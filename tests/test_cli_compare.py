"""End-to-end ``soi compare`` on two simulated runs sharing their examples."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from soi.analysis.categories import SOI_CATEGORIES
from soi.simulate import simulate_run, simulate_seed_folder
from soi.store import RunMeta, read_examples, write_examples

N = 300
GROUPS = {"task": ["nli", "sst"], "source": ["web", "news"], "language": ["en", "de"]}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def soi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soi.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    a = simulate_run(root / "single", n=N, checkpoints=4, seed=1, difficulty_seed=5, groups=GROUPS, setting="single")
    b = simulate_run(root / "multi", n=N, checkpoints=4, seed=2, difficulty_seed=5, skill=1.6, groups=GROUPS,
                     setting="multi")
    # same examples and dynamics under other ids: no example shared with the others
    other = simulate_run(root / "other", n=50, checkpoints=4, seed=3, difficulty_seed=5, groups=GROUPS)
    ex = read_examples(other)
    ids = pc.binary_join_element_wise(pa.scalar("zz-"), ex["example_id"], "")
    write_examples(other, ex.set_column(ex.column_names.index("example_id"), "example_id", ids))
    return {"a": a, "b": b, "other": other}


@pytest.fixture(scope="module")
def result(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cmp") / "out"
    proc = soi("compare", runs["a"], runs["b"], "--out", out, "--n-boot", "1000", "--seed", "3")
    return out, proc


def _read_matrix(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    cols = rows[0][1:]
    names = [r[0] for r in rows[1:]]
    return names, cols, np.array([[float(x) for x in r[1:]] for r in rows[1:]])


def test_compare_writes_all_outputs(result) -> None:
    out, proc = result
    assert proc.returncode == 0, proc.stderr
    assert "shared examples" in proc.stdout and "language=de" in proc.stdout
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    expected = ["all=all", "task=nli", "task=sst", "source=news", "source=web", "language=de", "language=en"]
    assert [f"{g['key']}={g['group']}" for g in stats["groups"]] == expected
    for stem in expected:
        for path in (out / "transitions" / f"{stem}.csv", out / "transitions" / f"{stem}_rowpct.csv",
                     out / "heatmaps" / f"{stem}.png"):
            assert path.is_file() and path.stat().st_size > 0, path
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_csv_matrices_sum_to_n_shared(result) -> None:
    out, _ = result
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["n_shared"] == N and stats["n_only_a"] == stats["n_only_b"] == 0
    by_key: dict[str, int] = {}
    for g in stats["groups"]:
        rows, cols, counts = _read_matrix(out / g["files"]["counts_csv"])
        assert rows == cols == list(SOI_CATEGORIES)
        assert counts.sum() == g["n_shared"]
        np.testing.assert_array_equal(counts, np.array(g["counts"]))
        _, _, pct = _read_matrix(out / g["files"]["rowpct_csv"])
        totals = counts.sum(axis=1)
        np.testing.assert_allclose(pct.sum(axis=1), np.where(totals > 0, 100.0, 0.0), atol=1e-4)
        np.testing.assert_allclose(pct, 100 * np.array(g["row_share"]), atol=1e-5)
        by_key[g["key"]] = by_key.get(g["key"], 0) + g["n_shared"]
    assert by_key == {"all": N, "task": N, "source": N, "language": N}


def test_heatmaps_are_valid_pngs(result) -> None:
    from PIL import Image

    out, _ = result
    pngs = sorted((out / "heatmaps").glob("*.png"))
    assert len(pngs) == 7
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as im:
            im.verify()
            assert im.size[0] > 500 and im.size[1] > 500


def test_stats_json_consistent_with_parquet(result, runs) -> None:
    out, _ = result
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    long = pq.read_table(out / "transitions.parquet")
    assert long.column_names == ["group_key", "group", "from", "to", "count", "row_share"]
    assert long.num_rows == len(stats["groups"]) * len(SOI_CATEGORIES) ** 2
    df = long.to_pandas()
    k = len(SOI_CATEGORIES)
    for g in stats["groups"]:
        part = df[(df["group_key"] == g["key"]) & (df["group"] == g["group"])]
        assert list(part["from"].astype(str)[:k]) == [SOI_CATEGORIES[0]] * k
        np.testing.assert_array_equal(part["count"].to_numpy().reshape(k, k), np.array(g["counts"]))
        np.testing.assert_allclose(part["row_share"].to_numpy().reshape(k, k), np.array(g["row_share"]))
        m = g["mcnemar"]
        assert 0.0 <= m["p_value"] <= 1.0 and m["method"] == ("exact" if m["b"] + m["c"] < 25 else "chi2")
        for name, sc in g["share_change"].items():
            assert sc["lo"] <= sc["hi"]
            assert sc["significant"] == (sc["lo"] > 0 or sc["hi"] < 0)
            assert sc["observed"] == pytest.approx(g["share_b"][name] - g["share_a"][name])
        assert sum(g["counts_a"].values()) == sum(g["counts_b"].values()) == g["n_shared"]
    overall = stats["groups"][0]
    assert overall["accuracy_b"] > overall["accuracy_a"]  # B has more skill
    assert overall["share_change"]["always_correct"]["significant"]
    assert stats["run_a"]["label"] == "single" and stats["run_b"]["label"] == "multi"
    assert stats["run_a"]["path"] == str(runs["a"].resolve())
    assert stats["params"]["n_boot"] == 1000
    assert stats["params"]["seed"] == 3 and stats["params"]["late_fraction"] == 0.5
    assert stats["params"]["group_by"] == ["task", "source", "language"]
    assert stats["soi_version"]


def test_group_by_option_and_labels(runs, tmp_path) -> None:
    out = tmp_path / "o"
    proc = soi("compare", runs["a"], runs["b"], "-o", out, "--group-by", "language", "--n-boot", "50",
               "--label-a", "mono", "--label-b", "poly")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert [g["key"] for g in stats["groups"]] == ["all", "language", "language"]
    assert (stats["run_a"]["label"], stats["run_b"]["label"]) == ("mono", "poly")
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["all=all.png", "language=de.png",
                                                                    "language=en.png"]


@pytest.mark.parametrize(("which", "extra", "message"), [
    ("other", [], "share no example_id"),
    ("missing", [], "run directory not found"),
    ("b", ["--group-by", "task,lang"], "--group-by: unknown value 'lang'"),
    ("b", ["--max-checkpoints", "0"], "--max-checkpoints must be >= 1"),
    ("b", ["--max-checkpoints", "-1"], "--max-checkpoints must be >= 1"),
    ("b", ["--n-boot", "0"], "--n-boot must be >= 1"),
    ("b", ["--alpha", "0"], "--alpha must be in (0, 0.5]"),
    ("b", ["--late-fraction", "1.5"], "--late-fraction must be in (0, 1]"),
    ("relabelled", [], "label names differ"),
])
def test_errors_exit_2_with_one_line(runs, tmp_path, which, extra, message) -> None:
    if which == "relabelled":  # same number of labels, other names: not comparable
        run_b = tmp_path / "relabelled"
        shutil.copytree(runs["b"], run_b)
        meta = RunMeta.load(run_b)
        meta.tasks = {t: [f"other_{i}" for i in range(len(v))] for t, v in meta.tasks.items()}
        meta.save(run_b)
    else:
        run_b = tmp_path / "nope" if which == "missing" else runs[which]
    out = tmp_path / "o"
    proc = soi("compare", runs["a"], run_b, "--out", out, *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_out_is_replaced_as_a_whole_and_foreign_folders_are_refused(runs, tmp_path) -> None:
    out = tmp_path / "o"
    assert soi("compare", runs["a"], runs["b"], "-o", out, "--n-boot", "20").returncode == 0
    (out / "heatmaps" / "task=gone.png").write_bytes(b"stale")
    assert soi("compare", runs["a"], runs["b"], "-o", out, "--n-boot", "20", "-g", "none").returncode == 0
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["all=all.png"]  # old set gone with its files
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    proc = soi("compare", runs["a"], runs["b"], "-o", foreign)
    assert proc.returncode == 2 and "not a soi compare output" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"
    # a failing compare leaves the previous output untouched and no temp folder behind
    before = (out / "stats.json").read_bytes()
    proc = soi("compare", runs["a"], runs["other"], "-o", out)
    assert proc.returncode == 2 and (out / "stats.json").read_bytes() == before
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


@pytest.fixture(scope="module")
def seed_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seeds")
    planted = np.zeros(N, bool)
    planted[: N // 5] = True
    a = simulate_seed_folder(root / "single", [1, 2, 3], n=N, checkpoints=4, groups=GROUPS, setting="single")
    b = simulate_seed_folder(root / "multi", [1, 2, 3], n=N, checkpoints=4, groups=GROUPS, setting="multi",
                             planted=planted, planted_shift=-3.0)
    rng = np.random.default_rng(0)
    ids = [f"test-{i}" for i in range(80)]
    for folder, p in ((a, 0.6), (b, 0.75)):
        for run in sorted(folder.iterdir()):
            (run / "eval").mkdir()
            pq.write_table(pa.table({"example_id": ids, "gold": np.zeros(80, np.int64), "pred": np.zeros(80, np.int64),
                                     "p_gold": np.full(80, 0.5), "correct": rng.random(80) < p,
                                     "language": ["en"] * 80}), run / "eval" / "test.parquet")
    return {"a": a, "b": b}


def test_compare_seed_folders(seed_folders, tmp_path) -> None:
    out = tmp_path / "o"
    proc = soi("compare", seed_folders["a"], seed_folders["b"], "-o", out, "--n-boot", "200", "--no-heatmaps")
    assert proc.returncode == 0, proc.stderr
    assert "3 + 3 seeds" in proc.stdout and "test set test" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("test set test"))
    assert "(CI over items and seeds); seeds and items t p=" in line and "item-level McNemar p=" in line
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["run_a"]["kind"] == "seeds" and stats["run_a"]["seeds"] == [1, 2, 3]
    g = stats["groups"][0]
    assert g["seeds"] == {"a": [1, 2, 3], "b": [1, 2, 3]} and g["n_seed_pairs"] == 9
    assert sum(sum(r) for r in g["counts"]) == 9 * N  # pooled over the 3 x 3 seed pairs
    assert g["mcnemar"]["data"] == "training dynamics" and len(g["mcnemar"]["per_seed"]) == 3
    assert 0 <= g["stability"]["a"]["mean_stability"] <= 1 and g["stability"]["b"]["kappa"] is not None
    null = g["seed_null"]
    assert null["data"] == "training dynamics" and len(null["cells"]) == 36
    assert null["overall"]["significant"]  # the planted effect (20% of examples much harder in B)
    assert any(c["significant"] and c["to"] == "never_learned" and c["excess"] > 0 for c in null["cells"])
    for c in null["cells"]:
        assert c["excess"] == pytest.approx(c["observed"] - c["null"])
        assert c["lo"] <= c["excess"] <= c["hi"] and c["q_value"] >= c["p_value"] - 1e-12
    np.testing.assert_allclose(np.array(null["excess"]).sum(), 0.0, atol=1e-12)
    t = stats["test_set"]["test"]
    assert t["data"] == "test set" and t["mcnemar"]["data"] == "test set" and len(t["mcnemar"]["per_seed"]) == 3
    assert t["difference"]["lo"] <= t["difference"]["observed"] <= t["difference"]["hi"]


def test_compare_run_against_seed_folder_and_single_seed_note(seed_folders, runs, tmp_path) -> None:
    out = tmp_path / "o"
    proc = soi("compare", seed_folders["a"] / "seed-1", seed_folders["b"], "-o", out, "--n-boot", "50", "-g", "none",
               "--no-heatmaps")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert any("seed noise cannot be separated" in n for n in stats["notes"])
    assert stats["test_set"]["test"]["difference"]["ci_over"] == "items only (1 seed on side a)"
    assert "(1 seed on side a: CI over items only); item t p=" in proc.stdout
    g = stats["groups"][0]
    assert g["seed_null"]["overall"]["p_value"] is None and g["stability"]["a"]["kappa"] is None
    # one run per side: the classic statistics plus the note
    proc = soi("compare", runs["a"], runs["b"], "-o", tmp_path / "o2", "--n-boot", "50", "-g", "none")
    stats = json.loads((tmp_path / "o2" / "stats.json").read_text(encoding="utf-8"))
    assert stats["groups"][0]["seed_null"]["cells"] == [] and "note:" in proc.stdout
