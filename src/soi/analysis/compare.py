"""``compare_runs``: SOI transitions from setting A (single) to setting B (multi), each a run or a seed set.

What ``soi compare`` and the study runner call. ``a`` and ``b`` are each a run directory or a seed folder
(``seed-*/`` run directories, a study's ``runs/<name>/``). The output folder gets, as one atomic unit
(:func:`soi._io.atomic_dir`):

* ``transitions.parquet`` (group_key, group, from, to, count, row_share) and per group
  ``transitions/<key>=<group>.csv`` / ``_rowpct.csv`` and ``heatmaps/<key>=<group>.png``;
* ``stats.json``: per group the transition matrix and McNemar / share-change statistics (on training
  dynamics), the seeds, the seeds' agreement (Fleiss' kappa), the reseeding null
  (:mod:`soi.analysis.seed_null`) and, when every seed has ``eval/<key>.parquet``, paired test-set
  statistics (:mod:`soi.analysis.paired`). The schema is documented in ``docs/statistics.md``.

With one run per side the matrices and tests are those of :func:`soi.analysis.transitions.compare_tables`
(and a note that seed noise cannot be separated). With seeds, the matrix is pooled over all S_a x S_b seed
pairs (counts are summed, so they total n x S_a x S_b), shares are seed means and the share-change
intervals account for seeds and examples.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from soi import __version__
from soi._arrow import to_numpy
from soi.analysis.categories import SOI_CATEGORIES, early_cutoff
from soi.analysis.paired import TRAINING_DATA, clustered_mcnemar, eval_set_stats, matched_pairs
from soi.analysis.seed_null import (
    N_BUCKETS,
    example_buckets,
    null_to_dict,
    pair_bucket_counts,
    pairs_of,
    reseeding_null,
)
from soi.analysis.seeds import (
    SINGLE_SEED_NOTE,
    SeedData,
    consensus,
    load_seed_set,
    resolve_seed_set,
    stability_by_group,
)
from soi.analysis.transitions import (
    DEFAULT_GROUP_BY,
    EXACT_BELOW,
    OVERALL,
    Comparison,
    compare_tables,
    group_selections,
    mcnemar,
    row_normalise,
    top_transitions,
)
from soi.errors import SoiError
from soi.store.reader import tag_codes

GROUP_KEYS = ("task", "source", "language")
STATS_FILE = "stats.json"
MAX_STRATA_CELLS = 4096
"""Cap on strata x buckets of the pair-count array (memory: pairs x this x k^2 x 8 bytes)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name).strip("_") or "_"
    return "_" + safe if safe.startswith(".") else safe


def file_stems(groups: Sequence[tuple[str, str]]) -> list[str]:
    """``<key>=<group>`` per group, made file-name safe and unique (case-insensitively)."""
    used: set[str] = set()
    stems = []
    for key, group in groups:
        base = f"{key}={_safe(group)}"
        stem, i = base, 1
        while stem.lower() in used:
            i += 1
            stem = f"{base}~{i}"
        used.add(stem.lower())
        stems.append(stem)
    return stems


