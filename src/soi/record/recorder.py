"""A framework-agnostic, streaming per-example recorder (``update`` per batch, ``end_checkpoint`` per checkpoint).

In the spirit of AUM's ``update()``/``finalize()`` and torchmetrics' ``update()``/``compute()``: call
:meth:`DynamicsRecorder.update` with the example ids, logits and labels of every batch (torch tensors on any
device, or NumPy arrays), and :meth:`DynamicsRecorder.end_checkpoint` at every checkpoint (end of epoch, or
every N steps). Per-row values (prediction, gold probability, margin, loss) are computed on the logits'
device and kept there; they move to the host in one transfer per ``flush_every`` batches (default 256) or
per checkpoint -- never a host sync per step.

Distributed: every rank records its own batches into its own part file. At a checkpoint the ranks exchange
the ids they saw (one small ``all_gather_object``) so that the padding duplicates of a distributed sampler
are written once (the lowest rank's first occurrence wins) and examples nobody saw (``drop_last`` gaps) are
found; those are passed to ``fill`` (a no-grad forward pass, see :mod:`soi.record.hf`) or reported as an error.

Resume: :meth:`save_partial` persists the rows of the unfinished checkpoint next to each training checkpoint;
:meth:`resume` reloads them, so a run killed mid-epoch and resumed loses and doubles nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from soi._arrow import to_numpy
from soi._io import write_parquet
from soi.errors import SoiError
from soi.store.meta import EXAMPLES_FILE, PART_RE, RunMeta, dynamics_dir
from soi.store.writer import GENERATIVE_COLUMNS, dynamics_table, rows_from_logits, write_examples, write_part

PARTIAL_DIR = ".partial"
_COLUMNS = ("pred", "p_gold", "margin", "loss", "label")  # per-row values buffered as float32
ROW_COLUMNS = _COLUMNS
"""The leading columns of a recorder row (:meth:`DynamicsRecorder.update_rows`); extra columns follow."""
EXTRA_COLUMNS = ("token_acc", "logp", "n_tokens")
"""Extra numeric part columns a recorder can carry (generative runs, see docs/store.md)."""
_PARTIAL_RE = re.compile(r"^ckpt-(\d{6})\.rank-(\d{4})\.step-(\d{12})\.parquet$")

Fill = Callable[[np.ndarray], Any]
"""``fill(missing_idx) -> (logits, labels)`` for examples no rank saw in a checkpoint, or the rows of
:meth:`DynamicsRecorder.update_rows` (a recorder with extra columns)."""


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_rows(logits: Any, labels: Any) -> Any:
    """(B, 5) float32 tensor of pred, p_gold, margin, loss, label computed on the logits' device (no host sync)."""
    import torch

    z = logits.detach().float()
    y = labels.detach().long().view(-1, 1)
    logp = torch.log_softmax(z, dim=-1)
    lp_gold = logp.gather(1, y).squeeze(1)
    z_gold = z.gather(1, y).squeeze(1)
    other = z.scatter(1, y, float("-inf")).amax(dim=1)
    pred = z.argmax(dim=1)  # first maximal index on ties, like NumPy
    return torch.stack([pred.float(), lp_gold.exp(), z_gold - other, -lp_gold, y.squeeze(1).float()], dim=1)


def _part_step(path: Path) -> int:
    """The ``step`` of a dynamics part (the same in every row)."""
    with pq.ParquetFile(path) as pf:
        steps = pf.read(columns=["step"])["step"]
    return int(steps[0].as_py()) if len(steps) else -1


