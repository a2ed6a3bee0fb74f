"""Static PNG copies of the report's main figures (matplotlib, Agg), for papers.

Drawn from the same collected data as the HTML page (:func:`soi.report.data.collect`): data maps (one per
run name, first seed; Swayamdipta et al., 2020), SOI share bars, transition heatmaps (via
:func:`soi.plots.transition_heatmap`), evaluation, two-stage arms and cross-lingual transfer curves and
heatmaps (via :func:`soi.gen.transfer.plot_transfer`), the reseeding null of every comparison with seeds
(within / observed / excess, :func:`soi.plots.seed_null_heatmaps`) and the seed stability.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from soi._io import atomic_path
from soi.plots import DPI, seed_null_heatmaps, transition_heatmap
from soi.report.data import decode_column

CAT_COLOURS = ["#1a9850", "#91cf60", "#d9b310", "#fc8d59", "#d73027", "#6a3d9a"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", str(name)).strip("_") or "_"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def datamap_figure(conf: np.ndarray, var: np.ndarray, cat: np.ndarray, categories: list[str], title: str,
                   path: Path) -> Path:
    """Variability (x) vs confidence (y), coloured by SOI category; hexbin density above 20,000 points."""
    fig = _figure(5.6, 4.4)
    ax = fig.add_subplot()
    if conf.size > 20_000:
        hb = ax.hexbin(var, conf, gridsize=60, bins="log", cmap="Greys", mincnt=1,
                       extent=(0, max(0.5, var.max()), 0, 1))
        fig.colorbar(hb, ax=ax, shrink=0.8).set_label("examples (log)")
        for c, name in enumerate(categories):  # category centroids on top of the density
            sel = cat == c
            if sel.any():
                ax.scatter(var[sel].mean(), conf[sel].mean(), s=60, color=CAT_COLOURS[c % 6], edgecolor="black",
                           label=f"{name} (mean)", zorder=3)
    else:
        size = 6 if conf.size < 3000 else 2
        for c, name in enumerate(categories):
            sel = cat == c
            if sel.any():
                ax.scatter(var[sel], conf[sel], s=size, color=CAT_COLOURS[c % 6], alpha=0.6, linewidths=0,
                           label=name, rasterized=True)
    ax.set_xlim(0, max(0.5, float(var.max()) if var.size else 0.5))
    ax.set_ylim(0, 1)
    ax.set_xlabel("variability")
    ax.set_ylabel("confidence")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=2, loc="lower right", frameon=True)
    return _save(fig, path)


def shares_figure(settings: list[dict[str, Any]], key: str, categories: list[str], path: Path) -> Path | None:
    """Stacked horizontal SOI share bars per setting (and group)."""
    rows = []
    groups = sorted({g for st in settings for g in st["shares"].get(key, {})})
    for g in groups:
        for st in settings:
            sh = st["shares"].get(key, {}).get(g)
            if sh is not None:
                rows.append((st["name"] if key == "all" else f"{g} · {st['name']}", np.asarray(sh, float)))
    if not rows:
        return None
    fig = _figure(8.5, max(2.2, 0.9 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for c, name in enumerate(categories):
        vals = np.array([r[1][c] for r in rows])
        ax.barh(y, vals, left=left, color=CAT_COLOURS[c % 6], label=name, height=0.8)
        left += vals
    ax.set_yticks(y, labels=[r[0] for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    ax.set_title("SOI shares" + ("" if key == "all" else f" per {key}"), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def eval_figure(settings: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy per run and eval set: mean over seeds with a ± std bar (in-distribution blue, OOD orange)."""
    def has_accuracy(e: Any) -> bool:
        acc = e.get("accuracy") if isinstance(e, dict) else None
        return isinstance(acc, dict) and isinstance(acc.get("mean"), int | float)

    items = [(k, st["name"], e) for st in settings for k, e in st.get("eval", {}).items() if has_accuracy(e)]
    items.sort(key=lambda t: t[0])
    if not items:
        return None
    fig = _figure(6.5, 0.8 + 0.28 * len(items))
    ax = fig.add_subplot()
    y = np.arange(len(items))[::-1]
    for yi, (_k, _name, e) in zip(y, items, strict=True):
        acc = e["accuracy"]
        colour = "#e16f24" if e.get("kind") == "ood" else "#0969da"
        ax.errorbar(acc["mean"], yi, xerr=acc.get("std") or 0, fmt="o", color=colour, capsize=3)
    ax.set_yticks(y, labels=[f"{k} · {n}" for k, n, _ in items], fontsize=8)
    ax.set_xlabel("accuracy (mean ± std over seeds; orange = OOD)")
    return _save(fig, path)


