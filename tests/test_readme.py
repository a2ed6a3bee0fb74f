"""The README's Python API example runs as written (on a simulated run in place of runs/sst2-single)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from soi.simulate import simulate_run

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_analysis_example_runs(tmp_path, monkeypatch):
    block = next(b for b in _python_blocks() if "analyze_run(" in b)
    monkeypatch.chdir(tmp_path)
    simulate_run(tmp_path / "runs" / "sst2-single", n=60, checkpoints=4, groups={"task": ["sst2"]})
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "runs" / "sst2-single" / "analysis" / "per_example.parquet").is_file()
    assert (tmp_path / "selections" / "stage2" / "selected_ids.txt").is_file()
    assert len(namespace["df"]) == 60


def test_readme_recording_example_runs(tmp_path, monkeypatch):
    import numpy as np

    block = next(b for b in _python_blocks() if "write_logits" in b)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    namespace = {"ids": ["a", "b", "c"], "gold": np.array([0, 1, 1]), "texts": ["x", "y", "z"], "epoch": 0,
                 "global_step": 10, "example_idx": np.array([2, 0, 1]), "logits": rng.normal(size=(3, 2)),
                 "gold_of_idx": np.array([1, 0, 1])}
    exec(compile(block, "README.md", "exec"), namespace)
    from soi.store import load_dynamics

    assert load_dynamics(tmp_path / "runs" / "my-run").p_gold.shape == (3, 1)


@pytest.mark.parametrize("command", ["analyze", "compare", "select", "import cartography", "export cartography",
                                     "demo"])
def test_readme_lists_every_command(command):
    assert f"soi {command}" in README.read_text(encoding="utf-8")
