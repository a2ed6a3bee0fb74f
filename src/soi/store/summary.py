"""The typed schema of a study's ``summary.json`` (classification, two-stage and generative studies)."""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Version of the ``summary.json`` schema; bumped on every incompatible change."""

__all__ = ["SCHEMA_VERSION"]
