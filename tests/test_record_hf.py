"""SoiTrainer / SoiRecording (soi.record.hf): recording dynamics while a Hugging Face Trainer fine-tunes.

Tiny random BERTs (MiniLM's tokenizer) on SST-2 rows from $SOI_DATA_DIR, plus one run with the real MiniLM. The
resume and DDP tests train in subprocesses (``tests/hf_common.py``) and compare with in-process reference runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow.parquet as pq
import torch

from soi.errors import SoiError
from soi.store import load_dynamics, read_examples

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hf_common  # noqa: E402
from hf_common import LABELS, make_trainer, run_process, sst2_dataset, sst2_rows  # noqa: E402
from soi.record import SoiRecording, SoiTrainer  # noqa: E402

COLUMNS = ("pred", "p_gold", "margin", "loss")


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (tests/conftest.py)


def _meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def _rows(logits: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """pred, p_gold, margin, loss of logits (n, C), in float64."""
    z = logits.astype(np.float64)
    r = np.arange(z.shape[0])
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    other = z.copy()
    other[r, gold] = -np.inf
    return {"pred": z.argmax(1), "p_gold": np.exp(logp[r, gold]), "margin": z[r, gold] - other.max(1),
            "loss": -logp[r, gold]}


def _spy(trainer: SoiTrainer) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Capture (idx, logits, labels) of every training forward pass (idx as the Trainer hands it over)."""
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending: list[np.ndarray] = []
    compute_loss = trainer.compute_loss

    def spy_loss(model, inputs, *args, **kwargs):
        pending.append(inputs["idx"].numpy().copy())
        return compute_loss(model, inputs, *args, **kwargs)

    def hook(module, args, kwargs, out):
        if module.training:
            seen.append((pending.pop(), out.logits.detach().numpy().copy(), kwargs["labels"].numpy().copy()))

    trainer.compute_loss = spy_loss
    trainer.model.register_forward_hook(hook, with_kwargs=True)
    return seen


def _eval_forward(model: Any, dataset: Any, rows: np.ndarray) -> np.ndarray:
    """Logits of train ``rows`` from an eval-mode forward of each example alone (no padding)."""
    model.eval()
    out = []
    with torch.no_grad():
        for r in rows.tolist():
            item = dataset[r]
            ids = torch.tensor([item["input_ids"]])
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy())
    return np.stack(out)


def _parts(run_dir: Path, folder: str = "dynamics") -> dict[str, Any]:
    return {p.name: pq.read_table(p) for p in sorted((run_dir / folder).glob("ckpt-*.parquet"))}


# ---------------------------------------------------------------- 1. train-pass records what the model produced
def test_train_pass_on_datasets_records_the_models_outputs(tmp_path):
    n, bs = 40, 8
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, batch_size=bs, epochs=2)
    assert trainer.args.remove_unused_columns  # idx must survive it (text/id/source/language are removed)
    seen = _spy(trainer)
    trainer.train()

    dyn = load_dynamics(tmp_path / "run")
    assert dyn.p_gold.shape == (n, 2) and dyn.steps.tolist() == [5, 10]
    for name, part in _parts(tmp_path / "run").items():  # every example exactly once per checkpoint
        assert part["idx"].to_pylist() == list(range(n)), name
    rows = sst2_rows(n)
    ex = read_examples(tmp_path / "run")
    assert ex["example_id"].to_pylist() == [r["id"] for r in rows]
    assert ex["text"].to_pylist() == [r["text"] for r in rows]
    assert ex["gold"].to_pylist() == [r["label"] for r in rows]
    assert set(ex["language"].to_pylist()) == {"en"} and set(ex["source"].to_pylist()) == {"sst2"}
    meta = _meta(tmp_path / "run")
    assert meta["recording_mode"] == "train-pass" and meta["checkpoint_unit"] == "epoch"
    assert meta["tasks"] == {"sst2": LABELS} and meta["extra"]["filled"] == [0, 0]

    # the recorded numbers are those of the training forward passes, batch by batch
    assert len(seen) == 10
    for ckpt in range(2):
        batches = seen[ckpt * 5:(ckpt + 1) * 5]
        idx = np.concatenate([b[0] for b in batches])
        assert sorted(idx.tolist()) == list(range(n))
        want = _rows(np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches]))
        for col in COLUMNS:
            np.testing.assert_allclose(getattr(dyn, col)[idx, ckpt], want[col], rtol=1e-5, atol=1e-6, err_msg=col)


