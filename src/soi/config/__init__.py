"""Declarative configuration: the study YAML (:class:`StudyConfig`)."""

from soi.config.study import (
    SETTINGS,
    CompareSpec,
    DatasetSpec,
    EvalSpec,
    RecordingSpec,
    RunSpec,
    StudyConfig,
    TrainSpec,
)

__all__ = ["SETTINGS", "CompareSpec", "DatasetSpec", "EvalSpec", "RecordingSpec", "RunSpec", "StudyConfig",
           "TrainSpec"]
