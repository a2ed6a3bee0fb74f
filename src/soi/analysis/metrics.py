"""Per-example training-dynamics metrics over (N examples x E checkpoints) arrays.

All functions are pure and vectorised: inputs are ``p_gold`` (float, probability of the gold label),
``correct`` (bool, prediction == gold) or ``margin`` (float), each of shape (N, E) with checkpoints in
training order; outputs have shape (N,).

Sources
-------
* Dataset cartography -- Swayamdipta et al., 2020, "Dataset Cartography: Mapping and Diagnosing
  Datasets with Training Dynamics", EMNLP; definitions as implemented in allenai/cartography
  (``cartography/selection/train_dy_filtering.py``): confidence, variability, correctness,
  forgetfulness, threshold closeness.
* Forgetting events -- Toneva et al., 2019, "An Empirical Study of Example Forgetting during Deep
  Neural Network Learning", ICLR: an event is correct at checkpoint t and wrong at t+1.
* Area under the margin -- Pleiss et al., 2020, "Identifying Mislabeled Data using the Area Under the
  Margin Ranking", NeurIPS: mean over checkpoints of (gold logit - largest other logit).
"""

from __future__ import annotations

import numpy as np

from soi.errors import SoiError

NEVER_CORRECT_FORGETFULNESS = 1000
"""cartography's forgetfulness for an example that is never predicted correctly."""


def check_2d(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as an array of shape (examples, checkpoints) with >= 1 checkpoint, else a SoiError naming ``name``."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] == 0:
        raise SoiError(f"{name} must have shape (examples, checkpoints) with >= 1 checkpoint, got {a.shape}")
    return a


def confidence(p_gold: np.ndarray) -> np.ndarray:
    r"""Mean gold-label probability, :math:`\hat\mu_i = \frac1E \sum_e p_{i,e}(y_i)` (float64)."""
    return check_2d(p_gold, "p_gold").mean(axis=1, dtype=np.float64)


def variability(p_gold: np.ndarray, *, include_ci: bool = False) -> np.ndarray:
    r"""Population standard deviation of the gold-label probability, :math:`\hat\sigma_i`.

    With ``include_ci=True``, cartography's variant from active bias (Chang et al., 2017):
    :math:`\sqrt{v + v^2/(E-1)}` with :math:`v = \hat\sigma_i^2`; needs E >= 2.
    """
    p = check_2d(p_gold, "p_gold")
    mean = p.mean(axis=1, dtype=np.float64)
    var = np.zeros(p.shape[0], np.float64)
    for j in range(p.shape[1]):  # loop over checkpoints, vectorised over examples (no (N, E) float64 copy)
        d = p[:, j] - mean
        var += d * d
    var /= p.shape[1]
    if not include_ci:
        return np.sqrt(var)
    if p.shape[1] < 2:
        raise SoiError("variability with include_ci needs at least 2 checkpoints")
    return np.sqrt(var + var * var / (p.shape[1] - 1))


def threshold_closeness(conf: np.ndarray) -> np.ndarray:
    r"""cartography's threshold closeness :math:`\hat\mu_i (1 - \hat\mu_i)` of the confidence."""
    conf = np.asarray(conf, dtype=np.float64)
    return conf * (1.0 - conf)


def correctness(correct: np.ndarray) -> np.ndarray:
    """Number of checkpoints at which the example is predicted correctly (cartography's correctness)."""
    return check_2d(correct, "correct").sum(axis=1, dtype=np.int64)


def correctness_fraction(correct: np.ndarray) -> np.ndarray:
    """Fraction of checkpoints at which the example is predicted correctly."""
    c = check_2d(correct, "correct")
    return c.sum(axis=1, dtype=np.int64) / c.shape[1]


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Number of forgetting events (correct at t, wrong at t+1; Toneva et al., 2019)."""
    c = check_2d(correct, "correct").astype(bool, copy=False)
    return (c[:, :-1] & ~c[:, 1:]).sum(axis=1, dtype=np.int64)


def forgetfulness(correct: np.ndarray) -> np.ndarray:
    """cartography's forgetfulness: forgetting events, or 1000 for an example never predicted correctly."""
    c = check_2d(correct, "correct").astype(bool, copy=False)
    return np.where(c.any(axis=1), forgetting_events(c), NEVER_CORRECT_FORGETFULNESS)


def first_correct(correct: np.ndarray) -> np.ndarray:
    """0-based index of the first checkpoint with a correct prediction; -1 if never correct."""
    c = check_2d(correct, "correct").astype(bool, copy=False)
    out = np.full(c.shape[0], -1, np.int32)
    for j in range(c.shape[1] - 1, -1, -1):  # per checkpoint, vectorised over examples
        np.copyto(out, j, where=c[:, j])
    return out.astype(np.int64)


def first_learned(correct: np.ndarray) -> np.ndarray:
    """0-based first checkpoint from which the example stays correct to the end; -1 if wrong at the end.

    This is the "learned" checkpoint of learning-speed analyses: ``k`` such that ``correct[k:]`` are all
    true and ``correct[k-1]`` (if any) is false.
    """
    c = check_2d(correct, "correct").astype(bool, copy=False)
    last_wrong = np.full(c.shape[0], -1, np.int32)
    for j in range(c.shape[1]):
        np.copyto(last_wrong, j, where=~c[:, j])
    return np.where(c[:, -1], last_wrong + 1, -1).astype(np.int64)


def final_correct(correct: np.ndarray) -> np.ndarray:
    """Correctness at the last checkpoint."""
    return check_2d(correct, "correct")[:, -1].astype(bool)


def aum(margin: np.ndarray) -> np.ndarray:
    """Area under the margin: mean over checkpoints of gold logit minus largest other logit (Pleiss et al., 2020)."""
    return check_2d(margin, "margin").mean(axis=1, dtype=np.float64)


def mean_loss(loss: np.ndarray) -> np.ndarray:
    """Mean per-example loss over checkpoints."""
    return check_2d(loss, "loss").mean(axis=1, dtype=np.float64)


def all_metrics(
    p_gold: np.ndarray,
    correct: np.ndarray,
    margin: np.ndarray | None = None,
    loss: np.ndarray | None = None,
    *,
    include_ci: bool = False,
) -> dict[str, np.ndarray]:
    """Every per-example metric, keyed by column name (the columns of ``per_example.parquet``)."""
    p = check_2d(p_gold, "p_gold")
    c = check_2d(correct, "correct").astype(bool, copy=False)
    if c.shape != p.shape:
        raise SoiError(f"correct has shape {c.shape}, p_gold {p.shape}")
    conf = confidence(p)
    events = forgetting_events(c)
    n_correct = c.sum(axis=1, dtype=np.int64)
    out = {
        "confidence": conf,
        "variability": variability(p, include_ci=include_ci),
        "correctness": n_correct,
        "correctness_frac": n_correct / c.shape[1],
        "forgetfulness": np.where(n_correct > 0, events, NEVER_CORRECT_FORGETFULNESS),
        "forgetting_events": events,
        "threshold_closeness": threshold_closeness(conf),
        "first_correct": first_correct(c),
        "first_learned": first_learned(c),
        "final_correct": c[:, -1].copy(),
    }
    if margin is not None:
        out["aum"] = aum(margin)
    if loss is not None:
        out["mean_loss"] = mean_loss(loss)
    return out
