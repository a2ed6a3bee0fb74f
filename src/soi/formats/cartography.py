"""allenai/cartography training dynamics <-> soi run directories.

The format is the one written and read by allenai/cartography (Swayamdipta et al., 2020, "Dataset
Cartography: Mapping and Diagnosing Datasets with Training Dynamics", EMNLP;
https://github.com/allenai/cartography, ``cartography/selection/selection_utils.py`` and
``cartography/selection/train_dy_filtering.py``)::

    MODEL_DIR/
      training_dynamics/
        dynamics_epoch_0.jsonl    # one JSON object per line, in that epoch's (shuffled) training order:
        dynamics_epoch_1.jsonl    #   {"guid": 17, "logits_epoch_1": [0.12, -1.3, 2.2], "gold": 2}
        ...
      td_metrics.jsonl            # guid, index, threshold_closeness, confidence, variability,
                                  # correctness, forgetfulness (one line per example)

Import conventions
------------------
* soi ``idx`` is the position of an example in ``dynamics_epoch_0`` (cartography's ``index``); every
  later epoch is mapped to that order by a vectorised lookup of its guids (a dense table for compact
  integer guids, else ``pyarrow.compute.index_in``).
* checkpoint = epoch. The format does not record optimizer steps, so ``step`` is set to ``epoch + 1``
  (a placeholder, not a real step count; ``run.json`` says so under ``extra.import.step``).
* ``pred`` is the argmax of the float64 logits (ties to the lowest index, like ``np.argmax``) and
  ``p_gold`` the float32 softmax probability of the gold class, as cartography computes them
  (:func:`soi.store.writer.rows_from_logits`).
* Nothing is half-written: parts go to a hidden temporary directory beside ``run_dir`` that is renamed
  into place only after every epoch file was read and validated.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from soi._arrow import to_numpy
from soi._io import TMP_PREFIX, atomic_dir, atomic_path, relabel, temp_dir_for
from soi.analysis import metrics as M
from soi.errors import SoiError
from soi.store.meta import RUN_JSON, RunMeta
from soi.store.reader import Dynamics, iter_checkpoints, list_parts, load_dynamics
from soi.store.writer import RunWriter, examples_table

TD_DIR = "training_dynamics"
"""Folder of the per-epoch files inside a cartography model directory."""
TD_METRICS_FILE = "td_metrics.jsonl"
TD_METRICS_COLUMNS = (
    "guid",
    "index",
    "threshold_closeness",
    "confidence",
    "variability",
    "correctness",
    "forgetfulness",
)
"""Columns of cartography's ``td_metrics.jsonl``, in its order."""
EPOCH_FILE_RE = re.compile(r"^dynamics_epoch_(\d+)\.jsonl?$")

# Files are parsed one per worker thread, each in 4 MiB blocks: the parser's buffers stay small and are
# reused (a fresh process spends noticeably less time zeroing new pages than with one block per file).
# Record numbers in pyarrow's parse errors are block-relative, so they are only reported for files that
# fit in one block. Measured with benchmarks/bench_import_cartography.py.
_BLOCK_SIZE = 4 << 20
_MAX_CLASSES = np.iinfo(np.int16).max

GuidType = Literal["int", "str"]


def epoch_file_name(epoch: int) -> str:
    """cartography's file name of one epoch's dynamics."""
    return f"dynamics_epoch_{epoch}.jsonl"


def logits_field(epoch: int) -> str:
    """cartography's name of the logits field in epoch ``epoch``'s file."""
    return f"logits_epoch_{epoch}"


# --------------------------------------------------------------------------------------------- import


