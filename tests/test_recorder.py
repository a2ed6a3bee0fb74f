"""DynamicsRecorder (plain PyTorch / NumPy loops): values, buffering, dedupe, gaps, labels, resume."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from soi.errors import SoiError  # noqa: E402
from soi.record import DynamicsRecorder  # noqa: E402
from soi.record.recorder import PARTIAL_DIR  # noqa: E402
from soi.store import RunMeta, examples_table, load_dynamics, rows_from_logits  # noqa: E402
from soi.store.reader import read_logits  # noqa: E402

TASKS = {"sst2": ["negative", "positive"], "nli": ["entailment", "neutral", "contradiction"]}
F32 = {"rtol": 1e-5, "atol": 1e-6}  # float32 (torch, on device) vs float64-then-float32 (NumPy reference)


def make_examples(gold: np.ndarray, task: str | list[str] = "sst2"):
    return examples_table([f"ex-{i}" for i in range(len(gold))], gold, task=task)


def new_recorder(run_dir: Path, gold: np.ndarray, task: str | list[str] = "sst2", **kw) -> DynamicsRecorder:
    tasks = TASKS if not isinstance(task, str) else {task: TASKS[task]}
    return DynamicsRecorder(run_dir, RunMeta(tasks=tasks, model="test"), examples=make_examples(gold, task), **kw)


def batches(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, order.size, size):
        yield order[start: start + size]


def as_kind(kind: str, ids: np.ndarray, z: np.ndarray, y: np.ndarray):
    """Inputs of one update call as NumPy arrays or torch tensors."""
    if kind == "numpy":
        return ids, z, y
    return torch.from_numpy(ids.copy()), torch.from_numpy(z.copy()), torch.from_numpy(y.copy())


def assert_dense_equal(dyn, ckpt: int, logits: np.ndarray, gold: np.ndarray, exact: bool = False) -> None:
    """Column ``ckpt`` of the dense arrays equals :func:`rows_from_logits` of the full-run logits."""
    ref = rows_from_logits(logits, gold)
    np.testing.assert_array_equal(dyn.pred[:, ckpt], ref["pred"])
    for name in ("p_gold", "margin", "loss"):
        got = getattr(dyn, name)[:, ckpt]
        if exact:
            np.testing.assert_array_equal(got, ref[name], err_msg=name)
        else:
            np.testing.assert_allclose(got, ref[name], err_msg=name, **F32)


# ---------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("kind", ["numpy", "torch", "mixed"])
def test_rows_equal_rows_from_logits_in_shuffled_batches(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    n, epochs = 53, 2
    gold = rng.integers(0, 2, n)
    logits = rng.normal(0, 3, (epochs, n, 2)).astype(np.float32)
    rec = new_recorder(tmp_path, gold, flush_every=3)
    for epoch in range(epochs):
        for b, ids in enumerate(batches(rng.permutation(n), 8)):
            k = kind if kind != "mixed" else ("numpy", "torch")[b % 2]
            rec.update(*as_kind(k, ids, logits[epoch, ids], gold[ids]))
        path = rec.end_checkpoint(step=10 * (epoch + 1))
        assert path == tmp_path / "dynamics" / f"ckpt-{epoch:06d}.rank-0000.parquet"
    dyn = load_dynamics(tmp_path)
    assert dyn.steps.tolist() == [10, 20]
    for epoch in range(epochs):
        assert_dense_equal(dyn, epoch, logits[epoch], gold, exact=kind == "numpy")
    table = pq.read_table(tmp_path / "dynamics" / "ckpt-000001.rank-0000.parquet")
    assert table["idx"].to_pylist() == list(range(n))  # rows sorted by idx
    assert "logits" not in table.column_names


def test_torch_bf16_and_int32_inputs(tmp_path: Path) -> None:
    """Half-precision logits are upcast; int32 ids/labels work; values match the NumPy rows of the same logits."""
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 20)
    z = torch.from_numpy(rng.normal(0, 2, (20, 2)).astype(np.float32)).to(torch.bfloat16)
    rec = new_recorder(tmp_path, gold)
    rec.update(torch.arange(20, dtype=torch.int32), z, torch.from_numpy(gold).to(torch.int32))
    rec.end_checkpoint(step=1)
    assert_dense_equal(load_dynamics(tmp_path), 0, z.float().numpy(), gold)


def test_multitask_batches_of_different_widths_and_logits_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    tasks = np.array(["sst2", "nli"])[rng.integers(0, 2, 40)]
    width = np.where(tasks == "sst2", 2, 3)
    gold = np.array([rng.integers(0, w) for w in width])
    logits = [rng.normal(0, 2, w).astype(np.float32) for w in width]
    rec = new_recorder(tmp_path, gold, task=tasks.tolist(), keep_logits=True, flush_every=2)
    for b, task in enumerate(["sst2", "nli", "sst2", "nli"]):  # one task per batch, widths 2 and 3 interleaved
        ids = np.flatnonzero(tasks == task)[b // 2:: 2]
        z = np.stack([logits[i] for i in ids])
        rec.update(*as_kind("torch" if b < 2 else "numpy", ids, z, gold[ids]))
    rec.end_checkpoint(step=4)

    dyn = load_dynamics(tmp_path)
    for task, w in (("sst2", 2), ("nli", 3)):
        sel = np.flatnonzero(tasks == task)
        ref = rows_from_logits(np.stack([logits[i] for i in sel]), gold[sel])
        np.testing.assert_array_equal(dyn.pred[sel, 0], ref["pred"])
        assert dyn.pred[sel, 0].max() < w
        for name in ("p_gold", "margin", "loss"):
            np.testing.assert_allclose(getattr(dyn, name)[sel, 0], ref[name], **F32)
    idx, stored = read_logits(tmp_path, 0)
    assert idx.tolist() == list(range(40))
    for i in range(40):
        np.testing.assert_array_equal(np.asarray(stored[i], np.float32), logits[i])  # exact, width per task


def test_keep_logits_round_trip_mixed_inputs(tmp_path: Path) -> None:
    """Stored logit vectors belong to their own rows also when NumPy and torch batches alternate."""
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 30)
    logits = rng.normal(0, 1, (30, 2)).astype(np.float32)
    rec = new_recorder(tmp_path, gold, keep_logits=True, flush_every=100)
    for b, ids in enumerate(batches(rng.permutation(30), 4)):
        rec.update(*as_kind(("torch", "numpy", "torch")[b % 3], ids, logits[ids], gold[ids]))
    rec.end_checkpoint(step=8)
    idx, stored = read_logits(tmp_path, 0)
    np.testing.assert_array_equal(np.asarray(stored, np.float32)[np.argsort(idx)], logits)


# ---------------------------------------------------------------------------------------------- host syncs
@pytest.fixture
def host_transfers(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count calls of the tensor methods that move data to the host (each is a device sync on a GPU)."""
    calls: Counter = Counter()
    for name in ("cpu", "numpy", "item", "tolist", "__array__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _orig=original, **kwargs):
            calls[_name] += 1
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("keep_logits", [False, True])
def test_no_host_transfer_per_step_one_per_flush(tmp_path: Path, host_transfers: Counter, keep_logits: bool) -> None:
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 56)
    ids = torch.from_numpy(rng.permutation(56))
    logits = torch.from_numpy(rng.normal(0, 1, (56, 2)).astype(np.float32))
    labels = torch.from_numpy(gold)
    rec = new_recorder(tmp_path, gold, flush_every=4, keep_logits=keep_logits)
    host_transfers.clear()
    for b in range(3):
        sl = slice(8 * b, 8 * b + 8)
        rec.update(ids[sl], logits[ids[sl]], labels[ids[sl]])
    assert sum(host_transfers.values()) == 0
    assert rec._host == [] and len(rec._device) == 3
    assert all(isinstance(t, torch.Tensor) for pair in rec._device for t in pair)

    sl = slice(24, 32)
    rec.update(ids[sl], logits[ids[sl]], labels[ids[sl]])  # 4th batch: one bulk transfer of all 4 batches
    assert host_transfers["cpu"] == 1 and host_transfers["numpy"] == 1
    assert sum(host_transfers.values()) == 2
    assert rec._device == [] and len(rec._host) == 1 and rec._host[0][0].size == 32

    for b in range(4, 7):
        sl = slice(8 * b, 8 * b + 8)
        rec.update(ids[sl], logits[ids[sl]], labels[ids[sl]])
    assert host_transfers["cpu"] == 1
    rec.end_checkpoint(step=7)  # the remaining 3 batches: one more transfer
    assert host_transfers["cpu"] == 2 and host_transfers["numpy"] == 2
    got = pq.read_table(tmp_path / "dynamics" / "ckpt-000000.rank-0000.parquet")
    assert got["idx"].to_pylist() == list(range(56))
    ref = rows_from_logits(logits.numpy(), gold)
    np.testing.assert_allclose(got["p_gold"].to_numpy(), ref["p_gold"], **F32)
    np.testing.assert_allclose(got["margin"].to_numpy(), ref["margin"], **F32)
    if keep_logits:
        np.testing.assert_array_equal(np.asarray(got["logits"].to_pylist(), np.float32), logits.numpy())


