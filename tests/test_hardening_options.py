"""Hardening, class 7: numeric options outside their range are errors, not a silent meaning."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_common import run_soi
from soi.errors import SoiError
from soi.store import load_dynamics


@pytest.mark.parametrize("bad", [0, -1, -4, True, 1.5])
def test_max_checkpoints_range(sim_run: Path, bad) -> None:
    with pytest.raises(SoiError, match="max_checkpoints must be an integer >= 1"):
        load_dynamics(sim_run, max_checkpoints=bad)


def test_max_checkpoints_valid_values(sim_run: Path) -> None:
    assert load_dynamics(sim_run, max_checkpoints=1).n_checkpoints == 1
    assert load_dynamics(sim_run, max_checkpoints=3).n_checkpoints == 3
    assert load_dynamics(sim_run, max_checkpoints=99).n_checkpoints == load_dynamics(sim_run).n_checkpoints == 4


@pytest.mark.parametrize("bad", [0, -5, True])
def test_report_max_examples_range(sim_run: Path, tmp_path: Path, bad) -> None:
    from soi.report.html import build_report

    with pytest.raises(SoiError, match="max_examples must be an integer >= 1"):
        build_report(sim_run, tmp_path / "r.html", max_examples=bad, figures=False)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args", [
    ["report", "{run}", "--max-examples", "0"],
    ["demo", "--study", "synthetic", "--out", "{tmp}/d", "--seed", "-1"],
    ["demo", "--study", "synthetic", "--out", "{tmp}/d", "--seed", str(2**32)],
    ["demo", "--study", "synthetic", "--out", "{tmp}/d", "--n", "3"],
])
def test_cli_numeric_options_out_of_range(sim_run: Path, tmp_path: Path, capsys, args: list[str]) -> None:
    argv = [a.format(run=sim_run, tmp=tmp_path) for a in args]
    code, out = run_soi(capsys, *argv, stdout=True)
    assert code == 2 and "Invalid value" in out
    assert not (tmp_path / "d").exists() and not (sim_run / "report.html").exists()
