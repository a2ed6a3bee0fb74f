"""The run-directory contract: write -> read round trips, rank merging, atomic replacement, validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soi.errors import SoiError
from soi.simulate import simulate_run
from soi.store import (
    RunMeta,
    RunWriter,
    dynamics_table,
    examples_table,
    iter_checkpoints,
    list_parts,
    load_dynamics,
    rows_from_logits,
    write_part,
)
from soi.store.reader import read_logits

LABELS = {"t": ["a", "b", "c"]}


def _writer(tmp_path, n=4, **meta):
    w = RunWriter(tmp_path / "run", RunMeta(tasks=LABELS, **meta))
    w.write_examples(examples_table([f"id{i}" for i in range(n)], np.arange(n) % 3, task="t"))
    return w


def test_rows_from_logits_hand_computed():
    logits = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    gold = np.array([0, 1, 0])
    rows = rows_from_logits(logits, gold)
    # row 0: softmax of (2,1,0) -> e^2/(e^2+e+1); margin 2-1 = 1; loss = -log p
    p0 = np.exp(2) / (np.exp(2) + np.exp(1) + 1)
    assert rows["p_gold"][0] == pytest.approx(p0, rel=1e-6)
    assert rows["loss"][0] == pytest.approx(-np.log(p0), rel=1e-6)
    assert rows["margin"][0] == pytest.approx(1.0)
    # row 1: tie between class 0 and 1 -> prediction is the lowest index (0), gold 1 -> margin 0
    assert rows["pred"].tolist() == [0, 0, 2]
    assert rows["margin"][1] == 0.0
    # row 2: gold 0 logit 0 vs best other 3 -> margin -3
    assert rows["margin"][2] == pytest.approx(-3.0)
    assert rows["p_gold"].dtype == np.float32 and rows["pred"].dtype == np.int16


@pytest.mark.parametrize(
    ("logits", "gold", "msg"),
    [
        (np.array([[1.0, np.nan]]), np.array([0]), "NaN or inf"),
        (np.array([[1.0, np.inf]]), np.array([0]), "NaN or inf"),
        (np.array([[1.0, 2.0]]), np.array([2]), "out of range"),
        (np.array([1.0, 2.0]), np.array([0]), "shape"),
        (np.array([[1.0]]), np.array([0]), "C >= 2"),
    ],
)
def test_rows_from_logits_rejects_bad_input(logits, gold, msg):
    with pytest.raises(SoiError, match=msg):
        rows_from_logits(logits, gold)


def test_round_trip_shuffled_order_and_ranks(tmp_path):
    rng = np.random.default_rng(0)
    n, e = 10, 3
    w = _writer(tmp_path, n=n, model="m", setting="single", seed=7)
    gold = np.arange(n) % 3
    all_logits = rng.normal(size=(e, n, 3))
    for ckpt in range(e):
        perm = rng.permutation(n)
        # two writer ranks, each with half the examples in training order
        for rank, part in enumerate(np.array_split(perm, 2)):
            w_rank = RunWriter.__new__(RunWriter)
            w_rank.run_dir, w_rank.meta, w_rank.mode = w.run_dir, w.meta, None
            w_rank.write_logits(checkpoint=ckpt, step=10 * (ckpt + 1), idx=part, logits=all_logits[ckpt, part],
                                gold=gold[part], rank=rank)
    dyn = load_dynamics(w.run_dir)
    assert dyn.p_gold.shape == (n, e)
    assert dyn.steps.tolist() == [10, 20, 30]
    for ckpt in range(e):
        expect = rows_from_logits(all_logits[ckpt], gold)
        np.testing.assert_array_equal(dyn.p_gold[:, ckpt], expect["p_gold"])
        np.testing.assert_array_equal(dyn.pred[:, ckpt], expect["pred"])
        np.testing.assert_array_equal(dyn.margin[:, ckpt], expect["margin"])
        np.testing.assert_array_equal(dyn.loss[:, ckpt], expect["loss"])
    np.testing.assert_array_equal(dyn.correct, dyn.pred == gold[:, None])
    assert dyn.example_ids.tolist() == [f"id{i}" for i in range(n)]
    assert dyn.meta.model == "m" and dyn.meta.seed == 7
    # parts are sorted by idx on disk
    for _, table in iter_checkpoints(w.run_dir):
        assert sorted(table["idx"].to_pylist()) == list(range(n))


def test_rewriting_a_part_replaces_it_and_tmp_files_are_ignored(tmp_path):
    w = _writer(tmp_path)
    idx, gold = np.arange(4), np.arange(4) % 3
    w.write_logits(checkpoint=0, step=1, idx=idx, logits=np.zeros((4, 3)), gold=gold)
    w.write_logits(checkpoint=0, step=1, idx=idx, logits=np.eye(3)[gold] * 5, gold=gold)  # resumed rewrite
    (w.run_dir / "dynamics" / ".tmp-ckpt-000001.rank-0000.parquet.abc").write_bytes(b"partial")
    assert list(list_parts(w.run_dir)) == [0]
    dyn = load_dynamics(w.run_dir)
    assert dyn.correct.all()  # the second write won, nothing doubled
    assert not [p for p in (w.run_dir / "dynamics").iterdir() if p.name.startswith(".tmp") and p.stat().st_size > 7]


def test_file_permissions_follow_umask(tmp_path):
    w = _writer(tmp_path)
    mode = (w.run_dir / "run.json").stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_keep_logits_round_trip_and_variable_width(tmp_path):
    w = _writer(tmp_path, n=3)
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 0.0], [-1.0, 0.0, 1.0]], np.float32)
    w.write_logits(checkpoint=0, step=1, idx=np.array([2, 0, 1]), logits=logits, gold=np.array([2, 0, 1]),
                   keep_logits=True)
    idx, stored = read_logits(w.run_dir, 0)
    assert idx.tolist() == [0, 1, 2]  # sorted by idx
    assert stored == [logits[1].tolist(), logits[2].tolist(), logits[0].tolist()]
    table = dynamics_table(checkpoint=0, step=1, idx=np.array([0, 1]), gold=np.array([0, 1]),
                           pred=np.array([0, 1]), p_gold=np.array([0.5, 0.5]), margin=np.zeros(2),
                           loss=np.ones(2), logits=[np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0])])
    assert [len(x) for x in table["logits"].to_pylist()] == [2, 3]


def test_secondary_mode_directory(tmp_path):
    w = _writer(tmp_path)
    ev = RunWriter(w.run_dir, w.meta, mode="eval-pass")
    gold = np.arange(4) % 3
    ev.write_logits(checkpoint=0, step=5, idx=np.arange(4), logits=np.eye(3)[gold], gold=gold)
    assert (w.run_dir / "dynamics-eval-pass" / "ckpt-000000.rank-0000.parquet").is_file()
    assert load_dynamics(w.run_dir, mode="eval-pass").correct.all()
    with pytest.raises(SoiError, match="missing dynamics folder"):
        load_dynamics(w.run_dir)


def test_max_checkpoints(tmp_path):
    run = simulate_run(tmp_path / "sim", n=50, checkpoints=5, seed=1)
    full = load_dynamics(run)
    first = load_dynamics(run, max_checkpoints=2)
    np.testing.assert_array_equal(first.p_gold, full.p_gold[:, :2])


def test_run_meta_validation(tmp_path):
    with pytest.raises(SoiError, match="recording_mode"):
        RunMeta(tasks=LABELS, recording_mode="train")
    with pytest.raises(SoiError, match="duplicate label"):
        RunMeta(tasks={"t": ["a", "a"]})
    with pytest.raises(SoiError, match="at least one task"):
        RunMeta(tasks={})
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"tasks": LABELS, "modle": "typo"}))
    with pytest.raises(SoiError, match=r"run.json: unknown field\(s\) \['modle'\]"):
        RunMeta.load(run)
    (run / "run.json").write_text(json.dumps({"tasks": LABELS, "format_version": 99}))
    with pytest.raises(SoiError, match="newer"):
        RunMeta.load(run)
    meta = RunMeta(tasks=LABELS, checkpoint_unit="step", extra={"k": 1})
    meta.save(run)
    assert RunMeta.load(run) == meta


def test_examples_table_defaults_and_checks():
    t = examples_table(["x", "y"], [0, 1], task="sst2")
    assert t["source"].to_pylist() == ["sst2", "sst2"]
    assert t["language"].to_pylist() == ["und", "und"]
    assert t["idx"].to_pylist() == [0, 1]
    with pytest.raises(SoiError, match="gold has 1 values for 2 examples"):
        examples_table(["x", "y"], [0], task="sst2")


def test_bytes_per_example_checkpoint_under_12_for_3_classes(tmp_path):
    """The issue's size target: <= 12 bytes per example-checkpoint on disk for 3-class data."""
    run = simulate_run(tmp_path / "sim", n=50_000, checkpoints=3, classes=3, seed=0)
    size = sum(p.stat().st_size for p in (run / "dynamics").iterdir())
    assert size / (50_000 * 3) <= 12.0