# ---------------------------------------------------------------------------------------------- coverage
def test_duplicates_within_a_rank_keep_first_occurrence(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 10)
    first = rng.normal(0, 1, (10, 2)).astype(np.float32)
    second = rng.normal(0, 1, (10, 2)).astype(np.float32)
    rec = new_recorder(tmp_path, gold, flush_every=1)  # duplicates land in different host blocks
    rec.update(*as_kind("torch", np.arange(6), first[:6], gold[:6]))
    rec.update(*as_kind("numpy", np.array([2, 3]), second[[2, 3]], gold[[2, 3]]))  # seen again: dropped
    rec.update(*as_kind("torch", np.arange(6, 10), first[6:], gold[6:]))
    rec.update(*as_kind("torch", np.array([9, 0]), second[[9, 0]], gold[[9, 0]]))
    rec.end_checkpoint(step=4)
    table = pq.read_table(tmp_path / "dynamics" / "ckpt-000000.rank-0000.parquet")
    assert table.num_rows == 10
    assert_dense_equal(load_dynamics(tmp_path), 0, first, gold)


@pytest.mark.parametrize("fill_kind", ["numpy", "torch"])
def test_gaps_raise_without_fill_and_are_filled_with_fill(tmp_path: Path, fill_kind: str) -> None:
    rng = np.random.default_rng(6)
    gold = rng.integers(0, 2, 20)
    logits = rng.normal(0, 1, (20, 2)).astype(np.float32)
    seen = np.setdiff1d(np.arange(20), [4, 11, 19])
    rec = new_recorder(tmp_path, gold)
    rec.update(*as_kind("torch", seen, logits[seen], gold[seen]))
    with pytest.raises(SoiError, match=r"3 example\(s\) were not seen in checkpoint 0 \(e\.g\. idx 4\)"):
        rec.end_checkpoint(step=1)
    assert not (tmp_path / "dynamics").exists()

    asked: list[np.ndarray] = []

    def fill(missing: np.ndarray):
        asked.append(np.asarray(missing).copy())
        return as_kind(fill_kind, missing, logits[missing], gold[missing])[1:]

    rec.end_checkpoint(step=1, fill=fill)  # the failed call kept the rows: fill completes the checkpoint
    assert [a.tolist() for a in asked] == [[4, 11, 19]]
    table = pq.read_table(tmp_path / "dynamics" / "ckpt-000000.rank-0000.parquet")
    assert table["idx"].to_pylist() == list(range(20))
    assert_dense_equal(load_dynamics(tmp_path), 0, logits, gold)


