"""Independent per-example Python reference of allenai/cartography's file format and metrics.

Written from the description of allenai/cartography (Swayamdipta et al., 2020, "Dataset Cartography",
EMNLP; https://github.com/allenai/cartography): ``selection_utils.log_training_dynamics`` /
``read_training_dynamics`` and ``train_dy_filtering.compute_train_dy_metrics``. It deliberately keeps
cartography's straightforward structure -- ``json.loads`` per line, a Python loop per example and per
epoch -- so that it is both the test oracle for :mod:`soi.formats.cartography` and the "per-example
Python loop" baseline of the benchmarks. The only substitution: softmax in NumPy float32 instead of
``torch.softmax(torch.Tensor(...))`` (the same float32 arithmetic).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TD_METRICS_COLUMNS = [
    "guid",
    "index",
    "threshold_closeness",
    "confidence",
    "variability",
    "correctness",
    "forgetfulness",
]
_EPOCH_FILE = re.compile(r"^dynamics_epoch_(\d+)\.jsonl$")


def write_epoch(model_dir: str | Path, epoch: int, ids: Sequence[Any], logits: Sequence[Sequence[float]],
                golds: Sequence[int]) -> Path:
    """Write one epoch like cartography's ``log_training_dynamics`` (pandas ``to_json``, JSON lines)."""
    folder = Path(model_dir) / "training_dynamics"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dynamics_epoch_{epoch}.jsonl"
    frame = pd.DataFrame({"guid": list(ids), f"logits_epoch_{epoch}": [list(map(float, z)) for z in logits],
                          "gold": list(golds)})
    frame.to_json(path, lines=True, orient="records")
    return path


def read_training_dynamics(td_dir: str | Path, id_field: str = "guid") -> dict[Any, dict[str, Any]]:
    """cartography's reader: ``{guid: {"gold": int, "logits": [logits of epoch 0, epoch 1, ...]}}``.

    ``td_dir`` is a model directory containing ``training_dynamics/`` or that folder. Guids keep the
    order of their first appearance, i.e. the order of ``dynamics_epoch_0``.
    """
    folder = Path(td_dir)
    if (folder / "training_dynamics").is_dir():
        folder = folder / "training_dynamics"
    num_epochs = sum(1 for p in folder.iterdir() if _EPOCH_FILE.match(p.name))
    dynamics: dict[Any, dict[str, Any]] = {}
    for epoch in range(num_epochs):
        with open(folder / f"dynamics_epoch_{epoch}.jsonl", encoding="utf-8") as infile:
            for line in infile:
                if not line.strip():
                    continue
                record = json.loads(line)
                guid = record[id_field]
                if guid not in dynamics:
                    assert epoch == 0, f"guid {guid!r} first seen in epoch {epoch}"
                    dynamics[guid] = {"gold": record["gold"], "logits": []}
                dynamics[guid]["logits"].append(record[f"logits_epoch_{epoch}"])
    return dynamics


def softmax_float32(logits: Sequence[float]) -> np.ndarray:
    """``torch.softmax(torch.Tensor(logits), dim=-1)``: float32, max-shifted."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max())
    return e / e.sum()


def forgetfulness(correctness_trend: Sequence[bool]) -> int:
    """Times an example goes from correct to wrong; 1000 if it is never correct (Toneva et al., 2019)."""
    if not any(correctness_trend):
        return 1000
    learnt = False
    forgotten = 0
    for is_correct in correctness_trend:
        if learnt and not is_correct:
            forgotten += 1
            learnt = False
        elif not learnt and is_correct:
            learnt = True
    return forgotten


def reference_metrics(dynamics: dict[Any, dict[str, Any]], include_ci: bool = False) -> pd.DataFrame:
    """cartography's ``compute_train_dy_metrics`` for every example, one Python loop per example.

    Parameters
    ----------
    dynamics : ``{guid: {"gold": int, "logits": [[...] per epoch]}}`` as returned by
        :func:`read_training_dynamics`.
    include_ci : variability ``sqrt(var + var^2 / (E - 1))`` (active bias, Chang et al., 2017) instead
        of the standard deviation.

    Returns
    -------
    DataFrame with cartography's ``td_metrics.jsonl`` columns: guid, index, threshold_closeness,
    confidence, variability, correctness, forgetfulness.
    """
    rows = []
    for index, (guid, record) in enumerate(dynamics.items()):
        gold = record["gold"]
        true_probs_trend = []
        correctness_trend = []
        for epoch_logits in record["logits"]:
            probs = softmax_float32(epoch_logits)
            true_probs_trend.append(float(probs[gold]))
            prediction = np.argmax(epoch_logits)
            correctness_trend.append(bool(prediction == gold))
        confidence = np.mean(true_probs_trend)
        if include_ci:
            var = np.var(true_probs_trend)
            variability = np.sqrt(var + var * var / (len(true_probs_trend) - 1))
        else:
            variability = np.std(true_probs_trend)
        rows.append([guid, index, confidence * (1 - confidence), confidence, variability,
                     sum(correctness_trend), forgetfulness(correctness_trend)])
    return pd.DataFrame(rows, columns=TD_METRICS_COLUMNS)
