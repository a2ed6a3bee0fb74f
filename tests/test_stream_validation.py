"""Fast validation paths of the readers (soi.store.reader / soi.store.shards): the checks made from Parquet
statistics and value bounds refuse exactly what the full checks refuse, with the same message, in the in-memory
and the streamed path; ``tag_codes`` agrees with its reference; the examples writers cut ``ROW_BLOCK`` row groups."""

from __future__ import annotations

import itertools
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soi.analysis.per_example import analyze_run
from soi.analysis.streaming import id_hashes, stream_analysis
from soi.errors import SoiError
from soi.store import RunMeta, RunWriter, examples_table, load_dynamics, tag_codes
from soi.store import writer as store_writer
from soi.store.shards import ChunkedExamplesWriter, plan_shards, read_shard
from soi.store.writer import PART_WRITE_OPTIONS, dynamics_table, rows_from_logits

N = 40


def _store(root: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """40 examples of two tasks (2 and 3 labels), 2 checkpoints, row groups of 8 rows."""
    run = root / "run"
    task = np.asarray(["two", "three"] * (N // 2))
    gold = np.where(task == "two", np.arange(N) % 2, np.arange(N) % 3)
    w = RunWriter(run, RunMeta(tasks={"two": ["a", "b"], "three": ["a", "b", "c"]}))
    w.write_examples(examples_table([f"x{i:02d}" for i in range(N)], gold, task=task))
    for c in range(2):
        logits = np.random.default_rng(c).normal(0, 1, (N, 3))
        logits[task == "two", 2] = -1e3
        rows = rows_from_logits(logits, gold)
        table = dynamics_table(checkpoint=c, step=10 * (c + 1), idx=np.arange(N), gold=gold, **rows)
        with mock.patch.object(store_writer, "ROW_BLOCK", 8):
            store_writer.write_part(run, table, checkpoint=c)
    return run, gold, task


def _rewrite(run: Path, column: str, row: int, value: object, *, statistics: bool) -> Path:
    """Checkpoint 1's part with one value replaced, written as soi does (row groups of 8) with or without stats."""
    path = run / "dynamics" / "ckpt-000001.rank-0000.parquet"
    table = pq.read_table(path)
    values = table[column].to_pylist()
    values[row] = value
    field = table.schema.field(column)
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, field.type))
    opts = dict(PART_WRITE_OPTIONS, write_statistics=PART_WRITE_OPTIONS["write_statistics"] if statistics else False)
    pq.write_table(table, path, row_group_size=8, **opts)
    return path


BAD = [
    ("margin", 13, float("nan"), "column 'margin' has NaN or inf at checkpoint 1"),
    ("loss", 30, float("inf"), "column 'loss' has NaN or inf at checkpoint 1"),
    ("p_gold", 5, float("-inf"), "column 'p_gold' has NaN or inf at checkpoint 1"),
    ("p_gold", 21, 1.25, "column 'p_gold' is a probability but has 1.25 for example 'x21' at checkpoint 1"),
    ("checkpoint", 17, 3, "column 'checkpoint' disagrees with the file name (checkpoint 1)"),
    ("step", 33, 99, "checkpoint 1 must have one 'step' value in all rows"),
    ("pred", 18, 2, "predicted label 2 of example 'x18' out of range [0, 2) at checkpoint 1"),  # task 'two'
    ("pred", 19, -1, "predicted label -1 of example 'x19' out of range [0, 3) at checkpoint 1"),
    ("gold", 26, 1, "gold label of example 'x26' differs from examples.parquet at checkpoint 1"),
    ("idx", 9, 8, "duplicate rows for example 'x08' (idx 8) at checkpoint 1"),
]


@pytest.mark.parametrize("statistics", [True, False])
@pytest.mark.parametrize(("column", "row", "value", "message"), BAD)
def test_bad_values_are_refused_alike(tmp_path, column, row, value, message, statistics):
    run, _, _ = _store(tmp_path)
    path = _rewrite(run, column, row, value, statistics=statistics)
    plan = plan_shards(run)
    assert bool(plan.parts[1][0].constants) is statistics  # the statistics path is taken exactly when it can be
    expected = f"{path}: {message}"
    with pytest.raises(SoiError) as memory:
        load_dynamics(run)
    assert str(memory.value) == expected
    with pytest.raises(SoiError) as whole:
        read_shard(plan, 0, N)
    assert str(whole.value) == expected
    shard = min(row, N - 8) // 8 * 8  # the row group holding the bad row, as one shard
    with pytest.raises(SoiError) as one:
        read_shard(plan, shard, shard + 8 if column != "idx" else shard + 16)
    assert str(one.value) == expected
    with pytest.raises(SoiError) as streamed:
        stream_analysis(run, shard_size=8, workers=2, write=False)
    assert str(streamed.value) == expected


def test_good_store_reads_alike_with_and_without_statistics(tmp_path):
    run, gold, _ = _store(tmp_path)
    ref = analyze_run(run, write=False)
    path = run / "dynamics" / "ckpt-000001.rank-0000.parquet"
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=8, **dict(PART_WRITE_OPTIONS, write_statistics=False))
    plan = plan_shards(run, shard_size=16)
    assert set(plan.parts[0][0].constants) == {"checkpoint", "step"} and plan.parts[1][0].constants == {}
    dyn = read_shard(plan, 16, 32)
    assert np.array_equal(dyn.steps, [10, 20])
    assert np.array_equal(dyn.gold, gold[16:32])
    streamed, _ = stream_analysis(run, shard_size=16, write=False)
    assert streamed.table.equals(ref.table) and streamed.summary == ref.summary


