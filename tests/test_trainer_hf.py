"""soi.train.hf: the multi-head PreTrainedModel, the task-homogeneous batch sampler, classification runs on
SoiTrainer (multi-task recording, step checkpoints, determinism, parity with the plain loop, resume after kill -9).

Tiny random BERT encoders with MiniLM's tokenizer on small synthetic splits (as in tests/test_train.py). Also run as
a script (``python tests/test_trainer_hf.py '<json>'``) by the resume test, so that the killed subprocess trains
exactly what the in-process reference run trains.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow.parquet as pq
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hf_common import KillAfterSave, tokenizer  # noqa: E402
from plain_loop import train  # noqa: E402
from soi.errors import SoiError  # noqa: E402
from soi.record import SoiRecording  # noqa: E402
from soi.store import load_dynamics  # noqa: E402
from soi.train import MultiHeadClassifier, epoch_schedule, run_examples  # noqa: E402
from soi.train.hf import (  # noqa: E402
    MultiHeadModel,
    TaskBatchSampler,
    TaskCollator,
    task_dataset,
    train_run,
)
from test_train import pairs, sentiment  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (tests/conftest.py)


def tiny_encoder(seed: int = 0, dropout: float = 0.1) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    return BertModel(config, add_pooling_layer=False)


def tiny_model(heads: dict[str, int], seed: int = 0, dropout: float = 0.1) -> MultiHeadModel:
    enc = tiny_encoder(seed, dropout)
    torch.manual_seed(seed + 1)
    return MultiHeadModel.from_encoder(enc, heads, dropout=dropout)


def run_tasks() -> dict[str, list[Any]]:
    """Multi-source sentiment (two datasets, one 2-label head) + a 3-label pair task."""
    return {"senti": [sentiment("src_a", 13, 0), sentiment("src_b", 9, 1)], "nli": [pairs("pairs", 11, 2)]}


def run(tmp: Path, name: str = "run", *, seed: int = 0, dropout: float = 0.1, **kw: Any) -> Any:
    kw = {"epochs": 2, "batch_size": 4, "lr": 1e-3, **kw}
    model = tiny_model({"senti": 2, "nli": 3}, seed, dropout)
    return train_run(model, tokenizer(), run_tasks(), run_dir=tmp / name, output_dir=tmp / f"{name}-out",
                     seed=seed, **kw)


def softmax_rows(logits: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[np.arange(len(gold)), gold], z.argmax(1)


# ---------------------------------------------------------------------------------------------- sampler
sizes_st = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 25), min_size=1, max_size=4) \
    .filter(lambda d: sum(d.values()) > 0)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, bs=st.integers(1, 7), sampling=st.sampled_from(["proportional", "temperature", "uniform"]),
       temperature=st.floats(0.5, 4.0), seed=st.integers(0, 2**16), epochs=st.integers(1, 4))
def test_sampler_covers_each_row_once_per_epoch_in_one_task_blocks(sizes, bs, sampling, temperature, seed, epochs):
    sampler = TaskBatchSampler(sizes, bs, seed=seed, sampling=sampling, temperature=temperature)
    starts = np.cumsum([0, *sizes.values()])
    block = {t: (int(starts[k]), int(starts[k + 1])) for k, t in enumerate(sizes)}
    rng = np.random.default_rng(seed)  # the plain loop's generator, epoch after epoch
    reference = [epoch_schedule(sizes, bs, rng, sampling=sampling, temperature=temperature) for _ in range(epochs)]
    for e in reversed(range(epochs)):  # any order of epochs: the cache must not leak state
        sampler.set_epoch(e)
        batches = list(sampler)
        assert len(batches) == len(sampler) == sum(math.ceil(n / bs) for n in sizes.values())
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(sum(sizes.values())))
        for (task, pos), got in zip(reference[e], batches, strict=True):
            lo, hi = block[task]
            assert 1 <= len(got) <= bs and all(lo <= i < hi for i in got)
            assert got == (pos + lo).tolist()


@settings(max_examples=30, deadline=None)
@given(sizes=sizes_st, bs=st.integers(1, 5), procs=st.integers(2, 3), seed=st.integers(0, 1000))
def test_sampler_survives_accelerate_sharding(sizes, bs, procs, seed):
    """accelerate's prepare_data_loader shards it batch by batch: every rank's batches stay in one task's block,
    ranks get equally many batches, and together they cover every row (padding repeats whole batches)."""
    from accelerate.data_loader import prepare_data_loader

    starts = np.cumsum([0, *sizes.values()])
    task_of = np.repeat(np.arange(len(sizes)), list(sizes.values()))
    data = list(range(int(starts[-1])))
    seen, counts = [], []
    for rank in range(procs):
        sampler = TaskBatchSampler(sizes, bs, seed=seed, sampling="temperature")
        loader = prepare_data_loader(torch.utils.data.DataLoader(data, batch_sampler=sampler),
                                     num_processes=procs, process_index=rank, put_on_device=False)
        loader.batch_sampler.batch_sampler.set_epoch(1)  # what Trainer._run_epoch reaches through the shard
        batches = [b.tolist() for b in loader]
        counts.append(len(batches))
        for b in batches:
            assert len(set(task_of[b])) == 1 and len(b) <= bs
            seen.extend(b)
    assert len(set(counts)) == 1
    assert set(seen) == set(data)
    sampler = TaskBatchSampler(sizes, bs, seed=seed, sampling="temperature")
    sampler.set_epoch(1)
    assert counts[0] == math.ceil(len(list(sampler)) / procs)


@pytest.mark.parametrize(("kw", "message"), [
    ({"sampling": "random"}, "sampling must be one of"),
    ({"sampling": "temperature", "temperature": 0.0}, "temperature must be > 0"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"sizes": {}}, "at least one task"),
    ({"sizes": {"a": -1}}, "non-negative integers"),
])
def test_sampler_bad_values_are_one_line_errors(kw, message):
    args = {"sizes": {"a": 3}, "batch_size": 2, **kw}
    with pytest.raises(SoiError, match=message) as exc:
        TaskBatchSampler(args.pop("sizes"), args.pop("batch_size"), **args)
    assert "\n" not in str(exc.value)


def test_collator_refuses_mixed_tasks_and_passes_task_as_int():
    collate = TaskCollator(tokenizer())
    rows = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 1, "task_id": 2},
            {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0, "task_id": 2}]
    batch = collate(rows)
    assert batch["task_id"] == 2 and isinstance(batch["task_id"], int)
    assert batch["input_ids"].shape == (2, 3) and batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(SoiError, match="mixes tasks"):
        collate([rows[0], {**rows[1], "task_id": 0}])


# ---------------------------------------------------------------------------------------------- model
def test_forward_returns_loss_and_logits_of_the_batch_task():
    model = tiny_model({"a": 2, "b.x": 3}).eval()
    ids = torch.tensor([[101, 2204, 102, 0], [101, 2919, 2204, 102]])
    mask = (ids != 0).long()
    labels = torch.tensor([2, 0])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, task_id=1)
    assert out.logits.shape == (2, 3)
    z = out.logits.detach().double()
    want = -(z[torch.arange(2), labels] - torch.logsumexp(z, 1)).mean()
    assert float(out.loss) == pytest.approx(float(want), rel=1e-5)
    by_name = model(input_ids=ids, attention_mask=mask, task="b.x").logits
    assert torch.allclose(by_name, out.logits)
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]  # cls pooling
    assert torch.allclose(model.heads["b_x"](hidden), out.logits, atol=1e-6)
    assert model(input_ids=ids, attention_mask=mask, task_id=torch.tensor([0, 0])).logits.shape == (2, 2)
    for bad, message in (({"task_id": torch.tensor([0, 1])}, "mixes tasks"), ({"task_id": 2}, "out of range"),
                         ({"task": "c"}, "no head for task"), ({}, "pass task_id= or task=")):
        with pytest.raises(SoiError, match=message):
            model(input_ids=ids, attention_mask=mask, **bad)


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_model({"senti": 2, "nli": 3}, seed=3).eval()
    model.config.task_labels = {"senti": ["negative", "positive"], "nli": ["entail", "neutral", "contradict"]}
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["heads"] == {"senti": 2, "nli": 3} and config["model_type"] == "soi_multihead"
    back = MultiHeadModel.from_pretrained(tmp_path / "m").eval()
    assert back.tasks == ["senti", "nli"] and back.config.task_labels["nli"][2] == "contradict"
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.tensor([[101, 2204, 2919, 102]])
    for task in ("senti", "nli"):
        assert torch.equal(model(input_ids=ids, task=task).logits, back(input_ids=ids, task=task).logits)


def test_from_encoder_keeps_the_encoder_weights_and_drops_the_pooler():
    enc = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32))  # with a pooler
    model = MultiHeadModel.from_encoder(enc, {"t": 2})
    assert model.encoder.pooler is None
    got = model.encoder.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in enc.state_dict().items() if not k.startswith("pooler."))
    with pytest.raises(SoiError, match="at least 2 labels"):
        MultiHeadModel.from_encoder(enc, {"t": 1})


# ---------------------------------------------------------------------------------------------- runs
def parts(run_dir: Path, folder: str = "dynamics") -> list[Any]:
    return [pq.read_table(p) for p in sorted((run_dir / folder).glob("ckpt-*.parquet"))]


def test_multitask_train_pass_covers_every_example_once_per_checkpoint(tmp_path):
    res = run(tmp_path)
    examples, labels = run_examples(run_tasks())
    n = examples.num_rows
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["tasks"] == labels and meta["checkpoint_unit"] == "epoch" and meta["extra"]["filled"] == [0, 0]
    per_epoch = math.ceil(22 / 4) + math.ceil(11 / 4)
    assert res.steps == 2 * per_epoch and len(res.epoch_loss) == 2
    tables = parts(tmp_path / "run")
    assert len(tables) == 2
    gold = examples["gold"].to_numpy()
    for k, t in enumerate(tables):
        assert sorted(t["idx"].to_pylist()) == list(range(n))
        assert t["step"].to_pylist() == [(k + 1) * per_epoch] * n
        assert np.array_equal(t["gold"].to_numpy(), gold[t["idx"].to_numpy()])
        width = np.where(examples["task"].to_numpy(zero_copy_only=False) == "nli", 3, 2)[t["idx"].to_numpy()]
        assert (t["pred"].to_numpy() < width).all()
    assert not (tmp_path / "run-out").exists()  # Trainer checkpoints removed after a finished run


def test_eval_pass_equals_the_final_models_predictions_per_task(tmp_path):
    """Eval-pass rows of the last checkpoint = an independent eval-mode forward of the trained model, one example
    at a time (no padding), with each task's own head; keep_logits keeps each task's width."""
    res = run(tmp_path, record_mode="eval-pass", keep_logits=True)
    model = res.trainer.model.eval()
    ds = task_dataset(tokenizer(), run_tasks(), 128)
    d = load_dynamics(tmp_path / "run")
    last = parts(tmp_path / "run")[-1]
    idx = last["idx"].to_numpy()
    want = np.zeros(len(idx))
    with torch.no_grad():
        for r, i in enumerate(idx.tolist()):
            row = ds[i]
            z = model(input_ids=torch.tensor([row["input_ids"]]), token_type_ids=torch.tensor([row["token_type_ids"]]),
                      task_id=row["task_id"]).logits.numpy()
            want[r] = softmax_rows(z, np.array([row["labels"]]))[0][0]
            assert len(last["logits"][r].as_py()) == (3 if row["task_id"] == 1 else 2)
    np.testing.assert_allclose(last["p_gold"].to_numpy(), want, atol=2e-5)
    assert d.p_gold.shape == (len(idx), 2)


def test_step_checkpoints_fill_examples_not_trained_on_since_the_last_one(tmp_path):
    res = run(tmp_path, every_steps=3, epochs=1)
    per_epoch = math.ceil(22 / 4) + math.ceil(11 / 4)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    tables = parts(tmp_path / "run")
    assert res.steps == per_epoch == 9 and meta["checkpoint_unit"] == "step" and len(tables) == 3
    n = 33
    for t in tables:
        assert sorted(t["idx"].to_pylist()) == list(range(n))
    # 3 steps of 4 rows (or fewer at a task's end) trained per checkpoint; the rest is filled
    assert all(n - 12 <= f < n for f in meta["extra"]["filled"])


def test_same_seed_gives_identical_dynamics_and_another_seed_does_not(tmp_path):
    run(tmp_path, "a", seed=5)
    run(tmp_path, "b", seed=5)
    run(tmp_path, "c", seed=6)
    for ta, tb, tc in zip(parts(tmp_path / "a"), parts(tmp_path / "b"), parts(tmp_path / "c"), strict=True):
        assert ta.equals(tb)
        assert not np.array_equal(ta["p_gold"].to_numpy(), tc["p_gold"].to_numpy())


def test_parity_with_the_plain_loop_without_dropout(tmp_path):
    """Same weights, seed, batch order, optimiser and schedule, no dropout: the Trainer engine's train-pass dynamics
    equal soi's plain loop's (float tolerance)."""
    from soi.record import DynamicsRecorder
    from soi.store import RunMeta

    tasks = run_tasks()
    examples, labels = run_examples(tasks)
    old = MultiHeadClassifier(tiny_encoder(0, 0.0), {"senti": 2, "nli": 3}, dropout=0.0)
    new = MultiHeadModel.from_encoder(tiny_encoder(0, 0.0), {"senti": 2, "nli": 3}, dropout=0.0)
    for t in ("senti", "nli"):
        new.heads[t].load_state_dict(old.heads[t].state_dict())
    rec = DynamicsRecorder(tmp_path / "old", RunMeta(tasks=labels), examples=examples)
    train(old, tokenizer(), tasks, epochs=2, batch_size=4, lr=1e-3, seed=0, sampling="temperature", recorder=rec,
          device="cpu")
    train_run(new, tokenizer(), tasks, run_dir=tmp_path / "new", output_dir=tmp_path / "out", epochs=2,
              batch_size=4, lr=1e-3, seed=0, sampling="temperature")
    for a, b in zip(parts(tmp_path / "old"), parts(tmp_path / "new"), strict=True):
        assert a["idx"].equals(b["idx"]) and a["pred"].equals(b["pred"])
        np.testing.assert_allclose(a["p_gold"].to_numpy(), b["p_gold"].to_numpy(), atol=1e-4)
        np.testing.assert_allclose(a["loss"].to_numpy(), b["loss"].to_numpy(), atol=1e-3)


def test_bad_input_fails_before_anything_is_written(tmp_path):
    model = tiny_model({"senti": 2})
    with pytest.raises(SoiError, match="do not match the run's tasks"):
        train_run(model, tokenizer(), run_tasks(), run_dir=tmp_path / "r", output_dir=tmp_path / "o")
    with pytest.raises(SoiError, match="max_steps must be a positive integer"):
        train_run(model, tokenizer(), {"senti": [sentiment("s", 5, 0)]}, run_dir=tmp_path / "r",
                  output_dir=tmp_path / "o", max_steps=0)
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()
    examples, labels = run_examples(run_tasks())
    with pytest.raises(SoiError, match="go together"):
        SoiRecording(tmp_path / "r", examples=examples)
    with pytest.raises(SoiError, match=r"missing from SoiRecording\.tasks"):
        SoiRecording(tmp_path / "r", examples=examples, tasks={"senti": labels["senti"]})


def test_recording_examples_must_match_the_dataset_labels(tmp_path):
    from transformers import TrainingArguments

    from soi.train.hf import TaskTrainer

    tasks = {"senti": [sentiment("s", 6, 0)]}
    examples, labels = run_examples(tasks)
    ds = task_dataset(tokenizer(), tasks, 32)
    flipped = ds.map(lambda r: {"labels": 1 - r["labels"]})
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to=[])
    with pytest.raises(SoiError, match=r"does not match SoiRecording\.examples"):
        TaskTrainer(model=tiny_model({"senti": 2}), args=args, train_dataset=flipped,
                    data_collator=TaskCollator(tokenizer()), processing_class=tokenizer(),
                    soi=SoiRecording(tmp_path / "r", examples=examples, tasks=labels),
                    task_sampler=TaskBatchSampler({"senti": 6}, 2))
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- resume


def script(opts: dict[str, Any]) -> None:
    """The resume test's subprocess: ``run`` with ``opts`` (``kill_at``: SIGKILL after that step's save)."""
    torch.set_num_threads(1)
    tmp = Path(opts.pop("tmp"))
    kill = opts.pop("kill_at", None)
    run(tmp, callbacks=[KillAfterSave(kill)] if kill is not None else (), **opts)


@pytest.mark.parametrize("record_mode", ["train-pass"])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, record_mode):
    """kill -9 right after the Trainer checkpoint of step 4 (mid-epoch 0: 9 steps per epoch), then resume."""
    opts = {"tmp": str(tmp_path), "save_steps": 4, "record_mode": record_mode, "name": "run"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve())]
    proc = subprocess.run([*cmd, json.dumps({**opts, "kill_at": 4})], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (tmp_path / "run-out" / "checkpoint-4").is_dir() and not parts(tmp_path / "run")
    proc = subprocess.run([*cmd, json.dumps({**opts, "resume": True})], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run(tmp_path, "ref", record_mode=record_mode)
    got, want = parts(tmp_path / "run"), parts(tmp_path / "ref")
    assert len(got) == len(want) == 2
    for a, b in zip(got, want, strict=True):
        assert a.equals(b)


if __name__ == "__main__":
    script(json.loads(sys.argv[1]))
