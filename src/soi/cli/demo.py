"""``soi demo``: run a packaged study end to end (train, record, analyse, compare) on embedded defaults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from soi.cli._common import console
from soi.errors import SoiError

DEFAULT_STUDY = "multitask"


def _names() -> list[str]:
    from soi.study.packaged import packaged_studies

    return [*packaged_studies(), "synthetic"]


def demo(
    study: Annotated[str, typer.Option(help="Packaged study: multitask, multisource, multilingual, ... "
                                            "(--list shows all), or 'synthetic' (simulated dynamics, no training).")
                     ] = DEFAULT_STUDY,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (re-running resumes).")] = Path("soi-demo"),
    n_train: Annotated[int | None, typer.Option(help="Cap every dataset's training examples (a quicker run).",
                                                min=1)] = None,
    n_eval: Annotated[int | None, typer.Option(help="Cap every dataset's evaluation examples.", min=1)] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.", min=1)] = None,
    seeds: Annotated[str | None, typer.Option(help="Override the training seeds, comma-separated (e.g. 0 for a "
                                                   "one-seed check; >= 3 for the reseeding null).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the packaged studies and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
    n: Annotated[int, typer.Option(help="Examples per run (synthetic study only).", min=10)] = 3000,
    seed: Annotated[int, typer.Option(help="Seed (synthetic study only).", min=0, max=2**32 - 1)] = 0,
) -> None:
    """Run a packaged study end to end and write every output under --out.

    The packaged studies are the SOI paper's experiment at demo size (each <= 10 minutes on 2 CPU cores, models
    and data offline): single-setting runs and the multi-setting run, dynamics recorded every epoch, evaluation
    (in-distribution, OOD, per language; per-example test predictions), SOI analysis, single -> multi transitions
    over all seeds (the default multitask study has 3: transitions are tested against reseeding noise), paired
    test-set differences, summary.md, summary.json and tables.
    Data come from $SOI_DATA_DIR (or ./data). --n-train/--n-eval/--epochs/--seeds shrink a study for a quick check.
    """
    from soi.study.packaged import describe, is_generative, packaged_studies, read_study, run_study_file

    studies = packaged_studies()
    if list_:
        for name, path in studies.items():
            console.print(f"[bold]{name}[/bold]: {describe(path)}")
        console.print("[bold]synthetic[/bold]: simulated dynamics for a single and a multi-setting run (no training)")
        return
    if study == "synthetic":
        _synthetic(out, n, seed)
        return
    if study not in studies:
        raise SoiError(f"--study: unknown study {study!r}; choose one of {', '.join(_names())}")
    start = time.perf_counter()
    if not quiet:
        console.print(f"[bold]soi demo --study {study}[/bold]: {describe(studies[study])}")
    run_study_file(studies[study], out, progress=not quiet,
                   overrides={"n_train": n_train, "n_eval": n_eval, "epochs": epochs, "seeds": parse_seeds(seeds)})
    if not quiet:
        what = ("report.html, summary.json, tables/, figures/, runs/<run>-k<k>/seed-<s>/ (mixture.json, "
                "predictions.jsonl, dynamics, probe/)" if is_generative(read_study(studies[study])) else
                "report.html, summary.md, summary.json, tables/, runs/<run>/seed-<s>/ (dynamics, analysis/, "
                "eval/), compare/<a>__vs__<b>/ (all seeds), figures/")
        console.print(f"done in {time.perf_counter() - start:.1f} s; outputs under {out}/: {what}")


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct integers; one-line error otherwise); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise SoiError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise SoiError(f"--seeds: seeds must be distinct, got {text!r}")
    return seeds


def _synthetic(out: Path, n: int, seed: int) -> None:
    """Simulated dynamics for a single- and a multi-setting run of three tasks: analyse, compare, select."""
    from soi.analysis.per_example import analyze_run
    from soi.cli.analyze import print_summary
    from soi.cli.compare import compare
    from soi.selection import describe, save, select
    from soi.simulate import simulate_run

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    groups = {"task": ["task_a", "task_b", "task_c"]}
    runs = {}
    with console.status("simulating runs ..."):
        # same examples (difficulty_seed), different training noise; the multi-setting run learns a bit better
        runs["single"] = simulate_run(out / "runs" / "single", n=n, checkpoints=6, seed=seed + 1, skill=0.8,
                                      groups=groups, difficulty_seed=seed, setting="single")
        runs["multi"] = simulate_run(out / "runs" / "multi", n=n, checkpoints=6, seed=seed + 2, skill=1.0,
                                     groups=groups, difficulty_seed=seed, setting="multi")
    console.print("[bold]synthetic study[/bold]: simulated dynamics, no model trained\n")
    tables = {}
    for name, run in runs.items():
        res = analyze_run(run)
        tables[name] = res.table
        print_summary(res.summary)
        console.print()
    compare(run_a=runs["single"], run_b=runs["multi"], out=out / "compare", group_by=None, late_fraction=0.5,
            n_boot=2000, seed=seed, label_a=None, label_b=None)
    selection = select(tables["single"], categories=["learned_late", "forgettable_recovered", "forgettable_lost",
                                                     "never_learned"], seed=seed, source_run=str(runs["single"]))
    save(selection, out / "selection")
    console.print(f"\nstage-2 selection from the single run: {describe(selection)}")
    from soi.report import write_report

    write_report(out)
    console.print(f"\ndone in {time.perf_counter() - start:.1f} s; outputs under {out}/: report.html, "
                  f"runs/*/analysis/, compare/ (transitions, heatmaps/, stats.json), selection/")
