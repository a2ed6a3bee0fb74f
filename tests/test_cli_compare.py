"""End-to-end ``soi compare`` on two simulated runs sharing their examples."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from soi.analysis.categories import SOI_CATEGORIES
from soi.simulate import simulate_run
from soi.store import read_examples, write_examples

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
])
def test_errors_exit_2_with_one_line(runs, tmp_path, which, extra, message) -> None:
    run_b = tmp_path / "nope" if which == "missing" else runs[which]
    out = tmp_path / "o"
    proc = soi("compare", runs["a"], run_b, "--out", out, *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()
