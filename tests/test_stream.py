"""Out-of-core analysis (soi.store.shards, soi.analysis.streaming): equality with the in-memory path on random
stores, shard planning, the shardable writer, bad input mid-stream, streamed select / compare."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import soi.analysis.streaming as streaming
from soi.analysis.categories import CategoryRules
from soi.analysis.per_example import analyze_run
from soi.analysis.streaming import (
    BASE_BYTES,
    IdCheck,
    ShardMerger,
    id_hashes,
    parse_memory,
    shard_size_for,
    stream_analysis,
)
from soi.cli.main import app
from soi.errors import SoiError
from soi.selection import select, stream_select
from soi.simulate import simulate_run
from soi.store import RunMeta, RunWriter, examples_table, write_part
from soi.store import writer as store_writer
from soi.store.shards import ChunkedExamplesWriter, ChunkedPartWriter, cut_shards, plan_shards, read_shard
from soi.store.writer import dynamics_table, rows_from_logits

RULES = CategoryRules({"hard": "confidence < 0.3", "wobbly": "variability > 0.15 and task == 't0'"}, default="rest")


def random_store(root: Path, seed: int, n: int, e: int, ranks: int, with_text: bool) -> Path:
    """A store with 1-3 tasks of different label counts, random tags, rank parts in random order."""
    rng = np.random.default_rng(seed)
    n_tasks = int(rng.integers(1, 4))
    tasks = {f"t{k}": [f"l{j}" for j in range(2 + k)] for k in range(n_tasks)}
    task = rng.integers(0, n_tasks, n)
    gold = np.asarray([rng.integers(0, 2 + t) for t in task])
    run = root / "run"
    w = RunWriter(run, RunMeta(tasks=tasks, setting="s", seed=seed))
    text = [None if rng.random() < 0.7 else f"text {i}" for i in range(n)] if with_text else None
    w.write_examples(examples_table([f"ex{i:05d}" for i in range(n)], gold, task=[f"t{t}" for t in task],
                                    source=rng.choice(["s1", "s2", "s3"], n).tolist(),
                                    language=rng.choice(["en", "de"], n).tolist(), text=text))
    owner = rng.integers(0, ranks, n)
    for c in range(e):
        width = 4
        logits = rng.normal(0, 1, (n, width)) + (c / max(e - 1, 1)) * 2.0 * np.eye(width)[gold]
        logits[:, :] = np.where(np.arange(width)[None, :] < (2 + task)[:, None], logits, -1e3)  # pad classes
        rows = rows_from_logits(logits, gold)
        for r in range(ranks):
            sel = np.flatnonzero(owner == r)
            perm = rng.permutation(sel)
            table = dynamics_table(checkpoint=c, step=10 * (c + 1), idx=perm, gold=gold[perm],
                                   **{k: v[perm] for k, v in rows.items()})
            write_part(run, table, checkpoint=c, rank=r)
    return run


def assert_tables_equal(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if pa.types.is_floating(x.type):  # bit for bit
            assert np.array_equal(x.to_numpy().view(np.uint64), y.to_numpy().view(np.uint64)), name
        else:
            assert x.to_pylist() == y.to_pylist(), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 260), e=st.integers(1, 5), ranks=st.integers(1, 3),
       block=st.sampled_from([7, 32, 1 << 17]), shard=st.integers(1, 300), workers=st.integers(1, 3),
       with_text=st.booleans(), rules=st.booleans(), include_ci=st.booleans(), late=st.sampled_from([0.3, 0.5, 1.0]),
       joint=st.booleans())
def test_streamed_equals_in_memory(seed, n, e, ranks, block, shard, workers, with_text, rules, include_ci, late,
                                   joint):
    include_ci = include_ci and e >= 2
    kw = {"late_fraction": late, "include_ci": include_ci, "rules": RULES if rules else None}
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(store_writer, "ROW_BLOCK", block), \
            mock.patch.object(streaming, "JOINT_GROUPS", 1 << 16 if joint else 0):
        run = random_store(Path(tmp), seed, n, e, ranks, with_text)
        ref = analyze_run(run, write=False, **kw)
        _, info = stream_analysis(run, shard_size=shard, workers=workers, **kw)
        assert info.n_shards == len(plan_shards(run, shard_size=shard).bounds)
        written = pq.read_table(run / "analysis" / "per_example.parquet")
        assert_tables_equal(ref.table, written)
        summary = json.loads((run / "analysis" / "summary.json").read_text())
        assert summary == json.loads(json.dumps(ref.summary))
        mem, _ = stream_analysis(run, shard_size=shard, workers=workers, write=False, **kw)
        assert_tables_equal(ref.table, mem.table)
        assert mem.summary == ref.summary


def test_workers_write_the_same_bytes_as_one_worker_and_the_in_memory_values(tmp_path):
    """2 and 3 worker threads (shards finishing out of order) write ``per_example.parquet`` and ``summary.json``
    byte for byte as 1 worker does, and their rows and summary equal the in-memory analysis."""
    with mock.patch.object(store_writer, "ROW_BLOCK", 32):
        run = random_store(tmp_path, 11, 700, 4, 2, True)
    ref = analyze_run(run, write=False, rules=RULES)
    files = {}
    step = streaming.analyze_shard

    def jittered(plan, lo, hi, **kw):  # the first shards finish last: the merge must wait for them
        time.sleep(0.02 * (lo < 96))
        return step(plan, lo, hi, **kw)

    for workers in (1, 2, 3):
        with mock.patch.object(streaming, "analyze_shard", jittered):
            _, info = stream_analysis(run, shard_size=48, workers=workers, rules=RULES)
        assert info.workers == workers and info.n_shards == len(plan_shards(run, shard_size=48).bounds) >= 10
        files[workers] = [(run / "analysis" / name).read_bytes() for name in ("per_example.parquet", "summary.json")]
        assert_tables_equal(ref.table, pq.read_table(run / "analysis" / "per_example.parquet"))
        assert json.loads(files[workers][1]) == json.loads(json.dumps(ref.summary))
    assert files[2] == files[1] and files[3] == files[1]


def test_reused_shard_buffers_are_not_referenced_by_results(tmp_path):
    """One ``buffers`` dict over every shard (as a worker thread does): each shard overwrites the previous one's
    dense floats, yet all results kept to the end still equal the in-memory rows (nothing references them)."""
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        run = random_store(tmp_path, 5, 150, 1, 1, False)  # one checkpoint: means over E=1 are the only values
    plan = plan_shards(run, shard_size=40)
    buffers: dict[str, np.ndarray] = {}
    results = [streaming.analyze_shard(plan, lo, hi, buffers=buffers) for lo, hi in plan.bounds]
    assert set(buffers) == {"p_gold", "margin", "loss"} and len(results) >= 3
    assert_tables_equal(analyze_run(run, write=False).table, pa.concat_tables([r.table for r in results]))


def test_cut_shards_prefers_row_group_edges():
    grid = np.array([0, 10, 20, 30, 40])
    assert cut_shards(grid, 45, 20) == ((0, 20), (20, 40), (40, 45))
    assert cut_shards(grid, 45, 25) == ((0, 20), (20, 45))
    assert cut_shards(grid, 45, 7) == ((0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30), (30, 35),
                                       (35, 40), (40, 45))
    assert cut_shards(np.array([0]), 10, 100) == ((0, 10),)


@given(edges=st.lists(st.integers(1, 500), max_size=8), n=st.integers(1, 600), size=st.integers(1, 700))
def test_cut_shards_covers_everything_once(edges, n, size):
    bounds = cut_shards(np.array([0, *edges]), n, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b[1] == c[0] for b, c in itertools.pairwise(bounds))
    assert all(0 < hi - lo <= size for lo, hi in bounds)


def test_writer_row_groups_follow_idx_blocks(tmp_path):
    with mock.patch.object(store_writer, "ROW_BLOCK", 10):
        run = random_store(tmp_path, 0, 47, 1, 2, False)
    for path in sorted((run / "dynamics").glob("*.parquet")):
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            idx = pf.read_row_group(g, columns=["idx"])["idx"].to_numpy()
            assert np.unique(idx // 10).size == 1  # one block per row group, every rank
    plan = plan_shards(run, shard_size=20)
    assert plan.bounds == ((0, 20), (20, 40), (40, 47))
    dyn = read_shard(plan, 20, 40)
    assert dyn.examples["idx"].to_pylist() == list(range(20, 40))


def test_parse_memory_and_shard_size():
    assert parse_memory("2GB") == 2 * 2**30
    assert parse_memory("1.5g") == int(1.5 * 2**30)
    assert parse_memory("800MiB") == 800 * 2**20
    assert parse_memory(12345) == 12345
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(SoiError, match="memory limit"):
            parse_memory(bad)
    small, big = shard_size_for(2**30, 10, 10**7, 2), shard_size_for(2**31, 10, 10**7, 2)
    assert 1024 <= small < big
    assert shard_size_for(2**31, 10, 10**7, 1) > big  # fewer shards in flight -> larger shards
    with pytest.raises(SoiError, match="too small"):
        shard_size_for(100 * 2**20, 10, 10**7, 2)


def test_preferred_shard_size_caps_the_memory_bound_at_row_groups(tmp_path):
    """With a memory bound, shards hold (examples x checkpoints) float64 temporaries of at most TEMP_BYTES, but no
    fewer examples than a row group (a cut row group would be decoded once per piece); the outputs do not change."""
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        run = random_store(tmp_path, 8, 200, 4, 2, False)
    plan = plan_shards(run)
    assert streaming.preferred_shard_size(plan) == streaming.TEMP_BYTES // (8 * 4)
    ref = analyze_run(run, write=False)
    for temp, size in ((8 * 4 * 40, 40), (8, 16)):  # 40 examples of 4 checkpoints; less than a row group -> 16
        with mock.patch.object(streaming, "TEMP_BYTES", temp):
            assert streaming.preferred_shard_size(plan) == size
            res, info = stream_analysis(run, memory_limit="1GB", workers=2, write=False)
        assert info.shard_size == size and info.n_shards == len(plan.with_shard_size(size).bounds)
        assert all(hi - lo <= size for lo, hi in plan.with_shard_size(size).bounds)
        assert_tables_equal(ref.table, res.table)
        assert res.summary == ref.summary
    assert streaming.preferred_shard_size(plan_shards(run, max_checkpoints=1)) == streaming.TEMP_BYTES // 8


def test_id_hashes_and_exact_duplicate_check(tmp_path):
    ids = pa.array(["a", "bb", "a", "", "ccc", "bb"])
    h = id_hashes(ids)
    assert h[0] == h[2] and h[1] == h[5] and len(set(h[[0, 1, 3, 4]].tolist())) == 4
    assert np.array_equal(id_hashes(pa.chunked_array([ids[:2], ids[2:]])), h)
    assert np.array_equal(id_hashes(ids.slice(2)), h[2:])
    run = random_store(tmp_path, 1, 30, 1, 1, False)
    plan = plan_shards(run)
    for bits_budget in (10**9, 1):  # in memory, then 2**k buckets on disk
        check = IdCheck(30, bits_budget, tmp_path)
        check.add(0, np.zeros(30, np.uint64))  # every id "collides": confirmed on the ids, no error
        check.check(plan)
        for f in tmp_path.glob("ids-*.bin"):
            f.unlink()


def test_duplicate_id_across_shards(tmp_path):
    run = random_store(tmp_path, 2, 40, 2, 1, False)
    table = pq.read_table(run / "examples.parquet")
    ids = table["example_id"].to_pylist()
    ids[35] = ids[3]
    table = table.set_column(1, "example_id", pa.array(ids))
    pq.write_table(table, run / "examples.parquet")
    for limit in ("2GB", None, BASE_BYTES + 256):  # the last one spills the hashes into buckets on disk
        with pytest.raises(SoiError, match=r"examples\.parquet: duplicate example_id 'ex00003'$"):
            stream_analysis(run, shard_size=10, memory_limit=limit)
    assert _leftovers(run) == []


def test_chunked_writers_make_the_same_run(tmp_path):
    ref = random_store(tmp_path / "ref", 6, 90, 3, 1, True)
    ex = pq.read_table(ref / "examples.parquet")
    run = tmp_path / "chunked"
    RunMeta.load(ref).save(run)
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        with ChunkedExamplesWriter(run) as w:
            for lo in range(0, 90, 25):
                w.write(ex.slice(lo, 25))
        for c in range(3):
            part = pq.read_table(ref / "dynamics" / f"ckpt-{c:06d}.rank-0000.parquet")
            with ChunkedPartWriter(run, checkpoint=c) as w:
                for lo in (0, 7, 40, 41, 70):
                    w.write(part.slice(lo, {0: 7, 7: 33, 40: 1, 41: 29, 70: 20}[lo]))
    a, b = analyze_run(ref, write=False), analyze_run(run, write=False)
    assert_tables_equal(a.table, b.table)
    pf = pq.ParquetFile(run / "dynamics" / "ckpt-000001.rank-0000.parquet")
    assert [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)] == [16] * 5 + [10]
    with pytest.raises(SoiError, match="increasing idx"), ChunkedPartWriter(run, checkpoint=5) as w:
        w.write(part.slice(10, 5))
        w.write(part.slice(0, 5))
    assert sorted(p.name for p in (run / "dynamics").iterdir()) == [f"ckpt-{c:06d}.rank-0000.parquet" for c in range(3)]


def _leftovers(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.startswith(".tmp") or p.name == "analysis"]


def test_corrupt_part_mid_stream_names_file_and_leaves_nothing(tmp_path):
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        run = random_store(tmp_path, 3, 160, 3, 1, False)
    part = run / "dynamics" / "ckpt-000001.rank-0000.parquet"
    pf = pq.ParquetFile(part)
    col = pf.metadata.row_group(6).column(5)  # p_gold of the 7th row group: data pages only, footer intact
    raw = bytearray(part.read_bytes())
    start = col.data_page_offset
    raw[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    part.write_bytes(bytes(raw))
    proc = subprocess.run([sys.executable, "-m", "soi.cli.main", "analyze", str(run), "--memory-limit", "1GB",
                           "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "ckpt-000001.rank-0000.parquet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(SoiError):
        stream_analysis(run, shard_size=16, workers=2)
    assert _leftovers(run) == []


def test_part_removed_mid_stream(tmp_path):
    with mock.patch.object(store_writer, "ROW_BLOCK", 16):
        run = random_store(tmp_path, 4, 100, 3, 2, False)
    calls = []
    real = streaming.read_shard

    def reader(plan, lo, hi, **kw):
        calls.append(lo)
        if len(calls) == 3:
            (run / "dynamics" / "ckpt-000002.rank-0001.parquet").unlink()
        return real(plan, lo, hi, **kw)

    with mock.patch.object(streaming, "read_shard", reader), \
            pytest.raises(SoiError, match=r"ckpt-000002\.rank-0001\.parquet"):
        stream_analysis(run, shard_size=16, workers=1)
    assert len(calls) >= 3
    assert _leftovers(run) == []


def test_idx_out_of_range_and_missing_rows(tmp_path):
    run = random_store(tmp_path, 5, 20, 2, 1, False)
    meta_gold = pq.read_table(run / "examples.parquet")["gold"].to_numpy()
    rows = rows_from_logits(np.eye(4)[meta_gold] * 3, meta_gold)
    idx = np.arange(20)
    idx[-1] = 25
    write_part(run, dynamics_table(checkpoint=1, step=20, idx=idx, gold=meta_gold, **rows), checkpoint=1)
    with pytest.raises(SoiError, match=r"ckpt-000001\.rank-0000\.parquet: idx out of range \[0, 20\) at checkpoint 1"):
        stream_analysis(run, shard_size=5)
    keep = np.arange(20) != 13
    write_part(run, dynamics_table(checkpoint=1, step=20, idx=np.arange(20)[keep], gold=meta_gold[keep],
                                   **{k: v[keep] for k, v in rows.items()}), checkpoint=1)
    with pytest.raises(SoiError, match=r"1 example\(s\) missing at checkpoint 1, e.g. 'ex00013'"):
        stream_analysis(run, shard_size=5)
    assert _leftovers(run) == []


def test_stream_select_equals_in_memory(tmp_path):
    run = simulate_run(tmp_path / "run", n=3000, checkpoints=4, groups={"task": ["a", "b"], "language": ["x", "y"]})
    table = analyze_run(run, write=False).table
    for rule in ({"metric": "variability", "top": 0.2, "per_group": "task"},
                 {"categories": "forgettable_lost,learned_late", "sample": 50, "seed": 3},
                 {"where": "confidence < 0.4 and language == 'x'", "metric": "aum", "bottom": 100}):
        ref = select(table, source_run=run, **rule)
        got = stream_select(run, shard_size=500, **rule)
        assert_tables_equal(ref.rows, got.rows)
        assert list(ref.ids) == list(got.ids)
        drop = {"created"}
        assert {k: v for k, v in ref.provenance.items() if k not in drop} == \
               {k: v for k, v in got.provenance.items() if k not in drop}
    assert not (run / "analysis").exists()  # select never writes into the run


def test_cli_select_streamed_matches(tmp_path):
    run = simulate_run(tmp_path / "a", n=2500, checkpoints=4, groups={"task": ["p", "q"]})
    runner = CliRunner()
    for extra, out in (([], "mem"), (["--memory-limit", "1GB", "--workers", "2"], "stream")):
        res = runner.invoke(app, ["select", str(run), "--out", str(tmp_path / out), "--metric", "confidence",
                                  "--bottom", "0.1", "--per-group", "task", *extra])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "mem" / "selected_ids.txt").read_text() == (tmp_path / "stream" / "selected_ids.txt").read_text()
    assert_tables_equal(pq.read_table(tmp_path / "mem" / "selected.parquet"),
                        pq.read_table(tmp_path / "stream" / "selected.parquet"))
    assert not (run / "analysis").exists()


def test_cli_compare_streamed_matches(tmp_path):
    a = simulate_run(tmp_path / "a", n=2500, checkpoints=4, seed=1, difficulty_seed=7, groups={"task": ["p", "q"]})
    b = simulate_run(tmp_path / "b", n=2500, checkpoints=4, seed=2, difficulty_seed=7, skill=1.3,
                     groups={"task": ["p", "q"]})
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "mem"), "--n-boot", "200",
                              "--no-heatmaps", "-q"])
    assert res.exit_code == 0, res.output
    assert not (a / "analysis").exists()
    res = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "stream"), "--n-boot", "200",
                              "--no-heatmaps", "-q", "--memory-limit", "1GB", "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert (a / "analysis" / "per_example.parquet").is_file()  # streamed analyses, then compared from them
    sa, sb = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("mem", "stream"))
    for side in ("run_a", "run_b"):  # the only difference: compare read the streamed analyses from analysis/
        assert (sa[side].pop("cached_analyses"), sb[side].pop("cached_analyses")) == (0, 1)
    assert sa == sb
    assert pq.read_table(tmp_path / "mem" / "transitions.parquet").equals(
        pq.read_table(tmp_path / "stream" / "transitions.parquet"))


def test_dask_maps_the_shard_step(tmp_path):
    dask = pytest.importorskip("dask")
    from soi.analysis.streaming import analyze_shard

    run = simulate_run(tmp_path / "run", n=1200, checkpoints=3)
    plan = plan_shards(run, shard_size=300)
    tasks = [dask.delayed(analyze_shard)(plan, lo, hi) for lo, hi in plan.bounds]
    parts = dask.compute(*tasks, scheduler="processes", num_workers=2)  # results pickled back from processes
    ref = analyze_run(run, write=False)
    assert_tables_equal(ref.table, pa.concat_tables([p.table for p in parts]))
    merger = ShardMerger(plan)
    with pytest.raises(SoiError, match="in order"):
        merger.add(parts[1])
    for part in parts:
        merger.add(part)
    assert merger.summary() | {"run": ref.summary["run"]} == ref.summary


def test_sample_examples_is_stratified_and_seed_consistent(tmp_path):
    from soi.analysis.streaming import sample_examples

    runs = [simulate_run(tmp_path / f"s{s}", n=6000, checkpoints=5, seed=s, difficulty_seed=3,
                         groups={"task": ["a", "b", "c"], "language": ["x", "y"]}) for s in (1, 2)]
    for run in runs:
        stream_analysis(run, shard_size=1000)
    path = runs[0] / "analysis" / "per_example.parquet"
    full = pq.read_table(path)
    sample = sample_examples(path, 600)
    assert sample.column_names == full.column_names
    idx = sample["idx"].to_numpy()
    assert np.all(np.diff(idx) > 0)
    assert_tables_equal(sample, full.take(pa.array(idx)))
    key = lambda t: [f"{a}|{b}|{c}" for a, b, c in zip(t["task"].to_pylist(), t["language"].to_pylist(),  # noqa: E731
                                                         t["soi"].to_pylist(), strict=True)]
    strata_full, strata_sample = np.unique(key(full), return_counts=True), np.unique(key(sample), return_counts=True)
    assert list(strata_sample[0]) == list(strata_full[0])  # every (task, language, category) present, even tiny ones
    quota = np.minimum(strata_full[1], np.maximum(1, np.floor(600 * strata_full[1] / 6000 + 0.5)))
    assert list(strata_sample[1]) == quota.astype(int).tolist()
    again = sample_examples(path, 600)
    assert again["example_id"].to_pylist() == sample["example_id"].to_pylist()
    other = sample_examples(runs[1] / "analysis" / "per_example.parquet", 600)
    shared = set(sample["example_id"].to_pylist()) & set(other["example_id"].to_pylist())
    assert len(shared) > 0.5 * len(sample)  # seeds of one setting mostly sample the same examples
    assert sample_examples(path, 10**6).num_rows == 6000


def test_report_reads_a_large_run_out_of_core(tmp_path):
    import soi.report.data as report_data

    run = simulate_run(tmp_path / "run", n=5000, checkpoints=4, groups={"task": ["a", "b"], "language": ["x", "y"]})
    (ref,) = report_data.collect(run, max_examples=100_000)["runs"]  # in memory: every example embedded
    assert ref["n_shown"] == 5000
    for analysed in (False, True):
        if analysed:
            stream_analysis(run, shard_size=1000)
        with mock.patch.object(report_data, "OUT_OF_CORE_ROWS", 1000), \
                mock.patch.object(report_data, "OUT_OF_CORE_SAMPLE", 400):
            data = report_data.collect(run, max_examples=100_000)
        (entry,) = data["runs"]
        assert entry["n_examples"] == 5000 and 400 <= entry["n_shown"] <= 400 + 48
        assert entry["groups"] == ref["groups"]  # counts and shares over every example, as in memory
        assert entry["final_accuracy"] == ref["final_accuracy"]
        assert entry["analysed_on_the_fly"] is (not analysed)
        assert (run / "analysis").exists() is analysed  # the report never writes into the run


def test_streamed_seed_consensus_equals_in_memory(tmp_path):
    from soi.analysis.seeds import analyze_seeds
    from soi.analysis.streaming import stream_consensus

    folder = tmp_path / "runs" / "single"
    for s in (1, 2, 3):
        simulate_run(folder / f"seed-{s}", n=3000, checkpoints=4, seed=s, difficulty_seed=9,
                     groups={"task": ["a", "b"], "language": ["x", "y"]})
    ref = analyze_seeds(folder, write=False)
    with mock.patch.object(streaming, "shard_size_for", lambda *a: 700):
        res = CliRunner().invoke(app, ["analyze", str(folder), "--memory-limit", "1GB", "--workers", "2", "-q"])
    assert res.exit_code == 0, res.output
    got = stream_consensus(folder, workers=2)  # fresh seed analyses are reused
    table = pq.read_table(folder / "analysis" / "consensus.parquet")
    assert_tables_equal(ref.table, table)
    summary = json.loads((folder / "analysis" / "summary.json").read_text())
    assert (ref.summary.pop("cached_seed_analyses"), summary.pop("cached_seed_analyses")) == (0, 3)
    assert summary == json.loads(json.dumps(ref.summary))
    assert got.summary["n_examples"] == 3000
    assert pq.ParquetFile(folder / "seed-1" / "analysis" / "per_example.parquet").metadata.num_row_groups == 5
    # seeds listing their examples in another order: a clear error, nothing written
    import shutil

    shutil.rmtree(folder / "analysis")
    ex = pq.read_table(folder / "seed-3" / "examples.parquet")
    ids = ex["example_id"].to_pylist()
    ids[10], ids[11] = ids[11], ids[10]
    pq.write_table(ex.set_column(1, "example_id", pa.array(ids)), folder / "seed-3" / "examples.parquet")
    with pytest.raises(SoiError, match=r"seed-3: example ids differ from seed-1 in rows 0\.\.600"):
        stream_consensus(folder, workers=1)
    assert not (folder / "analysis").exists()


def test_mode_and_max_checkpoints(tmp_path):
    run = random_store(tmp_path, 7, 120, 4, 2, False)
    ex = pq.read_table(run / "examples.parquet")
    gold = ex["gold"].to_numpy()
    w = RunWriter(run, RunMeta.load(run), mode="eval-pass")
    rng = np.random.default_rng(0)
    for c in range(3):
        w.write_logits(checkpoint=c, step=c + 1, idx=np.arange(120), logits=rng.normal(0, 1, (120, 4)) - 9 *
                       (np.arange(4)[None, :] >= 2), gold=gold)
    for kw in ({"mode": "eval-pass"}, {"max_checkpoints": 2}):
        ref = analyze_run(run, write=False, **kw)
        _, info = stream_analysis(run, shard_size=50, **kw)
        out = run / ("analysis-eval-pass" if "mode" in kw else "analysis")
        assert_tables_equal(ref.table, pq.read_table(out / "per_example.parquet"))
        assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(ref.summary))
        assert info.n_shards == len(plan_shards(run, shard_size=50, **kw).bounds) >= 3


def test_cut_points_are_block_edges_for_interleaved_ranks():
    from soi.store.shards import PartIndex, cut_points

    # two ranks, blocks of 10: rank 0 holds even idx, rank 1 odd idx; row group k of each covers block k
    r0 = PartIndex(Path("r0"), (), np.array([0, 10, 20]), np.array([8, 18, 24]))
    r1 = PartIndex(Path("r1"), (), np.array([1, 11, 21]), np.array([9, 19, 25]))
    assert cut_points([r0, r1]).tolist() == [0, 10, 20]
    # an older store: each rank one row group over everything -> no edge but 0
    assert cut_points([PartIndex(Path("a"), (), np.array([0]), np.array([24])),
                       PartIndex(Path("b"), (), np.array([1]), np.array([25]))]).tolist() == [0]
