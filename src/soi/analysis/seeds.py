"""Seed sets: a folder of ``seed-*/`` run directories (a study's ``runs/<name>/``) analysed as one setting.

* :func:`resolve_seed_set` accepts one run directory (a seed set of size 1) or a seed folder and checks
  its layout; :func:`load_seed_set` analyses every seed (or reads a fresh cached analysis) and aligns the
  seeds on the first seed's example order, refusing seeds that disagree on example ids, gold labels,
  label names or checkpoint counts.
* :func:`consensus` is the per-example consensus over seeds, a pure kernel over a (seeds x examples) code
  array (so it can be applied per example shard); :func:`fleiss_kappa` is Fleiss' (1971) kappa
  ("Measuring nominal scale agreement among many raters", Psychological Bulletin 76(5)) of the same counts.
* :func:`analyze_seeds` writes ``SEEDS_DIR/analysis/consensus.parquet`` and ``summary.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soi import __version__
from soi._arrow import first_duplicate, to_numpy
from soi.analysis.categories import SOI_CATEGORIES
from soi.errors import SoiError
from soi.store.meta import ANALYSIS_DIR, DYNAMICS_DIR, EXAMPLES_FILE, PART_RE, RUN_JSON, RunMeta
from soi.store.reader import tag_codes
from soi.store.writer import TAG_COLUMNS

SEED_DIR = re.compile(r"^seed-(\d+)$")
CONSENSUS_FILE = "consensus.parquet"
SUMMARY_FILE = "summary.json"
MEAN_METRICS = ("confidence", "variability", "correctness_frac", "forgetfulness", "forgetting_events",
                "threshold_closeness", "aum", "mean_loss", "final_correct")
"""Cartography / SOI metrics whose seed means the consensus table carries (as ``<metric>_mean``)."""
NEEDED = ("example_id", "gold", "soi", "final_correct", *TAG_COLUMNS)
SINGLE_SEED_NOTE = ("one seed only: seed-to-seed noise cannot be separated from the setting's effect; "
                    "run >= 3 seeds per setting for the reseeding null")


# ------------------------------------------------------------------------------------------- kernels


def consensus(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example consensus of category codes over seeds.

    Parameters
    ----------
    codes : int array (S, n), the category code of each example in each seed (values in ``[0, k)``)
    k : number of categories

    Returns
    -------
    counts : int32 (n, k), number of seeds placing the example in each category
    modal : int8 (n,), the modal category; a tie goes to the tied category listed first (lowest code,
        i.e. the easiest in SOI order), so the rule never depends on seed order
    stability : float64 (n,), share of seeds in the modal category (1.0 = all seeds agree)

    Examples
    --------
    >>> c, m, s = consensus(np.array([[0, 2, 1], [0, 1, 1], [3, 2, 0]]), 4)
    >>> m.tolist(), s.round(3).tolist()
    ([0, 2, 1], [0.667, 0.667, 0.667])
    """
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] < 1:
        raise SoiError(f"codes must be a (seeds, examples) array with >= 1 seed, got shape {c.shape}")
    if k < 1:
        raise SoiError(f"number of categories must be >= 1, got {k}")
    s, n = c.shape
    if c.size and (c.min() < 0 or c.max() >= k):
        raise SoiError(f"category codes must be in [0, {k}); found {c.min()}..{c.max()}")
    counts = np.zeros((n, k), np.int32)
    for j in range(k):  # k passes over the (S, n) array; no loop over examples
        counts[:, j] = (c == j).sum(axis=0)
    modal = counts.argmax(axis=1).astype(np.int8)  # argmax returns the first maximum: the tie rule
    stability = counts.max(axis=1) / s if n else np.zeros(0)
    return counts, modal, stability.astype(np.float64)


def pairwise_agreement(counts: np.ndarray) -> np.ndarray:
    """Per-example share of agreeing seed pairs, Fleiss' P_i = (sum_j n_ij^2 - S) / (S (S - 1)); needs S >= 2."""
    c = np.asarray(counts, np.int64)
    s = int(c[0].sum()) if c.shape[0] else 0
    if c.shape[0] and s < 2:
        raise SoiError("pairwise agreement needs >= 2 seeds")
    return ((c * c).sum(axis=1) - s) / (s * (s - 1)) if c.shape[0] else np.zeros(0)


