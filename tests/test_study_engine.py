"""The study engine's run protocol on a fake adapter; the study layout's paths; seed aggregation helpers."""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from soi.errors import SoiError
from soi.store.layout import StudyLayout
from soi.store.summary import SCHEMA_VERSION
from soi.study.engine import (
    ComparisonJob,
    RunJob,
    StudyAdapter,
    mean_shares,
    mean_std,
    paired_difference,
    run_study_with,
    seed_stats,
    t_interval,
)


class FakeConfig(BaseModel):
    runs: list[str] = ["a", "b"]
    seeds: list[int] = [0, 1]
    lr: float = 0.1


class Crash(RuntimeError):
    pass


class FakeStudy(StudyAdapter):
    """Trains nothing: ``train_one`` writes ``weights.txt`` (and, resumable, a ``ckpt`` file first), ``evaluate``
    returns a value computed from the config, run and seed."""

    kind = "fake"

    def __init__(self, config: FakeConfig, *, crash: tuple[str, int, str] | None = None,
                 resumable: bool = False) -> None:
        super().__init__(config)
        self.crash = crash  # (run, seed, "train" | "evaluate"): raise there
        self.resumable = resumable
        self.trained: list[tuple[str, int, bool]] = []
        self.seen_at_evaluate: dict[tuple[str, int], list[str]] = {}

    def runs(self) -> list[RunJob]:
        return [RunJob((r, s), r, s, self.layout.run_dir(r, s), f"{r} seed {s}")
                for r in self.config.runs for s in self.config.seeds]

    def fingerprint(self, job: RunJob) -> str:
        return f"{job.run}-{job.seed}-{self.config.lr}"

    def can_resume(self, job: RunJob, run_dir: Path) -> bool:
        return (run_dir / "ckpt").is_file()

    def train_one(self, job: RunJob, run_dir: Path, *, resume: bool) -> float:
        self.trained.append((job.run, job.seed, resume))
        assert run_dir.is_dir() and (resume or not (run_dir / "ckpt").exists())
        (run_dir / "ckpt").write_text("half", encoding="utf-8")
        if self.crash == (job.run, job.seed, "train"):
            raise Crash("killed mid-training")
        (run_dir / "weights.txt").write_text("w", encoding="utf-8")
        return self.config.lr * (job.seed + 1)

    def evaluate(self, job: RunJob, trained: Any, run_dir: Path) -> dict[str, Any]:
        self.seen_at_evaluate[job.run, job.seed] = sorted(p.name for p in run_dir.iterdir())
        if self.crash == (job.run, job.seed, "evaluate"):
            raise Crash("killed mid-evaluation")
        return {"run": job.run, "seed": job.seed, "score": trained + (job.run == "b")}

    def summarise(self, results: Mapping[Hashable, Mapping[str, Any]], analyses: Mapping[Hashable, Any],
                  comparisons: Sequence[tuple[ComparisonJob, dict[str, Any]]]) -> dict[str, Any]:
        return {"study": "fake", "runs": {r: mean_std([results[r, s]["score"] for s in self.config.seeds])
                                          for r in self.config.runs}, "analysed": [a is None for a in
                                                                                    analyses.values()]}


def test_runs_write_result_last_and_summary(tmp_path: Path) -> None:
    study = FakeStudy(FakeConfig())
    summary = run_study_with(study, tmp_path, progress=False)
    assert study.trained == [("a", 0, False), ("a", 1, False), ("b", 0, False), ("b", 1, False)]
    assert summary["schema_version"] == SCHEMA_VERSION
    assert summary["runs"]["a"]["mean"] == pytest.approx((0.1 + 0.2) / 2)
    assert summary["runs"]["b"]["values"] == pytest.approx([1.1, 1.2])
    assert summary["analysed"] == [True] * 4  # no run.json: no dynamics to analyse
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == summary
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8")) == FakeConfig().model_dump()
    for r in ("a", "b"):
        for s in (0, 1):
            rdir = tmp_path / "runs" / r / f"seed-{s}"
            # evaluate ran before result.json existed; result.json is then the newest file of the run
            assert "result.json" not in study.seen_at_evaluate[r, s]
            result = json.loads((rdir / "result.json").read_text(encoding="utf-8"))
            assert result["fingerprint"] == f"{r}-{s}-0.1" and result["elapsed_s"] >= 0
            newest = max((p for p in rdir.iterdir()), key=lambda p: p.stat().st_mtime_ns)
            assert (rdir / "result.json").stat().st_mtime_ns >= newest.stat().st_mtime_ns
            assert not (rdir / "fingerprint.json").exists()  # only resumable studies mark unfinished runs


