"""Shared fixtures: a small simulated run (copied per test), a writer of hand-made runs from dense arrays, the tiny
random Llama of the SFT tests and one torch thread per module."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from soi.simulate import simulate_run
from soi.store import RunMeta, RunWriter, dynamics_table, write_part

SIM_GROUPS = {"task": ["alpha", "beta"], "source": ["web", "news"], "language": ["en", "de"]}


@pytest.fixture(scope="session")
def sim_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated run (40 examples x 4 checkpoints, two tasks); never modify it, use ``sim_run``."""
    return simulate_run(tmp_path_factory.mktemp("sim") / "run", n=40, checkpoints=4, classes=3, seed=3,
                        groups=SIM_GROUPS)


@pytest.fixture
def sim_run(sim_run_template: Path, tmp_path: Path) -> Path:
    """A private copy of the simulated run that a test may modify."""
    dst = tmp_path / "run"
    shutil.copytree(sim_run_template, dst)
    return dst


DenseRunWriter = Callable[..., Path]


@pytest.fixture
def write_run() -> DenseRunWriter:
    """Write a run directory from dense (N, E) arrays.

    ``write_run(run_dir, tasks, examples, pred, p_gold, margin=None, loss=None, steps=None, ranks=1)``:
    ``tasks`` is run.json's label names per task, ``examples`` an ``examples_table``; checkpoint ``j``
    is split over ``ranks`` part files (example ``i`` goes to rank ``i % ranks``, rows in reverse order).
    """

    def write(run_dir: Path, tasks: dict[str, list[str]], examples: pa.Table, pred, p_gold, margin=None,
              loss=None, steps=None, ranks: int = 1) -> Path:
        pred = np.asarray(pred)
        p_gold = np.asarray(p_gold, np.float32)
        n, e = pred.shape
        margin = np.zeros((n, e), np.float32) if margin is None else np.asarray(margin, np.float32)
        loss = np.zeros((n, e), np.float32) if loss is None else np.asarray(loss, np.float32)
        steps = [100 * (j + 1) for j in range(e)] if steps is None else steps
        writer = RunWriter(run_dir, RunMeta(tasks=tasks, model="hand", setting="hand-made", seed=7))
        writer.write_examples(examples)
        gold = examples["gold"].to_numpy()
        for j in range(e):
            for r in range(ranks):
                idx = np.arange(n)[r::ranks][::-1]
                table = dynamics_table(checkpoint=j, step=steps[j], idx=idx, gold=gold[idx], pred=pred[idx, j],
                                       p_gold=p_gold[idx, j], margin=margin[idx, j], loss=loss[idx, j])
                write_part(run_dir, table, checkpoint=j, rank=r)
        return Path(run_dir)

    return write


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama of tests/sft_trl_common.py (byte tokenizer, no chat template), written once."""
    pytest.importorskip("trl")
    import sft_trl_common

    return sft_trl_common.tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a whole test module (its module fixtures too), restored afterwards.

    As in the subprocess tests (OMP_NUM_THREADS=1): the thread count changes float reductions, so CPU runs in and
    out of process compare; tiny models gain nothing from a second thread (which stalls on shared CPUs).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
