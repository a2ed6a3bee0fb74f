"""Record per-example generative dynamics while TRL's :class:`~trl.SFTTrainer` fine-tunes a causal LM.

The two-line change for TRL users::

    trainer = SoiSFTTrainer(model=model, args=SFTConfig(...), train_dataset=ds, processing_class=tok,
                            soi=SoiRecording("runs/sft", every_steps=50))
    trainer.train()

``ds`` is any dataset ``SFTTrainer`` takes (prompt/completion, conversational, or pre-tokenized with ``input_ids``
and ``labels``). What :class:`SoiSFTTrainer` adds:

* an ``idx`` column (row position in ``train_dataset``) kept through TRL's preparation and the collator;
* train-pass recording from the training forward pass itself, no extra pass: the model's forward (TRL's fused
  LM-head forward, wrapped once more) projects only the positions with a label through the LM head and, besides
  TRL's per-token log-probabilities, entropy and top-1 flags (TRL's loss and metrics are unchanged), sums per
  example over its completion tokens ``t`` with ``p_t = p(y_t | y_<t, prompt)``: ``p_gold = mean p_t``
  (cartography's confidence, Swayamdipta et al. 2020, at token level), ``loss = -mean log p_t``, ``margin =`` mean
  gold logit minus the largest other logit (AUM, Pleiss et al. 2020), ``logp = sum log p_t``, ``token_acc`` (share
  of argmax hits) and ``n_tokens``; ``pred`` is 1 when ``token_acc >= correct_threshold``. These are the columns
  and ``run.json`` conventions of :mod:`soi.gen.record` (docs/store.md, "Generative runs");
* a checkpoint every ``SoiRecording.every_steps`` optimizer steps (or each epoch end): examples no rank trained on
  since the last checkpoint are filled by a no-grad eval-mode pass (counts in ``run.json`` ``extra.filled``);
* an optional greedy-decoded probe (:class:`GenProbe`) at each checkpoint into ``RUN_DIR/probe/``, scored for
  answer correctness as in :mod:`soi.gen.record`;
* resume and DDP as :class:`~soi.record.SoiTrainer` (partials saved with each Trainer checkpoint; duplicates of a
  distributed sampler written once).

Unsupported (one clear :class:`~soi.errors.SoiError` before training): packing, padding-free batches, Liger
kernels, sequence parallelism, iterable datasets, a model without an output-embedding head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from soi.errors import SoiError
from soi.record.hf import (
    IDX,
    RecordingMixin,
    SoiCallback,
    SoiRecording,
    arrow_columns,
    clear_dynamics,
    is_hf_dataset,
    strings,
    with_idx,
)
from soi.record.recorder import EXTRA_COLUMNS, DynamicsRecorder, distributed
from soi.store.meta import PART_RE, RunMeta
from soi.store.writer import examples_table, write_examples, write_part

try:
    from trl import SFTTrainer
except ImportError as exc:  # pragma: no cover
    raise ImportError("soi.record.SoiSFTTrainer needs TRL: pip install 'soi[gen]'") from exc

IGNORE = -100
LABELS = ["incorrect", "correct"]
PROBE_DIR = "probe"


@dataclass
class GenProbe:
    """The greedy-decoding probe of :class:`SoiSFTTrainer`: a seeded subset of the training examples decoded at
    every checkpoint and scored for answer correctness (final-number exact match against an ``answer`` column,
    else ROUGE-L F >= 0.5 against the completion).

    Parameters
    ----------
    size : a count, or a fraction in (0, 1] of the training set
    seed : seed of the subset (independent of the training seed)
    max_new_tokens : greedy decoding length
    batch_size : decoding batch size
    """

    size: int | float
    seed: int = 0
    max_new_tokens: int = 128
    batch_size: int = 8

    def __post_init__(self) -> None:
        s = self.size
        ok = (isinstance(s, float) and 0 < s <= 1) or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)
        if not ok:
            raise SoiError(f"GenProbe.size must be a positive count or a fraction in (0, 1], got {s!r}")
        for name in ("max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SoiError(f"GenProbe.{name} must be a positive integer, got {v!r}")


class _Stash:
    """Per-example sums (B, 5: p, margin, log p, top-1, count) left by the last recording forward."""

    sums: torch.Tensor | None = None


def install_recording_forward(model: Any) -> _Stash:
    """Wrap ``model.forward`` (after TRL's :func:`~trl.trainer.utils.add_fused_lm_head`) so that a call with
    ``fused_lm_head=True, soi_rows=True`` returns TRL's :class:`FusedCausalLMOutput` computed here and leaves the
    per-example sums in the returned stash. Other calls go to TRL's forward unchanged."""
    from trl.trainer.utils import FusedCausalLMOutput

    if getattr(model, "_soi_stash", None) is not None and model.forward is getattr(model, "_soi_forward", None):
        return model._soi_stash  # already wrapped, and nothing (another trainer) patched it since
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise SoiError(f"{type(model).__name__} has no output-embedding head (get_output_embeddings() is None): "
                       "soi records causal-LM logits over the completion tokens")
    inner = model.forward
    config = model.config.get_text_config()
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    stash = _Stash()

    def forward(*args: Any, soi_rows: bool = False, **kwargs: Any) -> Any:
        if not (soi_rows and kwargs.get("fused_lm_head")):
            return inner(*args, **kwargs)
        kwargs.pop("fused_lm_head")
        labels = kwargs.pop("labels")
        n_items = kwargs.pop("num_items_in_batch", None)
        if kwargs.pop("shift_labels", None) is not None:
            raise SoiError("soi does not record with pre-shifted labels (context/sequence parallelism)")
        kwargs["use_cache"] = False
        h = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        y = labels[:, 1:].to(h.device)
        mask = y != IGNORE
        rows = torch.nonzero(mask, as_tuple=True)[0]
        target = y[mask]
        z = model.get_output_embeddings()(h[mask]).float()
        if scale is not None:
            z = z * scale
        if cap:
            z = torch.tanh(z / cap) * cap
        logp = torch.log_softmax(z, dim=-1)
        lp = logp.gather(1, target[:, None]).squeeze(1)
        with torch.no_grad():
            zd, lpd = z.detach(), logp.detach()
            entropy = -(lpd.exp() * lpd).sum(dim=1)
            top1 = zd.argmax(dim=1) == target
            other = zd.scatter(1, target[:, None], float("-inf")).amax(dim=1)
            margin = zd.gather(1, target[:, None]).squeeze(1) - other
            vals = torch.stack([lpd.gather(1, target[:, None]).squeeze(1).exp(), margin, lpd.gather(
                1, target[:, None]).squeeze(1), top1.float(), torch.ones_like(margin)], dim=1).double()
            stash.sums = torch.zeros((mask.shape[0], 5), dtype=torch.float64, device=z.device).index_add_(0, rows, vals)

        def full(x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        loss = -lp.sum() / (mask.sum().clamp(min=1) if n_items is None else n_items)
        return FusedCausalLMOutput(loss=loss, log_probs=full(lp), entropy=full(entropy), is_top1=full(top1),
                                   label_mask=mask)

    model.forward = forward
    model._soi_forward = forward
    model._soi_stash = stash
    return stash


def rows_of(sums: torch.Tensor, correct_threshold: float) -> torch.Tensor:
    """Recorder rows (B, 8: pred, p_gold, margin, loss, label, token_acc, logp, n_tokens) from per-example sums."""
    n = sums[:, 4].clamp(min=1)
    acc = sums[:, 3] / n
    return torch.stack([(acc >= correct_threshold).double(), sums[:, 0] / n, sums[:, 1] / n, -sums[:, 2] / n,
                        torch.ones_like(n), acc, sums[:, 2], sums[:, 4]], dim=1).float()


def _text(value: Any) -> str | None:
    """A prompt/completion cell as text: a string, or the contents of a list of chat messages."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, Mapping) else str(m) for m in value)
    return str(value)


class IdxCollator:
    """Wraps a collator so that the examples' ``idx`` survives it as a (B,) int64 tensor (TRL's language-modeling
    collator keeps only its own keys)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or IDX not in examples[0]:
            return self.inner(examples)
        idx = torch.tensor([int(ex[IDX]) for ex in examples], dtype=torch.long)
        batch = self.inner([{k: v for k, v in ex.items() if k != IDX} for ex in examples])
        batch[IDX] = idx
        return batch


@dataclass
class _State:
    rec: DynamicsRecorder | None = None
    meta: RunMeta | None = None
    filled: list[int] = field(default_factory=list)
    probe_checkpoint: int = 0


class SoiSFTTrainer(RecordingMixin, SFTTrainer):
    """A :class:`trl.SFTTrainer` that records per-example generative training dynamics into a soi run directory.

    Pass everything an ``SFTTrainer`` takes, plus ``soi=SoiRecording(...)`` (``mode="train-pass"``; ``task``,
    ``id_column``, ``model_name``, ``setting``, ``every_steps``, ``eval_batch_size``, ``flush_every`` apply), and
    optionally ``probe=GenProbe(...)``, ``correct_threshold`` (default 0.5) and ``meta_extra`` (merged into
    ``run.json`` ``extra``). ``train_dataset`` must be a ``datasets.Dataset``; optional ``task``, ``language``,
    ``source`` and ``answer`` columns are stored with the examples.

    Examples
    --------
    >>> trainer = SoiSFTTrainer(model=model, args=SFTConfig("out", max_steps=100), train_dataset=ds,  # doctest: +SKIP
    ...                         processing_class=tok, soi=SoiRecording("runs/sft", every_steps=25))
    >>> trainer.train()                                                                             # doctest: +SKIP
    """

    def __init__(self, *args: Any, soi: SoiRecording, probe: GenProbe | None = None, correct_threshold: float = 0.5,
                 meta_extra: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not isinstance(soi, SoiRecording):
            raise SoiError(f"SoiSFTTrainer(soi=...) must be a SoiRecording, got {type(soi).__name__}")
        if soi.mode != "train-pass":
            raise SoiError(f"SoiSFTTrainer records mode='train-pass' (from the training forward pass), got "
                           f"SoiRecording.mode={soi.mode!r}")
        if soi.keep_logits:
            raise SoiError("SoiSFTTrainer cannot keep logits (a vocabulary-wide vector per token); set keep_logits "
                           "=False")
        if probe is not None and not isinstance(probe, GenProbe):
            raise SoiError(f"SoiSFTTrainer(probe=...) must be a GenProbe or None, got {type(probe).__name__}")
        if not isinstance(correct_threshold, int | float) or not 0 <= correct_threshold <= 1:
            raise SoiError(f"SoiSFTTrainer correct_threshold must be in [0, 1], got {correct_threshold!r}")
        if len(args) > 2:
            raise SoiError("SoiSFTTrainer: pass train_dataset and the rest by keyword (model and args may be "
                           "positional)")
        ds = kwargs.get("train_dataset")
        if not is_hf_dataset(ds):
            raise SoiError(f"SoiSFTTrainer needs train_dataset to be a datasets.Dataset, got {type(ds).__name__}")
        if len(ds) == 0:
            raise SoiError("train_dataset is empty")
        model = kwargs.get("model", args[0] if args else None)
        if model is not None and not isinstance(model, str):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            if getattr(base, "get_output_embeddings", lambda: None)() is None:
                raise SoiError(f"{type(base).__name__} returns no logits (no output-embedding head): SoiSFTTrainer "
                               "records causal-LM token probabilities")
        sft_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if sft_args is not None:
            self._soi_check_args(sft_args)
        self.soi = soi
        self._soi_probe = probe
        self._soi_threshold = float(correct_threshold)
        self._soi_extra = dict(meta_extra or {})
        self._soi_state = _State()
        self._soi_resuming = False
        self._soi_steps_per_epoch: int | None = None
        self._soi_eval_data: tuple[Any, Any] | None = None
        raw = with_idx(ds)
        kwargs["train_dataset"] = raw
        self._soi_examples, self._soi_answers = self._soi_examples_table(raw)
        super().__init__(*args, **kwargs)
        self._soi_check_args(self.args)
        self._soi_check_prepared(len(raw))
        if not isinstance(self.data_collator, IdxCollator):
            self.data_collator = IdxCollator(self.data_collator)
        self._soi_check_collator()
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._soi_stash = install_recording_forward(base)
        n = len(raw)
        if probe is not None:
            k = probe.size if not isinstance(probe.size, float) else max(1, round(probe.size * n))
            if k > n:
                raise SoiError(f"GenProbe.size={probe.size} is larger than the train set ({n} examples)")
            self._soi_probe_rows = np.sort(np.random.default_rng(probe.seed).choice(n, size=int(k), replace=False))
        else:
            self._soi_probe_rows = np.zeros(0, np.int64)
        self.add_callback(SoiCallback(self))

    # ------------------------------------------------------------------ set-up checks
    @staticmethod
    def _soi_check_args(args: Any) -> None:
        for name, what in (("packing", "packing"), ("padding_free", "padding-free batches"),
                           ("use_liger_kernel", "Liger kernels")):
            if getattr(args, name, False):
                raise SoiError(f"SoiSFTTrainer does not support {what} (SFTConfig.{name}=True): one row per "
                               "example is needed to record it")

    def _soi_examples_table(self, ds: Any) -> tuple[pa.Table, list[str | None]]:
        soi = self.soi
        names = list(ds.column_names)
        id_col = soi.id_column or ("id" if "id" in names else None)
        if id_col is not None and id_col not in names:
            raise SoiError(f"SoiRecording.id_column: train_dataset has no column {id_col!r} (columns: {names})")
        wanted = [c for c in (id_col, "prompt", "completion", "task", "language", "source", "answer")
                  if c is not None and c in names]
        cols = ds.select_columns(wanted).to_dict() if wanted else {}
        n = len(ds)
        ids = strings(cols[id_col]) if id_col else pa.array(np.arange(n).astype(str), pa.string())
        if ids.null_count or len(pc.unique(ids)) != n:
            raise SoiError(f"train_dataset example ids ({id_col!r}) must be unique and not null")

        def tag(name: str) -> list[Any] | None:
            return [None if v is None else str(v) for v in cols[name]] if name in cols else None

        tasks = tag("task") or [soi.task] * n
        table = examples_table(ids, np.ones(n, np.int16), task=tasks, source=tag("source"), language=tag("language"),
                               text=[_text(v) for v in cols["prompt"]] if "prompt" in cols else None,
                               text_pair=[_text(v) for v in cols["completion"]] if "completion" in cols else None)
        answers = tag("answer") or [None] * n
        return table, answers

    def _soi_check_prepared(self, n: int) -> None:
        """The prepared train set holds every recorded example once, with at least one completion label."""
        ds = self.train_dataset
        names = list(ds.column_names)
        if "labels" not in names or "input_ids" not in names:
            raise SoiError(f"SoiSFTTrainer: the prepared train_dataset has no input_ids/labels (columns: {names}); "
                           "give prompt/completion, messages, text or input_ids+labels rows")
        table = arrow_columns(ds, [IDX, "labels"])
        idx = table[IDX].to_numpy()
        if idx.size != n or not np.array_equal(np.sort(idx), np.arange(n)):
            lost = np.setdiff1d(np.arange(n), idx)
            what = (f"{lost.size} example(s) were dropped by SFTTrainer's preparation (no completion token within "
                    f"max_length?), e.g. row {int(lost[0])}" if lost.size else "rows were duplicated")
            raise SoiError(f"SoiSFTTrainer: the prepared train set does not match the recorded dataset: {what}")
        labels = table["labels"].combine_chunks()
        lengths = pc.list_value_length(labels).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        has = np.asarray(pc.not_equal(pc.list_flatten(labels), IGNORE).to_numpy(zero_copy_only=False), np.int64)
        # a completion token is predicted from the previous position: count labels[1:] != -100 per row
        ends = np.cumsum(lengths)
        csum = np.concatenate([[0], np.cumsum(has)])
        starts = ends - lengths
        first = np.where(lengths > 0, csum[np.minimum(starts + 1, ends)] - csum[starts], 0)
        counted = csum[ends] - csum[starts] - first
        bad = np.flatnonzero(counted < 1)
        if bad.size:
            raise SoiError(f"SoiSFTTrainer: train example at row {int(idx[bad[0]])} has no completion label after "
                           "the first token (labels must mark the completion; prompt tokens -100)")

    def _soi_check_collator(self) -> None:
        """The collated batch carries ``labels`` aligned with ``input_ids`` and the examples' ``idx``."""
        ds, collator = self._soi_eval_inputs()
        batch = collator([ds[i] for i in range(min(2, len(ds)))])
        labels, ids = batch.get("labels"), batch.get("input_ids")
        if labels is None or ids is None or tuple(labels.shape) != tuple(ids.shape):
            raise SoiError("SoiSFTTrainer: the data collator's batch needs input_ids and labels of the same shape "
                           f"(got {sorted(batch)}); soi reads the completion tokens from labels != -100")
        if IDX not in batch:
            raise SoiError("SoiSFTTrainer: the example idx did not survive the data collator")

    def _soi_meta(self) -> RunMeta:
        from soi.gen.record import generative_meta

        soi, args = self.soi, self.args
        world = distributed().get_world_size() if distributed() is not None else 1
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = getattr(base, "config", None)
        model_name = soi.model_name or getattr(config, "name_or_path", None) or type(base).__name__
        tasks = {t: list(LABELS) for t in dict.fromkeys(self._soi_examples["task"].to_pylist())}
        probe = None
        if self._soi_probe is not None:
            probe = {"requested": self._soi_probe.size, "size": int(self._soi_probe_rows.size),
                     "seed": self._soi_probe.seed, "run_dir": PROBE_DIR}
        extra = {**self._soi_extra, "recorder": "soi.record.sft.SoiSFTTrainer",
                 "generative": generative_meta("token_acc", self._soi_threshold, probe,
                                               source="training forward pass; filled rows: no-grad eval mode"),
                 "every_steps": soi.every_steps, "world_size": world, "n_train": len(self.train_dataset),
                 "training_args": {k: getattr(args, k, None) for k in (
                     "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps",
                     "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "weight_decay",
                     "max_length")},
                 "eval_batch_size": self._soi_eval_batch_size(), "filled": []}
        return RunMeta(tasks=tasks, recording_mode="train-pass", checkpoint_unit=soi.checkpoint_unit,
                       model=model_name, setting=soi.setting, seed=args.seed, extra=extra)

    # ------------------------------------------------------------------ Trainer overrides
    def _soi_train_recorder(self) -> DynamicsRecorder | None:
        return self._soi_state.rec

    def _soi_record_batch(self, loss_of: Callable[[dict[str, Any], bool], Any], rec: DynamicsRecorder,
                          idx: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """TRL's loss; the same forward also yields the batch's per-example rows (on device)."""
        self._soi_stash.sums = None
        out = loss_of({**inputs, "soi_rows": True}, return_outputs)
        sums = self._soi_stash.sums
        if sums is None:
            raise SoiError("SoiSFTTrainer: the training forward did not go through the recording head (a custom "
                           "compute_loss or sequence parallelism?)")
        rec.update_rows(idx, rows_of(sums, self._soi_threshold))
        return out

    def _soi_recorders(self) -> list[DynamicsRecorder]:
        return [] if self._soi_state.rec is None else [self._soi_state.rec]

    # ------------------------------------------------------------------ recording
    def _soi_clear(self, run_dir: Path) -> None:
        clear_dynamics(run_dir)
        if (run_dir / PROBE_DIR).is_dir():
            clear_dynamics(run_dir / PROBE_DIR)

    def _soi_begin(self, global_step: int) -> None:
        run_dir, rank, meta, prior = self._soi_begin_meta()
        rec = DynamicsRecorder(run_dir, meta, examples=self._soi_examples, flush_every=self.soi.flush_every,
                               extra_columns=EXTRA_COLUMNS)
        st = _State(rec=rec, meta=meta)
        self._soi_state = st
        if rank == 0 and self._soi_probe_rows.size:
            self._soi_probe_setup(meta)
        if self._soi_resuming:
            ckpt = rec.resume(global_step)
            self._soi_resume_filled(prior, ckpt)
            st.probe_checkpoint = ckpt
            if rank == 0:
                self._soi_drop_probe_parts(ckpt)
                self._soi_save_meta()

    def _soi_probe_setup(self, meta: RunMeta) -> None:
        from soi.gen.record import generative_meta

        pdir = Path(self.soi.run_dir) / PROBE_DIR
        pdir.mkdir(parents=True, exist_ok=True)
        pmeta = RunMeta(tasks=meta.tasks, recording_mode="eval-pass", checkpoint_unit=meta.checkpoint_unit,
                        model=meta.model, setting=meta.setting, seed=meta.seed,
                        extra={"recorder": "soi.record.sft.SoiSFTTrainer", "parent": "..",
                               "generative": generative_meta("answer", self._soi_threshold,
                                                             meta.extra["generative"].get("probe"))})
        pmeta.save(pdir)
        rows = pa.array(self._soi_probe_rows)
        table = self._soi_examples.take(rows).set_column(
            0, "idx", pa.array(np.arange(self._soi_probe_rows.size, dtype=np.int32)))
        write_examples(pdir, table)

    def _soi_drop_probe_parts(self, checkpoint: int) -> None:
        folder = Path(self.soi.run_dir) / PROBE_DIR / "dynamics"
        if folder.is_dir():
            for path in folder.iterdir():
                m = PART_RE.match(path.name)
                if m and int(m.group(1)) >= checkpoint:
                    path.unlink()

    def _soi_checkpoint(self, step: int) -> None:
        """End a checkpoint at optimizer step ``step`` (all ranks): write parts, fill gaps, decode the probe."""
        st = self._soi_state
        if st.rec is None:
            return
        self._soi_end_train_checkpoint(st.rec, step, self.soi_rows)
        if st.rec.rank == 0:
            if self._soi_probe_rows.size:
                self._soi_probe_part(step, st.probe_checkpoint)
            self._soi_save_meta()
        st.probe_checkpoint += 1

    def _soi_probe_part(self, step: int, checkpoint: int) -> None:
        from soi.gen.record import answer_correct, gen_table
        from soi.gen.sft import PromptFormat, generate_ids

        rows = self._soi_probe_rows
        stats = self.soi_rows(rows).cpu().numpy()
        ds = self.train_dataset
        pos = {int(r): i for i, r in enumerate(arrow_columns(ds, [IDX])[IDX].to_numpy())}
        table = arrow_columns(ds.select([pos[int(r)] for r in rows]), ["input_ids", "labels"])
        prompts = []
        for ids, labels in zip(table["input_ids"].to_pylist(), table["labels"].to_pylist(), strict=True):
            first = next(i for i, y in enumerate(labels) if y != IGNORE)
            prompts.append(ids[:first])
        tok = getattr(self.processing_class, "tokenizer", self.processing_class)
        fmt = PromptFormat(tok)
        probe = self._soi_probe
        base = self.model
        texts = generate_ids(base, tok, prompts, stop_ids=fmt.stop_ids, pad_id=fmt.pad_id,
                             max_new_tokens=probe.max_new_tokens, batch_size=probe.batch_size,
                             dtype="bfloat16" if self.args.bf16 else "float32")
        completions = self._soi_examples["text_pair"].to_pylist()
        examples = [_ProbeExample(self._soi_answers[int(r)], completions[int(r)] or "") for r in rows]
        ok = answer_correct(texts, examples).astype(np.int16)
        cols = {"p_gold": stats[:, 1], "margin": stats[:, 2], "loss": stats[:, 3], "token_acc": stats[:, 5],
                "logp": stats[:, 6], "n_tokens": np.rint(stats[:, 7]).astype(np.int32)}
        write_part(Path(self.soi.run_dir) / PROBE_DIR,
                   gen_table(checkpoint, step, np.arange(rows.size), ok, cols, generations=texts),
                   checkpoint=checkpoint)

    def _soi_eval_inputs(self) -> tuple[Any, Any]:
        if self._soi_eval_data is None:
            ds = self._remove_unused_columns(self.train_dataset, description="soi")
            self._soi_eval_data = (ds, self.data_collator)
        return self._soi_eval_data

    def soi_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Recorder rows (len(rows), 8) of train rows ``rows`` (original positions) from a no-grad eval-mode pass
        through the trainer's model, longest first, in the order of ``rows``."""
        ds, collator = self._soi_eval_inputs()
        idx = arrow_columns(self.train_dataset, [IDX])[IDX].to_numpy()
        where = np.empty(idx.size, np.int64)
        where[idx] = np.arange(idx.size)
        lengths = pc.list_value_length(arrow_columns(self.train_dataset, ["input_ids"])["input_ids"]).to_numpy(
            zero_copy_only=False)
        pos = where[np.asarray(rows, np.int64)]
        order = np.argsort(-lengths[pos], kind="stable")
        loader = DataLoader(torch.utils.data.Subset(ds, pos[order].tolist()), batch_size=self._soi_eval_batch_size(),
                            collate_fn=collator, shuffle=False, num_workers=0)
        model = self.model
        was = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                for batch in loader:
                    inputs = self._prepare_inputs(batch)
                    inputs.pop(IDX, None)
                    self._soi_stash.sums = None
                    model(**inputs, fused_lm_head=True, soi_rows=True)
                    out.append(rows_of(self._soi_stash.sums, self._soi_threshold))
        finally:
            model.train(was)
        got = torch.cat(out)
        inverse = torch.as_tensor(np.argsort(order, kind="stable"), device=got.device)
        return got[inverse]


@dataclass(frozen=True)
class _ProbeExample:
    answer: str | None
    response: str


__all__ = ["GenProbe", "IdxCollator", "SoiSFTTrainer", "install_recording_forward", "rows_of"]
