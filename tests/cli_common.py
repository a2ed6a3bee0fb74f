"""Run the ``soi`` entry point in-process from a test (shared by the hardening tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def run_soi(capsys: pytest.CaptureFixture[str], *args: str | Path, stdout: bool = False) -> tuple[int, str]:
    """Run ``soi ARGS`` in-process; (exit status, stderr — plus stdout when ``stdout``)."""
    from soi.cli.main import main

    old, sys.argv = sys.argv, ["soi", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.err + captured.out if stdout else captured.err
