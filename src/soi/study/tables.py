"""Readable tables of a study summary: CSV files (one row per run x eval set / group / comparison) and a
Markdown digest, both derived from ``summary.json`` only (typed by :mod:`soi.store.summary`; rebuild them with
:func:`rebuild_tables`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soi._io import write_text
from soi.store.layout import TABLES_DIR, StudyLayout
from soi.store.summary import ClassificationSummary, load_summary, validate_summary


def eval_rows(summary: ClassificationSummary) -> Iterator[dict[str, Any]]:
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


def share_rows(summary: ClassificationSummary) -> Iterator[dict[str, Any]]:
    """One row per (run, group key, group): the SOI shares (seed mean)."""
    for name, run in summary["runs"].items():
        for gkey, groups in run["soi_shares"].items():
            for gname, shares in groups.items():
                yield {"run": name, "setting": run["setting"], "group_by": gkey, "group": gname} | dict(shares)


def _pp(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f} pp"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}" if x >= 1e-4 else "< 1e-4"


def comparison_rows(summary: ClassificationSummary) -> Iterator[dict[str, Any]]:
    """One row per (comparison, group), on the training examples both runs share (training dynamics): final
    train-pass accuracies and McNemar p, the seeds' agreement (Fleiss' kappa), the reseeding null's overall p,
    the transitions that exceed reseeding noise and the largest SOI share change."""
    for comp in summary["comparisons"]:
        seeds = comp.get("seeds") or {}
        for g in comp["groups"]:
            top = g["biggest_share_changes"][0] if g["biggest_share_changes"] else None
            null = g.get("seed_null") or {}
            stab = g.get("stability") or {}
            sig = g.get("significant_transitions") or []
            exc = (g.get("excess_transitions") or [None])[0]
            yield {"a": comp["a"], "b": comp["b"], "seeds_a": len(seeds.get("a") or []),
                   "seeds_b": len(seeds.get("b") or []), "data": "training dynamics", "group_by": g["key"],
                   "group": g["group"], "n_shared": g["n_shared"], "accuracy_a": g["accuracy_a"],
                   "accuracy_b": g["accuracy_b"], "mcnemar_p": g["mcnemar_p"],
                   "kappa_a": (stab.get("a") or {}).get("kappa"), "kappa_b": (stab.get("b") or {}).get("kappa"),
                   "seed_null_p": null.get("p_value"), "exceeds_reseeding_noise": bool(null.get("significant")),
                   "n_transitions_above_noise": len(sig),
                   "transitions_above_noise": "; ".join(f"{t['from']} -> {t['to']} {_pp(t['excess'])}" for t in sig),
                   "largest_excess": f"{exc['from']} -> {exc['to']}" if exc else "",
                   "largest_excess_pp": round(100 * exc["excess"], 2) if exc else 0.0,
                   "largest_change": top["category"] if top else "",
                   "largest_change_pp": round(100 * top["change"], 2) if top else 0.0,
                   "largest_change_significant": bool(top and top["significant"])}


def test_set_rows(summary: ClassificationSummary) -> Iterator[dict[str, Any]]:
    """One row per (comparison, eval set) on the held-out test items (test data): seed-mean accuracies, the
    difference with its CI (``ci_over``: items and seeds, or items only with one seed), the p-value of the flag
    (``test``: the seed-and-item t-test with >= 2 seeds per side, McNemar with one) and the item-level clustered
    McNemar p (conditional on these seeds)."""
    for comp in summary["comparisons"]:
        for key, t in (comp.get("test_set") or {}).items():
            yield {"a": comp["a"], "b": comp["b"], "eval_set": key, "data": "test set", "n_items": t["n_items"],
                   "accuracy_a": t.get("accuracy_a"), "accuracy_b": t.get("accuracy_b"),
                   "difference": t.get("difference"), "lo": t.get("lo"), "hi": t.get("hi"),
                   "ci_over": t.get("ci_over") or ("" if t.get("difference") is None else "items and seeds"),
                   "p_value": t.get("p_value"), "test": t.get("test") or "", "significant": t.get("significant"),
                   "mcnemar_p_item_level": t.get("mcnemar_p"), "note": t.get("note") or ""}


def data_matched_rows(summary: ClassificationSummary) -> Iterator[dict[str, Any]]:
    """One row per (matched run, effect, eval set): pooling at equal data (target -> matched), more data
    (matched -> full) and both (target -> full), on test data."""
    for m in summary.get("data_matched") or []:
        for e in m["effects"]:
            yield {"matched_run": m["run"], "effect": e["effect"], "a": e["a"], "b": e["b"],
                   "n_train_a": _n_train(summary, e["a"]), "n_train_b": _n_train(summary, e["b"]),
                   "eval_set": e["eval_set"], "kind": e["kind"], "data": "test set", "accuracy_a": e["accuracy_a"],
                   "accuracy_b": e["accuracy_b"], "difference": e["difference"], "lo": e["lo"], "hi": e["hi"],
                   "significant": e["significant"], "p_value": e.get("p_value"), "mcnemar_p": e["mcnemar_p"]}


def _n_train(summary: ClassificationSummary, run: str) -> int:
    return int(summary["runs"][run]["n_train"])


def findings(summary: ClassificationSummary) -> list[str]:
    """Sentences stating, per comparison, which SOI transitions exceed reseeding noise (training dynamics) and
    which test-set differences are significant (with CIs), and what the data-matched controls separate."""
    from soi.analysis.paired import ci_label

    out: list[str] = []
    for comp in summary["comparisons"]:
        seeds = comp.get("seeds") or {}
        na, nb = len(seeds.get("a") or []), len(seeds.get("b") or [])
        head = f"{comp['a']} \u2192 {comp['b']} ({na} + {nb} seeds)"
        for g in comp["groups"]:
            null = g.get("seed_null") or {}
            where = "all shared training examples" if g["key"] == "all" else f"{g['key']} = {g['group']}"
            if null.get("p_value") is None:
                if g["key"] == "all":
                    out.append(f"{head}, {where}: {null.get('note') or 'no reseeding null'} (training dynamics).")
                continue
            sig = g.get("significant_transitions") or []
            if sig:
                cells = "; ".join(f"{t['from']} \u2192 {t['to']} {_pp(t['excess'])} of the examples beyond "
                                  f"reseeding noise (CI {_pp(t['lo'])} to {_pp(t['hi'])}, q = {_p(t['q_value'])})"
                                  for t in sig)
                out.append(f"{head}, {where} (training dynamics): the setting moves examples between SOI "
                           f"categories beyond reseeding noise (overall p = {_p(null['p_value'])}): {cells}.")
            elif g["key"] == "all":
                out.append(f"{head}, {where} (training dynamics): no transition exceeds reseeding noise "
                           f"(overall p = {_p(null['p_value'])}; the observed shifts are within what reseeding "
                           "the same setting produces).")
        for key, t in (comp.get("test_set") or {}).items():
            if t.get("difference") is None:
                continue
            verdict = "significant" if t["significant"] else "not significant"
            over = ci_label(t.get("ci_over"))
            test = (f"{t['test']} p = {_p(t['p_value'])}, {verdict}" if t.get("p_value") is not None
                    else verdict)
            item = (f"; item-level McNemar p = {_p(t['mcnemar_p'])}, conditional on these seeds"
                    if t.get("ci_over") == "items and seeds" else "")
            out.append(f"{head}, {key} test set ({t['n_items']} items, test data): accuracy {t['accuracy_a']:.3f} "
                       f"\u2192 {t['accuracy_b']:.3f}, difference {_pp(t['difference'])} ({over}, "
                       f"{100 * t['level']:.0f}%: {_pp(t['lo'])} to {_pp(t['hi'])}; {test}{item}).")
    for m in summary.get("data_matched") or []:
        for e in m["effects"]:
            ci = (f" (CI {_pp(e['lo'])} to {_pp(e['hi'])}, {'significant' if e['significant'] else 'not significant'})"
                  if e["lo"] is not None else " (no paired test: the pair was not compared)")
            out.append(f"data-matched control {m['run']}: {e['effect']} ({e['a']}, {_n_train(summary, e['a'])} "
                       f"examples \u2192 {e['b']}, {_n_train(summary, e['b'])}) on the {e['eval_set']} test set: "
                       f"{_pp(e['difference'])}{ci}.")
    return out


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


def write_tables(summary: ClassificationSummary, out: str | Path) -> dict[str, Path]:
    """Write ``tables/eval.csv``, ``tables/soi_shares.csv``, ``tables/comparisons.csv``, ``tables/test_set.csv``,
    ``tables/data_matched.csv`` (studies with ``match_size`` runs), ``tables/transfer_stats.csv`` and
    ``tables/transfer_trend.csv`` (studies with a ``k_grid``; :mod:`soi.study.transfer_stats`) and ``summary.md``
    under ``out``; returns the paths by name. A summary that does not fit the schema is a one-line error naming the
    field."""
    validate_summary(summary, path=StudyLayout(out).summary)
    layout = StudyLayout(out)
    tables = {"eval": list(eval_rows(summary)), "soi_shares": list(share_rows(summary)),
              "comparisons": list(comparison_rows(summary)), "test_set": list(test_set_rows(summary))}
    if summary.get("data_matched"):
        tables["data_matched"] = list(data_matched_rows(summary))
    if summary.get("transfer_stats"):
        from soi.study.transfer_stats import stats_rows, trend_rows

        tables["transfer_stats"] = stats_rows(summary["transfer_stats"])
        tables["transfer_trend"] = trend_rows(summary["transfer_stats"])
    paths = {}
    for name, rows in tables.items():
        paths[name] = layout.table(name)
        write_text(paths[name], csv_text(rows))
    said = summary.get("findings")
    md = [f"# {summary['study']}\n", f"model `{summary['model']}`, seeds {summary['seeds']}\n",
          "Test data: the evaluation table, the test-set comparisons and the data-matched controls (held-out "
          "items, never trained on). Training dynamics: the SOI shares and the transition comparisons (the "
          "training examples' learning curves; their McNemar p is on final train-pass correctness, not on "
          "test data).\n"]
    if said:
        md.append("## What the comparisons show\n\n" + "\n".join(f"* {x}" for x in said) + "\n")
    md += [_markdown("Evaluation on test data (seed mean, std)", tables["eval"]),
           _markdown("SOI shares of the training examples (all; training dynamics)",
                     [r for r in tables["soi_shares"] if r["group_by"] == "all"]),
           _markdown("Single -> multi transitions on the shared training examples (training dynamics; seed null: "
                     "transitions beyond reseeding noise)", tables["comparisons"]),
           _markdown("Paired test-set differences (test data; ci_over: what the CI covers; p_value: the "
                     "seed-aware test with >= 2 seeds per side)", tables["test_set"])]
    if "data_matched" in tables:
        md.append(_markdown("Data-matched controls: pooling at equal data vs more data (test data)",
                            tables["data_matched"]))
    if "transfer_stats" in tables:
        cols = ("key", "language", "group", "k", "score", "gain", "gain_lo", "gain_hi", "significant", "level",
                "seeds")
        md.append(_markdown("Transfer: gain over k = 0 with its interval over test items and seeds (test data)",
                            [{c: r[c] for c in cols} for r in tables["transfer_stats"] if r["k"] != 0]))
    paths["markdown"] = layout.summary_md
    write_text(paths["markdown"], "\n".join(md))
    return paths


def rebuild_tables(out: str | Path) -> dict[str, Path]:
    """Rewrite the tables and ``summary.md`` of the classification study ``out`` from its ``summary.json``."""
    layout = StudyLayout(out)
    return write_tables(load_summary(layout.summary), layout.out)  # type: ignore[arg-type]


__all__ = ["TABLES_DIR", "comparison_rows", "csv_text", "data_matched_rows", "eval_rows", "findings", "rebuild_tables",
           "share_rows", "test_set_rows", "write_tables"]
