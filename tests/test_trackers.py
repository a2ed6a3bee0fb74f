"""Per-checkpoint SOI metrics for experiment trackers: hand-computed values, and real TensorBoard event files
written offline (SoiTrainer with report_to=["tensorboard"], and soi run with train.report_to) read back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from soi.record.trackers import checkpoint_metrics  # noqa: E402
from soi.store import RunMeta, RunWriter, examples_table, load_dynamics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _hand_run(path: Path) -> Path:
    """4 examples, 3 checkpoints, two languages; correctness (rows = examples, columns = checkpoints):
    e0 1 1 1 (always_correct), e1 0 1 0 (forgettable_lost, 1 event), e2 1 0 1 (forgettable_recovered, 1 event),
    e3 0 0 0 (never_learned)."""
    correct = np.array([[1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]], bool)
    gold = np.array([0, 1, 0, 1])
    w = RunWriter(path, RunMeta(tasks={"t": ["a", "b"]}))
    w.write_examples(examples_table(["e0", "e1", "e2", "e3"], gold, task="t", language=["en", "en", "fa", "fa"]))
    for c in range(3):
        pred = np.where(correct[:, c], gold, 1 - gold)
        logits = np.eye(2)[pred] * 2.0
        w.write_logits(checkpoint=c, step=10 * (c + 1), idx=np.arange(4), logits=logits, gold=gold)
    return path


def test_checkpoint_metrics_hand_computed(tmp_path: Path) -> None:
    m = checkpoint_metrics(_hand_run(tmp_path / "run"))
    assert m["soi/checkpoint"] == 2
    assert m["soi/all/accuracy"] == 0.5 and m["soi/language=en/accuracy"] == 0.5
    assert m["soi/language=fa/accuracy"] == 0.5
    assert m["soi/all/forgetting_events"] == 2 and m["soi/all/forgotten"] == 2
    assert m["soi/language=en/forgetting_events"] == 1 and m["soi/language=fa/forgotten"] == 1
    assert m["soi/all/share/always_correct"] == 0.25 and m["soi/all/share/forgettable_lost"] == 0.25
    assert m["soi/all/share/forgettable_recovered"] == 0.25 and m["soi/all/share/never_learned"] == 0.25
    assert m["soi/language=en/share/always_correct"] == 0.5 and m["soi/language=en/share/forgettable_lost"] == 0.5
    assert m["soi/language=fa/share/never_learned"] == 0.5 and m["soi/task=t/accuracy"] == 0.5
    assert all(isinstance(v, float) for v in m.values())


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {logdir}"
    out: dict[str, list[tuple[int, float]]] = {}
    for f in files:
        acc = event_accumulator.EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_soi_trainer_reports_per_checkpoint_metrics_to_tensorboard(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    import hf_common
    from soi.record import SoiRecording, SoiTrainer

    if not (hf_common.data_dir() / "sst2" / "info.json").is_file():
        pytest.skip("shared data missing")
    train = hf_common.sst2_dataset(24)
    logdir = tmp_path / "out"  # TensorBoard's default: <output_dir>/runs/<date>_<host>
    args = TrainingArguments(str(logdir), num_train_epochs=2, per_device_train_batch_size=8,
                             learning_rate=1e-3, save_strategy="no", report_to=["tensorboard"],
                             logging_strategy="no", seed=0, use_cpu=True)
    run = tmp_path / "run"
    trainer = SoiTrainer(model=hf_common.tiny_bert(), args=args, train_dataset=train,
                         processing_class=hf_common.tokenizer(), soi=SoiRecording(run, task="sst2"))
    trainer.train()
    # transformers' TensorBoard callback files Trainer.log values under train/
    scalars = {k.removeprefix("train/"): v for k, v in _scalars(logdir).items()}
    acc = scalars["soi/all/accuracy"]
    assert [s for s, _ in acc] == [3, 6]  # one point per epoch, at the checkpoint's global step
    correct = load_dynamics(run).correct
    assert [v for _, v in acc] == pytest.approx(correct.mean(axis=0).tolist())
    final = checkpoint_metrics(run)
    for tag in ("soi/all/share/always_correct", "soi/all/forgetting_events", "soi/language=en/accuracy",
                "soi/task=sst2/share/never_learned"):
        assert scalars[tag][-1][1] == pytest.approx(final[tag])
    assert scalars["soi/all/forgetting_events"][0][1] == 0  # one checkpoint: no event yet
    assert trainer.state.log_history[-2]["soi/checkpoint"] == 1  # Trainer.log also kept them in the history


def test_no_report_to_logs_nothing(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    import hf_common
    from soi.record import SoiRecording, SoiTrainer

    if not (hf_common.data_dir() / "sst2" / "info.json").is_file():
        pytest.skip("shared data missing")
    args = TrainingArguments(str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=8,
                             save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True)
    trainer = SoiTrainer(model=hf_common.tiny_bert(), args=args, train_dataset=hf_common.sst2_dataset(16),
                         processing_class=hf_common.tokenizer(), soi=SoiRecording(tmp_path / "run", task="sst2"))
    trainer.train()
    assert not any("soi/checkpoint" in h for h in trainer.state.log_history)


def test_soi_run_reports_through_accelerate_trackers(tmp_path: Path) -> None:
    from hf_common import tiny_encoder
    from soi.config import StudyConfig
    from soi.study import run_study

    files = tmp_path / "data"
    files.mkdir()
    for split, n in (("train", 16), ("test", 8)):
        (files / f"{split}.csv").write_text("text,label\n" + "".join(f"words {split} {i} {'ab'[i % 2]},"
                                                                     f"{'ab'[i % 2]}\n" for i in range(n)))
    (files / "toy.yaml").write_text("name: toy\nfiles: {train: train.csv, test: test.csv}\nlanguage: en\n")
    study = {"name": "trk", "model": tiny_encoder(tmp_path / "tiny"), "seeds": [0], "max_length": 16,
             "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "report_to": ["tensorboard"]},
             "datasets": {"toy": {"spec": str(files / "toy.yaml")}},
             "runs": [{"name": "toy-only", "setting": "single", "train": ["toy"]}]}
    out = tmp_path / "out"
    run_study(StudyConfig.from_dict(study), out, progress=False)
    run = out / "runs" / "toy-only" / "seed-0"
    scalars = _scalars(run / "trackers")
    correct = load_dynamics(run).correct
    acc = scalars["soi/all/accuracy"]
    assert [s for s, _ in acc] == [2, 4, 6]  # 16 examples / batch 8 = 2 steps per epoch
    assert [v for _, v in acc] == pytest.approx(correct.mean(axis=0).tolist())
    assert [v for _, v in scalars["soi/checkpoint"]] == [0, 1, 2]
    final = checkpoint_metrics(run)
    assert scalars["soi/all/share/always_correct"][-1][1] == pytest.approx(final["soi/all/share/always_correct"])
    events = (correct[:, :-1] & ~correct[:, 1:]).sum()
    assert scalars["soi/all/forgetting_events"][-1][1] == events
    # report_to does not change what is trained: a finished run is reused when only report_to changes
    again = run_study(StudyConfig.from_dict(study | {"train": study["train"] | {"report_to": []}}), out,
                      progress=False)
    assert again["runs"]["toy-only"]["n_train"] == 16
