"""soi.study.two_stage / soi.config.two_stage: stage 2 on SOI-selected subsets vs same-step controls, on a tiny BERT."""

from __future__ import annotations

import copy
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow.parquet as pq
import scipy.stats

from soi.config import StudyConfig
from soi.errors import SoiError
from soi.record import DynamicsRecorder
from soi.store import RunMeta, load_dynamics
from soi.study.two_stage import (
    full_plan,
    load_weights,
    paired_difference,
    per_task_counts,
    random_subset,
    seed_stats,
    stage2_steps,
    subset_tasks,
    t_interval,
)
from soi.train import evaluate, run_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import data_dir, sentiment_study, study_error, tiny_encoder, tokenizer
from plain_loop import train
from shared_data import needs_dataset
from test_train import sentiment, tiny_model

needs_data = needs_dataset("sst2")

RULE = {"name": "low-conf", "metric": "confidence", "bottom": 10}
MOST = {"name": "most", "metric": "confidence", "bottom": 20}  # 2 * ceil(20/4) = 10 steps > an epoch of 32 rows (8)


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (tests/conftest.py)


def study_dict(model: str) -> dict:
    return sentiment_study(model, "tiny-two-stage", {"sst2": (32, 16), "mr": (16, 16), "cr": (None, 16)},
                           [{"name": "sst2-only", "setting": "single", "train": ["sst2"]},
                            {"name": "mr-only", "setting": "single", "train": ["mr"]}],
                           train={"epochs": 3, "batch_size": 8, "lr": 1e-3}, eval={"ood": ["cr"]}, compare=[],
                           two_stage={"from_run": "sst2-only", "rules": [dict(RULE)], "epochs": 2, "batch_size": 4,
                                      "lr": 1e-3, "seeds": [0, 1], "stage1_seed": 0})


# ---------------------------------------------------------------------------------------------- statistics
def test_t_interval_hand_computed_and_scipy() -> None:
    values = [0.80, 0.82, 0.84]  # mean 0.82, s = 0.02, t_{0.975, 2} = 4.302652729...
    half = 4.302652729749464 * 0.02 / math.sqrt(3)
    lo, hi = t_interval(values)
    assert lo == pytest.approx(0.82 - half, abs=1e-12) and hi == pytest.approx(0.82 + half, abs=1e-12)
    ref = scipy.stats.t.interval(0.95, df=2, loc=0.82, scale=scipy.stats.sem(values))
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    assert t_interval([0.5]) is None
    assert t_interval([0.5, 0.5]) == [0.5, 0.5]
    s = seed_stats([0.7])
    assert s == {"mean": 0.7, "std": 0.0, "ci95": None, "values": [0.7]}
    s = seed_stats([1.0, 3.0])  # s = sqrt(2), t_{0.975, 1} = 12.7062047...
    assert s["std"] == pytest.approx(math.sqrt(2)) and s["ci95"][1] - 2.0 == pytest.approx(12.706204736174698)


def test_paired_difference() -> None:
    d = paired_difference([0.90, 0.80, 0.85], [0.85, 0.80, 0.80])
    assert d["values"] == pytest.approx([0.05, 0.0, 0.05])
    assert d["mean"] == pytest.approx(0.1 / 3)
    sem = np.std([0.05, 0.0, 0.05], ddof=1) / math.sqrt(3)
    assert d["ci95"] == pytest.approx([0.1 / 3 - 4.302652729749464 * sem, 0.1 / 3 + 4.302652729749464 * sem])
    # pairing matters: the same numbers unpaired would have a much wider interval
    assert paired_difference([1.0, 2.0], [0.5, 1.5]) == {"mean": 0.5, "ci95": [0.5, 0.5], "values": [0.5, 0.5]}
    assert paired_difference([0.6], [0.5])["ci95"] is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------- subsets
@pytest.fixture(scope="module")
def tasks() -> dict:
    """Task ``a``: two splits (13 + 9 rows); task ``b``: one split (11 rows)."""
    return {"a": [sentiment("src_a", 13, 0), sentiment("src_b", 9, 1)], "b": [sentiment("src_c", 11, 2)]}


def test_subset_tasks_maps_global_idx(tasks: dict) -> None:
    examples, _ = run_examples(tasks)
    ids = np.asarray(examples["example_id"].to_pylist(), dtype=object)
    idx = np.array([0, 12, 13, 21, 22, 32])
    sub = subset_tasks(tasks, idx)
    assert list(sub) == ["a", "b"] and [len(s) for s in sub["a"]] == [2, 2] and len(sub["b"][0]) == 2
    sub_ids = [i for ss in sub.values() for s in ss for i in s.ids]
    assert sub_ids == ids[idx].tolist()
    assert list(subset_tasks(tasks, np.array([25]))) == ["b"]  # tasks / splits with no row are left out
    assert per_task_counts(tasks, idx) == {"a": 4, "b": 2}
    with pytest.raises(SoiError, match="out of range"):
        subset_tasks(tasks, np.array([33]))


