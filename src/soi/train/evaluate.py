"""Accuracy and macro-F1 of one task head on a split (NumPy metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from soi.data.split import Split
from soi.train.encode import collate, encode, pad_id_of


def macro_f1(gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray,
             labels: Sequence[int] | None = None) -> float:
    """Unweighted mean over labels of ``F1 = 2 TP / (2 TP + FP + FN)``.

    ``labels``: the labels to average over; default: those present in ``gold`` or ``pred`` (sklearn's default),
    so a label neither gold nor predicted anywhere is skipped rather than counted as F1 = 0. A listed label
    with ``TP + FP + FN = 0`` counts as 0 (sklearn's ``zero_division=0``). Empty input gives 0.0.
    """
    g = np.asarray(gold, np.int64).reshape(-1)
    p = np.asarray(pred, np.int64).reshape(-1)
    if g.shape != p.shape:
        raise ValueError(f"gold and pred differ in length: {g.size} vs {p.size}")
    labs = np.unique(np.concatenate([g, p])) if labels is None else np.asarray(list(labels), np.int64)
    if labs.size == 0:
        return 0.0
    tp = np.array([np.sum((g == c) & (p == c)) for c in labs], np.float64)
    fp = np.array([np.sum((g != c) & (p == c)) for c in labs], np.float64)
    fn = np.array([np.sum((g == c) & (p != c)) for c in labs], np.float64)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


@dataclass(frozen=True)
class Predictions:
    """Per-row predictions of one task head: ``pred`` (argmax label index), ``gold`` and ``p_gold`` (the softmax
    probability of the gold label), all in the split's row order."""

    pred: np.ndarray  # int64 (N,)
    gold: np.ndarray  # int64 (N,)
    p_gold: np.ndarray  # float64 (N,)

    @property
    def correct(self) -> np.ndarray:
        """``pred == gold`` (bool (N,))."""
        return self.pred == self.gold


@torch.no_grad()
def predict_rows(model: nn.Module, tokenizer: Any, split: Split | Sequence[Split], task: str, *,
                 batch_size: int = 64, max_length: int = 128) -> Predictions:
    """:class:`Predictions` of ``task``'s head over the split's rows in order (eval mode, length-sorted batches;
    ``p_gold`` from a float32 softmax of the head's logits)."""
    if hasattr(model, "cap_length"):
        max_length = model.cap_length(max_length)
    enc = encode(tokenizer, split, max_length)
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in enc.input_ids], kind="stable")
    pred = np.zeros(len(enc), np.int64)
    p_gold = np.zeros(len(enc), np.float64)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(order), batch_size):
            pos = order[i: i + batch_size]
            batch = collate(enc, pos, pad_id_of(tokenizer), device)
            gold = batch.pop("labels")
            out = model(**batch, task=task)  # logits, or a ModelOutput with .logits (MultiHeadModel)
            logits = getattr(out, "logits", out).float()
            pred[pos] = logits.argmax(-1).cpu().numpy()
            probs = torch.softmax(logits, dim=-1)
            p_gold[pos] = probs.gather(1, gold.view(-1, 1)).view(-1).cpu().numpy()
    finally:
        model.train(was_training)
    return Predictions(pred, enc.gold, p_gold)


def predict(model: nn.Module, tokenizer: Any, split: Split | Sequence[Split], task: str, *, batch_size: int = 64,
            max_length: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, gold)`` of ``task``'s head over the split's rows in order (see :func:`predict_rows`)."""
    res = predict_rows(model, tokenizer, split, task, batch_size=batch_size, max_length=max_length)
    return res.pred, res.gold


def evaluate(model: nn.Module, tokenizer: Any, split: Split | Sequence[Split], task: str, *, batch_size: int = 64,
             max_length: int = 128) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "n"}`` of ``task``'s head on ``split`` (macro-F1: see :func:`macro_f1`)."""
    pred, gold = predict(model, tokenizer, split, task, batch_size=batch_size, max_length=max_length)
    n = int(gold.size)
    return {"accuracy": float((pred == gold).mean()) if n else 0.0, "macro_f1": macro_f1(gold, pred), "n": n}


__all__ = ["Predictions", "evaluate", "macro_f1", "predict", "predict_rows"]
