"""The typed schema of a study's ``summary.json`` (classification, two-stage and generative studies).

Every ``summary.json`` the study engine writes is described by :class:`ClassificationSummary` (``soi run`` of a
classification study, with the optional ``two_stage`` and ``transfer`` sections) or :class:`GenerativeSummary`
(``type: generative``), each with ``schema_version`` (:data:`SCHEMA_VERSION`). Field by field in
``docs/summary-schema.md``.

:func:`load_summary` reads and validates a file, :func:`validate_summary` a mapping: a value of the wrong type is a
one-line :class:`~soi.errors.SoiError` naming the field (``runs.mix.eval.sst2.accuracy.mean: expected a number,
got str``). By default only the fields a reader cannot do without are required (``runs``; ``a`` and ``b`` of a
comparison), so hand-written and older summaries (before ``schema_version``) still read; ``strict=True`` (what the
engine checks before writing) requires every field the current version writes. Unknown fields are allowed
(forward compatible within a version); a newer ``schema_version`` than this soi knows is an error.
"""

import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, Union, cast

from soi.errors import SoiError

SCHEMA_VERSION = 1
"""Version of the ``summary.json`` schema; bumped on every incompatible change."""


# ---------------------------------------------------------------------------------------------- shared
class MeanStd(TypedDict):
    """Per-seed values of a metric: their mean, sample standard deviation (ddof 1; 0 for one seed)."""

    mean: float
    std: float
    values: list[float]


class SeedStats(MeanStd):
    """:class:`MeanStd` plus the 95% Student t-interval of the mean (``None`` with fewer than two seeds)."""

    ci95: list[float] | None


Shares = dict[str, dict[str, dict[str, float]]]
"""SOI shares (seed mean): group key (``all``, ``task``, ``source``, ``language``) -> group -> category -> share."""


class Transfer(TypedDict):
    """Cross-lingual transfer of one task or ``k_grid`` family (:func:`soi.gen.transfer.transfer_summary`);
    per-``k`` maps are keyed by ``str(k)``."""

    metric: str
    ks: list[int]
    seen: list[str]
    unseen: list[str]
    scores: dict[str, dict[str, MeanStd]]
    gain: dict[str, dict[str, float]]
    relative_gain: dict[str, dict[str, float | None]]
    gain_per_100: dict[str, dict[str, float | None]]
    seen_mean: dict[str, float | None]
    unseen_mean: dict[str, float | None]
    gap: dict[str, float | None]


class Interval(TypedDict):
    """A statistic and its bootstrap percentile interval (``None`` where not computable)."""

    mean: float | None
    lo: float | None
    hi: float | None


class FlaggedInterval(Interval):
    """:class:`Interval` plus ``significant`` (the interval excludes 0; absent for the k = 0 gain, which is 0)."""

    significant: NotRequired[bool]


class Plateau(TypedDict):
    """The smallest k whose gain reaches ``fraction`` of the largest gain, with a percentile interval over the
    bootstrap replicates that have a positive gain (``share_with_gain`` of them); ``note`` when there is none."""

    k: int | None
    fraction: float
    share_with_gain: float
    lo: int | None
    hi: int | None
    note: NotRequired[str]


class LanguageStats(TypedDict):
    """One language of :class:`TransferStats`: its group (seen / unseen / other) and per-``k`` intervals."""

    group: str
    score: dict[str, Interval]
    gain: dict[str, FlaggedInterval]
    plateau: Plateau | None


class GroupStats(TypedDict):
    """The seen or unseen group mean of :class:`TransferStats`."""

    languages: list[str]
    score: dict[str, Interval]
    gain: dict[str, FlaggedInterval]
    plateau: Plateau | None


class GapSlope(TypedDict):
    """OLS slope of the seen - unseen gap over k, per 100 examples per seen language, with its interval."""

    per_100: float | None
    lo: float | None
    hi: float | None
    significant: bool
    method: str


class Correlation(TypedDict):
    """Pearson r of the seen and unseen means over the k grid with its interval (``n_valid`` replicates)."""

    r: float | None
    lo: float | None
    hi: float | None
    n_points: int
    n_valid: int
    method: str