def test_finished_runs_are_skipped_and_changed_settings_refused(tmp_path: Path) -> None:
    run_study_with(FakeStudy(FakeConfig()), tmp_path, progress=False)
    done = tmp_path / "runs" / "b" / "seed-1" / "result.json"
    before = done.stat().st_mtime_ns
    again = FakeStudy(FakeConfig())
    summary = run_study_with(again, tmp_path, progress=False)
    assert again.trained == [] and done.stat().st_mtime_ns == before
    assert summary["runs"]["b"]["values"] == pytest.approx([1.1, 1.2])
    # a finished run whose fingerprint changed is an error, not silently reused or retrained
    with pytest.raises(SoiError, match=r"run 'a' seed 0 was trained with different settings") as info:
        run_study_with(FakeStudy(FakeConfig(lr=0.5)), tmp_path, progress=False)
    assert "\n" not in str(info.value)
    # one more run: the finished ones are skipped, only the new one trains
    more = FakeStudy(FakeConfig(runs=["a", "b", "c"]))
    run_study_with(more, tmp_path, progress=False)
    assert more.trained == [("c", 0, False), ("c", 1, False)]


@pytest.mark.parametrize("where", ["train", "evaluate"])
def test_a_crash_leaves_no_result_and_the_rerun_trains_it_again(tmp_path: Path, where: str) -> None:
    crashing = FakeStudy(FakeConfig(), crash=("b", 0, where))
    with pytest.raises(Crash):
        run_study_with(crashing, tmp_path, progress=False)
    assert crashing.trained == [("a", 0, False), ("a", 1, False), ("b", 0, False)]
    bad = tmp_path / "runs" / "b" / "seed-0"
    assert bad.is_dir() and not (bad / "result.json").exists()
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "runs" / "a" / "seed-1" / "result.json").is_file()
    rerun = FakeStudy(FakeConfig())
    summary = run_study_with(rerun, tmp_path, progress=False)
    # not resumable: the unfinished directory is cleared (train_one asserts no stale ckpt) and trained from scratch
    assert rerun.trained == [("b", 0, False), ("b", 1, False)]
    assert summary["runs"]["b"]["values"] == pytest.approx([1.1, 1.2])


def test_a_resumable_run_continues_from_its_checkpoint_of_the_same_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        run_study_with(FakeStudy(FakeConfig(), crash=("a", 1, "train"), resumable=True), tmp_path, progress=False)
    rdir = tmp_path / "runs" / "a" / "seed-1"
    assert json.loads((rdir / "fingerprint.json").read_text(encoding="utf-8")) == {"fingerprint": "a-1-0.1"}
    assert (rdir / "ckpt").is_file() and not (rdir / "result.json").exists()
    resumed = FakeStudy(FakeConfig(), resumable=True)
    run_study_with(resumed, tmp_path, progress=False)
    assert resumed.trained == [("a", 1, True), ("b", 0, False), ("b", 1, False)]
    assert (rdir / "result.json").is_file()


