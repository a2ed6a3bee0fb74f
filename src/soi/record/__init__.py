"""Recording per-example dynamics while a model trains (plain loops, Hugging Face Trainer, TRL, Accelerate/DDP).

``SoiRecording``/``SoiTrainer`` (:mod:`soi.record.hf`) and ``SoiSFTTrainer``/``GenProbe`` (:mod:`soi.record.sft`)
are imported lazily: ``import soi.record`` does not import transformers or TRL.
"""

from typing import Any

from soi.record.recorder import DynamicsRecorder

__all__ = ["DynamicsRecorder", "GenProbe", "SoiRecording", "SoiSFTTrainer", "SoiTrainer"]


def __getattr__(name: str) -> Any:
    if name in ("SoiRecording", "SoiTrainer"):
        from soi.record import hf

        return getattr(hf, name)
    if name in ("SoiSFTTrainer", "GenProbe"):
        from soi.record import sft

        return getattr(sft, name)
    raise AttributeError(f"module 'soi.record' has no attribute {name!r}")