def _tag_codes_reference(table: pa.Table, key: str) -> tuple[np.ndarray, list[str]]:
    """The straightforward definition: sorted names that occur, each row's rank among them."""
    values = ["" if v is None else v for v in table[key].to_pylist()]
    names = sorted(set(values))
    pos = {name: i for i, name in enumerate(names)}
    return np.asarray([pos[v] for v in values], np.int32), names


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["b", "a", "", "zz", "é", "c"])), max_size=60),
       extra=st.lists(st.sampled_from(["q", "a", "m"]), max_size=3, unique=True), chunks=st.integers(1, 3),
       dictionary=st.booleans())
def test_tag_codes_matches_reference(values, extra, chunks, dictionary):
    arr = pa.array(values, pa.string())
    if dictionary:  # a dictionary in first-seen order, with unused names appended
        names = list(dict.fromkeys([v for v in values if v is not None] + extra))
        codes = pa.array([None if v is None else names.index(v) for v in values], pa.int32())
        arr = pa.DictionaryArray.from_arrays(codes, pa.array(names, pa.string()))
    cut = np.linspace(0, len(values), chunks + 1).astype(int)
    col = pa.chunked_array([arr.slice(a, b - a) for a, b in itertools.pairwise(cut.tolist())], arr.type)
    table = pa.table({"tag": col})
    codes, names = tag_codes(table, "tag")
    ref_codes, ref_names = _tag_codes_reference(table, "tag")
    assert names == ref_names
    assert codes.dtype == np.int32 and np.array_equal(codes, ref_codes)
    codes[:] = 0  # a private, writable array (never a view of Arrow's buffer)


def test_examples_writers_cut_row_blocks(tmp_path):
    ids = [f"e{i}" for i in range(50)]
    table = examples_table(ids, np.zeros(50, int), task="t")
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        RunWriter(tmp_path / "a", RunMeta(tasks={"t": ["x", "y"]})).write_examples(table)
        with ChunkedExamplesWriter(tmp_path / "b") as w:
            for lo, size in ((0, 5), (5, 20), (25, 1), (26, 24)):
                w.write(table.slice(lo, size))
    for name in ("a", "b"):
        pf = pq.ParquetFile(tmp_path / name / "examples.parquet")
        assert [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)] == [16, 16, 16, 2]
        assert pf.read().equals(pq.read_table(tmp_path / "a" / "examples.parquet"))
        assert "RLE_DICTIONARY" not in pf.metadata.row_group(0).column(1).encodings  # ids: no dictionary


def _fnv_reference(s: str) -> int:
    """id_hashes' definition for one string, byte by byte in Python integers."""
    mask = 2**64 - 1
    raw = s.encode("utf-8")
    h = 0xCBF29CE484222325 ^ len(raw)
    for k in range(max(1, -(-len(raw) // 8))):
        h = ((h ^ int.from_bytes(raw[8 * k:8 * k + 8].ljust(8, b"\0"), "little")) * 0x100000001B3) & mask
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    return h ^ (h >> 33)


@settings(max_examples=80, deadline=None)
@given(strings=st.lists(st.text(max_size=30), max_size=40), cut=st.integers(0, 5))
def test_id_hashes_depend_on_the_string_only(strings, cut):
    arr = pa.array(strings, pa.string())
    h = id_hashes(arr)
    assert h.tolist() == [_fnv_reference(s) for s in strings]
    assert np.array_equal(id_hashes(arr.cast(pa.large_string())), h)
    assert np.array_equal(id_hashes(arr.slice(min(cut, len(strings)))), h[min(cut, len(strings)):])


def test_duplicate_short_id_next_to_long_ids_in_another_shard(tmp_path):
    """The same id in two shards whose longest ids differ in length is still found (hashes never depend on the
    neighbouring strings)."""
    run, _, _ = _store(tmp_path)
    table = pq.read_table(run / "examples.parquet")
    ids = table["example_id"].to_pylist()
    ids[30] = ids[3]
    ids[31] = "a-much-longer-example-id-than-the-others"
    table = table.set_column(1, "example_id", pa.array(ids))
    pq.write_table(table, run / "examples.parquet")
    with pytest.raises(SoiError, match=r"examples\.parquet: duplicate example_id 'x03'$"):
        analyze_run(run, write=False)
    with pytest.raises(SoiError, match=r"examples\.parquet: duplicate example_id 'x03'$"):
        stream_analysis(run, shard_size=8, workers=2, write=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_max_checkpoints_refused_alike(tmp_path, bad):
    """``max_checkpoints`` 0 / -1 (which would mean all / drop the last as a slice bound) is refused by the
    in-memory and the streamed path with the same one-line message, before anything is written."""
    run, _, _ = _store(tmp_path)
    messages = []
    for call in (lambda: analyze_run(run, max_checkpoints=bad),
                 lambda: stream_analysis(run, max_checkpoints=bad, workers=2),
                 lambda: plan_shards(run, max_checkpoints=bad)):
        with pytest.raises(SoiError) as err:
            call()
        messages.append(str(err.value))
    assert len(set(messages)) == 1 and "\n" not in messages[0]
    assert messages[0] == f"max_checkpoints must be an integer >= 1 (or None for all), got {bad!r}"
    assert not (run / "analysis").exists()
    assert stream_analysis(run, max_checkpoints=1, workers=2)[0].summary["n_checkpoints"] == 1