def test_random_subset_same_size_per_task_and_seeded(tasks: dict) -> None:
    counts = {"a": 5, "b": 3}
    r0 = random_subset(tasks, counts, seed=0)
    assert per_task_counts(tasks, r0) == counts and np.unique(r0).size == 8
    np.testing.assert_array_equal(r0, random_subset(tasks, counts, seed=0))
    assert not np.array_equal(r0, random_subset(tasks, counts, seed=1))
    assert per_task_counts(tasks, random_subset(tasks, {"a": 22}, seed=3)) == {"a": 22, "b": 0}


def test_steps_and_full_plan(tasks: dict) -> None:
    steps = stage2_steps({"a": 5, "b": 3}, batch_size=4, epochs=2)
    assert steps == {"a": 4, "b": 2}  # 2 * ceil(5/4), 2 * ceil(3/4)
    idx, epochs = full_plan(tasks, steps, batch_size=4, seed=0)  # 16 <= 22 and 8 <= 11 rows: one pass, no repeats
    assert epochs == 1 and per_task_counts(tasks, idx) == {"a": 16, "b": 8} and np.unique(idx).size == 24
    np.testing.assert_array_equal(idx, full_plan(tasks, steps, batch_size=4, seed=0)[0])
    # one pass over the drawn rows gives exactly the per-task steps: ceil(16/4) + ceil(8/4) = 6
    assert sum(math.ceil(n / 4) for n in per_task_counts(tasks, idx).values()) == sum(steps.values())
    # more steps than one epoch of a task holds: train on everything with max_steps
    assert full_plan(tasks, {"a": 8, "b": 2}, batch_size=4, seed=0) == (None, 2)  # 10 steps / (6 + 3) per epoch


def test_train_max_steps(tmp_path: Path) -> None:
    data = {"toy": [sentiment("toy", 20, 0)]}
    examples, labels = run_examples(data)
    kw = {"epochs": 3, "batch_size": 4, "lr": 1e-3, "seed": 0, "max_length": 16}
    rec = DynamicsRecorder(tmp_path / "tp", RunMeta(tasks=labels), examples=examples)
    res = train(tiny_model({"toy": 2}), tokenizer(), data, recorder=rec, max_steps=7, **kw)
    rec.close()
    assert res.steps == 7 and len(res.epoch_loss) == 2 and res.batches == [{"toy": 5}, {"toy": 2}]
    dyn = load_dynamics(tmp_path / "tp")  # the truncated second epoch is not a checkpoint (it saw 8 of 20)
    assert dyn.n_checkpoints == 1 and dyn.steps.tolist() == [5]
    rec = DynamicsRecorder(tmp_path / "ep", RunMeta(tasks=labels, recording_mode="eval-pass"), examples=examples)
    train(tiny_model({"toy": 2}), tokenizer(), data, recorder=rec, record_mode="eval-pass", max_steps=7, **kw)
    assert load_dynamics(tmp_path / "ep").steps.tolist() == [5, 7]  # an eval pass covers every example
    assert train(tiny_model({"toy": 2}), tokenizer(), data, max_steps=100, **kw).steps == 15
    with pytest.raises(SoiError, match="max_steps"):
        train(tiny_model({"toy": 2}), tokenizer(), data, max_steps=0, **kw)


# ---------------------------------------------------------------------------------------------- config
def _rule(**kw: object):
    return lambda d: d["two_stage"]["rules"][0].update(kw)