def test_train_pass_on_torch_dataset_mean_loss_equals_trainer_loss(tmp_path):
    n = 40
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, lr=0.0, epochs=2, torch_dataset=True)
    out = trainer.train()
    dyn = load_dynamics(tmp_path / "run")
    assert dyn.p_gold.shape == (n, 2)
    assert dyn.example_ids.tolist() == [r["id"] for r in sst2_rows(n)]  # the items' "id" key
    # lr=0, full batches: Trainer's train_loss is the mean over all example-epochs of the same forward passes
    assert float(dyn.loss.mean()) == pytest.approx(out.training_loss, abs=1e-5)
    # dropout is on in train mode: the two epochs' numbers differ even though the weights do not
    assert not np.array_equal(dyn.loss[:, 0], dyn.loss[:, 1])


def test_eval_dataset_with_its_own_idx_column_is_evaluated(tmp_path):
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=24, epochs=1)
    trainer.train()
    ev = sst2_dataset(16).add_column("idx", list(range(100, 116)))  # GLUE-style idx: kept but not fed to the model
    metrics = trainer.evaluate(ev)
    assert np.isfinite(metrics["eval_loss"])


# ---------------------------------------------------------------- 2. step checkpoints, eval-pass, probes, both
def test_every_steps_checkpoints_and_fill_counts(tmp_path):
    n = 40
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, epochs=2, every_steps=3)
    seen = _spy(trainer)
    trainer.train()
    dyn = load_dynamics(tmp_path / "run")
    assert dyn.steps.tolist() == [3, 6, 9, 10]  # every 3 optimizer steps, plus the last step
    meta = _meta(tmp_path / "run")
    assert meta["checkpoint_unit"] == "step" and meta["extra"]["every_steps"] == 3
    # rows not trained on since the previous checkpoint are filled by an eval pass
    want = [n - np.unique(np.concatenate([b[0] for b in seen[a:b]])).size for a, b in ((0, 3), (3, 6), (6, 9), (9, 10))]
    assert meta["extra"]["filled"] == want and want[0] == 16 and want[-1] == 32


def _probe_ids(run_dir: Path) -> list[str]:
    return read_examples(run_dir)["example_id"].to_pylist()


@pytest.mark.parametrize("probe", [10, 0.25])
def test_eval_pass_on_a_probe_subset(tmp_path, probe):
    n = 40
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, epochs=2, mode="eval-pass", probe=probe,
                           probe_seed=3)
    trainer.train()
    dyn = load_dynamics(tmp_path / "run")
    assert dyn.p_gold.shape == (10, 2) and dyn.steps.tolist() == [5, 10]
    meta = _meta(tmp_path / "run")
    assert meta["recording_mode"] == "eval-pass"
    assert meta["extra"]["probe"] == {"requested": probe, "size": 10, "seed": 3}
    ids = _probe_ids(tmp_path / "run")
    rows = np.asarray([int(i.rsplit("-", 1)[1]) for i in ids])  # sst2-train-<row>
    assert np.all(np.diff(rows) > 0) and rows.max() < n
    # the last checkpoint is an eval-mode pass of the final weights (length-sorted, padded batches)
    want = _rows(_eval_forward(trainer.model, trainer.train_dataset, rows), dyn.gold.astype(np.int64))
    for col in COLUMNS:
        np.testing.assert_allclose(getattr(dyn, col)[:, -1], want[col], rtol=1e-5, atol=1e-5, err_msg=col)



def test_probe_depends_on_probe_seed_only(tmp_path):
    def probe(name: str, **kwargs: Any) -> list[str]:
        kw = {"seed": 0, "probe": 10, "probe_seed": 3} | kwargs
        make_trainer(tmp_path / name, tmp_path / f"{name}-out", n=40, mode="eval-pass",
                     trainer_kwargs={"max_steps": 1}, **kw).train()
        return _probe_ids(tmp_path / name)

    ids = probe("a")
    assert len(ids) == 10
    assert probe("b", seed=1) == ids  # another training seed: the same probe
    assert probe("c", probe=0.25) == ids  # 25% of 40
    assert probe("d", probe_seed=4) != ids


