"""Record per-example dynamics while a Hugging Face :class:`~transformers.Trainer` fine-tunes: the two-line change.

``TrainerCallback`` never sees logits or example ids (transformers#31647), so soi subclasses the Trainer::

    trainer = SoiTrainer(model=model, args=args, train_dataset=train, processing_class=tok,
                         soi=SoiRecording("runs/sst2", task="sst2"))
    trainer.train()

What :class:`SoiTrainer` adds to :class:`transformers.Trainer` (the Trainer-level pieces live in
:class:`RecordingMixin`, shared with :class:`soi.record.SoiSFTTrainer`):

* an ``idx`` column (row position in ``train_dataset``) that survives ``remove_unused_columns`` and the collator
  and is popped before the model's forward;
* train-pass: ``compute_loss`` hands each training batch's logits to a :class:`~soi.record.DynamicsRecorder`
  (on device, no host sync per step);
* a checkpoint at each epoch end (or every N optimizer steps) -- taken in ``on_step_end``, *before* the Trainer
  saves at that step -- where examples no rank trained on since the last checkpoint (``drop_last`` gaps, or
  step checkpoints) are filled by a no-grad eval-mode pass; the counts go to ``run.json`` ``extra.filled``;
* eval-pass: at each checkpoint a no-grad eval-mode pass over the train set or a seeded probe subset,
  length-sorted and padded per batch; under DDP each rank evaluates ``position % world_size == rank``;
* resume: the unfinished checkpoint's rows are saved (``DynamicsRecorder.save_partial``) just before every
  Trainer checkpoint is written and restored when ``train(resume_from_checkpoint=...)`` starts, so a run killed
  mid-epoch and resumed writes the same dynamics as an uninterrupted one.

See docs/recording.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from transformers import Trainer, TrainerCallback

from soi.errors import SoiError
from soi.record.recorder import PARTIAL_DIR, DynamicsRecorder, distributed
from soi.record.trackers import SoiTrackerCallback
from soi.store.meta import PART_RE, RunMeta, dynamics_dir
from soi.store.writer import examples_table

try:  # datasets is optional: plain torch datasets work without it
    import datasets
except ImportError:  # pragma: no cover
    datasets = None

IDX = "idx"
MODES = ("train-pass", "eval-pass", "both")
EVAL_MODE_DIR = "eval-pass"  # "both": the eval pass goes to dynamics-eval-pass/
_LABEL_COLUMNS = ("labels", "label", "label_ids")


@dataclass
class SoiRecording:
    """What :class:`SoiTrainer` records and where.

    Parameters
    ----------
    run_dir : soi run directory (run.json, examples.parquet, dynamics/)
    mode : ``"train-pass"`` (numbers from the training forward pass, cartography's convention), ``"eval-pass"``
        (a no-grad eval-mode pass at each checkpoint) or ``"both"`` (train-pass in ``dynamics/``, eval-pass in
        ``dynamics-eval-pass/``)
    every_steps : None = a checkpoint at each epoch end; N = every N optimizer steps
    probe : eval-pass only: evaluate a fixed subset (a count, or a fraction in (0, 1]) drawn with ``probe_seed``;
        None = the whole train set
    probe_seed : seed of the probe subset (independent of the training seed)
    eval_batch_size : batch size of eval/fill passes (default ``args.per_device_eval_batch_size``)
    keep_logits : also store full logit vectors
    task : task name in run.json / examples.parquet
    label_names : label names in index order (default: ``model.config.id2label``)
    id_column : column holding the user's example ids (default ``"id"`` if present, else the row number)
    text_columns : one or two columns stored as ``text``/``text_pair`` (default ``"text"``/``"text_pair"`` when
        present; ``()`` stores none)
    model_name, setting : run.json ``model`` (default ``model.config.name_or_path``) and ``setting``
    flush_every : device-to-host transfer every this many batches
    examples, tasks : a multi-task run: its ``examples.parquet`` table (row ``i`` = train row ``i``, e.g. from
        :func:`soi.train.run_examples`) and ``{task: label names}``; ``task``, ``label_names``, ``id_column`` and
        ``text_columns`` are then unused. Batches of different tasks may have different logit widths; eval and
        fill passes batch each task's rows separately (the collator must carry the task, see
        :mod:`soi.train.hf`).
    extra : more run.json ``extra`` entries (e.g. a study's run name); soi's own keys win
    """

    run_dir: str | Path
    mode: str = "train-pass"
    every_steps: int | None = None
    probe: int | float | None = None
    probe_seed: int = 0
    eval_batch_size: int | None = None
    keep_logits: bool = False
    task: str = "default"
    label_names: Sequence[str] | None = None
    id_column: str | None = None
    text_columns: str | Sequence[str] | None = None
    model_name: str | None = None
    setting: str | None = None
    flush_every: int = 256
    examples: pa.Table | None = None
    tasks: Mapping[str, Sequence[str]] | None = None
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> SoiError:
            return SoiError(f"SoiRecording.{name} must be {want}, got {getattr(self, name)!r}")

        def pos_int(x: Any) -> bool:
            return isinstance(x, int | np.integer) and not isinstance(x, bool) and x >= 1

        if not isinstance(self.run_dir, str | Path) or not str(self.run_dir):
            raise bad("run_dir", "a path")
        if self.mode not in MODES:
            raise bad("mode", f"one of {MODES}")
        if self.every_steps is not None and not pos_int(self.every_steps):
            raise bad("every_steps", "a positive integer or None")
        if self.probe is not None:
            if (isinstance(self.probe, float) and not 0.0 < self.probe <= 1.0) or \
                    (not isinstance(self.probe, float) and not pos_int(self.probe)):
                raise bad("probe", "a positive count, a fraction in (0, 1] or None")
            if self.mode != "eval-pass":
                raise SoiError(f"SoiRecording.probe needs mode='eval-pass' (got mode={self.mode!r}): every dynamics "
                               f"folder of a run covers all examples of examples.parquet")
        if not isinstance(self.probe_seed, int | np.integer) or isinstance(self.probe_seed, bool):
            raise bad("probe_seed", "an integer")
        if self.eval_batch_size is not None and not pos_int(self.eval_batch_size):
            raise bad("eval_batch_size", "a positive integer or None")
        if not isinstance(self.keep_logits, bool):
            raise bad("keep_logits", "True or False")
        if not isinstance(self.task, str) or not self.task:
            raise bad("task", "a non-empty string")
        if self.label_names is not None:
            names = self.label_names
            if isinstance(names, str) or not all(isinstance(x, str) for x in names) or len(names) < 2 \
                    or len(set(names)) != len(names):
                raise bad("label_names", "a list of at least two distinct strings")
            self.label_names = list(names)
        if self.id_column is not None and (not isinstance(self.id_column, str) or not self.id_column):
            raise bad("id_column", "a column name or None")
        if isinstance(self.text_columns, str):
            self.text_columns = (self.text_columns,)
        if self.text_columns is not None:
            cols = tuple(self.text_columns)
            if len(cols) > 2 or not all(isinstance(c, str) and c for c in cols):
                raise bad("text_columns", "one or two column names, () or None")
            self.text_columns = cols
        for name in ("model_name", "setting"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise bad(name, "a string or None")
        if not pos_int(self.flush_every):
            raise bad("flush_every", "a positive integer")
        if self.extra is not None and not isinstance(self.extra, Mapping):
            raise bad("extra", "a mapping or None")
        if (self.examples is None) != (self.tasks is None):
            raise SoiError("SoiRecording.examples and SoiRecording.tasks go together (a multi-task run's examples "
                           "table and its {task: label names})")
        if self.examples is not None:
            if not isinstance(self.examples, pa.Table) or \
                    not {"idx", "example_id", "task", "gold"} <= set(self.examples.column_names):
                raise bad("examples", "an examples table (soi.store.examples_table / soi.train.run_examples)")
            if not isinstance(self.tasks, Mapping) or not self.tasks:
                raise bad("tasks", "a non-empty mapping {task: label names}")
            self.tasks = {str(t): list(v) for t, v in self.tasks.items()}
            for t, names in self.tasks.items():
                if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(x, str) for x in names):
                    raise SoiError(f"SoiRecording.tasks[{t!r}] must be at least two distinct label names")
            seen = set(pc.unique(self.examples["task"].combine_chunks().cast(pa.string())).to_pylist())
            if not seen <= set(self.tasks):
                raise SoiError(f"SoiRecording.examples has tasks {sorted(seen - set(self.tasks))} missing from "
                               f"SoiRecording.tasks {list(self.tasks)}")

    @property
    def checkpoint_unit(self) -> str:
        return "epoch" if self.every_steps is None else "step"


class _IndexedDataset(TorchDataset):
    """A map-style torch dataset whose items (mappings) get their row position as ``idx``."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        if not isinstance(item, Mapping):
            raise SoiError(f"SoiTrainer needs dataset items that are mappings (dicts), got {type(item).__name__}")
        return {**item, IDX: i}


def _is_hf_dataset(ds: Any) -> bool:
    return datasets is not None and isinstance(ds, datasets.Dataset)


def _arrow_columns(ds: Any, columns: list[str]) -> pa.Table:
    """Columns of a datasets.Dataset as an Arrow table, in row order (respects select/shuffle indices)."""
    return ds.select_columns(columns).with_format("arrow")[:]


def _with_idx(ds: Any) -> Any:
    """``ds`` with an ``idx`` column equal to the row position (added if absent, validated if present)."""
    if _is_hf_dataset(ds):
        if IDX in ds.column_names:
            got = _arrow_columns(ds, [IDX])[IDX].to_numpy()
            if not np.array_equal(got, np.arange(len(ds))):
                raise SoiError("train_dataset column 'idx' must be the row position 0..N-1 (soi keys examples by "
                               "it); rename yours, e.g. dataset.rename_column('idx', 'orig_idx')")
            return ds
        return ds.add_column(IDX, np.arange(len(ds), dtype=np.int64))
    if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
        raise SoiError("SoiTrainer needs a map-style train_dataset (with __len__ and __getitem__)")
    return _IndexedDataset(ds)


def _table_of(ds: Any, columns: list[str]) -> dict[str, list[Any] | np.ndarray | pa.Array]:
    """The requested columns of a train dataset (one pass over a torch dataset's items; Arrow for datasets)."""
    if _is_hf_dataset(ds):
        table = _arrow_columns(ds, columns)
        return {c: table[c].combine_chunks() for c in columns}
    base = ds.base if isinstance(ds, _IndexedDataset) else ds
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for i in range(len(base)):  # setup only: torch datasets have no columnar access
        item = base[i]
        for c in columns:
            v = item[c]
            out[c].append(v.item() if isinstance(v, torch.Tensor) and v.ndim == 0 else v)
    return out


def _strings(values: Any) -> pa.Array:
    """A column (Arrow array or list) as strings; numbers become their decimal text."""
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _column_names(ds: Any) -> list[str]:
    if _is_hf_dataset(ds):
        return list(ds.column_names)
    base = ds.base if isinstance(ds, _IndexedDataset) else ds
    if len(base) == 0:
        return []
    item = base[0]
    if not isinstance(item, Mapping):
        raise SoiError(f"SoiTrainer needs dataset items that are mappings (dicts), got {type(item).__name__}")
    return list(item.keys())


def _logits_of(outputs: Any) -> torch.Tensor:
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[1]
    if logits.ndim != 2:
        raise SoiError(f"soi records sequence classification: expected logits (batch, classes), got shape "
                       f"{tuple(logits.shape)}")
    return logits


def _sum_over_ranks(x: int) -> int:
    dist = distributed()
    if dist is None or dist.get_world_size() == 1:
        return x
    got: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(got, x)
    return int(sum(got))


def _clear_dynamics(run_dir: Path) -> None:
    """Remove the parts and partials a previous run left in the folders SoiTrainer writes (fresh start)."""
    for mode in (None, EVAL_MODE_DIR):
        folder = dynamics_dir(run_dir, mode)
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if PART_RE.match(path.name):
                path.unlink(missing_ok=True)
        partial = folder / PARTIAL_DIR
        if partial.is_dir():
            for path in partial.iterdir():
                path.unlink(missing_ok=True)


class _SoiCallback(TrainerCallback):
    """Forwards the Trainer's events to its :class:`SoiTrainer` (train begin, step end, train end)."""

    def __init__(self, trainer: SoiTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._soi_begin(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer._soi_due(state.global_step):
            self.trainer._soi_checkpoint(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # training stopped between checkpoints (max_steps, early stopping): close the last one there
        if state.global_step > 0 and not self.trainer._soi_due(state.global_step):
            self.trainer._soi_checkpoint(state.global_step)


@dataclass
class _State:
    """Per-``train()`` recording state."""

    train_rec: DynamicsRecorder | None = None
    eval_rec: DynamicsRecorder | None = None
    meta: RunMeta | None = None
    filled: list[int] = field(default_factory=list)


class RecordingMixin:
    """The Trainer overrides :class:`SoiTrainer` and :class:`~soi.record.SoiSFTTrainer` share: the ``idx`` column
    kept through ``remove_unused_columns``, the epoch length for epoch checkpoints, resume detection, ``idx`` popped
    in ``compute_loss`` (the batch recorded while training) and kept out of eval forwards, the unfinished
    checkpoint's partial rows saved before every Trainer checkpoint, the checkpoint schedule, the run's meta at train
    begin and after each checkpoint, and the fill-count of a train-pass checkpoint. Mix in before the Trainer class;
    subclasses define :meth:`_soi_recorders`, :meth:`_soi_train_recorder`, :meth:`_soi_record_batch` and
    :meth:`_soi_meta`, and keep ``_soi_state`` (with ``meta`` and ``filled``)."""

    soi: SoiRecording
    _soi_state: Any
    _soi_resuming: bool = False
    _soi_steps_per_epoch: int | None = None

    def _soi_recorders(self) -> list[DynamicsRecorder]:
        raise NotImplementedError

    def _soi_train_recorder(self) -> DynamicsRecorder | None:
        """The recorder the training forward pass feeds (None in eval-pass mode and outside ``train()``)."""
        raise NotImplementedError

    def _soi_record_batch(self, loss_of: Callable[[dict[str, Any], bool], Any], rec: DynamicsRecorder,
                          idx: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """Record a training batch into ``rec`` from its forward, ``loss_of(inputs, return_outputs)`` (the
        Trainer's ``compute_loss``); return what that returns for ``return_outputs``."""
        raise NotImplementedError

    def _soi_meta(self) -> RunMeta:
        raise NotImplementedError

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The Trainer's loss; while training with a train-pass recorder the same forward records the batch."""
        idx = inputs.pop(IDX, None)
        rec = self._soi_train_recorder()
        base = super().compute_loss  # type: ignore[misc]
        if idx is None or rec is None or not model.training:
            return base(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        return self._soi_record_batch(
            lambda batch, outputs: base(model, batch, return_outputs=outputs, num_items_in_batch=num_items_in_batch),
            rec, idx, inputs, return_outputs)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        if IDX not in self._signature_columns:  # keep idx through remove_unused_columns
            self._signature_columns.append(IDX)

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple:
        values = super().set_initial_training_values(args, dataloader)  # type: ignore[misc]
        self._soi_steps_per_epoch = int(values[1])  # num_update_steps_per_epoch
        return values

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's ``train``; with ``resume_from_checkpoint`` the recording resumes too."""
        self._soi_resuming = resume_from_checkpoint not in (None, False)
        return super().train(resume_from_checkpoint, *args, **kwargs)  # type: ignore[misc]

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs = {k: v for k, v in inputs.items() if k != IDX}  # an eval set's own idx column is kept, not fed
        return super().prediction_step(model, inputs, *args, **kwargs)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # the unfinished checkpoint's rows first: every Trainer checkpoint on disk then has its partial
        for rec in self._soi_recorders():
            rec.save_partial(self.state.global_step)  # type: ignore[attr-defined]
        super()._save_checkpoint(model, trial)  # type: ignore[misc]

    def _soi_eval_batch_size(self) -> int:
        """Batch size of the no-grad eval / fill / probe passes (``SoiRecording.eval_batch_size`` or the Trainer's)."""
        return int(self.soi.eval_batch_size or self.args.per_device_eval_batch_size)  # type: ignore[attr-defined]

    def _soi_due(self, step: int) -> bool:
        """Whether optimizer step ``step`` ends a checkpoint (every ``every_steps``, else every epoch)."""
        every = self.soi.every_steps or self._soi_steps_per_epoch
        return bool(every) and step % every == 0

    def _soi_clear(self, run_dir: Path) -> None:
        """Remove what a previous run left in ``run_dir``'s dynamics folders (a fresh, not resumed, start)."""
        _clear_dynamics(run_dir)

    def _soi_begin_meta(self) -> tuple[Path, int, RunMeta, RunMeta | None]:
        """``(run_dir, rank, meta, prior)`` at train begin: resuming, ``prior`` is the saved ``run.json`` and ``meta``
        keeps its creation time; a fresh start clears the old dynamics on rank 0 (``prior`` None)."""
        run_dir = Path(self.soi.run_dir)
        rank = distributed().get_rank() if distributed() is not None else 0
        meta = self._soi_meta()
        prior = None
        if self._soi_resuming and (run_dir / "run.json").is_file():
            prior = RunMeta.load(run_dir)
            meta.created = prior.created
        elif not self._soi_resuming and rank == 0:
            self._soi_clear(run_dir)
        return run_dir, rank, meta, prior

    def _soi_resume_filled(self, prior: RunMeta | None, checkpoints: int) -> None:
        """Resuming at checkpoint ``checkpoints``: the fill counts ``prior`` saved for the checkpoints before it."""
        if prior is not None:
            self._soi_state.filled = [int(x) for x in prior.extra.get("filled", [])][:checkpoints]

    def _soi_save_meta(self) -> None:
        """Write ``run.json`` (with the train-pass fill counts ``extra.filled``)."""
        st = self._soi_state
        if st.meta is None:
            return
        if self._soi_train_recorder() is not None:
            st.meta.extra["filled"] = list(st.filled)
        st.meta.save(self.soi.run_dir)

    def _soi_end_train_checkpoint(self, rec: DynamicsRecorder, step: int, rows: Callable[[np.ndarray], Any]) -> None:
        """End ``rec``'s checkpoint at ``step``, filling the examples no rank trained on with ``rows(missing)`` (a
        no-grad eval-mode pass); their number, summed over ranks, is appended to ``extra.filled``."""
        filled = 0

        def fill(missing: np.ndarray) -> Any:
            nonlocal filled
            filled += int(missing.size)
            return rows(missing)

        rec.end_checkpoint(step=step, fill=fill)
        self._soi_state.filled.append(_sum_over_ranks(filled))


class SoiTrainer(RecordingMixin, Trainer):
    """A :class:`transformers.Trainer` that records per-example training dynamics into a soi run directory.

    Pass everything a Trainer takes, plus ``soi=SoiRecording(...)``. The train dataset must be map-style with a
    label column (``label``/``labels``) of class indices; the model must return classification logits (B, C).

    Examples
    --------
    >>> trainer = SoiTrainer(model=model, args=args, train_dataset=train, processing_class=tok,  # doctest: +SKIP
    ...                      soi=SoiRecording("runs/sst2", task="sst2"))
    >>> trainer.train()                                                                          # doctest: +SKIP
    """

    def __init__(self, *args: Any, soi: SoiRecording, **kwargs: Any) -> None:
        if not isinstance(soi, SoiRecording):
            raise SoiError(f"SoiTrainer(soi=...) must be a SoiRecording, got {type(soi).__name__}")
        self.soi = soi
        self._soi_state = _State()
        self._soi_resuming = False
        self._soi_steps_per_epoch: int | None = None
        self._soi_eval_data: tuple[Any, Any] | None = None
        self._soi_lengths: np.ndarray | None = None
        self._soi_task_code: np.ndarray | None = None  # per train row: task position in SoiRecording.tasks
        self._soi_widths: np.ndarray | None = None  # logit width per task
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise SoiError("SoiTrainer needs a train_dataset (the examples whose dynamics are recorded)")
        self.train_dataset = _with_idx(self.train_dataset)
        self._soi_examples, self._soi_rows = self._soi_examples_table()
        if soi.keep_logits and self._soi_widths is not None and len(set(self._soi_widths.tolist())) > 1 and \
                soi.mode != "eval-pass" and (soi.every_steps is not None or self.args.dataloader_drop_last):
            raise SoiError("SoiRecording.keep_logits with tasks of different label counts cannot fill train-pass "
                           "gaps (every_steps / dataloader_drop_last): use mode='eval-pass' or drop keep_logits")
        self.add_callback(_SoiCallback(self))
        self.add_callback(SoiTrackerCallback(self))  # per-checkpoint SOI metrics to report_to trackers

    # ------------------------------------------------------------------ set-up
    def _soi_examples_table(self) -> tuple[pa.Table, np.ndarray]:
        """examples.parquet (all rows, or the probe subset) and the train rows it holds, in its row order."""
        soi, ds = self.soi, self.train_dataset
        names = _column_names(ds)
        n = len(ds)
        if n == 0:
            raise SoiError("train_dataset is empty")
        label_col = next((c for c in (*self.label_names, *_LABEL_COLUMNS) if c in names), None)
        if label_col is None:
            raise SoiError(f"train_dataset has no label column (looked for {list(_LABEL_COLUMNS)}; columns: "
                           f"{[c for c in names if c != IDX]}); soi records per-example gold-label dynamics")
        if len(self.label_names) != 1:
            raise SoiError(f"soi records single-label classification; the Trainer's label_names are "
                           f"{self.label_names}")
        if soi.examples is not None:
            return self._soi_given_examples(label_col)
        id_col = soi.id_column or ("id" if "id" in names else None)
        text_cols = soi.text_columns if soi.text_columns is not None else \
            tuple(c for c in ("text", "text_pair") if c in names)
        for name, cols in (("id_column", [id_col] if id_col else []), ("text_columns", list(text_cols))):
            missing = [c for c in cols if c not in names]
            if missing:
                raise SoiError(f"SoiRecording.{name}: train_dataset has no column {missing[0]!r} (columns: {names})")
        tags = [c for c in ("source", "language") if c in names]
        cols = _table_of(ds, list(dict.fromkeys([label_col, *([id_col] if id_col else []), *text_cols, *tags])))
        gold = np.asarray(cols[label_col].to_numpy(zero_copy_only=False) if isinstance(cols[label_col], pa.Array)
                          else cols[label_col])
        if gold.dtype.kind not in "iu" or gold.ndim != 1:
            raise SoiError(f"train_dataset column {label_col!r} must hold class indices (integers), got "
                           f"dtype {gold.dtype} with shape {gold.shape}")
        labels = soi.label_names or self._soi_model_labels(int(gold.max()) + 1)
        bad = np.flatnonzero((gold < 0) | (gold >= len(labels)))
        if bad.size:
            raise SoiError(f"train_dataset label {int(gold[bad[0]])} at row {int(bad[0])} is out of range for "
                           f"{len(labels)} labels {labels}")
        soi.label_names = list(labels)
        ids = _strings(cols[id_col]) if id_col else pa.array(np.arange(n).astype(str), pa.string())
        if ids.null_count or len(pc.unique(ids)) != n:
            raise SoiError(f"train_dataset example ids ({id_col!r}) must be unique and not null")

        def text(k: int) -> list[Any] | None:
            return _strings(cols[text_cols[k]]).to_pylist() if len(text_cols) > k else None

        def tag(name: str) -> Any:
            return _strings(cols[name]).to_pylist() if name in cols else None

        table = examples_table(ids, gold, task=soi.task, source=tag("source"), language=tag("language"),
                               text=text(0), text_pair=text(1))
        return self._soi_probe(table)

    def _soi_given_examples(self, label_col: str) -> tuple[pa.Table, np.ndarray]:
        """A multi-task run's examples table (``SoiRecording.examples``), checked against the train labels."""
        soi, ds = self.soi, self.train_dataset
        table, n = soi.examples, len(ds)
        if table.num_rows != n:
            raise SoiError(f"SoiRecording.examples has {table.num_rows} rows but train_dataset has {n}")
        col = _table_of(ds, [label_col])[label_col]
        gold = np.asarray(col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col)
        want = table["gold"].to_numpy().astype(np.int64)
        if gold.shape != want.shape or gold.dtype.kind not in "iu" or not np.array_equal(gold, want):
            bad = int(np.flatnonzero(gold != want)[0]) if gold.shape == want.shape else 0
            raise SoiError(f"train_dataset column {label_col!r} does not match SoiRecording.examples 'gold' "
                           f"(first difference at row {bad}); row i of the dataset must be example idx i")
        names = table["task"].combine_chunks().cast(pa.string()).to_numpy(zero_copy_only=False)
        width = np.asarray([len(soi.tasks[t]) for t in names], np.int64)
        bad = np.flatnonzero(want >= width)
        if bad.size:
            raise SoiError(f"SoiRecording.examples gold {int(want[bad[0]])} at row {int(bad[0])} is out of range "
                           f"for task {names[bad[0]]!r}'s {int(width[bad[0]])} labels")
        order = {t: k for k, t in enumerate(soi.tasks)}
        self._soi_task_code = np.asarray([order[t] for t in names], np.int64)
        self._soi_widths = np.asarray([len(v) for v in soi.tasks.values()], np.int64)
        soi.label_names = list(next(iter(soi.tasks.values())))
        return self._soi_probe(table)

    def _soi_probe(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """``table`` and its train rows, reduced to the seeded probe subset when ``SoiRecording.probe`` is set."""
        soi, n = self.soi, table.num_rows
        rows = np.arange(n, dtype=np.int64)
        if soi.probe is not None:
            k = soi.probe if not isinstance(soi.probe, float) else max(1, round(soi.probe * n))
            if k > n:
                raise SoiError(f"SoiRecording.probe={soi.probe} is larger than the train set ({n} examples)")
            rows = np.sort(np.random.default_rng(soi.probe_seed).choice(n, size=int(k), replace=False))
            table = table.take(pa.array(rows)).set_column(0, "idx", pa.array(np.arange(rows.size, dtype=np.int32)))
        return table, rows

    def _soi_model_labels(self, n_seen: int) -> list[str]:
        """Label names from ``model.config.id2label`` (``"0"``, ``"1"``, ... for labels seen without a config)."""
        id2label = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        if not id2label:
            return [str(i) for i in range(max(n_seen, 2))]
        by_int = {int(k): str(v) for k, v in id2label.items()}
        return [by_int.get(i, str(i)) for i in range(max(by_int) + 1)]

    def _soi_meta(self) -> RunMeta:
        soi, args = self.soi, self.args
        world = distributed().get_world_size() if distributed() is not None else 1
        config = getattr(self.model, "config", None)
        model_name = soi.model_name or getattr(config, "name_or_path", None) or type(self.model).__name__
        modes = ["train-pass", "eval-pass"] if soi.mode == "both" else [soi.mode]
        extra: dict[str, Any] = {
            **(soi.extra or {}),
            "recorder": "soi.record.hf.SoiTrainer",
            "modes": {"dynamics": modes[0], **({f"dynamics-{EVAL_MODE_DIR}": "eval-pass"} if len(modes) > 1 else {})},
            "every_steps": soi.every_steps,
            "world_size": world,
            "n_train": len(self.train_dataset),
            "training_args": {k: getattr(args, k) for k in (
                "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "dataloader_drop_last", "seed", "weight_decay")},
            "eval_batch_size": self._soi_eval_batch_size(),
        }
        if soi.probe is not None:
            extra["probe"] = {"requested": soi.probe, "size": int(self._soi_rows.size), "seed": soi.probe_seed}
        if soi.mode != "eval-pass":
            extra["filled"] = []  # per train-pass checkpoint: rows filled by an eval-mode pass
        tasks = dict(soi.tasks) if soi.tasks is not None else {soi.task: list(soi.label_names or [])}
        return RunMeta(tasks=tasks, recording_mode=modes[0],
                       checkpoint_unit=soi.checkpoint_unit, model=model_name, setting=soi.setting, seed=args.seed,
                       extra=extra)

    # ------------------------------------------------------------------ Trainer overrides
    def _soi_train_recorder(self) -> DynamicsRecorder | None:
        return self._soi_state.train_rec

    def _soi_record_batch(self, loss_of: Callable[[dict[str, Any], bool], Any], rec: DynamicsRecorder,
                          idx: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """Train-pass: the batch's logits (from the Trainer's loss forward) go to the recorder, on device."""
        labels = inputs.get(self.label_names[0])
        if labels is None:
            raise SoiError(f"training batch has no {self.label_names[0]!r}; soi needs gold labels to record")
        loss, outputs = loss_of(inputs, True)
        rec.update(idx, _logits_of(outputs), labels)
        return (loss, outputs) if return_outputs else loss

    def _soi_recorders(self) -> list[DynamicsRecorder]:
        st = self._soi_state
        return [rec for rec in (st.train_rec, st.eval_rec) if rec is not None]

    # ------------------------------------------------------------------ recording
    def _soi_begin(self, global_step: int) -> None:
        """Create the recorders (on_train_begin); when resuming, restore the state saved at ``global_step``."""
        soi = self.soi
        run_dir, rank, meta, prior = self._soi_begin_meta()
        kw = {"examples": self._soi_examples, "keep_logits": soi.keep_logits, "flush_every": soi.flush_every}
        st = _State(meta=meta)
        if soi.mode in ("train-pass", "both"):
            st.train_rec = DynamicsRecorder(run_dir, meta, **kw)
        if soi.mode in ("eval-pass", "both"):  # with "both", run.json was just written by the first recorder
            st.eval_rec = DynamicsRecorder(run_dir, None if st.train_rec else meta,
                                           mode=EVAL_MODE_DIR if soi.mode == "both" else None, **kw)
        self._soi_state = st
        if self._soi_resuming:
            ckpt = [rec.resume(global_step) for rec in (st.train_rec, st.eval_rec) if rec is not None]
            if st.train_rec is not None:
                self._soi_resume_filled(prior, ckpt[0])
            if rank == 0:
                self._soi_save_meta()

    def _soi_checkpoint(self, step: int) -> None:
        """End a checkpoint at optimizer step ``step`` (all ranks): write parts, fill gaps, run the eval pass."""
        st = self._soi_state
        if st.train_rec is not None:
            self._soi_end_train_checkpoint(st.train_rec, step,
                                           lambda missing: self._soi_forward(missing, concat=True)[0][1:])
        if st.eval_rec is not None:
            world = st.eval_rec.world_size
            pos = np.arange(self._soi_rows.size)
            pos = pos[pos % world == st.eval_rec.rank]
            for ids, logits, labels in self._soi_forward(self._soi_rows[pos], ids=pos):
                st.eval_rec.update(ids, logits, labels)
            st.eval_rec.end_checkpoint(step=step)
        if st.train_rec is not None and (st.train_rec.rank == 0):
            self._soi_save_meta()

    def _soi_eval_inputs(self) -> tuple[Any, Any]:
        """The train dataset and collator as the Trainer feeds them (unused columns removed), built once."""
        if self._soi_eval_data is None:
            ds = self.train_dataset
            if _is_hf_dataset(ds):
                self._soi_eval_data = (self._remove_unused_columns(ds, description="soi"), self.data_collator)
            else:
                self._soi_eval_data = (ds, self._get_collator_with_removed_columns(self.data_collator, "soi"))
        return self._soi_eval_data

    def _soi_length(self, rows: np.ndarray) -> np.ndarray:
        """Token lengths of train rows (for length-sorted batches); computed once per row."""
        n = len(self.train_dataset)
        if self._soi_lengths is None:
            self._soi_lengths = np.full(n, -1, np.int64)
        todo = rows[self._soi_lengths[rows] < 0]
        if todo.size:
            ds, key = self.train_dataset, getattr(self.processing_class, "model_input_names", ["input_ids"])[0]
            if _is_hf_dataset(ds):
                if key in ds.column_names:
                    col = _arrow_columns(ds.select(todo), [key])[key]
                    self._soi_lengths[todo] = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                else:
                    self._soi_lengths[todo] = 0
            else:
                for r in todo.tolist():  # torch datasets: one item read per row, once
                    v = ds.base[r].get(key) if isinstance(ds, _IndexedDataset) else None
                    self._soi_lengths[r] = len(v) if v is not None and hasattr(v, "__len__") else 0
        return self._soi_lengths[rows]

    def _soi_forward(self, rows: np.ndarray, *, ids: np.ndarray | None = None,
                     concat: bool = False) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
        """No-grad eval-mode forward over train ``rows``, longest first, padded per batch.

        Returns ``[(ids, logits, labels)]`` per batch (``ids`` defaults to ``rows``), or with ``concat`` one
        ``(ids, logits, labels)`` in the order of ``rows``. Tensors stay on the device.
        """
        ids = rows if ids is None else ids
        if rows.size == 0:
            return []
        size = self._soi_eval_batch_size()
        if self._soi_task_code is None:
            order = np.argsort(-self._soi_length(rows), kind="stable")
            batches = [list(range(i, min(i + size, rows.size))) for i in range(0, rows.size, size)]
        else:  # one task per batch: by task, then longest first
            code = self._soi_task_code[rows]
            order = np.lexsort((-self._soi_length(rows), code))
            ends = np.flatnonzero(np.diff(code[order])) + 1
            batches = [list(range(i, min(i + size, b))) for a, b in zip(np.r_[0, ends], np.r_[ends, rows.size],
                                                                          strict=True) for i in range(a, b, size)]
        ds, collator = self._soi_eval_inputs()
        loader = DataLoader(torch.utils.data.Subset(ds, rows[order].tolist()), batch_sampler=batches,
                            collate_fn=collator, num_workers=0)
        model = self.model
        was_training = model.training
        model.eval()
        out: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
        start = 0
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                for batch in loader:
                    inputs = self._prepare_inputs(batch)
                    inputs.pop(IDX, None)
                    labels = inputs.pop(self.label_names[0])
                    logits = _logits_of(model(**inputs))
                    stop = start + logits.shape[0]
                    out.append((ids[order[start:stop]], logits, labels))
                    start = stop
        finally:
            model.train(was_training)
        if not concat:
            return out
        inverse = torch.as_tensor(np.argsort(order, kind="stable"), device=out[0][1].device)
        width = max(z.shape[1] for _, z, _ in out)  # tasks of fewer labels: padded with -inf (no probability)
        logits = torch.cat([torch.nn.functional.pad(z, (0, width - z.shape[1]), value=float("-inf"))
                            for _, z, _ in out])[inverse]
        labels = torch.cat([y for _, _, y in out])[inverse]
        return [(ids, logits, labels)]


# Public names of the pieces SoiSFTTrainer (soi.record.sft) shares with SoiTrainer.
is_hf_dataset = _is_hf_dataset
arrow_columns = _arrow_columns
with_idx = _with_idx
column_names = _column_names
strings = _strings
sum_over_ranks = _sum_over_ranks
clear_dynamics = _clear_dynamics
SoiCallback = _SoiCallback

__all__ = ["IDX", "RecordingMixin", "SoiCallback", "SoiRecording", "SoiTrainer", "arrow_columns", "clear_dynamics",
           "column_names", "is_hf_dataset", "strings", "sum_over_ranks", "with_idx"]