class TransferStats(TypedDict):
    """Transfer statistics with intervals on the test set (:func:`soi.analysis.transfer.transfer_statistics`):
    per-``k`` maps are keyed by ``str(k)``."""

    data: str
    metric: str
    ks: list[int]
    seen: list[str]
    unseen: list[str]
    level: float
    n_boot: int
    n_seeds: int
    n_items: dict[str, int]
    method: str
    languages: dict[str, LanguageStats]
    groups: dict[str, GroupStats]
    gap: dict[str, FlaggedInterval] | None
    gap_slope: GapSlope | None
    correlation: Correlation | None
    notes: list[str]


# ---------------------------------------------------------------------------------------------- classification
class LanguageEval(TypedDict):
    n: int
    accuracy: MeanStd
    macro_f1: MeanStd


class EvalSet(TypedDict):
    """One eval set of a classification run (seed aggregates of ``result.json``'s ``eval``)."""

    dataset: str
    split: str
    task: str
    kind: str
    n: int
    accuracy: MeanStd
    macro_f1: MeanStd
    languages: dict[str, LanguageEval]


class ClassificationRun(TypedDict):
    setting: str
    train: list[str]
    k: int | None
    family: str | None
    n_train: int
    train_sizes: dict[str, int] | None
    match_size: str | None
    seeds: list[int]
    dirs: list[str]
    eval: dict[str, EvalSet]
    soi_shares: Shares
    train_accuracy_final: MeanStd


class Stability(TypedDict):
    agreement: float | None
    kappa: float | None


class SeedNullDigest(TypedDict):
    p_value: float | None
    statistic: float | None
    method: str | None
    significant: bool
    note: str | None


# "from" is a Python keyword: the transition digests use the functional TypedDict syntax
ExcessTransition = TypedDict("ExcessTransition", {
    "from": str, "to": str, "observed": float, "null": float, "excess": float, "lo": float | None,
    "hi": float | None, "q_value": float | None, "significant": bool})
"""A transition cell of the reseeding null (shares of the shared examples): observed, null expectation, excess."""

SignificantTransition = TypedDict("SignificantTransition", {
    "from": str, "to": str, "excess": float, "lo": float | None, "hi": float | None, "q_value": float | None})
"""A transition whose excess over reseeding noise is significant (BH q-value <= alpha)."""


class ShareChange(TypedDict):
    category: str
    change: float
    lo: float | None
    hi: float | None
    significant: bool


class ComparisonGroup(TypedDict):
    """One group of a comparison, on the training examples both runs share (training dynamics)."""

    key: str
    group: str
    n_shared: int
    accuracy_a: float
    accuracy_b: float
    data: str
    mcnemar_p: float
    mcnemar_method: str
    stability: dict[str, Stability]
    seed_null: SeedNullDigest
    excess_transitions: list[ExcessTransition]
    significant_transitions: list[SignificantTransition]
    biggest_share_changes: list[ShareChange]


class PairedTestSet(TypedDict):
    """The paired test-set difference of one eval set (held-out items; ``note`` only when not computable)."""

    data: str
    n_items: int
    note: str | None
    accuracy_a: NotRequired[float]
    accuracy_b: NotRequired[float]
    difference: NotRequired[float]
    lo: NotRequired[float]
    hi: NotRequired[float]
    level: NotRequired[float]
    significant: NotRequired[bool]
    p_value: NotRequired[float]
    test: NotRequired[str]
    ci_over: NotRequired[str]
    mcnemar_p: NotRequired[float]
    mcnemar_p_per_seed: NotRequired[list[float]]


class ComparisonSeeds(TypedDict):
    a: list[int] | None
    b: list[int] | None


class ComparisonEntry(TypedDict):
    """The digest of ``compare/<a>__vs__<b>/stats.json`` (all seeds of a vs all seeds of b)."""

    a: str
    b: str
    seed: int | None
    dir: str
    seeds: ComparisonSeeds
    n_shared: int
    n_only_a: int
    n_only_b: int
    notes: list[str]
    groups: list[ComparisonGroup]
    test_set: dict[str, PairedTestSet]


