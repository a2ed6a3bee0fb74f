"""Recording per-example dynamics while a model trains (plain loops, Hugging Face Trainer, Accelerate/DDP)."""

from soi.record.recorder import DynamicsRecorder

__all__ = ["DynamicsRecorder"]