@needs_data
@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["two_stage"].update(from_run="sst3-only"), "two_stage.from_run: unknown run 'sst3-only'"),
    (lambda d: d["two_stage"].update(from_run=["sst2-only", "x"]), "two_stage.from_run[1]: unknown run 'x'"),
    (_rule(categories=["never_learned", "forgettable"]),
     "two_stage.rules[0].categories: unknown SOI category 'forgettable'"),
    (_rule(where="confidnce < 0.3"), "two_stage.rules[0].where: unknown column 'confidnce'"),
    (_rule(where="confidence <"), "two_stage.rules[0].where: cannot parse"),
    (_rule(metric="loudness"), "two_stage.rules[0].metric: unknown metric 'loudness'"),
    (_rule(bottom=1.5), "two_stage.rules[0].bottom: fraction 1.5 must be in (0, 1)"),
    (_rule(top=0.3), "two_stage.rules[0]: give only one of top and bottom"),
    (_rule(metric=None), "two_stage.rules[0]: top/bottom need a metric"),
    (_rule(catgories=["never_learned"]), "two_stage.rules[0].catgories: unknown field"),
    (lambda d: d["two_stage"].update(rules=[{"name": "all"}]), "two_stage.rules[0]: a rule needs categories"),
    (lambda d: d["two_stage"].update(rules=[RULE, RULE]), "two_stage.rules: rule names must be distinct"),
    (lambda d: d["two_stage"].update(epochs=0), "two_stage.epochs: "),
    (lambda d: d["two_stage"].update(stage1_seed=4), "two_stage.stage1_seed: seed 4 is not one of the study's"),
    (lambda d: d["two_stage"].update(stage1_seed=None), "two_stage.seeds[1]: seed 1 has no stage-1 run"),
    (lambda d: d["two_stage"].update(eval=["sst3"]), "two_stage.eval[0]: unknown dataset 'sst3'"),
    (lambda d: d["two_stage"].update(eval=["sst2", "mr"]), "two_stage.eval[1]: run 'sst2-only' is not evaluated"),
    (lambda d: d["two_stage"].pop("rules"), "two_stage.rules: field required"),
])
def test_config_errors_name_the_field(tmp_path: Path, edit, expected: str) -> None:
    data = study_dict("some/model")
    edit(data)
    assert study_error(tmp_path, data).startswith(f"study.yaml: {expected}")


@needs_data
def test_config_defaults_and_helpers() -> None:
    data = study_dict("some/model")
    data["two_stage"] = {"from_run": ["sst2-only", "mr-only"], "rules": [{"name": "hard", "categories":
                                                                           ["never_learned"], "sample": "50%"}]}
    cfg = StudyConfig.from_dict(data)
    ts = cfg.two_stage
    assert ts.epochs == 2 and ts.lr is None and ts.rules[0].sample == 0.5
    assert ts.from_runs == ["sst2-only", "mr-only"] and ts.stage2_seeds(cfg.seeds) == [0]
    assert ts.eval_keys(cfg, "sst2-only") == ["sst2", "cr"]
    assert ts.saves_weights("sst2-only", 0, cfg.seeds) and not ts.saves_weights("sst2-only", 1, cfg.seeds)
    assert ts.rules[0].describe() == "soi in {never_learned}; sample 0.5"
    assert cfg.two_stage.rules[0].select_kwargs()["categories"] == ["never_learned"]


@needs_data
def test_fingerprint_covers_kept_weights() -> None:
    from soi.study.runner import run_fingerprint as _fingerprint

    with_ts = StudyConfig.from_dict(study_dict("some/model"))
    without = StudyConfig.from_dict({k: v for k, v in study_dict("some/model").items() if k != "two_stage"})
    assert _fingerprint(with_ts, "sst2-only", 0) != _fingerprint(without, "sst2-only", 0)  # a start keeps weights
    assert _fingerprint(with_ts, "mr-only", 0) == _fingerprint(without, "mr-only", 0)  # other runs: unchanged


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def study(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, Path, dict]:
    from soi.study import run_study

    if not (data_dir() / "sst2" / "info.json").is_file():
        pytest.skip("shared data missing")
    data = study_dict(tiny_bert)
    data["runs"] = data["runs"][:1]  # stage 1: sst2 only
    data["two_stage"]["rules"].append(dict(MOST))
    cfg = StudyConfig.from_dict(data)
    out = tmp_path_factory.mktemp("two-stage") / "out"
    summary = run_study(cfg, out, progress=False)
    from soi.store.summary import undeclared_fields

    assert undeclared_fields(json.loads((out / "summary.json").read_text(encoding="utf-8"))) == []  # schema docs
    return cfg, out, summary


def _arm(out: Path, arm: str, seed: int, rule: str = "low-conf") -> Path:
    return out / "two_stage" / "sst2-only" / rule / arm / f"seed-{seed}"


def _ids(run_dir: Path) -> list[str]:
    return pq.read_table(run_dir / "examples.parquet")["example_id"].to_pylist()


def test_soi_arm_trains_the_selection(study: tuple[StudyConfig, Path, dict]) -> None:
    from soi.selection import select

    _, out, _ = study
    table = pq.read_table(out / "runs" / "sst2-only" / "seed-0" / "analysis" / "per_example.parquet")
    expected = select(table, metric="confidence", bottom=10, seed=0)
    assert len(expected) == 10
    for seed in (0, 1):  # both stage-2 seeds start from stage-1 seed 0: the same subset
        assert _ids(_arm(out, "soi", seed)) == expected.ids.tolist()
    saved = (out / "two_stage" / "sst2-only" / "low-conf" / "selection" / "stage1-seed-0" / "selected_ids.txt")
    assert saved.read_text().split() == expected.ids.tolist()