def test_an_unfinished_run_of_another_fingerprint_is_not_resumed(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        run_study_with(FakeStudy(FakeConfig(seeds=[0]), crash=("a", 0, "train"), resumable=True), tmp_path,
                       progress=False)
    changed = FakeStudy(FakeConfig(seeds=[0], lr=0.3), resumable=True)
    summary = run_study_with(changed, tmp_path, progress=False)
    assert changed.trained == [("a", 0, False), ("b", 0, False)]  # settings changed: start again, not resume
    rdir = tmp_path / "runs" / "a" / "seed-0"
    assert json.loads((rdir / "fingerprint.json").read_text(encoding="utf-8")) == {"fingerprint": "a-0-0.3"}
    assert summary["runs"]["a"]["values"] == pytest.approx([0.3])
    # resumable, but no checkpoint on disk: trained from scratch too
    with pytest.raises(Crash):
        run_study_with(FakeStudy(FakeConfig(seeds=[0], runs=["c"]), crash=("c", 0, "train"), resumable=True),
                       tmp_path, progress=False)
    (tmp_path / "runs" / "c" / "seed-0" / "ckpt").unlink()
    again = FakeStudy(FakeConfig(seeds=[0], runs=["c"]), resumable=True)
    run_study_with(again, tmp_path, progress=False)
    assert again.trained == [("c", 0, False)]


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(SoiError, match="--out exists and is not a directory"):
        run_study_with(FakeStudy(FakeConfig()), f, progress=False)


# ---------------------------------------------------------------------------------------------- layout
def test_layout_paths_equal_the_study_modules_paths(tmp_path: Path) -> None:
    from soi.study import generative, runner, two_stage

    lay = StudyLayout(tmp_path)
    assert lay.run_dir("mix", 3) == runner.run_dir_of(tmp_path, "mix", 3) == tmp_path / "runs/mix/seed-3"
    assert lay.compare_dir("a", "b") == runner.compare_dir_of(tmp_path, "a", "b") == tmp_path / "compare/a__vs__b"
    assert lay.compare_stats("a", "b") == tmp_path / "compare/a__vs__b/stats.json"
    assert lay.k_run_dir("math", 8, 1) == generative.run_dir_of(tmp_path, "math", 8, 1) == \
        tmp_path / "runs/math-k8/seed-1"
    assert lay.experiment_dir("r", "hard") == two_stage.experiment_dir_of(tmp_path, "r", "hard") == \
        tmp_path / "two_stage/r/hard"
    assert lay.arm_dir("r", "hard", "soi", 2) == two_stage.arm_dir_of(tmp_path, "r", "hard", "soi", 2) == \
        tmp_path / "two_stage/r/hard/soi/seed-2"
    assert lay.selection_dir("r", "hard", 0) == tmp_path / "two_stage/r/hard/selection/stage1-seed-0"
    assert lay.two_stage_tables == {"results": tmp_path / "two_stage/results.csv",
                                    "differences": tmp_path / "two_stage/differences.csv",
                                    "markdown": tmp_path / "two_stage/results.md"}
    rdir = lay.run_dir("mix", 0)
    assert lay.result(rdir) == rdir / runner.RESULT_FILE == rdir / "result.json"
    assert lay.eval_file(rdir, "sst2") == rdir / runner.EVAL_DIR / "sst2.parquet"
    assert (lay.summary, lay.summary_md, lay.config) == (tmp_path / runner.SUMMARY_FILE, tmp_path / "summary.md",
                                                         tmp_path / runner.CONFIG_FILE)
    assert lay.table("scores") == tmp_path / "tables/scores.csv"
    assert (lay.report, lay.figures) == (tmp_path / "report.html", tmp_path / "figures")
    assert (lay.mixture(rdir), lay.predictions(rdir), lay.probe(rdir), lay.fingerprint(rdir)) == (
        rdir / "mixture.json", rdir / "predictions.jsonl", rdir / "probe", rdir / "fingerprint.json")
    assert StudyLayout(str(tmp_path)) == lay  # a str or a Path: the same layout


# ---------------------------------------------------------------------------------------------- seeds
def test_seed_aggregation_by_hand() -> None:
    m = mean_std([0.5, 0.7, 0.9])
    assert m["mean"] == pytest.approx(0.7) and m["std"] == pytest.approx(0.2) and m["values"] == [0.5, 0.7, 0.9]
    assert mean_std([0.4])["std"] == 0.0
    # t_{0.975, 2} = 4.302652729911275 (Student t table); s = 0.2, n = 3
    half = 4.302652729911275 * 0.2 / math.sqrt(3)
    assert t_interval([0.5, 0.7, 0.9]) == pytest.approx([0.7 - half, 0.7 + half])
    assert t_interval([0.5]) is None and seed_stats([0.5])["ci95"] is None
    d = paired_difference([0.8, 0.9], [0.5, 0.8])
    assert d["values"] == pytest.approx([0.3, 0.1]) and d["mean"] == pytest.approx(0.2)
    half = 12.706204736174707 * float(np.std([0.3, 0.1], ddof=1)) / math.sqrt(2)  # t_{0.975, 1}
    assert d["ci95"] == pytest.approx([0.2 - half, 0.2 + half])
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 2.0])