def find_epoch_files(src_dir: str | Path) -> list[Path]:
    """The epoch files ``dynamics_epoch_<E>.jsonl`` (E = 0..N-1, no gaps) of a cartography directory.

    ``src_dir`` is a cartography model directory containing ``training_dynamics/`` or that folder
    itself. ``.json`` is accepted as well as ``.jsonl`` (some cartography versions read that name).
    """
    src = Path(src_dir)
    if not src.exists():
        raise SoiError("cartography directory not found", path=src)
    if not src.is_dir():
        raise SoiError(f"expected a directory (a cartography model directory or its {TD_DIR}/ folder)",
                       path=src)
    folder = src / TD_DIR if (src / TD_DIR).is_dir() else src
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        m = EPOCH_FILE_RE.match(path.name)
        if m is None or not path.is_file():
            continue
        epoch = int(m.group(1))
        if epoch in files:
            raise SoiError(f"two files for epoch {epoch}: {files[epoch].name} and {path.name}", path=folder)
        files[epoch] = path
    if not files:
        raise SoiError(f"no dynamics_epoch_<E>.jsonl files; expected a cartography model directory "
                       f"containing {TD_DIR}/ or that folder itself", path=folder)
    last = max(files)
    missing = [e for e in range(last + 1) if e not in files]
    if missing:
        shown = ", ".join(str(e) for e in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SoiError(f"epoch(s) {shown} missing (no {epoch_file_name(missing[0])}); epoch files must be "
                       f"numbered 0..{last} without gaps", path=folder)
    return [files[e] for e in range(last + 1)]


@dataclass
class _Epoch:
    """One parsed and validated epoch file, rows in file order."""

    path: Path
    guids: pa.Array  # int64 or string
    guid_type: GuidType
    gold: np.ndarray  # int64 (n,)
    logits: np.ndarray  # float64 (n, C), C-contiguous

    def guid(self, i: int) -> str:
        return repr(self.guids[int(i)].as_py())


def _combine(col: pa.ChunkedArray) -> pa.Array:
    if col.num_chunks == 1:
        return col.chunk(0)
    return pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)


