"""Plain PyTorch fine-tuning: a multi-head classifier, a task-sampling train loop that records dynamics, eval.

>>> from soi.train import MultiHeadClassifier, run_examples, train, evaluate          # doctest: +SKIP
>>> tasks = {"sst2": [sst2_train], "mrpc": [mrpc_train]}                               # doctest: +SKIP
>>> examples, labels = run_examples(tasks)                                             # doctest: +SKIP
>>> model = MultiHeadClassifier("path/to/encoder", {t: len(v) for t, v in labels.items()})  # doctest: +SKIP
>>> rec = DynamicsRecorder("runs/x", RunMeta(tasks=labels), examples=examples)         # doctest: +SKIP
>>> train(model, tok, tasks, epochs=3, sampling="temperature", recorder=rec)           # doctest: +SKIP
>>> evaluate(model, tok, sst2_validation, "sst2")                                      # doctest: +SKIP
"""

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

__all__ = [
    "SAMPLINGS",
    "Encoded",
    "MultiHeadClassifier",
    "Pooling",
    "RecordMode",
    "Sampling",
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
]