class DataMatchedEffect(TypedDict):
    effect: Literal["pooling at equal data", "more data", "pooling with more data"]
    a: str
    b: str
    eval_set: str
    kind: str
    data: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    lo: float | None
    hi: float | None
    significant: bool | None
    p_value: NotRequired[float | None]
    mcnemar_p: float | None


class DataMatchedSizes(TypedDict):
    target: int
    matched: int
    full: int | None


class DataMatched(TypedDict):
    run: str
    target: str
    full: str | None
    n_train: DataMatchedSizes
    effects: list[DataMatchedEffect]


# ---------------------------------------------------------------------------------------------- two-stage
class ArmEval(TypedDict):
    kind: str
    accuracy: SeedStats
    macro_f1: SeedStats


class Arm(TypedDict):
    kind: str
    n_train: int
    n_train_values: list[int]
    dirs: list[str]
    eval: dict[str, ArmEval]


class PairedDifference(TypedDict):
    arm: str
    control: str
    eval: str
    metric: str
    mean: float
    ci95: list[float] | None
    values: list[float]


class Experiment(TypedDict):
    name: str
    from_run: str
    rule: str
    rule_name: str
    stage2_epochs: int
    stage2_steps: int
    stage2_steps_values: list[int]
    seeds: list[int]
    stage1_seeds: list[int]
    arms: dict[str, Arm]
    differences: list[PairedDifference]
    notes: list[str]


class TwoStage(TypedDict):
    experiments: list[Experiment]


class ClassificationSummary(TypedDict):
    """``summary.json`` of a classification study."""

    schema_version: int
    type: NotRequired[Literal["classification"]]
    study: str
    model: str
    seeds: list[int]
    data_seed: int
    out: str
    runs: dict[str, ClassificationRun]
    comparisons: list[ComparisonEntry]
    findings: list[str]
    data_matched: NotRequired[list[DataMatched]]
    transfer: NotRequired[dict[str, Transfer]]
    transfer_stats: NotRequired[dict[str, TransferStats]]
    two_stage: NotRequired[TwoStage]


# ---------------------------------------------------------------------------------------------- generative
class GenerativeTaskEval(TypedDict):
    """One task of a generative run: per language ``n``, ``group`` (english / seen / unseen) and one
    :class:`MeanStd` per metric in ``metrics``."""

    kind: str
    metric: str
    metrics: list[str]
    languages: dict[str, dict[str, int | str | MeanStd]]


class GenerativeRun(TypedDict):
    setting: str
    run: str
    k: int
    tasks: list[str]
    seeds: list[int]
    dirs: list[str]
    n_train: dict[str, dict[str, int]]
    eval: dict[str, GenerativeTaskEval]
    best_step: list[int | None]
    steps: list[int | None]
    soi_shares: Shares
    probe_soi_shares: Shares
    model: NotRequired[str]


class TransferRun(TypedDict):
    run: str
    task: str


class GenerativeComparisonGroup(TypedDict):
    """One task / language group of a k = 0 vs k > 0 comparison (training dynamics of the shared examples)."""

    key: str
    group: str
    n_shared: int
    share_a: dict[str, float]
    share_b: dict[str, float]
    significant: list[str]
    seed_null_p: float | None
    seed_null_significant: bool
    moved_beyond_noise: float | None


class GenerativeComparison(TypedDict):
    """SOI across mixtures (``compare/<a>__vs__<b>``): a run family's k = 0 seed set vs one k > 0 seed set, or a
    single-task family vs the multi-task family at the same k (``kind``)."""

    a: str
    b: str
    run: str
    k: int
    kind: Literal["k=0 vs k", "single vs multi-task"]
    seed: None
    dir: str
    data: str
    note: NotRequired[str]
    n_shared: NotRequired[int]
    n_only_a: NotRequired[int]
    n_only_b: NotRequired[int]
    notes: NotRequired[list[str]]
    seeds: NotRequired[int]
    groups: NotRequired[list[GenerativeComparisonGroup]]


class ModelEntry(TypedDict):
    """One model of a ``models:`` axis study (its whole grid under ``models/<slug>/``)."""

    model: str
    slug: str
    parameters: int
    out: str