def two_stage_figure(exp: dict[str, Any], path: Path) -> Path | None:
    """Forest plot of a two-stage experiment: accuracy with 95% CI per arm and eval set."""
    items = []
    for arm, a in (exp.get("arms") or {}).items():
        for key, e in (a.get("eval") or {}).items():
            m = e.get("accuracy")
            if m and m.get("mean") is not None:
                items.append((key, arm, a.get("kind"), m))
    items.sort(key=lambda t: t[0])
    if not items:
        return None
    colours = {"soi": "#cf222e", "random": "#57606a", "full": "#0969da", "stage1": "#8250df"}
    fig = _figure(6.5, 0.9 + 0.28 * len(items))
    ax = fig.add_subplot()
    y = np.arange(len(items))[::-1]
    for yi, (_key, _arm, kind, m) in zip(y, items, strict=True):
        ci = m.get("ci95") or [m["mean"], m["mean"]]
        ax.errorbar(m["mean"], yi, xerr=[[m["mean"] - ci[0]], [ci[1] - m["mean"]]], fmt="s",
                    color=colours.get(kind, "black"), capsize=3)
    ax.set_yticks(y, labels=[f"{k} · {a}" for k, a, _, _ in items], fontsize=8)
    ax.set_xlabel("accuracy (mean, 95% CI over seeds)")
    ax.set_title(f"two-stage: {exp.get('name', '')}", fontsize=10)
    return _save(fig, path)


def seed_null_figure(c: dict[str, Any], g: dict[str, Any], path: Path) -> Path | None:
    """The reseeding null of a comparison's group (within / observed / excess, BH marks); None without one."""
    sn = g.get("seed_null")
    if not sn or sn.get("between") is None or sn.get("within") is None or sn.get("excess") is None:
        return None
    o = sn.get("overall") or {}
    if o.get("p_value") is not None:
        foot = (f"global test: p = {o['p_value']:.2g} ({o.get('method') or ''}); * and frame: BH q <= "
                f"{sn.get('alpha')} (training dynamics)")
    else:
        foot = str(o.get("note") or sn.get("note") or "no test")
    what = "all shared examples" if g["key"] == "all" else f"{g['key']} = {g['group']}"
    return seed_null_heatmaps(np.asarray(sn["within"], np.float64), np.asarray(sn["between"], np.float64),
                              np.asarray(sn["excess"], np.float64), c["categories"],
                              title=f"reseeding null, {c['label_a']} \u2192 {c['label_b']}: {what}",
                              label_a=c["label_a"], label_b=c["label_b"], path=path,
                              significant=np.asarray(sn["significant"], bool), footnote=foot)


