"""``soi import cartography`` and ``soi export cartography`` (allenai/cartography files).

Heavy modules (pyarrow, pandas) are imported inside the command bodies so ``soi --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def import_cartography(
    src_dir: Annotated[Path, typer.Argument(
        help="cartography model directory (containing training_dynamics/) or that folder itself.")],
    run_dir: Annotated[Path, typer.Argument(help="soi run directory to create.")],
    task: Annotated[str, typer.Option(help="Task name of all examples.")] = "task",
    labels: Annotated[str | None, typer.Option(
        help="Comma-separated label names in class-index order (default: class_0,class_1,...).")] = None,
    id_field: Annotated[str, typer.Option(help="Field holding the example id.")] = "guid",
    keep_logits: Annotated[bool, typer.Option(
        help="Store the full logit vectors (needed by 'soi export cartography').")] = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace RUN_DIR if it is an existing soi run.")] = False,
    model: Annotated[str | None, typer.Option(help="Model name recorded in run.json.")] = None,
    setting: Annotated[str | None, typer.Option(help="Setting name recorded in run.json.")] = None,
) -> None:
    """Import allenai/cartography training dynamics (dynamics_epoch_<E>.jsonl) into a soi run.

    Every epoch is mapped to the example order of epoch 0 (soi idx = cartography's index); checkpoint =
    epoch. cartography does not record optimizer steps, so step is stored as epoch + 1. The files are
    validated completely before RUN_DIR appears; on any problem nothing is written.
    """
    start = time.perf_counter()
    from rich.console import Console

    from soi.cli._common import defer_pandas_import
    from soi.errors import SoiError

    defer_pandas_import()
    from soi.formats.cartography import import_cartography as run_import
    from soi.store.meta import RunMeta

    names = None
    if labels is not None:
        names = [x.strip() for x in labels.split(",")]
        if not all(names):
            raise SoiError(f"--labels has an empty label name: {labels!r}")
    out = run_import(src_dir, run_dir, task=task, labels=names, id_field=id_field, keep_logits=keep_logits,
                     model=model, setting=setting, overwrite=overwrite)
    info = RunMeta.load(out).extra["import"]
    Console(highlight=False, soft_wrap=True).print(
        f"imported [bold]{info['examples']:,}[/] examples x {info['epochs']} epochs x {info['classes']} classes "
        f"into {out} in {time.perf_counter() - start:.2f} s")


def export_cartography(
    run_dir: Annotated[Path, typer.Argument(help="soi run directory (recorded with logit vectors).")],
    out_dir: Annotated[Path, typer.Argument(
        help="Output folder: gets training_dynamics/dynamics_epoch_<E>.jsonl and td_metrics.jsonl.")],
    include_ci: Annotated[bool, typer.Option(
        "--include-ci", help="cartography's --include_ci variability: sqrt(var + var^2/(E-1)).")] = False,
    task: Annotated[str | None, typer.Option(
        help="Export only this task (needed when tasks have different numbers of labels).")] = None,
) -> None:
    """Export a soi run as allenai/cartography files (training dynamics + td_metrics.jsonl).

    Needs the full logit vectors (import with --keep-logits, record with keep_logits). Guids are written
    as integers when the run was imported from cartography with integer guids.
    """
    start = time.perf_counter()
    from rich.console import Console

    from soi.formats.cartography import TD_DIR, TD_METRICS_FILE
    from soi.formats.cartography import export_cartography as run_export

    out = run_export(run_dir, out_dir, include_ci=include_ci, task=task)
    Console(highlight=False, soft_wrap=True).print(
        f"exported {run_dir} to {out / TD_DIR}/ and {out / TD_METRICS_FILE} "
        f"in {time.perf_counter() - start:.2f} s")
