"""The ``two_stage:`` section of a study: continue training stage-1 runs on SOI-selected subsets, with controls.

Each rule is applied to the stage-1 analysis of each ``from_run`` (one *experiment* per run x rule) with
:func:`soi.selection.select` (same fields and semantics as ``soi select``); stage 2 then trains the stage-1
weights on that subset and, for the same number of optimizer steps, on a random subset of the same size and on
the full stage-1 data (see ``docs/two_stage.md``). Errors name the field path like the rest of the study YAML,
e.g. ``study.yaml: two_stage.rules[0].categories[1]: unknown SOI category 'forgettable'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from soi.config.base import NAME_MAX_LENGTH, Seed, StrictModel
from soi.errors import SoiError

if TYPE_CHECKING:  # pragma: no cover
    from soi.config.study import StudyConfig

ARMS = ("soi", "random", "full", "stage1")
"""Arms of every experiment: the SOI subset and its three controls (random subset, full data, stage 1 alone)."""

PER_EXAMPLE_COLUMNS = ("idx", "example_id", "task", "source", "language", "gold", "gold_label", "final_pred",
                       "confidence", "variability", "correctness", "correctness_frac", "forgetfulness",
                       "forgetting_events", "threshold_closeness", "first_correct", "first_learned",
                       "final_correct", "aum", "mean_loss", "soi")
"""Columns of the stage-1 ``analysis/per_example.parquet`` a rule's ``where`` may use."""
NUMERIC_COLUMNS = ("gold", "final_pred", "confidence", "variability", "correctness", "correctness_frac",
                   "forgetfulness", "forgetting_events", "threshold_closeness", "first_correct", "first_learned",
                   "aum", "mean_loss")
"""Columns a rule may rank by (``metric``)."""


class _Model(StrictModel):
    """Study-YAML models: no unknown fields, no booleans as numbers, finite floats (:mod:`soi.config.base`)."""


