"""Classification fine-tuning: the Trainer engine (:mod:`soi.train.hf`), the run layout and batch schedule, eval.

>>> from soi.train import MultiHeadModel, run_examples, train_run, evaluate            # doctest: +SKIP
>>> tasks = {"sst2": [sst2_train], "mrpc": [mrpc_train]}                               # doctest: +SKIP
>>> examples, labels = run_examples(tasks)                                             # doctest: +SKIP
>>> model = MultiHeadModel.from_encoder("path/to/encoder", {t: len(v) for t, v in labels.items()})  # doctest: +SKIP
>>> train_run(model, tok, tasks, run_dir="runs/x", output_dir="runs/x-trainer", epochs=3)  # doctest: +SKIP
>>> evaluate(model, tok, sst2_validation, "sst2")                                      # doctest: +SKIP

:mod:`soi.train.hf` loads transformers: its names are imported on first use. The plain PyTorch loop of soi 0.1.0
(``train``, ``eval_pass``, ``TrainResult``) is gone from the package; ``tests/plain_loop.py`` keeps it as the
tests' reference implementation. A loop of your own records with :class:`soi.record.DynamicsRecorder`.
"""

from typing import Any

from soi.train.encode import Encoded, collate, encode
from soi.train.evaluate import evaluate, macro_f1, predict
from soi.train.model import MultiHeadClassifier, Pooling
from soi.train.schedule import SAMPLINGS, Sampling, epoch_schedule, linear_warmup, run_examples, task_offsets

_HF = ("MultiHeadConfig", "MultiHeadModel", "RunResult", "TaskBatchSampler", "TaskCollator", "TaskTrainer",
       "train_run")


def __getattr__(name: str) -> Any:
    """The Trainer engine (:mod:`soi.train.hf`) loads transformers: import it only when asked for."""
    if name in _HF:
        from soi.train import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'soi.train' has no attribute {name!r}")


__all__ = [
    "SAMPLINGS",
    "Encoded",
    "MultiHeadClassifier",
    "MultiHeadConfig",
    "MultiHeadModel",
    "Pooling",
    "RunResult",
    "Sampling",
    "TaskBatchSampler",
    "TaskCollator",
    "TaskTrainer",
    "collate",
    "encode",
    "epoch_schedule",
    "evaluate",
    "linear_warmup",
    "macro_f1",
    "predict",
    "run_examples",
    "task_offsets",
    "train_run",
]
