"""``soi analyze``: per-example metrics, SOI categories and a summary for one run, or the per-example
consensus of a seed folder (``seed-*/`` runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from soi.cli._common import console, defer_pandas_import, load_rules


def analyze(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (run.json, examples.parquet, dynamics/), or a seed "
                                                 "folder of seed-*/ runs (writes analysis/consensus.parquet).")],
    late_fraction: Annotated[float, typer.Option(help="learned_early if first correct at k <= ceil(f*E).")] = 0.5,
    include_ci: Annotated[bool, typer.Option(help="cartography's include_ci variability variant.")] = False,
    rules: Annotated[Path | None, typer.Option(help="JSON/YAML file of extra category rules.")] = None,
    mode: Annotated[str | None, typer.Option(help="Read dynamics-<mode>/ instead of dynamics/.")] = None,
    max_checkpoints: Annotated[int | None, typer.Option(help="Use only the first N checkpoints.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    memory_limit: Annotated[str | None, typer.Option(
        help="Stream the run in example shards within this memory bound (e.g. 2GB); same outputs.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Shards analysed at once with --memory-limit (default: CPU count).")] = None,
) -> None:
    """Compute per-example metrics and SOI categories -> RUN_DIR/analysis/{per_example.parquet,summary.json}.

    A seed folder (seed-*/ runs of one setting) gets RUN_DIR/analysis/consensus.parquet (per example: seeds per SOI category, soi_consensus, soi_stability, seed means of the metrics) and summary.json (per group: consensus shares, mean stability, Fleiss' kappa).
    """  # noqa: E501 - typer keeps docstring line breaks
    start = time.perf_counter()
    defer_pandas_import()
    from soi.errors import SoiError

    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"--late-fraction must be in (0, 1], got {late_fraction}")
    if max_checkpoints is not None and max_checkpoints < 1:
        raise SoiError(f"--max-checkpoints must be >= 1, got {max_checkpoints}")
    if workers is not None and workers < 1:
        raise SoiError(f"--workers must be >= 1, got {workers}")
    if run_dir.is_dir():
        from soi.analysis.seeds import SEED_DIR, analyze_seeds

        if any(SEED_DIR.match(p.name) for p in run_dir.iterdir()):  # a seed folder (or a mix: an error)
            for name, value in (("--rules", rules), ("--mode", mode), ("--include-ci", include_ci or None)):
                if value is not None:
                    raise SoiError(f"{name} is not supported for a seed folder; analyse the seed runs one by one")
            if memory_limit is not None or workers is not None:  # every seed streamed, then the consensus by range
                from soi.analysis.streaming import stream_consensus

                if max_checkpoints is not None:
                    raise SoiError("--max-checkpoints is not supported with --memory-limit for a seed folder")
                res = stream_consensus(run_dir, memory_limit=memory_limit or "2GB", workers=workers,
                                       late_fraction=late_fraction)
            else:
                res = analyze_seeds(run_dir, late_fraction=late_fraction, max_checkpoints=max_checkpoints)
            if not quiet:
                print_consensus(res.summary, out=run_dir / "analysis", seconds=time.perf_counter() - start)
            return
    from soi.analysis.per_example import analyze_run

    category_rules = load_rules(rules) if rules is not None else None
    if memory_limit is not None or workers is not None:
        from soi.analysis.streaming import stream_analysis

        result, _ = stream_analysis(run_dir, memory_limit=memory_limit or "2GB", workers=workers,
                                    late_fraction=late_fraction, include_ci=include_ci, rules=category_rules,
                                    mode=mode, max_checkpoints=max_checkpoints)
    else:
        result = analyze_run(run_dir, late_fraction=late_fraction, include_ci=include_ci, rules=category_rules,
                             mode=mode, max_checkpoints=max_checkpoints)
    if not quiet:
        print_summary(result.summary, out=run_dir / ("analysis" if mode is None else f"analysis-{mode}"),
                      seconds=time.perf_counter() - start)


def print_summary(summary: dict[str, Any], *, out: Path | None = None, seconds: float | None = None) -> None:
    """Rich table of category shares (overall and per task when there are several)."""
    from rich.table import Table

    groups = summary["groups"]
    tasks = groups["task"] if len(groups["task"]) > 1 else {}
    title = (f"{summary.get('setting') or 'run'}: {summary['n_examples']:,} examples x "
             f"{summary['n_checkpoints']} checkpoints ({summary['recording_mode']})")
    console.print(f"[bold]{title}[/bold]")
    table = Table()
    table.add_column("SOI category")
    table.add_column("n", justify="right")
    table.add_column("share", justify="right")
    for task in tasks:
        table.add_column(task, justify="right")
    overall = groups["all"]["all"]
    for cat in summary["categories"]:
        row = [cat, f"{overall['counts'][cat]:,}", f"{overall['shares'][cat]:.1%}"]
        row += [f"{tasks[t]['shares'][cat]:.1%}" for t in tasks]
        table.add_row(*row)
    table.add_section()
    table.add_row("final accuracy", "", f"{overall['final_accuracy']:.1%}",
                  *[f"{tasks[t]['final_accuracy']:.1%}" for t in tasks])
    console.print(table)
    acc = " ".join(f"{a:.3f}" for a in summary["accuracy_per_checkpoint"])
    console.print(f"accuracy per checkpoint: {acc}")
    if out is not None:
        took = f" in {seconds:.2f} s" if seconds is not None else ""
        console.print(f"wrote {out}/per_example.parquet and summary.json{took}")


def print_consensus(summary: dict[str, Any], *, out: Path | None = None, seconds: float | None = None) -> None:
    """Rich table of a seed folder's consensus shares and seed agreement (overall and per task)."""
    from rich.table import Table

    groups = summary["groups"]
    overall = groups["all"]["all"]
    console.print(f"[bold]{summary['path']}: {summary['n_seeds']} seeds x {summary['n_examples']:,} examples x "
                  f"{summary['n_checkpoints']} checkpoints[/bold]", markup=True, highlight=False)
    table = Table()
    table.add_column("consensus SOI category")
    table.add_column("n", justify="right")
    table.add_column("share", justify="right")
    for cat in summary["categories"]:
        table.add_row(cat, f"{overall['consensus_counts'][cat]:,}", f"{overall['consensus_shares'][cat]:.1%}")
    console.print(table)
    rows = [("all", overall), *((f"task={t}", g) for t, g in groups["task"].items() if len(groups["task"]) > 1)]
    for name, g in rows:
        if g["kappa"] is None and g["mean_stability"] is None:
            continue
        kappa = "n/a" if g["kappa"] is None else f"{g['kappa']:.3f}"
        console.print(f"{name}: mean stability {g['mean_stability']:.3f}, pairwise agreement {g['agreement']:.3f}, "
                      f"Fleiss' kappa {kappa}", markup=False)
    for note in summary["notes"]:
        console.print(f"note: {note}", markup=False)
    if out is not None:
        took = f" in {seconds:.2f} s" if seconds is not None else ""
        console.print(f"wrote {out}/consensus.parquet and summary.json{took}", markup=False)