def test_both_modes_write_dynamics_and_dynamics_eval_pass(tmp_path):
    from soi.analysis import analyze_run

    n = 32
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, epochs=2, mode="both")
    trainer.train()
    train_pass = load_dynamics(tmp_path / "run")
    eval_pass = load_dynamics(tmp_path / "run", mode="eval-pass")
    assert train_pass.p_gold.shape == eval_pass.p_gold.shape == (n, 2)
    assert train_pass.steps.tolist() == eval_pass.steps.tolist() == [4, 8]
    meta = _meta(tmp_path / "run")
    assert meta["recording_mode"] == "train-pass"
    assert meta["extra"]["modes"] == {"dynamics": "train-pass", "dynamics-eval-pass": "eval-pass"}
    # dropout: train-pass and eval-pass numbers differ; the eval pass of the last checkpoint is the final model
    assert not np.allclose(train_pass.loss, eval_pass.loss)
    want = _rows(_eval_forward(trainer.model, trainer.train_dataset, np.arange(n)), eval_pass.gold.astype(np.int64))
    np.testing.assert_allclose(eval_pass.p_gold[:, -1], want["p_gold"], rtol=1e-5, atol=1e-5)
    assert analyze_run(tmp_path / "run").summary["n_checkpoints"] == 2
    assert analyze_run(tmp_path / "run", mode="eval-pass").summary["n_examples"] == n