def test_random_control_same_size_seeded(study: tuple[StudyConfig, Path, dict]) -> None:
    _, out, _ = study
    soi = set(_ids(_arm(out, "soi", 0)))
    r0, r1 = _ids(_arm(out, "random", 0)), _ids(_arm(out, "random", 1))
    assert len(r0) == len(r1) == len(soi) == 10
    assert r0 != r1  # seeded by the stage-2 seed
    all_ids = _ids(out / "runs" / "sst2-only" / "seed-0")
    pick = random_subset({"sentiment": [all_ids]}, {"sentiment": 10}, seed=0)  # len() is all it needs of a split
    assert r0 == [all_ids[i] for i in pick]


def test_all_arms_same_optimizer_steps(study: tuple[StudyConfig, Path, dict]) -> None:
    _, out, summary = study
    exp = summary["two_stage"]["experiments"][0]
    s = exp["stage2_steps"]
    assert s == 2 * math.ceil(10 / 4) == 6
    for seed in (0, 1):
        for arm in ("soi", "random", "full"):
            rdir = _arm(out, arm, seed)
            result = json.loads((rdir / "result.json").read_text())
            dyn = load_dynamics(rdir)
            assert result["steps"] == s and int(dyn.steps[-1]) == s, arm
            meta = RunMeta.load(rdir)
            assert meta.checkpoint_unit == ("step" if arm == "full" else "epoch")
            assert dyn.n_checkpoints == (1 if arm == "full" else 2)
            assert (rdir / "analysis" / "per_example.parquet").is_file()
        full = _ids(_arm(out, "full", seed))  # S full batches of distinct stage-1 examples (no repeats)
        assert len(full) == len(set(full)) == 6 * 4
    assert exp["arms"]["full"]["n_train"] == 24 and exp["arms"]["stage1"]["n_train"] == 32
    # 20 selected: 10 steps are more than one epoch of the 32 stage-1 rows, so `full` trains on all of them with
    # max_steps; the Trainer closes a last checkpoint at step 10 after its complete epoch (8 steps), the rows not
    # trained on in the 2 steps since filled by an eval-mode pass (the plain loop recorded only the epoch)
    most = summary["two_stage"]["experiments"][1]
    assert most["name"] == "sst2-only/most" and most["stage2_steps"] == 10
    for arm, n, steps in (("soi", 20, [5, 10]), ("random", 20, [5, 10]), ("full", 32, [8, 10])):
        rdir = _arm(out, arm, 0, "most")
        result = json.loads((rdir / "result.json").read_text())
        assert result["steps"] == 10 and result["n_train"] == n and load_dynamics(rdir).steps.tolist() == steps
        assert sum(result["steps_per_task"].values()) == 10
        filled = RunMeta.load(rdir).extra["filled"]
        assert filled == ([0, 32 - 2 * 4] if arm == "full" else [0, 0])
        assert RunMeta.load(rdir).checkpoint_unit == "epoch"


def test_stage1_weights_saved_and_reloaded(study: tuple[StudyConfig, Path, dict]) -> None:
    from soi.study.runner import StudyData

    cfg, out, _ = study
    rdir = out / "runs" / "sst2-only" / "seed-0"
    result = json.loads((rdir / "result.json").read_text())
    model = load_weights(rdir, cfg.model, {"sentiment": 2})
    split = StudyData(cfg).get("sst2", "eval")
    again = evaluate(model, tokenizer(), split, "sentiment", max_length=cfg.max_length)
    assert again["accuracy"] == result["eval"]["sst2"]["accuracy"]
    with pytest.raises(SoiError, match="no stage-1 weights"):
        load_weights(_arm(out, "soi", 0), cfg.model, {"sentiment": 2})


