"""Shared pieces of the SoiTrainer tests: SST-2 rows, MiniLM's tokenizer, a tiny random BERT, and a run builder.

Also run as a script (``python tests/hf_common.py '<json options>'``) by the resume and DDP tests, so that the
subprocess trains exactly what the in-process reference run trains.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import datasets
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    TrainingArguments,
)

from soi.model import resolve_model
from soi.record import SoiRecording, SoiTrainer

LABELS = ["negative", "positive"]


def data_dir() -> Path:
    env = os.environ.get("SOI_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


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


def study_error(tmp_path: Path, data: dict[str, Any]) -> str:
    """The one-line SoiError of reading ``data`` as ``tmp_path/study.yaml`` (asserts it is one line)."""
    import pytest
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


def main(argv: list[str]) -> None:
    """``python tests/hf_common.py '{"run_dir": ..., "out_dir": ..., "resume": false, ...}'``."""
    opts = json.loads(argv[0])
    resume = opts.pop("resume", False)
    torch.set_num_threads(1)
    trainer = make_trainer(opts.pop("run_dir"), opts.pop("out_dir"), **opts)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if torch.distributed.is_initialized():  # a clean exit: gloo aborts at shutdown with a live process group
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
