"""``soi compare A B --out DIR``: SOI transitions from setting A (single) to B (multi); runs or seed folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from soi.errors import SoiError

GROUP_KEYS = ("task", "source", "language")


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


def test_set_line(key: str, entry: dict[str, Any], alpha: float) -> str:
    """One console line per eval set (test data): the difference, its CI saying what it covers, the p-value of
    the flag with its test and verdict and, with several seeds, the item-level clustered McNemar p."""
    from soi.analysis.paired import ci_label

    d = entry["difference"]
    verdict = "significant" if d["significant"] else "not significant"
    line = (f"test set {key} (test data, {entry['n_items']} items): accuracy {entry['accuracy_a']['mean']:.3f} "
            f"\u2192 {entry['accuracy_b']['mean']:.3f}, difference {100 * d['observed']:+.1f}pp "
            f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] ({ci_label(d.get('ci_over'))}); {d['test']} "
            f"p={d['p_value']:.2g}: {verdict} at alpha {alpha:g}")
    if d.get("ci_over") == "items and seeds":
        line += (f"; item-level McNemar p={entry['mcnemar']['combined']['p_value']:.2g} "
                 "(conditional on these seeds)")
    return line + (f"; note: {entry['note']}" if entry.get("note") else "")


def compare(
    run_a: Annotated[Path, typer.Argument(help="Setting A, the single-setting side (rows): a run directory or a "
                                               "seed folder of seed-*/ runs.", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="Setting B, the multi-setting side (columns): a run directory or a "
                                               "seed folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (replaced as a whole).",
                                      show_default=False)],
    group_by: Annotated[list[str] | None, typer.Option(
        "--group-by", "-g",
        help="Tag(s) to group by: task, source, language (repeatable or comma list; 'none' = overall "
             "only). Groups take run A's tags. (default: task,source,language)",
        show_default=False)] = None,
    late_fraction: Annotated[float, typer.Option(
        "--late-fraction", help="learned_early if first correct at checkpoint k <= ceil(f*E).")] = 0.5,
    n_boot: Annotated[int, typer.Option(
        "--n-boot", help="Bootstrap replicates (share changes of single runs; the descriptive test-set bootstrap).")]
        = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstraps and example buckets.")] = 0,
    alpha: Annotated[float, typer.Option("--alpha", help="Level of every significance flag (intervals 1-alpha).")]
    = 0.05,
    max_checkpoints: Annotated[int | None, typer.Option(
        "--max-checkpoints", help="Use only the first N checkpoints of every run.", show_default=False)] = None,
    label_a: Annotated[str | None, typer.Option(
        "--label-a", help="Name of A (default: run.json setting, else the directory name).",
        show_default=False)] = None,
    label_b: Annotated[str | None, typer.Option(
        "--label-b", help="Name of B (default: run.json setting, else the directory name).",
        show_default=False)] = None,
    no_heatmaps: Annotated[bool, typer.Option("--no-heatmaps", help="Skip the PNG heatmaps.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    memory_limit: Annotated[str | None, typer.Option(
        "--memory-limit", help="First analyse every run out of core within this bound (e.g. 2GB) into its "
                               "analysis/ folder, then compare from those files.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Shards analysed at once with --memory-limit (default: CPU count).",
        show_default=False)] = None,
) -> None:
    """Compare the SOI categories of two settings on their shared examples.

    A and B are each one run directory or a seed folder (seed-*/ runs, a study's runs/<name>/). Writes into --out (as one unit): transitions.parquet (group_key, group, from, to, count, row_share), transitions/<group_key>=<group>.csv and ..._rowpct.csv, heatmaps/<group_key>=<group>.png, and stats.json: per group McNemar on final train-pass correctness and share-change intervals (training dynamics), seed agreement (Fleiss' kappa), the reseeding null (excess transitions beyond seed-to-seed noise, BH q-values) and, when every seed has eval/<key>.parquet, paired test-set statistics. See docs/statistics.md.
    """  # noqa: E501 - typer keeps docstring line breaks, so each paragraph is one line
    keys = parse_group_by(group_by)
    if n_boot < 1:
        raise SoiError(f"--n-boot must be >= 1, got {n_boot}")
    if seed < 0:
        raise SoiError(f"--seed must be >= 0, got {seed}")
    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"--late-fraction must be in (0, 1], got {late_fraction}")
    if not 0.0 < alpha <= 0.5:
        raise SoiError(f"--alpha must be in (0, 0.5], got {alpha}")
    if max_checkpoints is not None and max_checkpoints < 1:
        raise SoiError(f"--max-checkpoints must be >= 1, got {max_checkpoints}")
    from soi.analysis.compare import compare_runs

    if memory_limit is not None or workers is not None:
        from soi.analysis.streaming import analyze_seed_sets

        analyze_seed_sets([run_a, run_b], memory_limit=memory_limit or "2GB", workers=workers,
                          late_fraction=late_fraction, max_checkpoints=max_checkpoints)
    stats = compare_runs(run_a, run_b, out, group_by=keys, late_fraction=late_fraction, n_boot=n_boot, seed=seed,
                         label_a=label_a, label_b=label_b, alpha=alpha, max_checkpoints=max_checkpoints,
                         heatmaps=not no_heatmaps)
    if not quiet:
        print_stats(stats, out)


def print_stats(stats: dict[str, Any], out: Path) -> None:
    """Rich table of a compare's groups (accuracy, McNemar, share changes, excess transitions) and test sets."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    la, lb = stats["run_a"]["label"], stats["run_b"]["label"]
    cats = stats["categories"]
    seeds = f" ({stats['run_a']['n_seeds']} + {stats['run_b']['n_seeds']} seeds)"
    table = Table(title=f"SOI transitions {la} \u2192 {lb}{seeds}: {stats['n_shared']} shared examples "
                        f"(only A: {stats['n_only_a']}, only B: {stats['n_only_b']})")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("acc A \u2192 B (train)", justify="right")
    table.add_column("McNemar p (train)", justify="right")
    table.add_column("biggest share changes (* interval excludes 0)")
    table.add_column("beyond reseeding noise (BH q <= alpha)")
    for g in stats["groups"]:
        obs = np.array([g["share_change"][c]["observed"] for c in cats])
        top = np.argsort(-np.abs(obs), kind="stable")[:2]
        changes = "\n".join(f"{cats[i]} {100 * obs[i]:+.1f}pp{'*' if g['share_change'][cats[i]]['significant'] else ''}"
                            for i in top if obs[i] != 0) or "-"
        m = g["mcnemar"]
        null = g["seed_null"]
        if null["overall"].get("p_value") is None:
            beyond = "n/a (too few seeds)"
        else:
            cells = [c for c in null["cells"] if c["significant"] and c["from"] != c["to"]]
            cells.sort(key=lambda c: -abs(c["excess"]))
            beyond = "\n".join(f"{c['from']} \u2192 {c['to']} {100 * c['excess']:+.1f}pp" for c in cells[:3]) or "none"
        table.add_row("all" if g["key"] == "all" else f"{g['key']}={g['group']}", str(g["n_shared"]),
                      f"{g['accuracy_a']:.3f} \u2192 {g['accuracy_b']:.3f}", f"{m['p_value']:.2g} {m['method']}",
                      changes, beyond)
    console = Console(highlight=False)
    console.print(table)
    for key, entry in stats.get("test_set", {}).items():
        d = entry.get("difference")
        if d is None:
            continue
        console.print(test_set_line(key, entry, stats["params"]["alpha"]), markup=False, soft_wrap=True)
    for note in stats.get("notes", []):
        console.print(f"note: {note}", markup=False)
    console.print(f"wrote transitions.parquet, stats.json and {len(stats['groups'])} group(s) to {out}", markup=False)