def test_label_mismatch_names_the_example(tmp_path: Path) -> None:
    gold = np.array([0, 1, 0, 1, 1, 0])
    rec = new_recorder(tmp_path, gold)
    labels = gold.copy()
    labels[4] = 0
    rec.update(*as_kind("torch", np.arange(6), np.zeros((6, 2), np.float32), labels))
    with pytest.raises(SoiError, match=r"label 0 given for example idx 4 but examples.parquet has gold 1"):
        rec.end_checkpoint(step=1)


def test_out_of_range_ids_raise(tmp_path: Path) -> None:
    gold = np.array([0, 1, 0])
    rec = new_recorder(tmp_path, gold)
    rec.update(np.array([0, 1, 2, 3]), np.zeros((4, 2), np.float32), np.array([0, 1, 0, 0]))
    with pytest.raises(SoiError, match=r"example idx 3 out of range \[0, 3\)"):
        rec.end_checkpoint(step=1)


# ---------------------------------------------------------------------------------------------- resume
N_RESUME, BATCH, PER_CKPT = 30, 5, 6  # 6 batches (steps) per checkpoint


def training_stream(epochs: int = 3) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(step, ids, logits) of a deterministic run: a fresh permutation and logits per epoch."""
    rng = np.random.default_rng(7)
    out, step = [], 0
    for _ in range(epochs):
        for ids in batches(rng.permutation(N_RESUME), BATCH):
            step += 1
            out.append((step, ids, rng.normal(0, 1, (ids.size, 2)).astype(np.float32)))
    return out


RESUME_GOLD = np.random.default_rng(8).integers(0, 2, N_RESUME)


def feed(rec: DynamicsRecorder, stream, first: int, last: int, save_at: tuple[int, ...] = ()) -> None:
    """Record steps ``first..last`` (1-based) with checkpoints every PER_CKPT steps; save partials at ``save_at``."""
    for step, ids, z in stream:
        if first <= step <= last:
            rec.update(*as_kind("torch", ids, z, RESUME_GOLD[ids]))
            if step % PER_CKPT == 0:
                rec.end_checkpoint(step=step)
            if step in save_at:
                rec.save_partial(step)


def part_tables(run_dir: Path) -> dict[str, object]:
    return {p.name: pq.read_table(p) for p in sorted((run_dir / "dynamics").glob("ckpt-*.parquet"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    run = tmp_path_factory.mktemp("ref")
    rec = new_recorder(run, RESUME_GOLD, keep_logits=True)
    feed(rec, training_stream(), 1, 18)
    return part_tables(run)


def assert_same_run(run_dir: Path, reference: dict[str, object]) -> None:
    got = part_tables(run_dir)
    assert list(got) == list(reference)
    for name, table in reference.items():
        assert got[name].equals(table), name
    assert load_dynamics(run_dir).n_checkpoints == 3


def test_resume_mid_checkpoint_equals_uninterrupted(tmp_path: Path, uninterrupted) -> None:
    stream = training_stream()
    rec = new_recorder(tmp_path, RESUME_GOLD, keep_logits=True, flush_every=2)
    feed(rec, stream, 1, 10, save_at=(3, 8))  # killed after step 10; the trainer's last save was step 8
    partials = sorted(p.name for p in (tmp_path / "dynamics" / PARTIAL_DIR).iterdir())
    assert partials == ["ckpt-000001.rank-0000.step-000000000008.parquet"]  # step 3's was cleared by ckpt 0

    resumed = DynamicsRecorder(tmp_path, keep_logits=True)  # run.json and examples.parquet come from the run
    assert resumed.resume(8) == 1
    feed(resumed, stream, 9, 18)
    assert_same_run(tmp_path, uninterrupted)
    assert not any((tmp_path / "dynamics" / PARTIAL_DIR).iterdir())


def test_resume_discards_later_parts_and_partials(tmp_path: Path, uninterrupted) -> None:
    stream = training_stream()
    rec = new_recorder(tmp_path, RESUME_GOLD, keep_logits=True)
    feed(rec, stream, 1, 14, save_at=(6, 14))  # ckpt 1 (step 12) written and a partial at 14, then killed
    assert (tmp_path / "dynamics" / "ckpt-000001.rank-0000.parquet").is_file()

    resumed = DynamicsRecorder(tmp_path, keep_logits=True)
    assert resumed.resume(6) == 1  # step 6 ends checkpoint 0: continue at checkpoint 1
    assert not (tmp_path / "dynamics" / "ckpt-000001.rank-0000.parquet").exists()
    assert not any((tmp_path / "dynamics" / PARTIAL_DIR).iterdir())
    assert (tmp_path / "dynamics" / "ckpt-000000.rank-0000.parquet").is_file()
    feed(resumed, stream, 7, 18)
    assert_same_run(tmp_path, uninterrupted)


def test_resume_at_boundary_without_partials(tmp_path: Path, uninterrupted) -> None:
    stream = training_stream()
    rec = new_recorder(tmp_path, RESUME_GOLD, keep_logits=True)
    feed(rec, stream, 1, 12)  # no save_partial calls (e.g. a trainer that saves at epoch ends only)
    resumed = DynamicsRecorder(tmp_path, keep_logits=True)
    assert resumed.resume(12) == 2
    feed(resumed, stream, 13, 18)
    assert_same_run(tmp_path, uninterrupted)


def test_resume_multitask_keep_logits_partial(tmp_path: Path) -> None:
    """Partials hold logit rows of different widths (one task per batch)."""
    gold = np.array([0, 1, 2, 1, 0, 2])
    tasks = ["sst2", "sst2", "nli", "sst2", "sst2", "nli"]
    rng = np.random.default_rng(9)
    z2, z3 = rng.normal(0, 1, (6, 2)).astype(np.float32), rng.normal(0, 1, (6, 3)).astype(np.float32)
    rec = new_recorder(tmp_path, gold, task=tasks, keep_logits=True)
    rec.update(*as_kind("torch", np.array([0, 1]), z2[[0, 1]], gold[[0, 1]]))
    rec.update(*as_kind("torch", np.array([2]), z3[[2]], gold[[2]]))
    rec.save_partial(2)
    resumed = DynamicsRecorder(tmp_path, keep_logits=True)
    assert resumed.resume(2) == 0
    resumed.update(*as_kind("numpy", np.array([3, 4]), z2[[3, 4]], gold[[3, 4]]))
    resumed.update(*as_kind("torch", np.array([5]), z3[[5]], gold[[5]]))
    resumed.end_checkpoint(step=4)
    idx, stored = read_logits(tmp_path, 0)
    expect = [z2[0], z2[1], z3[2], z2[3], z2[4], z3[5]]
    assert idx.tolist() == list(range(6))
    for got, want in zip(stored, expect, strict=True):
        np.testing.assert_array_equal(np.asarray(got, np.float32), want)


def test_resume_from_a_superseded_save_fails_loudly(tmp_path: Path) -> None:
    """A save older than the last one has no partial any more: the checkpoint's gap is an error, never a misfile."""
    stream = training_stream()
    rec = new_recorder(tmp_path, RESUME_GOLD)
    feed(rec, stream, 1, 14, save_at=(8, 14))  # ckpt 1 ended at step 12, which cleared step 8's partial
    resumed = DynamicsRecorder(tmp_path)
    assert resumed.resume(8) == 1
    assert not (tmp_path / "dynamics" / "ckpt-000001.rank-0000.parquet").exists()
    with pytest.raises(SoiError, match=r"10 example\(s\) were not seen in checkpoint 1"):
        feed(resumed, stream, 9, 12)  # the 10 examples of steps 7 and 8 are missing


