"""soi.train: MultiHeadClassifier, the task-sampling train loop (coverage, sampling, determinism, recording), eval.

Tiny random BERT encoders with MiniLM's tokenizer (as in ``hf_common``) on small synthetic splits.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow as pa
import torch
from transformers import BertConfig, BertModel

from soi.data import CLASSIFICATION_SCHEMA, Split
from soi.errors import SoiError
from soi.record import DynamicsRecorder
from soi.store import RunMeta, load_dynamics
from soi.store.reader import read_logits
from soi.train import (
    MultiHeadClassifier,
    epoch_schedule,
    evaluate,
    macro_f1,
    run_examples,
    task_offsets,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import tokenizer
from plain_loop import train  # the plain reference loop (formerly soi.train.train)

POS = ["good", "great", "happy", "fine", "nice", "lovely"]
NEG = ["bad", "awful", "sad", "poor", "ugly", "terrible"]


def make_split(name: str, rows: list[tuple[str, str | None, int]], labels: list[str], language: str = "en") -> Split:
    """A classification Split from ``(text, text_pair, gold)`` rows."""
    cols: dict[str, list[Any]] = {
        "id": [f"{name}-{i}" for i in range(len(rows))], "text": [r[0] for r in rows],
        "text_pair": [r[1] for r in rows], "label": [labels[r[2]] for r in rows], "gold": [r[2] for r in rows],
        "language": [language] * len(rows), "source": [name] * len(rows), "parallel_id": [None] * len(rows),
        "orig_id": [None] * len(rows),
    }
    table = pa.Table.from_pydict(cols, schema=CLASSIFICATION_SCHEMA)
    return Split(table=table, name=name, split="train", task="synthetic", type="classification",
                 labels=tuple(labels), languages=(language,), path=None, total_rows=len(rows))


def sentiment(name: str, n: int, seed: int) -> Split:
    """Learnable: label 1 iff the words come from POS."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        y = i % 2
        words = rng.choice(POS if y else NEG, size=int(rng.integers(2, 6)))
        rows.append((" ".join(words), None, y))
    return make_split(name, rows, ["negative", "positive"])


def pairs(name: str, n: int, seed: int) -> Split:
    """3-way sentence pairs (random labels; exercises text_pair)."""
    rng = np.random.default_rng(seed)
    rows = [(" ".join(rng.choice(POS + NEG, 3)), " ".join(rng.choice(POS + NEG, 2)), int(rng.integers(3)))
            for _ in range(n)]
    return make_split(name, rows, ["entail", "neutral", "contradict"])


def tiny_encoder(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config, add_pooling_layer=False)


def tiny_model(heads: dict[str, int], seed: int = 0, **kw: Any) -> MultiHeadClassifier:
    enc = tiny_encoder(seed)
    torch.manual_seed(seed + 1)
    return MultiHeadClassifier(enc, heads, **kw)


@pytest.fixture(scope="module")
def tasks() -> dict[str, list[Split]]:
    """Multi-source sentiment (two datasets, one head) + a 3-label pair task."""
    return {"senti": [sentiment("src_a", 13, 0), sentiment("src_b", 9, 1)], "nli": [pairs("pairs", 11, 2)]}


class Spy:
    """A recorder stand-in that keeps every update."""

    def __init__(self) -> None:
        self.epochs: list[list[tuple[np.ndarray, tuple[int, ...], np.ndarray]]] = [[]]
        self.steps: list[int] = []

    def update(self, idx: Any, logits: Any, labels: Any) -> None:
        self.epochs[-1].append((idx.numpy().copy(), tuple(logits.shape), labels.numpy().copy()))

    def end_checkpoint(self, *, step: int) -> None:
        self.steps.append(step)
        self.epochs.append([])


# ---------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("sampling", ["proportional", "temperature", "uniform"])
def test_schedule_covers_each_example_once(sampling: str) -> None:
    sizes = {"a": 23, "b": 7, "c": 50}
    rng = np.random.default_rng(0)
    for _ in range(3):
        sched = epoch_schedule(sizes, 4, rng, sampling=sampling)  # type: ignore[arg-type]
        assert len(sched) == sum(math.ceil(n / 4) for n in sizes.values())
        for task, n in sizes.items():
            got = np.concatenate([b for t, b in sched if t == task])
            np.testing.assert_array_equal(np.sort(got), np.arange(n))
        assert all(1 <= len(b) <= 4 for _, b in sched)