# ---------------------------------------------------------------- 3. drop_last gaps are filled
def test_drop_last_gaps_are_filled_and_counted(tmp_path):
    n, bs = 44, 8  # 5 full batches per epoch, 4 examples dropped each epoch
    trainer = make_trainer(tmp_path / "run", tmp_path / "out", n=n, batch_size=bs, epochs=1,
                           trainer_kwargs={"dataloader_drop_last": True})
    seen = _spy(trainer)
    trainer.train()
    dyn = load_dynamics(tmp_path / "run")  # validates: no example missing
    assert dyn.p_gold.shape == (n, 1)
    assert _meta(tmp_path / "run")["extra"]["filled"] == [4]
    trained = np.concatenate([b[0] for b in seen])
    missing = np.setdiff1d(np.arange(n), trained)
    assert missing.size == 4
    # the filled rows come from an eval-mode pass at the checkpoint (here: the final weights)
    want = _rows(_eval_forward(trainer.model, trainer.train_dataset, missing), dyn.gold[missing].astype(np.int64))
    np.testing.assert_allclose(dyn.p_gold[missing, 0], want["p_gold"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 4. kill -9 and resume
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    # 44 rows, batch 8, drop_last: 5 steps per epoch (4 rows filled per epoch), 3 epochs = 15 steps, saves every 2
    opts = {"n": 44, "epochs": 3, "mode": "both", "seed": 5,
            "trainer_kwargs": {"dataloader_drop_last": True, "save_strategy": "steps", "save_steps": 2}}
    script = str(HERE / "hf_common.py")
    run, out = str(tmp_path / "run"), str(tmp_path / "out")

    def launch(**extra: Any) -> None:
        run_process([sys.executable, script, json.dumps({"run_dir": run, "out_dir": out, **opts, **extra})],
                    timeout=120, log=tmp_path / "stderr.txt", expect_kill="kill_at" in extra)

    launch(kill_at=4)  # killed mid-epoch 0, right after the checkpoint of step 4 was saved
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-")) == \
        ["checkpoint-2", "checkpoint-4"]
    launch(kill_at=10, resume=True)  # resumes at step 4, killed after saving step 10 (an epoch end)
    assert (tmp_path / "out" / "checkpoint-10").is_dir()
    launch(resume=True)  # resumes at step 10 and finishes

    make_trainer(tmp_path / "ref", tmp_path / "ref-out", **opts).train()  # one thread, like the subprocesses
    for mode in (None, "eval-pass"):
        got, want = load_dynamics(run, mode=mode), load_dynamics(tmp_path / "ref", mode=mode)
        assert got.steps.tolist() == want.steps.tolist() == [5, 10, 15]
        for col in COLUMNS:
            assert np.array_equal(getattr(got, col), getattr(want, col)), (mode, col)
    assert _meta(tmp_path / "run")["extra"]["filled"] == _meta(tmp_path / "ref")["extra"]["filled"] == [4, 4, 4]
    for folder in ("dynamics", "dynamics-eval-pass"):
        assert sorted(_parts(tmp_path / "run", folder)) == sorted(_parts(tmp_path / "ref", folder))


# ---------------------------------------------------------------- 5. determinism
def test_same_seed_gives_identical_parquet_files(tmp_path):
    for name in ("a", "b", "c"):
        make_trainer(tmp_path / name, tmp_path / f"{name}-out", n=32, epochs=2, mode="both",
                     seed=0 if name != "c" else 1).train()
    for folder in ("dynamics", "dynamics-eval-pass"):
        a, b, c = (_parts(tmp_path / x, folder) for x in "abc")
        assert sorted(a) == sorted(b) and len(a) == 2
        for name in a:
            assert a[name].equals(b[name]), (folder, name)
        assert not all(a[name].equals(c[name]) for name in a)  # another seed: other numbers
    assert pq.read_table(tmp_path / "a" / "examples.parquet").equals(pq.read_table(tmp_path / "b" / "examples.parquet"))


# ---------------------------------------------------------------- 6. DDP (torchrun, gloo on CPU)
def test_ddp_two_ranks_equal_single_process(tmp_path):
    # 45 rows, 2 ranks x batch 4: the distributed sampler pads with duplicates; lr=0 and no dropout, so the
    # numbers depend on the inputs only and must equal a single-process run
    opts = {"n": 45, "epochs": 2, "lr": 0.0, "dropout": 0.0, "batch_size": 4, "mode": "both"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "hf_common.py"),
           json.dumps({"run_dir": str(tmp_path / "ddp"), "out_dir": str(tmp_path / "ddp-out"), **opts})]
    run_process(cmd, timeout=240, log=tmp_path / "stderr.txt")
    make_trainer(tmp_path / "single", tmp_path / "single-out", **opts).train()

    assert _meta(tmp_path / "ddp")["extra"]["world_size"] == 2
    for folder, mode in (("dynamics", None), ("dynamics-eval-pass", "eval-pass")):
        parts = _parts(tmp_path / "ddp", folder)
        assert sorted(parts) == [f"ckpt-{c:06d}.rank-{r:04d}.parquet" for c in range(2) for r in range(2)]
        for c in range(2):
            idx = [parts[f"ckpt-{c:06d}.rank-{r:04d}.parquet"]["idx"].to_pylist() for r in range(2)]
            assert sorted(idx[0] + idx[1]) == list(range(45))  # every id exactly once, across ranks
            if mode == "eval-pass":  # each rank evaluates its shard
                assert all(i % 2 == r for r in range(2) for i in idx[r])
        ddp, single = load_dynamics(tmp_path / "ddp", mode=mode), load_dynamics(tmp_path / "single", mode=mode)
        assert ddp.steps.tolist() == [6, 12] and single.steps.tolist() == [12, 24]
        assert np.array_equal(ddp.pred, single.pred)
        for col in ("p_gold", "margin", "loss"):
            np.testing.assert_allclose(getattr(ddp, col), getattr(single, col), atol=1e-5, err_msg=col)


# ---------------------------------------------------------------- 7. errors
@pytest.mark.parametrize(("field", "value"), [
    ("mode", "dev-pass"), ("every_steps", 0), ("every_steps", 2.5), ("every_steps", True), ("probe", 0),
    ("probe", 1.5), ("probe", -3), ("probe_seed", "x"), ("eval_batch_size", 0), ("keep_logits", "yes"),
    ("task", ""), ("label_names", ["a"]), ("label_names", ["a", "a"]), ("label_names", "ab"), ("id_column", 3),
    ("text_columns", ("a", "b", "c")), ("flush_every", 0), ("run_dir", ""),
])
def test_bad_recording_values_name_the_field(field, value):
    kwargs = {"run_dir": "runs/x", field: value}
    if field == "probe":
        kwargs["mode"] = "eval-pass"
    with pytest.raises(SoiError, match=rf"SoiRecording\.{field}"):
        SoiRecording(**kwargs)


def test_probe_needs_eval_pass_mode():
    with pytest.raises(SoiError, match=r"SoiRecording\.probe needs mode='eval-pass'"):
        SoiRecording("runs/x", mode="both", probe=10)


def test_dataset_without_labels_is_a_clear_error(tmp_path):
    ds = sst2_dataset(8).remove_columns("label")
    with pytest.raises(SoiError, match="train_dataset has no label column"):
        SoiTrainer(model=hf_common.tiny_bert(), args=hf_common.TrainingArguments(str(tmp_path), report_to=[]),
                   train_dataset=ds, processing_class=hf_common.tokenizer(), soi=SoiRecording(tmp_path / "run"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda ds: ds.add_column("idx", list(range(1, 9))), "column 'idx' must be the row position"),
    (lambda ds: ds.map(lambda r: {"label": r["label"] + 2}), r"label [23] at row 0 is out of range for 2 labels"),
    (lambda ds: ds.map(lambda r: {"id": "same"}), "example ids .* must be unique"),
])
def test_bad_datasets_are_clear_errors(tmp_path, change, message):
    ds = change(sst2_dataset(8))
    with pytest.raises(SoiError, match=message):
        SoiTrainer(model=hf_common.tiny_bert(), args=hf_common.TrainingArguments(str(tmp_path), report_to=[]),
                   train_dataset=ds, processing_class=hf_common.tokenizer(), soi=SoiRecording(tmp_path / "run"))


