"""Cross-lingual transfer metrics from per-(language, k, seed) scores, and their figures.

Design of Shimabucoro et al. (2025, "A Post-trainer's Guide to Multilingual Training Data"): a fixed English set
plus ``k`` examples per *seen* language; *unseen* languages are only evaluated. For each language and ``k``:

* ``gain(k) = score(k) - score(0)`` (seed means),
* ``relative_gain(k) = gain(k) / score(0)`` (``None`` when ``score(0) = 0``),
* ``gain_per_100(k) = 100 * gain(k) / k`` (``None`` at ``k = 0``; ``k`` counts examples *per seen language*, the
  x axis of every curve, also for unseen languages),
* ``seen_mean(k)`` / ``unseen_mean(k)``: the mean score over the seen / unseen languages (``None`` for an empty
  group) and ``gap(k) = seen_mean(k) - unseen_mean(k)``.

:func:`transfer_summary` returns exactly ``summary["transfer"][task]`` (JSON keys of ``k`` are strings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soi._io import atomic_path
from soi.errors import SoiError

DPI = 150


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "values": [float(v) for v in arr]}


def scores_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, list[float]]]:
    """``{language: {k: [score per seed]}}`` from records ``{language, k, seed, score}`` (seed order kept)."""
    out: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for r in records:
        out.setdefault(str(r["language"]), {}).setdefault(int(r["k"]), []).append((int(r["seed"]), float(r["score"])))
    return {lang: {k: [s for _, s in sorted(v)] for k, v in sorted(by_k.items())} for lang, by_k in out.items()}


def transfer_summary(scores: Mapping[str, Mapping[int, Sequence[float]]], *, seen: Sequence[str],
                     unseen: Sequence[str], metric: str) -> dict[str, Any]:
    """Transfer metrics of one task (the ``summary["transfer"][task]`` schema).

    ``scores[language][k]`` holds one score per seed; every language needs the same ``k`` grid, including 0.
    Languages outside ``seen`` and ``unseen`` (English) get scores and gains but no group mean.
    """
    if not scores:
        raise SoiError("transfer metrics need scores for at least one language")
    langs = list(scores)
    ks = sorted({int(k) for k in scores[langs[0]]})
    for lang in langs:
        have = sorted(int(k) for k in scores[lang])
        if have != ks:
            raise SoiError(f"transfer metrics: language {lang!r} has k {have}, {langs[0]!r} has {ks}")
        for k in have:
            if len(scores[lang][k]) == 0:
                raise SoiError(f"transfer metrics: no score for language {lang!r} at k={k}")
    if 0 not in ks:
        raise SoiError(f"transfer metrics need k=0 (the English-only baseline); k grid is {ks}")
    missing = [x for x in [*seen, *unseen] if x not in scores]
    if missing:
        raise SoiError(f"transfer metrics: no scores for language(s) {missing}")

    mean = {lang: {k: float(np.mean(scores[lang][k])) for k in ks} for lang in langs}
    out_scores = {lang: {str(k): _mean_std(scores[lang][k]) for k in ks} for lang in langs}
    gain = {lang: {str(k): mean[lang][k] - mean[lang][0] for k in ks} for lang in langs}
    rel = {lang: {str(k): (None if mean[lang][0] == 0 else (mean[lang][k] - mean[lang][0]) / mean[lang][0])
                  for k in ks} for lang in langs}
    per100 = {lang: {str(k): (None if k == 0 else 100.0 * (mean[lang][k] - mean[lang][0]) / k) for k in ks}
              for lang in langs}

    def group(members: Sequence[str]) -> dict[str, float | None]:
        return {str(k): (float(np.mean([mean[x][k] for x in members])) if members else None) for k in ks}

    seen_mean, unseen_mean = group(seen), group(unseen)
    gap = {k: (None if seen_mean[k] is None or unseen_mean[k] is None else seen_mean[k] - unseen_mean[k])
           for k in seen_mean}
    return {"metric": metric, "ks": ks, "seen": list(seen), "unseen": list(unseen), "scores": out_scores,
            "gain": gain, "relative_gain": rel, "gain_per_100": per100, "seen_mean": seen_mean,
            "unseen_mean": unseen_mean, "gap": gap}


def _ordered_languages(t: Mapping[str, Any]) -> list[str]:
    rest = [x for x in t["scores"] if x not in t["seen"] and x not in t["unseen"]]
    return [*rest, *t["seen"], *t["unseen"]]


def plot_transfer_curves(transfer: Mapping[str, Any], path: str | Path, *, title: str = "",
                         dpi: int = DPI) -> Path:
    """Score vs ``k`` per language (seed mean ± std): seen languages solid, unseen dashed, others dotted.

    The x axis is symlog (linear below the smallest positive ``k``), so ``k = 0`` and a grid up to thousands fit.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = [int(k) for k in transfer["ks"]]
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    for i, lang in enumerate(_ordered_languages(transfer)):
        style = "-" if lang in transfer["seen"] else "--" if lang in transfer["unseen"] else ":"
        kind = "seen" if lang in transfer["seen"] else "unseen" if lang in transfer["unseen"] else "other"
        m = np.array([transfer["scores"][lang][str(k)]["mean"] for k in ks])
        s = np.array([transfer["scores"][lang][str(k)]["std"] for k in ks])
        color = "0.35" if kind == "other" else cmap(i % 10)
        ax.plot(ks, m, style, marker="o", ms=4, color=color, label=lang if kind == "other" else f"{lang} ({kind})")
        if np.any(s > 0):
            ax.fill_between(ks, m - s, m + s, color=color, alpha=0.12, linewidth=0)
    positive = [k for k in ks if k > 0]
    if positive and max(ks) / min(positive) > 20:
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (training examples per seen language)")
    ax.set_ylabel(transfer["metric"])
    ax.set_title(title or f"{transfer['metric']} vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_transfer_heatmap(transfer: Mapping[str, Any], path: str | Path, *, title: str = "",
                          dpi: int = DPI) -> Path:
    """Language x ``k`` heatmaps: the score (left, colour scale 0-1) and the gain over ``k = 0`` (right, symmetric
    scale), values annotated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = [int(k) for k in transfer["ks"]]
    langs = _ordered_languages(transfer)
    tag = {x: " (seen)" for x in transfer["seen"]} | {x: " (unseen)" for x in transfer["unseen"]}
    score = np.array([[transfer["scores"][x][str(k)]["mean"] for k in ks] for x in langs])
    gain = np.array([[transfer["gain"][x][str(k)] for k in ks] for x in langs])
    fig = Figure(figsize=(3.0 + 1.3 * len(ks), 1.2 + 0.45 * len(langs)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    lim = max(float(np.abs(gain).max()), 0.01)
    for ax, values, name, kwargs in (
            (axes[0], score, transfer["metric"], {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}),
            (axes[1], gain, "gain over k=0", {"cmap": "RdBu", "vmin": -lim, "vmax": lim})):
        im = ax.imshow(values, aspect="auto", **kwargs)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(langs)), [x + tag.get(x, "") for x in langs])
        ax.set_xlabel("k per seen language")
        ax.set_title(name, fontsize=10)
        for (r, c), v in np.ndenumerate(values):
            dark = v < 0.5 if kwargs["cmap"] == "viridis" else abs(v) > 0.6 * lim
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_transfer(transfer: Mapping[str, Any], figures_dir: str | Path, task: str) -> list[Path]:
    """Both figures of one task under ``figures_dir``: ``transfer_<task>_curves.png``, ``..._heatmap.png``."""
    d = Path(figures_dir)
    return [plot_transfer_curves(transfer, d / f"transfer_{task}_curves.png", title=f"{task}: {transfer['metric']}"),
            plot_transfer_heatmap(transfer, d / f"transfer_{task}_heatmap.png", title=f"{task}")]


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


# ------------------------------------------------------------------------------------------ statistics (intervals)
def item_scores(rows: Mapping[tuple[int, int], Sequence[Mapping[str, Any]]], *, task: str, metric: str,
                ks: Sequence[int], seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-item test-set scores ``{language: (K, S, n)}`` for :func:`soi.analysis.transfer.transfer_statistics`.

    ``rows[(k, seed)]`` are one run's ``predictions.jsonl`` records (``task``, ``id``, ``language``, ``metric``);
    items are aligned by ``id`` on the first run's order (:func:`soi.analysis.transfer.align_items`). A language
    whose items differ between runs is an error.
    """
    from soi.analysis.transfer import align_items

    def items(run: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], list[float]]:
        mine = [r for r in run if r["task"] == task]
        return ([str(r["id"]) for r in mine], [str(r["language"]) for r in mine], [float(r[metric]) for r in mine])

    return align_items({(k, s): items(rows[k, s]) for k in ks for s in seeds}, ks, seeds, what=f"task {task!r} ")