# ---------------------------------------------------------------------------------------------- property
@st.composite
def split_checkpoint(draw: st.DrawFn):
    n = draw(st.integers(1, 25))
    c = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**16))
    order = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1))) if n > 1 else []
    kinds = draw(st.lists(st.sampled_from(["numpy", "torch"]), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    flush_every = draw(st.integers(1, 4))
    return n, c, seed, np.asarray(order, np.int64), cuts, kinds, flush_every


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_checkpoint())
def test_any_split_and_order_gives_the_same_dense_arrays(case) -> None:
    n, c, seed, order, cuts, kinds, flush_every = case
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, c, n)
    logits = rng.normal(0, 2, (n, c)).astype(np.float32)
    labels = [f"l{k}" for k in range(c)]
    with tempfile.TemporaryDirectory() as tmp:
        rec = DynamicsRecorder(tmp, RunMeta(tasks={"t": labels}), examples=examples_table(
            [str(i) for i in range(n)], gold, task="t"), flush_every=flush_every)
        for ids, kind in zip(np.split(order, cuts), kinds, strict=True):
            rec.update(*as_kind(kind, ids, logits[ids], gold[ids]))
        rec.end_checkpoint(step=3)
        dyn = load_dynamics(tmp)
    assert dyn.steps.tolist() == [3]
    assert_dense_equal(dyn, 0, logits, gold, exact=set(kinds) == {"numpy"})
