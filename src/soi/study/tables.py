"""Readable tables of a study summary: CSV files (one row per run x eval set / group / comparison) and a
Markdown digest, both derived from ``summary.json`` only (so they can be rebuilt with ``write_tables``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soi._io import write_text

TABLES_DIR = "tables"


def eval_rows(summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per (run, eval set, language or ``all``): accuracy and macro-F1 as seed mean and std."""
    for name, run in summary["runs"].items():
        for key, ev in run["eval"].items():
            scopes = [("all", ev), *ev.get("languages", {}).items()]
            if len(scopes) == 2:  # one language: the same numbers twice
                scopes = scopes[:1]
            for lang, m in scopes:
                yield {"run": name, "setting": run["setting"], "k": run.get("k"), "eval_set": key,
                       "kind": ev["kind"], "language": lang, "n": m["n"],
                       "accuracy_mean": m["accuracy"]["mean"], "accuracy_std": m["accuracy"]["std"],
                       "macro_f1_mean": m["macro_f1"]["mean"], "macro_f1_std": m["macro_f1"]["std"]}


def share_rows(summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per (run, group key, group): the SOI shares (seed mean)."""
    for name, run in summary["runs"].items():
        for gkey, groups in run["soi_shares"].items():
            for gname, shares in groups.items():
                yield {"run": name, "setting": run["setting"], "group_by": gkey, "group": gname} | dict(shares)


def comparison_rows(summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per (comparison, seed, group): accuracies, McNemar p and the largest SOI share change."""
    for comp in summary["comparisons"]:
        for g in comp["groups"]:
            top = g["biggest_share_changes"][0] if g["biggest_share_changes"] else None
            yield {"a": comp["a"], "b": comp["b"], "seed": comp["seed"], "group_by": g["key"], "group": g["group"],
                   "n_shared": g["n_shared"], "accuracy_a": g["accuracy_a"], "accuracy_b": g["accuracy_b"],
                   "mcnemar_p": g["mcnemar_p"], "largest_change": top["category"] if top else "",
                   "largest_change_pp": round(100 * top["change"], 2) if top else 0.0,
                   "largest_change_significant": bool(top and top["significant"])}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of ``rows``: the columns are the union of the rows' keys in first-seen order (rows of different
    kinds may carry different metrics); missing values and ``None`` are empty cells."""
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(f for r in rows for f in r))
        writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)


def _markdown(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"## {title}\n\n(none)\n"
    cols = list(rows[0])
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_tables(summary: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``tables/eval.csv``, ``tables/soi_shares.csv``, ``tables/comparisons.csv`` and ``summary.md``
    under ``out``; returns the paths by name."""
    out = Path(out)
    tables = {"eval": list(eval_rows(summary)), "soi_shares": list(share_rows(summary)),
              "comparisons": list(comparison_rows(summary))}
    paths = {}
    for name, rows in tables.items():
        paths[name] = out / TABLES_DIR / f"{name}.csv"
        write_text(paths[name], csv_text(rows))
    md = [f"# {summary['study']}\n", f"model `{summary['model']}`, seeds {summary['seeds']}\n",
          _markdown("Evaluation (seed mean, std)", tables["eval"]),
          _markdown("SOI shares of the training examples (all)",
                    [r for r in tables["soi_shares"] if r["group_by"] == "all"]),
          _markdown("Single -> multi comparisons (shared training examples)", tables["comparisons"])]
    paths["markdown"] = out / "summary.md"
    write_text(paths["markdown"], "\n".join(md))
    return paths


__all__ = ["comparison_rows", "csv_text", "eval_rows", "share_rows", "write_tables"]