def fleiss_kappa(counts: np.ndarray) -> dict[str, float | None]:
    """Fleiss' kappa of per-example category counts (n, k) with the same number of seeds S >= 2 per example.

    ``agreement`` is P-bar (mean pairwise agreement), ``chance`` is P_e = sum_j p_j^2 with p_j the overall
    category shares, ``kappa = (P-bar - P_e) / (1 - P_e)`` (Fleiss, 1971). When every seed puts every example
    in one and the same category (P_e = 1) kappa is undefined and returned as ``None``.
    """
    c = np.asarray(counts, np.int64)
    n = c.shape[0]
    if n == 0:
        return {"agreement": None, "chance": None, "kappa": None}
    s = int(c[0].sum())
    p_bar = float(pairwise_agreement(c).mean())
    p_j = c.sum(axis=0) / (n * s)
    p_e = float((p_j * p_j).sum())
    kappa = None if p_e >= 1.0 - 1e-12 else (p_bar - p_e) / (1.0 - p_e)
    return {"agreement": p_bar, "chance": p_e, "kappa": kappa}


# ------------------------------------------------------------------------------------------- seed sets


@dataclass(frozen=True)
class SeedSet:
    """One setting: a single run directory or a folder of ``seed-<s>/`` run directories."""

    path: Path
    runs: tuple[Path, ...]
    seeds: tuple[int | None, ...]
    single_run: bool

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    def seed_labels(self) -> list[int | str | None]:
        """Seed numbers (folder ``seed-<s>``, or run.json ``seed`` for a single run)."""
        return list(self.seeds)


def resolve_seed_set(path: str | Path) -> SeedSet:
    """A run directory (``run.json``) or a seed folder (``seed-*/`` run directories, nothing else run-like).

    Raises
    ------
    SoiError
        Missing folder; a folder that is neither; a run directory that also holds ``seed-*`` runs; a
        ``seed-*`` entry that is not a run directory (names the entry).
    """
    path = Path(path)
    if not path.is_dir():
        raise SoiError("run directory not found (expected a run or a seed folder)", path=path)
    seed_dirs = sorted((p for p in path.iterdir() if SEED_DIR.match(p.name)),
                       key=lambda p: int(SEED_DIR.match(p.name).group(1)))  # type: ignore[union-attr]
    if (path / RUN_JSON).is_file():
        if seed_dirs:
            raise SoiError(f"is a run directory but also holds seed folders ({seed_dirs[0].name}/); "
                           "pass either one run or a folder of seed-*/ runs", path=path)
        meta = RunMeta.load(path)
        return SeedSet(path=path, runs=(path,), seeds=(meta.seed,), single_run=True)
    if not seed_dirs:
        raise SoiError("neither a run directory (run.json) nor a seed folder (seed-*/ run directories)", path=path)
    for d in seed_dirs:
        if not d.is_dir() or not (d / RUN_JSON).is_file():
            raise SoiError("seed entry is not a run directory (no run.json); a seed folder must hold only "
                           "seed-*/ runs", path=d)
    seeds = tuple(int(SEED_DIR.match(d.name).group(1)) for d in seed_dirs)  # type: ignore[union-attr]
    return SeedSet(path=path, runs=tuple(seed_dirs), seeds=seeds, single_run=False)


def _fresh_cache(run: Path, late_fraction: float, max_checkpoints: int | None) -> Path | None:
    """``analysis/per_example.parquet`` if it is newer than the run's inputs and used the same late_fraction."""
    if max_checkpoints is not None:
        return None
    table = run / ANALYSIS_DIR / "per_example.parquet"
    summary = run / ANALYSIS_DIR / SUMMARY_FILE
    if not (table.is_file() and summary.is_file()):
        return None
    try:
        info = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or info.get("late_fraction") != late_fraction:
        return None
    built = min(table.stat().st_mtime, summary.stat().st_mtime)
    inputs = [run / RUN_JSON, run / EXAMPLES_FILE]
    dyn = run / DYNAMICS_DIR
    if not dyn.is_dir():
        return None
    parts = list(dyn.iterdir())
    checkpoints = {m.group(1) for m in (PART_RE.match(p.name) for p in parts) if m}
    if info.get("n_checkpoints") != len(checkpoints):  # e.g. analysed with --max-checkpoints
        return None
    inputs += [dyn, *parts]
    if any(p.exists() and p.stat().st_mtime > built for p in inputs):
        return None
    return table


