"""Causal-LM SFT through TRL: the engine of ``soi run`` generative studies (:func:`train_sft_trl`).

One run = one :class:`~soi.record.SoiSFTTrainer` (a ``trl.SFTTrainer``) fit:

* examples formatted and tokenized exactly as :func:`soi.gen.sft.generate` sees them
  (:class:`~soi.gen.sft.PromptFormat`: chat template or ``prompt\\n\\n``; labels ``-100`` on the prompt), passed
  pre-tokenized so TRL keeps the format;
* AdamW, constant learning rate after a linear warmup (``constant_with_warmup``), gradient clipping at 1.0;
  LoRA via PEFT (``lora={r, alpha, dropout, target_modules}``, ``all-linear`` by default);
* a checkpoint every ``checkpoint_every`` optimizer steps: validation loss (TRL's eval loss: mean token NLL per
  batch, averaged over batches), a Trainer checkpoint under ``RUN_DIR/checkpoints/`` (for resume), and the
  per-example train-pass dynamics with their probe (:mod:`soi.record.sft`);
* at the end, the best checkpoint by validation loss (the last one without validation) is saved as a Hugging Face
  model folder ``RUN_DIR/model-best/`` (LoRA merged into the weights; tokenizer included), and the final weights as
  ``RUN_DIR/model-final/`` when they differ from the best; the Trainer checkpoints are then deleted;
* ``resume=True`` continues from the last Trainer checkpoint of an interrupted run (kill -9 included): the
  dynamics then equal an uninterrupted run's.

``soi.gen.sft.train_sft`` (the hand-written loop) is kept as the documented reference the tests compare with.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soi._io import atomic_dir
from soi.errors import SoiError

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "model-best"
FINAL_DIR = "model-final"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrlResult:
    """What :func:`train_sft_trl` returns; ``model`` is the best checkpoint's (merged) model."""

    model: Any
    tokenizer: Any
    steps: int = 0
    best_step: int | None = None
    validation_loss: dict[int, float] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    resumed_from: int | None = None
    best_dir: Path | None = None
    final_dir: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def last_checkpoint(folder: Path) -> int | None:
    """The step of the newest complete Trainer checkpoint under ``folder`` (``checkpoint-N`` with its state)."""
    if not folder.is_dir():
        return None
    steps = [int(m.group(1)) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))
             and (p / "trainer_state.json").is_file()]
    return max(steps) if steps else None


def sft_dataset(fmt: Any, examples: Sequence[Any], max_length: int) -> Any:
    """A ``datasets.Dataset`` of pre-tokenized rows: ``input_ids``, ``labels`` (-100 on the prompt), ``id``,
    ``prompt``, ``completion``, ``task``, ``language``, ``source``, ``answer``."""
    import datasets

    from soi.gen.sft import IGNORE

    rows = []
    for ex in examples:
        ids, n_prompt, _ = fmt.encode(ex.prompt, ex.response, max_length)
        rows.append({"id": ex.id, "input_ids": ids, "labels": [IGNORE] * n_prompt + ids[n_prompt:],
                     "prompt": ex.prompt, "completion": ex.response, "task": ex.task, "language": ex.language,
                     "source": ex.source or ex.task, "answer": ex.answer})
    return datasets.Dataset.from_list(rows)


def _save(model: Any, tokenizer: Any, path: Path) -> Path:
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return path