class MultitaskDifference(TypedDict):
    """One language or group of :class:`Multitask` at one k: the single- and multi-task scores and their
    difference (multi - single) with intervals."""

    group: str
    single: Interval
    multi: Interval
    difference: FlaggedInterval


class Multitask(TypedDict):
    """A multi-task run against the single-task run of one of its tasks (test set; per ``k`` keyed by
    ``str(k)``, then per language or ``<group> mean``)."""

    data: str
    task: str
    single: str
    multi: str
    metric: str
    level: float
    n_seeds: int
    notes: list[str]
    method: str
    k: dict[str, dict[str, MultitaskDifference]]


class ModelPoint(TypedDict):
    """Transfer of one model at the largest k (``by_model``): the seen / unseen mean gains and their gap."""

    model: str
    slug: str
    parameters: int
    k: int
    seen: FlaggedInterval | None
    unseen: FlaggedInterval | None
    gap: FlaggedInterval | None


class GenerativeSummary(TypedDict):
    """``summary.json`` of a generative (cross-lingual SFT) study."""

    schema_version: int
    type: Literal["generative"]
    study: str
    model: str
    seeds: list[int]
    data_seed: int
    out: str
    runs: dict[str, GenerativeRun]
    comparisons: list[GenerativeComparison]
    transfer: dict[str, Transfer]
    transfer_runs: dict[str, TransferRun]
    figures: list[str]
    transfer_stats: NotRequired[dict[str, TransferStats]]
    multitask: NotRequired[dict[str, Multitask]]
    models: NotRequired[list[ModelEntry]]
    by_model: NotRequired[dict[str, list[ModelPoint]]]


StudySummary = ClassificationSummary | GenerativeSummary

MINIMAL: dict[type, frozenset[str]] = {ClassificationSummary: frozenset({"runs"}),
                                       GenerativeSummary: frozenset({"runs"}),
                                       ComparisonEntry: frozenset({"a", "b"})}
"""The fields required without ``strict``: what a reader cannot do without."""


# ---------------------------------------------------------------------------------------------- validation
def _name(tp: Any) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is type(None):
        return "null"
    if _is_typeddict(tp) or typing.get_origin(tp) in (dict, Mapping):
        return "an object"
    if typing.get_origin(tp) is list:
        return "a list"
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "str", bool: "bool", int: "int", float: "float",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(tp: type) -> dict[str, Any]:
    """``{field: type}`` of a schema class, in declaration order (``NotRequired`` unwrapped)."""
    if tp not in _FIELD_TYPES:
        _FIELD_TYPES[tp] = typing.get_type_hints(tp, include_extras=False)
    return _FIELD_TYPES[tp]


