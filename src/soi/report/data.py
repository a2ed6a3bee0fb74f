"""Data collection for the HTML report: read a study / runs / run directory into one JSON-ready dict.

Pure reading (Parquet + JSON), no drawing. Three inputs are understood:

* a study directory written by ``soi run`` (``summary.json``, read through :mod:`soi.store.summary`; runs
  under ``runs/<run>/seed-<s>/``, comparisons under ``compare/<a>__vs__<b>/``: the paths of
  :class:`soi.store.layout.StudyLayout`);
* any directory holding run directories (``run.json``) and ``soi compare`` outputs (``stats.json``) below it,
  e.g. what ``soi demo`` writes;
* a single run directory.

Per-example columns are embedded column-oriented and compact: floats are quantised to 16-bit fixed point
over their range (about 4.8 significant digits of the range), integers use the narrowest unsigned type, and
each column is stored as base64 of little-endian bytes inside the JSON (see :func:`encode_column` and
:func:`decode_column`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from soi import __version__
from soi._arrow import to_numpy
from soi.analysis.categories import SOI_CATEGORIES
from soi.errors import SoiError
from soi.store.layout import COMPARE_STATS_FILE, FIGURES_DIR, RUNS_DIR, StudyLayout, seed_dir_name
from soi.store.summary import StudySummary, load_summary

FORMAT = "soi-report"
FORMAT_VERSION = 1
GROUP_KEYS = ("task", "source", "language")
METRICS = ("confidence", "variability", "correctness_frac", "forgetting_events", "aum", "mean_loss")
"""Per-example metrics embedded for the data map and the example browser."""
INT_METRICS = ("forgetting_events",)
TEXT_CHARS = 240
"""Example texts are cut to this many characters (an ellipsis marks the cut)."""
MAX_DEPTH = 5
"""How deep below the report directory run and compare directories are looked for."""
_SEED_DIR = re.compile(r"^seed-(-?\d+)$")
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------- encoding


def _sig(x: float, digits: int = 4) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def quantise(obj: Any, digits: int = 4) -> Any:
    """Round every float in a JSON-like structure to ``digits`` significant digits (NaN/inf -> None)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float | np.floating):
        return _sig(float(obj), digits)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): quantise(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [quantise(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return quantise(obj.tolist(), digits)
    return obj


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def encode_column(values: np.ndarray, *, kind: str = "float", lo: float | None = None,
                  hi: float | None = None) -> dict[str, Any]:
    """Encode a 1-d column as ``{"dtype", "b64", ...}``.

    ``kind="float"``: 16-bit fixed point, ``q = round((v - lo) / (hi - lo) * 65535)`` with ``lo``/``hi`` the
    column's range unless given (so the error is at most ``(hi - lo) / 131070``); non-finite values become
    ``lo``. ``kind="int"``: non-negative integers as u8, u16 or u32, whichever is narrowest.
    """
    v = np.asarray(values)
    if kind == "int":
        v = v.astype(np.int64)
        if v.size and v.min() < 0:
            raise SoiError("report: encode_column(kind='int') needs non-negative values")
        top = int(v.max()) if v.size else 0
        dtype = "u8" if top < 256 else "u16" if top < 65536 else "u32"
        np_dtype = {"u8": np.uint8, "u16": np.uint16, "u32": np.uint32}[dtype]
        return {"dtype": dtype, "n": int(v.size), "b64": _b64(v.astype(np_dtype))}
    f = np.asarray(v, np.float64)
    finite = np.isfinite(f)
    lo = float(f[finite].min()) if lo is None and finite.any() else (0.0 if lo is None else float(lo))
    hi = float(f[finite].max()) if hi is None and finite.any() else (lo if hi is None else float(hi))
    span = hi - lo
    q = np.zeros(f.shape, np.float64) if span <= 0 else (np.where(finite, f, lo) - lo) / span * 65535.0
    q = np.clip(np.rint(q), 0, 65535).astype(np.uint16)
    return {"dtype": "q16", "n": int(f.size), "lo": lo, "hi": hi, "b64": _b64(q)}


def decode_column(col: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_column` (float64 for ``q16``, int64 for integers)."""
    raw = base64.b64decode(col["b64"])
    if col["dtype"] == "q16":
        q = np.frombuffer(raw, "<u2").astype(np.float64)
        return col["lo"] + q * ((col["hi"] - col["lo"]) / 65535.0)
    dtype = {"u8": "<u1", "u16": "<u2", "u32": "<u4"}[col["dtype"]]
    return np.frombuffer(raw, dtype).astype(np.int64)


# ------------------------------------------------------------------------------------------- discovery


@dataclass
class RunSource:
    """One run directory to show: its name (the study's run name), seed and path."""

    name: str
    seed: int | None
    path: Path


@dataclass
class CompareSource:
    """One ``soi compare`` output directory (with ``stats.json``)."""

    path: Path
    a: str | None = None
    b: str | None = None
    seed: int | None = None


@dataclass
class Layout:
    """What a report directory holds."""

    kind: str  # "study" | "runs" | "run"
    root: Path
    summary: StudySummary | None
    runs: list[RunSource]
    comparisons: list[CompareSource]
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SoiError(f"cannot read JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})", path=path) from None


def _seed_of(path: Path) -> int | None:
    m = _SEED_DIR.match(path.name)
    return int(m.group(1)) if m else None


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories (``run.json``) and compare directories (``stats.json`` of ``soi compare``) below root."""
    runs: list[Path] = []
    comps: list[Path] = []

    def visit(d: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        names = {e.name for e in entries}
        if "run.json" in names:
            runs.append(d)
            return
        if COMPARE_STATS_FILE in names:
            try:
                stats = json.loads((d / COMPARE_STATS_FILE).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                stats = None
            if isinstance(stats, dict) and stats.get("command") == "compare":
                comps.append(d)
                return
        if depth >= MAX_DEPTH:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name not in (FIGURES_DIR,):
                visit(Path(e.path), depth + 1)

    visit(root, 0)
    return runs, comps


def _run_name(root: Path, path: Path) -> tuple[str, int | None]:
    rel = path.relative_to(root)
    parts = list(rel.parts)
    if parts and parts[0] == RUNS_DIR and len(parts) > 1:
        parts = parts[1:]
    seed = _seed_of(path)
    if seed is not None and len(parts) > 1:
        parts = parts[:-1]
    elif seed is not None:  # the report of one seed folder: its seeds are one run, named after the folder
        parts = [root.resolve().name]
    return "/".join(parts) or path.name, seed


def discover(path: str | Path) -> Layout:
    """Find the runs and comparisons of a report directory (study, directory of runs, or one run)."""
    root = Path(path)
    if not root.exists():
        raise SoiError("report: directory not found", path=root)
    if not root.is_dir():
        raise SoiError("report: expected a study, runs or run directory, got a file", path=root)
    if (root / "run.json").is_file():
        return Layout("run", root, None, [RunSource(root.resolve().name, None, root)], [])
    summary_path = StudyLayout(root).summary
    if summary_path.is_file():  # read through the summary schema: a bad field is a one-line error naming it
        return _study_layout(root, load_summary(summary_path))
    run_dirs, comp_dirs = _walk(root)
    if not run_dirs and not comp_dirs:
        raise SoiError("report: no run.json, summary.json or run directories found (expected a study directory "
                       "from 'soi run', a directory of runs, or a run directory)", path=root)
    runs = []
    for d in run_dirs:
        name, seed = _run_name(root, d)
        runs.append(RunSource(name, seed, d))
    comps = [CompareSource(d, seed=_seed_of(d)) for d in comp_dirs]
    return Layout("runs", root, None, runs, comps)


def _resolve(root: Path, preferred: Path, recorded: str | None) -> Path | None:
    if preferred.is_dir():
        return preferred
    if recorded:
        p = Path(recorded)
        for cand in ((p,) if p.is_absolute() else (root / p, root.parent / p, p)):
            if cand.is_dir():
                return cand
    return None


def _study_layout(root: Path, summary: StudySummary) -> Layout:
    study = StudyLayout(root)
    notes: list[str] = []
    runs: list[RunSource] = []
    for name, run in summary.get("runs", {}).items():
        if not isinstance(run, dict):
            raise SoiError(f"runs.{name}: expected an object", path=study.summary)
        seeds = run.get("seeds", summary.get("seeds", [])) or []
        dirs = run.get("dirs") or [None] * len(seeds)
        for i, seed in enumerate(seeds):
            recorded = dirs[i] if i < len(dirs) else None
            found = _resolve(root, study.run_dir(name, seed), recorded)
            if found is None:
                if run.get("dirs") is not None:
                    notes.append(f"run {name} seed {seed}: run directory not found")
                continue
            if not (found / "run.json").is_file():
                notes.append(f"run {name} seed {seed}: no recorded dynamics (no run.json)")
                continue
            runs.append(RunSource(str(name), int(seed), found))
    comps: list[CompareSource] = []
    for c in summary.get("comparisons", []) or []:
        if not isinstance(c, dict) or "a" not in c or "b" not in c:
            raise SoiError("comparisons: each entry needs 'a' and 'b'", path=study.summary)
        seed = c.get("seed")
        # per-seed layout (compare/<a>__vs__<b>/seed-<s>/) or one seed-set comparison (compare/<a>__vs__<b>/)
        preferred = study.compare_dir(c["a"], c["b"])
        preferred = preferred if seed is None else preferred / seed_dir_name(seed)
        found = _resolve(root, preferred, c.get("dir"))
        if found is None or not (found / COMPARE_STATS_FILE).is_file():
            what = "" if seed is None else f" seed {seed}"
            notes.append(f"comparison {c['a']} vs {c['b']}{what}: stats.json not found")
            continue
        comps.append(CompareSource(found, str(c["a"]), str(c["b"]), seed))
    return Layout("study", root, summary, runs, comps, notes)


# ------------------------------------------------------------------------------------------- runs


@dataclass
class RunData:
    """One run's per-example table, analysis summary and metadata."""

    source: RunSource
    meta: Any  # RunMeta
    table: pa.Table
    summary: dict[str, Any]
    analysed_on_the_fly: bool
    n_total: int | None = None
    """Examples of the run when ``table`` is an out-of-core sample (runs above :data:`OUT_OF_CORE_ROWS`)."""
    groups: dict[str, Any] | None = None
    """The run's :func:`group_counts` over every example (from ``summary.json``) when ``table`` is a sample."""


OUT_OF_CORE_ROWS = 1_000_000
"""Runs with more examples are read out of core: a stratified sample of :data:`OUT_OF_CORE_SAMPLE` rows
(:func:`soi.analysis.streaming.sample_examples`; counts and shares still come from every example)."""
OUT_OF_CORE_SAMPLE = 250_000


def _groups_from_summary(summary: dict[str, Any], table: pa.Table) -> dict[str, Any]:
    """:func:`group_counts` of every example, from an analysis ``summary.json`` (same numbers)."""
    out: dict[str, Any] = {}
    groups = summary["groups"]
    for key in ("all", *GROUP_KEYS):
        if key != "all" and key not in table.column_names:
            continue
        k = len(SOI_CATEGORIES)
        out[key] = {name: {"n": g["n"], "counts": [g["counts"][c] for c in SOI_CATEGORIES],
                           "shares": [g["shares"][c] for c in SOI_CATEGORIES] if g["n"] else [0.0] * k,
                           "final_accuracy": g["final_accuracy"]}
                    for name, g in groups[key].items()}
    return out


def _load_large(source: RunSource, meta: Any, table_path: Path, summary_path: Path) -> RunData | None:
    """Out-of-core read of a run above :data:`OUT_OF_CORE_ROWS` examples (None for smaller runs)."""
    import tempfile

    import pyarrow.parquet as pq

    from soi.analysis.streaming import sample_examples, stream_analysis
    from soi.store.meta import EXAMPLES_FILE

    have = table_path.is_file() and summary_path.is_file()
    try:
        n = pq.ParquetFile(table_path if have else source.path / EXAMPLES_FILE).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None  # the regular path reports the unreadable file
    if n <= OUT_OF_CORE_ROWS:
        return None
    if have:
        table, summary = sample_examples(table_path, OUT_OF_CORE_SAMPLE), _read_json(summary_path)
    else:  # stream the analysis into a scratch folder (the run is not written), then sample it
        with tempfile.TemporaryDirectory(prefix=".tmp-soi-report-") as tmp:
            res, _ = stream_analysis(source.path, memory_limit="2GB", out=Path(tmp) / "analysis")
            table = sample_examples(Path(tmp) / "analysis" / table_path.name, OUT_OF_CORE_SAMPLE)
            summary = res.summary
    return RunData(source, meta, table, summary, not have, n_total=n, groups=_groups_from_summary(summary, table))


def load_run(source: RunSource) -> RunData:
    """The run's per-example table and analysis summary (``analysis/``; analysed in memory when missing)."""
    from soi.analysis.per_example import PER_EXAMPLE_FILE
    from soi.analysis.per_example import SUMMARY_FILE as ANALYSIS_SUMMARY
    from soi.store.meta import ANALYSIS_DIR, RunMeta
    from soi.store.reader import read_parquet

    meta = RunMeta.load(source.path)
    adir = source.path / ANALYSIS_DIR
    table_path, summary_path = adir / PER_EXAMPLE_FILE, adir / ANALYSIS_SUMMARY
    large = _load_large(source, meta, table_path, summary_path)
    if large is not None:
        table, summary, fly = large.table, large.summary, large.analysed_on_the_fly
    elif table_path.is_file() and summary_path.is_file():
        table = read_parquet(table_path)
        summary = _read_json(summary_path)
        fly = False
    else:
        from soi.analysis.per_example import analyze_run

        res = analyze_run(source.path, write=False)
        table, summary, fly = res.table, res.summary, True
    missing = [c for c in ("example_id", "soi", "final_correct", *METRICS) if c not in table.column_names]
    if missing:
        raise SoiError(f"per-example table lacks column(s) {missing}; re-run soi analyze", path=table_path)
    if large is not None:
        return large
    return RunData(source, meta, table, summary, fly)


def _codes(col: pa.ChunkedArray | pa.Array, vocab: dict[str, int]) -> np.ndarray:
    """Codes of a string/dictionary column in a growing global vocabulary."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(col.type):
        col = col.cast(pa.string()).dictionary_encode()
    col = col.fill_null("") if col.null_count else col
    names = [str(x) for x in col.dictionary.to_pylist()]
    local = np.asarray([vocab.setdefault(nm, len(vocab)) for nm in names], np.int64)
    idx = to_numpy(col.indices).astype(np.int64)
    return local[idx] if local.size else np.zeros(len(col), np.int64)


def soi_codes(table: pa.Table) -> np.ndarray:
    """SOI category code (position in :data:`SOI_CATEGORIES`) of every row of a per-example table."""
    vocab = {c: i for i, c in enumerate(SOI_CATEGORIES)}
    codes = _codes(table["soi"], dict(vocab))
    if codes.size and codes.max() >= len(SOI_CATEGORIES):
        raise SoiError("per-example table: column 'soi' holds values that are not SOI categories")
    return codes


def group_counts(table: pa.Table) -> dict[str, dict[str, dict[str, Any]]]:
    """SOI counts, shares and final accuracy per group: ``{key: {group: {n, counts, shares, final_accuracy}}}``.

    ``key`` is ``all`` (one group, ``all``) and each tag column present; ``counts``/``shares`` are lists in
    :data:`SOI_CATEGORIES` order.
    """
    from soi.store.reader import tag_codes

    cat = soi_codes(table)
    k = len(SOI_CATEGORIES)
    final = to_numpy(table["final_correct"]).astype(bool)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    keys = [("all", np.zeros(table.num_rows, np.int64), ["all"])]
    for key in GROUP_KEYS:
        if key in table.column_names:
            codes, names = tag_codes(table, key)
            keys.append((key, codes.astype(np.int64), names))
    for key, codes, names in keys:
        g = len(names)
        counts = np.bincount(codes * k + cat, minlength=g * k).reshape(g, k)
        n = counts.sum(axis=1)
        correct = np.bincount(codes, weights=final, minlength=g)
        out[key] = {name: {"n": int(n[i]), "counts": counts[i].tolist(),
                           "shares": (counts[i] / n[i]).tolist() if n[i] else [0.0] * k,
                           "final_accuracy": float(correct[i] / n[i]) if n[i] else 0.0}
                    for i, name in enumerate(names)}
    return out


def read_traces(run_dir: Path, rows: np.ndarray, n: int) -> np.ndarray | None:
    """p_gold of ``rows`` at every checkpoint, shape (len(rows), E); None when the run has no dynamics."""
    from soi.store.reader import iter_checkpoints, list_parts

    try:
        parts = list_parts(run_dir)
    except SoiError:
        return None
    if not parts:
        return None
    pos = np.full(n, -1, np.int64)
    pos[rows] = np.arange(rows.size)
    out = np.zeros((rows.size, len(parts)), np.float32)
    for j, (_, table) in enumerate(iter_checkpoints(run_dir, columns=("idx", "p_gold"))):
        idx = to_numpy(table["idx"]).astype(np.int64)
        ok = (idx >= 0) & (idx < n)
        idx = idx[ok]
        p = to_numpy(table["p_gold"])[ok]
        keep = pos[idx] >= 0
        out[pos[idx[keep]], j] = p[keep]
    return out


def _texts(table: pa.Table, rows: np.ndarray, limit: int) -> list[str] | None:
    cols = [c for c in ("text", "text_pair") if c in table.column_names and table[c].null_count < table.num_rows]
    if not cols:
        return None
    parts = [table[c].take(pa.array(rows)).to_pylist() for c in cols]
    out = []
    for vals in zip(*parts, strict=True):
        s = " \u2016 ".join(v for v in vals if v)
        out.append(s if len(s) <= limit else s[: limit - 1] + "\u2026")
    return out


def _subsample(sizes: list[int], max_examples: int, seed: int = 0) -> list[np.ndarray]:
    """Rows kept per run: all when the total fits, else a seeded sample proportional to run size."""
    total = sum(sizes)
    if total <= max_examples:
        return [np.arange(n) for n in sizes]
    rng = np.random.default_rng(seed)
    keep = [max_examples * n // total for n in sizes]
    out = []
    for n, k in zip(sizes, keep, strict=True):
        out.append(np.sort(rng.choice(n, size=min(n, k), replace=False)) if k < n else np.arange(n))
    return out


# ------------------------------------------------------------------------------------------- assembly


def seed_stability(loaded: list[RunData]) -> list[dict[str, Any]]:
    """Per run name with >= 2 seeds (a seed set): how often the seeds agree on each example's SOI category.

    The seeds are aligned on the first seed's ``example_id`` (examples missing from a seed are left out and
    counted). Per example the stability is the share of seeds in the modal category
    (:func:`soi.analysis.seeds.consensus`); ``hist[m - 1]`` counts the examples whose modal category holds m of
    the S seeds (stability m / S). Per group (all, task, source, language of the first seed): mean stability,
    Fleiss' P-bar (mean pairwise agreement) and kappa (:func:`soi.analysis.seeds.stability_by_group`;
    Fleiss, 1971). Every example counts, not only the embedded sample.
    """
    import pyarrow.compute as pc

    from soi.analysis.seeds import consensus, stability_by_group
    from soi.store.reader import tag_codes

    k = len(SOI_CATEGORIES)
    by_name: dict[str, list[RunData]] = {}
    for rd in loaded:
        by_name.setdefault(rd.source.name, []).append(rd)
    out = []
    for name, rds in by_name.items():
        if len(rds) < 2:
            continue
        first = rds[0].table
        ref = first["example_id"].combine_chunks().cast(pa.string())
        rows = []
        for rd in rds:  # loop over seeds
            pos = pc.index_in(ref, value_set=rd.table["example_id"].combine_chunks().cast(pa.string()))
            rows.append(to_numpy(pos.fill_null(-1)).astype(np.int64))
        take = np.stack(rows)
        shared = (take >= 0).all(axis=0)
        codes = np.stack([soi_codes(rd.table)[t[shared]] for rd, t in zip(rds, take, strict=True)])
        s = codes.shape[0]
        counts, _, _ = consensus(codes, k)
        hist = np.bincount(counts.max(axis=1), minlength=s + 1)[1:] if codes.shape[1] else np.zeros(s, np.int64)
        groups: dict[str, dict[str, Any]] = {}
        keyed = [("all", np.zeros(codes.shape[1], np.int64), ["all"])]
        for key in GROUP_KEYS:
            if key in first.column_names:
                gc, names = tag_codes(first, key)
                keyed.append((key, gc.astype(np.int64)[shared], names))
        for key, gc, names in keyed:
            stab = stability_by_group(codes, k, gc, len(names))
            groups[key] = {nm: {"n": st["n"], "mean_stability": st["mean_stability"], "agreement": st["agreement"],
                                "kappa": st["kappa"]} for nm, st in zip(names, stab, strict=True) if st["n"]}
        # a run read out of core is a sample of its examples: the view then covers the examples sampled in every seed
        sampled = any(getattr(rd, "n_total", None) is not None for rd in rds)
        out.append({"name": name, "seeds": [rd.source.seed for rd in rds], "n_seeds": s, "n": int(codes.shape[1]),
                    "n_not_in_every_seed": int((~shared).sum()), "sampled": sampled, "hist": hist.tolist(),
                    "groups": groups})
    return out



def _cell_matrix(cells: list[dict[str, Any]], cats: list[str], field: str) -> list[list[Any]]:
    """A k x k matrix of one field of ``seed_null.cells`` (placed by the cells' from/to names, not their order)."""
    pos = {c: i for i, c in enumerate(cats)}
    out: list[list[Any]] = [[None] * len(cats) for _ in cats]
    for cell in cells:
        out[pos[cell["from"]]][pos[cell["to"]]] = cell.get(field)
    return out


def seed_null_view(null: dict[str, Any] | None, cats: list[str]) -> dict[str, Any] | None:
    """The page's view of a group's ``seed_null`` block (docs/statistics.md): the between (observed), within
    (reseeding null) and excess matrices as shares of the group's examples, per-cell intervals and BH q-values as
    k x k matrices, ``significant`` exactly as stats.json flags it, and the overall test. ``None`` for a stats.json
    without the block (older soi)."""
    if null is None:
        return None
    if not isinstance(null, dict):
        raise SoiError("seed_null: expected an object")
    cells = null.get("cells") or []
    overall = null.get("overall") or {}
    perm = overall.get("permutation") or {}
    has_matrices = null.get("between") is not None and null.get("within") is not None
    view: dict[str, Any] = {
        "data": null.get("data", "training dynamics"), "n": null.get("n"), "n_seeds": null.get("n_seeds"),
        "alpha": null.get("alpha"), "level": null.get("level"), "method": null.get("method"),
        "note": null.get("note"),
        "overall": {"statistic": overall.get("statistic"), "statistic_name": overall.get("statistic_name"),
                    "p_value": overall.get("p_value"), "method": overall.get("method"),
                    "significant": bool(overall.get("significant")), "note": overall.get("note"),
                    "permutation_p": perm.get("p_value"), "permutation_note": perm.get("note")},
        "between": null.get("between") if has_matrices else None,
        "within": null.get("within") if has_matrices else None,
        "excess": null.get("excess") if has_matrices else None,
        "significant_cells": list(null.get("significant_cells") or []),
    }
    if cells:
        for field_name in ("lo", "hi", "p_value", "q_value"):
            view[field_name] = _cell_matrix(cells, cats, field_name)
        sig = _cell_matrix(cells, cats, "significant")
        view["significant"] = [[bool(v) for v in row] for row in sig]
    else:
        view["significant"] = [[False] * len(cats) for _ in cats]
    return view


def eval_set_view(test_set: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per eval set (``test_set.<key>`` of stats.json): the paired accuracy difference B - A with its interval
    (``ci_over``), the p-value of its test (``test``; the flag) and the McNemar tests (per seed pair; combined:
    item-level), each labelled ``data: "test set"``."""
    out = []
    for key, t in (test_set or {}).items():
        if not isinstance(t, dict):
            raise SoiError(f"test_set.{key}: expected an object")
        d = t.get("difference") or {}
        mc = t.get("mcnemar") or {}
        comb = mc.get("combined") or {}
        out.append({
            "key": key, "data": t.get("data", "test set"), "n_items": t.get("n_items"),
            "n_only_a": t.get("n_only_a"), "n_only_b": t.get("n_only_b"), "seeds": t.get("seeds"),
            "accuracy_a": (t.get("accuracy_a") or {}).get("mean"),
            "accuracy_b": (t.get("accuracy_b") or {}).get("mean"),
            "difference": d.get("observed"), "lo": d.get("lo"), "hi": d.get("hi"), "level": d.get("level"),
            "significant": bool(d.get("significant")), "method": d.get("method"),
            "n_boot": (d.get("bootstrap") or {}).get("n_boot", d.get("n_boot")),
            "p_value": d.get("p_value"), "test": d.get("test"), "df": d.get("df"),
            "ci_over": d.get("ci_over") or ("items and seeds" if d else None),
            "mcnemar_p": comb.get("p_value"), "mcnemar_method": comb.get("method"),
            "mcnemar_pairs": comb.get("n_pairs"),
            "mcnemar_per_seed": [{"seed_a": m.get("seed_a"), "seed_b": m.get("seed_b"), "p_value": m.get("p_value"),
                                  "accuracy_a": m.get("accuracy_a"), "accuracy_b": m.get("accuracy_b")}
                                 for m in mc.get("per_seed") or []],
            "note": t.get("note"),
        })
    return out


def _comparison(source: CompareSource, root: Path) -> dict[str, Any]:
    stats_path = source.path / COMPARE_STATS_FILE
    stats = _read_json(stats_path)
    if not isinstance(stats, dict) or not isinstance(stats.get("groups"), list):
        raise SoiError("expected a soi compare stats.json with 'groups'", path=stats_path)
    cats = list(stats.get("categories", SOI_CATEGORIES))
    ra, rb = stats.get("run_a", {}), stats.get("run_b", {})
    groups = []
    for g in stats["groups"]:
        try:
            sc = g["share_change"]
            groups.append({
                "key": g["key"], "group": g["group"], "n_shared": g["n_shared"], "counts": g["counts"],
                "share_a": [g["share_a"][c] for c in cats], "share_b": [g["share_b"][c] for c in cats],
                "change": [sc[c]["observed"] for c in cats], "lo": [sc[c]["lo"] for c in cats],
                "hi": [sc[c]["hi"] for c in cats], "significant": [bool(sc[c]["significant"]) for c in cats],
                "share_change_method": g.get("share_change_method"),
                "accuracy_a": g["accuracy_a"], "accuracy_b": g["accuracy_b"],
                "mcnemar_p": g["mcnemar"]["p_value"], "mcnemar_method": g["mcnemar"]["method"],
                "mcnemar_b": g["mcnemar"]["b"], "mcnemar_c": g["mcnemar"]["c"],
                "mcnemar_data": g["mcnemar"].get("data", "training dynamics"),
                "pooled_over": g.get("counts_pooled_over"), "seeds": g.get("seeds"),
                "stability": g.get("stability"),
                "seed_null": seed_null_view(g.get("seed_null"), cats),
            })
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SoiError(f"group entry lacks field {exc} or has the wrong type",
                           path=stats_path) from None
    try:
        test_set = eval_set_view(stats.get("test_set"))
    except (TypeError, AttributeError) as exc:
        raise SoiError(f"test_set: unexpected structure ({exc})", path=stats_path) from None
    except SoiError as exc:
        raise SoiError(str(exc), path=stats_path) from None
    a = source.a or ra.get("label") or "A"
    b = source.b or rb.get("label") or "B"
    try:
        rel = str(source.path.relative_to(root))
    except ValueError:
        rel = str(source.path)
    return {"a": a, "b": b, "label_a": ra.get("label", a), "label_b": rb.get("label", b),
            "seed": source.seed, "dir": rel, "categories": cats, "n_shared": stats.get("n_shared"),
            "n_only_a": stats.get("n_only_a"), "n_only_b": stats.get("n_only_b"),
            "kind_a": ra.get("kind", "run"), "kind_b": rb.get("kind", "run"),
            "seeds_a": ra.get("seeds", [ra.get("seed")]), "seeds_b": rb.get("seeds", [rb.get("seed")]),
            "notes": list(stats.get("notes") or []), "test_set": test_set,
            "level": stats.get("params", {}).get("level", 0.95), "groups": groups}


def group_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Tag keys worth a per-group view: more than one group in some run, and not the same groups (names and
    counts in every run) as an earlier key (e.g. ``source`` equal to ``task`` in single-source studies)."""
    keys: list[str] = []
    for key in GROUP_KEYS:
        if not any(len(r["groups"].get(key, {})) > 1 for r in runs):
            continue
        if any(all(r["groups"].get(key) == r["groups"].get(prev) for r in runs) for prev in keys):
            continue
        keys.append(key)
    return keys


def _settings(layout: Layout, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run name (over seeds): setting, seeds, shares averaged over seeds, eval from the study summary."""
    summary_runs = (layout.summary or {}).get("runs", {})
    names = list(dict.fromkeys([*summary_runs, *(r["name"] for r in runs)]))
    out = []
    for name in names:
        mine = [r for r in runs if r["name"] == name]
        srun = summary_runs.get(name, {}) if isinstance(summary_runs.get(name), dict) else {}
        shares: dict[str, dict[str, list[float]]] = {}
        for key in ("all", *GROUP_KEYS):
            groups = list(dict.fromkeys(g for r in mine for g in r["groups"].get(key, {})))
            for gname in groups:
                vals = [r["groups"][key][gname]["shares"] for r in mine if gname in r["groups"].get(key, {})]
                shares.setdefault(key, {})[gname] = np.mean(np.asarray(vals, np.float64), axis=0).tolist()
        out.append({
            "name": name,
            "setting": srun.get("setting") or (mine[0]["setting"] if mine else None),
            "train": srun.get("train", []),
            "seeds": srun.get("seeds", [r["seed"] for r in mine]),
            "runs": [r["id"] for r in mine],
            "shares": shares,
            "eval": srun.get("eval", {}),
            "extra": {k: v for k, v in srun.items()
                      if k not in ("setting", "train", "seeds", "dirs", "eval", "soi_shares")
                      and isinstance(v, str | int | float | list | dict)},
            "train_accuracy_final": srun.get("train_accuracy_final") or (
                {"mean": float(np.mean([r["final_accuracy"] for r in mine])),
                 "std": float(np.std([r["final_accuracy"] for r in mine], ddof=1)) if len(mine) > 1 else 0.0,
                 "values": [r["final_accuracy"] for r in mine]} if mine else None),
        })
    return out


def collect(path: str | Path, *, max_examples: int = 100_000, seed: int = 0, log: Log | None = None) -> dict[str, Any]:
    """Everything the report shows, as a JSON-ready dict (per-example columns encoded, see module doc).

    ``max_examples`` caps the examples embedded for the data maps and the example browser (a seeded sample,
    proportional to run size, when the runs hold more); counts, shares and heatmaps always use every example.
    In a study or a directory of runs, a run that cannot be read is skipped with a note on the page (a single run
    directory raises).
    """
    if max_examples < 1:
        raise SoiError(f"--max-examples must be >= 1, got {max_examples}")
    say = log or (lambda _msg: None)
    layout = discover(path)
    root = layout.root
    loaded: list[RunData] = []
    for i, src in enumerate(layout.runs):
        say(f"reading run {i + 1}/{len(layout.runs)}: {src.name}" + (f" seed {src.seed}" if src.seed is not None
                                                                      else ""))
        try:
            loaded.append(load_run(src))
        except SoiError as exc:
            if layout.kind == "run":
                raise
            layout.notes.append(f"run {src.name}" + (f" seed {src.seed}" if src.seed is not None else "")
                                + f" skipped: {exc}")
    if layout.kind == "runs":  # single-setting runs first, like the rows of a transition matrix
        loaded.sort(key=lambda rd: rd.meta.setting != "single")
    sizes = [rd.table.num_rows for rd in loaded]
    keep = _subsample(sizes, max_examples, seed)

    vocab: dict[str, dict[str, int]] = {k: {} for k in (*GROUP_KEYS, "gold")}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("run", *GROUP_KEYS, "gold", "soi", "correct", *METRICS)}
    ids: list[str] = []
    texts: list[str] = []
    any_text = False
    traces: list[np.ndarray] = []
    runs: list[dict[str, Any]] = []
    row_start = trace_start = 0
    for rid, (rd, rows) in enumerate(zip(loaded, keep, strict=True)):
        t = rd.table
        n = t.num_rows
        say(f"collecting examples of {rd.source.name}")
        sub = t.take(pa.array(rows)) if rows.size != n else t
        cols["run"].append(np.full(rows.size, rid, np.int64))
        for key in GROUP_KEYS:
            if key in sub.column_names:
                cols[key].append(_codes(sub[key], vocab[key]))
            else:
                cols[key].append(np.full(rows.size, vocab[key].setdefault("", len(vocab[key])), np.int64))
        gold_col = sub["gold_label"] if "gold_label" in sub.column_names else sub["gold"].cast(pa.string())
        cols["gold"].append(_codes(gold_col, vocab["gold"]))
        cols["soi"].append(soi_codes(sub))
        cols["correct"].append(to_numpy(sub["final_correct"]).astype(np.int64))
        for m in METRICS:
            cols[m].append(np.asarray(to_numpy(sub[m]), np.float64))
        ids.extend(str(x) for x in sub["example_id"].to_pylist())
        tx = _texts(sub, np.arange(rows.size), TEXT_CHARS)
        any_text = any_text or tx is not None
        texts.extend(tx if tx is not None else [""] * rows.size)
        idx = to_numpy(sub["idx"]).astype(np.int64) if "idx" in sub.column_names else rows
        tr = read_traces(rd.source.path, idx, n if rd.n_total is None else rd.n_total)
        e = 0 if tr is None else tr.shape[1]
        if tr is not None:
            traces.append(tr.ravel())
        s = rd.summary
        try:
            rel = str(rd.source.path.relative_to(root))
        except ValueError:
            rel = str(rd.source.path)
        runs.append({
            "id": rid, "name": rd.source.name, "seed": rd.source.seed if rd.source.seed is not None else rd.meta.seed,
            "dir": rel or ".", "setting": rd.meta.setting, "model": rd.meta.model,
            "recording_mode": rd.meta.recording_mode, "checkpoint_unit": rd.meta.checkpoint_unit,
            "tasks": rd.meta.tasks, "n_examples": n if rd.n_total is None else rd.n_total, "n_shown": int(rows.size),
            "row_start": row_start,
            "n_checkpoints": int(s.get("n_checkpoints", e)), "trace_checkpoints": e, "trace_start": trace_start,
            "steps": s.get("steps", []), "accuracy_per_checkpoint": s.get("accuracy_per_checkpoint", []),
            "final_accuracy": (float(np.mean(to_numpy(t["final_correct"]))) if n else 0.0) if rd.groups is None
            else rd.groups["all"]["all"]["final_accuracy"],
            "analysed_on_the_fly": rd.analysed_on_the_fly,
            "groups": group_counts(t) if rd.groups is None else rd.groups,
        })
        row_start += int(rows.size)
        trace_start += int(rows.size) * e

    def cat(name: str) -> np.ndarray:
        parts = cols[name]
        return np.concatenate(parts) if parts else np.zeros(0)

    columns: dict[str, Any] = {k: encode_column(cat(k), kind="int") for k in ("run", *GROUP_KEYS, "gold", "soi",
                                                                             "correct")}
    for m in METRICS:
        bounds = {"confidence": (0.0, 1.0), "correctness_frac": (0.0, 1.0)}.get(m, (None, None))
        columns[m] = encode_column(cat(m), kind="int" if m in INT_METRICS else "float", lo=bounds[0], hi=bounds[1])
    trace = encode_column(np.concatenate(traces) if traces else np.zeros(0), lo=0.0, hi=1.0)

    say("collecting comparisons")
    comparisons = [_comparison(c, root) for c in layout.comparisons]
    summary = layout.summary or {}
    study = {k: summary.get(k) for k in ("study", "model", "seeds", "data_seed", "type") if k in summary}
    title = summary.get("study") or root.resolve().name
    data = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "soi_version": __version__,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": layout.kind, "title": str(title), "source": str(root), "study": study,
        "notes": layout.notes, "categories": list(SOI_CATEGORIES), "metrics": list(METRICS),
        "runs": runs, "group_keys": group_keys(runs), "settings": _settings(layout, runs), "comparisons": comparisons,
        "stability": seed_stability(loaded),
        "two_stage": summary.get("two_stage"), "transfer": summary.get("transfer"),
        "transfer_stats": summary.get("transfer_stats"), "by_model": summary.get("by_model"),
        "models": summary.get("models"), "multitask": summary.get("multitask"),
        "figures": [],
    }
    data = quantise(data)
    data["examples"] = {
        "n": int(sum(r["n_shown"] for r in runs)), "n_total": int(sum(sizes)),
        "dicts": {k: list(v) for k, v in vocab.items()}, "columns": columns, "trace": trace,
        "ids": ids, "text": texts if any_text else None, "text_chars": TEXT_CHARS,
    }
    return data