def _parse_message(exc: Exception, path: Path) -> str:
    """pyarrow's parse error on one line; its row number is block-relative, so keep it only when exact."""
    text = " ".join(str(exc).split())
    exact = path.stat().st_size <= _BLOCK_SIZE
    return re.sub(r"\s*in row (\d+)$", lambda m: f" (record {int(m.group(1)) + 1})" if exact else "", text)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _read_epoch(path: Path, epoch: int, id_field: str, use_threads: bool = False) -> _Epoch:
    """Parse one epoch file with pyarrow's C++ JSON reader and validate its columns (no Python row loop).

    ``use_threads`` parses the file's blocks in parallel too (when there are fewer files than cores).
    """
    field = logits_field(epoch)
    parse = pj.ParseOptions(explicit_schema=pa.schema([(field, pa.list_(pa.float64()))]))
    try:
        # A memory map parses straight from the page cache: no copy of the file into fresh (zeroed) pages.
        with pa.memory_map(str(path)) as source:
            table = pj.read_json(source, read_options=pj.ReadOptions(use_threads=use_threads, block_size=_BLOCK_SIZE),
                                 parse_options=parse)
    except OSError as exc:
        raise SoiError(f"cannot read file ({exc})", path=path) from None
    except pa.ArrowException as exc:
        raise SoiError(f"cannot parse as JSON lines: {_parse_message(exc, path)}", path=path) from None
    n = table.num_rows
    if n == 0:
        raise SoiError("no records", path=path)
    names = table.column_names

    def required(name: str, what: str) -> pa.Array:
        col = _combine(table.column(name)) if name in names else None
        if col is None or col.null_count == n:
            present = sorted(c for c in names if c != field or table.column(c).null_count < n)
            hint = ""
            if name == field and any(c.startswith("logits_epoch_") for c in present):
                hint = " -- is the file named after the wrong epoch?"
            elif name == id_field:
                hint = "; pass id_field (--id-field) if the example id is stored under another name"
            raise SoiError(f"missing field {name!r} ({what}); fields found: {present}{hint}", path=path)
        if col.null_count:
            i = _first(col.is_null().to_numpy(zero_copy_only=False))
            raise SoiError(f"field {name!r} missing or null in {col.null_count} record(s), e.g. record {i + 1}",
                           path=path)
        return col

    guids = required(id_field, "example id")
    if pa.types.is_integer(guids.type):
        try:
            guids, guid_type = guids.cast(pa.int64()), "int"
        except pa.ArrowInvalid:
            raise SoiError(f"field {id_field!r} has integers beyond the int64 range", path=path) from None
    elif pa.types.is_string(guids.type) or pa.types.is_large_string(guids.type):
        guids, guid_type = guids.cast(pa.string()), "str"
        try:  # pyarrow's JSON reader does not check string values; soi takes UTF-8 text only (docs/errors.md)
            guids.validate(full=True)
        except pa.ArrowInvalid:
            raise SoiError(f"field {id_field!r} holds text that is not valid UTF-8; soi reads UTF-8 text only",
                           path=path) from None
    else:
        raise SoiError(f"field {id_field!r} must hold integers or strings, found {guids.type}", path=path)

    gold_col = required("gold", "gold label index")
    if not pa.types.is_integer(gold_col.type):
        raise SoiError(f"field 'gold' must hold integer class indices, found {gold_col.type}", path=path)
    gold = to_numpy(gold_col).astype(np.int64, copy=False)

    logit_col = required(field, "logit vector")
    lengths = to_numpy(pc.list_value_length(logit_col))
    width = int(lengths[0])
    if (lengths != width).any():
        i = _first(lengths != width)
        raise SoiError(f"logits rows of unequal length: record {i + 1} (guid "
                       f"{guids[i].as_py()!r}) has {int(lengths[i])} values, record 1 has {width}", path=path)
    if width < 2:
        raise SoiError(f"logits need at least 2 classes, found {width} value(s) per record", path=path)
    if width > _MAX_CLASSES:
        raise SoiError(f"{width} classes per record is more than soi supports ({_MAX_CLASSES})", path=path)
    values = logit_col.flatten()
    if values.null_count:
        i = _first(values.is_null().to_numpy(zero_copy_only=False)) // width
        raise SoiError(f"NaN/inf logit (written as null) for guid {guids[i].as_py()!r} (record {i + 1})",
                       path=path)
    flat = to_numpy(values)
    if not np.isfinite(flat).all():
        i = _first(~np.isfinite(flat)) // width
        raise SoiError(f"non-finite logit (NaN/inf) for guid {guids[i].as_py()!r} (record {i + 1})", path=path)
    bad = (gold < 0) | (gold >= width)
    if bad.any():
        i = _first(bad)
        raise SoiError(f"gold label {int(gold[i])} of guid {guids[i].as_py()!r} out of range [0, {width})",
                       path=path)
    return _Epoch(path=path, guids=guids, guid_type=guid_type, gold=gold, logits=flat.reshape(n, width))


class _GuidIndex:
    """Position of each guid in epoch 0: a dense lookup table for compact integer ids, else a hash lookup
    (``pyarrow.compute.index_in``)."""

    def __init__(self, first: _Epoch) -> None:
        self.first = first
        self.guids = first.guids
        n = len(first.guids)
        self.lut: np.ndarray | None = None
        if first.guid_type == "int":
            ids = to_numpy(first.guids)
            self.lo = int(ids.min())
            span = int(ids.max()) - self.lo + 1
            if span <= 4 * n + 1024:
                rel = ids - self.lo
                counts = np.bincount(rel, minlength=span)
                if (counts > 1).any():
                    self._duplicate(int(np.flatnonzero(counts > 1)[0]) + self.lo)
                self.lut = np.full(span, -1, np.int64)
                self.lut[rel] = np.arange(n)
        if self.lut is None:
            pos = to_numpy(pc.index_in(first.guids, value_set=first.guids))
            dup = pos != np.arange(n)
            if dup.any():
                self._duplicate(first.guids[_first(dup)].as_py())

    def _duplicate(self, guid: Any) -> None:
        ids = self.guids
        rows = np.flatnonzero(pc.equal(ids, pa.scalar(guid, ids.type)).to_numpy(zero_copy_only=False))[:2]
        raise SoiError(f"duplicate guid {guid!r} (records {rows[0] + 1} and {rows[1] + 1})", path=self.first.path)

    def positions(self, guids: pa.Array) -> np.ndarray:
        """Epoch-0 position of each guid, -1 where the guid is not in epoch 0."""
        if self.lut is not None:
            rel = to_numpy(guids) - self.lo
            if rel.size and rel.min() >= 0 and rel.max() < self.lut.size:
                return self.lut[rel]
            inside = (rel >= 0) & (rel < self.lut.size)
            pos = np.full(rel.shape, -1, np.int64)
            pos[inside] = self.lut[rel[inside]]
            return pos
        return to_numpy(pc.index_in(guids, value_set=self.guids).fill_null(-1)).astype(np.int64, copy=False)


