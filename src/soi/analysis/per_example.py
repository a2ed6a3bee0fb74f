"""One row per example: tags, every metric, the SOI category -- and per-group summaries.

``analyze_run`` is what ``soi analyze`` runs: load the store, compute
:func:`soi.analysis.metrics.all_metrics` and :func:`soi.analysis.categories.soi_categories`, and write
``analysis/per_example.parquet`` and ``analysis/summary.json`` atomically.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from soi import __version__
from soi._arrow import to_numpy
from soi._io import atomic_dir, write_json, write_parquet
from soi.analysis.categories import SOI_CATEGORIES, CategoryRules, categories_from_stats, early_cutoff
from soi.analysis.metrics import all_metrics
from soi.store.meta import ANALYSIS_DIR, RunMeta
from soi.store.reader import Dynamics, load_dynamics, tag_codes
from soi.store.writer import TAG_COLUMNS

GROUP_KEYS = TAG_COLUMNS
PER_EXAMPLE_FILE = "per_example.parquet"
METRIC_COLUMNS = ("confidence", "variability", "correctness", "correctness_frac", "forgetfulness",
                  "forgetting_events", "threshold_closeness", "first_correct", "first_learned", "final_correct",
                  "aum", "mean_loss")
RULE_COLUMNS = (*METRIC_COLUMNS, "soi", *TAG_COLUMNS, "gold")
"""Columns category rules may use."""
SUMMARY_FILE = "summary.json"


def _dict_array(codes: np.ndarray, names: tuple[str, ...] | list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, np.int32)), pa.array(list(names), pa.string()))


def per_example_table(
    dyn: Dynamics,
    *,
    late_fraction: float = 0.5,
    include_ci: bool = False,
    rules: CategoryRules | None = None,
) -> pa.Table:
    """Per-example table (cleanlab-style, one row per example) of a run's dynamics.

    Columns: ``idx, example_id, task, source, language, gold, gold_label, final_pred`` then every metric of
    :func:`~soi.analysis.metrics.all_metrics` and ``soi`` (the SOI category); with ``rules`` also
    ``category`` (the user's categories). ``text``/``text_pair`` are kept when the store has them.
    """
    ex = dyn.examples
    metrics = all_metrics(dyn.p_gold, dyn.correct, dyn.margin, dyn.loss, include_ci=include_ci)
    soi_codes = categories_from_stats(metrics["first_correct"], metrics["forgetting_events"], metrics["correctness"],
                                      metrics["final_correct"], dyn.n_checkpoints, late_fraction=late_fraction)
    task_codes, task_names = tag_codes(ex, "task")
    # gold label names: per-task label lists concatenated, offset by task
    offsets = np.cumsum([0] + [dyn.meta.num_labels(t) for t in task_names])
    label_names = [lab for t in task_names for lab in dyn.meta.tasks[t]]
    unique_labels = list(dict.fromkeys(label_names))  # tasks may share label names ("yes"/"no")
    label_code = np.asarray([unique_labels.index(x) for x in label_names], np.int32)
    gold = dyn.gold.astype(np.int64)
    cols: dict[str, Any] = {
        "idx": ex["idx"],
        "example_id": ex["example_id"],
        "task": ex["task"],
        "source": ex["source"],
        "language": ex["language"],
        "gold": ex["gold"],
        "gold_label": (_dict_array(label_code[offsets[:-1][task_codes] + gold], unique_labels)
                       if label_names else ex["gold"]),
        "final_pred": pa.array(dyn.pred[:, -1]),
    }
    cols.update({k: pa.array(v) for k, v in metrics.items()})
    cols["soi"] = _dict_array(soi_codes, SOI_CATEGORIES)
    if rules is not None:
        columns = {k: v for k, v in metrics.items()}
        columns["soi"] = np.asarray(SOI_CATEGORIES, dtype=object)[soi_codes]
        for key in GROUP_KEYS:
            codes, names = tag_codes(ex, key)
            columns[key] = np.asarray(names, dtype=object)[codes]
        columns["gold"] = gold
        codes, names = rules.assign(columns)
        cols["category"] = _dict_array(codes, names)
    for name in ("text", "text_pair"):
        if name in ex.column_names and ex[name].null_count < ex.num_rows:
            cols[name] = ex[name]
    return pa.table(cols)


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze_run`: the per-example table and the summary dict."""

    table: pa.Table
    summary: dict[str, Any]

    def to_pandas(self):
        """The per-example table as a pandas DataFrame."""
        return self.table.to_pandas()


def group_sums(codes: np.ndarray, n_groups: int, cats: dict[str, tuple[np.ndarray, int]],
               correct: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Integer statistics per group: sizes ``(G,)``, ``(G, K)`` examples per category for each category column
    (``cats``: name -> (codes, K)) and ``(G, E)`` correct predictions per checkpoint.

    The one kernel of the in-memory summary and of the streamed shards' sums (which add these integers up).
    """
    codes = codes.astype(np.int64, copy=False)
    n = np.bincount(codes, minlength=n_groups)
    counts = {c: np.bincount(codes * k + cat, minlength=n_groups * k).reshape(n_groups, k)
              for c, (cat, k) in cats.items()}
    if n_groups == 1:
        acc = correct.sum(axis=0, dtype=np.int64)[None, :]
    else:
        acc = np.stack([np.bincount(codes, weights=correct[:, j], minlength=n_groups)
                        for j in range(correct.shape[1])], axis=1).astype(np.int64)
    return n, counts, acc


def group_entry(n: int, counts: np.ndarray, names: tuple[str, ...], acc: np.ndarray,
                conf_sum: float) -> dict[str, Any]:
    """One group's ``summary.json`` entry from its size, category counts, correct counts per checkpoint and
    confidence sum."""
    k = len(names)
    return {
        "n": n,
        "counts": {names[j]: int(counts[j]) for j in range(k)},
        "shares": {names[j]: (float(counts[j] / n) if n else 0.0) for j in range(k)},
        "accuracy_per_checkpoint": [float(a / n) if n else 0.0 for a in acc],
        "final_accuracy": float(acc[-1] / n) if n else 0.0,
        "mean_confidence": float(conf_sum / n) if n else 0.0,
    }


def _group_stats(codes: np.ndarray, n_groups: int, cat: np.ndarray, names: tuple[str, ...],
                 correct: np.ndarray, conf: np.ndarray) -> list[dict[str, Any]]:
    n, counts, acc = group_sums(codes, n_groups, {"c": (cat, len(names))}, correct)
    conf_sum = np.bincount(codes, weights=conf, minlength=n_groups)
    return [group_entry(int(n[g]), counts["c"][g], names, acc[g], conf_sum[g]) for g in range(n_groups)]


def summary_fields(meta: RunMeta, *, n_examples: int, checkpoints: list[int], steps: list[int],
                   late_fraction: float, category_column: str, names: tuple[str, ...],
                   groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` of an analysis (in memory or streamed) from its group entries."""
    e = len(checkpoints)
    return {
        "soi_version": __version__,
        "model": meta.model,
        "setting": meta.setting,
        "seed": meta.seed,
        "recording_mode": meta.recording_mode,
        "checkpoint_unit": meta.checkpoint_unit,
        "n_examples": n_examples,
        "n_checkpoints": e,
        "checkpoints": checkpoints,
        "steps": steps,
        "late_fraction": late_fraction,
        "early_cutoff": early_cutoff(e, late_fraction),
        "category_column": category_column,
        "categories": list(names),
        "accuracy_per_checkpoint": groups["all"]["all"]["accuracy_per_checkpoint"],
        "groups": groups,
    }


def summarize(dyn: Dynamics, table: pa.Table, *, late_fraction: float = 0.5,
              category_column: str = "soi") -> dict[str, Any]:
    """Category counts/shares and accuracy per checkpoint, overall and per task / source / language."""
    col = table[category_column].combine_chunks()
    cat = to_numpy(col.indices).astype(np.int64)
    names = tuple(col.dictionary.to_pylist())
    correct = dyn.correct
    conf = to_numpy(table["confidence"])
    groups: dict[str, dict[str, Any]] = {}
    zeros = np.zeros(dyn.n_examples, np.int64)
    groups["all"] = {"all": _group_stats(zeros, 1, cat, names, correct, conf)[0]}
    done: list[tuple[np.ndarray, list[str], dict[str, Any]]] = []
    for key in GROUP_KEYS:
        codes, gnames = tag_codes(dyn.examples, key)
        same = next((g for c, n, g in done if n == gnames and np.array_equal(c, codes)), None)
        if same is None:  # e.g. source == task in single-source runs: reuse instead of recomputing
            stats = _group_stats(codes.astype(np.int64), len(gnames), cat, names, correct, conf)
            same = dict(zip(gnames, stats, strict=True))
            done.append((codes, gnames, same))
        groups[key] = same
    return summary_fields(dyn.meta, n_examples=dyn.n_examples, checkpoints=dyn.checkpoints.tolist(),
                          steps=dyn.steps.tolist(), late_fraction=late_fraction, category_column=category_column,
                          names=names, groups=groups)


def analyze(dyn: Dynamics, *, late_fraction: float = 0.5, include_ci: bool = False,
            rules: CategoryRules | None = None) -> Analysis:
    """Per-example table and summary of loaded dynamics (no I/O)."""
    table = per_example_table(dyn, late_fraction=late_fraction, include_ci=include_ci, rules=rules)
    return Analysis(table=table, summary=_summary(dyn, table, late_fraction=late_fraction, include_ci=include_ci,
                                                  rules=rules))


def _summary(dyn: Dynamics, table: pa.Table, *, late_fraction: float, include_ci: bool,
             rules: CategoryRules | None) -> dict[str, Any]:
    summary = summarize(dyn, table, late_fraction=late_fraction)
    if rules is not None:
        summary["custom"] = summarize(dyn, table, late_fraction=late_fraction, category_column="category")
        summary["custom"]["rules"] = dict(rules.rules) | {"<default>": rules.default}
    summary["include_ci"] = include_ci
    return summary


def analyze_run(run_dir: str | Path, *, late_fraction: float = 0.5, include_ci: bool = False,
                rules: CategoryRules | None = None, mode: str | None = None, write: bool = True,
                max_checkpoints: int | None = None) -> Analysis:
    """Analyse a run directory; with ``write`` store ``analysis/per_example.parquet`` and ``summary.json``.

    Examples
    --------
    >>> res = analyze_run("runs/sst2")                     # doctest: +SKIP
    >>> res.summary["groups"]["all"]["all"]["shares"]      # doctest: +SKIP
    >>> res.to_pandas().query("soi == 'forgettable_lost'")  # doctest: +SKIP
    """
    dyn = load_dynamics(run_dir, mode=mode, max_checkpoints=max_checkpoints)
    if not write:
        result = analyze(dyn, late_fraction=late_fraction, include_ci=include_ci, rules=rules)
        result.summary["run"] = str(run_dir)
        return result
    out = Path(run_dir) / (ANALYSIS_DIR if mode is None else f"{ANALYSIS_DIR}-{mode}")
    table = per_example_table(dyn, late_fraction=late_fraction, include_ci=include_ci, rules=rules)
    # both files are written into a temporary folder that replaces analysis/ as one unit, so after kill -9 or
    # two concurrent analyses per_example.parquet and summary.json always describe the same analysis
    with atomic_dir(out) as tmp, ThreadPoolExecutor(1) as pool:  # encode the Parquet file meanwhile
        written = pool.submit(write_parquet, tmp / PER_EXAMPLE_FILE, table, **_table_write_options(table))
        summary = _summary(dyn, table, late_fraction=late_fraction, include_ci=include_ci, rules=rules)
        summary["run"] = str(run_dir)
        written.result()
        write_json(tmp / SUMMARY_FILE, summary)
    return Analysis(table=table, summary=summary)


def _table_write_options(table: pa.Table) -> dict[str, Any]:
    """zstd for ids, tags and integers; float metrics stored uncompressed (random mantissas do not compress,
    and skipping them saves a third of the write time on 1M rows)."""
    compression = {f.name: ("none" if pa.types.is_floating(f.type) else "zstd") for f in table.schema}
    dictionary = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    return {"compression": compression, "use_dictionary": dictionary, "write_statistics": False}