def _small_stats(sampling: str, temperature: float = 2.0, draws: int = 300) -> tuple[float, float]:
    """(P(first batch is the small task's), mean normalised position of the small task's batches)."""
    sizes = {"big": 400, "small": 40}
    rng = np.random.default_rng(123)
    first, pos = 0, []
    for _ in range(draws):
        sched = epoch_schedule(sizes, 4, rng, sampling=sampling, temperature=temperature)  # type: ignore[arg-type]
        tasks = np.array([t for t, _ in sched])
        first += tasks[0] == "small"
        pos.append(np.flatnonzero(tasks == "small").mean() / (len(tasks) - 1))
    return first / draws, float(np.mean(pos))


def test_sampling_distributions() -> None:
    p_first, p_pos = _small_stats("proportional")
    t_first, t_pos = _small_stats("temperature", 2.0)
    u_first, u_pos = _small_stats("uniform")
    # first pick ~ weight share: 10/110, sqrt(40)/(sqrt(40)+sqrt(400)) = 0.24, 1/2
    assert abs(p_first - 10 / 110) < 0.05
    assert abs(t_first - math.sqrt(40) / (math.sqrt(40) + 20)) < 0.07
    assert abs(u_first - 0.5) < 0.08
    # a flatter distribution exhausts the small task earlier: uniform < temperature < proportional (~0.5)
    assert abs(p_pos - 0.5) < 0.03
    assert u_pos < t_pos - 0.05 and t_pos < p_pos - 0.05
    # a higher temperature moves closer to uniform
    assert _small_stats("temperature", 8.0, draws=100)[1] < t_pos


def test_schedule_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SoiError, match="sampling"):
        epoch_schedule({"a": 3}, 2, rng, sampling="nope")  # type: ignore[arg-type]
    with pytest.raises(SoiError, match="temperature"):
        epoch_schedule({"a": 3}, 2, rng, sampling="temperature", temperature=0)