def matrix_csv(matrix: Any, categories: Sequence[str], fmt: str) -> str:
    """A k x k matrix as CSV with a ``from \\ to`` header."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["from \\ to", *categories])
    for name, row in zip(categories, matrix, strict=True):
        writer.writerow([name, *(format(x, fmt) for x in row)])
    return buf.getvalue()


def run_labels(path_a: Path, path_b: Path, label_a: str | None, label_b: str | None,
               setting_a: str | None, setting_b: str | None) -> tuple[str, str]:
    """Labels: the option, else run.json ``setting``, else the directory name; disambiguated if equal."""
    name_a, name_b = path_a.resolve().name, path_b.resolve().name
    la = label_a or setting_a or name_a
    lb = label_b or setting_b or name_b
    if la == lb:
        if label_a is None and la != name_a:
            la = f"{la} ({name_a})"
        if label_b is None and lb != name_b:
            lb = f"{lb} ({name_b})"
        if la == lb:
            la, lb = f"{la} [A]", f"{lb} [B]"
    return la, lb


def _check_out(out: Path, a: Path, b: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SoiError("--out exists and is not a directory", path=out)
    if out.is_dir() and any(out.iterdir()):
        stats = out / STATS_FILE
        try:
            ok = json.loads(stats.read_text(encoding="utf-8")).get("command") == "compare"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            raise SoiError("--out is a non-empty folder that is not a soi compare output; it would be replaced "
                           "as a whole: choose a new or empty folder", path=out)
    for side in (a, b):
        if out.resolve() == side.resolve() or side.resolve() in out.resolve().parents:
            raise SoiError("--out must not be inside a compared run or seed folder", path=out)


def _join(da: SeedData, db: SeedData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of A and B of the shared examples (A's order), and only-A / only-B masks; checks gold and labels."""
    ids_a = da.first["example_id"].combine_chunks().cast(pa.string())
    ids_b = db.first["example_id"].combine_chunks().cast(pa.string())
    if ids_a.equals(ids_b):  # same examples in the same order: no hashing
        in_b = np.ones(len(ids_a), bool)
        rows_a = rows_b = np.arange(len(ids_a))
    else:
        pos = pc.index_in(ids_a, value_set=ids_b)
        in_b = pos.is_valid().to_numpy(zero_copy_only=False)
        rows_a = np.flatnonzero(in_b)
        rows_b = to_numpy(pos.filter(pos.is_valid())).astype(np.int64)
    if rows_a.size == 0:
        raise SoiError(f"runs {da.label!r} ({len(ids_a)} examples) and {db.label!r} ({len(ids_b)} examples) share "
                       "no example_id; compare runs recorded on the same examples")
    gold_a = to_numpy(da.first["gold"]).astype(np.int64)[rows_a]
    gold_b = to_numpy(db.first["gold"]).astype(np.int64)[rows_b]
    diff = np.flatnonzero(gold_a != gold_b)
    if diff.size:
        first = ids_a[int(rows_a[diff[0]])].as_py()
        raise SoiError(f"gold labels differ between {da.label!r} and {db.label!r} for {diff.size} of {rows_a.size} "
                       f"shared examples (e.g. {first!r}: {gold_a[diff[0]]} vs {gold_b[diff[0]]}); the runs "
                       "probably use different label orders")
    # label names: a shared example's task must have the same label list in both runs
    ta, names_a = tag_codes(da.first, "task")
    tb, names_b = tag_codes(db.first, "task")
    combos = np.unique(ta.astype(np.int64)[rows_a] * (len(names_b) + 1) + tb.astype(np.int64)[rows_b])
    for combo in combos.tolist():  # loop over task pairs, not examples
        task_a, task_b = names_a[combo // (len(names_b) + 1)], names_b[combo % (len(names_b) + 1)]
        labels_a, labels_b = da.tasks.get(task_a), db.tasks.get(task_b)
        if labels_a != labels_b:
            raise SoiError(f"label names differ for shared examples: task {task_a!r} of {da.label!r} has "
                           f"{labels_a}, task {task_b!r} of {db.label!r} has {labels_b}; the runs are not "
                           "comparable")
    only_a = ~in_b
    in_a_of_b = np.zeros(len(ids_b), bool)
    in_a_of_b[rows_b] = True
    return rows_a, rows_b, only_a, ~in_a_of_b


def _strata(table: pa.Table, rows: np.ndarray, keys: Sequence[str]) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
    """Combined stratum code per shared example over the group keys, its count, and per key the key-code
    of each stratum (so a group is the union of the strata with its code)."""
    n = rows.size
    combined = np.zeros(n, np.int64)
    per_key = {}
    for key in keys:
        codes, names = tag_codes(table, key)
        c = codes.astype(np.int64)[rows]
        per_key[key] = (c, len(names))
        combined = combined * len(names) + c
    uniq, inverse = np.unique(combined, return_inverse=True)
    stratum_codes = {}
    for key in keys:
        c, _ = per_key[key]
        first = np.zeros(uniq.size, np.int64)
        first[inverse] = c  # every example of a stratum shares its key codes
        stratum_codes[key] = first
    return inverse.astype(np.int64), int(uniq.size), stratum_codes


def _mcnemar_seeds(fa: np.ndarray, fb: np.ndarray, pairs: list[tuple[int, int]], seeds_a: list[Any],
                   seeds_b: list[Any]) -> dict[str, Any]:
    """Training-dynamics McNemar per matched seed pair and combined (clustered by example; item-level, i.e.
    conditional on these seeds: it does not account for seed-to-seed variation, the reseeding null does)."""
    per = []
    for i, j in pairs:
        per.append({"seed_a": seeds_a[i], "seed_b": seeds_b[j], **mcnemar(fa[i], fb[j])})
    comb = clustered_mcnemar(fa[[i for i, _ in pairs]], fb[[j for _, j in pairs]])
    b, c = comb["b"], comb["c"]
    return {"data": TRAINING_DATA, "b": b, "c": c, "n_discordant": b + c, "statistic": comb["statistic"],
            "p_value": comb["p_value"], "method": "clustered (item-level)", "detail": comb["method"], "per_seed": per}


def compare_runs(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    late_fraction: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    label_a: str | None = None,
    label_b: str | None = None,
    alpha: float = 0.05,
    progress: bool = False,
    heatmaps: bool = True,
    max_checkpoints: int | None = None,
    cache: bool = True,
) -> dict[str, Any]:
    """Compare setting A with setting B (each a run directory or a seed folder) and write ``out``.

    Parameters
    ----------
    a, b : run directory or seed folder (``seed-*/`` runs) of the single (rows) and multi (columns) setting
    out : output folder, replaced as a whole (refused if it is a non-empty folder that is not a compare output)
    group_by : tags to group by (subset of task, source, language); the overall group is always first
    late_fraction : SOI's learned_early / learned_late cut (0, 1]
    n_boot, seed : bootstrap replicates (>= 1) and seed (>= 0) of the share-change (one run per side) and
        test-set intervals; the reseeding null's example buckets use the same seed
    label_a, label_b : names in outputs (default: run.json ``setting``, else the folder name)
    alpha : level of every significance flag, in (0, 0.5]; intervals are (1 - alpha)
    progress : print one line per step to stderr
    heatmaps : draw the PNG heatmaps (with :mod:`soi.plots`, the leaf plotting module below the analysis layer)
    max_checkpoints : use only the first N checkpoints of every run (>= 1)
    cache : reuse a seed's ``analysis/per_example.parquet`` when it is newer than the run and used the same
        late_fraction

    Returns
    -------
    The ``stats.json`` dict.
    """
    a, b, out = Path(a), Path(b), Path(out)
    keys = tuple(group_by)
    for key in keys:
        if key not in GROUP_KEYS:
            raise SoiError(f"group_by: unknown key {key!r}; use task, source, language")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise SoiError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SoiError(f"seed must be an integer >= 0, got {seed!r}")
    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"late_fraction must be in (0, 1], got {late_fraction}")
    if not 0.0 < alpha <= 0.5:
        raise SoiError(f"alpha must be in (0, 0.5], got {alpha}")
    if max_checkpoints is not None and (isinstance(max_checkpoints, bool) or max_checkpoints < 1):
        raise SoiError(f"max_checkpoints must be >= 1, got {max_checkpoints}")
    level = 1.0 - alpha

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    set_a, set_b = resolve_seed_set(a), resolve_seed_set(b)
    _check_out(out, a, b)
    from soi.store.meta import RunMeta

    la, lb = run_labels(a, b, label_a, label_b, RunMeta.load(set_a.runs[0]).setting,
                        RunMeta.load(set_b.runs[0]).setting)
    say(f"loading {set_a.n_seeds} seed(s) of {la}")
    da = load_seed_set(set_a, label=la, late_fraction=late_fraction, max_checkpoints=max_checkpoints, cache=cache)
    say(f"loading {set_b.n_seeds} seed(s) of {lb}")
    db = load_seed_set(set_b, label=lb, late_fraction=late_fraction, max_checkpoints=max_checkpoints, cache=cache)
    rows_a, rows_b, only_a, only_b = _join(da, db)
    cats = SOI_CATEGORIES
    k = len(cats)
    s_a, s_b = da.codes.shape[0], db.codes.shape[0]
    seeds_a, seeds_b = set_a.seed_labels(), set_b.seed_labels()
    single = s_a == 1 and s_b == 1
    notes: list[str] = []
    if s_a == 1 or s_b == 1:
        notes.append(SINGLE_SEED_NOTE)

    selections, skipped = group_selections(da.first, db.first, rows_a, only_a, only_b, keys)
    used_keys = [key for key in keys if key not in skipped]
    say(f"{rows_a.size} shared examples, {len(selections)} group(s): transition matrices of "
        f"{(s_a + s_b) * (s_a + s_b - 1) // 2} run pair(s)")
    codes_all = np.concatenate([da.codes[:, rows_a], db.codes[:, rows_b]]).astype(np.int8)
    strata, n_strata, stratum_codes = _strata(da.first, rows_a, used_keys)
    n_buckets = int(max(2, min(N_BUCKETS, MAX_STRATA_CELLS // max(n_strata, 1))))
    buckets = example_buckets(rows_a.size, n_buckets, seed)
    pbc = pair_bucket_counts(codes_all, k, strata, n_strata, buckets, n_buckets) if s_a + s_b >= 3 else None
    pi, pj = pairs_of(s_a + s_b)
    cross = (pi < s_a) & (pj >= s_a)

    # per key: group code of each shared example (for stability), via tag codes of A
    key_codes: dict[str, tuple[np.ndarray, list[str]]] = {OVERALL: (np.zeros(rows_a.size, np.int64), [OVERALL])}
    for key in used_keys:
        codes, names = tag_codes(da.first, key)
        key_codes[key] = (codes.astype(np.int64)[rows_a], names)
    codes_a, codes_b = da.codes[:, rows_a], db.codes[:, rows_b]
    pre_a, pre_b = consensus(codes_a, k), consensus(codes_b, k)
    stab_a = {key: stability_by_group(codes_a, k, c, len(nm), pre_a) for key, (c, nm) in key_codes.items()}
    stab_b = {key: stability_by_group(codes_b, k, c, len(nm), pre_b) for key, (c, nm) in key_codes.items()}

    comp: Comparison | None = None
    if single:
        comp = compare_tables(da.first, db.first, group_by=keys, n_boot=n_boot, seed=seed, level=level,
                              categories=cats, label_a=la, label_b=lb)
    pairs = matched_pairs(seeds_a, seeds_b)
    fa_all, fb_all = da.final_correct[:, rows_a], db.final_correct[:, rows_b]
    group_dicts: list[dict[str, Any]] = []
    stems = file_stems([(key, name) for key, name, *_ in selections])
    for gi, ((key, name, sel, n_oa, n_ob), stem) in enumerate(zip(selections, stems, strict=True)):
        if key == OVERALL:
            member = np.ones(n_strata, bool)
            gcode = 0
        else:
            gcode = key_codes[key][1].index(name)
            member = stratum_codes[key] == gcode
        res = None
        if pbc is not None and (s_a >= 2 or s_b >= 2):
            group_counts = pbc[:, member].sum(axis=1)  # (P, G, k, k)
            res = reseeding_null(group_counts, s_a, s_b, alpha=alpha, level=level, seed=seed)
        if comp is not None:
            gd = comp.groups[gi].to_dict()
            gd["mcnemar"] = gd["mcnemar"] | {"data": TRAINING_DATA}
            gd["share_change_method"] = "paired bootstrap over examples (one seed per side)"
        else:
            counts = pbc[cross][:, member].sum(axis=(0, 1, 2)).astype(np.int64)  # pooled over seed pairs
            fa = fa_all if sel is None else fa_all[:, sel]
            fb = fb_all if sel is None else fb_all[:, sel]
            sc = res.share_change if res is not None else None
            share_a = counts.sum(axis=1) / max(counts.sum(), 1)
            share_b = counts.sum(axis=0) / max(counts.sum(), 1)
            tested = sc is not None and sc.get("lo") is not None
            share_change = {}
            for i, cat in enumerate(cats):
                obs = float(share_b[i] - share_a[i])
                share_change[cat] = {
                    "observed": obs, "mean": obs,
                    "se": float(sc["se"][i]) if tested else None,
                    "lo": float(sc["lo"][i]) if tested else None,
                    "hi": float(sc["hi"][i]) if tested else None,
                    "significant": bool(tested and sc["significant"][i]),
                }
            n_pairs = int(cross.sum())
            gd = {
                "key": key, "group": name, "n_shared": int(rows_a.size if sel is None else sel.size),
                "n_only_a": n_oa, "n_only_b": n_ob,
                "accuracy_a": float(fa.mean()) if fa.size else 0.0,
                "accuracy_b": float(fb.mean()) if fb.size else 0.0,
                "mcnemar": _mcnemar_seeds(fa, fb, pairs, seeds_a, seeds_b),
                "counts": counts.tolist(),
                "row_share": row_normalise(counts).tolist(),
                "counts_a": dict(zip(cats, counts.sum(axis=1).tolist(), strict=True)),
                "counts_b": dict(zip(cats, counts.sum(axis=0).tolist(), strict=True)),
                "share_a": dict(zip(cats, share_a.tolist(), strict=True)),
                "share_b": dict(zip(cats, share_b.tolist(), strict=True)),
                "share_change": share_change,
                "significant": [c for c in cats if share_change[c]["significant"]],
                "top_transitions": top_transitions(counts, cats, 5),
                "n_seed_pairs": n_pairs,
                "share_change_method": ("jackknife over seeds and example buckets, t interval" if tested else
                                        f"no interval: {SINGLE_SEED_NOTE if min(s_a, s_b) < 2 else 'too few seeds'}"),
            }
        gd["counts_pooled_over"] = "one run pair" if single else f"{int(cross.sum())} seed pairs (S_a x S_b)"
        gd["seeds"] = {"a": seeds_a, "b": seeds_b}
        sa_g, sb_g = stab_a[key][gcode], stab_b[key][gcode]
        gd["stability"] = {side: {"agreement": st["agreement"], "kappa": st["kappa"],
                                  "mean_stability": st["mean_stability"], "n_seeds": st["n_seeds"]}
                           for side, st in (("a", sa_g), ("b", sb_g))}
        if res is None:
            gd["seed_null"] = {"data": TRAINING_DATA, "overall": {"statistic": None, "p_value": None, "method": None,
                                                                  "significant": False, "note": SINGLE_SEED_NOTE},
                               "cells": [], "note": SINGLE_SEED_NOTE}
        else:
            gd["seed_null"] = null_to_dict(res, cats, alpha, level)
        gd["files"] = {"counts_csv": f"transitions/{stem}.csv", "rowpct_csv": f"transitions/{stem}_rowpct.csv"}
        if heatmaps:
            gd["files"]["heatmap"] = f"heatmaps/{stem}.png"
        group_dicts.append(gd)

    say("paired test-set statistics")
    test_set = eval_set_stats(list(set_a.runs), list(set_b.runs), seeds_a, seeds_b, n_boot=n_boot, seed=seed,
                              level=level)

    def run_info(sd: SeedData, path: Path, label: str) -> dict[str, Any]:
        info = sd.infos[0]
        n_ckpt = int(info["n_checkpoints"])
        return {"path": str(path.resolve()), "label": label, "kind": "run" if sd.seed_set.single_run else "seeds",
                "setting": info.get("setting"), "model": info.get("model"),
                "seed": info.get("seed") if sd.seed_set.single_run else None,
                "seeds": sd.seed_set.seed_labels(), "n_seeds": sd.codes.shape[0],
                "runs": [str(r.resolve()) for r in sd.seed_set.runs], "cached_analyses": int(sum(sd.cached)),
                "n_examples": int(sd.first.num_rows), "n_checkpoints": n_ckpt,
                "early_cutoff": early_cutoff(n_ckpt, late_fraction)}

    params = {"group_by": list(keys), "skipped_group_by": skipped, "n_boot": int(n_boot), "seed": int(seed),
              "level": level, "alpha": alpha, "category_column": "soi", "mcnemar_exact_below": EXACT_BELOW,
              "late_fraction": late_fraction, "n_buckets": n_buckets, "max_checkpoints": max_checkpoints}
    stats: dict[str, Any] = {
        "soi_version": __version__,
        "command": "compare",
        "run_a": run_info(da, a, la),
        "run_b": run_info(db, b, lb),
        "params": params,
        "categories": list(cats),
        "n_a": int(da.first.num_rows),
        "n_b": int(db.first.num_rows),
        "n_shared": int(rows_a.size),
        "n_only_a": int(only_a.sum()),
        "n_only_b": int(only_b.sum()),
        "notes": notes,
        "groups": group_dicts,
        "test_set": test_set,
    }
    say(f"writing {out}")
    _write(out, stats, cats, la, lb, heatmaps)
    return stats


def long_table(groups: list[dict[str, Any]], categories: Sequence[str]) -> pa.Table:
    """``transitions.parquet``: one row per (group, from, to) with ``count`` and ``row_share``."""
    k = len(categories)
    n_groups = len(groups)
    cat_dict = pa.array(list(categories), pa.string())
    frm = np.tile(np.repeat(np.arange(k, dtype=np.int32), k), n_groups)
    to = np.tile(np.tile(np.arange(k, dtype=np.int32), k), n_groups)
    gidx = np.repeat(np.arange(n_groups, dtype=np.int32), k * k)
    counts = np.concatenate([np.asarray(g["counts"], np.int64).ravel() for g in groups] + [np.zeros(0, np.int64)])
    shares = np.concatenate([np.asarray(g["row_share"], np.float64).ravel() for g in groups] + [np.zeros(0)])
    keys = pa.array([g["key"] for g in groups], pa.string())
    names = pa.array([g["group"] for g in groups], pa.string())
    return pa.table({
        "group_key": pc.take(keys, pa.array(gidx)),
        "group": pc.take(names, pa.array(gidx)),
        "from": pa.DictionaryArray.from_arrays(pa.array(frm), cat_dict),
        "to": pa.DictionaryArray.from_arrays(pa.array(to), cat_dict),
        "count": pa.array(counts),
        "row_share": pa.array(shares),
    })


def _write(out: Path, stats: dict[str, Any], cats: Sequence[str], la: str, lb: str, heatmaps: bool) -> None:
    from soi._io import atomic_dir, write_json, write_parquet, write_text

    groups = stats["groups"]
    with atomic_dir(out) as tmp:
        write_parquet(tmp / "transitions.parquet", long_table(groups, cats))
        for g in groups:
            counts = np.asarray(g["counts"], np.int64)
            write_text(tmp / g["files"]["counts_csv"], matrix_csv(counts, cats, "d"))
            write_text(tmp / g["files"]["rowpct_csv"],
                       matrix_csv(np.round(100.0 * np.asarray(g["row_share"]), 6), cats, ""))
            if heatmaps:
                from soi.plots import transition_heatmap

                what = "all shared examples" if g["key"] == OVERALL else f"{g['key']} = {g['group']}"
                pooled = "" if g.get("n_seed_pairs") is None else f" (pooled over {g['n_seed_pairs']} seed pairs)"
                sig = np.array([g["share_change"][c]["significant"] for c in cats])
                change = np.array([g["share_change"][c]["observed"] for c in cats])
                transition_heatmap(counts, cats, title=f"{la} \u2192 {lb}: {what}{pooled}", label_a=la, label_b=lb,
                                   path=tmp / g["files"]["heatmap"], significant=sig, share_change=change,
                                   level=stats["params"]["level"])
        write_json(tmp / STATS_FILE, stats)
