"""Where the tests find the shared offline data, and the skip mark of a test that needs one of its datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SOI_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
"""``$SOI_DATA_DIR``, else ``shared/data`` beside the checkout (read MANIFEST.md there)."""


def needs_dataset(name: str = "sst2") -> pytest.MarkDecorator:
    """Skip unless the shared copy of dataset ``name`` (its ``info.json``) is there."""
    return pytest.mark.skipif(not (SHARED / name / "info.json").is_file(),
                              reason=f"shared data not found at {SHARED} (set SOI_DATA_DIR)")