def load_run_table(run: Path, *, late_fraction: float = 0.5, max_checkpoints: int | None = None,
                   columns: tuple[str, ...] | None = None, cache: bool = True) -> tuple[pa.Table, dict[str, Any], bool]:
    """Per-example table of one run: a fresh cached analysis if there is one, else :func:`analyze_run`.

    Returns ``(table, info, cached)`` with ``info`` holding ``n_checkpoints``, ``setting``, ``seed``, ``model``.
    """
    from soi.analysis.per_example import analyze_run

    meta = RunMeta.load(run)
    cached = _fresh_cache(run, late_fraction, max_checkpoints) if cache else None
    if cached is not None:
        try:
            pf = pq.ParquetFile(cached)
            names = pf.schema_arrow.names
            table = pf.read(columns=[c for c in (columns or names) if c in names])
            summary = json.loads((run / ANALYSIS_DIR / SUMMARY_FILE).read_text(encoding="utf-8"))
            info = {k: summary.get(k) for k in ("n_examples", "n_checkpoints", "early_cutoff")}
            if isinstance(info["n_checkpoints"], int):
                info.update(setting=meta.setting, seed=meta.seed, model=meta.model, tasks=meta.tasks)
                return table, info, True
        except (OSError, pa.ArrowException, json.JSONDecodeError):
            pass  # unreadable cache: analyse afresh
    res = analyze_run(run, late_fraction=late_fraction, write=False, max_checkpoints=max_checkpoints)
    table = res.table if columns is None else res.table.select([c for c in columns if c in res.table.column_names])
    info = {k: res.summary.get(k) for k in ("n_examples", "n_checkpoints", "early_cutoff")}
    info.update(setting=meta.setting, seed=meta.seed, model=meta.model, tasks=meta.tasks)
    return table, info, False


@dataclass(frozen=True)
class SeedData:
    """A seed set's per-example data aligned on the first seed's example order."""

    seed_set: SeedSet
    label: str
    tables: tuple[pa.Table, ...]
    codes: np.ndarray  # int8 (S, n): SOI category code per seed
    final_correct: np.ndarray  # bool (S, n)
    infos: tuple[dict[str, Any], ...]
    cached: tuple[bool, ...]

    @property
    def first(self) -> pa.Table:
        return self.tables[0]

    @property
    def n_checkpoints(self) -> int:
        return int(self.infos[0]["n_checkpoints"])

    @property
    def tasks(self) -> dict[str, list[str]]:
        return self.infos[0]["tasks"]


def _codes_of(table: pa.Table, run: Path) -> np.ndarray:
    col = table["soi"].combine_chunks()
    value_set = pa.array(list(SOI_CATEGORIES), pa.string())
    if pa.types.is_dictionary(col.type):
        pos = to_numpy(pc.index_in(col.dictionary.cast(pa.string()), value_set=value_set).fill_null(-1))
        codes = pos.astype(np.int64)[to_numpy(col.indices).astype(np.int64)]
    else:
        codes = to_numpy(pc.index_in(col.cast(pa.string()), value_set=value_set).fill_null(-1)).astype(np.int64)
    if (codes < 0).any():
        raise SoiError("per-example table: column 'soi' holds values that are not SOI categories", path=run)
    return codes.astype(np.int8)


