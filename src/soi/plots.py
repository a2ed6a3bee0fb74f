"""Transition heatmaps (matplotlib, Agg; imported lazily so ``import soi`` stays light)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soi._io import atomic_path
from soi.errors import SoiError

DPI = 150


def transition_heatmap(
    counts: np.ndarray,
    categories: Sequence[str],
    *,
    title: str,
    label_a: str,
    label_b: str,
    path: str | Path,
    significant: Sequence[bool] | np.ndarray | None = None,
    share_change: Sequence[float] | np.ndarray | None = None,
    level: float = 0.95,
    dpi: int = DPI,
) -> Path:
    """Draw a transition matrix as a heatmap and save it as PNG atomically.

    Rows are run A's categories (axis ``"<label_a> (single)"``; no suffix when the label already says
    "single"), columns run B's (``"<label_b>"``). The colour is the row percentage (0-100 %, so rows of
    different sizes compare); each cell shows the count and the row percentage. Tick labels carry the
    category totals; with ``share_change`` the column labels also show B's share change in percentage
    points, and categories flagged in ``significant`` (share change interval excludes 0) get a ``*``.

    Parameters
    ----------
    counts : int array (k, k), rows = A, columns = B
    categories : k category names
    title : figure title
    label_a, label_b : run names for the axes
    path : output PNG path (written through a temporary file and renamed)
    significant : optional bool (k,) per category
    share_change : optional float (k,), share in B minus share in A (fractions)
    level : confidence level of the intervals behind ``significant`` (for the footnote)
    dpi : resolution, 150 by default

    Returns
    -------
    The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = np.asarray(counts)
    k = len(categories)
    if c.shape != (k, k):
        raise SoiError(f"heatmap: counts has shape {c.shape}, expected ({k}, {k}) for {k} categories")
    sig = np.zeros(k, bool) if significant is None else np.asarray(significant, bool)
    if sig.shape != (k,):
        raise SoiError(f"heatmap: significant has shape {sig.shape}, expected ({k},)")
    delta = None if share_change is None else np.asarray(share_change, np.float64)
    if delta is not None and delta.shape != (k,):
        raise SoiError(f"heatmap: share_change has shape {delta.shape}, expected ({k},)")
    rows = c.sum(axis=1)
    cols = c.sum(axis=0)
    pct = 100.0 * np.divide(c, rows[:, None], out=np.zeros(c.shape), where=rows[:, None] > 0)

    star = np.where(sig, "*", "")
    ylabels = [f"{name}{star[i]}\n(n={rows[i]})" for i, name in enumerate(categories)]
    if delta is None:
        xlabels = [f"{name}{star[j]}\n(n={cols[j]})" for j, name in enumerate(categories)]
    else:
        xlabels = [f"{name}{star[j]}\n(n={cols[j]}, {100 * delta[j]:+.1f} pp)"
                   for j, name in enumerate(categories)]

    size = 2.0 + 1.1 * k
    width, height = size + 1.2, size
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    # fixed margins in inches (tick labels: up to ~24 characters; no constrained layout, which cost ~40% of
    # the drawing time: benchmarks/bench_seeds.py)
    ax = fig.add_axes((2.3 / width, 2.2 / height, 1.0 - 4.0 / width, 1.0 - 3.0 / height))
    im = ax.imshow(pct, cmap="Blues", vmin=0.0, vmax=100.0, aspect="equal")
    fontsize = 9 if k <= 6 else max(5, 9 - (k - 6) // 2)
    for i in range(k):  # k^2 text cells, not examples
        for j in range(k):
            text = f"{int(c[i, j])}\n{pct[i, j]:.1f}%" if rows[i] else "0\n–"
            colour = "white" if pct[i, j] > 55 else "black"
            weight = "bold" if i == j else "normal"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize, fontweight=weight)
    ax.set_xticks(np.arange(k), labels=xlabels, rotation=35, ha="right", rotation_mode="anchor",
                  fontsize=fontsize)
    ax.set_yticks(np.arange(k), labels=ylabels, fontsize=fontsize)
    ax.set_xlabel(f"{label_b}", fontsize=fontsize + 2)
    ax.set_ylabel(label_a if "single" in label_a.lower() else f"{label_a} (single)", fontsize=fontsize + 2)
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    n = int(c.sum())
    ax.set_title(f"{title}\n(n={n} shared examples)", fontsize=fontsize + 3)
    cax = fig.add_axes((1.0 - 1.35 / width, 2.2 / height, 0.18 / width, 1.0 - 3.0 / height))
    bar = fig.colorbar(im, cax=cax)
    bar.set_label(f"% of row ({label_a} category)", fontsize=fontsize + 1)
    if sig.any():
        note = f"* share change ({label_b} - {label_a}): its {level:.0%} interval excludes 0"
        fig.text(0.01, 0.005, note, fontsize=fontsize - 1, ha="left", va="bottom")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def seed_null_heatmaps(
    within: np.ndarray,
    observed: np.ndarray,
    excess: np.ndarray,
    categories: Sequence[str],
    *,
    title: str,
    label_a: str,
    label_b: str,
    path: str | Path,
    significant: np.ndarray | None = None,
    footnote: str = "",
    dpi: int = DPI,
) -> Path:
    """The reseeding null of one comparison as three heatmaps side by side, saved as PNG atomically.

    Panels: the within-setting (reseeding) null, the observed between-setting transitions (rows = A's
    category, columns = B's) and the excess (observed - null), all as shares of the examples (shown in %;
    docs/statistics.md). Cells flagged in ``significant`` (BH q <= alpha in ``seed_null.cells``) get a ``*``
    and a black frame in the observed and excess panels. The two share panels use one colour scale; the
    excess a diverging one symmetric around 0.

    Parameters
    ----------
    within, observed, excess : float arrays (k, k), shares of the group's examples
    categories : k category names
    title : figure title
    label_a, label_b : setting names for the axes
    path : output PNG path (written through a temporary file and renamed)
    significant : optional bool (k, k)
    footnote : one line under the panels (the global test, or why there is none)
    dpi : resolution, 150 by default

    Returns
    -------
    The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import PercentFormatter

    k = len(categories)
    mats = [np.asarray(m, np.float64) for m in (within, observed, excess)]
    for name, m in zip(("within", "observed", "excess"), mats, strict=True):
        if m.shape != (k, k):
            raise SoiError(f"seed-null heatmap: {name} has shape {m.shape}, expected ({k}, {k})")
    sig = np.zeros((k, k), bool) if significant is None else np.asarray(significant, bool)
    if sig.shape != (k, k):
        raise SoiError(f"seed-null heatmap: significant has shape {sig.shape}, expected ({k}, {k})")
    vmax = max(float(np.nanmax(mats[0])), float(np.nanmax(mats[1])), 1e-9)
    emax = max(float(np.nanmax(np.abs(mats[2]))), 1e-4)
    size = 1.0 + 0.75 * k
    fig = Figure(figsize=(3 * size + 1.6, size + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    fontsize = 8 if k <= 6 else max(5, 8 - (k - 6) // 2)
    panels = (("within-seed null (reseeding)", "Blues", 0.0, vmax, False),
              (f"observed {label_a} \u2192 {label_b}", "Blues", 0.0, vmax, True),
              ("excess = observed \u2212 null", "RdBu", -emax, emax, True))
    for p, (ax, m, (name, cmap, lo, hi, marks)) in enumerate(zip(axes, mats, panels, strict=True)):
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, aspect="equal")
        for i in range(k):  # k^2 text cells, not examples
            for j in range(k):
                mark = marks and sig[i, j]
                v = 100.0 * m[i, j]
                text = (f"{v:+.1f}" if p == 2 else f"{v:.1f}") + ("*" if mark else "")
                t = (m[i, j] - lo) / (hi - lo) if hi > lo else 0.0
                dark = (abs(t - 0.5) > 0.33) if p == 2 else t > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if dark else "black",
                        fontweight="bold" if mark else "normal")
                if mark:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="black",
                                           linewidth=1.8))
        ax.set_xticks(np.arange(k), labels=list(categories), rotation=35, ha="right", rotation_mode="anchor",
                      fontsize=fontsize)
        ax.set_yticks(np.arange(k), labels=list(categories) if p == 0 else [""] * k, fontsize=fontsize)
        ax.set_xlabel(f"{label_b} category" if p else "other seed's category", fontsize=fontsize + 1)
        if p == 0:
            ax.set_ylabel(f"{label_a} category (null: one seed's)", fontsize=fontsize + 1)
        ax.set_title(name + (" (pp)" if p == 2 else " (%)"), fontsize=fontsize + 2)
        bar = fig.colorbar(im, ax=ax, shrink=0.7)
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None if p < 2 else 1))
        bar.ax.tick_params(labelsize=fontsize - 1)
    fig.suptitle(title, fontsize=fontsize + 3)
    if footnote:
        fig.supxlabel(footnote, fontsize=fontsize)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
