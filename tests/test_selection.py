"""Tests of soi.selection and `soi select`: known answers on hand-built tables, properties, CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import soi.selection as selection_mod
from soi import __version__
from soi.analysis.categories import SOI_CATEGORIES
from soi.errors import SoiError
from soi.selection import (
    IDS_FILE,
    PROVENANCE_FILE,
    ROWS_FILE,
    amount_to_count,
    describe,
    parse_amount,
    save,
    select,
)

AC, LE, LL, FR, FL, NL = range(6)


def _dict(codes: list[int], names: list[str] | tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(list(names)))


def table10() -> pa.Table:
    """Ten examples with distinct metric values (see the expected answers in the tests)."""
    return pa.table({
        "idx": pa.array(range(10), pa.int32()),
        "example_id": [f"e{i}" for i in range(10)],
        "task": _dict([0] * 5 + [1] * 5, ["a", "b"]),
        "source": _dict([0, 1] * 5, ["s1", "s2"]),
        "language": _dict([0] * 10, ["en"]),
        "confidence": [0.95, 0.80, 0.60, 0.50, 0.20, 0.05, 0.90, 0.70, 0.30, 0.10],
        "variability": [0.05, 0.15, 0.30, 0.35, 0.25, 0.02, 0.08, 0.22, 0.33, 0.04],
        "correctness": pa.array([6, 5, 3, 4, 1, 0, 6, 4, 2, 0], pa.int64()),
        "final_correct": [True, True, True, True, False, False, True, True, False, False],
        "soi": _dict([AC, LE, LL, FR, FL, NL, AC, LE, FL, NL], SOI_CATEGORIES),
    })


def ids(sel) -> list[str]:
    return sel.ids.tolist()


# ------------------------------------------------------------------------------------------ known answers
def test_categories_exact_ids_and_forms():
    t = table10()
    assert ids(select(t, categories=["forgettable_lost", "never_learned"])) == ["e4", "e5", "e8", "e9"]
    assert ids(select(t, categories="always_correct, learned_late")) == ["e0", "e2", "e6"]
    sel = select(t, categories=["learned_late"])
    assert sel.provenance["pool_sizes"] == {"input": 10, "categories": 1}
    assert sel.rows["confidence"].to_pylist() == [0.60]


def test_unknown_category_lists_valid_names():
    with pytest.raises(SoiError, match=r"^categories: unknown \['bogus'\].*valid: \['always_correct'"):
        select(table10(), categories=["always_correct", "bogus"])
    with pytest.raises(SoiError, match=r"^categories: give at least one"):
        select(table10(), categories=" , ")
    with pytest.raises(SoiError, match=r"^category_column: no column 'category'"):
        select(table10(), categories=["x"], category_column="category")


def test_where_exact_ids():
    t = table10()
    assert ids(select(t, where="confidence < 0.3 and task == 'b'")) == ["e5", "e9"]
    assert ids(select(t, where="soi in ['always_correct'] or variability > 0.3")) == ["e0", "e3", "e6", "e8"]
    assert ids(select(t, where="final_correct and correctness == 4")) == ["e3", "e7"]
    assert ids(select(t, where="source != 's1' and not correctness < 5")) == ["e1"]


@pytest.mark.parametrize(("expression", "pattern"), [
    ("nosuch > 1", r"^where: unknown column 'nosuch'"),
    ("confidence <", r"^where: cannot parse"),
    ("__import__('os')", r"^where: unsupported syntax"),
    ("confidence + 1", r"^where: .*not a condition"),
    ("task < 0.5", r"^where: cannot evaluate"),
])
def test_where_errors(expression, pattern):
    with pytest.raises(SoiError, match=pattern):
        select(table10(), where=expression)


def test_top_bottom_fraction_and_count():
    t = table10()
    # 0.33 * 10 = 3.3 -> 3 rows: variability .35 (e3), .33 (e8), .30 (e2)
    sel = select(t, metric="variability", top=0.33)
    assert ids(sel) == ["e2", "e3", "e8"]
    assert sel.provenance["metric_range"] == {"min": 0.30, "max": 0.35}
    assert ids(select(t, metric="confidence", bottom=2)) == ["e5", "e9"]
    assert ids(select(t, metric="confidence", top="2")) == ["e0", "e6"]
    assert ids(select(t, metric="confidence", top="20%")) == ["e0", "e6"]
    # 0.25 * 10 = 2.5 rounds half up to 3; 0.01 * 10 = 0.1 gives at least 1; a count is capped at the pool
    assert ids(select(t, metric="confidence", top=0.25)) == ["e0", "e1", "e6"]
    assert ids(select(t, metric="confidence", top=0.01)) == ["e0"]
    assert len(select(t, metric="confidence", bottom=500)) == 10
    assert ids(select(t, metric="correctness", bottom=2)) == ["e5", "e9"]  # int metric


def test_per_group_top_and_bottom():
    t = table10()
    assert ids(select(t, metric="variability", top=2, per_group="task")) == ["e2", "e3", "e7", "e8"]
    assert ids(select(t, metric="confidence", bottom=1, per_group="source")) == ["e4", "e5"]
    sel = select(t, metric="confidence", top=0.4, per_group="task")  # 0.4 * 5 = 2 per task
    assert ids(sel) == ["e0", "e1", "e6", "e7"]
    assert sel.provenance["counts"]["task"] == {"a": 2, "b": 2}


def test_steps_combine_in_order():
    t = table10()
    sel = select(t, categories=["always_correct", "learned_early", "learned_late", "forgettable_recovered"],
                 where="correctness >= 4", metric="confidence", bottom=0.5)
    # categories -> e0 e1 e2 e3 e6 e7; where -> e0 e1 e3 e6 e7; 0.5 * 5 = 2.5 -> 3 lowest: e3 e7 e1
    assert ids(sel) == ["e1", "e3", "e7"]
    assert sel.provenance["pool_sizes"] == {"input": 10, "categories": 6, "where": 5, "metric_missing": 0,
                                            "bottom": 3}
    assert sel.provenance["counts"]["soi"] == {
        "always_correct": 0, "learned_early": 2, "learned_late": 0, "forgettable_recovered": 1,
        "forgettable_lost": 0, "never_learned": 0}


def test_sample_counts_and_per_group():
    t = table10()
    a, b = select(t, sample=4, seed=5), select(t, sample=4, seed=5)
    assert len(a) == 4 and ids(a) == ids(b) and set(ids(a)) <= {f"e{i}" for i in range(10)}
    per = select(t, sample=0.5, per_group="task", seed=1)  # 2.5 -> 3 per task
    assert per.provenance["counts"]["task"] == {"a": 3, "b": 3}
    assert per.provenance["pool_sizes"]["sample"] == 6
    draws = {tuple(ids(select(t, sample=3, seed=s))) for s in range(10)}
    assert len(draws) > 1


def test_ties_are_broken_by_seed_deterministically():
    t = table10().set_column(5, "confidence", pa.array([0.9] * 4 + [0.1] * 6))  # e0..e3 tie at the top
    results = {}
    for seed in range(12):
        first, again = select(t, metric="confidence", top=2, seed=seed), select(t, metric="confidence", top=2,
                                                                                   seed=seed)
        assert ids(first) == ids(again)
        assert len(first) == 2 and set(ids(first)) <= {"e0", "e1", "e2", "e3"}
        results[seed] = tuple(ids(first))
    assert len(set(results.values())) > 1
    # the tie-break depends on the ids, not the row order
    shuffled = t.take(pa.array([7, 3, 9, 0, 2, 5, 1, 8, 4, 6]))
    for seed in range(12):
        assert tuple(ids(select(shuffled, metric="confidence", top=2, seed=seed))) == results[seed]


def test_nan_metric_is_dropped_before_ranking():
    t = table10().set_column(6, "variability", pa.array([None, 0.15, None, 0.35, 0.25, 0.02, 0.08, 0.22,
                                                         float("nan"), 0.04], pa.float64()))
    sel = select(t, metric="variability", top=0.5)  # pool of 7 -> 3.5 -> 4: .35 .25 .22 .15
    assert ids(sel) == ["e1", "e3", "e4", "e7"]
    assert sel.provenance["pool_sizes"]["metric_missing"] == 3
    assert ids(select(t, where="variability > 0.3")) == ["e3"]


def test_result_is_in_idx_order_and_keeps_all_columns():
    t = table10()
    shuffled = t.take(pa.array([9, 4, 0, 7, 2, 5, 8, 1, 6, 3]))
    sel = select(shuffled, metric="variability", top=4)
    assert ids(sel) == ["e2", "e3", "e4", "e8"]
    assert sel.rows["idx"].to_pylist() == [2, 3, 4, 8]
    assert sel.rows.schema == t.schema
    assert sel.rows["variability"].to_pylist() == [0.30, 0.35, 0.25, 0.33]


def test_pandas_input_and_no_idx_column():
    df = table10().drop(["idx"]).to_pandas().iloc[::-1].reset_index(drop=True)
    sel = select(df, metric="confidence", bottom=3)
    assert ids(sel) == ["e9", "e5", "e4"]  # input row order without idx (the frame is reversed)
    assert isinstance(df, pd.DataFrame)


def test_provenance_contents():
    sel = select(table10(), categories=["never_learned"], metric="confidence", top=1, seed=7,
                 source_run=Path("runs/x"))
    p = sel.provenance
    assert p["rule"] == {"categories": ["never_learned"], "category_column": "soi", "where": None,
                         "metric": "confidence", "top": 1, "bottom": None, "per_group": None, "sample": None,
                         "seed": 7, "min_stability": None}
    assert p["seed"] == 7 and p["soi_version"] == __version__ and p["source_run"] == "runs/x"
    assert p["n_input"] == 10 and p["n_selected"] == 1 and ids(sel) == ["e9"]
    assert p["counts"]["soi"]["never_learned"] == 1 and sum(p["counts"]["soi"].values()) == 1
    assert p["counts"]["task"] == {"a": 0, "b": 1} and p["counts"]["language"] == {"en": 1}
    assert p["warnings"] == []
    assert datetime.fromisoformat(p["created"]).tzinfo is not None
    json.dumps(p, allow_nan=False)
    assert describe(sel) == "selected 1 of 10 (10.0%); never_learned 1"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"metric": "confidence", "top": 0.1, "bottom": 0.1}, r"^top/bottom: give only one"),
    ({"top": 0.1}, r"^top: needs a metric.*'confidence'"),
    ({"bottom": 3}, r"^bottom: needs a metric"),
    ({"metric": "confidence"}, r"^metric: 'confidence' given without top or bottom"),
    ({"metric": "nosuch", "top": 1}, r"^metric: unknown or non-numeric column 'nosuch'; numeric columns: "
                                     r"\['idx', 'confidence', 'variability', 'correctness'\]"),
    ({"metric": "task", "top": 1}, r"^metric: unknown or non-numeric column 'task'"),
    ({"metric": "confidence", "top": 1.0}, r"^top: fraction 1.0 must be in \(0, 1\); for a count give an "
                                           r"integer \(1\)"),
    ({"metric": "confidence", "top": 0}, r"^top: count 0 must be >= 1"),
    ({"metric": "confidence", "bottom": -0.5}, r"^bottom: fraction -0.5 must be in"),
    ({"metric": "confidence", "bottom": "lots"}, r"^bottom: 'lots' is not a number"),
    ({"sample": True}, r"^sample: True is not"),
    ({"sample": 2, "per_group": "split"}, r"^per_group: unknown group key 'split'; choose one of"),
    ({"per_group": "task"}, r"^per_group: has no effect without top, bottom or sample"),
    ({"sample": 2, "seed": -1}, r"^seed: must be a non-negative integer"),
    ({"sample": 2, "seed": 1.5}, r"^seed: must be a non-negative integer"),
])
def test_argument_errors_name_the_field(kwargs, pattern):
    with pytest.raises(SoiError, match=pattern) as info:
        select(table10(), **kwargs)
    assert "\n" not in str(info.value)


def test_table_errors():
    with pytest.raises(SoiError, match=r"^table: no 'example_id' column"):
        select(table10().drop(["example_id"]))
    with pytest.raises(SoiError, match=r"^per_group: the table has no 'language' column"):
        select(table10().drop(["language"]), sample=2, per_group="language")
    with pytest.raises(SoiError, match=r"^table: expected a pyarrow Table"):
        select([1, 2, 3])


def test_parse_amount_and_amount_to_count():
    assert parse_amount("0.33", "top") == 0.33 and parse_amount("33%", "top") == pytest.approx(0.33)
    assert parse_amount("5000", "top") == 5000 and isinstance(parse_amount(np.int64(7), "top"), int)
    assert parse_amount(np.float32(0.5), "top") == 0.5 and parse_amount(None, "top") is None
    assert amount_to_count(0.33, np.array([0, 1, 10, 100, 1000])).tolist() == [0, 1, 3, 33, 330]
    assert amount_to_count(0.5, np.array([3, 5, 7])).tolist() == [2, 3, 4]  # half up
    assert amount_to_count(0.7, np.array([45])).tolist() == [32]  # 31.5, though 0.7 * 45 = 31.4999...
    assert amount_to_count(4, np.array([0, 2, 9])).tolist() == [0, 2, 4]


# ------------------------------------------------------------------------------------------ save
def test_save_writes_three_files(tmp_path):
    sel = select(table10(), metric="variability", top=3, source_run="runs/x")
    out = save(sel, tmp_path / "nested" / "sel")
    assert sorted(p.name for p in out.iterdir()) == [ROWS_FILE, IDS_FILE, PROVENANCE_FILE]
    assert (out / IDS_FILE).read_text() == "e2\ne3\ne8\n"
    assert pq.read_table(out / ROWS_FILE).equals(sel.rows)
    assert json.loads((out / PROVENANCE_FILE).read_text()) == sel.provenance
    assert [p.name for p in out.parent.iterdir()] == ["sel"]  # no temporary directory left


def test_save_into_existing_dir_overwrites_and_keeps_other_files(tmp_path):
    out = tmp_path / "sel"
    save(select(table10(), metric="variability", top=3), out)
    (out / "notes.txt").write_text("mine")
    save(select(table10(), categories=["never_learned"]), out)
    assert (out / IDS_FILE).read_text() == "e5\ne9\n"
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", ROWS_FILE, IDS_FILE, PROVENANCE_FILE]


def test_empty_selection_is_written_with_a_warning(tmp_path):
    sel = select(table10(), where="confidence > 2")
    assert len(sel) == 0 and sel.rows.num_rows == 0
    assert sel.provenance["warnings"][0].startswith("empty selection: no rows left of 10")
    assert sel.provenance["metric_range"] is None
    out = save(sel, tmp_path / "empty")
    assert (out / IDS_FILE).read_text() == ""
    assert pq.read_table(out / ROWS_FILE).schema == table10().schema
    assert json.loads((out / PROVENANCE_FILE).read_text())["n_selected"] == 0
    assert len(select(table10().slice(0, 0), metric="confidence", top=0.5)) == 0


def test_save_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    sel = select(table10(), metric="confidence", top=2)
    existing = save(select(table10(), categories=["learned_late"]), tmp_path / "old")
    before = {p.name: p.read_bytes() for p in existing.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(selection_mod.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        save(sel, tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        save(sel, existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoiError, match="out: exists and is not a directory"):
        save(sel, tmp_path / "file")


def test_save_rejects_ids_with_line_breaks(tmp_path):
    t = table10().set_column(1, "example_id", pa.array([f"e{i}" for i in range(9)] + ["bad\nid"]))
    with pytest.raises(SoiError, match=r"^example_id: an id contains a line break"):
        save(select(t), tmp_path / "sel")
    assert not (tmp_path / "sel").exists()


# ------------------------------------------------------------------------------------------ properties
@st.composite
def tables(draw, *, ties: bool):
    n = draw(st.integers(0, 40))
    if ties:
        values = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    else:
        values = draw(st.lists(st.integers(-10_000, 10_000), min_size=n, max_size=n, unique=True))
    groups = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    return pa.table({
        "idx": pa.array(range(n), pa.int32()),
        "example_id": [f"x{i:03d}" for i in range(n)],
        "task": pa.array(groups, pa.string()).dictionary_encode(),
        "m": pa.array(np.asarray(values, np.float64) / 7.0),
    })


amounts = st.one_of(st.integers(1, 50), st.floats(0.01, 0.99))


@settings(max_examples=60, deadline=None)
@given(t=tables(ties=True), k=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_top_k_is_a_dominating_subset(t, k, seed):
    sel = select(t, metric="m", top=k, seed=seed)
    m = np.asarray(t["m"].to_pylist())
    chosen = np.isin(t["example_id"].to_numpy(zero_copy_only=False), sel.ids)
    assert set(ids(sel)) <= set(t["example_id"].to_pylist())
    assert len(sel) == min(k, t.num_rows) == chosen.sum()
    if chosen.any() and (~chosen).any():
        assert m[chosen].min() >= m[~chosen].max()
    assert ids(select(t, metric="m", top=k, seed=seed)) == ids(sel)


@settings(max_examples=60, deadline=None)
@given(t=tables(ties=True), amount=amounts, seed=st.integers(0, 1000), bottom=st.booleans())
def test_per_group_rank_within_each_group(t, amount, seed, bottom):
    kwargs = {"bottom": amount} if bottom else {"top": amount}
    sel = select(t, metric="m", per_group="task", seed=seed, **kwargs)
    task = np.asarray(t["task"].to_pylist(), dtype=object)
    m = np.asarray(t["m"].to_pylist())
    chosen = np.isin(t["example_id"].to_numpy(zero_copy_only=False), sel.ids)
    for g in ("a", "b", "c"):
        in_g = task == g
        assert chosen[in_g].sum() == amount_to_count(amount, np.array([in_g.sum()]))[0]
        rest = in_g & ~chosen
        if chosen[in_g].any() and rest.any():
            if bottom:
                assert m[chosen & in_g].max() <= m[rest].min()
            else:
                assert m[chosen & in_g].min() >= m[rest].max()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), ties=st.booleans(), amount=amounts, seed=st.integers(0, 1000))
def test_selected_set_does_not_depend_on_row_order(data, ties, amount, seed):
    t = data.draw(tables(ties=ties))
    perm = data.draw(st.permutations(range(t.num_rows)))
    shuffled = t.take(pa.array(perm, pa.int64()))
    for kwargs in ({"metric": "m", "top": amount}, {"metric": "m", "bottom": amount, "per_group": "task"},
                   {"sample": amount}, {"where": "m > 0", "sample": amount, "per_group": "task"}):
        a, b = select(t, seed=seed, **kwargs), select(shuffled, seed=seed, **kwargs)
        assert set(ids(a)) == set(ids(b))
        assert ids(a) == ids(b)  # both come back in idx order
        assert b.rows["idx"].to_pylist() == sorted(b.rows["idx"].to_pylist())


@settings(max_examples=40, deadline=None)
@given(t=tables(ties=True), amount=amounts, seed=st.integers(0, 1000))
def test_sample_is_a_seeded_subset_of_the_filtered_pool(t, amount, seed):
    sel = select(t, where="m >= 0", sample=amount, seed=seed)
    pool = [i for i, v in zip(t["example_id"].to_pylist(), t["m"].to_pylist(), strict=True) if v >= 0]
    assert set(ids(sel)) <= set(pool)
    assert len(sel) == amount_to_count(amount, np.array([len(pool)]))[0]
    assert ids(select(t, where="m >= 0", sample=amount, seed=seed)) == ids(sel)


# ------------------------------------------------------------------------------------------ CLI
def _soi(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soi.cli.main", "select", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    from soi.simulate import simulate_run

    root = tmp_path_factory.mktemp("sim")
    return simulate_run(root / "run", n=300, checkpoints=5, groups={"task": ["rte", "sst2"]}, seed=3)


def test_cli_end_to_end(sim_run, tmp_path):
    from soi.analysis.per_example import analyze_run

    res = _soi(str(sim_run), "--out", "sel", "--categories", "forgettable_lost,learned_late,never_learned",
               "--metric", "confidence", "--bottom", "0.5", "--per-group", "task", "--seed", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selected ")
    out = tmp_path / "sel"
    prov = json.loads((out / PROVENANCE_FILE).read_text())
    rows = pq.read_table(out / ROWS_FILE)
    sel_ids = (out / IDS_FILE).read_text().splitlines()
    assert sel_ids == rows["example_id"].to_pylist() and len(sel_ids) == prov["n_selected"] > 0
    assert prov["source_run"] == str(sim_run) and prov["n_input"] == 300
    assert prov["rule"]["categories"] == ["forgettable_lost", "learned_late", "never_learned"]
    assert prov["rule"]["bottom"] == 0.5 and prov["rule"]["per_group"] == "task" and prov["seed"] == 3
    assert f"selected {prov['n_selected']} of 300" in lines[0]
    # same answer as the library on the same table
    table = analyze_run(sim_run, write=False).table
    expected = select(table, categories=["forgettable_lost", "learned_late", "never_learned"],
                      metric="confidence", bottom=0.5, per_group="task", seed=3)
    assert sel_ids == ids(expected)
    assert set(rows["soi"].to_pylist()) <= {"forgettable_lost", "learned_late", "never_learned"}
    pool = prov["pool_sizes"]["categories"]
    assert prov["n_selected"] in range(pool // 2, pool // 2 + 3)  # half of each task's pool, rounded


def test_cli_from_table_and_empty_warning(sim_run, tmp_path):
    from soi.analysis.per_example import analyze_run

    table = analyze_run(sim_run, write=False).table
    pq.write_table(table, tmp_path / "per_example.parquet")
    res = _soi("--from-table", "per_example.parquet", "--out", "amb", "--metric", "variability", "--top", "10",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "amb" / IDS_FILE).read_text().splitlines() == ids(select(table, metric="variability",
                                                                               top=10))
    res = _soi("--from-table", "per_example.parquet", "--out", "none", "--where", "confidence > 2", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stderr.strip().startswith("warning: empty selection")
    assert (tmp_path / "none" / IDS_FILE).read_text() == ""


def test_cli_error_exits_2_with_one_line_and_writes_nothing(sim_run, tmp_path):
    res = _soi(str(sim_run), "--out", "sel", "--metric", "nosuch", "--top", "0.1", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: metric: unknown or non-numeric column")
    res = _soi(str(sim_run), "--out", "sel", "--categories", "bogus", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: categories: unknown ['bogus']")
    assert list(tmp_path.iterdir()) == []


def test_min_stability_filters_first_and_is_validated():
    t = table10().append_column("soi_stability", pa.array([1.0, 2 / 3, 1 / 3, 1.0, 2 / 3, 1 / 3, 1.0, 1.0, 0.5, 2 / 3]))
    sel = select(t, min_stability=2 / 3)
    assert ids(sel) == ["e0", "e1", "e3", "e4", "e6", "e7", "e9"]
    assert sel.provenance["pool_sizes"]["min_stability"] == 7 and sel.provenance["rule"]["min_stability"] == 2 / 3
    both = select(t, min_stability=1.0, categories=["always_correct", "never_learned"])
    plain = set(ids(select(t, categories=["always_correct", "never_learned"])))
    assert set(ids(both)) == plain & {"e0", "e3", "e6", "e7"}
    for bad in (0, 1.5, -0.1, True, "x"):
        with pytest.raises(SoiError, match="min_stability: must be a number in"):
            select(t, min_stability=bad)
    with pytest.raises(SoiError, match="no 'soi_stability' column"):
        select(table10(), min_stability=0.5)
