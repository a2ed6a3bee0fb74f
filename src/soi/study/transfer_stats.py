"""What classification ``k_grid`` studies and generative studies share about ``summary["transfer_stats"]``
(:func:`soi.analysis.transfer.transfer_statistics` per transfer key: gains over k = 0 with paired bootstrap
intervals over items and seeds, seen / unseen means and their gap, the gap's slope over k, the seen-unseen
correlation, the plateau): the CSV tables (``tables/transfer_stats.csv``, ``tables/transfer_trend.csv``) and the
console lines. Each study type assembles the per-item score arrays its own way (generative: ``predictions.jsonl``,
:func:`soi.gen.transfer.item_scores`; classification: ``eval/<key>.parquet``, :mod:`soi.study.runner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soi._io import write_text
from soi.study.tables import csv_text


def stats_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tables/transfer_stats.csv``: per key, language or group, and k: score and gain with intervals."""
    rows = []

    def add(key: str, st: Mapping[str, Any], who: str, group: str, block: Mapping[str, Any]) -> None:
        for k in st["ks"]:
            s, g = block["score"][str(k)], block["gain"][str(k)]
            rows.append({"key": key, "data": st["data"], "metric": st["metric"], "language": who, "group": group,
                         "k": k, "score": s["mean"], "score_lo": s["lo"], "score_hi": s["hi"], "gain": g["mean"],
                         "gain_lo": g["lo"], "gain_hi": g["hi"], "significant": g.get("significant", ""),
                         "level": st["level"], "seeds": st["n_seeds"]})

    for key, st in stats.items():
        for lang, lv in st["languages"].items():
            add(key, st, lang, lv["group"], lv)
        for name, gv in st["groups"].items():
            add(key, st, f"{name} mean", name, gv)
    return rows


def trend_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tables/transfer_trend.csv``: per key and k the seen-unseen gap with its interval, and per key the gap's
    slope over k, the seen-unseen correlation and the seen group's plateau k (repeated on every k row)."""
    rows = []
    for key, st in stats.items():
        slope, corr = st.get("gap_slope") or {}, st.get("correlation") or {}
        for k in st["ks"]:
            gap = (st.get("gap") or {}).get(str(k)) or {}
            rows.append({"key": key, "data": st["data"], "k": k, "gap": gap.get("mean"), "gap_lo": gap.get("lo"),
                         "gap_hi": gap.get("hi"), "gap_significant": gap.get("significant", ""),
                         "gap_slope_per_100": slope.get("per_100"), "slope_lo": slope.get("lo"),
                         "slope_hi": slope.get("hi"), "slope_significant": slope.get("significant", ""),
                         "seen_unseen_r": corr.get("r"), "r_lo": corr.get("lo"), "r_hi": corr.get("hi"),
                         "seen_plateau_k": ((st["groups"].get("seen") or {}).get("plateau") or {}).get("k")})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as CSV (``None`` as empty cells), atomically."""
    write_text(path, csv_text([{c: ("" if v is None else v) for c, v in r.items()} for r in rows]))
    return path


def write_transfer_tables(stats: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """``tables/transfer_stats.csv`` and ``tables/transfer_trend.csv`` under ``out`` (none without statistics)."""
    paths: dict[str, Path] = {}
    for name, rows in (("transfer_stats", stats_rows(stats)), ("transfer_trend", trend_rows(stats))):
        if rows:
            paths[name] = write_csv(Path(out) / "tables" / f"{name}.csv", rows)
    return paths


def ci_text(v: Mapping[str, Any] | None) -> str:
    """``+0.123 [+0.050, +0.200] *`` (``*``: significant), ``+0.123`` without an interval, ``-`` without a value."""
    if not v or v.get("mean") is None:
        return "-"
    lo, hi = v.get("lo"), v.get("hi")
    band = "" if lo is None or hi is None else f" [{lo:+.3f}, {hi:+.3f}]"
    return f"{v['mean']:+.3f}{band}{' *' if v.get('significant') else ''}"


def print_transfer_stats(stats: Mapping[str, Any], console: Any) -> None:
    """One rich table per transfer key: gain over k = 0 with its interval per language and group, the plateau,
    the gap; then a line with the gap's slope, the seen-unseen correlation and the notes."""
    from rich.table import Table

    for key, st in stats.items():
        pct = round(100 * st["level"])
        table = Table(title=f"{key}: gain in {st['metric']} over k=0, {pct}% intervals ({st['data']}, "
                            f"{st['n_seeds']} seed(s); * excludes 0)")
        table.add_column("language")
        table.add_column("group")
        for k in st["ks"][1:]:
            table.add_column(f"k={k}", justify="right")
        table.add_column("plateau k", justify="right")
        blocks = [(lang, lv["group"], lv) for lang, lv in st["languages"].items()]
        blocks += [(f"{g} mean", g, gv) for g, gv in st["groups"].items()]
        for name, group, b in blocks:
            plateau = b.get("plateau") or {}
            table.add_row(name, group, *(ci_text(b["gain"][str(k)]) for k in st["ks"][1:]),
                          "-" if plateau.get("k") is None else f"{plateau['k']} [{plateau['lo']}, {plateau['hi']}]")
        if st.get("gap"):
            table.add_row("gap", "", *(ci_text(st["gap"][str(k)]) for k in st["ks"][1:]), "")
        console.print(table)
        bits = []
        if st.get("gap_slope"):
            s = st["gap_slope"]
            bits.append(f"gap slope per 100 examples {ci_text({'mean': s['per_100'], **s})}")
        if st.get("correlation") and st["correlation"].get("r") is not None:
            c = st["correlation"]
            bits.append(f"seen-unseen r over k {ci_text({'mean': c['r'], 'lo': c['lo'], 'hi': c['hi']})}")
        bits += list(st.get("notes") or [])
        if bits:
            console.print("  " + "; ".join(bits), markup=False)


__all__ = ["ci_text", "print_transfer_stats", "stats_rows", "trend_rows", "write_csv", "write_transfer_tables"]