def test_soi_argument_must_be_a_recording(tmp_path):
    with pytest.raises(SoiError, match="must be a SoiRecording"):
        SoiTrainer(model=hf_common.tiny_bert(), args=hf_common.TrainingArguments(str(tmp_path), report_to=[]),
                   train_dataset=sst2_dataset(8), soi={"run_dir": "x"})


# ---------------------------------------------------------------- the real MiniLM
def test_minilm_on_sst2_is_analysable_with_sane_accuracy(tmp_path):
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from soi.analysis import analyze_run
    from soi.model import resolve_model

    n = 64
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model("minilm-l6"), num_labels=2, id2label=dict(enumerate(LABELS)),
        label2id={k: i for i, k in enumerate(LABELS)})
    args = TrainingArguments(str(tmp_path / "out"), learning_rate=1e-4, num_train_epochs=2,
                             per_device_train_batch_size=16, per_device_eval_batch_size=32, seed=0,
                             save_strategy="no", logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = SoiTrainer(model=model, args=args, train_dataset=sst2_dataset(n, max_length=64),
                         processing_class=hf_common.tokenizer(), soi=SoiRecording(tmp_path / "run", mode="both",
                                                                                  task="sst2", setting="single"))
    out = trainer.train()

    res = analyze_run(tmp_path / "run")
    assert res.summary["n_examples"] == n and res.summary["model"].endswith("model")
    acc = res.summary["accuracy_per_checkpoint"]
    assert len(acc) == 2 and all(0.25 <= a <= 1.0 for a in acc)
    dyn = load_dynamics(tmp_path / "run")
    assert float(dyn.loss.mean()) == pytest.approx(out.training_loss, abs=1e-4)  # same forward passes
    # the eval pass of the last checkpoint agrees with Trainer.predict on the final model
    eval_res = analyze_run(tmp_path / "run", mode="eval-pass")
    pred = trainer.predict(trainer.train_dataset)
    assert eval_res.summary["accuracy_per_checkpoint"][-1] == pytest.approx(
        float((pred.predictions.argmax(1) == pred.label_ids).mean()))
    ev = load_dynamics(tmp_path / "run", mode="eval-pass")
    p = torch.softmax(torch.as_tensor(pred.predictions, dtype=torch.float64), 1).numpy()
    np.testing.assert_allclose(ev.p_gold[:, -1], p[np.arange(n), pred.label_ids], atol=1e-4)


def test_readme_recording_example_runs_on_a_small_subset(tmp_path, monkeypatch):
    import re

    from soi.analysis import analyze_run

    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "SoiTrainer(" in b)
    assert len(block.strip().splitlines()) <= 20
    small = block.replace("select(range(1000))", "select(range(24))").replace("num_train_epochs=3",
                                                                              "num_train_epochs=2")
    assert small.count("range(24)") == 1 and small.count("num_train_epochs=2") == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOI_DATA_DIR", str(hf_common.data_dir()))
    exec(compile(small, "README.md", "exec"), {})
    res = analyze_run(tmp_path / "runs" / "sst2-minilm")
    assert res.summary["n_examples"] == 24 and res.summary["n_checkpoints"] == 2
    assert read_examples(tmp_path / "runs" / "sst2-minilm")["example_id"].to_pylist()[:2] == ["sst2-train-0",
                                                                                              "sst2-train-1"]
