"""``soi compare RUN_A RUN_B --out DIR``: SOI transitions from run A (single setting) to run B (multi)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from soi.errors import SoiError

GROUP_KEYS = ("task", "source", "language")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def parse_group_by(values: list[str] | None) -> tuple[str, ...]:
    """``--group-by`` values (repeatable and/or comma lists) as a tuple; ``none`` means overall only."""
    if not values:
        return GROUP_KEYS
    keys: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "none":
                continue
            if part not in GROUP_KEYS:
                raise SoiError(f"--group-by: unknown value {part!r}; use task, source, language (or none)")
            if part not in keys:
                keys.append(part)
    return tuple(keys)


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name).strip("_") or "_"
    return "_" + safe if safe.startswith(".") else safe


def _file_stems(groups: list[Any]) -> list[str]:
    """``<key>=<group>`` per group, made file-name safe and unique."""
    used: set[str] = set()
    stems = []
    for g in groups:
        base = f"{g.key}={_safe(g.group)}"
        stem, i = base, 1
        while stem.lower() in used:
            i += 1
            stem = f"{base}~{i}"
        used.add(stem.lower())
        stems.append(stem)
    return stems


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete per-group files of an earlier compare (same naming scheme) that this one did not write."""
    pattern = re.compile(r"^(all|task|source|language)=.*(\.csv|\.png)$")
    for sub in ("transitions", "heatmaps"):
        folder = out / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and pattern.match(path.name) and f"{sub}/{path.name}" not in keep:
                path.unlink(missing_ok=True)


def _matrix_csv(matrix: Any, categories: tuple[str, ...], fmt: str) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["from \\ to", *categories])
    for name, row in zip(categories, matrix, strict=True):
        writer.writerow([name, *(format(x, fmt) for x in row)])
    return buf.getvalue()


def _labels(run_a: Path, run_b: Path, label_a: str | None, label_b: str | None,
            setting_a: str | None, setting_b: str | None) -> tuple[str, str]:
    """Labels: the option, else run.json ``setting``, else the directory name; disambiguated if equal."""
    name_a, name_b = run_a.resolve().name, run_b.resolve().name
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