def test_part_schema_and_encodings(tmp_path):
    run = simulate_run(tmp_path / "sim", n=100, checkpoints=1, seed=0)
    pf = pq.ParquetFile(run / "dynamics" / "ckpt-000000.rank-0000.parquet")
    schema = pf.schema_arrow
    assert schema.field("p_gold").type == pa.float32() and schema.field("pred").type == pa.int16()
    col = {pf.metadata.row_group(0).column(i).path_in_schema: pf.metadata.row_group(0).column(i)
           for i in range(pf.metadata.num_columns)}
    assert "BYTE_STREAM_SPLIT" in col["p_gold"].encodings
    assert "DELTA_BINARY_PACKED" in col["idx"].encodings


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.integers(2, 5), st.integers(0, 10_000))
def test_reader_is_invariant_to_write_order(n, e, c, seed):
    """Whatever order rows are written in (and split over ranks), the dense arrays are the same."""
    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(seed)
    gold = rng.integers(0, c, n)
    logits = rng.normal(size=(e, n, c))
    dense = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            w = RunWriter(Path(tmp) / "run", RunMeta(tasks={"t": [str(k) for k in range(c)]}))
            w.write_examples(examples_table([f"e{i}" for i in range(n)], gold, task="t"))
            for ckpt in range(e):
                perm = rng.permutation(n)
                cut = rng.integers(0, n + 1)
                for rank, part in enumerate((perm[:cut], perm[cut:])):
                    rows = rows_from_logits(logits[ckpt, part], gold[part])
                    table = dynamics_table(checkpoint=ckpt, step=ckpt, idx=part, gold=gold[part], **rows)
                    write_part(w.run_dir, table, checkpoint=ckpt, rank=rank)
            d = load_dynamics(w.run_dir)
            dense.append((d.p_gold.copy(), d.pred.copy(), d.margin.copy(), d.loss.copy()))
    for a, b in zip(*dense, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pred_out_of_range_for_its_task_is_rejected(tmp_path):
    w = RunWriter(tmp_path / "run", RunMeta(tasks={"bin": ["n", "y"], "tri": ["a", "b", "c"]}))
    w.write_examples(examples_table(["x", "y"], [0, 2], task=["bin", "tri"]))
    ok = dynamics_table(checkpoint=0, step=1, idx=np.array([0, 1]), gold=np.array([0, 2]), pred=np.array([1, 2]),
                        p_gold=np.full(2, 0.5), margin=np.zeros(2), loss=np.ones(2))
    write_part(w.run_dir, ok, checkpoint=0)
    assert load_dynamics(w.run_dir).pred[:, 0].tolist() == [1, 2]
    bad = dynamics_table(checkpoint=0, step=1, idx=np.array([0, 1]), gold=np.array([0, 2]), pred=np.array([2, 2]),
                         p_gold=np.full(2, 0.5), margin=np.zeros(2), loss=np.ones(2))
    write_part(w.run_dir, bad, checkpoint=0)  # pred 2 is valid for 'tri' but not for the binary task
    with pytest.raises(SoiError, match=r"predicted label 2 of example 'x' out of range \[0, 2\) at checkpoint 0"):
        load_dynamics(w.run_dir)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 50), st.integers(2, 8), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_rows_by_class_equals_2d_path(n, c, seed, ties, fortran):
    """rows_from_logits uses per-class loops for few classes and (n, C) ops for many: same results."""
    from soi.store.writer import _rows_2d, _rows_by_class

    rng = np.random.default_rng(seed)
    z = rng.integers(-2, 3, (n, c)).astype(np.float64) if ties else rng.normal(0, 4, (n, c))
    z = np.asfortranarray(z) if fortran else z
    gold = rng.integers(0, c, n)
    for a, b in zip(_rows_by_class(z, gold), _rows_2d(z, gold), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-12, atol=0)
