"""Shared pieces of the SoiTrainer tests: SST-2 rows, MiniLM's tokenizer, a tiny random BERT, and a run builder.

Also run as a script (``python tests/hf_common.py '<json options>'``) by the resume and DDP tests, so that the
subprocess trains exactly what the in-process reference run trains; :func:`train_from_json` is that script's body
(tests/sft_trl_common.py's too) and :func:`run_process` the one launcher of the subprocess tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import datasets
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    TrainingArguments,
)

from shared_data import SHARED
from soi.model import resolve_model
from soi.record import SoiRecording, SoiTrainer

LABELS = ["negative", "positive"]
HERE = Path(__file__).resolve().parent
ACCELERATE = shutil.which("accelerate") or (str(Path(sys.executable).parent / "accelerate")
                                            if (Path(sys.executable).parent / "accelerate").exists() else None)
"""The ``accelerate`` CLI (on PATH or next to this Python), None when not installed."""
needs_accelerate = pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not installed")


def data_dir() -> Path:
    """The shared offline data (tests/shared_data.py)."""
    return SHARED


def run_process(cmd: list[str], log: Path, *, timeout: float, expect_kill: bool = False) -> None:
    """Run ``cmd`` in tests/ in its own process group (offline, one thread, ``SOI_DATA_DIR`` set), stderr to ``log``.

    Fails the test, with stderr's tail, on a timeout (the whole group is killed: torchrun's / accelerate's workers
    too) or an exit status other than 0 (``-SIGKILL`` with ``expect_kill``: the process killed itself).
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "SOI_DATA_DIR": str(data_dir())}
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=HERE, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{' '.join(cmd[:4])} timed out after {timeout} s; stderr:\n{log.read_text()[-6000:]}")
    want = -signal.SIGKILL if expect_kill else 0
    if rc != want:
        pytest.fail(f"{' '.join(cmd[:4])} exited {rc} (expected {want}); stderr:\n{log.read_text()[-6000:]}")


@cache
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))


def tiny_encoder(path: str | Path, seed: int = 0) -> str:
    """Save a tiny random BERT encoder (2 layers, hidden 32) with MiniLM's tokenizer into ``path``."""
    from transformers import BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer().save_pretrained(path)
    return str(path)


def sentiment_study(model: str, name: str, sizes: dict[str, tuple[int | None, int]], runs: list[dict[str, Any]], *,
                    train: dict[str, Any], seeds: list[int] | None = None, data_seed: int = 3,
                    **fields: Any) -> dict[str, Any]:
    """A study.yaml dict of the tiny classification studies on the shared SST-2 / MR / CR (task ``sentiment``,
    ``max_length`` 32): ``sizes`` maps each dataset to ``(n_train or None, n_eval)``; ``fields`` adds top-level keys
    (``eval``, ``compare``, ``two_stage``, ...)."""
    datasets = {d: {"name": d, "task": "sentiment", **({} if n_train is None else {"n_train": n_train}),
                    "n_eval": n_eval} for d, (n_train, n_eval) in sizes.items()}
    return {"name": name, "model": model, "data_dir": str(data_dir()), "seeds": [0] if seeds is None else seeds,
            "data_seed": data_seed, "max_length": 32, "train": train, "datasets": datasets, "runs": runs, **fields}


def study_error(tmp_path: Path, data: dict[str, Any]) -> str:
    """The one-line SoiError of reading ``data`` as ``tmp_path/study.yaml`` (asserts it is one line)."""
    import yaml

    from soi.config import StudyConfig
    from soi.errors import SoiError

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SoiError) as exc:
        StudyConfig.from_yaml(path)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def sst2_rows(n: int, split: str = "train") -> list[dict[str, Any]]:
    """The first ``n`` rows of SST-2 (canonical JSONL), label as index."""
    labels = json.loads((data_dir() / "sst2" / "info.json").read_text())["labels"]
    rows = []
    with open(data_dir() / "sst2" / f"{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            row["label"] = labels.index(row["label"])
            rows.append(row)
            if len(rows) == n:
                break
    return rows


def sst2_dataset(n: int, max_length: int = 32) -> datasets.Dataset:
    """A tokenized datasets.Dataset of ``n`` SST-2 rows (id, text, label, source, language, input_ids, ...)."""
    rows = sst2_rows(n)
    ds = datasets.Dataset.from_list([{k: r[k] for k in ("id", "text", "label", "source", "language")} for r in rows])
    return ds.map(lambda b: tokenizer()(b["text"], truncation=True, max_length=max_length), batched=True)


class TorchSST2(torch.utils.data.Dataset):
    """A plain torch Dataset of tokenized SST-2 rows (dict items, no idx)."""

    def __init__(self, n: int, max_length: int = 32) -> None:
        rows = sst2_rows(n)
        enc = tokenizer()([r["text"] for r in rows], truncation=True, max_length=max_length)
        self.items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                       "label": rows[i]["label"], "id": rows[i]["id"]} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def tiny_bert(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's vocabulary."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    return BertForSequenceClassification(config)


class KillAfterSave(TrainerCallback):
    """SIGKILL this process right after the Trainer saved the checkpoint of ``step`` (a crash, no clean-up)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def make_trainer(run_dir: str | Path, out_dir: str | Path, *, n: int = 40, seed: int = 0, lr: float = 5e-4,
                 epochs: float = 2, batch_size: int = 8, dropout: float = 0.1, torch_dataset: bool = False,
                 kill_at: int | None = None, trainer_kwargs: dict[str, Any] | None = None,
                 **soi_kwargs: Any) -> SoiTrainer:
    """A SoiTrainer on ``n`` SST-2 rows with the tiny BERT (CPU, no reports, no saving unless asked)."""
    kw = {"save_strategy": "no", "logging_strategy": "no", "report_to": [], "use_cpu": True,
          "disable_tqdm": True, "dataloader_num_workers": 0, **(trainer_kwargs or {})}
    args = TrainingArguments(output_dir=str(out_dir), learning_rate=lr, num_train_epochs=epochs,
                             per_device_train_batch_size=batch_size, per_device_eval_batch_size=16, seed=seed, **kw)
    train = TorchSST2(n) if torch_dataset else sst2_dataset(n)
    soi = SoiRecording(run_dir, task="sst2", model_name="tiny-bert", **soi_kwargs)
    callbacks = [KillAfterSave(kill_at)] if kill_at is not None else None
    return SoiTrainer(model=tiny_bert(seed, dropout), args=args, train_dataset=train, processing_class=tokenizer(),
                      callbacks=callbacks, soi=soi)


def train_from_json(argv: list[str], make: Callable[..., Any], *positional: str) -> None:
    """A script's body: ``make(*positional options, **the rest)`` from the JSON ``argv[0]``, one thread, then
    ``train()`` (resuming from the last Trainer checkpoint with ``"resume": true``); under torchrun / accelerate
    the process group is closed cleanly (gloo aborts at shutdown with a live one)."""
    opts = json.loads(argv[0])
    resume = opts.pop("resume", False)
    torch.set_num_threads(1)
    args = [opts.pop(key) for key in positional]
    trainer = make(*args, **opts)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":  # python tests/hf_common.py '{"run_dir": ..., "out_dir": ..., "resume": false, ...}'
    train_from_json(sys.argv[1:], make_trainer, "run_dir", "out_dir")