def load_seed_set(seed_set: SeedSet, *, label: str | None = None, late_fraction: float = 0.5,
                  max_checkpoints: int | None = None, columns: tuple[str, ...] | None = NEEDED,
                  cache: bool = True, workers: int | None = None) -> SeedData:
    """Analyse (or read the cached analysis of) every seed and align the seeds on the first seed's rows.

    ``workers`` seeds are loaded at once (threads; default 2). ``columns`` limits what is kept per seed.

    Raises
    ------
    SoiError
        A broken seed run (its own error, naming the run), or seeds that disagree on example ids, gold
        labels, label names per task or checkpoint counts (names the seed run that differs).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    label = label or seed_set.path.name

    def one(run: Path) -> tuple[pa.Table, dict[str, Any], bool]:
        return load_run_table(run, late_fraction=late_fraction, max_checkpoints=max_checkpoints, columns=columns,
                              cache=cache)

    workers = max(1, min(workers if workers is not None else 2, len(seed_set.runs), os.cpu_count() or 1))
    if workers == 1:
        loaded = [one(run) for run in seed_set.runs]
    else:  # NumPy and Arrow release the GIL for most of an analysis
        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(one, seed_set.runs))  # errors surface in seed order
    tables = [t for t, _, _ in loaded]
    infos = [i for _, i, _ in loaded]
    cached = [c for _, _, c in loaded]
    ref = tables[0]
    ref_ids = ref["example_id"].combine_chunks().cast(pa.string())
    dup = first_duplicate(ref_ids) if len(ref_ids) else None
    if dup is not None:
        raise SoiError(f"duplicate example_id {dup!r}", path=seed_set.runs[0])
    ref_gold = to_numpy(ref["gold"]).astype(np.int64)
    codes = np.empty((len(tables), ref.num_rows), np.int8)
    final = np.empty((len(tables), ref.num_rows), bool)
    aligned = []
    for s, (run, table, info) in enumerate(zip(seed_set.runs, tables, infos, strict=True)):
        if s:
            if info["tasks"] != infos[0]["tasks"]:
                raise SoiError(f"labels per task differ from {seed_set.runs[0].name} "
                               f"({info['tasks']} vs {infos[0]['tasks']})", path=run)
            if info["n_checkpoints"] != infos[0]["n_checkpoints"]:
                raise SoiError(f"{info['n_checkpoints']} checkpoints, but {seed_set.runs[0].name} has "
                               f"{infos[0]['n_checkpoints']}; seeds of one setting must record the same "
                               "checkpoints", path=run)
            ids = table["example_id"].combine_chunks().cast(pa.string())
            if len(ids) != len(ref_ids):
                raise SoiError(f"{len(ids)} examples, but {seed_set.runs[0].name} has {len(ref_ids)}; "
                               "seeds of one setting must record the same examples", path=run)
            if not ids.equals(ref_ids):  # the usual case (same examples file order) needs no hashing
                pos = pc.index_in(ref_ids, value_set=ids)
                if pos.null_count:
                    missing = ref_ids.filter(pos.is_null())[0].as_py()
                    raise SoiError(f"example ids differ from {seed_set.runs[0].name} (e.g. {missing!r} is "
                                   "missing)", path=run)
                # same length and every (distinct) reference id found: a permutation, no duplicates possible
                table = table.take(pos)
            gold = to_numpy(table["gold"]).astype(np.int64)
            bad = np.flatnonzero(gold != ref_gold)
            if bad.size:
                raise SoiError(f"gold labels differ from {seed_set.runs[0].name} for {bad.size} example(s) "
                               f"(e.g. {ref_ids[int(bad[0])].as_py()!r})", path=run)
        aligned.append(table)
        codes[s] = _codes_of(table, run)
        final[s] = to_numpy(table["final_correct"]).astype(bool)
    return SeedData(seed_set=seed_set, label=label, tables=tuple(aligned), codes=codes, final_correct=final,
                    infos=tuple(infos), cached=tuple(cached))


# ------------------------------------------------------------------------------------------- analysis


def stability_by_group(codes: np.ndarray, k: int, group_codes: np.ndarray, n_groups: int,
                       precomputed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Per group: mean stability, mean pairwise agreement and Fleiss' kappa of the seeds' categories.

    With one seed every value is ``None`` (agreement between seeds needs >= 2 seeds). ``precomputed`` is
    :func:`consensus` of ``codes`` when the caller has it already.
    """
    counts, _, stab = consensus(codes, k) if precomputed is None else precomputed
    s = codes.shape[0]
    g = np.asarray(group_codes, np.int64)
    n = np.bincount(g, minlength=n_groups)
    out = []
    if s < 2:
        return [{"n": int(n[i]), "n_seeds": s, "mean_stability": None, "agreement": None, "chance": None,
                 "kappa": None, "note": SINGLE_SEED_NOTE} for i in range(n_groups)]
    stab_sum = np.bincount(g, weights=stab, minlength=n_groups)
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
    for i in range(n_groups):  # loop over groups, each a vectorised kernel
        sel = order[bounds[i]:bounds[i + 1]]
        fk = fleiss_kappa(counts[sel])
        out.append({"n": int(n[i]), "n_seeds": s, "mean_stability": float(stab_sum[i] / n[i]) if n[i] else None,
                    **fk})
    return out


def consensus_table(data: SeedData) -> pa.Table:
    """One row per example: ids and tags, ``n_<category>`` counts, ``soi_consensus``, ``soi_stability``,
    ``n_seeds`` and the seed means ``<metric>_mean`` of :data:`MEAN_METRICS`."""
    k = len(SOI_CATEGORIES)
    counts, modal, stab = consensus(data.codes, k)
    first = data.first
    cols: dict[str, Any] = {name: first[name] for name in ("example_id", *TAG_COLUMNS, "gold")
                            if name in first.column_names}
    for j, cat in enumerate(SOI_CATEGORIES):
        cols[f"n_{cat}"] = pa.array(counts[:, j])
    cols["soi_consensus"] = pa.DictionaryArray.from_arrays(pa.array(modal.astype(np.int32)),
                                                           pa.array(list(SOI_CATEGORIES), pa.string()))
    cols["soi_stability"] = pa.array(stab)
    cols["n_seeds"] = pa.array(np.full(first.num_rows, data.codes.shape[0], np.int32))
    for metric in MEAN_METRICS:
        if all(metric in t.column_names for t in data.tables):
            stacked = np.stack([to_numpy(t[metric]).astype(np.float64) for t in data.tables])
            cols[f"{metric}_mean"] = pa.array(stacked.mean(axis=0))
    return pa.table(cols)


