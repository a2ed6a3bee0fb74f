"""``soi report DIR``: the self-contained HTML report (data maps, SOI shares, transitions, example browser)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from soi.cli._common import console, defer_pandas_import


def report(
    directory: Annotated[Path, typer.Argument(
        help="A study directory (soi run), a directory of runs and compare outputs (soi demo), or one run directory.",
        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="HTML file to write (default: DIR/report.html); figures/ goes beside it.",
        show_default=False)] = None,
    max_examples: Annotated[int, typer.Option(
        "--max-examples", min=1,
        help="Examples embedded for the data maps and the example browser (a seeded sample beyond).")] = 100_000,
    figures: Annotated[bool, typer.Option(
        "--figures/--no-figures", help="Also write PNG copies of the main figures to figures/.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Write one HTML file that opens offline: overview, data maps, SOI shares, transition heatmaps, example
    browser, and two-stage / cross-lingual sections when the study has them."""
    start = time.perf_counter()
    defer_pandas_import()
    from soi.report.html import build_report

    if quiet:
        build_report(directory, out, max_examples=max_examples, figures=figures)
        return
    with console.status("building the report ...") as status:
        path, data = build_report(directory, out, max_examples=max_examples, figures=figures,
                                  log=lambda msg: status.update(f"report: {msg} ..."))
    ex = data["examples"]
    sampled = f" ({ex['n']:,} sampled into the page)" if ex["n"] < ex["n_total"] else ""
    console.print(f"[bold]report[/bold]: {len(data['runs'])} run(s), {len(data['comparisons'])} comparison(s), "
                  f"{ex['n_total']:,} examples{sampled}")
    for note in data["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")
    if data["figures"]:
        console.print(f"wrote {len(data['figures'])} figure(s) to {path.parent / 'figures'}")
    size = path.stat().st_size / 1e6
    console.print(f"wrote {path} ({size:.1f} MB) in {time.perf_counter() - start:.1f} s")