class SelectionRule(_Model):
    """One stage-2 selection rule: the arguments of :func:`soi.selection.select` under a name."""

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    categories: list[str] | None = Field(None, min_length=1, description="keep these SOI categories")
    where: str | None = Field(None, description="expression over the per-example columns (soi.analysis.expr)")
    metric: str | None = None
    top: int | float | None = None
    bottom: int | float | None = None
    per_group: Literal["task", "source", "language"] | None = None
    sample: int | float | None = None
    seed: Seed = Field(0, description="seed of metric ties and of `sample`")
    consensus: bool = Field(False, description="select on the seed consensus of every study seed of the stage-1 "
                                               "run (soi.analysis.seeds) instead of one stage-1 seed's analysis")
    min_stability: float | None = Field(None, gt=0, le=1, description="keep rows whose consensus category is "
                                                                      "shared by at least this share of seeds "
                                                                      "(implies consensus)")

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: list[str] | None) -> list[str] | None:
        from soi.analysis.categories import SOI_CATEGORIES

        for c in v or []:
            if c not in SOI_CATEGORIES:
                raise ValueError(f"unknown SOI category {c!r}; valid: {', '.join(SOI_CATEGORIES)}")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"category listed twice: {v}")
        return v

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from soi.analysis import expr

        try:
            unknown = sorted(expr.names(v) - set(PER_EXAMPLE_COLUMNS))
        except SoiError as exc:
            raise ValueError(str(exc)) from None
        if unknown:
            raise ValueError(f"unknown column {unknown[0]!r} in {v!r}; columns: {', '.join(PER_EXAMPLE_COLUMNS)}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and v not in NUMERIC_COLUMNS:
            raise ValueError(f"unknown metric {v!r}; numeric columns: {', '.join(NUMERIC_COLUMNS)}")
        return v

    @field_validator("top", "bottom", "sample", mode="before")
    @classmethod
    def _amount(cls, v: object, info: ValidationInfo) -> object:
        from soi.selection import parse_amount

        field = str(info.field_name)
        try:
            return parse_amount(v, field)  # type: ignore[arg-type]
        except SoiError as exc:
            raise ValueError(str(exc).removeprefix(f"{field}: ")) from None

    @model_validator(mode="after")
    def _consistent(self) -> SelectionRule:
        if self.top is not None and self.bottom is not None:
            raise ValueError("give only one of top and bottom")
        ranked = self.top is not None or self.bottom is not None
        if ranked and self.metric is None:
            raise ValueError("top/bottom need a metric to rank by")
        if self.metric is not None and not ranked:
            raise ValueError(f"metric {self.metric!r} given without top or bottom")
        if self.per_group is not None and not ranked and self.sample is None:
            raise ValueError("per_group has no effect without top, bottom or sample")
        if self.categories is None and self.where is None and not ranked and self.sample is None and \
                self.min_stability is None:
            raise ValueError("a rule needs categories, where, metric + top/bottom, sample or min_stability (else it "
                             "selects all)")
        return self

    @property
    def uses_consensus(self) -> bool:
        """Whether the rule selects on the stage-1 seeds' consensus (``consensus`` or ``min_stability``)."""
        return self.consensus or self.min_stability is not None

    def select_kwargs(self) -> dict[str, object]:
        """Keyword arguments of :func:`soi.selection.select`."""
        kwargs: dict[str, object] = {"categories": self.categories, "where": self.where, "metric": self.metric,
                                     "top": self.top, "bottom": self.bottom, "per_group": self.per_group,
                                     "sample": self.sample, "seed": self.seed}
        if self.min_stability is not None:
            kwargs["min_stability"] = self.min_stability
        return kwargs

    def describe(self) -> str:
        """Human-readable rule, e.g. ``soi in {learned_late, never_learned}; bottom 0.3 by confidence per task``."""
        parts = []
        if self.categories:
            parts.append(f"soi in {{{', '.join(self.categories)}}}")
        if self.where:
            parts.append(f"where {self.where}")
        if self.metric is not None:
            side, amount = ("top", self.top) if self.top is not None else ("bottom", self.bottom)
            parts.append(f"{side} {amount} by {self.metric}")
        if self.sample is not None:
            parts.append(f"sample {self.sample}")
        text = "; ".join(parts)
        text += f" per {self.per_group}" if self.per_group else ""
        if self.uses_consensus:
            stab = f", stability >= {self.min_stability:g}" if self.min_stability is not None else ""
            text = f"seed consensus{stab}" + (f": {text}" if text else "")
        return text


class TwoStageSpec(_Model):
    """Stage-2 fine-tuning of stage-1 runs on rule-selected subsets, against same-compute controls."""

    from_run: str | list[str] = Field(description="stage-1 run(s) to start from")
    rules: list[SelectionRule] = Field(min_length=1)
    epochs: int = Field(2, ge=1, description="stage-2 epochs over the selected subset")
    lr: float | None = Field(None, gt=0, description="stage-2 learning rate (default: train.lr)")
    batch_size: int | None = Field(None, ge=1, description="default: train.batch_size")
    warmup_ratio: float | None = Field(None, ge=0, le=1, description="default: train.warmup_ratio")
    seeds: list[Seed] | None = Field(None, min_length=1, description="stage-2 seeds (default: the study's seeds)")
    stage1_seed: Seed | None = Field(None, description="stage-1 seed every stage-2 seed starts from "
                                                      "(default: the stage-1 run of the same seed)")
    eval: list[str] | None = Field(None, min_length=1, description="eval sets (default: the run's trained "
                                                                   "datasets and eval.ood)")

    @field_validator("from_run")
    @classmethod
    def _runs(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"give one or more distinct run names, got {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, v: list[SelectionRule]) -> list[SelectionRule]:
        names = [r.name for r in v]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be distinct, got {names}")
        return v

    # ------------------------------------------------------------------ helpers
    @property
    def from_runs(self) -> list[str]:
        """The stage-1 runs as a list."""
        return [self.from_run] if isinstance(self.from_run, str) else list(self.from_run)

    def stage2_seeds(self, study_seeds: list[int]) -> list[int]:
        """Stage-2 seeds (``seeds``, default the study's)."""
        return list(self.seeds) if self.seeds is not None else list(study_seeds)

    def start_seed(self, seed: int) -> int:
        """The stage-1 seed that stage-2 seed ``seed`` starts from."""
        return seed if self.stage1_seed is None else self.stage1_seed

    def saves_weights(self, run: str, seed: int, study_seeds: list[int]) -> bool:
        """Whether stage-1 run ``run`` at ``seed`` must keep its trained weights (a stage-2 start)."""
        return run in self.from_runs and seed in {self.start_seed(s) for s in self.stage2_seeds(study_seeds)}

    def eval_keys(self, config: StudyConfig, run: str) -> list[str]:
        """Eval sets of experiments on ``run``: ``eval``, default the run's trained datasets then ``eval.ood``."""
        if self.eval is not None:
            return list(self.eval)
        spec = config.run(run)
        return list(spec.train) + [k for k in config.eval.ood if k not in spec.train]

    def reference_error(self, config: StudyConfig) -> tuple[str, str] | None:
        """``(field path, message)`` of the first reference to an unknown run, seed or eval set, else None."""
        runs = {r.name: r for r in config.runs}
        single = isinstance(self.from_run, str)
        for j, name in enumerate(self.from_runs):
            if name not in runs:
                where = "two_stage.from_run" + ("" if single else f"[{j}]")
                return where, f"unknown run {name!r}; runs: {', '.join(runs)}"
        if self.stage1_seed is not None and self.stage1_seed not in config.seeds:
            return "two_stage.stage1_seed", f"seed {self.stage1_seed} is not one of the study's seeds {config.seeds}"
        if self.stage1_seed is None:
            for j, s in enumerate(self.stage2_seeds(config.seeds)):
                if s not in config.seeds:
                    return (f"two_stage.seeds[{j}]", f"seed {s} has no stage-1 run (study seeds {config.seeds}); "
                            "set two_stage.stage1_seed to start every stage-2 seed from one stage-1 seed")
        for j, key in enumerate(self.eval or []):
            if key not in config.datasets:
                return f"two_stage.eval[{j}]", f"unknown dataset {key!r}; the datasets section has: " \
                                              f"{', '.join(config.datasets)}"
            for name in self.from_runs:
                spec = runs[name]
                if key not in spec.train and key not in getattr(spec, "eval", []) and key not in config.eval.ood:
                    return (f"two_stage.eval[{j}]", f"run {name!r} is not evaluated on {key!r} (it is neither "
                            "trained on, in the run's eval, nor in eval.ood)")
        return None


__all__ = ["ARMS", "NUMERIC_COLUMNS", "PER_EXAMPLE_COLUMNS", "SelectionRule", "TwoStageSpec"]