def stability_figure(sets: list[dict[str, Any]], path: Path) -> Path:
    """Per seed set: the distribution of per-example stability (share of examples with m of S seeds in the modal
    SOI category), with the overall Fleiss' kappa in the title."""
    fig = _figure(max(3.2, 2.6 * len(sets)), 2.8)
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, st in zip(axes, sets, strict=True):
        s, n = st["n_seeds"], max(st["n"], 1)
        share = np.asarray(st["hist"], np.float64) / n
        ax.bar(np.arange(1, s + 1), share, color="#4292c6")
        ax.set_xticks(np.arange(1, s + 1), labels=[f"{m}/{s}" for m in range(1, s + 1)], fontsize=8)
        ax.set_ylim(0, max(0.05, float(share.max()) * 1.1))
        ax.set_xlabel("seeds in the modal category", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        kappa = ((st["groups"].get("all") or {}).get("all") or {}).get("kappa")
        ax.set_title(f"{st['name']} ({s} seeds)" + ("" if kappa is None else f", kappa {kappa:.2f}"), fontsize=9)
    axes[0].set_ylabel("share of examples", fontsize=8)
    return _save(fig, path)


def write_figures(src: Path, data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw every static figure of the collected report data into ``out_dir``; returns the paths written."""
    written: list[Path] = []
    cats = data["categories"]
    ex = data["examples"]
    cols = ex["columns"]
    if ex["n"]:
        run_col = decode_column(cols["run"])
        conf, var = decode_column(cols["confidence"]), decode_column(cols["variability"])
        soi = decode_column(cols["soi"])
        seen: set[str] = set()
        for r in data["runs"]:
            if r["name"] in seen or not r["n_shown"]:
                continue
            seen.add(r["name"])
            sel = run_col == r["id"]
            title = f"data map: {r['name']}" + (f" (seed {r['seed']})" if r["seed"] is not None else "")
            title += f", n = {int(sel.sum()):,}"
            written.append(datamap_figure(conf[sel], var[sel], soi[sel], cats, title,
                                          out_dir / f"datamap_{_safe(r['name'])}.png"))
    settings = [s for s in data["settings"] if s["shares"].get("all")]
    if settings:
        for key in ("all", *data.get("group_keys", [])):
            p = shares_figure(settings, key, cats, out_dir / f"soi_shares_{key}.png")
            if p:
                written.append(p)
    for c in data["comparisons"]:
        g = next((g for g in c["groups"] if g["key"] == "all"), c["groups"][0] if c["groups"] else None)
        if g is None:
            continue
        stem = f"transitions_{_safe(c['a'])}__vs__{_safe(c['b'])}" + (f"_seed-{c['seed']}" if c["seed"] is not None
                                                                      else "")
        written.append(transition_heatmap(np.asarray(g["counts"]), c["categories"],
                                          title=f"{c['label_a']} \u2192 {c['label_b']}: all shared examples",
                                          label_a=c["label_a"], label_b=c["label_b"], path=out_dir / f"{stem}.png",
                                          significant=g["significant"], share_change=g["change"],
                                          level=c.get("level") or 0.95))
        p = seed_null_figure(c, g, out_dir / f"{stem.replace('transitions_', 'seed_null_', 1)}.png")
        if p:
            written.append(p)
    if data.get("stability"):
        written.append(stability_figure(data["stability"], out_dir / "stability.png"))
    with_eval = [s for s in data["settings"] if s.get("eval")]
    if with_eval:
        p = eval_figure(with_eval, out_dir / "eval.png")
        if p:
            written.append(p)
    for exp in (data.get("two_stage") or {}).get("experiments", []) or []:
        p = two_stage_figure(exp, out_dir / f"two_stage_{_safe(exp.get('name', 'experiment'))}.png")
        if p:
            written.append(p)
    for task, t in (data.get("transfer") or {}).items():
        from soi.gen.transfer import plot_transfer

        written.extend(plot_transfer(t, out_dir, _safe(task)))
    for key, st in (data.get("transfer_stats") or {}).items():  # intervals (soi.analysis.transfer)
        from soi.gen.transfer import plot_transfer_stats

        written.append(plot_transfer_stats(st, out_dir / f"transfer_{_safe(key)}_intervals.png", title=key))
    for key, pts in (data.get("by_model") or {}).items():
        from soi.gen.transfer import plot_transfer_by_model

        metric = next((st["metric"] for k, st in (data.get("transfer_stats") or {}).items() if k.endswith(key)),
                      "score")
        written.append(plot_transfer_by_model(pts, out_dir / f"transfer_by_model_{_safe(key)}.png", metric=metric))
    return written
