"""Per-checkpoint SOI metrics for the experiment trackers people already watch (TensorBoard, W&B, MLflow, ...).

At every recorded checkpoint, :func:`checkpoint_metrics` analyses the run directory so far (checkpoints 0..t) and
returns flat scalars, per group (``all``, and every ``task=``/``source=``/``language=`` value):

``soi/<group>/accuracy``
    accuracy of the recorded predictions at checkpoint t;
``soi/<group>/share/<category>``
    SOI category shares over checkpoints 0..t (Subsets of Interest; categories as in the README);
``soi/<group>/forgetting_events`` and ``soi/<group>/forgotten``
    forgetting events so far (correct at s, wrong at s+1; Toneva et al., 2019) and examples with at least one.

They reach the trackers two ways: :class:`SoiTrackerCallback` (attached by :class:`~soi.record.SoiTrainer`) calls
``Trainer.log`` after each checkpoint when ``TrainingArguments.report_to`` names an integration, so
``report_to=["tensorboard"]`` / ``"wandb"`` / ``"mlflow"`` receive them at the checkpoint's global step; and
:class:`AccelerateTrackers` logs them through ``accelerate``'s trackers (``soi run`` with ``train.report_to``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from soi.errors import SoiError

GROUP_KEYS = ("task", "source", "language")


def _base(prefix: str, key: str, name: str) -> str:
    return f"{prefix}/{name}" if key == "all" else f"{prefix}/{key}={name}"


def checkpoint_metrics(run_dir: str | Path, *, mode: str | None = None, prefix: str = "soi") -> dict[str, float]:
    """Flat per-group scalars of a run directory's checkpoints so far (see the module docstring)."""
    from soi.analysis.per_example import analyze_run
    from soi.store import load_dynamics

    res = analyze_run(run_dir, mode=mode, write=False)
    dyn = load_dynamics(run_dir, mode=mode)
    out: dict[str, float] = {}
    for key, groups in res.summary["groups"].items():
        for name, g in groups.items():
            base = _base(prefix, key, name)
            out[f"{base}/accuracy"] = float(g["accuracy_per_checkpoint"][-1])
            for cat, share in g["shares"].items():
                out[f"{base}/share/{cat}"] = float(share)
    correct = dyn.correct  # (N, E)
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1)  # correct at s, wrong at s+1
    for key in ("all", *GROUP_KEYS):
        if key == "all":
            codes, names = np.zeros(events.size, np.int64), ["all"]
        else:
            codes, names = dyn.group_codes(key)
            codes = np.asarray(codes, np.int64)
            names = [str(x) for x in names]
        n_events = np.bincount(codes, weights=events, minlength=len(names))
        n_forgotten = np.bincount(codes, weights=(events > 0), minlength=len(names))
        for j, name in enumerate(names):
            if key != "all" and f"{_base(prefix, key, name)}/accuracy" not in out:
                continue  # a group absent from the summary (no examples)
            out[f"{_base(prefix, key, name)}/forgetting_events"] = float(n_events[j])
            out[f"{_base(prefix, key, name)}/forgotten"] = float(n_forgotten[j])
    out[f"{prefix}/checkpoint"] = float(correct.shape[1] - 1)
    return out


def completed_checkpoints(run_dir: str | Path, mode: str | None = None) -> int:
    """How many checkpoints a run directory holds (0 before the first is written)."""
    from soi.store import list_parts

    try:
        return len(list_parts(run_dir, mode))
    except SoiError:
        return 0


def _reports(args: Any) -> bool:
    report_to = getattr(args, "report_to", None) or []
    if isinstance(report_to, str):
        report_to = [report_to]
    return any(x not in ("none", None) for x in report_to)


class SoiTrackerCallback(TrainerCallback):
    """Sends :func:`checkpoint_metrics` through ``trainer.log`` after each recorded checkpoint (main process only;
    only when ``args.report_to`` names an integration)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.logged = 0

    def _maybe_log(self, args: Any, state: Any) -> None:
        if not state.is_world_process_zero or not _reports(args):
            return
        run_dir = self.trainer.soi.run_dir
        n = completed_checkpoints(run_dir)
        if n <= self.logged:
            return
        self.logged = n
        self.trainer.log(checkpoint_metrics(run_dir))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._maybe_log(args, state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._maybe_log(args, state)


class AccelerateTrackers:
    """``accelerate`` trackers for one run (``soi run``'s ``train.report_to``), logging under ``logging_dir``.

    ``on_checkpoint(checkpoint, step)`` logs :func:`checkpoint_metrics` of ``run_dir`` at ``step``; ``close()``
    ends the trackers (flushes TensorBoard's event file)."""

    def __init__(self, report_to: list[str], run_dir: str | Path, *, project: str, logging_dir: str | Path,
                 config: dict[str, Any] | None = None) -> None:
        from accelerate import Accelerator

        self.run_dir = Path(run_dir)
        self.accelerator = Accelerator(log_with=list(report_to), project_dir=str(logging_dir))
        self.accelerator.init_trackers(project, config=config)

    def on_checkpoint(self, checkpoint: int, step: int) -> None:
        self.accelerator.log(checkpoint_metrics(self.run_dir), step=step)

    def close(self) -> None:
        self.accelerator.end_training()