def compare(
    run_a: Annotated[Path, typer.Argument(help="Run directory A: the single-setting run (rows).",
                                          show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="Run directory B: the multi-setting run (columns).",
                                          show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).",
                                      show_default=False)],
    group_by: Annotated[list[str] | None, typer.Option(
        "--group-by", "-g",
        help="Tag(s) to group by: task, source, language (repeatable or comma list; 'none' = overall "
             "only). Groups take run A's tags. (default: task,source,language)",
        show_default=False)] = None,
    late_fraction: Annotated[float, typer.Option(
        "--late-fraction", help="learned_early if first correct at checkpoint k <= ceil(f*E).")] = 0.5,
    n_boot: Annotated[int, typer.Option(
        "--n-boot", help="Bootstrap replicates for the share-change CIs.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    label_a: Annotated[str | None, typer.Option(
        "--label-a", help="Name of run A (default: run.json setting, else the directory name).",
        show_default=False)] = None,
    label_b: Annotated[str | None, typer.Option(
        "--label-b", help="Name of run B (default: run.json setting, else the directory name).",
        show_default=False)] = None,
) -> None:
    """Compare the SOI categories of two runs on their shared examples.

    Writes into --out:
    transitions.parquet (group_key, group, from, to, count, row_share),
    transitions/<group_key>=<group>.csv and ..._rowpct.csv (matrices),
    heatmaps/<group_key>=<group>.png, and stats.json (per group: McNemar test
    on final correctness, bootstrap CIs of each category's share change).
    Matrix files of groups from an earlier compare into the same --out are removed.
    """
    keys = parse_group_by(group_by)
    if n_boot < 1:
        raise SoiError(f"--n-boot must be >= 1, got {n_boot}")
    if seed < 0:
        raise SoiError(f"--seed must be >= 0, got {seed}")
    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"--late-fraction must be in (0, 1], got {late_fraction}")

    from soi.store.meta import RunMeta

    meta_a, meta_b = RunMeta.load(run_a), RunMeta.load(run_b)
    if out.exists() and not out.is_dir():
        raise SoiError("--out exists and is not a directory", path=out)

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from soi import __version__
    from soi._io import write_json, write_parquet, write_text
    from soi.analysis.categories import SOI_CATEGORIES
    from soi.analysis.per_example import analyze_run
    from soi.analysis.transitions import compare_tables
    from soi.report.heatmap import transition_heatmap

    la, lb = _labels(run_a, run_b, label_a, label_b, meta_a.setting, meta_b.setting)
    res_a = analyze_run(run_a, late_fraction=late_fraction, write=False)
    res_b = analyze_run(run_b, late_fraction=late_fraction, write=False)
    comp = compare_tables(res_a.table, res_b.table, group_by=keys, n_boot=n_boot, seed=seed,
                          categories=SOI_CATEGORIES, label_a=la, label_b=lb)
    cats = comp.categories

    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "transitions.parquet", comp.long_table())
    stems = _file_stems(comp.groups)
    group_dicts = []
    for g, stem in zip(comp.groups, stems, strict=True):
        files = {"counts_csv": f"transitions/{stem}.csv", "rowpct_csv": f"transitions/{stem}_rowpct.csv",
                 "heatmap": f"heatmaps/{stem}.png"}
        write_text(out / files["counts_csv"], _matrix_csv(g.counts, cats, "d"))
        write_text(out / files["rowpct_csv"], _matrix_csv(np.round(100.0 * g.row_share, 6), cats, ""))
        title = (f"{la} \u2192 {lb}: all shared examples" if g.key == "all"
                 else f"{la} \u2192 {lb}: {g.key} = {g.group}")
        transition_heatmap(g.counts, cats, title=title, label_a=la, label_b=lb, path=out / files["heatmap"],
                           significant=g.significant, share_change=g.share_change["observed"],
                           level=comp.params["level"])
        group_dicts.append(g.to_dict() | {"files": files})

    def run_info(path: Path, label: str, summary: dict[str, Any]) -> dict[str, Any]:
        return {"path": str(path.resolve()), "label": label, "setting": summary.get("setting"),
                "model": summary.get("model"), "seed": summary.get("seed"),
                "n_examples": summary["n_examples"], "n_checkpoints": summary["n_checkpoints"],
                "early_cutoff": summary["early_cutoff"]}

    stats = {
        "soi_version": __version__,
        "command": "compare",
        "run_a": run_info(run_a, la, res_a.summary),
        "run_b": run_info(run_b, lb, res_b.summary),
        "params": comp.params | {"late_fraction": late_fraction},
        "categories": list(cats),
        "n_a": comp.n_a,
        "n_b": comp.n_b,
        "n_shared": comp.n_shared,
        "n_only_a": comp.n_only_a,
        "n_only_b": comp.n_only_b,
        "groups": group_dicts,
    }
    write_json(out / "stats.json", stats)
    _remove_stale(out, {f for d in group_dicts for f in d["files"].values()})

    table = Table(title=f"SOI transitions {la} \u2192 {lb}: {comp.n_shared} shared examples "
                        f"(only A: {comp.n_only_a}, only B: {comp.n_only_b})")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("acc A \u2192 B", justify="right")
    table.add_column("McNemar p", justify="right")
    table.add_column("biggest share changes (* CI excludes 0)")
    for g in comp.groups:
        obs = g.share_change["observed"]
        top = np.argsort(-np.abs(obs), kind="stable")[:2]
        changes = "\n".join(f"{cats[i]} {100 * obs[i]:+.1f}pp{'*' if g.significant[i] else ''}"
                            for i in top if obs[i] != 0) or "-"
        m = g.mcnemar
        table.add_row("all" if g.key == "all" else f"{g.key}={g.group}", str(g.n_shared),
                      f"{g.accuracy_a:.3f} \u2192 {g.accuracy_b:.3f}", f"{m['p_value']:.2g} {m['method']}",
                      changes)
    console = Console()
    console.print(table)
    console.print(f"wrote transitions.parquet, stats.json and {len(comp.groups)} heatmap(s) to {out}")
