"""Generative post-training: causal-LM SFT with per-example dynamics (:mod:`soi.gen.sft`, :mod:`soi.gen.record`),
offline causal LMs (:mod:`soi.model.causal`), multilingual mixtures, metrics and transfer (see docs/generative.md).

Importing ``soi.gen`` is cheap: torch and transformers load only when a training or model function is used.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "GenExample": "soi.gen.sft", "PromptFormat": "soi.gen.sft", "SFTResult": "soi.gen.sft",
    "generate": "soi.gen.sft", "train_sft": "soi.gen.sft",
    "load_causal_lm": "soi.model.causal", "tiny_causal_lm": "soi.model.causal",
    "Mixture": "soi.gen.mixture", "MixtureSpec": "soi.gen.mixture", "PoolSource": "soi.gen.mixture",
    "build_mixture": "soi.gen.mixture", "plan_mixture": "soi.gen.mixture",
    "chrf": "soi.gen.metrics", "corpus_chrf": "soi.gen.metrics", "exact_match": "soi.gen.metrics",
    "extract_number": "soi.gen.metrics", "rouge_l": "soi.gen.metrics", "rouge_l_f": "soi.gen.metrics",
    "identify": "soi.gen.langid", "language_fidelity": "soi.gen.langid",
    "plot_transfer": "soi.gen.transfer", "transfer_summary": "soi.gen.transfer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'soi.gen' has no attribute {name!r}")
