"""Plain PyTorch fine-tuning: a multi-head classifier, a task-sampling train loop that records dynamics, eval.

>>> from soi.train import MultiHeadClassifier, run_examples, train, evaluate          # doctest: +SKIP
>>> tasks = {"sst2": [sst2_train], "mrpc": [mrpc_train]}                               # doctest: +SKIP
>>> examples, labels = run_examples(tasks)                                             # doctest: +SKIP
>>> model = MultiHeadClassifier("path/to/encoder", {t: len(v) for t, v in labels.items()})  # doctest: +SKIP
>>> rec = DynamicsRecorder("runs/x", RunMeta(tasks=labels), examples=examples)         # doctest: +SKIP
>>> train(model, tok, tasks, epochs=3, sampling="temperature", recorder=rec)           # doctest: +SKIP
>>> evaluate(model, tok, sst2_validation, "sst2")                                      # doctest: +SKIP

The same run on Hugging Face Trainer (:mod:`soi.train.hf`, imported on first use of its names)::

>>> model = MultiHeadModel.from_encoder("path/to/encoder", {t: len(v) for t, v in labels.items()})  # doctest: +SKIP
>>> train_run(model, tok, tasks, run_dir="runs/x", output_dir="runs/x-trainer", epochs=3)  # doctest: +SKIP
"""

from typing import Any

from soi.train.evaluate import evaluate, macro_f1, predict
from soi.train.loop import (
    SAMPLINGS,
    Encoded,
    RecordMode,
    Sampling,
    TrainResult,
    collate,
    encode,
    epoch_schedule,
    eval_pass,
    linear_warmup,
    run_examples,
    task_offsets,
    train,
)
from soi.train.model import MultiHeadClassifier, Pooling

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
    "RecordMode",
    "RunResult",
    "Sampling",
    "TaskBatchSampler",
    "TaskCollator",
    "TaskTrainer",
    "TrainResult",
    "collate",
    "encode",
    "epoch_schedule",
    "eval_pass",
    "evaluate",
    "linear_warmup",
    "macro_f1",
    "predict",
    "run_examples",
    "task_offsets",
    "train",
    "train_run",
]
