"""``soi run`` on the Trainer engine in subprocesses: kill -9 after a Trainer checkpoint and re-run = an
uninterrupted run (a classification run and a two-stage arm); ``accelerate launch --multi_gpu --num_processes 2``
(two gloo processes on CPU) = one process. Tiny random BERT (tests/hf_common.py), helper tests/study_procs.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hf_common import ACCELERATE, needs_accelerate, run_process, sentiment_study, tiny_encoder  # noqa: E402
from shared_data import needs_dataset  # noqa: E402
from soi.store import load_dynamics  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"), needs_dataset("sst2")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def study(model: str, **edits: Any) -> dict[str, Any]:
    return sentiment_study(model, "tiny-trainer", {"sst2": (16, 16)},
                           [{"name": "sst2-only", "setting": "single", "train": ["sst2"]}],
                           train={"epochs": 2, "batch_size": 4, "lr": 1e-3}, compare=[]) | edits


def soi_run(tmp: Path, data: dict[str, Any], out: str, *, here: bool = False, **opts: Any) -> Path:
    """``soi run`` of ``data`` into ``tmp/out``: in a subprocess (tests/study_procs.py), or in this one."""
    yml = tmp / f"{out}.yaml"
    yml.write_text(yaml.safe_dump(data))
    if here:
        from soi.study.packaged import run_study_file

        run_study_file(yml, tmp / out, progress=False, report=False)
        return tmp / out
    run_process([sys.executable, str(HERE / "study_procs.py"),
                 json.dumps({"study": str(yml), "out": str(tmp / out), **opts})],
                tmp / f"{out}.log", timeout=240, expect_kill="kill_at" in opts)
    return tmp / out


def assert_same_dynamics(got: Path, want: Path) -> None:
    a, b = load_dynamics(got), load_dynamics(want)
    assert a.steps.tolist() == b.steps.tolist()
    assert np.array_equal(a.pred, b.pred)
    for col in ("p_gold", "margin", "loss"):
        np.testing.assert_allclose(getattr(a, col), getattr(b, col), rtol=1e-5, atol=1e-6, err_msg=col)


def test_killed_soi_run_resumes_from_its_trainer_checkpoint(tmp_path: Path, tiny: str) -> None:
    # 16 rows, batch 4: 4 steps per epoch, 8 in all; recording and Trainer checkpoints every 3 steps (3, 6, and
    # the last at 8): the kill after step 3's save is mid-epoch 0, with that soi checkpoint closed
    data = study(tiny, recording={"every_steps": 3})
    out = soi_run(tmp_path, data, "out", kill_at=3)
    rdir = out / "runs" / "sst2-only" / "seed-0"
    assert not (rdir / "result.json").exists()
    assert [p.name for p in (rdir / "trainer").iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-3"]
    soi_run(tmp_path, data, "out", here=True)  # the re-run resumes (in this process)
    soi_run(tmp_path, data, "ref", here=True)
    ref = tmp_path / "ref" / "runs" / "sst2-only" / "seed-0"
    got, want = (json.loads((d / "result.json").read_text()) for d in (rdir, ref))
    assert got["resumed"] is True and want["resumed"] is False
    assert got["steps"] == want["steps"] == 8 and got["fingerprint"] == want["fingerprint"]
    assert load_dynamics(rdir).steps.tolist() == [3, 6, 8]
    assert_same_dynamics(rdir, ref)
    assert got["eval"]["sst2"]["accuracy"] == want["eval"]["sst2"]["accuracy"]
    assert pq.read_table(rdir / "eval" / "sst2.parquet").equals(pq.read_table(ref / "eval" / "sst2.parquet"))
    assert not (rdir / "trainer").exists()  # the Trainer's checkpoints are removed once the run is finished
    assert json.loads((rdir / "fingerprint.json").read_text()) == {"fingerprint": got["fingerprint"]}


def test_changed_settings_do_not_resume_a_killed_run(tmp_path: Path, tiny: str) -> None:
    data = study(tiny, recording={"every_steps": 3})
    soi_run(tmp_path, data, "out", kill_at=3)
    changed = study(tiny, recording={"every_steps": 3}, train={"epochs": 2, "batch_size": 4, "lr": 2e-3})
    soi_run(tmp_path, changed, "out", here=True)
    result = json.loads((tmp_path / "out" / "runs" / "sst2-only" / "seed-0" / "result.json").read_text())
    assert result["resumed"] is False and result["steps"] == 8  # trained afresh with the new settings
    assert load_dynamics(tmp_path / "out" / "runs" / "sst2-only" / "seed-0").steps.tolist() == [3, 6, 8]


def test_killed_two_stage_arm_resumes(tmp_path: Path, tiny: str) -> None:
    # stage 1: 16 rows x 2 epochs at batch 8; stage 2: the 4 least-confident rows, 2 epochs at batch 4 = 2 steps per
    # arm (a Trainer checkpoint each epoch: after steps 1 and 2); kill the random arm after its step-1 checkpoint
    data = study(tiny, train={"epochs": 2, "batch_size": 8, "lr": 1e-3},
                 two_stage={"from_run": "sst2-only", "epochs": 2, "batch_size": 4, "lr": 1e-3,
                            "rules": [{"name": "low-conf", "metric": "confidence", "bottom": 4}]})
    out = soi_run(tmp_path, data, "out", kill_at=1, kill_in="random")
    arm = out / "two_stage" / "sst2-only" / "low-conf" / "random" / "seed-0"
    assert (out / "two_stage" / "sst2-only" / "low-conf" / "soi" / "seed-0" / "result.json").is_file()
    assert not (arm / "result.json").exists() and (arm / "trainer" / "checkpoint-1").is_dir()
    soi_run(tmp_path, data, "out", here=True)  # the re-run resumes (in this process)
    soi_run(tmp_path, data, "ref", here=True)
    ref = tmp_path / "ref" / "two_stage" / "sst2-only" / "low-conf" / "random" / "seed-0"
    got, want = (json.loads((d / "result.json").read_text()) for d in (arm, ref))
    assert got["resumed"] is True and got["steps"] == want["steps"] == 2
    assert got["steps_per_task"] == want["steps_per_task"] == {"sentiment": 2}
    assert load_dynamics(arm).steps.tolist() == [1, 2]
    assert_same_dynamics(arm, ref)
    assert got["eval"] == want["eval"]


@needs_accelerate
def test_two_processes_equal_one_process(tmp_path: Path, tiny: str) -> None:
    # eval-pass recording (no dropout) and a negligible lr: every recorded number is the model's at its start, so
    # the two ranks' rows (each rank evaluates the rows at position % 2 == rank) must equal one process's; 18 rows
    # at batch 4 give 5 task batches, an odd number: the sharded sampler pads rank 1 with a repeated batch
    data = study(tiny, recording={"mode": "eval-pass"}, train={"epochs": 2, "batch_size": 4, "lr": 1e-12},
                 datasets={"sst2": {"name": "sst2", "task": "sentiment", "n_train": 18, "n_eval": 16}})
    yml = tmp_path / "study.yaml"
    yml.write_text(yaml.safe_dump(data))
    soi = str(Path(sys.executable).parent / "soi")
    run_process([ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519", soi, "run",
                 str(yml), "--out", str(tmp_path / "ddp"), "--quiet"], tmp_path / "ddp.log", timeout=240)
    soi_run(tmp_path, data, "one", here=True)
    ddp, one = (tmp_path / d / "runs" / "sst2-only" / "seed-0" for d in ("ddp", "one"))
    assert json.loads((ddp / "run.json").read_text())["extra"]["world_size"] == 2
    parts = sorted(p.name for p in (ddp / "dynamics").glob("ckpt-*.parquet"))
    assert parts == [f"ckpt-{c:06d}.rank-{r:04d}.parquet" for c in range(2) for r in range(2)]
    for c in range(2):
        idx = [i for r in range(2) for i in pq.read_table(ddp / "dynamics" / parts[2 * c + r])["idx"].to_pylist()]
        assert sorted(idx) == list(range(18))  # every example once per checkpoint: no duplicate, none missing
    a, b = load_dynamics(ddp), load_dynamics(one)
    assert a.n_examples == b.n_examples == 18 and a.n_checkpoints == b.n_checkpoints == 2
    assert np.array_equal(a.pred, b.pred)
    for col in ("p_gold", "margin", "loss"):
        np.testing.assert_allclose(getattr(a, col), getattr(b, col), rtol=1e-4, atol=1e-5, err_msg=col)
    got, want = (json.loads((d / "result.json").read_text()) for d in (ddp, one))
    assert got["eval"]["sst2"]["accuracy"] == want["eval"]["sst2"]["accuracy"]
    assert got["steps"] == 6 and want["steps"] == 10  # 5 batches per epoch: 3 per rank (one padded), 5 on one
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert list(summary["runs"]) == ["sst2-only"]


def test_steps_per_task_counts_the_samplers_batches() -> None:
    from soi.train.hf import TaskBatchSampler

    sampler = TaskBatchSampler({"a": 10, "b": 4}, 4, seed=1)  # 3 + 1 batches per epoch
    assert sampler.steps_per_task(0) == {"a": 0, "b": 0}
    assert sampler.steps_per_task(4) == {"a": 3, "b": 1} and sampler.steps_per_task(8) == {"a": 6, "b": 2}
    order = [t for e in range(2) for t, _ in sampler.schedule(e)]
    for steps in range(9):
        assert sampler.steps_per_task(steps) == {t: order[:steps].count(t) for t in "ab"}


def test_a_two_stage_study_on_several_processes_is_refused_before_anything_is_written(
        tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from soi.config import StudyConfig
    from soi.errors import SoiError
    from soi.study import runner

    data = study(tiny, two_stage={"from_run": "sst2-only", "rules": [{"name": "low", "metric": "confidence",
                                                                     "bottom": 4}]})
    monkeypatch.setattr(runner, "start_distributed", lambda: None)
    monkeypatch.setattr(runner, "world_size", lambda: 2)  # as under accelerate launch --num_processes 2
    with pytest.raises(SoiError, match="two_stage studies run in one process"):
        runner.run_study(StudyConfig.from_dict(data), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
