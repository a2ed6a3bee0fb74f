"""Shared pieces of the SoiSFTTrainer tests: prompt/completion rows, the tiny random Llama, a trainer builder.

Also run as a script (``python tests/sft_trl_common.py '<json options>'``, or under ``accelerate launch``) by the
resume and 2-process tests, so that the subprocess trains exactly what the in-process reference run trains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import datasets
from trl import SFTConfig

from hf_common import KillAfterSave, train_from_json
from soi.model.causal import load_causal_lm, tiny_causal_lm
from soi.record import GenProbe, SoiRecording, SoiSFTTrainer


def sft_rows(n: int) -> list[dict[str, Any]]:
    """``n`` prompt/completion rows of varying length (ids, answers, languages)."""
    return [{"id": f"ex{i}", "prompt": f"What is {i} + {i}?" + " Think." * (i % 3), "completion": f" It is {2 * i}.",
             "answer": str(2 * i), "language": "en" if i % 2 else "fr"} for i in range(n)]


def tiny_model_dir(root: str | Path) -> Path:
    """The tiny random Llama (byte tokenizer, no chat template) under ``root`` (written once)."""
    path = Path(root) / "tiny-llama"
    if not (path / "config.json").is_file():
        tiny_causal_lm(path, chat_template=False)
    return path


def make_trainer(run_dir: str | Path, out_dir: str | Path, model_dir: str | Path, *, n: int = 12, seed: int = 0,
                 lr: float = 1e-2, max_steps: int = 6, batch_size: int = 4, every_steps: int = 2,
                 probe: int | None = None, kill_at: int | None = None, callbacks: list[Any] | None = None,
                 config: dict[str, Any] | None = None, plain: bool = False) -> Any:
    """A SoiSFTTrainer (or, with ``plain``, a trl.SFTTrainer) on ``n`` rows with the tiny Llama, CPU, constant LR."""
    from trl import SFTTrainer

    kw = {"save_strategy": "no", "logging_strategy": "no", "report_to": [], "use_cpu": True, "disable_tqdm": True,
          "dataloader_num_workers": 0, "lr_scheduler_type": "constant", "max_length": 128,
          "per_device_eval_batch_size": 8, "bf16": False, "gradient_checkpointing": False, **(config or {})}
    args = SFTConfig(output_dir=str(out_dir), learning_rate=lr, max_steps=max_steps,
                     per_device_train_batch_size=batch_size, seed=seed, **kw)
    model, tok = load_causal_lm(model_dir, device="cpu")
    cbs = [*(callbacks or []), *([KillAfterSave(kill_at)] if kill_at is not None else [])]
    train = datasets.Dataset.from_list(sft_rows(n))
    common = {"model": model, "args": args, "train_dataset": train, "processing_class": tok, "callbacks": cbs or None}
    if plain:
        return SFTTrainer(**common)
    return SoiSFTTrainer(**common, soi=SoiRecording(run_dir, every_steps=every_steps, model_name="tiny-llama",
                                                    task="math"),
                         probe=GenProbe(probe, max_new_tokens=6) if probe else None)


if __name__ == "__main__":  # python tests/sft_trl_common.py '{"run_dir": ..., "out_dir": ..., "model_dir": ...}'
    train_from_json(sys.argv[1:], make_trainer, "run_dir", "out_dir", "model_dir")