def consensus_summary(data: SeedData, table: pa.Table) -> dict[str, Any]:
    """Per group (overall, task, source, language): consensus counts/shares and seed agreement."""
    k = len(SOI_CATEGORIES)
    modal = to_numpy(table["soi_consensus"].combine_chunks().indices).astype(np.int64)
    groups: dict[str, dict[str, Any]] = {}
    keyed = [("all", np.zeros(table.num_rows, np.int64), ["all"])]
    for key in TAG_COLUMNS:
        if key in data.first.column_names:
            codes, names = tag_codes(data.first, key)
            keyed.append((key, codes.astype(np.int64), names))
    pre = consensus(data.codes, k)
    for key, codes, names in keyed:
        stab = stability_by_group(data.codes, k, codes, len(names), pre)
        counts = np.bincount(codes * k + modal, minlength=len(names) * k).reshape(len(names), k)
        groups[key] = {}
        for i, name in enumerate(names):
            n = int(counts[i].sum())
            groups[key][name] = stab[i] | {
                "consensus_counts": dict(zip(SOI_CATEGORIES, counts[i].tolist(), strict=True)),
                "consensus_shares": {c: (float(counts[i, j] / n) if n else 0.0) for j, c in enumerate(SOI_CATEGORIES)},
            }
    notes = [SINGLE_SEED_NOTE] if data.codes.shape[0] < 2 else []
    return {
        "soi_version": __version__,
        "command": "analyze-seeds",
        "path": str(data.seed_set.path),
        "seeds": data.seed_set.seed_labels(),
        "runs": [str(r) for r in data.seed_set.runs],
        "n_seeds": data.codes.shape[0],
        "n_examples": table.num_rows,
        "n_checkpoints": data.n_checkpoints,
        "categories": list(SOI_CATEGORIES),
        "tie_rule": "modal category; ties go to the tied category listed first in SOI order",
        "cached_seed_analyses": int(sum(data.cached)),
        "notes": notes,
        "groups": groups,
    }


@dataclass(frozen=True)
class SeedAnalysis:
    """Result of :func:`analyze_seeds`."""

    table: pa.Table
    summary: dict[str, Any]
    data: SeedData


def analyze_seeds(path: str | Path, *, late_fraction: float = 0.5, max_checkpoints: int | None = None,
                  write: bool = True, cache: bool = True) -> SeedAnalysis:
    """Consensus analysis of a seed folder: ``analysis/consensus.parquet`` and ``analysis/summary.json``.

    The two files are written as one unit (:func:`soi._io.atomic_dir`); a bad seed leaves nothing behind.
    """
    from soi._io import atomic_dir, write_json, write_parquet

    seed_set = resolve_seed_set(path)
    data = load_seed_set(seed_set, late_fraction=late_fraction, max_checkpoints=max_checkpoints,
                         columns=tuple(dict.fromkeys((*NEEDED, "idx", *MEAN_METRICS))), cache=cache)
    table = consensus_table(data)
    summary = consensus_summary(data, table)
    summary["late_fraction"] = late_fraction
    if write:
        with atomic_dir(Path(path) / ANALYSIS_DIR) as tmp:
            write_parquet(tmp / CONSENSUS_FILE, table)
            write_json(tmp / SUMMARY_FILE, summary)
    return SeedAnalysis(table=table, summary=summary, data=data)


def selection_table(table: pa.Table) -> pa.Table:
    """A consensus table ready for :func:`soi.selection.select`: ``soi`` is ``soi_consensus`` and every
    metric column is its seed mean (``confidence`` = ``confidence_mean``, ...), next to the original columns,
    so the rules and options of a single run apply to the seed consensus."""
    out = table
    if "soi_consensus" in table.column_names and "soi" not in table.column_names:
        out = out.append_column("soi", table["soi_consensus"])
    for metric in MEAN_METRICS:
        name = f"{metric}_mean"
        if name in table.column_names and metric not in out.column_names:
            out = out.append_column(metric, table[name])
    return out