def _problem(value: Any, tp: Any, where: str, strict: bool) -> str | None:
    """``None`` when ``value`` matches ``tp``, else ``"<field>: <what is wrong>"``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return None
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        problems = [_problem(value, o, where, strict) for o in options]
        if any(p is None for p in problems):
            return None
        # a value of the right outer type: report the problem inside it, not "expected X or Y"
        for o, p in zip(options, problems, strict=True):
            if _outer_ok(value, o):
                return p
        return f"{where or 'summary'}: expected {' or '.join(_name(o) for o in options)}, got {_kind(value)}"
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return None
        return f"{where}: expected {_name(tp)}, got {value!r}"
    if not _outer_ok(value, tp):
        return f"{where or 'summary'}: expected {_name(tp)}, got {_kind(value)}"
    if _is_typeddict(tp):
        hints = field_types(tp)
        required = tp.__required_keys__ if strict else MINIMAL.get(tp, frozenset())
        for key in hints:
            if key in required and key not in value:
                return f"{_join(where, key)}: field required"
        for key, sub in hints.items():
            if key in value and (p := _problem(value[key], sub, _join(where, key), strict)):
                return p
        return None
    if origin is list:
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            if p := _problem(v, item, f"{where}[{i}]", strict):
                return p
        return None
    if origin in (dict, Mapping):
        _, item = typing.get_args(tp)
        for k, v in value.items():
            if p := _problem(v, item, _join(where, str(k)), strict):
                return p
    return None


def _undeclared(value: Any, tp: Any, where: str, out: list[str]) -> None:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):  # the option the value fits (validated first)
            if _problem(value, option, where, False) is None:
                _undeclared(value, option, where, out)
                return
    elif _is_typeddict(tp) and isinstance(value, dict):
        hints = field_types(tp)
        for key, sub in value.items():
            if key in hints:
                _undeclared(sub, hints[key], _join(where, key), out)
            else:
                out.append(_join(where, key))
    elif origin is list and isinstance(value, list):
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            _undeclared(v, item, f"{where}[{i}]", out)
    elif origin in (dict, Mapping) and isinstance(value, dict):
        _, item = typing.get_args(tp)
        for k, v in value.items():
            _undeclared(v, item, _join(where, str(k)), out)


def undeclared_fields(summary: Mapping[str, Any]) -> list[str]:
    """The fields of ``summary`` (a valid one) that its schema does not declare, as dotted paths (``[]`` when the
    schema covers every field; maps typed ``{str: X}`` take any key). Readers allow such fields; the study engine's
    own summaries have none (tested)."""
    out: list[str] = []
    _undeclared(summary, summary_type(summary), "", out)
    return out


def _outer_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_outer_ok(value, o) for o in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if _is_typeddict(tp) or origin in (dict, Mapping):
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is type(None):
        return value is None
    return isinstance(value, tp)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def summary_type(summary: Mapping[str, Any]) -> type:
    """:class:`GenerativeSummary` for ``type: generative``, else :class:`ClassificationSummary`."""
    return GenerativeSummary if summary.get("type") == "generative" else ClassificationSummary


def validate_summary(summary: Any, *, strict: bool = False, path: str | Path | None = None) -> StudySummary:
    """Check ``summary`` against the schema of its type (see the module docstring); returns it unchanged.

    Raises :class:`SoiError` (one line, naming the field and ``path``) on the first problem.
    """
    if not isinstance(summary, dict):
        raise SoiError(f"summary: expected a JSON object, got {_kind(summary)}", path=path)
    version = summary.get("schema_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise SoiError(f"schema_version: expected an integer >= 1, got {version!r}", path=path)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SoiError(f"schema_version: {version} is newer than this soi reads ({SCHEMA_VERSION}); upgrade soi",
                       path=path)
    kind = summary.get("type")
    if kind not in (None, "classification", "generative"):
        raise SoiError(f"type: unknown study type {kind!r} (classification or generative)", path=path)
    problem = _problem(summary, summary_type(summary), "", strict)
    if problem is not None:
        raise SoiError(problem, path=path)
    return cast(StudySummary, summary)


def load_summary(path: str | Path, *, strict: bool = False) -> StudySummary:
    """Read and validate a ``summary.json`` (:func:`validate_summary`); unreadable JSON is a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SoiError(f"cannot read JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})", path=path) from None
    return validate_summary(data, strict=strict, path=path)


__all__ = ["MINIMAL", "SCHEMA_VERSION", "Arm", "ArmEval", "ClassificationRun", "ClassificationSummary",
           "ComparisonEntry", "ComparisonGroup", "ComparisonSeeds", "Correlation", "DataMatched", "DataMatchedEffect",
           "DataMatchedSizes", "EvalSet", "ExcessTransition", "Experiment", "FlaggedInterval", "GapSlope",
           "GenerativeComparison", "GenerativeComparisonGroup", "GenerativeRun", "GenerativeSummary",
           "GenerativeTaskEval", "GroupStats", "Interval", "LanguageEval", "LanguageStats", "MeanStd", "ModelEntry",
           "ModelPoint", "Multitask", "MultitaskDifference", "PairedDifference", "PairedTestSet", "Plateau",
           "SeedNullDigest", "SeedStats", "ShareChange", "Shares", "SignificantTransition", "Stability",
           "StudySummary", "Transfer", "TransferRun", "TransferStats", "TwoStage", "field_types", "load_summary",
           "summary_type", "undeclared_fields", "validate_summary"]
