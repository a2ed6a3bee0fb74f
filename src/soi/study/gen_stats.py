"""Study-level statistics of a generative (cross-lingual) study, and the ``models:`` axis.

* :func:`transfer_stats` -- per transfer key, :func:`soi.analysis.transfer.transfer_statistics` on the per-item
  test-set scores of every run's ``predictions.jsonl`` (gains over k = 0 with paired bootstrap intervals over items
  and seeds, seen / unseen means and their gap, the gap's slope over k, the seen-unseen correlation, the plateau).
* :func:`soi_across_mixtures` -- for every run family, :func:`soi.analysis.compare.compare_runs` of its k = 0 seed
  set against each k > 0 seed set (``compare/<run>-k0__vs__<run>-k<k>/``): SOI transitions of the shared training
  examples (the fixed English set) per task and language, with the reseeding null when there are >= 3 seeds.
  :func:`probe_soi_rows` lists the probe's (greedy answer correctness) SOI shares per language and k.
* :func:`run_models` -- ``models: [a, b, ...]`` runs the whole study once per model under ``models/<slug>/``
  and writes a combined summary (runs, transfer keys and comparisons prefixed ``<slug>:``) with transfer against
  model size (parameter count).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from soi._io import write_json, write_text
from soi.errors import SoiError
from soi.study.tables import csv_text
from soi.study.transfer_stats import ci_text, print_transfer_stats, write_csv, write_transfer_tables

COMPARE_DIR = "compare"
MODELS_DIR = "models"
CHRF_NOTE = ("chrF intervals are over sentence-level chrF per item (the mean), while the transfer table reports "
             "corpus chrF")


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The records of one run's ``predictions.jsonl``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SoiError(f"cannot read predictions ({exc.strerror or exc})", path=path) from None
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SoiError(f"not JSON lines ({exc.msg}, line {exc.lineno})", path=path) from None


def transfer_stats(config: Any, out: Path, *, n_boot: int = 2000, level: float = 0.95) -> dict[str, Any]:
    """``summary["transfer_stats"]``: one :func:`~soi.analysis.transfer.transfer_statistics` per transfer key."""
    from soi.analysis.transfer import transfer_statistics
    from soi.gen.transfer import item_scores
    from soi.study.generative import PREDICTIONS_FILE, run_dir_of, transfer_keys

    runs = {r.name: r for r in config.run_list()}
    out_stats: dict[str, Any] = {}
    for (run_name, task), key in transfer_keys(config).items():
        run = runs[run_name]
        ks, seeds = config.ks(run), list(config.seeds)
        rows = {(k, s): read_predictions(run_dir_of(out, run.name, k, s) / PREDICTIONS_FILE) for k in ks
                for s in seeds}
        mix = config.task_mixture(task)
        for i, metric in enumerate(config.transfer_metrics(task)):  # the first under the key, others key:metric
            arrays = item_scores(rows, task=task, metric=metric, ks=ks, seeds=seeds)
            st = transfer_statistics(arrays, ks, seen=[x for x in mix["seen"] if x in arrays],
                                     unseen=[x for x in mix["unseen"] if x in arrays], metric=metric,
                                     n_boot=n_boot, seed=int(config.data_seed), level=level)
            if metric == "chrf":
                st["notes"].append(CHRF_NOTE)
            out_stats[key if i == 0 else f"{key}:{metric}"] = st
    return out_stats


def _has_dynamics(seed_dirs: Sequence[Path]) -> bool:
    return all((d / "run.json").is_file() for d in seed_dirs)


def soi_across_mixtures(config: Any, out: Path, *, progress: bool = False) -> list[dict[str, Any]]:
    """Compare every run family's k = 0 seed set with each k > 0 seed set, and every single-task family with the
    multi-task family that also trains its task at the same k (``compare_runs``, grouped by task and language);
    returns ``summary["comparisons"]`` entries (``a``, ``b``, ``kind``, ``dir``, ``seed: None``, ``run``, ``k``,
    ``n_shared``, ``notes`` and per group the shares, significant share changes and the reseeding null's p)."""
    from soi.analysis.compare import compare_runs
    from soi.study.generative import run_dir_of, run_name

    runs = config.run_list()
    singles = {r.tasks[0]: r for r in runs if len(r.tasks) == 1}
    pairs = []  # (run A, k A, run B, k B, kind): k = 0 vs each k of a family; single- vs multi-task at each k
    for run in runs:
        ks = config.ks(run)
        pairs += [(run, ks[0], run, k, "k=0 vs k") for k in ks[1:]]
    for run in runs:
        if len(run.tasks) > 1:
            pairs += [(singles[t], k, run, k, "single vs multi-task") for t in run.tasks if t in singles
                      for k in config.ks(run)]
    entries = []
    for run_a, k_a, run_b, k, kind in pairs:
        a, b = run_name(run_a.name, k_a), run_name(run_b.name, k)
        a_dirs = [run_dir_of(out, run_a.name, k_a, s) for s in config.seeds]
        b_dirs = [run_dir_of(out, run_b.name, k, s) for s in config.seeds]
        entry: dict[str, Any] = {"a": a, "b": b, "run": run_b.name, "k": k, "kind": kind, "seed": None,
                                 "dir": f"{COMPARE_DIR}/{a}__vs__{b}", "data": "training dynamics"}
        if not (_has_dynamics(a_dirs) and _has_dynamics(b_dirs)):
            entry["note"] = ("no recorded dynamics on one side (k = 0 without training examples, or recording "
                             "disabled)")
            entries.append(entry)
            continue
        stats = compare_runs(a_dirs[0].parent, b_dirs[0].parent, out / entry["dir"], group_by=("task", "language"),
                             seed=int(config.data_seed), label_a=a, label_b=b, progress=progress)
        groups = []
        for g in stats["groups"]:
            null = (g.get("seed_null") or {}).get("overall") or {}
            groups.append({"key": g["key"], "group": g["group"], "n_shared": g["n_shared"],
                           "share_a": g["share_a"], "share_b": g["share_b"],
                           "significant": list(g.get("significant") or []), "seed_null_p": null.get("p_value"),
                           "seed_null_significant": bool(null.get("significant", False)),
                           "moved_beyond_noise": null.get("statistic")})
        entry |= {"n_shared": stats["n_shared"], "n_only_a": stats["n_only_a"], "n_only_b": stats["n_only_b"],
                  "notes": stats["notes"], "seeds": len(config.seeds), "groups": groups}
        entries.append(entry)
    return entries


def probe_soi_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tables/probe_soi.csv`` rows: per run, k, data (``training`` = teacher-forced dynamics, ``probe`` = greedy
    answer correctness) and language, the SOI category shares (seed means)."""
    rows = []
    for name, run in summary["runs"].items():
        for data, field in (("training", "soi_shares"), ("probe", "probe_soi_shares")):
            for lang, shares in (run.get(field) or {}).get("language", {}).items():
                rows.append({"run": run["run"], "name": name, "k": run["k"], "data": data, "language": lang,
                             **{c: round(float(v), 6) for c, v in shares.items()}})
    return rows


def write_stats_tables(summary: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """``tables/transfer_stats.csv``, ``tables/transfer_trend.csv`` (gap, slope, correlation, plateau per key;
    :func:`soi.study.transfer_stats.write_transfer_tables`), ``tables/probe_soi.csv`` and ``tables/multitask.csv``."""
    paths = write_transfer_tables(summary.get("transfer_stats") or {}, out)
    for name, rows in (("probe_soi", probe_soi_rows(summary)),
                       ("multitask", multitask_rows(summary.get("multitask") or {}))):
        if rows:
            paths[name] = write_csv(out / "tables" / f"{name}.csv", rows)
    return paths


def multitask_vs_single(config: Any, out: Path, *, n_boot: int = 2000, level: float = 0.95) -> dict[str, Any]:
    """``summary["multitask"]``: for every multi-task run and each of its tasks that also has a single-task run,
    per k the test-set score of multi minus single per language and group, with the same paired bootstrap (items
    shared, each setting's seeds resampled) as the transfer statistics."""
    from soi.analysis.transfer import transfer_statistics
    from soi.gen.transfer import item_scores
    from soi.study.generative import PREDICTIONS_FILE, run_dir_of

    runs = config.run_list()
    singles = {r.tasks[0]: r for r in runs if len(r.tasks) == 1}
    seeds = list(config.seeds)
    result: dict[str, Any] = {}
    for run in runs:
        if len(run.tasks) < 2:
            continue
        for task in run.tasks:
            single = singles.get(task)
            if single is None:
                continue
            metric, mix = config.metric(task), config.task_mixture(task)
            per_k = {}
            for k in config.ks(run):
                rows = {(i, s): read_predictions(run_dir_of(out, name, k, s) / PREDICTIONS_FILE)
                        for i, name in enumerate((single.name, run.name)) for s in seeds}
                arrays = item_scores(rows, task=task, metric=metric, ks=[0, 1], seeds=seeds)
                st = transfer_statistics(arrays, [0, 1], seen=[x for x in mix["seen"] if x in arrays],
                                         unseen=[x for x in mix["unseen"] if x in arrays], metric=metric,
                                         n_boot=n_boot, seed=int(config.data_seed), level=level)
                blocks = {**st["languages"], **{f"{g} mean": {"group": g, **v} for g, v in st["groups"].items()}}
                per_k[str(k)] = {name: {"group": b["group"], "single": b["score"]["0"], "multi": b["score"]["1"],
                                        "difference": b["gain"]["1"]} for name, b in blocks.items()}
            result[f"{run.name}:{task}"] = {"data": st["data"], "task": task, "single": single.name,
                                            "multi": run.name, "metric": metric, "level": level,
                                            "n_seeds": len(seeds), "notes": st["notes"],
                                            "method": "multi - single; " + st["method"], "k": per_k}
    return result


def multitask_rows(multitask: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tables/multitask.csv``: per multi-task key, k and language or group: single, multi, difference."""
    rows = []
    for key, m in multitask.items():
        for k, langs in m["k"].items():
            for name, v in langs.items():
                d = v["difference"]
                rows.append({"key": key, "data": m["data"], "metric": m["metric"], "single": m["single"],
                             "multi": m["multi"], "k": int(k), "language": name, "group": v["group"],
                             "single_score": v["single"]["mean"], "multi_score": v["multi"]["mean"],
                             "difference": d["mean"], "lo": d["lo"], "hi": d["hi"],
                             "significant": d["significant"], "level": m["level"], "seeds": m["n_seeds"]})
    return rows


def study_statistics(config: Any, out: Path, summary: dict[str, Any], *, progress: bool = False) -> dict[str, Any]:
    """Add ``transfer_stats``, the SOI-across-mixtures ``comparisons`` and their figures and tables to a generative
    study's summary (in place; returned)."""
    from soi.gen.transfer import plot_transfer_stats

    summary["transfer_stats"] = transfer_stats(config, out)
    summary["multitask"] = multitask_vs_single(config, out)
    summary["comparisons"] = soi_across_mixtures(config, out, progress=progress)
    figs = list(summary.get("figures") or [])
    for key, st in summary["transfer_stats"].items():
        figs.append(str(plot_transfer_stats(st, out / "figures" / f"transfer_{safe(key)}_intervals.png",
                                            title=key)))
    summary["figures"] = figs
    write_stats_tables(summary, out)
    return summary


# ------------------------------------------------------------------------------------------------ models axis
def safe(name: str) -> str:
    """A file-name-safe form of a model id or key (``HuggingFaceTB/SmolLM2-135M`` -> ``HuggingFaceTB_SmolLM2-135M``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "model"


def parameter_count(model_path: str) -> int:
    """Parameters of a causal LM (its config instantiated on the meta device: no weights loaded; tied weights
    once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return int(sum(p.numel() for p in model.parameters()))


def model_points(models: Sequence[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, list[dict[str, Any]]]:
    """``summary["by_model"]``: per transfer key, one point per model -- the seen / unseen mean gain at the largest
    k with its interval (from ``transfer_stats``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        for key, st in (summaries[m["slug"]].get("transfer_stats") or {}).items():
            k = max(st["ks"])
            point = {"model": m["model"], "slug": m["slug"], "parameters": m["parameters"], "k": k}
            for g in ("seen", "unseen"):
                point[g] = st["groups"][g]["gain"][str(k)] if g in st["groups"] else None
            gap = (st.get("gap") or {}).get(str(k))
            point["gap"] = gap
            out.setdefault(key, []).append(point)
    return out


def run_models(config: Any, out: Path, run_one: Any, *, progress: bool = True) -> dict[str, Any]:
    """Run the study once per entry of ``models:`` (``run_one(sub_config, sub_out)`` returns its summary) under
    ``out/models/<slug>/`` and write the combined summary (runs, transfer keys, multi-task keys and comparisons
    prefixed ``<slug>:``), ``tables/transfer_by_model.csv``, every model's ``tables/transfer_stats.csv`` /
    ``transfer_trend.csv`` / ``probe_soi.csv`` / ``multitask.csv`` rows together, and
    ``figures/transfer_by_model_<key>.png``."""
    from soi.gen.transfer import plot_transfer_by_model
    from soi.model import resolve_model

    models, summaries = [], {}
    for name in config.models:
        slug = safe(Path(name).name if Path(name).expanduser().is_dir() else name)  # a local folder: its name
        while slug in summaries:
            slug += "_"
        sub = config.model_copy(update={"model": name, "models": None})
        summaries[slug] = run_one(sub, out / MODELS_DIR / slug)
        models.append({"model": name, "slug": slug, "parameters": parameter_count(resolve_model(name)),
                       "out": f"{MODELS_DIR}/{slug}"})
    runs, transfer, tstats, multitask, comps = {}, {}, {}, {}, []
    for m in models:
        s, p = summaries[m["slug"]], m["slug"]
        runs |= {f"{p}:{n}": {**r, "model": m["model"]} for n, r in s["runs"].items()}
        transfer |= {f"{p}:{k}": t for k, t in s["transfer"].items()}
        tstats |= {f"{p}:{k}": t for k, t in (s.get("transfer_stats") or {}).items()}
        multitask |= {f"{p}:{k}": t for k, t in (s.get("multitask") or {}).items()}
        comps += [{**c, "a": f"{p}:{c['a']}", "b": f"{p}:{c['b']}", "dir": f"{m['out']}/{c['dir']}"}
                  for c in s.get("comparisons") or []]
    by_model = model_points(models, summaries)
    figures, rows = [], []
    for key, pts in by_model.items():
        metric = summaries[models[0]["slug"]]["transfer_stats"][key]["metric"]
        figures.append(str(plot_transfer_by_model(pts, out / "figures" / f"transfer_by_model_{safe(key)}.png",
                                                  metric=metric, title=f"{key}: transfer vs model size")))
        for pt in pts:
            for g in ("seen", "unseen", "gap"):
                v = pt[g]
                if v is not None:
                    rows.append({"key": key, "model": pt["model"], "parameters": pt["parameters"], "k": pt["k"],
                                 "statistic": "gap" if g == "gap" else f"{g} mean gain", "value": v["mean"],
                                 "lo": "" if v["lo"] is None else v["lo"], "hi": "" if v["hi"] is None else v["hi"],
                                 "significant": v.get("significant", ""), "data": "test set"})
    if rows:
        write_text(out / "tables" / "transfer_by_model.csv", csv_text(rows))
    write_stats_tables({"runs": runs, "transfer_stats": tstats, "multitask": multitask}, out)  # keys <slug>:<key>
    from soi.store.summary import SCHEMA_VERSION, validate_summary

    truns = {f"{m['slug']}:{k}": v for m in models for k, v in (summaries[m["slug"]].get("transfer_runs") or {}
                                                               ).items()}
    summary = {"schema_version": SCHEMA_VERSION, "study": config.name, "type": "generative",
               "model": ", ".join(config.models), "models": models, "seeds": list(config.seeds),
               "data_seed": config.data_seed, "out": str(out), "runs": runs, "comparisons": comps,
               "transfer": transfer, "transfer_runs": truns, "transfer_stats": tstats, "by_model": by_model,
               "figures": figures + [f for s in summaries.values() for f in s.get("figures", [])]}
    if multitask:
        summary["multitask"] = multitask
    validate_summary(summary, strict=True, path=out / "summary.json")  # as the engine checks every summary it writes
    write_json(out / "summary.json", summary)
    if progress:
        from rich.console import Console

        console = Console(highlight=False)
        for key, pts in by_model.items():
            console.print(f"{key}: transfer vs model size (gain at k={pts[0]['k']}, test set): " + "; ".join(
                f"{p['model']} ({p['parameters']:,} parameters) seen {ci_text(p['seen'])}, unseen "
                f"{ci_text(p['unseen'])}" for p in pts))
    return summary


def print_stats(summary: Mapping[str, Any], console: Any) -> None:
    """The transfer statistics (:func:`soi.study.transfer_stats.print_transfer_stats`), then one line per
    multi-task difference and per SOI-across-mixtures comparison."""
    print_transfer_stats(summary.get("transfer_stats") or {}, console)
    for key, m in (summary.get("multitask") or {}).items():
        last = m["k"][max(m["k"], key=int)]
        console.print(f"  {key}: multi-task - single-task ({m['metric']}, {m['data']}) at k={max(m['k'], key=int)}: "
                      + "; ".join(f"{name} {ci_text(v['difference'])}" for name, v in last.items()))
    for c in summary.get("comparisons") or []:
        if c.get("groups"):
            g = c["groups"][0]
            p = g.get("seed_null_p")
            console.print(f"  SOI across mixtures {c['a']} -> {c['b']}: {g['n_shared']} shared training examples, "
                          f"significant share changes: {', '.join(g['significant']) or 'none'}; reseeding null p = "
                          f"{'n/a (< 3 seeds)' if p is None else f'{p:.3g}'}")