def test_mean_shares_average_over_the_seeds_that_have_the_group() -> None:
    def summ(groups: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
        return {"groups": {k: {g: {"shares": v} for g, v in gs.items()} for k, gs in groups.items()}}

    one = summ({"all": {"all": {"easy": 0.6, "hard": 0.4}}, "task": {"x": {"easy": 1.0, "hard": 0.0}}})
    two = summ({"all": {"all": {"easy": 0.2, "hard": 0.8}}, "task": {}})
    out = mean_shares([one, None, two])
    assert out["all"]["all"] == pytest.approx({"easy": 0.4, "hard": 0.6})
    assert out["task"]["x"] == {"easy": 1.0, "hard": 0.0}  # only seed one has task x
    assert mean_shares([None, None]) == {}


# ---------------------------------------------------------------------------------------------- study types
def test_study_types_dispatch_on_the_yaml_type(tmp_path: Path) -> None:
    from soi.study.packaged import STUDY_TYPES, run_study_file, study_type

    assert set(STUDY_TYPES) == {"classification", "generative"}
    assert study_type({}) == "classification" and study_type({"type": "generative"}) == "generative"
    bad = tmp_path / "s.yaml"
    bad.write_text("type: regression\nname: x\n", encoding="utf-8")
    with pytest.raises(SoiError) as info:
        run_study_file(bad, tmp_path / "out", progress=False)
    assert str(info.value) == f"{bad}: type: unknown study type 'regression' (use classification or generative)"
    assert not (tmp_path / "out").exists()  # refused before anything is written
    # an explicit type: classification is the default type, not an unknown field of the classification schema
    explicit = tmp_path / "c.yaml"
    explicit.write_text("type: classification\nname: x\nmodel: m\n", encoding="utf-8")
    with pytest.raises(SoiError) as info:
        run_study_file(explicit, tmp_path / "out", progress=False)
    assert "type" not in str(info.value) and str(info.value).startswith("c.yaml: ")


# ---------------------------------------------------------------------------------------------- comparisons
def test_compare_cached_reuses_stats_while_newer_than_every_result(tmp_path: Path) -> None:
    import os

    from soi.simulate import simulate_seed_folder
    from soi.study.engine import compare_cached

    lay = StudyLayout(tmp_path)
    for name, skill in (("single", 0.8), ("multi", 1.2)):
        simulate_seed_folder(lay.seed_folder(name), [0, 1], n=60, checkpoints=4, skill=skill)
        for s in (0, 1):
            lay.result(lay.run_dir(name, s)).write_text("{}", encoding="utf-8")
    stale = lay.compare_dir("single", "multi") / "seed-0"  # the per-seed layout of older soi versions
    stale.mkdir(parents=True)
    (stale / "stats.json").write_text("{}", encoding="utf-8")
    comp = ComparisonJob("single", "multi", ("task",))
    stats = compare_cached(lay, comp, [0, 1], n_boot=20)
    assert not stale.exists() and lay.compare_stats("single", "multi").is_file()
    assert stats["run_a"]["seeds"] == [0, 1] and stats["run_b"]["label"] == "multi"
    assert [g["key"] for g in stats["groups"]] == ["all"] + ["task"] * (len(stats["groups"]) - 1)
    first = lay.compare_stats("single", "multi").stat().st_mtime_ns
    assert compare_cached(lay, comp, [0, 1], n_boot=20) == stats  # reused: not recomputed
    assert lay.compare_stats("single", "multi").stat().st_mtime_ns == first
    # a run finished after the comparison: recomputed
    later = lay.result(lay.run_dir("multi", 1))
    t = lay.compare_stats("single", "multi").stat().st_mtime + 5
    os.utime(later, (t, t))
    compare_cached(lay, comp, [0, 1], n_boot=20)
    assert lay.compare_stats("single", "multi").stat().st_mtime_ns != first
