"""Recording per-example dynamics while a model trains (plain loops, Hugging Face Trainer, Accelerate/DDP).

``SoiRecording``/``SoiTrainer`` (:mod:`soi.record.hf`) are imported lazily: ``import soi.record`` does not import
transformers.
"""

from typing import Any

from soi.record.recorder import DynamicsRecorder

__all__ = ["DynamicsRecorder", "SoiRecording", "SoiTrainer"]


def __getattr__(name: str) -> Any:
    if name in ("SoiRecording", "SoiTrainer"):
        from soi.record import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'soi.record' has no attribute {name!r}")