def _ci_arrays(block: Mapping[str, Mapping[str, Any]], ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def get(k: int, f: str) -> float:
        v = block[str(k)][f]
        return np.nan if v is None else float(v)
    return (np.array([get(k, "mean") for k in ks]), np.array([get(k, "lo") for k in ks]),
            np.array([get(k, "hi") for k in ks]))


def plot_transfer_stats(stats: Mapping[str, Any], path: str | Path, *, title: str = "", dpi: int = DPI) -> Path:
    """Two panels from :func:`soi.analysis.transfer.transfer_statistics`: the gain over ``k = 0`` per language
    with its interval (seen solid, unseen dashed, others dotted), and the seen / unseen means with intervals."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = [int(k) for k in stats["ks"]]
    fig = Figure(figsize=(10.0, 4.0))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab10"]
    for i, (lang, lv) in enumerate(stats["languages"].items()):
        style = {"seen": "-", "unseen": "--"}.get(lv["group"], ":")
        m, lo, hi = _ci_arrays(lv["gain"], ks)
        off = (i - len(stats["languages"]) / 2) * 0.01 * (max(ks) or 1)  # small x offsets keep the bars apart
        ax1.errorbar(np.array(ks) + off, m, yerr=[m - lo, hi - m], fmt=style, marker="o", ms=3, capsize=2,
                     color=cmap(i % 10), label=f"{lang} ({lv['group']})")
    ax1.axhline(0.0, color="0.5", lw=0.8)
    ax1.set_ylabel(f"gain in {stats['metric']} over k=0")
    for name, g in stats["groups"].items():
        m, lo, hi = _ci_arrays(g["score"], ks)
        color = "tab:blue" if name == "seen" else "tab:orange"
        ax2.plot(ks, m, "-" if name == "seen" else "--", marker="o", color=color, label=f"{name} mean")
        ax2.fill_between(ks, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax2.set_ylabel(stats["metric"])
    for ax in (ax1, ax2):
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (training examples per seen language)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    pct = round(100 * stats["level"])
    ax1.set_title(f"gain, {pct}% interval ({stats['data']})", fontsize=9)
    ax2.set_title(f"group means, {pct}% interval", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_transfer_by_model(points: Sequence[Mapping[str, Any]], path: str | Path, *, metric: str, title: str = "",
                           dpi: int = DPI) -> Path:
    """Transfer against model size: the seen and unseen mean gains at the largest ``k`` (with intervals) per model,
    x = parameter count (log scale). ``points``: ``{model, parameters, k, seen: {mean, lo, hi}, unseen: ...}``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda p: p["parameters"])
    x = np.array([float(p["parameters"]) for p in pts])
    for name, color, style in (("seen", "tab:blue", "-"), ("unseen", "tab:orange", "--")):
        have = [p for p in pts if p.get(name)]
        if not have:
            continue
        xs = np.array([float(p["parameters"]) for p in have])
        m = np.array([p[name]["mean"] for p in have], float)
        lo = np.array([np.nan if p[name]["lo"] is None else p[name]["lo"] for p in have], float)
        hi = np.array([np.nan if p[name]["hi"] is None else p[name]["hi"] for p in have], float)
        ax.errorbar(xs, m, yerr=[m - lo, hi - m], fmt=style, marker="o", capsize=3, color=color,
                    label=f"{name} mean gain")
    for p, xv in zip(pts, x, strict=True):
        ax.annotate(str(p["model"]), (xv, 0), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7)
    ax.axhline(0.0, color="0.5", lw=0.8)
    if x.size and x.max() > 0 and x.min() > 0:
        ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"gain in {metric} over k=0 at k={max((p['k'] for p in pts), default=0)}")
    ax.set_title(title or "transfer vs model size", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)
