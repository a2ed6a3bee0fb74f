"""Models: offline aliases for the models shipped in PyPI packages; any hub id or local path passes through."""

from soi.model.registry import MODEL_ALIASES, resolve_model

__all__ = ["MODEL_ALIASES", "resolve_model"]
