"""The plain PyTorch multi-task training loop soi used before the Trainer engine -- kept as a TEST REFERENCE only.

``soi run`` trains through :func:`soi.train.hf.train_run` (Hugging Face ``Trainer``). This loop (formerly
``soi.train.loop``: ``train``, ``eval_pass``, ``TrainResult``) stays here so that tests and
``benchmarks/parity_trainer.py`` can check the Trainer engine against an independent implementation of the same
schedule (same batches from :func:`soi.train.epoch_schedule`, AdamW without decay on 1-D parameters, linear
warmup/decay, clipping); it is not part of the installed package.

Global example index (``idx`` given to the recorder, the row of ``examples.parquet``): tasks in the order of
the ``tasks`` mapping, within a task its splits in list order, within a split its table rows in order -- the
order of :func:`soi.train.run_examples`, which builds the matching examples table and ``RunMeta(tasks=...)``.

Every batch holds examples of ONE task. An epoch shows every example of every task exactly once (the last
batch of a task may be smaller; nothing is dropped). The interleaving of task batches is drawn per epoch:

* ``"proportional"``: a uniformly random permutation of all batches of all tasks;
* ``"temperature"``: repeatedly pick a task with probability proportional to ``n_task ** (1 / T)`` among the
  tasks with batches left (``T = 1``: proportional to size; larger ``T`` flattens towards uniform);
* ``"uniform"``: the same with equal weights (``T -> inf``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from soi.data.split import Split, run_tasks
from soi.errors import SoiError
from soi.record.recorder import DynamicsRecorder
from soi.train.encode import Encoded, collate, encode, pad_id_of
from soi.train.schedule import Sampling, epoch_schedule, linear_warmup, task_offsets

RecordMode = Literal["train-pass", "eval-pass"]


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train` did: optimizer steps, mean train loss per epoch, batches per task per epoch."""

    steps: int = 0
    epoch_loss: list[float] = field(default_factory=list)
    batches: list[dict[str, int]] = field(default_factory=list)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay for biases and norm weights (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def eval_pass(model: nn.Module, encoded: Mapping[str, Encoded], recorder: DynamicsRecorder, *,
              offsets: Mapping[str, int], pad_id: int, device: torch.device | str, batch_size: int = 64) -> None:
    """Record every example of every task from a no-grad, eval-mode forward pass (length-sorted batches).

    The ``eval-pass`` recording mode: the numbers describe the model at the checkpoint, without dropout,
    rather than the drifting model of the training pass (cartography's train-pass convention).
    """
    was_training = model.training
    model.eval()
    try:
        for task, enc in encoded.items():
            order = np.argsort([len(x) for x in enc.input_ids], kind="stable")
            for i in range(0, len(order), batch_size):
                pos = order[i: i + batch_size]
                batch = collate(enc, pos, pad_id, device)
                labels = batch.pop("labels")
                idx = torch.as_tensor(pos.astype(np.int64) + offsets[task], device=device)
                recorder.update(idx, model(**batch, task=task), labels)
    finally:
        model.train(was_training)


def train(model: nn.Module, tokenizer: Any, tasks: Mapping[str, Sequence[Split]], *, epochs: int = 3,
          batch_size: int = 16, lr: float = 2e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
          max_length: int = 128, seed: int = 0, sampling: Sampling = "proportional", temperature: float = 2.0,
          recorder: DynamicsRecorder | None = None, idx_offsets: Mapping[str, int] | None = None,
          max_grad_norm: float | None = 1.0, device: torch.device | str | None = None,
          record_mode: RecordMode = "train-pass", max_steps: int | None = None,
          progress: bool = False, on_checkpoint: Callable[[int, int], None] | None = None) -> TrainResult:
    """Fine-tune ``model`` (a :class:`~soi.train.MultiHeadClassifier`) on ``{task: [splits]}``.

    Each batch is one task's (``model(..., task=task)``); an epoch covers every example once; the task order
    follows ``sampling`` (module doc). AdamW (no decay on 1-D params), linear warmup (``warmup_ratio`` of all
    steps) and decay, gradient clipping at ``max_grad_norm``. Seeded: ``torch.manual_seed(seed)`` (dropout) and
    a NumPy generator for shuffles and task order, so a CPU run is deterministic.

    With ``recorder``: ``recorder.update(global idx, logits, labels)`` for every batch (``record_mode=
    "train-pass"``, cartography's convention) or, with ``"eval-pass"``, for every example in a no-grad eval-mode
    pass after each epoch (:func:`eval_pass`); then ``recorder.end_checkpoint(step=...)`` after each epoch.
    Global idx = ``idx_offsets[task]`` + the row's
    position in the task's concatenated splits; the default offsets (:func:`task_offsets`) match
    :func:`run_examples`.

    ``max_steps`` stops after that many optimizer steps (the LR schedule ends there): the last epoch is then a
    prefix of its shuffled batch order, i.e. a without-replacement fraction of the data. Its train-pass rows
    cover only part of the examples, so no checkpoint is written for it (``recorder.close()`` drops them); with
    ``"eval-pass"`` it is checkpointed like a full epoch.

    ``on_checkpoint(checkpoint, step)`` is called after each checkpoint is written (e.g. experiment trackers).
    """
    if max_steps is not None and max_steps < 1:
        raise SoiError(f"max_steps must be >= 1, got {max_steps}")
    if not tasks:
        raise SoiError("train needs at least one task")
    heads = getattr(model, "num_labels", None)
    for task, ss in tasks.items():
        if not ss:
            raise SoiError(f"task {task!r} has no splits")
        labels = run_tasks(*ss, task=task)[task]  # one label list per task
        if isinstance(heads, Mapping) and heads.get(task) != len(labels):
            raise SoiError(f"task {task!r}: {len(labels)} labels but the model's head has {heads.get(task)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    offsets = dict(idx_offsets) if idx_offsets is not None else task_offsets(tasks)
    if hasattr(model, "cap_length"):  # never tokenise past the encoder's position embeddings
        max_length = model.cap_length(max_length)
    encoded = {t: encode(tokenizer, ss, max_length) for t, ss in tasks.items()}
    sizes = {t: len(e) for t, e in encoded.items()}
    pad_id = pad_id_of(tokenizer)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    per_epoch = sum(math.ceil(n / batch_size) for n in sizes.values())
    total = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = linear_warmup(optimizer, total, int(warmup_ratio * total))
    result = TrainResult()
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        bar_task = bar.add_task("train", total=total)
    model.train()
    try:
        for _ in range(epochs):
            if result.steps >= total:  # max_steps reached
                break
            schedule = epoch_schedule(sizes, batch_size, rng, sampling=sampling, temperature=temperature)
            truncated = result.steps + len(schedule) > total
            schedule = schedule[: total - result.steps]
            losses, counts = [], dict.fromkeys(sizes, 0)
            for task, pos in schedule:
                batch = collate(encoded[task], pos, pad_id, device)
                labels = batch.pop("labels")
                logits = model(**batch, task=task)
                loss = nn.functional.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                result.steps += 1
                counts[task] += 1
                losses.append(loss.detach())
                if recorder is not None and record_mode == "train-pass":
                    idx = torch.as_tensor(pos.astype(np.int64) + offsets[task], device=device)
                    recorder.update(idx, logits, labels)
                if bar is not None:
                    bar.advance(bar_task)
            result.epoch_loss.append(float(torch.stack(losses).mean()) if losses else float("nan"))
            result.batches.append(counts)
            if recorder is not None and (not truncated or record_mode == "eval-pass"):
                if record_mode == "eval-pass":
                    eval_pass(model, encoded, recorder, offsets=offsets, pad_id=pad_id, device=device)
                recorder.end_checkpoint(step=result.steps)
                if on_checkpoint is not None:
                    on_checkpoint(recorder.checkpoint - 1, result.steps)
    finally:
        if bar is not None:
            bar.stop()
    return result


__all__ = ["RecordMode", "TrainResult", "eval_pass", "train"]