def distributed() -> Any:
    """``torch.distributed`` when a process group is initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch not installed
        return None
    return dist if dist.is_available() and dist.is_initialized() else None



class DynamicsRecorder:
    """Record per-example training dynamics into a soi run directory.

    Parameters
    ----------
    run_dir : run directory (created); rank 0 writes ``run.json`` and, if given, ``examples.parquet``
    meta : run metadata (required on rank 0 unless ``run.json`` exists)
    examples : the ``examples.parquet`` table (:func:`soi.store.examples_table`); ``idx`` passed to
        :meth:`update` are rows of it. Needed to check coverage (no missing or doubled examples).
    rank, world_size : this process and the number of writers (default: from ``torch.distributed``)
    mode : ``None`` writes ``dynamics/``; a name writes ``dynamics-<mode>/`` (e.g. ``"eval-pass"`` when both
        recording modes are on)
    keep_logits : also store the full logit vectors
    flush_every : move device results to the host every this many batches (bounds device memory)
    extra_columns : extra part columns among ``token_acc``, ``logp``, ``n_tokens`` (generative runs); rows then
        come precomputed through :meth:`update_rows`

    Examples
    --------
    >>> rec = DynamicsRecorder("runs/x", RunMeta(tasks={"t": ["a", "b"]}), examples=table)   # doctest: +SKIP
    >>> for epoch in range(3):                                                                # doctest: +SKIP
    ...     for batch in loader:
    ...         out = model(**batch["inputs"]); loss = out.loss; ...
    ...         rec.update(batch["idx"], out.logits, batch["labels"])
    ...     rec.end_checkpoint(step=global_step)
    """

    def __init__(self, run_dir: str | Path, meta: RunMeta | None = None, *, examples: pa.Table | None = None,
                 rank: int | None = None, world_size: int | None = None, mode: str | None = None,
                 keep_logits: bool = False, flush_every: int = 256, extra_columns: Sequence[str] = ()) -> None:
        extra = tuple(extra_columns)
        if any(c not in EXTRA_COLUMNS for c in extra) or len(set(extra)) != len(extra):
            raise SoiError(f"DynamicsRecorder.extra_columns must be distinct names among {EXTRA_COLUMNS}, got {extra}")
        if extra and keep_logits:
            raise SoiError("DynamicsRecorder: keep_logits needs logits; a recorder with extra_columns takes rows")
        self.columns = (*_COLUMNS, *extra)
        self.extra_columns = extra
        dist = distributed()
        self.rank = rank if rank is not None else (dist.get_rank() if dist else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if dist else 1)
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.keep_logits = keep_logits
        self.flush_every = max(1, int(flush_every))
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if meta is not None:
                meta.save(self.run_dir)
            elif not (self.run_dir / "run.json").is_file():
                raise SoiError("DynamicsRecorder needs run metadata (meta=RunMeta(...)) on rank 0", path=self.run_dir)
            if examples is not None:
                write_examples(self.run_dir, examples)
        if examples is None and (self.run_dir / EXAMPLES_FILE).is_file():
            with pq.ParquetFile(self.run_dir / EXAMPLES_FILE) as pf:
                examples = pf.read(columns=["idx", "gold"])
        self.n_examples = None if examples is None else examples.num_rows
        self._gold = None if examples is None else to_numpy(examples["gold"]).astype(np.int64)
        self.checkpoint = 0
        self._device: list[tuple[Any, Any]] = []  # (idx, rows) tensors still on the device
        self._host: list[tuple[np.ndarray, np.ndarray]] = []  # (idx int64, rows float32 (B, K): self.columns)
        self._logits: list[Any] = []  # per-row logit vectors (host) when keep_logits
        self._batches = 0

    # ------------------------------------------------------------------ per batch
    def update(self, example_ids: Any, logits: Any, labels: Any) -> None:
        """Record one batch: ``example_ids`` (B,) rows of ``examples.parquet``, ``logits`` (B, C), ``labels`` (B,).

        Torch tensors stay on their device until the next flush; NumPy arrays are processed on the host.
        Batches of different tasks may have different widths C.
        """
        if self.extra_columns:
            raise SoiError("this recorder has extra columns: record precomputed rows with update_rows()")
        if _is_torch(logits):
            import torch

            idx = example_ids.detach() if _is_torch(example_ids) else torch.as_tensor(np.asarray(example_ids))
            labels = labels if _is_torch(labels) else torch.as_tensor(np.asarray(labels))
            if logits.ndim != 2 or idx.shape[0] != logits.shape[0] or labels.shape[0] != logits.shape[0]:
                raise SoiError(f"update: expected ids (B,), logits (B, C), labels (B,); got {tuple(idx.shape)}, "
                               f"{tuple(logits.shape)}, {tuple(labels.shape)}")
            rows = _torch_rows(logits, labels.to(logits.device))
            self._device.append((idx.to(logits.device, non_blocking=True), rows))
            if self.keep_logits:
                self._logits.append(logits.detach().float())
        else:
            self._flush()  # keep rows (and logits) in update order when NumPy and device batches are mixed
            z = np.asarray(logits)
            rows = rows_from_logits(z, np.asarray(labels))
            stacked = np.stack([rows["pred"].astype(np.float32), rows["p_gold"], rows["margin"], rows["loss"],
                                np.asarray(labels, np.float32).reshape(-1)], 1)
            self._host.append((np.asarray(example_ids, np.int64).reshape(-1), stacked))
            if self.keep_logits:
                self._logits.append(z.astype(np.float32))
        self._batches += 1
        if self._batches % self.flush_every == 0:
            self._flush()

    def update_rows(self, example_ids: Any, rows: Any) -> None:
        """Record one batch of precomputed rows (B, K) in the order of :attr:`columns` (``pred``, ``p_gold``,
        ``margin``, ``loss``, ``label`` then the extra columns); a torch tensor stays on its device until the
        next flush."""
        width = len(self.columns)
        if _is_torch(rows):
            import torch

            idx = example_ids.detach() if _is_torch(example_ids) else torch.as_tensor(np.asarray(example_ids))
            if rows.ndim != 2 or rows.shape[1] != width or idx.reshape(-1).shape[0] != rows.shape[0]:
                raise SoiError(f"update_rows: expected ids (B,) and rows (B, {width}); got {tuple(idx.shape)}, "
                               f"{tuple(rows.shape)}")
            self._device.append((idx.to(rows.device, non_blocking=True), rows.detach().float()))
        else:
            self._flush()
            arr = np.asarray(rows, np.float32)
            ids = np.asarray(example_ids, np.int64).reshape(-1)
            if arr.ndim != 2 or arr.shape[1] != width or ids.shape[0] != arr.shape[0]:
                raise SoiError(f"update_rows: expected ids (B,) and rows (B, {width}); got {ids.shape}, {arr.shape}")
            self._host.append((ids, arr))
        self._batches += 1
        if self._batches % self.flush_every == 0:
            self._flush()

    def _flush(self) -> None:
        """Move device results (ids, rows and kept logits) to the host in one transfer (a single sync)."""
        if not self._device:
            return
        import torch

        idx = torch.cat([i.reshape(-1).long() for i, _ in self._device])
        rows = torch.cat([r for _, r in self._device])
        pending = [z for z in self._logits if _is_torch(z)]  # device logits, all after any host ones
        # pack everything as int32 words (bit views, exact) so that one .cpu() moves it all
        words = [idx.view(torch.int32), rows.reshape(-1).view(torch.int32),
                 *(z.reshape(-1).view(torch.int32) for z in pending)]
        host = torch.cat(words).cpu().numpy()
        n, k = idx.shape[0], len(self.columns)
        self._device.clear()
        self._host.append((host[: 2 * n].view(np.int64), host[2 * n: (2 + k) * n].view(np.float32).reshape(n, k)))
        if pending:
            flat, start = host[(2 + k) * n:].view(np.float32), 0
            for k, z in enumerate(pending):
                pending[k] = flat[start: start + z.numel()].reshape(z.shape)
                start += z.numel()
            self._logits = [z for z in self._logits if not _is_torch(z)] + pending

    def _rows(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        self._flush()
        if not self._host:
            return np.zeros(0, np.int64), np.zeros((0, len(self.columns)), np.float32), []
        idx = np.concatenate([i for i, _ in self._host])
        rows = np.concatenate([r for _, r in self._host])
        logits = [row for block in self._logits for row in block] if self.keep_logits else []
        return idx, rows, logits

    # ------------------------------------------------------------------ per checkpoint
    def end_checkpoint(self, *, step: int, fill: Fill | None = None) -> Path | None:
        """Write this rank's part of the current checkpoint and start the next one.

        Duplicated ids are written once (within a rank: the first occurrence; across ranks: the lowest rank).
        Examples of ``examples.parquet`` that no rank saw are passed to ``fill`` (each rank fills those with
        ``idx % world_size == rank``); without ``fill`` they raise :class:`SoiError`.

        Returns the part path (None when this rank wrote no row).
        """
        idx, rows, logits = self._rows()
        keep = self._first_occurrence(idx)
        missing = self._missing(idx[keep])
        if missing.size:
            if fill is None:
                raise SoiError(f"{missing.size} example(s) were not seen in checkpoint {self.checkpoint} "
                               f"(e.g. idx {int(missing[0])}); with drop_last pass fill=... or record an eval pass",
                               path=self.run_dir)
            mine = missing[missing % self.world_size == self.rank]
            if mine.size:
                got = fill(mine)
                if self.extra_columns:
                    self.update_rows(mine, got)
                else:
                    z, y = got
                    self.update(mine, z, y)
                idx, rows, logits = self._rows()
                keep = np.concatenate([keep, np.ones(idx.size - keep.size, bool)])
        path = None
        if keep.any():
            labels = rows[keep, 4].astype(np.int64)
            if self._gold is not None:
                gold = self._gold[idx[keep]]
                bad = np.flatnonzero(gold != labels)
                if bad.size:
                    raise SoiError(f"label {int(labels[bad[0]])} given for example idx {int(idx[keep][bad[0]])} but "
                                   f"examples.parquet has gold {int(gold[bad[0]])}; are the ids rows of "
                                   f"examples.parquet?", path=self.run_dir)
            table = dynamics_table(
                checkpoint=self.checkpoint, step=step, idx=idx[keep], gold=labels,
                pred=rows[keep, 0].astype(np.int16), p_gold=rows[keep, 1], margin=rows[keep, 2], loss=rows[keep, 3],
                logits=[logits[i] for i in np.flatnonzero(keep)] if self.keep_logits else None,
            )
            if self.extra_columns:  # in the part's row order (dynamics_table sorts by idx)
                kept = rows[keep][np.argsort(idx[keep], kind="stable")]
                for k, name in enumerate(self.extra_columns, start=len(_COLUMNS)):
                    typ = GENERATIVE_COLUMNS[name]
                    col = kept[:, k] if typ == pa.float32() else np.rint(kept[:, k]).astype(np.int32)
                    table = table.append_column(pa.field(name, typ), pa.array(col, typ))
            path = write_part(self.run_dir, table, checkpoint=self.checkpoint, rank=self.rank, mode=self.mode)
        self._clear_partials(self.checkpoint)
        self._host.clear()
        self._logits.clear()
        self.checkpoint += 1
        return path

    def _first_occurrence(self, idx: np.ndarray) -> np.ndarray:
        """Mask of rows to keep: first occurrence within this rank, and not seen by a lower rank."""
        keep = np.zeros(idx.size, bool)
        if idx.size:
            _, first = np.unique(idx, return_index=True)
            keep[first] = True
        dist = distributed()
        if dist is not None and self.world_size > 1:
            seen: list[Any] = [None] * self.world_size
            dist.all_gather_object(seen, np.unique(idx))
            lower = np.concatenate([np.asarray(s, np.int64) for s in seen[: self.rank]] or [np.zeros(0, np.int64)])
            keep &= ~np.isin(idx, lower)
            self._all_seen = np.unique(np.concatenate([np.asarray(s, np.int64) for s in seen]))
        else:
            self._all_seen = np.unique(idx)
        return keep

    def _missing(self, kept: np.ndarray) -> np.ndarray:
        if self.n_examples is None:
            return np.zeros(0, np.int64)
        seen = np.zeros(self.n_examples, bool)
        bad = (self._all_seen < 0) | (self._all_seen >= self.n_examples)
        if bad.any():
            raise SoiError(f"example idx {int(self._all_seen[bad][0])} out of range [0, {self.n_examples}) "
                           f"in checkpoint {self.checkpoint}", path=self.run_dir)
        seen[self._all_seen] = True
        return np.flatnonzero(~seen)

    # ------------------------------------------------------------------ resume
    def _partial_dir(self) -> Path:
        return dynamics_dir(self.run_dir, self.mode) / PARTIAL_DIR

    def _my_partials(self) -> list[tuple[int, int, Path]]:
        """(checkpoint, step, path) of this rank's partial files."""
        folder = self._partial_dir()
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            m = _PARTIAL_RE.match(path.name)
            if m and int(m.group(2)) == self.rank:
                out.append((int(m.group(1)), int(m.group(3)), path))
        return out

    def _clear_partials(self, checkpoint: int | None = None, *, above_step: int | None = None) -> None:
        for ckpt, saved_step, path in self._my_partials():
            if (checkpoint is not None and ckpt == checkpoint) or (above_step is not None and saved_step > above_step):
                path.unlink(missing_ok=True)

    def save_partial(self, step: int) -> Path:
        """Persist the rows of the unfinished checkpoint (call when the trainer saves a checkpoint at ``step``)."""
        idx, rows, logits = self._rows()
        self._host = [(idx, rows)]
        self._logits = [logits] if self.keep_logits and logits else []  # rows may differ in width (multi-task)
        cols = {"idx": idx, **{name: rows[:, k] for k, name in enumerate(self.columns)}}
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
        if self.keep_logits:
            table = table.append_column("logits", pa.array([np.asarray(z, np.float32) for z in logits],
                                                            pa.list_(pa.float32())))
        name = f"ckpt-{self.checkpoint:06d}.rank-{self.rank:04d}.step-{step:012d}.parquet"
        path = self._partial_dir() / name
        write_parquet(path, table)
        for ckpt, _, old in self._my_partials():  # older partials of this checkpoint are now superseded
            if ckpt == self.checkpoint and old != path:
                old.unlink(missing_ok=True)
        return path

    def resume(self, step: int) -> int:
        """Restore the state saved by :meth:`save_partial` at ``step``; return the current checkpoint index.

        Parts and partials written after ``step`` (by the run that was interrupted) are discarded, so the
        resumed run rewrites them: nothing is lost or doubled.
        """
        folder = dynamics_dir(self.run_dir, self.mode)
        partial = None
        for ckpt, saved_step, path in self._my_partials():
            if saved_step == step:
                partial = (ckpt, path)
        done = set()  # checkpoints completed at or before `step` (by any rank)
        if folder.is_dir():
            for path in folder.iterdir():
                m = PART_RE.match(path.name)
                if m and _part_step(path) <= step:
                    done.add(int(m.group(1)))
        if partial is not None:
            self.checkpoint = partial[0]
            table = pq.read_table(partial[1])
            idx = to_numpy(table["idx"]).astype(np.int64)
            rows = np.stack([to_numpy(table[c]).astype(np.float32) for c in self.columns], 1)
            self._host = [(idx, rows)]
            self._logits = ([[np.asarray(z, np.float32) for z in table["logits"].to_pylist()]]
                            if self.keep_logits else [])
        else:  # resumed at a checkpoint boundary: continue after the parts already complete
            self.checkpoint = 0
            while self.checkpoint in done:
                self.checkpoint += 1
            self._host, self._logits = [], []
        self._device.clear()
        self._clear_partials(above_step=step)
        if folder.is_dir():  # parts of checkpoints not reached yet at `step` came from the interrupted run
            for path in folder.iterdir():
                m = PART_RE.match(path.name)
                if m and int(m.group(1)) >= self.checkpoint and int(m.group(2)) == self.rank:
                    path.unlink()
        return self.checkpoint

    def close(self) -> None:
        """Drop buffered rows of an unfinished checkpoint (nothing is written for it)."""
        self._device.clear()
        self._host.clear()
        self._logits.clear()


__all__ = ["EXTRA_COLUMNS", "PARTIAL_DIR", "ROW_COLUMNS", "DynamicsRecorder", "Fill", "distributed"]