def _align(ep: _Epoch, index: _GuidIndex) -> tuple[np.ndarray, np.ndarray]:
    """Validate epoch ``ep`` against epoch 0; return its logits (Fortran order) and gold in epoch-0 order."""
    first = index.first
    n = len(first.guids)
    if ep.guid_type != first.guid_type:
        raise SoiError(f"guids are {ep.guid_type} here but {first.guid_type} in {first.path.name}", path=ep.path)
    if ep.logits.shape[1] != first.logits.shape[1]:
        raise SoiError(f"logits have {ep.logits.shape[1]} classes here but {first.logits.shape[1]} in "
                       f"{first.path.name}", path=ep.path)
    pos = index.positions(ep.guids)
    if (pos < 0).any():
        i = _first(pos < 0)
        raise SoiError(f"guid {ep.guid(i)} (record {i + 1}) is not in epoch 0 ({first.path.name}); "
                       f"{int((pos < 0).sum())} such guid(s)", path=ep.path)
    counts = np.bincount(pos, minlength=n)
    if (counts > 1).any():
        j = _first(counts > 1)
        rows = np.flatnonzero(pos == j)[:2]
        raise SoiError(f"duplicate guid {first.guid(j)} (records {rows[0] + 1} and {rows[1] + 1})", path=ep.path)
    if (counts == 0).any():
        j = _first(counts == 0)
        raise SoiError(f"{int((counts == 0).sum())} guid(s) of epoch 0 ({first.path.name}) missing, e.g. "
                       f"{first.guid(j)}", path=ep.path)
    if np.array_equal(pos, np.arange(n)):
        inv = None
        gold = ep.gold
    else:
        inv = np.empty(n, np.int64)
        inv[pos] = np.arange(n)
        gold = ep.gold[inv]
    if not np.array_equal(gold, first.gold):
        j = _first(gold != first.gold)
        raise SoiError(f"gold label of guid {first.guid(j)} is {int(gold[j])} here but {int(first.gold[j])} "
                       f"in {first.path.name}", path=ep.path)
    return _fortran(ep.logits, inv), first.gold


