"""Out-of-core analysis: ``soi analyze`` / ``compare`` / ``select`` streamed over example shards.

Partition: example ranges ``lo .. hi`` of ``idx`` (:mod:`soi.store.shards`), cut at the dynamics parts' row-group
edges (one row group per :data:`soi.store.writer.ROW_BLOCK` examples in parts written by soi), each shard small
enough for the memory bound. Every per-example quantity of :func:`soi.analysis.per_example.per_example_table` is
a function of one example's row, so a shard's table is computed by the very same code on a shard's dense
arrays (same layout as the in-memory path) and the rows are **bit-identical** to the in-memory ones.

The per-shard step :func:`analyze_shard` is a pure function of the files and ``(lo, hi)``; shards run in a
thread pool (Parquet decoding and the NumPy kernels release the GIL) and are merged in ``idx`` order:

* the per-example rows are appended to ``per_example.parquet`` (one row group per shard);
* the summary's counts and per-checkpoint accuracies are integer sums; the mean confidence per group is
  accumulated *in the same order* as the in-memory ``np.bincount`` (each shard's sum starts from the running
  total), so the summary is equal to the in-memory one, float for float;
* ``example_id`` uniqueness is checked with 64-bit hashes (spilled to disk in hash buckets when they do not fit
  the memory bound) and confirmed on the ids themselves.

Memory: about ``BASE_BYTES`` plus ``(workers + 2)`` shards of :func:`bytes_per_example` each (one shard per worker,
one queued ahead so that no worker waits while the main thread merges and writes, one being written), plus 16 bytes per
example for the id check (or a bucket of it), plus whatever ``keep_columns`` holds (compare / select).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from soi._arrow import to_numpy
from soi._io import atomic_dir, write_json
from soi.analysis.categories import SOI_CATEGORIES, CategoryRules
from soi.analysis.per_example import (
    GROUP_KEYS,
    PER_EXAMPLE_FILE,
    SUMMARY_FILE,
    Analysis,
    analyze_run,
    group_entry,
    group_sums,
    per_example_table,
    summary_fields,
)
from soi.errors import SoiError
from soi.store.meta import ANALYSIS_DIR, EXAMPLES_FILE
from soi.store.reader import tag_codes
from soi.store.shards import ShardPlan, plan_shards, read_shard

BASE_BYTES = 300 * 2**20
"""Memory of the process before any shard: interpreter, NumPy, pyarrow, the plan (measured ~260 MB)."""
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
JOINT_GROUPS = 1 << 16
"""Up to this many (task, source, language) combinations, a shard's summary statistics are
counted once over the joint code and summed per tag; beyond, per tag."""
COMPARE_COLUMNS = ("idx", "example_id", "gold", "final_correct", "soi", *GROUP_KEYS)
"""Per-example columns :func:`soi.analysis.transitions.compare_tables` needs."""


def parse_memory(value: str | int) -> int:
    """Bytes of a memory size: an integer (bytes) or ``"2GB"``, ``"1.5G"``, ``"800MiB"`` (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _MEMORY_RE.match(str(value))
        if not m:
            raise SoiError(f"memory limit: cannot parse {value!r}; use e.g. 2GB, 1500MB or a number of bytes")
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise SoiError(f"memory limit must be positive, got {value!r}")
    return size


def bytes_per_example(n_checkpoints: int) -> int:
    """Peak bytes per example of one shard in flight (dense arrays, Arrow reads, metrics, the output rows).

    Measured ~270 bytes at 10 checkpoints (1M-example shard: 574 MB peak RSS vs ~300 MB for a small one);
    the estimate leaves ~1.6x headroom.
    """
    return 24 * n_checkpoints + 200


AHEAD = 1
"""Shards submitted beyond one per worker: a worker that finishes while the main thread merges and writes the
previous shard starts the next one at once instead of waiting for the main thread to hand it out."""


def shard_size_for(memory_limit: int, n_checkpoints: int, n_examples: int, workers: int) -> int:
    """Examples per shard so that ``workers + 2`` shards in flight (:data:`AHEAD`) and the id check fit
    ``memory_limit`` bytes."""
    ids = min(8 * n_examples, max(0, memory_limit - BASE_BYTES) // 4)
    budget = memory_limit - BASE_BYTES - ids
    size = budget // ((workers + AHEAD + 1) * bytes_per_example(n_checkpoints))
    if size < 1024:
        need = BASE_BYTES + ids + 1024 * (workers + AHEAD + 1) * bytes_per_example(n_checkpoints)
        raise SoiError(f"memory limit {memory_limit / 2**20:.0f} MiB is too small for {workers} worker(s); "
                       f"need at least {math.ceil(need / 2**20)} MiB")
    return int(size)


TEMP_BYTES = 24 * 2**20
"""Largest (examples x checkpoints) float64 array a shard's kernels should make: under glibc's 32 MiB mmap
threshold, so temporaries are reused from the worker thread's heap instead of fresh pages (which the kernel zeroes
for every shard). Measured at 10M x 10 (5 alternating pairs, load 6-7): shards of 262,144 examples instead of
995,972 take 2.0-2.8 s of system time instead of 3.1-5.3 s, the same user time (~7.6 s), ~10 % less CPU in all
and half the peak RSS (611-648 vs 1,270-1,406 MiB)."""


def preferred_shard_size(plan: ShardPlan) -> int:
    """The shard size below the memory bound's that is fastest: (examples x checkpoints) float64 arrays of at most
    :data:`TEMP_BYTES`, but never less than the run's longest row group (a row group cut in pieces is decoded once
    per piece)."""
    edges = np.unique(np.concatenate([np.asarray(plan.grid, np.int64), [0, plan.n_examples]]))
    block = int(np.diff(edges).max()) if edges.size > 1 else plan.n_examples
    return max(1, block, TEMP_BYTES // (8 * max(1, plan.n_checkpoints)))


# ------------------------------------------------------------------------------------------- example ids
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


_WORD_MASKS = np.asarray([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], np.uint64)
"""``_WORD_MASKS[k]``: the low ``k`` bytes of a little-endian 64-bit word."""


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hash of each string (uint64), vectorised over rows; a string's hash depends on its bytes only.

    FNV-1a over the string's 8-byte little-endian words (the last one zero-padded; an empty string is one zero
    word), seeded with its length, then the murmur3 finaliser.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        ids = ids.cast(pa.large_string())
    n = len(ids)
    width = 8 if pa.types.is_large_string(ids.type) else 4
    bufs = ids.buffers()
    offsets = np.frombuffer(bufs[1], f"<i{width}", count=n + 1, offset=ids.offset * width).astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    length = np.diff(offsets)
    words = np.maximum(1, -(-length // 8))
    out = np.empty(n, np.uint64)
    step = 1 << 20
    with np.errstate(over="ignore"):
        for a in range(0, n, step):
            b = min(n, a + step)
            base, end = int(offsets[a]), int(offsets[b])
            buf = np.zeros(end - base + 8, np.uint8)
            buf[:end - base] = data[base:end]
            # every byte position read as the start of a little-endian uint64 (an unaligned, overlapping view)
            at = np.ndarray((buf.size - 7,), dtype="<u8", buffer=buf, strides=(1,))
            start, ln, wd = offsets[a:b] - base, length[a:b], words[a:b]
            h = _FNV_OFFSET ^ ln.astype(np.uint64)
            for j in range(int(wd.max())):
                active = None if j == 0 else wd > j  # strings with a word j
                if active is not None and active.mean() < 0.25:  # few long strings: work on those rows only
                    rows = np.flatnonzero(active)
                    w = at[start[rows] + 8 * j] & _WORD_MASKS[np.minimum(ln[rows] - 8 * j, 8)]
                    h[rows] = (h[rows] ^ w) * _FNV_PRIME
                    continue
                w = at[np.minimum(start + 8 * j, at.size - 1)] & _WORD_MASKS[np.clip(ln - 8 * j, 0, 8)]
                hj = (h ^ w) * _FNV_PRIME
                h = hj if active is None else np.where(active, hj, h)
            h ^= h >> np.uint64(33)  # murmur3 finaliser: spread the low bits into the high ones (bucket index)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            out[a:b] = h
    return out


class IdCheck:
    """Exact ``example_id`` uniqueness over shards: hashes in memory, or in hash buckets on disk."""

    def __init__(self, n: int, budget: int, folder: Path) -> None:
        self.bits = max(0, math.ceil(math.log2(max(1, 24 * n / max(budget, 1)))))
        self.parts: list[np.ndarray] = []
        self.folder = folder

    def add(self, lo: int, hashes: np.ndarray) -> None:
        if self.bits == 0:  # in memory: shards arrive in idx order, so a hash's position is its idx
            self.parts.append(hashes)
            return
        idx = np.arange(lo, lo + hashes.size, dtype=np.int64)
        bucket = (hashes >> np.uint64(64 - self.bits)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        edges = np.searchsorted(bucket[order], np.arange(2**self.bits + 1))
        for b in range(2**self.bits):
            sel = order[edges[b]:edges[b + 1]]
            if sel.size:
                with open(self.folder / f"ids-{b:05d}.bin", "ab") as fh:
                    np.stack([hashes[sel].view(np.int64), idx[sel]], axis=1).tofile(fh)

    def _buckets(self):
        if self.bits == 0:
            if self.parts:
                hashes = np.concatenate(self.parts)
                self.parts = []
                yield hashes, np.arange(hashes.size, dtype=np.int64)
            return
        for path in sorted(self.folder.glob("ids-*.bin")):
            pairs = np.fromfile(path, np.int64).reshape(-1, 2)
            yield pairs[:, 0].view(np.uint64), pairs[:, 1]

    def check(self, plan: ShardPlan) -> None:
        """Raise on the first true duplicate (hash collisions of distinct ids are confirmed and ignored)."""
        path = plan.run_dir / EXAMPLES_FILE
        for hashes, idx in self._buckets():
            h = np.sort(hashes)  # no index sort unless some hash repeats (rare: a duplicate or a collision)
            if not (h[1:] == h[:-1]).any():
                continue
            order = np.argsort(hashes, kind="stable")
            h = hashes[order]
            same = np.flatnonzero(h[1:] == h[:-1])
            candidates = np.unique(np.concatenate([idx[order][same], idx[order][same + 1]]))
            ids = _ids_at(plan, candidates)
            seen: dict[str, int] = {}
            for i in np.argsort(candidates, kind="stable"):
                if ids[i] in seen:
                    raise SoiError(f"duplicate example_id {ids[i]!r}", path=path)
                seen[ids[i]] = int(candidates[i])


def _ids_at(plan: ShardPlan, rows: np.ndarray) -> list[str]:
    starts = plan.example_starts
    groups = np.searchsorted(starts, rows, side="right") - 1
    out: list[str] = [""] * rows.size
    with pq.ParquetFile(plan.run_dir / EXAMPLES_FILE) as pf:
        for g in np.unique(groups).tolist():
            sel = np.flatnonzero(groups == g)
            col = pf.read_row_group(g, columns=["example_id"])["example_id"]
            for k, v in zip(sel.tolist(), col.take(pa.array(rows[sel] - starts[g])).to_pylist(), strict=True):
                out[k] = v
    return out


# ------------------------------------------------------------------------------------------- per shard
@dataclass(frozen=True, eq=False)
class GroupPart:
    """One tag's statistics in one shard: local group names (sorted), codes, sizes and integer sums."""

    names: list[str]
    codes: np.ndarray
    n: np.ndarray
    accuracy_sum: np.ndarray
    """(G, E) correct predictions per group and checkpoint."""
    counts: dict[str, np.ndarray]
    """Category column -> (G, K) examples per group and category."""


@dataclass(frozen=True, eq=False)
class ShardResult:
    """What :func:`analyze_shard` returns for examples ``lo .. hi``."""

    lo: int
    hi: int
    steps: np.ndarray
    table: pa.Table
    groups: dict[str, GroupPart]
    id_hash: np.ndarray


def _label_names(plan: ShardPlan) -> list[str]:
    return list(dict.fromkeys(lab for t in plan.tasks for lab in plan.meta.tasks[t]))


def _global_gold_label(table: pa.Table, labels: list[str]) -> pa.Table:
    """Re-base the ``gold_label`` dictionary on the labels of all the run's tasks (a shard may lack a task)."""
    col = table["gold_label"].combine_chunks()
    if not pa.types.is_dictionary(col.type):
        return table
    local = col.dictionary.to_pylist()
    if local == labels:
        return table
    pos = {name: i for i, name in enumerate(labels)}
    remap = np.asarray([pos[x] for x in local], np.int32)
    codes = remap[to_numpy(col.indices).astype(np.int64)]
    arr = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(labels, pa.string()))
    return table.set_column(table.schema.get_field_index("gold_label"), "gold_label", arr)


def _text_columns(table: pa.Table, examples: pa.Table, keep: tuple[str, ...]) -> pa.Table:
    """Keep ``text``/``text_pair`` exactly when the whole run has a non-null value (not just this shard)."""
    for name in ("text", "text_pair"):
        if name in keep and name not in table.column_names:
            table = table.append_column(name, examples[name])
        elif name not in keep and name in table.column_names:
            table = table.drop_columns([name])
    return table


def analyze_shard(plan: ShardPlan, lo: int, hi: int, *, late_fraction: float = 0.5, include_ci: bool = False,
                  rules: CategoryRules | None = None, buffers: dict[str, np.ndarray] | None = None) -> ShardResult:
    """Per-example rows and summary statistics of examples ``lo .. hi`` (pure: files and range in, values out).

    This is the step to map with a cluster engine over ``plan.bounds`` (docs/store.md, "Large stores").
    ``buffers``: reuse the dense float arrays of the previous shard analysed with the same dict
    (:func:`soi.store.shards.read_shard`; the returned rows never reference them).
    """
    dyn = read_shard(plan, lo, hi, buffers=buffers)
    table = per_example_table(dyn, late_fraction=late_fraction, include_ci=include_ci, rules=rules)
    table = _text_columns(_global_gold_label(table, _label_names(plan)), dyn.examples, plan.text_columns)
    correct = dyn.correct
    cat_cols = {"soi": len(SOI_CATEGORIES)} | ({"category": len(rules.names)} if rules is not None else {})
    cats = {c: to_numpy(table[c].combine_chunks().indices).astype(np.int64) for c in cat_cols}
    m = hi - lo
    keyed = {"all": (np.zeros(m, np.int64), ["all"])}
    for key in GROUP_KEYS:
        c32, names = tag_codes(dyn.examples, key)
        keyed[key] = (c32.astype(np.int64), names)
    sizes = [len(keyed[k][1]) for k in GROUP_KEYS]
    groups: dict[str, GroupPart] = {}
    cat_codes = {c: (cats[c], k) for c, k in cat_cols.items()}
    if math.prod(sizes) <= JOINT_GROUPS:
        # one pass per checkpoint over the joint (task, source, language) code, then marginal sums per tag
        joint = np.zeros(m, np.int64)
        for key, size in zip(GROUP_KEYS, sizes, strict=True):
            joint = joint * size + keyed[key][0]
        n, counts, acc = group_sums(joint, math.prod(sizes), cat_codes, correct)
        n, acc = n.reshape(sizes), acc.reshape(*sizes, -1)
        counts = {c: v.reshape(*sizes, -1) for c, v in counts.items()}
        for key in ("all", *GROUP_KEYS):
            axes = tuple(i for i, k in enumerate(GROUP_KEYS) if k != key)
            codes, names = keyed[key]
            shape = (len(names),)
            groups[key] = GroupPart(names, codes, n.sum(axis=axes).reshape(shape),
                                    acc.sum(axis=axes).reshape(*shape, -1),
                                    {c: v.sum(axis=axes).reshape(*shape, -1) for c, v in counts.items()})
    else:  # many tag combinations: per tag
        for key, (codes, names) in keyed.items():
            n, counts, acc = group_sums(codes, len(names), cat_codes, correct)
            groups[key] = GroupPart(names, codes, n, acc, counts)
    return ShardResult(lo, hi, dyn.steps, table, groups, id_hashes(dyn.examples["example_id"]))


_THREAD = threading.local()


def _analyze_in_thread(plan: ShardPlan, lo: int, hi: int, **kw: Any) -> ShardResult:
    """:func:`analyze_shard` with this worker thread's dense buffers (freed with the pool's threads)."""
    if not hasattr(_THREAD, "buffers"):
        _THREAD.buffers = {}
    return analyze_shard(plan, lo, hi, buffers=_THREAD.buffers, **kw)


# ------------------------------------------------------------------------------------------- merging
class _GroupSums:
    """Running per-group sums of one tag over shards (groups appear in the order first seen)."""

    def __init__(self, e: int, cat_cols: dict[str, int]) -> None:
        self.index: dict[str, int] = {}
        self.n = np.zeros(0, np.int64)
        self.acc = np.zeros((0, e), np.int64)
        self.counts = {c: np.zeros((0, k), np.int64) for c, k in cat_cols.items()}
        self.conf = np.zeros(0, np.float64)

    def add(self, part: GroupPart, conf: np.ndarray) -> None:
        gmap = np.asarray([self.index.setdefault(name, len(self.index)) for name in part.names], np.int64)
        grow = len(self.index) - self.n.size
        if grow:
            self.n = np.concatenate([self.n, np.zeros(grow, np.int64)])
            self.acc = np.concatenate([self.acc, np.zeros((grow, self.acc.shape[1]), np.int64)])
            self.counts = {c: np.concatenate([v, np.zeros((grow, v.shape[1]), np.int64)])
                           for c, v in self.counts.items()}
            self.conf = np.concatenate([self.conf, np.zeros(grow)])
        self.n[gmap] += part.n
        self.acc[gmap] += part.accuracy_sum
        for c, v in part.counts.items():
            self.counts[c][gmap] += v
        # np.bincount adds weights one by one in row order; starting each group from its running total
        # continues exactly the in-memory summation (0.0 + total == total), so the sums are equal bit for bit
        g = self.n.size
        self.conf = np.bincount(np.concatenate([np.arange(g), gmap[part.codes]]),
                                weights=np.concatenate([self.conf, conf]), minlength=g)

    def stats(self, category_column: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Group dicts as :func:`soi.analysis.per_example.summarize` writes them, groups sorted by name."""
        counts = self.counts[category_column]
        return {name: group_entry(int(self.n[g]), counts[g], names, self.acc[g], self.conf[g])
                for name, g in sorted(self.index.items())}


def _summary(plan: ShardPlan, sums: dict[str, _GroupSums], steps: np.ndarray, *, late_fraction: float,
             category_column: str, names: tuple[str, ...]) -> dict[str, Any]:
    groups = {key: sums[key].stats(category_column, names) for key in ("all", *GROUP_KEYS)}
    return summary_fields(plan.meta, n_examples=plan.n_examples, checkpoints=list(plan.checkpoints),
                          steps=steps.tolist(), late_fraction=late_fraction, category_column=category_column,
                          names=names, groups=groups)


class ShardMerger:
    """Merge :class:`ShardResult` s, added in shard (``idx``) order, into the run's summary.

    The summary equals :func:`soi.analysis.per_example.analyze`'s (see the module doc for why the floats agree);
    :meth:`summary` also runs the exact ``example_id`` uniqueness check.

    Examples
    --------
    >>> merger = ShardMerger(plan)                                  # doctest: +SKIP
    >>> for res in results_in_shard_order:                          # doctest: +SKIP
    ...     merger.add(res)
    >>> merger.summary()["groups"]["all"]["all"]["shares"]          # doctest: +SKIP
    """

    def __init__(self, plan: ShardPlan, *, late_fraction: float = 0.5, include_ci: bool = False,
                 rules: CategoryRules | None = None, id_budget: int = 2**62, scratch: Path | None = None) -> None:
        self.plan, self.late_fraction, self.include_ci, self.rules = plan, late_fraction, include_ci, rules
        cat_cols = {"soi": len(SOI_CATEGORIES)} | ({"category": len(rules.names)} if rules is not None else {})
        self.sums = {key: _GroupSums(plan.n_checkpoints, cat_cols) for key in ("all", *GROUP_KEYS)}
        self._scratch = None if scratch is not None else tempfile.TemporaryDirectory(prefix=".tmp-soi-ids-")
        self.ids = IdCheck(plan.n_examples, id_budget, scratch or Path(self._scratch.name))
        self.steps: np.ndarray | None = None
        self.next_lo = 0

    def add(self, res: ShardResult) -> None:
        """Add the next shard (its ``lo`` must be the previous shard's ``hi``)."""
        if res.lo != self.next_lo:
            raise SoiError(f"shards must be merged in order: expected the shard starting at {self.next_lo}, "
                           f"got {res.lo}")
        self.next_lo = res.hi
        plan = self.plan
        if self.steps is None:
            self.steps = res.steps
        elif not np.array_equal(self.steps, res.steps):
            j = int(np.flatnonzero(self.steps != res.steps)[0])
            paths = plan.parts[plan.checkpoints[j]]
            raise SoiError(f"checkpoint {plan.checkpoints[j]} must have one 'step' value in all rows",
                           path=paths[0].path if len(paths) == 1 else paths[0].path.parent)
        conf = to_numpy(res.table["confidence"])
        for key, part in res.groups.items():
            self.sums[key].add(part, conf)
        self.ids.add(res.lo, res.id_hash)

    def summary(self) -> dict[str, Any]:
        """``summary.json`` of the merged shards (after the last one)."""
        if self.next_lo != self.plan.n_examples or self.steps is None:
            raise SoiError(f"merged examples 0..{self.next_lo} of {self.plan.n_examples}; add every shard first")
        try:
            self.ids.check(self.plan)
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()
        kw = {"late_fraction": self.late_fraction}
        summary = _summary(self.plan, self.sums, self.steps, category_column="soi", names=SOI_CATEGORIES, **kw)
        if self.rules is not None:
            summary["custom"] = _summary(self.plan, self.sums, self.steps, category_column="category",
                                         names=self.rules.names, **kw)
            summary["custom"]["rules"] = dict(self.rules.rules) | {"<default>": self.rules.default}
        summary["include_ci"] = self.include_ci
        return summary


DISCRETE_FLOATS = ("correctness_frac",)
"""Float per-example columns with at most E + 1 distinct values (dictionary-encoded in the streamed file)."""


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """Encodings of the streamed ``per_example.parquet`` (the same values as the in-memory writer's file).

    Integer columns delta-packed and not compressed (small counts pack to a few bits per value; zstd over plain
    int64 cost ~40 ms per million rows and column), tags as uncompressed dictionaries (RLE indices),
    ``example_id`` zstd, floats plain: ~35 % less encoding CPU than zstd everywhere, ~5 % more bytes. The float
    columns with few distinct values (:data:`DISCRETE_FLOATS`: ``correctness_frac`` = k / E) as dictionaries:
    13 % fewer bytes and 13 % less encoding CPU per shard (1M x 10).
    """
    ints = [f.name for f in schema if pa.types.is_integer(f.type)]
    return {"compression": {f.name: ("zstd" if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                                     else "none") for f in schema},
            "use_dictionary": [f.name for f in schema if pa.types.is_dictionary(f.type)
                               or f.name in DISCRETE_FLOATS],
            "column_encoding": {c: "DELTA_BINARY_PACKED" for c in ints},
            "write_statistics": False}


@dataclass(frozen=True)
class StreamInfo:
    """How a streamed analysis ran: shards, examples per shard, workers."""

    n_shards: int
    shard_size: int
    workers: int
    memory_limit: int | None


def stream_analysis(
    run_dir: str | Path,
    *,
    memory_limit: int | str | None = "2GB",
    workers: int | None = None,
    shard_size: int | None = None,
    late_fraction: float = 0.5,
    include_ci: bool = False,
    rules: CategoryRules | None = None,
    mode: str | None = None,
    max_checkpoints: int | None = None,
    write: bool = True,
    out: str | Path | None = None,
    keep_columns: Sequence[str] | None = None,
) -> tuple[Analysis, StreamInfo]:
    """Analyse a run shard by shard within ``memory_limit``; same outputs as :func:`~soi.analysis.analyze_run`.

    Parameters
    ----------
    run_dir : run directory
    memory_limit : bound on the process's memory (bytes or ``"2GB"``); sets the shard size (ignored when
        ``shard_size`` is given)
    workers : shards analysed at once (threads; default: the CPU count, at most the number of shards)
    shard_size : examples per shard (overrides the memory-based size)
    late_fraction, include_ci, rules, mode, max_checkpoints : as :func:`~soi.analysis.analyze_run`
    write : write ``analysis/per_example.parquet`` and ``summary.json`` (atomically, as one folder)
    out : the folder to write instead of ``RUN_DIR/analysis`` (``analysis-<mode>``)
    keep_columns : per-example columns to return in memory (``Analysis.table``); default none when
        ``write`` (an empty table), all columns otherwise -- only for runs whose table fits in memory

    Returns
    -------
    (Analysis, StreamInfo)
    """
    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"late_fraction must be in (0, 1], got {late_fraction}")
    if workers is not None and workers < 1:
        raise SoiError(f"workers must be >= 1, got {workers}")
    limit = parse_memory(memory_limit) if memory_limit is not None else None
    plan = plan_shards(run_dir, mode=mode, max_checkpoints=max_checkpoints)
    n, e = plan.n_examples, plan.n_checkpoints
    if n == 0:  # nothing to stream
        res = analyze_run(run_dir, late_fraction=late_fraction, include_ci=include_ci, rules=rules, mode=mode,
                          write=write, max_checkpoints=max_checkpoints)
        return res, StreamInfo(0, 0, 1, limit)
    n_workers = workers or max(1, os.cpu_count() or 1)
    if shard_size is None:
        shard_size = min(shard_size_for(limit, e, n, n_workers), preferred_shard_size(plan)) \
            if limit is not None else n
    plan = plan.with_shard_size(shard_size)
    n_workers = min(n_workers, len(plan.bounds))
    info = StreamInfo(len(plan.bounds), int(shard_size), n_workers, limit)
    keep = tuple(keep_columns) if keep_columns is not None else (() if write else None)
    kept: list[pa.Table] = []
    default_out = Path(run_dir) / (ANALYSIS_DIR if mode is None else f"{ANALYSIS_DIR}-{mode}")
    out_dir = Path(out) if out is not None else default_out
    id_budget = max(0, limit - BASE_BYTES) // 4 if limit is not None else 2**62
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_dir(out_dir)) if write else None
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".tmp-soi-ids-", dir=tmp if tmp is not None else None)))
        merger = ShardMerger(plan, late_fraction=late_fraction, include_ci=include_ci, rules=rules,
                             id_budget=id_budget, scratch=scratch)
        writer: pq.ParquetWriter | None = None
        pool = stack.enter_context(ThreadPoolExecutor(n_workers))
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        todo = iter(plan.bounds)
        pending: deque[Future[ShardResult]] = deque()

        def submit() -> None:
            b = next(todo, None)
            if b is not None:
                pending.append(pool.submit(_analyze_in_thread, plan, b[0], b[1], late_fraction=late_fraction,
                                           include_ci=include_ci, rules=rules))

        for _ in range(n_workers + AHEAD):
            submit()
        while pending:
            res = pending.popleft().result()
            submit()
            merger.add(res)
            if tmp is not None:
                if writer is None:
                    schema = res.table.schema
                    writer = pq.ParquetWriter(tmp / PER_EXAMPLE_FILE, schema, **_write_options(schema))
                    stack.callback(writer.close)
                table = res.table if res.table.schema.equals(schema) else res.table.cast(schema)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            if keep is None:
                kept.append(res.table)
            elif keep:
                kept.append(res.table.select([c for c in keep if c in res.table.column_names]))
            del res
        summary = merger.summary()
        summary["run"] = str(run_dir)
        if writer is not None:
            writer.close()
        if tmp is not None:  # the id scratch folder inside tmp is removed (stack order) before tmp moves in
            write_json(tmp / SUMMARY_FILE, summary)
    table = pa.concat_tables(kept) if kept else pa.table({})
    return Analysis(table=table, summary=summary), info


def select_rows(per_example: str | Path, rows: np.ndarray) -> pa.Table:
    """Rows ``rows`` (sorted row numbers) of a ``per_example.parquet`` written by :func:`stream_analysis`."""
    path = Path(per_example)
    with pq.ParquetFile(path) as pf:
        md = pf.metadata
        starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
        groups = np.searchsorted(starts, rows, side="right") - 1
        pieces = []
        for g in np.unique(groups).tolist():
            local = rows[groups == g] - starts[g]
            pieces.append(pf.read_row_group(g).take(pa.array(local)))
        if not pieces:
            return pf.schema_arrow.empty_table()
    return pa.concat_tables(pieces)


def analyze_seed_sets(paths: Sequence[str | Path], *, memory_limit: int | str | None = "2GB",
                      workers: int | None = None, late_fraction: float = 0.5,
                      max_checkpoints: int | None = None) -> list[Path]:
    """Stream-analyse every run of each run directory or seed folder into its ``analysis/`` (as ``soi analyze``).

    :func:`soi.analysis.compare.compare_runs` then reads only the columns it needs from those fresh files
    (its per-run cache), so a compare holds O(examples) columns, never (examples x checkpoints) arrays.
    Runs whose ``analysis/`` is already fresh for ``late_fraction`` are left alone. Returns the runs analysed.
    """
    from soi.analysis.seeds import resolve_seed_set

    if max_checkpoints is not None:
        raise SoiError("--memory-limit: --max-checkpoints is not supported (the streamed analyses are reused "
                       "through analysis/, which holds all checkpoints)")
    done = []
    for path in paths:
        for run in resolve_seed_set(path).runs:
            summary = Path(run) / ANALYSIS_DIR / SUMMARY_FILE
            table = Path(run) / ANALYSIS_DIR / PER_EXAMPLE_FILE
            if table.is_file() and summary.is_file() and _fresh(Path(run), late_fraction):
                continue
            stream_analysis(run, memory_limit=memory_limit, workers=workers, late_fraction=late_fraction)
            done.append(Path(run))
    return done


def _fresh(run: Path, late_fraction: float) -> bool:
    """``analysis/`` newer than the run's inputs and computed with ``late_fraction`` (what compare's cache reuses)."""
    out = run / ANALYSIS_DIR
    try:
        info = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        built = min((out / SUMMARY_FILE).stat().st_mtime, (out / PER_EXAMPLE_FILE).stat().st_mtime)
        inputs = [run / "run.json", run / EXAMPLES_FILE, run / "dynamics"]
        inputs += list((run / "dynamics").iterdir())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("late_fraction") == late_fraction and \
        not any(p.stat().st_mtime > built for p in inputs)


SAMPLE_STRATA = ("task", "source", "language", "soi")
"""Columns whose combinations stratify :func:`sample_examples` (groups and SOI category)."""


def sample_examples(per_example: str | Path, max_rows: int, *, seed: int = 0,
                    strata: Sequence[str] = SAMPLE_STRATA) -> pa.Table:
    """A stratified sample of a ``per_example.parquet``, read row group by row group (out of core).

    Every combination of ``strata`` values present (task, source, language, SOI category) gets a share of
    ``max_rows`` proportional to its size, and at least one row, so rare categories of small groups stay
    visible; within a stratum the rows with the smallest seeded hash of ``example_id`` are kept, so runs that
    share examples (the seeds of one setting) sample the same ids where their strata agree. Only the strata
    columns and a 64-bit key per row are held in memory (~12 bytes per example); the sampled rows are then read
    with all their columns, in row (``idx``) order.
    """
    if max_rows < 1:
        raise SoiError(f"max_rows must be >= 1, got {max_rows}")
    path = Path(per_example)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read Parquet file ({exc})", path=path) from None
    with pf:
        n = pf.metadata.num_rows
        if n <= max_rows:
            return pf.read()
        cols = [c for c in strata if c in pf.schema_arrow.names]
        vocab: dict[tuple[str, ...], int] = {}
        stratum = np.empty(n, np.int64)
        key = np.empty(n, np.uint64)
        mix = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        at = 0
        for g in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(g, columns=[*cols, "example_id"])
            m = t.num_rows
            codes = np.zeros(m, np.int64)
            names: list[list[str]] = []
            for c in cols:
                arr = t[c].combine_chunks()
                arr = arr if pa.types.is_dictionary(arr.type) else arr.cast(pa.string()).dictionary_encode()
                arr = arr.fill_null("") if arr.null_count else arr
                local = arr.dictionary.to_pylist()
                codes = codes * len(local) + to_numpy(arr.indices).astype(np.int64)
                names.append(local)
            # local joint code -> global stratum id (via the tuple of names)
            uniq, inv = np.unique(codes, return_inverse=True)
            ids = []
            for u in uniq.tolist():
                parts = []
                for local in reversed(names):
                    u, r = divmod(u, len(local))
                    parts.append(local[r])
                ids.append(vocab.setdefault(tuple(reversed(parts)), len(vocab)))
            stratum[at:at + m] = np.asarray(ids, np.int64)[inv]
            with np.errstate(over="ignore"):
                h = id_hashes(t["example_id"]) ^ mix
                h *= np.uint64(0xC4CEB9FE1A85EC53)
                h ^= h >> np.uint64(29)
            key[at:at + m] = h
            at += m
    sizes = np.bincount(stratum, minlength=len(vocab))
    quota = np.minimum(sizes, np.maximum(1, np.floor(max_rows * sizes / n + 0.5).astype(np.int64)))
    order = np.lexsort((key, stratum))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(n) - starts[stratum[order]]
    rows = np.sort(order[rank < quota[stratum[order]]])
    return select_rows(path, rows)


# ------------------------------------------------------------------------------------------- seed consensus
def _rows(pf: pq.ParquetFile, starts: np.ndarray, lo: int, hi: int, columns: list[str]) -> pa.Table:
    groups = np.flatnonzero((starts[1:] > lo) & (starts[:-1] < hi))
    table = pf.read_row_groups(groups.tolist(), columns=columns)
    return table.slice(lo - int(starts[groups[0]]), hi - lo)


def _soi_codes(table: pa.Table, path: Path) -> np.ndarray:
    col = table["soi"].combine_chunks()
    if pa.types.is_dictionary(col.type):
        pos = {name: i for i, name in enumerate(SOI_CATEGORIES)}
        names = col.dictionary.to_pylist()
        if any(x not in pos for x in names):
            raise SoiError("per-example table: column 'soi' holds values that are not SOI categories", path=path)
        return np.asarray([pos[x] for x in names], np.int8)[to_numpy(col.indices).astype(np.int64)]
    raise SoiError("per-example table: column 'soi' is not a category column", path=path)


def stream_consensus(path: str | Path, *, memory_limit: int | str | None = "2GB", workers: int | None = None,
                     late_fraction: float = 0.5, write: bool = True):
    """:func:`soi.analysis.seeds.analyze_seeds` out of core: the same ``consensus.parquet`` rows and ``summary.json``.

    Every seed is streamed into its ``analysis/`` (:func:`analyze_seed_sets`; fresh analyses are reused), then the
    seeds' per-example files are read range by range: the consensus rows of a range are
    :func:`~soi.analysis.seeds.consensus_table` of that range (a pure per-example kernel), appended to
    ``consensus.parquet``; the summary is :func:`~soi.analysis.seeds.consensus_summary` over the (seeds x examples)
    int8 code array and the tag columns (about ``seeds + 16`` bytes per example in memory). The seeds must list
    their examples in the same order (seeds of one setting share ``examples.parquet``); otherwise the error says
    so (the in-memory path aligns them by ``example_id``).
    """
    from soi.analysis.seeds import (
        CONSENSUS_FILE,
        MEAN_METRICS,
        SeedAnalysis,
        SeedData,
        consensus_summary,
        consensus_table,
        resolve_seed_set,
    )
    from soi.analysis.seeds import SUMMARY_FILE as SEEDS_SUMMARY
    from soi.store.meta import RunMeta
    from soi.store.writer import TAG_COLUMNS

    seed_set = resolve_seed_set(path)
    analyze_seed_sets([path], memory_limit=memory_limit, workers=workers, late_fraction=late_fraction)
    runs = list(seed_set.runs)
    files, infos = [], []
    for run in runs:
        table_path = run / ANALYSIS_DIR / PER_EXAMPLE_FILE
        summary = json.loads((run / ANALYSIS_DIR / SUMMARY_FILE).read_text(encoding="utf-8"))
        meta = RunMeta.load(run)
        infos.append({k: summary.get(k) for k in ("n_examples", "n_checkpoints", "early_cutoff")}
                     | {"setting": meta.setting, "seed": meta.seed, "model": meta.model, "tasks": meta.tasks})
        files.append(pq.ParquetFile(table_path))
    first = runs[0]
    for run, info in zip(runs[1:], infos[1:], strict=True):
        if info["tasks"] != infos[0]["tasks"]:
            raise SoiError(f"labels per task differ from {first.name} ({info['tasks']} vs {infos[0]['tasks']})",
                           path=run)
        if info["n_checkpoints"] != infos[0]["n_checkpoints"]:
            raise SoiError(f"{info['n_checkpoints']} checkpoints, but {first.name} has {infos[0]['n_checkpoints']}; "
                           "seeds of one setting must record the same checkpoints", path=run)
        if info["n_examples"] != infos[0]["n_examples"]:
            raise SoiError(f"{info['n_examples']} examples, but {first.name} has {infos[0]['n_examples']}; "
                           "seeds of one setting must record the same examples", path=run)
    n, s = int(infos[0]["n_examples"]), len(runs)
    starts = [np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
              for pf in files]
    names = files[0].schema_arrow.names
    columns = [c for c in ("example_id", *TAG_COLUMNS, "gold", "soi", "final_correct", *MEAN_METRICS) if c in names]
    codes = np.empty((s, n), np.int8)
    slim: list[pa.Table] = []
    out_dir = Path(path) / ANALYSIS_DIR
    with contextlib.ExitStack() as stack:
        for pf in files:
            stack.enter_context(pf)
        tmp = stack.enter_context(atomic_dir(out_dir)) if write else None
        writer: pq.ParquetWriter | None = None
        kept: list[pa.Table] = []
        for lo, hi in itertools.pairwise(starts[0].tolist()):
            tables = [_rows(pf, st, lo, hi, columns) for pf, st in zip(files, starts, strict=True)]
            ids = tables[0]["example_id"]
            for run, t in zip(runs[1:], tables[1:], strict=True):
                if not t["example_id"].equals(ids):
                    raise SoiError(f"example ids differ from {first.name} in rows {lo}..{hi}; the streamed consensus "
                                   "needs the seeds' examples in the same order (without --memory-limit they are "
                                   "aligned by example_id)", path=run)
                bad = np.flatnonzero(to_numpy(t["gold"]) != to_numpy(tables[0]["gold"]))
                if bad.size:
                    raise SoiError(f"gold labels differ from {first.name} for {bad.size} example(s) (e.g. "
                                   f"{ids[int(bad[0])].as_py()!r})", path=run)
            part_codes = np.stack([_soi_codes(t, run) for t, run in zip(tables, runs, strict=True)])
            codes[:, lo:hi] = part_codes
            final = np.stack([to_numpy(t["final_correct"]).astype(bool) for t in tables])
            shard = SeedData(seed_set=seed_set, label=seed_set.path.name, tables=tuple(tables), codes=part_codes,
                             final_correct=final, infos=tuple(infos), cached=(True,) * s)
            rows = consensus_table(shard)
            if tmp is not None:
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(tmp / CONSENSUS_FILE, rows.schema,
                                                                  compression="zstd"))
                writer.write_table(rows, row_group_size=max(1, rows.num_rows))
            else:
                kept.append(rows)
            slim.append(pa.table({c: tables[0][c] for c in (*TAG_COLUMNS, "example_id") if c in columns}
                                 | {"soi_consensus": rows["soi_consensus"]}))
        table = pa.concat_tables(slim).unify_dictionaries().combine_chunks()
        data = SeedData(seed_set=seed_set, label=seed_set.path.name, tables=(table,), codes=codes,
                        final_correct=np.zeros((s, 0), bool), infos=tuple(infos), cached=(True,) * s)
        summary = consensus_summary(data, table)
        summary["late_fraction"] = late_fraction
        if writer is not None:
            writer.close()
        if tmp is not None:
            write_json(tmp / SEEDS_SUMMARY, summary)
    result = pa.concat_tables(kept) if kept else table
    return SeedAnalysis(table=result, summary=summary, data=data)
