"""The directory layout of a study (``soi run --out OUT``), as pure path functions.

One place names every path a study writes, so the study engine, the study types, the report and the selection
read and write the same places. Nothing here touches the file system. Layout under ``out``::

    config.json                                 # the validated study config
    runs/<run>/seed-<s>/                        # one run x seed (a soi run directory when dynamics are recorded)
        result.json                             # written last: its presence marks the run finished
        fingerprint.json                        # settings hash of a resumable (generative) run in progress
        eval/<key>.parquet                      # per-example test-set predictions (classification)
        mixture.json, predictions.jsonl         # generative runs: mixture manifest, one line per eval row
        model-best/, model-final/               # generative runs: saved models
        probe/                                  # generative runs: the greedy-decoded probe's run directory
    compare/<a>__vs__<b>/stats.json             # all seeds of a vs all seeds of b
    two_stage/<from_run>/<rule>/<arm>/seed-<s>/ # two-stage arms (run directories with result.json)
    two_stage/<from_run>/<rule>/selection/stage1-seed-<s>/
    two_stage/results.csv, differences.csv, results.md
    summary.json, summary.md                    # the study summary (schema: docs/summary-schema.md)
    tables/<name>.csv
    report.html, figures/<name>.png

A generative run ``<run>`` at ``k`` examples per seen language is the run ``<run>-k<k>`` (:func:`k_run_name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
RUNS_DIR = "runs"
RESULT_FILE = "result.json"
FINGERPRINT_FILE = "fingerprint.json"
EVAL_DIR = "eval"
MIXTURE_FILE = "mixture.json"
PREDICTIONS_FILE = "predictions.jsonl"
PROBE_DIR = "probe"
COMPARE_DIR = "compare"
COMPARE_STATS_FILE = "stats.json"
TWO_STAGE_DIR = "two_stage"
SELECTION_DIR = "selection"
TWO_STAGE_RESULTS_CSV = "results.csv"
TWO_STAGE_DIFFERENCES_CSV = "differences.csv"
TWO_STAGE_RESULTS_MD = "results.md"
SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"
TABLES_DIR = "tables"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
SEED_PREFIX = "seed-"


def seed_dir_name(seed: int) -> str:
    """``seed-<seed>``."""
    return f"{SEED_PREFIX}{seed}"


def k_run_name(run: str, k: int) -> str:
    """The name of generative run ``run`` at ``k`` examples per seen language: ``<run>-k<k>``."""
    return f"{run}-k{k}"


def compare_name(a: str, b: str) -> str:
    """``<a>__vs__<b>``: the folder name of the comparison of run ``a`` with run ``b``."""
    return f"{a}__vs__{b}"


@dataclass(frozen=True)
class StudyLayout:
    """Every path of the study folder ``out`` (see the module docstring)."""

    out: Path

    def __init__(self, out: str | Path) -> None:
        object.__setattr__(self, "out", Path(out))

    # ------------------------------------------------------------------ study files
    @property
    def config(self) -> Path:
        return self.out / CONFIG_FILE

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY_FILE

    @property
    def summary_md(self) -> Path:
        return self.out / SUMMARY_MD

    @property
    def tables(self) -> Path:
        return self.out / TABLES_DIR

    def table(self, name: str) -> Path:
        """``tables/<name>.csv``."""
        return self.tables / f"{name}.csv"

    @property
    def report(self) -> Path:
        return self.out / REPORT_FILE

    @property
    def figures(self) -> Path:
        return self.out / FIGURES_DIR

    # ------------------------------------------------------------------ runs
    @property
    def runs(self) -> Path:
        return self.out / RUNS_DIR

    def seed_folder(self, run: str) -> Path:
        """``runs/<run>``: every seed of run ``run`` (a seed folder of ``seed-*/`` run directories)."""
        return self.runs / run

    def run_dir(self, run: str, seed: int) -> Path:
        """``runs/<run>/seed-<seed>``."""
        return self.seed_folder(run) / seed_dir_name(seed)

    def k_run_dir(self, run: str, k: int, seed: int) -> Path:
        """``runs/<run>-k<k>/seed-<seed>``: generative run ``run`` at ``k``."""
        return self.run_dir(k_run_name(run, k), seed)

    @staticmethod
    def result(run_dir: Path) -> Path:
        """``<run dir>/result.json``."""
        return Path(run_dir) / RESULT_FILE

    @staticmethod
    def fingerprint(run_dir: Path) -> Path:
        """``<run dir>/fingerprint.json``."""
        return Path(run_dir) / FINGERPRINT_FILE

    @staticmethod
    def eval_dir(run_dir: Path) -> Path:
        """``<run dir>/eval``."""
        return Path(run_dir) / EVAL_DIR

    @staticmethod
    def eval_file(run_dir: Path, key: str) -> Path:
        """``<run dir>/eval/<key>.parquet``: per-example test-set predictions of eval set ``key``."""
        return Path(run_dir) / EVAL_DIR / f"{key}.parquet"

    @staticmethod
    def mixture(run_dir: Path) -> Path:
        return Path(run_dir) / MIXTURE_FILE

    @staticmethod
    def predictions(run_dir: Path) -> Path:
        return Path(run_dir) / PREDICTIONS_FILE

    @staticmethod
    def probe(run_dir: Path) -> Path:
        return Path(run_dir) / PROBE_DIR

    # ------------------------------------------------------------------ comparisons
    def compare_dir(self, a: str, b: str) -> Path:
        """``compare/<a>__vs__<b>``."""
        return self.out / COMPARE_DIR / compare_name(a, b)

    def compare_stats(self, a: str, b: str) -> Path:
        """``compare/<a>__vs__<b>/stats.json``."""
        return self.compare_dir(a, b) / COMPARE_STATS_FILE

    # ------------------------------------------------------------------ two-stage
    @property
    def two_stage(self) -> Path:
        return self.out / TWO_STAGE_DIR

    def experiment_dir(self, from_run: str, rule: str) -> Path:
        """``two_stage/<from_run>/<rule>``."""
        return self.two_stage / from_run / rule

    def arm_dir(self, from_run: str, rule: str, arm: str, seed: int) -> Path:
        """``two_stage/<from_run>/<rule>/<arm>/seed-<seed>``."""
        return self.experiment_dir(from_run, rule) / arm / seed_dir_name(seed)

    def selection_dir(self, from_run: str, rule: str, stage1_seed: int) -> Path:
        """``two_stage/<from_run>/<rule>/selection/stage1-seed-<s>``."""
        return self.experiment_dir(from_run, rule) / SELECTION_DIR / f"stage1-{seed_dir_name(stage1_seed)}"

    @property
    def two_stage_tables(self) -> dict[str, Path]:
        """``results`` / ``differences`` (CSV) and ``markdown`` under ``two_stage/``."""
        return {"results": self.two_stage / TWO_STAGE_RESULTS_CSV,
                "differences": self.two_stage / TWO_STAGE_DIFFERENCES_CSV,
                "markdown": self.two_stage / TWO_STAGE_RESULTS_MD}


__all__ = ["COMPARE_STATS_FILE", "CONFIG_FILE", "EVAL_DIR", "FIGURES_DIR", "FINGERPRINT_FILE", "MIXTURE_FILE",
           "PREDICTIONS_FILE", "REPORT_FILE", "RESULT_FILE", "SUMMARY_FILE", "SUMMARY_MD", "TABLES_DIR",
           "TWO_STAGE_DIR", "StudyLayout", "compare_name", "k_run_name", "seed_dir_name"]
