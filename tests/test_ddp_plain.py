"""DynamicsRecorder under torch.distributed (gloo, 2 CPU ranks) in a plain DDP loop (tests/ddp_plain_loop.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from soi.store import load_dynamics, rows_from_logits  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_plain_loop.py")
N = 51  # odd: DistributedSampler pads one duplicate; with batch 4 the last batch of each rank is short
TIMEOUT_S = 120

RUNS: dict[str, list[str]] = {  # name -> launcher arguments (world 2 via torch.distributed.run) + script arguments
    "single": ["--out", "{out}"],
    "padded": ["ddp", "--out", "{out}"],
    "drop_last": ["ddp", "--out", "{out}", "--drop-last"],
    "learning": ["ddp", "--out", "{out}", "--lr", "0.5"],
}


def command(args: list[str], out: Path) -> list[str]:
    script = [str(SCRIPT), *(a.format(out=out) for a in args if a != "ddp"), "--examples", str(N)]
    if "ddp" in args:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script]
    return [sys.executable, *script]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run every configuration once (concurrently: they are small and mostly start-up time)."""
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    procs = {}
    for name, args in RUNS.items():
        procs[name] = subprocess.Popen(command(args, root / name), cwd=root, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    failures = []
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"{name}: timed out after {TIMEOUT_S} s\n{err[-4000:]}")
            continue
        if proc.returncode != 0:
            failures.append(f"{name}: exit {proc.returncode}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}")
    if failures:
        pytest.fail("\n\n".join(failures))
    return {name: root / name for name in RUNS}


def part_rows(run: Path) -> dict[tuple[int, int], np.ndarray]:
    """idx column of every part by (checkpoint, rank)."""
    out = {}
    for path in sorted((run / "dynamics").glob("ckpt-*.parquet")):
        ckpt, rank = int(path.name[5:11]), int(path.name[17:21])
        out[ckpt, rank] = pq.read_table(path, columns=["idx"])["idx"].to_numpy()
    return out


def assert_same_values(dyn, ref) -> None:
    np.testing.assert_array_equal(dyn.pred, ref.pred)
    for name in ("p_gold", "margin", "loss"):
        np.testing.assert_allclose(getattr(dyn, name), getattr(ref, name), rtol=0, atol=1e-6, err_msg=name)


def test_single_process_reference(runs: dict[str, Path]) -> None:
    dyn = load_dynamics(runs["single"])
    assert dyn.n_examples == N and dyn.steps.tolist() == [13, 26]  # ceil(51 / 4) steps per epoch
    assert list(part_rows(runs["single"])) == [(0, 0), (1, 0)]
    assert dyn.meta.extra["world_size"] == 1
    # lr 0: every row is the seeded initial model's output on the fixed features
    import ddp_plain_loop

    torch.manual_seed(13)
    x, y = ddp_plain_loop.make_data(N, 16, 13)
    model = torch.nn.Linear(16, len(ddp_plain_loop.LABELS))
    np.testing.assert_array_equal(dyn.gold, y.numpy())
    with torch.no_grad():
        ref = rows_from_logits(model(x).numpy(), y.numpy())
    for ckpt in (0, 1):
        np.testing.assert_array_equal(dyn.pred[:, ckpt], ref["pred"])
        for name in ("p_gold", "margin", "loss"):
            np.testing.assert_allclose(getattr(dyn, name)[:, ckpt], ref[name], rtol=0, atol=1e-6, err_msg=name)


def test_padded_sampler_two_ranks(runs: dict[str, Path]) -> None:
    run = runs["padded"]
    dyn = load_dynamics(run)  # validates: every example exactly once per checkpoint across the rank files
    assert dyn.meta.extra["world_size"] == 2
    assert dyn.steps.tolist() == [7, 14]  # 26 indices per rank (51 padded to 52), batches of 4
    parts = part_rows(run)
    assert sorted(parts) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for ckpt in (0, 1):
        # the padding duplicate sits on rank 1 and is written by rank 0 (lowest rank wins)
        assert parts[ckpt, 0].size == 26 and parts[ckpt, 1].size == 25
        assert np.intersect1d(parts[ckpt, 0], parts[ckpt, 1]).size == 0
    assert_same_values(dyn, load_dynamics(runs["single"]))


def test_drop_last_two_ranks_filled(runs: dict[str, Path]) -> None:
    run = runs["drop_last"]
    dyn = load_dynamics(run)
    assert dyn.steps.tolist() == [6, 12]  # 25 indices per rank (51 -> 50), 6 full batches of 4
    parts = part_rows(run)
    assert sorted(parts) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for ckpt in (0, 1):
        sizes = parts[ckpt, 0].size, parts[ckpt, 1].size
        assert sum(sizes) == N and min(sizes) >= 24  # 24 trained rows each + the 3 gaps filled by idx % 2
    assert_same_values(dyn, load_dynamics(runs["single"]))


def test_learning_two_ranks(runs: dict[str, Path]) -> None:
    dyn = load_dynamics(runs["learning"])
    assert dyn.p_gold.shape == (N, 2)
    assert not np.allclose(dyn.p_gold[:, 0], dyn.p_gold[:, 1])
    assert dyn.loss[:, 1].mean() < dyn.loss[:, 0].mean()  # the model learns; the recorder follows it