def _fortran(z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """``z[rows]`` in Fortran order: the row-wise max/argmax over a few classes is ~2x faster that way."""
    return np.asfortranarray(z) if rows is None else np.take(z.T, rows, axis=1).T


def _check_target(run_dir: Path, overwrite: bool) -> bool:
    """Check ``run_dir`` may be (re)placed; return whether it exists with content."""
    if not (run_dir.exists() or run_dir.is_symlink()):
        return False
    if not run_dir.is_dir():
        raise SoiError("exists and is not a directory", path=run_dir)
    if not any(run_dir.iterdir()):
        return False
    if not overwrite:
        raise SoiError("run directory already exists; pass --overwrite to replace it", path=run_dir)
    if not (run_dir / RUN_JSON).is_file():
        raise SoiError("exists and is not a soi run directory (no run.json); refusing to replace it", path=run_dir)
    return True


def _install(tmp: Path, run_dir: Path, overwrite: bool) -> None:
    """Move the finished temporary run directory into place (replacing an old run when allowed)."""
    if _check_target(run_dir, overwrite):
        old = run_dir.with_name(f"{TMP_PREFIX}{run_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(run_dir, old)
        os.replace(tmp, run_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if run_dir.is_dir():
            run_dir.rmdir()  # empty
        os.replace(tmp, run_dir)


@dataclass
class _Target:
    """What every epoch task needs once epoch 0 is known: the guid index and the run writer."""

    index: _GuidIndex
    writer: RunWriter


def _import_epoch(epoch: int, path: Path, id_field: str, keep_logits: bool, task: str, use_threads: bool,
                  target: Future[_Target], make_target: Callable[[_Epoch], _Target]) -> None:
    """Parse, validate, align to epoch 0 and write one epoch (runs in a worker thread).

    Epoch 0 builds the shared :class:`_Target` (guid index, ``run.json``) and writes
    ``examples.parquet``; later epochs parse concurrently and then wait for the target.
    """
    if epoch == 0:
        try:
            ep = _read_epoch(path, epoch, id_field, use_threads)
            tgt = make_target(ep)
        except BaseException as exc:
            target.set_exception(exc)
            raise
        target.set_result(tgt)  # before writing examples.parquet, so the other epochs can go on
        tgt.writer.write_examples(examples_table(ep.guids.cast(pa.string()), ep.gold, task=task))
        logits, gold = _fortran(ep.logits, None), ep.gold
    else:
        ep = _read_epoch(path, epoch, id_field, use_threads)
        tgt = target.result()
        logits, gold = _align(ep, tgt.index)
    del ep
    tgt.writer.write_logits(checkpoint=epoch, step=epoch + 1, idx=np.arange(gold.shape[0], dtype=np.int32),
                            logits=logits, gold=gold, keep_logits=keep_logits)


def import_cartography(
    src_dir: str | Path,
    run_dir: str | Path,
    *,
    task: str = "task",
    labels: list[str] | None = None,
    id_field: str = "guid",
    keep_logits: bool = True,
    model: str | None = None,
    setting: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Import allenai/cartography training dynamics into a new soi run directory.

    Parameters
    ----------
    src_dir : cartography model directory (containing ``training_dynamics/``) or that folder itself,
        holding ``dynamics_epoch_0.jsonl`` .. ``dynamics_epoch_<E-1>.jsonl``.
    run_dir : run directory to create (``overwrite=True`` replaces an existing soi run).
    task : task name of all examples.
    labels : label names in class-index order; default ``class_0``, ``class_1``, ...
    id_field : field holding the example id (cartography's ``id_field``, default ``guid``).
    keep_logits : store the full logit vectors (needed by :func:`export_cartography`).
    model, setting : recorded in ``run.json``.

    Returns
    -------
    ``run_dir``. ``run.json`` gets ``extra.import`` = {format, source, guid_type, id_field, examples,
    epochs, classes, step}.

    Raises
    ------
    SoiError
        On any problem with the files (missing fields, ragged or non-finite logits, gold out of range or
        changing across epochs, duplicate/missing/extra guids, epoch gaps); nothing is left behind.

    Notes
    -----
    Epoch files are parsed one per worker thread by pyarrow's C++ JSON reader; guids are matched to
    epoch 0 with a vectorised lookup; the parts are written into a hidden temporary directory that is
    renamed to ``run_dir`` once every epoch was validated and written.
    """
    src = Path(src_dir)
    run_dir = Path(run_dir)
    if not task:
        raise SoiError("task name must not be empty")
    label_names = list(labels) if labels is not None else None
    files = find_epoch_files(src)
    _check_target(run_dir, overwrite)

    def make_target(first: _Epoch) -> _Target:
        n, width = first.logits.shape
        if label_names is not None and len(label_names) != width:
            raise SoiError(f"{len(label_names)} label name(s) given but the logits have {width} classes",
                           path=first.path)
        index = _GuidIndex(first)
        meta = RunMeta(
            tasks={task: label_names or [f"class_{i}" for i in range(width)]},
            recording_mode="train-pass",
            checkpoint_unit="epoch",
            model=model,
            setting=setting,
            extra={"import": {
                "format": "cartography",
                "source": str(src.absolute()),
                "guid_type": first.guid_type,
                "id_field": id_field,
                "examples": int(n),
                "epochs": len(files),
                "classes": int(width),
                "step": "not recorded by cartography; step = epoch + 1",
            }},
        )
        return _Target(index=index, writer=RunWriter(tmp, meta))

    parent = run_dir.absolute().parent
    missing_parents = [p for p in (parent, *parent.parents) if not p.exists()]
    tmp = temp_dir_for(run_dir.absolute())
    target: Future[_Target] = Future()
    try:
        cores = pa.cpu_count()
        workers = max(1, min(len(files), cores))
        with ThreadPoolExecutor(workers, thread_name_prefix="soi-import") as pool:
            jobs = [pool.submit(_import_epoch, e, path, id_field, keep_logits, task, len(files) < cores, target,
                                make_target)
                    for e, path in enumerate(files)]
            try:
                for job in jobs:  # in epoch order, so the first bad file is the one reported
                    job.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                with contextlib.suppress(InvalidStateError):  # unblock epochs waiting for epoch 0
                    target.set_exception(CancelledError())
                raise
        _install(tmp, run_dir, overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing_parents:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):  # full disk, read-only folder: name the run, not the temporary folder
            raise relabel(exc, run_dir) from None
        raise
    return run_dir


# --------------------------------------------------------------------------------------------- export


def _stored_guids(dyn: Dynamics, rows: np.ndarray, run_dir: Path) -> np.ndarray:
    """Example ids of ``rows`` as cartography guids: int64 if the run was imported with integer guids."""
    ids = _combine(dyn.examples["example_id"]).take(pa.array(rows))
    info = dyn.meta.extra.get("import") if isinstance(dyn.meta.extra, dict) else None
    if isinstance(info, dict) and info.get("format") == "cartography" and info.get("guid_type") == "int":
        try:
            return ids.cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            raise SoiError("run.json says the guids are integers (extra.import.guid_type) but example_id "
                           "holds non-integer values", path=run_dir / RUN_JSON) from None
    return ids.to_numpy(zero_copy_only=False)


def _checkpoint_logits(table: pa.Table, ckpt: int, n: int, rows: np.ndarray, width: int, path: Path,
                       ids: np.ndarray) -> np.ndarray:
    """Dense float32 (len(rows), width) logits of one checkpoint, in ``rows`` order."""
    idx = table["idx"].to_numpy().astype(np.int64, copy=False)
    col = _combine(table["logits"])
    if col.null_count:
        raise SoiError(f"checkpoint {ckpt} has {col.null_count} row(s) without a logit vector", path=path)
    where = np.empty(n, np.int64)
    where[idx] = np.arange(idx.size)
    sel = where[rows]  # row in the part of each exported example
    offsets = col.offsets.to_numpy()
    lengths = offsets[1:] - offsets[:-1]
    bad = lengths[sel] != width
    if bad.any():
        i = _first(bad)
        raise SoiError(f"logit vector of example {ids[i]!r} has {int(lengths[sel[i]])} values at checkpoint "
                       f"{ckpt}, expected {width}", path=path)
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[sel][:, None] + np.arange(width)]


def export_cartography(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    include_ci: bool = False,
    task: str | None = None,
) -> Path:
    """Write a soi run as allenai/cartography files (``training_dynamics/`` and ``td_metrics.jsonl``).

    ``out_dir/training_dynamics/dynamics_epoch_<e>.jsonl`` holds ``guid``, ``logits_epoch_<e>`` and
    ``gold`` per example (one file per checkpoint, examples in ``idx`` order), written with pandas
    ``to_json(orient="records", lines=True)`` like cartography's ``log_training_dynamics``. Guids are
    integers when the run was imported from cartography with integer guids, else strings.
    ``out_dir/td_metrics.jsonl`` has cartography's columns (guid, index, threshold_closeness, confidence,
    variability, correctness, forgetfulness; ``train_dy_filtering.compute_train_dy_metrics``), computed
    with :mod:`soi.analysis.metrics` from the stored ``p_gold`` and ``pred``.

    Parameters
    ----------
    run_dir : soi run recorded or imported with full logit vectors (``keep_logits``).
    out_dir : cartography "model directory" to write (files are replaced atomically).
    include_ci : cartography's ``--include_ci`` variability, ``sqrt(var + var^2 / (E - 1))``.
    task : export only this task's examples; required for multi-task runs whose tasks have different
        numbers of labels (a cartography file has one logit width).
    """
    import pandas as pd

    run_dir = Path(run_dir)
    out = Path(out_dir)
    dyn = load_dynamics(run_dir)
    meta = dyn.meta
    codes, names = dyn.group_codes("task")
    if task is not None:
        if task not in meta.tasks:
            raise SoiError(f"unknown task {task!r}; run.json has {sorted(meta.tasks)}", path=run_dir)
        if task not in names:
            raise SoiError(f"run has no examples of task {task!r}", path=run_dir)
        rows = np.flatnonzero(codes == names.index(task))
        width = meta.num_labels(task)
    else:
        widths = {t: meta.num_labels(t) for t in names}
        if len(set(widths.values())) > 1:
            raise SoiError(f"tasks have different numbers of labels {widths}; cartography files hold one logit "
                           f"width, so export one task at a time (--task)", path=run_dir)
        rows = np.arange(dyn.n_examples)
        width = next(iter(widths.values())) if widths else 2
    if rows.size == 0:
        raise SoiError("run has no examples to export", path=run_dir)

    parts = list_parts(run_dir)
    for ckpt, paths in sorted(parts.items()):
        for path in paths:
            if "logits" not in pq.read_schema(path).names:
                raise SoiError(f"run has no logit vectors (checkpoint {ckpt}); cartography files need them -- "
                               f"record with keep_logits=True or import with --keep-logits", path=path)
    n_ckpt = dyn.n_checkpoints
    if include_ci and n_ckpt < 2:
        raise SoiError("variability with include_ci needs at least 2 checkpoints; the run has 1", path=run_dir)
    td = out / TD_DIR
    if td.is_dir():
        stale = sorted(p.name for p in td.iterdir()
                       if (m := EPOCH_FILE_RE.match(p.name)) and int(m.group(1)) >= n_ckpt)
        if stale:
            raise SoiError(f"already holds {stale[0]}, which this export ({n_ckpt} epochs) would not replace; "
                           f"remove it or choose another folder", path=td)

    guids = _stored_guids(dyn, rows, run_dir)
    gold = dyn.gold[rows].astype(np.int64)
    # written as a set: training_dynamics/ is built in a temporary folder that replaces it as a unit, and
    # td_metrics.jsonl is moved in after it, so a failure (full disk, ...) leaves the previous export as it was
    with contextlib.ExitStack() as stack:
        metrics_tmp = stack.enter_context(atomic_path(out / TD_METRICS_FILE))
        td_tmp = stack.enter_context(atomic_dir(td))
        for ckpt, table in iter_checkpoints(run_dir, columns=["idx", "logits"]):
            where = parts[ckpt][0].parent if len(parts[ckpt]) > 1 else parts[ckpt][0]
            z = _checkpoint_logits(table, ckpt, dyn.n_examples, rows, width, where, guids)
            frame = pd.DataFrame({"guid": guids, logits_field(ckpt): list(z.astype(np.float64)), "gold": gold})
            frame.to_json(td_tmp / epoch_file_name(ckpt), orient="records", lines=True)
            del frame, z
        _td_metrics_frame(dyn, rows, guids, include_ci).to_json(metrics_tmp, orient="records", lines=True)
    return out


def _td_metrics_frame(dyn: Dynamics, rows: np.ndarray, guids: np.ndarray, include_ci: bool) -> Any:
    """cartography's ``td_metrics.jsonl`` columns for the exported rows."""
    import pandas as pd

    p_gold = dyn.p_gold[rows]
    correct = dyn.correct[rows]
    conf = M.confidence(p_gold)
    frame = pd.DataFrame({
        "guid": guids,
        "index": np.arange(rows.size),
        "threshold_closeness": M.threshold_closeness(conf),
        "confidence": conf,
        "variability": M.variability(p_gold, include_ci=include_ci),
        "correctness": M.correctness(correct),
        "forgetfulness": M.forgetfulness(correct),
    }, columns=list(TD_METRICS_COLUMNS))
    return frame
