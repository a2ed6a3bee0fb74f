"""The run layout and the batch schedule of soi's training engine (:mod:`soi.train.hf`) and of the tests' plain
reference loop (``tests/plain_loop.py``).

Global example index (``idx`` given to the recorder, the row of ``examples.parquet``): tasks in the order of
the ``tasks`` mapping, within a task its splits in list order, within a split its table rows in order -- the
order of :func:`run_examples`, which builds the matching examples table and ``RunMeta(tasks=...)``.

Every batch holds examples of ONE task. An epoch shows every example of every task exactly once (the last
batch of a task may be smaller; nothing is dropped). The interleaving of task batches is drawn per epoch:

* ``"proportional"``: a uniformly random permutation of all batches of all tasks;
* ``"temperature"``: repeatedly pick a task with probability proportional to ``n_task ** (1 / T)`` among the
  tasks with batches left (``T = 1``: proportional to size; larger ``T`` flattens towards uniform; the
  temperature-scaled sampling of Arivazhagan et al. 2019, "Massively Multilingual NMT");
* ``"uniform"``: the same with equal weights (``T -> inf``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import torch

from soi.data.split import Split, run_tasks, to_examples_table
from soi.errors import SoiError

Sampling = Literal["proportional", "temperature", "uniform"]
SAMPLINGS = ("proportional", "temperature", "uniform")


def run_examples(tasks: Mapping[str, Sequence[Split]]) -> tuple[pa.Table, dict[str, list[str]]]:
    """The examples table (global idx order, see module doc) and ``RunMeta(tasks=...)`` of a training run."""
    splits = [s for ss in tasks.values() for s in ss]
    names: dict[str, str] = {}
    for task, ss in tasks.items():
        for s in ss:
            if names.setdefault(s.name, task) != task:
                raise SoiError(f"dataset {s.name!r} appears under tasks {names[s.name]!r} and {task!r}")
    return to_examples_table(*splits, task=names), run_tasks(*splits, task=names)


def task_offsets(tasks: Mapping[str, Sequence[Split]]) -> dict[str, int]:
    """First global idx of each task's block (cumulative row counts in mapping order)."""
    out, start = {}, 0
    for task, ss in tasks.items():
        out[task] = start
        start += sum(len(s) for s in ss)
    return out


def epoch_schedule(sizes: Mapping[str, int], batch_size: int, rng: np.random.Generator, *,
                   sampling: Sampling = "proportional", temperature: float = 2.0) -> list[tuple[str, np.ndarray]]:
    """One epoch's batches as ``(task, local positions)``: each task's rows shuffled and chunked, then interleaved.

    Every row of every task appears exactly once; see the module doc for the interleaving per ``sampling``.
    """
    if sampling not in SAMPLINGS:
        raise SoiError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "temperature" and not temperature > 0:
        raise SoiError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise SoiError(f"batch_size must be >= 1, got {batch_size}")
    per_task: dict[str, list[np.ndarray]] = {}
    for task, n in sizes.items():
        perm = rng.permutation(int(n))
        per_task[task] = [perm[i: i + batch_size] for i in range(0, int(n), batch_size)]
    if sampling == "proportional":
        flat = [(t, b) for t, bs in per_task.items() for b in bs]
        return [flat[i] for i in rng.permutation(len(flat))]
    names = [t for t in per_task if per_task[t]]
    if sampling == "uniform":
        weight = np.ones(len(names))
    else:
        weight = np.asarray([float(sizes[t]) ** (1.0 / temperature) for t in names])
    left = np.asarray([len(per_task[t]) for t in names])
    taken = np.zeros(len(names), np.int64)
    out: list[tuple[str, np.ndarray]] = []
    while left.sum():
        w = np.where(left > 0, weight, 0.0)
        k = int(rng.choice(len(names), p=w / w.sum()))
        out.append((names[k], per_task[names[k]][taken[k]]))
        taken[k] += 1
        left[k] -= 1
    return out


def linear_warmup(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["SAMPLINGS", "Sampling", "epoch_schedule", "linear_warmup", "run_examples", "task_offsets"]
