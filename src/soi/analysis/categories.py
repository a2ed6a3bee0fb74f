"""Subsets of Interest (SOI): six exclusive, exhaustive categories of a correctness sequence.

For an example with correctness c_1..c_E over E checkpoints (events = number of t with c_t = 1 and
c_{t+1} = 0, Toneva et al., 2019):

* ``always_correct``        -- c_t = 1 for all t
* ``never_learned``         -- c_t = 0 for all t
* ``learned_early``         -- no event, first correct at k > 1 and k <= ceil(late_fraction * E)
* ``learned_late``          -- no event, first correct at k > ceil(late_fraction * E)
* ``forgettable_recovered`` -- >= 1 event and c_E = 1
* ``forgettable_lost``      -- >= 1 event and c_E = 0

(Without an event a sequence is 0..0 1..1, so "first correct at k and never wrong after" follows.)
Users can replace these with their own ordered rules (:class:`CategoryRules`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from soi.analysis import expr
from soi.analysis.metrics import check_2d, correctness, first_correct, forgetting_events
from soi.errors import SoiError

SOI_CATEGORIES: tuple[str, ...] = (
    "always_correct",
    "learned_early",
    "learned_late",
    "forgettable_recovered",
    "forgettable_lost",
    "never_learned",
)
"""Category names, ordered from easiest to hardest (the code of a category is its position)."""


def early_cutoff(n_checkpoints: int, late_fraction: float = 0.5) -> int:
    """Largest 1-based first-correct checkpoint still counted as ``learned_early``: ceil(late_fraction * E)."""
    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"late_fraction must be in (0, 1], got {late_fraction}")
    return math.ceil(round(late_fraction * n_checkpoints, 9))


def soi_categories(correct: np.ndarray, *, late_fraction: float = 0.5) -> np.ndarray:
    """SOI category code (index into :data:`SOI_CATEGORIES`) per example.

    Parameters
    ----------
    correct : bool array (N, E)
    late_fraction : float in (0, 1], default 0.5

    Returns
    -------
    int8 array (N,)

    Examples
    --------
    >>> c = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
    >>> [SOI_CATEGORIES[k] for k in soi_categories(c)]  # doctest: +NORMALIZE_WHITESPACE
    ['always_correct', 'learned_early', 'learned_late', 'forgettable_recovered', 'forgettable_lost',
     'never_learned']
    """
    c = check_2d(correct, "correct").astype(bool, copy=False)
    return categories_from_stats(first_correct(c), forgetting_events(c), correctness(c), c[:, -1], c.shape[1],
                                 late_fraction=late_fraction)


def categories_from_stats(first_correct: np.ndarray, forgetting_events: np.ndarray, correctness: np.ndarray,
                          final_correct: np.ndarray, n_checkpoints: int, *, late_fraction: float = 0.5) -> np.ndarray:
    """SOI codes from per-example statistics (the columns of :func:`soi.analysis.metrics.all_metrics`).

    ``first_correct`` is 0-based (-1 if never correct), ``correctness`` the number of correct checkpoints.
    Same result as :func:`soi_categories` on the correctness matrix, without recomputing the statistics.
    """
    cutoff = early_cutoff(n_checkpoints, late_fraction)
    events = np.asarray(forgetting_events) > 0
    final = np.asarray(final_correct, bool)
    code = np.where(np.asarray(first_correct) + 1 <= cutoff, 1, 2).astype(np.int8)  # learned_early / _late
    code[np.asarray(correctness) == n_checkpoints] = 0
    code[events] = np.where(final[events], 3, 4)
    code[np.asarray(correctness) == 0] = 5
    return code


def category_labels(codes: np.ndarray, names: tuple[str, ...] = SOI_CATEGORIES) -> np.ndarray:
    """Names for category codes."""
    return np.asarray(names, dtype=object)[np.asarray(codes, dtype=np.int64)]


@dataclass(frozen=True)
class CategoryRules:
    """User-defined categories: ordered ``name -> expression`` rules, first match wins.

    Expressions use the per-example columns (``confidence``, ``variability``, ``correctness``,
    ``forgetting_events``, ``first_learned``, ``soi``, ``task``, ...; see :mod:`soi.analysis.expr`).
    Examples matching no rule get ``default``, so the categories are exclusive and exhaustive.

    Examples
    --------
    >>> rules = CategoryRules({"hard_to_learn": "confidence < 0.25",
    ...                        "ambiguous": "variability > 0.2"}, default="easy_to_learn")
    >>> cols = {"confidence": np.array([0.1, 0.5, 0.9]), "variability": np.array([0.0, 0.3, 0.05])}
    >>> list(category_labels(*rules.assign(cols)))
    ['hard_to_learn', 'ambiguous', 'easy_to_learn']
    """

    rules: Mapping[str, str]
    default: str = "other"
    source: str | None = None
    """Where the rules came from (a file path); named in evaluation errors."""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.rules:
            raise SoiError("category rules: give at least one 'name: expression' rule")
        if self.default in self.rules:
            raise SoiError(f"category rules: default {self.default!r} is also a rule name")
        for name, rule in self.rules.items():
            if not isinstance(rule, str):
                raise SoiError(f"category rules: rule {name!r} must be an expression string")
            expr.parse(rule)
        object.__setattr__(self, "names", (*self.rules, self.default))

    def assign(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
        """Category codes (int16, index into ``names``) and the names."""
        n = len(next(iter(columns.values())))
        code = np.full(n, len(self.rules), np.int16)
        todo = np.ones(n, bool)
        for k, (name, rule) in enumerate(self.rules.items()):
            try:
                hit = todo & expr.evaluate(rule, columns, n)
            except SoiError as exc:
                raise SoiError(f"rule {name!r}: {exc}", path=self.source) from None
            code[hit] = k
            todo &= ~hit
        return code, self.names
