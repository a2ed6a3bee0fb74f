"""``soi demo``: the end-to-end example (record -> analyze -> compare -> select) on embedded defaults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from soi.cli._common import console
from soi.errors import SoiError

STUDIES = ("synthetic",)


def demo(
    study: Annotated[str, typer.Option(help=f"Which packaged study to run: {', '.join(STUDIES)}.")] = "synthetic",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("soi-demo"),
    n: Annotated[int, typer.Option(help="Examples per run (synthetic study).", min=10)] = 3000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Run a packaged study end to end and write every output under --out.

    The ``synthetic`` study simulates training dynamics for a single-setting and a multi-setting run of
    the same three tasks (no model is trained), then analyses both, compares them (SOI transitions,
    heatmaps, McNemar, bootstrap CIs) and selects a stage-2 subset.
    """
    if study not in STUDIES:
        raise SoiError(f"--study: unknown study {study!r}; choose one of {', '.join(STUDIES)}")
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
    console.print(f"\ndone in {time.perf_counter() - start:.1f} s; outputs under {out}/: runs/*/analysis/, "
                  f"compare/ (transitions, heatmaps/, stats.json), selection/")