# ---------------------------------------------------------------------------------------------- model
def test_model_pooling_and_heads(tmp_path: Path) -> None:
    tok = tokenizer()
    model = tiny_model({"a": 2, "b.c": 5}, pooling="mean").eval()
    short = tok(["good great"], return_tensors="pt")
    padded = tok(["good great"], padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        za = model(**short, task="a")
        zb = model(**padded, task="a")
        assert model(**short, task="b.c").shape == (1, 5)
    torch.testing.assert_close(za, zb, atol=1e-5, rtol=1e-5)  # masked mean ignores padding
    with pytest.raises(SoiError, match="no head"):
        model(**short, task="zzz")
    tiny_encoder().save_pretrained(tmp_path / "enc")
    from_path = MultiHeadClassifier(str(tmp_path / "enc"), {"a": 3})
    assert from_path(**short, task="a").shape == (1, 3)


# ---------------------------------------------------------------------------------------------- training
def test_epoch_covers_every_example_and_batches_single_task(tasks: dict[str, list[Split]]) -> None:
    examples, labels = run_examples(tasks)
    assert labels == {"senti": ["negative", "positive"], "nli": ["entail", "neutral", "contradict"]}
    assert task_offsets(tasks) == {"senti": 0, "nli": 22}
    task_of = np.array(examples["task"].to_pylist())
    gold = examples["gold"].to_numpy()
    spy = Spy()
    res = train(tiny_model({"senti": 2, "nli": 3}), tokenizer(), tasks, epochs=2, batch_size=4, lr=1e-3,
                sampling="temperature", recorder=spy, max_length=16)  # type: ignore[arg-type]
    assert res.steps == 2 * (math.ceil(22 / 4) + math.ceil(11 / 4)) and spy.steps == [res.steps // 2, res.steps]
    assert res.batches == [{"senti": 6, "nli": 3}] * 2
    for epoch in spy.epochs[:2]:
        idx = np.concatenate([i for i, _, _ in epoch])
        np.testing.assert_array_equal(np.sort(idx), np.arange(examples.num_rows))
        for i, shape, y in epoch:
            (task,) = set(task_of[i])  # one task per batch
            assert shape == (len(i), len(labels[task]))
            np.testing.assert_array_equal(y, gold[i])


def _recorded_run(run_dir: Path, tasks: dict[str, list[Split]], seed: int) -> Any:
    examples, labels = run_examples(tasks)
    rec = DynamicsRecorder(run_dir, RunMeta(tasks=labels, seed=seed), examples=examples, keep_logits=True)
    train(tiny_model({"senti": 2, "nli": 3}), tokenizer(), tasks, epochs=2, batch_size=5, lr=1e-3, seed=seed,
          sampling="proportional", recorder=rec, max_length=16)
    return load_dynamics(run_dir)


def test_recorded_run_loads_and_is_deterministic(tmp_path: Path, tasks: dict[str, list[Split]]) -> None:
    a = _recorded_run(tmp_path / "a", tasks, seed=7)
    b = _recorded_run(tmp_path / "b", tasks, seed=7)
    c = _recorded_run(tmp_path / "c", tasks, seed=8)
    assert a.n_examples == 33 and a.n_checkpoints == 2
    np.testing.assert_array_equal(a.steps, [8, 16])  # ceil(22/5) + ceil(11/5) per epoch
    for name in ("pred", "p_gold", "margin", "loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.loss, c.loss)
    # per-task label widths: stored logits have 2 (senti) or 3 (nli) entries; predictions stay in range
    task_of = np.array(a.examples["task"].to_pylist())
    idx, logits = read_logits(tmp_path / "a", 1)
    widths = {len(z) for z, t in zip(logits, task_of[idx], strict=True) if t == "senti"}, \
        {len(z) for z, t in zip(logits, task_of[idx], strict=True) if t == "nli"}
    assert widths == ({2}, {3})
    assert a.pred[task_of == "senti"].max() <= 1 and a.pred[task_of == "nli"].max() <= 2


def test_tiny_problem_learns() -> None:
    data = sentiment("toy", 48, 3)
    model = tiny_model({"toy": 2}, seed=1, dropout=0.0)
    before = evaluate(model, tokenizer(), data, "toy", batch_size=16, max_length=16)
    res = train(model, tokenizer(), {"toy": [data]}, epochs=8, batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=1,
                max_length=16)
    after = evaluate(model, tokenizer(), data, "toy", batch_size=16, max_length=16)
    assert after["n"] == 48
    assert res.epoch_loss[-1] < res.epoch_loss[0]
    assert after["accuracy"] >= 0.95 and after["accuracy"] > before["accuracy"]
    assert after["macro_f1"] >= 0.95


def test_train_checks_heads(tasks: dict[str, list[Split]]) -> None:
    with pytest.raises(SoiError, match="head has"):
        train(tiny_model({"senti": 3, "nli": 3}), tokenizer(), tasks, epochs=1)


# ---------------------------------------------------------------------------------------------- metrics
def test_macro_f1_hand_cases() -> None:
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 0 fp 0 fn 1 -> 0
    assert macro_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1([0, 1, 2, 1], [0, 1, 2, 1]) == 1.0
    assert macro_f1([0, 1, 0, 1], [1, 0, 1, 0]) == 0.0
    # labels never gold nor predicted are skipped by default, count as 0 when listed
    assert macro_f1([0, 0], [0, 0]) == 1.0
    assert macro_f1([0, 0], [0, 0], labels=[0, 1]) == 0.5
    # binary, 3 vs 1: class 0 tp 2 fp 0 fn 1 -> 0.8; class 1 tp 1 fp 1 fn 0 -> 2/3
    assert macro_f1([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1([], []) == 0.0


def test_max_length_is_capped_at_the_encoder_positions():
    """A requested max_length beyond the encoder's position embeddings is capped instead of crashing."""
    torch = pytest.importorskip("torch")
    from soi.train.model import MultiHeadClassifier

    class Enc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"hidden_size": 4, "max_position_embeddings": 64})()

    model = MultiHeadClassifier(Enc(), {"t": 2})
    assert model.cap_length(128) == 64
    assert model.cap_length(32) == 32
