"""Two-stage rules on the stage-1 seeds' consensus (``consensus`` / ``min_stability``): the selection equals the
hand-built categories and stabilities of a seed folder written from dense arrays (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from soi.config import StudyConfig
from soi.config.two_stage import SelectionRule
from soi.errors import SoiError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import data_dir
from shared_data import needs_dataset

pytestmark = needs_dataset("sst2")


def config() -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "consensus", "model": "some/model", "data_dir": str(data_dir()), "seeds": [0, 1, 2], "data_seed": 3,
        "datasets": {"sst2": {"name": "sst2", "task": "sentiment", "n_train": 30, "n_eval": 8}},
        "runs": [{"name": "sst2-only", "setting": "single", "train": ["sst2"]}], "compare": [],
        "two_stage": {"from_run": "sst2-only", "rules": [{"name": "hard", "categories": ["never_learned"],
                                                          "min_stability": 0.9}]}})


@pytest.fixture
def stage1(tmp_path: Path, write_run) -> tuple[StudyConfig, dict, Path]:
    """runs/sst2-only/seed-{0,1,2}: rows 0-9 right at every checkpoint of every seed (always_correct, stability
    1); rows 10-19 never right in seeds 0 and 1, always right in seed 2 (never_learned, stability 2/3); rows
    20-29 never right anywhere (never_learned, stability 1)."""
    from soi.study.runner import StudyData
    from soi.study.two_stage import stage1_tasks
    from soi.train import run_examples

    cfg = config()
    tasks = stage1_tasks(cfg, StudyData(cfg), "sst2-only")
    examples, labels = run_examples(tasks)
    gold = examples["gold"].to_numpy().astype(np.int64)
    assert gold.size == 30
    for seed in range(3):
        right = np.zeros(30, bool)
        right[:10] = True
        right[10:20] = seed == 2
        correct = np.repeat(right[:, None], 4, axis=1)
        pred = np.where(correct, gold[:, None], 1 - gold[:, None])
        write_run(tmp_path / "runs" / "sst2-only" / f"seed-{seed}", labels, examples, pred,
                  np.where(correct, 0.9, 0.1))
    return cfg, tasks, tmp_path / "runs" / "sst2-only"


@pytest.mark.parametrize(("rule", "expected"), [
    ({"categories": ["never_learned"], "min_stability": 0.9}, list(range(20, 30))),
    ({"categories": ["never_learned"], "min_stability": 0.6}, list(range(10, 30))),
    ({"categories": ["never_learned"], "consensus": True}, list(range(10, 30))),
    ({"min_stability": 1.0}, list(range(0, 10)) + list(range(20, 30))),
    ({"categories": ["always_correct"], "min_stability": 0.5}, list(range(10))),
])
def test_consensus_rules_select_the_hand_built_rows(stage1, rule, expected) -> None:
    from soi.study.two_stage import select_subset

    cfg, tasks, folder = stage1
    sel = select_subset(cfg, tasks, folder / "seed-1", SelectionRule(name="r", **rule))
    assert sorted(sel.rows["idx"].to_pylist()) == expected
    assert "soi_stability" in sel.rows.column_names
    want = np.asarray([2 / 3 if 10 <= i < 20 else 1.0 for i in expected])
    np.testing.assert_allclose(np.asarray(sel.rows["soi_stability"].to_pylist())[np.argsort(sel.rows["idx"])],
                               want)


def test_single_seed_rule_still_reads_one_stage1_analysis(stage1) -> None:
    from soi.analysis.per_example import analyze_run
    from soi.study.two_stage import select_subset

    cfg, tasks, folder = stage1
    analyze_run(folder / "seed-2")  # seed 2: rows 0-19 always right, 20-29 never
    sel = select_subset(cfg, tasks, folder / "seed-2", SelectionRule(name="r", categories=["never_learned"]))
    assert sorted(sel.rows["idx"].to_pylist()) == list(range(20, 30))


def test_consensus_of_other_data_is_refused(stage1, write_run) -> None:
    from soi.study.two_stage import select_subset

    cfg, tasks, folder = stage1
    fewer = {t: [ss[0].take(np.arange(20))] for t, ss in tasks.items()}  # the study's data changed since
    with pytest.raises(SoiError, match="consensus does not match the study's training data"):
        select_subset(cfg, fewer, folder / "seed-0", SelectionRule(name="r", min_stability=0.5))


def test_rule_fields_and_description() -> None:
    rule = SelectionRule(name="r", categories=["never_learned"], min_stability=0.75)
    assert rule.uses_consensus and rule.select_kwargs()["min_stability"] == 0.75
    assert rule.describe() == "seed consensus, stability >= 0.75: soi in {never_learned}"
    assert SelectionRule(name="r", min_stability=1).describe() == "seed consensus, stability >= 1"
    assert not SelectionRule(name="r", categories=["never_learned"]).uses_consensus
    assert "min_stability" not in SelectionRule(name="r", categories=["never_learned"]).select_kwargs()
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="min_stability"):
            SelectionRule(name="r", min_stability=bad)
