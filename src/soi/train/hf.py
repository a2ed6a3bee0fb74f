"""Classification runs on Hugging Face Trainer: a multi-head ``PreTrainedModel``, task-homogeneous batches, recording.

* :class:`MultiHeadModel` (config :class:`MultiHeadConfig`): a shared encoder with one linear head per task. Its
  forward returns a :class:`~transformers.modeling_outputs.SequenceClassifierOutput` (loss, logits); it saves and
  loads with ``save_pretrained`` / ``from_pretrained`` (safetensors), heads keyed by task.
* :class:`TaskBatchSampler`: every batch one task's, every example of every task once per epoch, interleaved by
  ``proportional`` / ``temperature`` / ``uniform`` sampling exactly as :func:`soi.train.epoch_schedule` (the same
  seeded generator, epoch after epoch). It reports ``batch_size = None`` (variable-length batches), so that
  ``accelerator.prepare`` shards it with ``BatchSamplerShard`` whole batch by whole batch (padding ranks with
  whole batches of the first ones): batches stay task-homogeneous on every rank.
* :class:`TaskCollator`: pads a batch and hands the model its task as a Python int (``task_id``): no host sync.
* :class:`TaskTrainer`: :class:`soi.record.SoiTrainer` with that sampler, AdamW without weight decay on 1-D
  parameters and the linear warmup/decay of :func:`soi.train.linear_warmup`.
* :func:`train_run`: one study run ``{task: [splits]}`` -> a recorded soi run directory (train-pass or eval-pass,
  epoch or ``every_steps`` checkpoints, bf16 on GPU, resumable from the last Trainer checkpoint).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import (
    AutoConfig,
    AutoModel,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedModel,
    PrinterCallback,
    TrainerCallback,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from soi.data.split import Split
from soi.errors import SoiError
from soi.record.hf import SoiRecording, SoiTrainer, is_hf_dataset
from soi.train.encode import encode
from soi.train.schedule import SAMPLINGS, Sampling, epoch_schedule, linear_warmup, run_examples

TASK_ID = "task_id"
POOLINGS = ("cls", "mean")


def head_key(task: str) -> str:
    """``nn.ModuleDict`` keys may not contain dots."""
    return task.replace(".", "_")


# ---------------------------------------------------------------------------------------------- model
class MultiHeadConfig(PretrainedConfig):
    """Config of :class:`MultiHeadModel`.

    Parameters
    ----------
    encoder : the encoder's config as a dict (``encoder_config.to_dict()``, with ``model_type``)
    heads : ``{task: number of labels}`` in task order (``task_id`` = position)
    task_labels : ``{task: label names}`` (optional; defaults to ``"0"``, ``"1"``, ...)
    pooling : ``"cls"`` (first token) or ``"mean"`` (attention-masked mean)
    classifier_dropout : dropout before each head
    freeze_embeddings : keep the encoder's input (word) embeddings fixed
    task_order : the tasks in ``task_id`` order (default: the order of ``heads``; kept explicitly because
        ``config.json`` is written with sorted keys)
    """

    model_type = "soi_multihead"

    def __init__(self, encoder: dict[str, Any] | None = None, heads: Mapping[str, int] | None = None,
                 task_labels: Mapping[str, Sequence[str]] | None = None, pooling: str = "cls",
                 classifier_dropout: float = 0.1, freeze_embeddings: bool = False,
                 task_order: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.encoder = dict(encoder or {})
        heads = {str(t): int(n) for t, n in (heads or {}).items()}
        order = [str(t) for t in task_order] if task_order is not None else list(heads)
        if sorted(order) != sorted(heads):
            raise SoiError(f"MultiHeadConfig.task_order {order} must list the heads {list(heads)} once each")
        self.task_order = order
        self.heads = {t: heads[t] for t in order}
        self.task_labels = {str(t): [str(x) for x in v] for t, v in (task_labels or {}).items()} or \
            {t: [str(i) for i in range(n)] for t, n in self.heads.items()}
        self.pooling = pooling
        self.classifier_dropout = float(classifier_dropout)
        self.freeze_embeddings = bool(freeze_embeddings)
        super().__init__(**kwargs)


class MultiHeadModel(PreTrainedModel):
    """A shared encoder (any ``AutoModel``) with one linear classification head per task.

    ``forward(input_ids, attention_mask, token_type_ids, labels, task_id=k | task="name")`` runs the head of one
    task for the whole batch (batches are task-homogeneous, see :class:`TaskBatchSampler`) and returns
    ``SequenceClassifierOutput(loss=mean cross-entropy when labels are given, logits (B, heads[task]))``.
    Multi-source and multi-lingual runs use one task (one head) over several datasets.

    Build one on a pretrained encoder with :meth:`from_encoder`; reload a saved one with ``from_pretrained``.
    """

    config_class = MultiHeadConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: MultiHeadConfig) -> None:
        super().__init__(config)
        if not config.heads:
            raise SoiError("MultiHeadModel needs at least one head ({task: num_labels})")
        if config.pooling not in POOLINGS:
            raise SoiError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
        keys = [head_key(t) for t in config.heads]
        if len(set(keys)) != len(keys):
            raise SoiError(f"task names collide once dots are replaced: {list(config.heads)}")
        bad = [t for t, n in config.heads.items() if n < 2]
        if bad:
            raise SoiError(f"task {bad[0]!r} needs at least 2 labels, got {config.heads[bad[0]]}")
        enc = dict(config.encoder)
        if "model_type" not in enc:
            raise SoiError("MultiHeadConfig.encoder must be an encoder config dict with 'model_type'")
        self.encoder = AutoModel.from_config(AutoConfig.for_model(enc.pop("model_type"), **enc))
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            self.encoder.pooler = None  # heads read the hidden states: an unused pooler only costs time
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.heads = nn.ModuleDict({head_key(t): nn.Linear(hidden, n) for t, n in config.heads.items()})
        self.post_init()
        if config.freeze_embeddings:
            self.encoder.get_input_embeddings().weight.requires_grad_(False)

    @classmethod
    def from_encoder(cls, encoder: str | Path | PreTrainedModel, heads: Mapping[str, int], *,
                     task_labels: Mapping[str, Sequence[str]] | None = None, pooling: str = "cls",
                     dropout: float = 0.1, freeze_embeddings: bool = False) -> MultiHeadModel:
        """A model on a pretrained encoder (a path / hub id or a loaded ``AutoModel``) with fresh heads.

        The heads are initialised from torch's global RNG (seed it first for reproducible runs).
        """
        enc = AutoModel.from_pretrained(str(encoder)) if isinstance(encoder, str | Path) else encoder
        config = MultiHeadConfig(encoder=enc.config.to_dict(), heads=heads, task_labels=task_labels,
                                 pooling=pooling, classifier_dropout=dropout, freeze_embeddings=freeze_embeddings)
        model = cls(config)
        state = {k: v for k, v in enc.state_dict().items() if not k.startswith("pooler.")}
        got = model.encoder.load_state_dict(state, strict=False)
        if got.missing_keys or got.unexpected_keys:
            raise SoiError(f"MultiHeadModel.from_encoder: the encoder's weights do not fit its config (missing "
                           f"{got.missing_keys[:3]}, unexpected {got.unexpected_keys[:3]})")
        for head in model.heads.values():  # torch's default Linear init (as soi's loop), after the encoder's RNG use
            head.reset_parameters()
        name = getattr(enc.config, "name_or_path", None) or getattr(enc, "name_or_path", None)
        if name:
            model.config.name_or_path = str(name)
        return model

    def _init_weights(self, module: nn.Module) -> None:
        """Random init of a fresh model: normal(0, initializer_range) linear layers, zero biases."""
        std = float(self.encoder.config.to_dict().get("initializer_range", 0.02)) if hasattr(self, "encoder") \
            else 0.02
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    @property
    def tasks(self) -> list[str]:
        """Task names in ``task_id`` order."""
        return list(self.config.task_order)

    @property
    def num_labels_per_task(self) -> dict[str, int]:
        return {t: int(self.config.heads[t]) for t in self.tasks}

    def cap_length(self, max_length: int) -> int:
        """``max_length`` capped at the encoder's position limit (``config.max_position_embeddings``)."""
        limit = getattr(self.encoder.config, "max_position_embeddings", None)
        return min(int(max_length), int(limit)) if isinstance(limit, int) and limit > 0 else int(max_length)

    def task_of(self, task_id: int | torch.Tensor | None = None, task: str | None = None) -> str:
        """The batch's task name from ``task`` or ``task_id`` (the only task when neither is given)."""
        tasks = self.tasks
        if task is not None:
            if task not in self.config.heads:
                raise SoiError(f"no head for task {task!r}; heads: {tasks}")
            return task
        if task_id is None:
            if len(tasks) != 1:
                raise SoiError(f"MultiHeadModel has {len(tasks)} heads {tasks}: pass task_id= or task=")
            return tasks[0]
        if isinstance(task_id, torch.Tensor):  # a tensor (a collator other than TaskCollator): one host read
            flat = task_id.reshape(-1)
            if flat.numel() == 0 or bool((flat != flat[0]).any()):
                raise SoiError("a batch mixes tasks (task_id differs across rows); batch by task "
                               "(soi.train.TaskBatchSampler)")
            task_id = int(flat[0])
        if not 0 <= int(task_id) < len(tasks):
            raise SoiError(f"task_id {int(task_id)} out of range for {len(tasks)} heads {tasks}")
        return tasks[int(task_id)]

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                task_id: int | torch.Tensor | None = None, task: str | None = None) -> SequenceClassifierOutput:
        """Logits (B, heads[task]) of the batch's task head, and the mean cross-entropy loss when ``labels``."""
        name = self.task_of(task_id, task)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        logits = self.heads[head_key(name)](self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------------------------------------- batches
class TaskBatchSampler(Sampler[list[int]]):
    """Task-homogeneous batches of global rows (tasks in blocks, in ``sizes`` order, as :func:`run_examples`).

    Epoch ``e`` yields the ``e``-th schedule of :func:`soi.train.epoch_schedule` drawn from
    ``np.random.default_rng(seed)`` (epochs ``0..e-1`` drawn first), so the batch order equals soi's plain loop's.
    Call :meth:`set_epoch` before iterating (the Trainer does).

    Parameters
    ----------
    sizes : ``{task: number of rows}`` in global row order
    batch_size : rows per batch (each task's last batch may be smaller; nothing is dropped)
    seed, sampling, temperature : see :func:`soi.train.epoch_schedule`
    """

    batch_size = None  # variable-length batches: accelerate's BatchSamplerShard then shards whole batches
    drop_last = False

    def __init__(self, sizes: Mapping[str, int], batch_size: int, *, seed: int = 0,
                 sampling: Sampling = "proportional", temperature: float = 2.0) -> None:
        if not isinstance(sizes, Mapping) or not sizes:
            raise SoiError("TaskBatchSampler needs sizes={task: rows} with at least one task")
        if any(not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0 for n in sizes.values()):
            raise SoiError(f"TaskBatchSampler sizes must be non-negative integers, got {dict(sizes)}")
        if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool) or batch_size < 1:
            raise SoiError(f"batch_size must be a positive integer, got {batch_size!r}")
        if sampling not in SAMPLINGS:
            raise SoiError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if sampling == "temperature" and not float(temperature) > 0:
            raise SoiError(f"temperature must be > 0, got {temperature}")
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
            raise SoiError(f"seed must be an integer, got {seed!r}")
        self.sizes = {str(t): int(n) for t, n in sizes.items()}
        self.max_batch_size = int(batch_size)
        self.seed, self.sampling, self.temperature = int(seed), sampling, float(temperature)
        starts = np.cumsum([0, *self.sizes.values()])[:-1]
        self.offsets = {t: int(s) for t, s in zip(self.sizes, starts, strict=True)}
        self.epoch = 0
        self._cache: tuple[int, dict[str, Any]] = (0, np.random.default_rng(self.seed).bit_generator.state)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return sum(math.ceil(n / self.max_batch_size) for n in self.sizes.values())

    def steps_per_task(self, steps: int) -> dict[str, int]:
        """Batches of each task among the first ``steps`` batches (epoch after epoch; one process)."""
        if not isinstance(steps, int | np.integer) or steps < 0:
            raise SoiError(f"steps must be a non-negative integer, got {steps!r}")
        counts = dict.fromkeys(self.sizes, 0)
        per_epoch, epoch, left = len(self), 0, int(steps)
        while left > 0 and per_epoch:
            for task, _ in self.schedule(epoch)[:left]:
                counts[task] += 1
            left -= min(left, per_epoch)
            epoch += 1
        return counts

    def schedule(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """Epoch ``epoch``'s batches as ``(task, local positions)``."""
        if epoch < 0:
            raise SoiError(f"epoch must be >= 0, got {epoch}")
        done, state = self._cache if self._cache[0] <= epoch else (0, None)
        rng = np.random.default_rng(self.seed)
        if state is not None:
            rng.bit_generator.state = state
        for _ in range(done, epoch):
            self._draw(rng)
        self._cache = (epoch, rng.bit_generator.state)
        return self._draw(rng)

    def _draw(self, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
        return epoch_schedule(self.sizes, self.max_batch_size, rng, sampling=self.sampling,
                              temperature=self.temperature)

    def __iter__(self) -> Any:
        for task, pos in self.schedule(self.epoch):
            yield (pos.astype(np.int64) + self.offsets[task]).tolist()


class TaskCollator:
    """Pads a task-homogeneous batch (``DataCollatorWithPadding``) and passes its ``task_id`` as one Python int."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = {int(f[TASK_ID]) for f in features if TASK_ID in f}
        if len(ids) > 1:
            raise SoiError(f"a batch mixes tasks {sorted(ids)}; batch by task (soi.train.TaskBatchSampler)")
        batch = self.pad([{k: v for k, v in f.items() if k != TASK_ID} for f in features])
        if ids:
            batch[TASK_ID] = ids.pop()
        return batch


# ---------------------------------------------------------------------------------------------- trainer
class TaskTrainer(SoiTrainer):
    """:class:`soi.record.SoiTrainer` training on a :class:`TaskBatchSampler`, with soi's optimiser set-up.

    AdamW with weight decay on parameters of >= 2 dimensions only (biases and norm weights undecayed) and
    :func:`soi.train.linear_warmup` over ``int(warmup_ratio * total steps)`` steps; clipping, seed and precision
    come from the ``TrainingArguments``.
    """

    def __init__(self, *args: Any, task_sampler: TaskBatchSampler, warmup_ratio: float = 0.1,
                 **kwargs: Any) -> None:
        if not isinstance(task_sampler, TaskBatchSampler):
            raise SoiError(f"TaskTrainer(task_sampler=...) must be a TaskBatchSampler, got "
                           f"{type(task_sampler).__name__}")
        if not 0.0 <= float(warmup_ratio) < 1.0:
            raise SoiError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.task_sampler = task_sampler
        self.warmup_ratio = float(warmup_ratio)
        super().__init__(*args, **kwargs)
        if len(self.train_dataset) != sum(task_sampler.sizes.values()):
            raise SoiError(f"TaskTrainer: the sampler covers {sum(task_sampler.sizes.values())} rows but "
                           f"train_dataset has {len(self.train_dataset)}")

    def get_train_dataloader(self) -> DataLoader:
        ds, collator = self.train_dataset, self.data_collator
        if is_hf_dataset(ds):
            ds = self._remove_unused_columns(ds, description="Training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="Training")
        loader = DataLoader(ds, batch_sampler=self.task_sampler, collate_fn=collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [n for n, p in model.named_parameters() if p.ndim >= 2]

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = linear_warmup(optimizer or self.optimizer, num_training_steps,
                                              int(self.warmup_ratio * num_training_steps))
            self._created_lr_scheduler = True
        return self.lr_scheduler


# ---------------------------------------------------------------------------------------------- one run
@dataclass
class RunResult:
    """What :func:`train_run` did: optimizer steps, mean train loss per epoch, the trainer (model in ``.model``)."""

    steps: int = 0
    epoch_loss: list[float] = field(default_factory=list)
    trainer: TaskTrainer | None = None


def task_dataset(tokenizer: Any, tasks: Mapping[str, Sequence[Split]], max_length: int,
                 task_ids: Mapping[str, int] | None = None) -> Any:
    """``datasets.Dataset`` of a run's rows in global idx order: input_ids, attention_mask, [token_type_ids],
    labels, task_id (``task_ids[task]``, the head's position in the model; default the task's position in
    ``tasks``)."""
    import datasets

    ids = dict(task_ids) if task_ids is not None else {t: k for k, t in enumerate(tasks)}
    cols: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": [], TASK_ID: []}
    for task, ss in tasks.items():
        k = ids[task]
        enc = encode(tokenizer, ss, max_length)
        if enc.token_type_ids is not None:
            cols.setdefault("token_type_ids", []).extend(enc.token_type_ids)
        cols["input_ids"].extend(enc.input_ids)
        cols["attention_mask"].extend([[1] * len(x) for x in enc.input_ids])
        cols["labels"].extend(enc.gold.tolist())
        cols[TASK_ID].extend([k] * len(enc))
    return datasets.Dataset.from_dict(cols)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder the Trainer wrote under ``output_dir`` (None when there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def train_run(model: MultiHeadModel, tokenizer: Any, tasks: Mapping[str, Sequence[Split]], *, run_dir: str | Path,
              output_dir: str | Path, epochs: int = 3, batch_size: int = 16, lr: float = 2e-5,
              weight_decay: float = 0.01, warmup_ratio: float = 0.1, max_length: int = 128, seed: int = 0,
              sampling: Sampling = "proportional", temperature: float = 2.0, record_mode: str = "train-pass",
              every_steps: int | None = None, save_steps: int | None = None, keep_logits: bool = False,
              max_grad_norm: float | None = 1.0, max_steps: int | None = None, eval_batch_size: int = 64,
              resume: bool = False, keep_checkpoints: bool = False, model_name: str | None = None,
              setting: str | None = None, extra: Mapping[str, Any] | None = None, report_to: Sequence[str] = (),
              callbacks: Sequence[TrainerCallback] = (), bf16: bool | None = None,
              progress: bool = False) -> RunResult:
    """Fine-tune ``model`` on ``{task: [splits]}`` through :class:`TaskTrainer`, recording into ``run_dir``.

    The run layout (global idx, ``examples.parquet``, ``run.json`` tasks) is :func:`soi.train.run_examples`'s;
    batches follow :class:`TaskBatchSampler`; dynamics are recorded from the training pass (``record_mode=
    "train-pass"``) or a no-grad eval-mode pass (``"eval-pass"``) at each epoch end, or every ``every_steps``
    optimizer steps. Trainer checkpoints go to ``output_dir`` (each epoch, or every ``save_steps`` / ``every_steps``
    steps; the last one kept) and are removed after a finished run unless ``keep_checkpoints``. ``resume`` continues
    from the last one there (the recording resumes too); without one it starts afresh. ``max_steps`` stops after
    that many optimizer steps (the LR schedule ends there) and closes a last checkpoint at that step. bf16 on
    CUDA by default.
    """
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise SoiError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise SoiError(f"epochs must be a positive integer, got {epochs!r}")
    if not tasks:
        raise SoiError("train_run needs at least one task")
    examples, labels = run_examples(tasks)
    heads = model.num_labels_per_task
    if any(heads.get(t) != len(v) for t, v in labels.items()):
        raise SoiError(f"the model's heads {heads} do not match the run's tasks "
                       f"{ {t: len(v) for t, v in labels.items()} } (every task needs a head of its label count)")
    train = task_dataset(tokenizer, tasks, model.cap_length(max_length),
                         task_ids={t: model.tasks.index(t) for t in tasks})
    sizes = {t: sum(len(s) for s in ss) for t, ss in tasks.items()}
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported() if bf16 is None else bool(bf16)
    save_every = save_steps or every_steps
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, max_steps=max_steps or -1,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=eval_batch_size, learning_rate=lr,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm or 0.0, seed=seed, bf16=bf16, use_cpu=not cuda,
        save_strategy="steps" if save_every else "epoch", save_steps=save_every or 500, save_total_limit=1,
        logging_strategy="epoch", report_to=list(report_to), disable_tqdm=not progress, dataloader_num_workers=0,
    )  # the Trainer's default AdamW (fused kernel; betas 0.9/0.999, eps 1e-8 as torch.optim.AdamW)
    soi = SoiRecording(run_dir, mode=record_mode, every_steps=every_steps, keep_logits=keep_logits,
                       eval_batch_size=eval_batch_size, model_name=model_name, setting=setting, examples=examples,
                       tasks=labels, extra=extra)
    sampler = TaskBatchSampler(sizes, batch_size, seed=seed, sampling=sampling, temperature=temperature)
    trainer = TaskTrainer(model=model, args=args, train_dataset=train, data_collator=TaskCollator(tokenizer),
                          processing_class=tokenizer, soi=soi, task_sampler=sampler, warmup_ratio=warmup_ratio)
    for cb in callbacks:  # after the recorder's: a callback's on_step_end sees the checkpoint closed at that step
        trainer.add_callback(cb)
    start = last_checkpoint(output_dir) if resume else None
    main = trainer.is_world_process_zero()
    trainer.accelerator.wait_for_everyone()  # every process has looked for the checkpoint
    if start is None and Path(output_dir).is_dir() and main:
        shutil.rmtree(output_dir)  # stale checkpoints of an older attempt: never resume from them by accident
    trainer.accelerator.wait_for_everyone()
    if not progress:
        trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=start)
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    trainer.accelerator.wait_for_everyone()
    if not keep_checkpoints and Path(output_dir).is_dir() and main:
        shutil.rmtree(output_dir)
    trainer.accelerator.wait_for_everyone()
    return RunResult(steps=int(trainer.state.global_step), epoch_loss=losses, trainer=trainer)


__all__ = ["POOLINGS", "TASK_ID", "MultiHeadConfig", "MultiHeadModel", "RunResult", "TaskBatchSampler",
           "TaskCollator", "TaskTrainer", "head_key", "last_checkpoint", "task_dataset", "train_run"]