def train_sft_trl(
    model_path: str,
    train: Any,
    run_dir: str | Path,
    *,
    validation: Any = None,
    record: bool = True,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup_steps: int = 0,
    max_length: int = 512,
    checkpoint_every: int = 50,
    seed: int = 0,
    lora: Mapping[str, Any] | None = None,
    dtype: str = "auto",
    probe: int | float | None = 32,
    probe_seed: int = 0,
    probe_max_new_tokens: int = 128,
    correct_threshold: float = 0.5,
    eval_batch_size: int | None = None,
    model_name: str | None = None,
    setting: str | None = None,
    meta_extra: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrlResult:
    """Fine-tune ``model_path`` on ``train`` through :class:`~soi.record.SoiSFTTrainer` (see the module docstring).

    Parameters
    ----------
    train, validation : ``GenExample``s, row mappings or a ``pyarrow.Table`` (:func:`soi.gen.sft.as_examples`)
    run_dir : the run directory (dynamics, ``checkpoints/``, ``model-best/``, ``model-final/``)
    record : record per-example dynamics (``False``: a plain ``trl.SFTTrainer``)
    epochs, max_steps : passes over ``train`` and/or a cap on optimizer steps (default one epoch)
    dtype : ``"auto"`` (bf16 on CUDA, float32 on CPU), ``"float32"`` or ``"bfloat16"``
    probe : greedy-decoded probe subset (count or fraction; ``None``/0: none)
    resume : continue from the last Trainer checkpoint under ``run_dir/checkpoints`` when there is one
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    from soi.gen.sft import PromptFormat, as_examples
    from soi.model.causal import load_causal_lm
    from soi.record import GenProbe, SoiRecording, SoiSFTTrainer

    if dtype not in ("auto", "float32", "bfloat16"):
        raise SoiError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    train_ex = as_examples(train, where="train")
    val_ex = as_examples(validation, where="validation")
    if not train_ex:
        raise SoiError("train_sft_trl: no training examples")
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / CHECKPOINTS_DIR
    start = last_checkpoint(ckpt_dir) if resume else None
    if start is None and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    model, tokenizer = load_causal_lm(model_path)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    fmt = PromptFormat(tokenizer)
    train_ds = sft_dataset(fmt, train_ex, max_length)
    val_ds = sft_dataset(fmt, val_ex, max_length) if val_ex else None
    cuda = torch.cuda.is_available()
    bf16 = dtype == "bfloat16" or (dtype == "auto" and cuda)
    eval_bs = eval_batch_size or 2 * batch_size
    args = SFTConfig(
        output_dir=str(ckpt_dir), seed=seed, data_seed=seed, learning_rate=lr, lr_scheduler_type="constant_with_warmup",
        warmup_steps=warmup_steps, weight_decay=0.0, max_grad_norm=1.0, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=eval_bs, num_train_epochs=float(epochs or 1), max_steps=max_steps or -1,
        eval_strategy="steps" if val_ds is not None else "no", eval_steps=checkpoint_every,
        save_strategy="steps", save_steps=checkpoint_every, save_total_limit=2,
        metric_for_best_model="eval_loss" if val_ds is not None else None, greater_is_better=False,
        load_best_model_at_end=False, logging_strategy="steps", logging_steps=checkpoint_every, report_to=[],
        disable_tqdm=not progress, bf16=bf16, use_cpu=not cuda, gradient_checkpointing=False, max_length=max_length,
        dataloader_num_workers=0, remove_unused_columns=True)
    peft_config = None
    if lora is not None:
        from peft import LoraConfig

        unknown = sorted(set(lora) - {"r", "alpha", "dropout", "target_modules"})
        if unknown:
            raise SoiError(f"lora: unknown field(s) {unknown}; allowed: r, alpha, dropout, target_modules")
        peft_config = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)),
                                 lora_dropout=float(lora.get("dropout", 0.05)),
                                 target_modules=lora.get("target_modules") or "all-linear", task_type="CAUSAL_LM")
    common = {"model": model, "args": args, "train_dataset": train_ds, "eval_dataset": val_ds,
              "processing_class": tokenizer, "peft_config": peft_config}
    if record:
        soi = SoiRecording(run_dir, every_steps=checkpoint_every, model_name=model_name or str(model_path),
                           setting=setting, eval_batch_size=eval_bs, task=train_ex[0].task)
        trainer = SoiSFTTrainer(**common, soi=soi, correct_threshold=correct_threshold, meta_extra={
            "sft": {"engine": "trl", "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
                    "warmup_steps": warmup_steps, "max_length": max_length, "checkpoint_every": checkpoint_every,
                    "lora": dict(lora or {}), "dtype": dtype, "chat_template": fmt.chat, "n_train": len(train_ex),
                    "n_validation": len(val_ex), "probe_max_new_tokens": probe_max_new_tokens},
            **dict(meta_extra or {})},
            probe=GenProbe(probe, seed=probe_seed, max_new_tokens=probe_max_new_tokens, batch_size=eval_bs)
            if probe else None)
    else:
        trainer = SFTTrainer(**common)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(ckpt_dir / f"checkpoint-{start}") if start else None)
    seconds = time.perf_counter() - t0
    state = trainer.state
    res = TrlResult(model=None, tokenizer=tokenizer, steps=int(state.global_step), resumed_from=start,
                    train_seconds=float(out.metrics.get("train_runtime", seconds)))
    for entry in state.log_history:
        if "eval_loss" in entry:
            res.validation_loss[int(entry["step"])] = float(entry["eval_loss"])
        elif "loss" in entry:
            res.train_loss.append(float(entry["loss"]))
    res.train_tokens = int(max((e.get("num_tokens", 0) for e in state.log_history), default=0))
    best_ckpt = state.best_model_checkpoint
    res.best_step = (int(_CKPT_RE.match(Path(best_ckpt).name).group(1)) if best_ckpt else
                     (res.steps if val_ds is None else None))
    if res.validation_loss and (res.best_step is None or res.best_step not in res.validation_loss):
        res.best_step = min(res.validation_loss, key=lambda s: (res.validation_loss[s], s))
    final = trainer.model
    if lora is not None:
        final = final.merge_and_unload()
    final.eval()
    best = final
    if res.best_step is not None and res.best_step != res.steps:
        path = ckpt_dir / f"checkpoint-{res.best_step}"
        if lora is not None:
            from peft import PeftModel

            base, _ = load_causal_lm(model_path)
            best = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            best = AutoModelForCausalLM.from_pretrained(str(path)).to(next(final.parameters()).device)
        best.eval()
        res.final_dir = _save(final, tokenizer, run_dir / FINAL_DIR)
    res.best_dir = _save(best, tokenizer, run_dir / BEST_DIR)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    res.model = best
    if record:
        from soi.store.meta import RunMeta

        meta = RunMeta.load(run_dir)
        meta.extra["best_step"] = res.best_step
        meta.extra["sft_result"] = {"steps": res.steps, "train_tokens": res.train_tokens,
                                    "train_seconds": round(res.train_seconds, 3),
                                    "validation_loss": {str(k): v for k, v in res.validation_loss.items()},
                                    "resumed_from": start, "best_dir": BEST_DIR,
                                    "final_dir": FINAL_DIR if res.final_dir else BEST_DIR}
        meta.save(run_dir)
    return res


__all__ = ["BEST_DIR", "CHECKPOINTS_DIR", "FINAL_DIR", "TrlResult", "last_checkpoint", "sft_dataset",
           "train_sft_trl"]
