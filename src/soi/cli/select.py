"""``soi select``: write an SOI / cartography-style subset of a run (ids, rows and provenance)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_AMOUNT = "fraction in (0, 1) such as 0.33 or 33%, or a count such as 5000"


def select(
    run_dir: Annotated[Path | None, typer.Argument(
        help="Run directory, or a seed folder of seed-*/ runs (selects on the seed consensus); optional with "
             "--from-table, where it is only recorded as the source.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (written atomically).")] = ...,
    categories: Annotated[str | None, typer.Option(
        help="Comma-separated categories to keep, e.g. forgettable_lost,learned_late.")] = None,
    where: Annotated[str | None, typer.Option(
        help="Filter expression, e.g. \"confidence < 0.3 and task == 'rte'\".")] = None,
    metric: Annotated[str | None, typer.Option(help="Numeric column ranked by --top / --bottom.")] = None,
    top: Annotated[str | None, typer.Option(help=f"Keep the highest by --metric: {_AMOUNT}.")] = None,
    bottom: Annotated[str | None, typer.Option(help=f"Keep the lowest by --metric: {_AMOUNT}.")] = None,
    per_group: Annotated[str | None, typer.Option(
        help="Apply --top/--bottom/--sample within each task, source or language.")] = None,
    sample: Annotated[str | None, typer.Option(help=f"Seeded random subsample: {_AMOUNT}.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of tie-breaking and sampling.")] = 0,
    late_fraction: Annotated[float, typer.Option(
        help="learned_early if first correct at k <= ceil(f*E) (ignored with --from-table).")] = 0.5,
    category_column: Annotated[str, typer.Option(
        help="Column --categories refers to ('category' for custom rules).")] = "soi",
    from_table: Annotated[Path | None, typer.Option(
        help="Read this per_example.parquet instead of analysing RUN_DIR.")] = None,
    memory_limit: Annotated[str | None, typer.Option(
        help="Analyse RUN_DIR in example shards within this memory bound (e.g. 2GB); same selection.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Shards analysed at once with --memory-limit (default: CPU count).")] = None,
    format_: Annotated[str, typer.Option(
        "--format", help="files: selected_ids.txt, selected.parquet, selection.json; hf: a datasets save_to_disk "
                         "folder (datasets.load_from_disk) with the provenance in its info, plus selection.json.")
    ] = "files",
    min_stability: Annotated[float | None, typer.Option(
        help="Seed folders: keep only examples whose consensus category is shared by at least this share of "
             "seeds, in (0, 1] (e.g. 0.67).", show_default=False)] = None,
) -> None:
    """Select a subset of examples (SOI categories, expression filter, top/bottom by a metric) and save it.

    Steps in order: --categories, --where, --metric with --top/--bottom, --sample (the last two per group with --per-group).

    Writes OUT/selected_ids.txt (one example_id per line), OUT/selected.parquet (rows), OUT/selection.json (provenance).

    Cartography-style subsets (Swayamdipta et al., 2020): ambiguous: --metric variability --top 0.33; hard-to-learn: --metric confidence --bottom 0.33; easy-to-learn: --metric confidence --top 0.33.

    On a seed folder (seed-*/ runs of one setting) the rows are the per-example consensus: soi is the modal category over seeds, the metrics are seed means, soi_stability the share of seeds in the modal category (--min-stability filters on it first).
    """  # noqa: E501 - typer keeps docstring line breaks, so each paragraph is one line
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console

    from soi.errors import SoiError
    from soi.selection import describe, save, save_dataset
    from soi.selection import select as run_select

    if format_ not in ("files", "hf"):
        raise SoiError(f"--format must be 'files' or 'hf', got {format_!r}")

    if not 0.0 < late_fraction <= 1.0:
        raise SoiError(f"--late-fraction must be in (0, 1], got {late_fraction}")
    if workers is not None and workers < 1:
        raise SoiError(f"--workers must be >= 1, got {workers}")
    if seed < 0:
        raise SoiError(f"--seed must be >= 0, got {seed}")
    if min_stability is not None and not 0.0 < min_stability <= 1.0:
        raise SoiError(f"--min-stability must be in (0, 1], got {min_stability}")
    selection = None
    seed_folder = False
    if from_table is None and run_dir is not None and run_dir.is_dir():
        from soi.analysis.seeds import SEED_DIR

        seed_folder = any(SEED_DIR.match(p.name) for p in run_dir.iterdir())
    if seed_folder:
        from soi.analysis.seeds import analyze_seeds, selection_table

        assert run_dir is not None
        if memory_limit is not None:
            raise SoiError("--memory-limit is not supported for a seed folder")
        table = selection_table(analyze_seeds(run_dir, late_fraction=late_fraction, write=False).table)
        source = run_dir
    elif from_table is None and run_dir is not None and (memory_limit is not None or workers is not None):
        from soi.selection import stream_select

        if not run_dir.is_dir():
            raise SoiError("RUN_DIR: no such directory", path=run_dir)
        selection = stream_select(
            run_dir, memory_limit=memory_limit or "2GB", workers=workers, late_fraction=late_fraction,
            categories=categories, where=where, metric=metric, top=top, bottom=bottom, per_group=per_group,
            sample=sample, seed=seed, category_column=category_column)
    elif from_table is not None:
        if not from_table.is_file():
            raise SoiError("--from-table: no such file", path=from_table)
        try:
            table = pq.read_table(from_table)
        except (OSError, pa.ArrowException) as exc:
            raise SoiError(f"--from-table: cannot read Parquet: {exc}", path=from_table) from None
        from soi.store.reader import check_utf8

        check_utf8(table, from_table)  # text enters here: UTF-8 only, as everywhere (docs/errors.md)
        source = run_dir if run_dir is not None else from_table
    elif run_dir is not None:
        from soi.analysis.per_example import analyze_run

        if not run_dir.is_dir():
            raise SoiError("RUN_DIR: no such directory", path=run_dir)
        table = analyze_run(run_dir, late_fraction=late_fraction, write=False).table
        source = run_dir
    else:
        raise SoiError("RUN_DIR: give a run directory or --from-table PATH")

    if selection is None:
        selection = run_select(
            table, categories=categories, where=where, metric=metric, top=top, bottom=bottom, per_group=per_group,
            sample=sample, seed=seed, category_column=category_column, source_run=source, min_stability=min_stability)
    (save_dataset if format_ == "hf" else save)(selection, out)
    Console(soft_wrap=True, highlight=False).print(f"{describe(selection)} -> {out}", markup=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    for warning in selection.provenance["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {warning}")
