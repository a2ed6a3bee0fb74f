"""``soi run STUDY.yaml --out DIR``: train, record, analyse and compare every run of a study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    study: Annotated[Path, typer.Argument(help="The study YAML (see docs/studies.md).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; re-running resumes).",
                                      show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
) -> None:
    """Run a study: every run x seed is trained with dynamics recording and evaluated, then analysed and compared.

    Writes into --out: runs/<run>/seed-<s>/ (run directories with result.json, analysis/ and eval/ test-set
    predictions), compare/<a>__vs__<b>/ (all seeds of a vs all seeds of b: transitions, heatmaps, stats.json),
    summary.json and summary.md (which transitions exceed reseeding noise, test-set differences with CIs;
    summary.json's fields: docs/summary-schema.md). Finished runs (those with result.json) are skipped, so
    re-running resumes an interrupted study.
    A study with ``type: generative`` is a cross-lingual generative (SFT) study (docs/generative.md).
    """
    from soi.study.packaged import run_study_file

    run_study_file(study, out, progress=not quiet)
