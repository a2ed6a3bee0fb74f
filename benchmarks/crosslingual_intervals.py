"""Per-language score curves with paired bootstrap intervals from a finished generative study folder, for any
per-item column or reference scorer, after the fact.

A study's ``summary.json`` ``transfer_stats`` already covers every metric of its ``metric:`` list (e.g.
``[rouge_l, label_match]``, the crosslingual demo). This script adds what a finished study cannot: statistics for
another metric without retraining (the ``metric:`` list is part of each run's fingerprint) and a chosen number of
bootstrap replicates. It reads ``OUT/runs/<run>-k<k>/seed-<s>/predictions.jsonl``; a metric that is a column there
is read, otherwise a registered reference scorer (``soi.gen.scorers``: ``label_match``, ``rouge_l``, ``chrf``,
``exact_match``, ...) scores the stored prediction against the stored reference. It prints, as JSON,
:func:`soi.analysis.transfer.transfer_statistics` per metric (gain over k = 0 per language with a 95% paired
bootstrap interval over eval items and seeds, seen / unseen means, gap, plateau).

    python benchmarks/crosslingual_intervals.py OUT [--run intent] [--task intent] [--metrics rouge_l label_match]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def item_scores(out: Path, run: str, task: str, metric: str) -> tuple[list[int], dict[str, np.ndarray]]:
    """``ks`` and ``{language: (K, S, n) per-item scores}`` of one run family and task (items in file order)."""
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    grid = cfg.get("tasks", {}).get(task, {}).get("mixture", {}).get("k") or cfg["mixture"]["k"]
    ks = sorted(int(k) for k in grid)
    seeds = [int(s) for s in cfg["seeds"]]
    per: dict[str, list[list[list[float]]]] = {}
    for i, k in enumerate(ks):
        for j, s in enumerate(seeds):
            path = out / "runs" / f"{run}-k{k}" / f"seed-{s}" / "predictions.jsonl"
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows = [r for r in rows if r["task"] == task]
            if rows and metric not in rows[0]:  # score the stored predictions with the registered scorer
                from soi.gen.scorers import make_scorer

                refs = [{"response": str(r["reference"]), "answer": str(r["reference"]), "language": r["language"]}
                        for r in rows]
                values = make_scorer(metric).score(refs, [r["prediction"] for r in rows]).tolist()
            else:
                values = [float(r[metric]) for r in rows]
            by_lang: dict[str, list[float]] = {}
            for r, value in zip(rows, values, strict=True):
                by_lang.setdefault(r["language"], []).append(value)
            for lang, vals in by_lang.items():
                per.setdefault(lang, [[[] for _ in seeds] for _ in ks])[i][j] = vals
    return ks, {lang: np.asarray(v, dtype=np.float64) for lang, v in per.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from soi.analysis.transfer import transfer_statistics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--run", default=None, help="run family (default: the task name)")
    p.add_argument("--task", default=None, help="task (default: the study's first task)")
    p.add_argument("--metrics", nargs="+", default=None, help="default: the task's metrics, plus label_match")
    p.add_argument("--n-boot", type=int, default=4000)
    a = p.parse_args(argv)
    cfg = json.loads((a.out / "config.json").read_text(encoding="utf-8"))
    task = a.task or next(iter(cfg["tasks"]))
    mix = {**cfg.get("mixture", {}), **{k: v for k, v in cfg["tasks"][task].get("mixture", {}).items()
                                         if v is not None}}
    metric = cfg["tasks"][task].get("metric") or ("exact_match" if task == "math" else "rouge_l")
    given = [metric] if isinstance(metric, str) else list(metric)
    metrics = a.metrics or list(dict.fromkeys([*given, "label_match"]))
    result: dict[str, Any] = {"out": str(a.out), "task": task}
    for m in metrics:
        ks, scores = item_scores(a.out, a.run or task, task, m)
        result[m] = transfer_statistics(scores, ks, seen=mix.get("seen") or [], unseen=mix.get("unseen") or [],
                                        metric=m, n_boot=a.n_boot, seed=0)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