def test_summary_schema_and_tables(study: tuple[StudyConfig, Path, dict]) -> None:
    _, out, summary = study
    assert json.loads((out / "summary.json").read_text())["two_stage"] == summary["two_stage"]
    exp, most = summary["two_stage"]["experiments"]
    assert {"name", "from_run", "rule", "stage2_epochs", "stage2_steps", "arms", "differences"} <= set(exp)
    assert exp["name"] == "sst2-only/low-conf" and exp["rule"] == "bottom 10 by confidence"
    assert exp["stage2_epochs"] == 2 and set(exp["arms"]) == {"soi", "random", "full", "stage1"}
    stage1 = json.loads((out / "runs" / "sst2-only" / "seed-0" / "result.json").read_text())
    for name, arm in exp["arms"].items():
        assert arm["kind"] == name and set(arm) >= {"kind", "n_train", "dirs", "eval"}
        assert set(arm["eval"]) == {"sst2", "cr"}
        assert arm["eval"]["sst2"]["kind"] == "in-distribution" and arm["eval"]["cr"]["kind"] == "ood"
        for ev in arm["eval"].values():
            for m in ("accuracy", "macro_f1"):
                assert set(ev[m]) == {"mean", "std", "ci95", "values"}
                if name == "stage1":  # one stage-1 model: one value, no CI
                    assert ev[m]["ci95"] is None and len(ev[m]["values"]) == 1
                else:
                    lo, hi = ev[m]["ci95"]
                    assert len(ev[m]["values"]) == 2 and lo <= ev[m]["mean"] <= hi
    assert exp["arms"]["stage1"]["eval"]["cr"]["accuracy"]["values"] == [stage1["eval"]["cr"]["accuracy"]]
    assert exp["arms"]["stage1"]["dirs"] == [str(out / "runs" / "sst2-only" / "seed-0")]
    assert len(exp["differences"]) == 3 * 2 * 2  # controls x eval sets x metrics
    for d in exp["differences"]:
        soi = exp["arms"]["soi"]["eval"][d["eval"]][d["metric"]]["values"]
        ctrl = exp["arms"][d["control"]]["eval"][d["eval"]][d["metric"]]["values"]
        ctrl = ctrl * 2 if d["control"] == "stage1" else ctrl  # both seeds start from the one stage-1 model
        assert d["arm"] == "soi" and d["values"] == pytest.approx([a - b for a, b in zip(soi, ctrl, strict=True)])
    assert most["arms"]["soi"]["n_train"] == 20 and most["arms"]["full"]["n_train"] == 32
    rows = list(csv.DictReader((out / "two_stage" / "results.csv").open()))
    assert len(rows) == 2 * 4 * 2 * 2 and {r["arm"] for r in rows} == {"soi", "random", "full", "stage1"}
    row = next(r for r in rows if r["arm"] == "soi" and r["eval"] == "cr" and r["metric"] == "accuracy")
    assert float(row["mean"]) == pytest.approx(exp["arms"]["soi"]["eval"]["cr"]["accuracy"]["mean"])
    assert len(list(csv.DictReader((out / "two_stage" / "differences.csv").open()))) == 2 * 12
    assert "| soi minus |" in (out / "two_stage" / "results.md").read_text()


def test_printed_tables(study: tuple[StudyConfig, Path, dict]) -> None:
    from rich.console import Console

    from soi.study.two_stage import print_two_stage

    _, _, summary = study
    console = Console(record=True, width=200)
    print_two_stage(summary["two_stage"], console)
    text = console.export_text()
    exp = summary["two_stage"]["experiments"][0]
    acc = exp["arms"]["stage1"]["eval"]["cr"]["accuracy"]["mean"]
    assert f"{100 * acc:.1f} (1 seed)" in text  # one stage-1 model: no interval
    lo, hi = exp["arms"]["soi"]["eval"]["sst2"]["accuracy"]["ci95"]
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in text
    assert "two-stage sst2-only/low-conf (bottom 10 by confidence; 6 stage-2 steps" in text
    rows = [line for line in text.splitlines() if line.startswith("│ random ")]
    assert len(rows) == 2 * (2 + 2)  # the arm's rows (2 eval sets) and soi minus random (2 eval sets)


def test_rerun_skips_finished_arms(study: tuple[StudyConfig, Path, dict]) -> None:
    from soi.study import run_study

    cfg, out, summary = study
    results = sorted(out.glob("two_stage/*/*/*/seed-*/result.json"))
    assert len(results) == 12
    stamps = {p: p.stat().st_mtime_ns for p in results}
    # an interrupted arm (no result.json) is trained again
    victim = _arm(out, "random", 1)
    (victim / "result.json").unlink()
    again = run_study(cfg, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in results if p.parent != victim} == \
        {p: t for p, t in stamps.items() if p.parent != victim}
    assert again["two_stage"] == summary["two_stage"]  # CPU training is deterministic
    changed = copy.deepcopy(cfg.model_dump(mode="json"))
    changed["two_stage"]["lr"] = 5e-4
    with pytest.raises(SoiError, match="run 'sst2-only/low-conf/soi' seed 0 was trained with different settings"):
        run_study(StudyConfig.from_dict(changed), out, progress=False)
