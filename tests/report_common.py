"""Shared pieces of the report tests: the module fixtures of a study folder and its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from soi.report import read_report_data, write_report


def report_fixtures(build: Callable[[Path], Path], folder: str, name: str, **report_kw: Any) -> tuple[Any, Any, Any]:
    """Module-scoped fixtures ``study`` (``build(<tmp>/<folder>/<name>)``), ``report`` (its
    ``write_report(study, **report_kw)``) and ``data`` (the report's embedded data), built once per module.

    In a test module: ``study, report, data = report_fixtures(build_study, "study", "toy")``.
    """

    @pytest.fixture(scope="module")
    def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return build(tmp_path_factory.mktemp(folder) / name)

    @pytest.fixture(scope="module")
    def report(study: Path) -> Path:
        return write_report(study, **report_kw)

    @pytest.fixture(scope="module")
    def data(report: Path) -> dict[str, Any]:
        return read_report_data(report)

    return study, report, data
