"""The study engine: one run protocol for every study type.

:func:`run_study_with` runs (or resumes) a study into ``out`` (paths: :class:`soi.store.layout.StudyLayout`):

1. ``config.json`` is written (:func:`prepare_out`), then the adapter's :meth:`StudyAdapter.prepare` hook runs
   (load data, resolve the model, refuse bad settings before anything is trained);
2. every :class:`RunJob` of :meth:`StudyAdapter.runs` goes through :func:`run_one`: a run whose ``result.json``
   exists is skipped when its ``fingerprint`` equals :meth:`StudyAdapter.fingerprint` and is an error otherwise
   (settings changed: use a new ``--out``); an unfinished run directory is cleared and trained again, unless the
   adapter is ``resumable`` and :meth:`StudyAdapter.can_resume` finds a checkpoint of the same fingerprint
   (``fingerprint.json`` marks it), in which case training continues from it. ``result.json`` (the adapter's
   :meth:`StudyAdapter.evaluate` plus ``fingerprint`` and ``elapsed_s``) is written last and atomically, so a
   crash at any point leaves no ``result.json`` and the next call trains (or resumes) that run again;
3. every run's ``soi analyze`` summary is read from its cache or computed (:func:`analyse`);
4. the comparisons of :meth:`StudyAdapter.comparisons` run through :func:`soi.analysis.compare.compare_runs`
   (:func:`compare_cached`; reused while newer than every ``result.json`` of both runs);
5. :meth:`StudyAdapter.summarise` builds the summary (seed aggregation helpers: :func:`mean_std`,
   :func:`seed_stats`, :func:`t_interval`, :func:`paired_difference`, :func:`mean_shares`), the engine stamps
   ``schema_version``, :meth:`StudyAdapter.write_outputs` writes tables / figures, the summary of a built-in kind
   (``classification``, ``generative``) is checked against its schema (:mod:`soi.store.summary`, strict), and
   ``summary.json`` is written last; :meth:`StudyAdapter.print_summary` prints it unless quiet.

Writing an adapter (a new study type)
-------------------------------------
Subclass :class:`StudyAdapter` and implement ``runs``, ``fingerprint``, ``train_one``, ``evaluate`` and
``summarise``::

    class MyStudy(StudyAdapter):
        kind = "my-study"

        def runs(self):                       # every run x seed, in training order
            return [RunJob((r, s), r, s, self.layout.run_dir(r, s), f"{r} seed {s}") for r in ... for s in ...]

        def fingerprint(self, job):           # hash of everything that determines the run (fingerprint_of)
            return fingerprint_of({"model": ..., "run": job.run, "seed": job.seed})

        def train_one(self, job, run_dir, *, resume):   # train into run_dir (a soi run directory); any object
            return trained_model

        def evaluate(self, job, trained, run_dir):      # the result.json content (the engine adds fingerprint)
            return {"run": job.run, "seed": job.seed, "eval": {...}}

        def summarise(self, results, analyses, comparisons):   # summary.json content, keyed by job.key
            return {"study": ..., "runs": {...}, "comparisons": []}

then ``run_study_with(MyStudy(config), out)``. Set ``resumable = True`` and implement ``can_resume`` when the
trainer can continue from its own checkpoints (the generative adapter: TRL checkpoints under ``checkpoints/``).
Override ``analyse`` to read more than the run directory's own dynamics, ``comparisons`` to compare runs,
``write_outputs`` for tables and figures and ``print_summary`` for the console. See
:mod:`soi.study.generative` for a complete adapter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soi._io import write_json
from soi.errors import SoiError
from soi.store.layout import StudyLayout
from soi.store.summary import SCHEMA_VERSION, validate_summary

TYPED_KINDS = ("classification", "generative")
"""Study kinds whose summary the engine checks against :mod:`soi.store.summary` (strictly) before writing it."""


@dataclass(frozen=True)
class RunJob:
    """One run x seed of a study: ``key`` indexes results and analyses, ``run`` is the run's name (its folder
    under ``runs/``), ``dir`` its run directory, ``label`` what the console shows, ``spec`` the adapter's own
    data (not part of equality)."""

    key: Hashable
    run: str
    seed: int
    dir: Path
    label: str
    spec: Any = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class ComparisonJob:
    """A comparison of every seed of run ``a`` (``runs/<a>/``) with every seed of run ``b``."""

    a: str
    b: str
    group_by: tuple[str, ...] = ("task", "source", "language")


class StudyAdapter(ABC):
    """What a study type supplies to the engine (see the module docstring for a worked example)."""

    kind: str = "study"
    resumable: bool = False
    """Whether an unfinished run can continue from the trainer's checkpoints (see :meth:`can_resume`)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.layout = StudyLayout(".")
        self.progress = True
        self.console: Any = None

    def prepare(self) -> None:  # noqa: B027 - an optional hook
        """Called once after ``config.json`` is written, before any run: load data, resolve the model, refuse bad
        settings (``self.layout``, ``self.console`` and ``self.progress`` are set)."""

    @abstractmethod
    def runs(self) -> Sequence[RunJob]:
        """Every run x seed, in training order."""

    @abstractmethod
    def fingerprint(self, job: RunJob) -> str:
        """Hash of everything that determines the run's training and evaluation (:func:`fingerprint_of`)."""

    def can_resume(self, job: RunJob, run_dir: Path) -> bool:
        """Whether the unfinished ``run_dir`` (of the same fingerprint) holds a checkpoint to continue from."""
        return False

    @abstractmethod
    def train_one(self, job: RunJob, run_dir: Path, *, resume: bool) -> Any:
        """Train the run into ``run_dir`` (existing, empty unless ``resume``); returns what :meth:`evaluate`
        needs (e.g. the model)."""

    @abstractmethod
    def evaluate(self, job: RunJob, trained: Any, run_dir: Path) -> dict[str, Any]:
        """Evaluate the trained run; returns the ``result.json`` content (the engine adds ``fingerprint`` and,
        when missing, ``elapsed_s``)."""

    def analyse(self, job: RunJob, result: Mapping[str, Any]) -> Any:
        """The run's dynamics analysis for :meth:`summarise` (default: :func:`analyse` of its directory)."""
        return analyse(job.dir)

    def comparisons(self) -> Sequence[ComparisonJob]:
        """The comparisons the study runs (default: none)."""
        return []

    @abstractmethod
    def summarise(self, results: Mapping[Hashable, Mapping[str, Any]], analyses: Mapping[Hashable, Any],
                  comparisons: Sequence[tuple[ComparisonJob, dict[str, Any]]]) -> dict[str, Any]:
        """The ``summary.json`` content from every run's result and analysis (keyed by :attr:`RunJob.key`) and
        every comparison's ``stats.json``."""

    def write_outputs(self, summary: dict[str, Any]) -> None:  # noqa: B027 - an optional hook
        """Write tables / figures from the summary (may add entries to it, e.g. the figure paths); called before
        ``summary.json`` is written."""

    def print_summary(self, summary: Mapping[str, Any]) -> None:  # noqa: B027 - an optional hook
        """Print the summary to ``self.console`` (only when not quiet)."""


# ---------------------------------------------------------------------------------------------- protocol
def fingerprint_of(blob: Any) -> str:
    """16 hex digits of the SHA-256 of ``blob`` as sorted JSON (non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_out(out_dir: str | Path, config: Any) -> Path:
    """Create the study folder ``out_dir`` and write the validated config (a pydantic model) as config.json."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SoiError("--out exists and is not a directory", path=out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(StudyLayout(out).config, config.model_dump(mode="json"))
    return out


def read_json(path: Path) -> Any:
    """JSON of ``path``; an unreadable file is a one-line error naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SoiError(f"cannot read JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})", path=path) from None


def finished_result(job: RunJob, fingerprint: str) -> dict[str, Any] | None:
    """The ``result.json`` of a finished run, ``None`` when unfinished; an error when it was trained with other
    settings (another fingerprint)."""
    done = StudyLayout.result(job.dir)
    if not done.is_file():
        return None
    result = read_json(done)
    if not isinstance(result, dict) or result.get("fingerprint") != fingerprint:
        raise SoiError(f"run {job.run!r} seed {job.seed} was trained with different settings; use a new --out (or "
                       "delete that run directory)", path=job.dir)
    return result


def run_one(adapter: StudyAdapter, job: RunJob) -> dict[str, Any]:
    """Train and evaluate one run (or skip / resume it); returns its ``result.json`` content (see the module
    docstring for the protocol)."""
    console = adapter.console
    fp = adapter.fingerprint(job)
    result = finished_result(job, fp)
    if result is not None:
        if console is not None:
            console.print(f"{job.label}: done already, skipped")
        return result
    rdir = job.dir
    marker = StudyLayout.fingerprint(rdir)
    resume = False
    if adapter.resumable and marker.is_file():
        with contextlib.suppress(SoiError):
            resume = (read_json(marker) or {}).get("fingerprint") == fp and adapter.can_resume(job, rdir)
    if rdir.exists() and not resume:  # an interrupted run without a usable checkpoint: start it again
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True, exist_ok=True)
    if adapter.resumable:
        write_json(marker, {"fingerprint": fp})
    if console is not None:
        console.print(f"{job.label}: {'resuming' if resume else 'training'}")
    start = time.perf_counter()
    trained = adapter.train_one(job, rdir, resume=resume)
    result = dict(adapter.evaluate(job, trained, rdir))
    result["fingerprint"] = fp
    result.setdefault("elapsed_s", round(time.perf_counter() - start, 3))
    write_json(StudyLayout.result(rdir), result)  # last, atomically: marks the run finished
    return result


def run_jobs(adapter: StudyAdapter, jobs: Sequence[RunJob]) -> dict[Hashable, dict[str, Any]]:
    """:func:`run_one` for every job, in order; ``{job.key: result}``."""
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("run jobs must have distinct keys")
    return {job.key: run_one(adapter, job) for job in jobs}


def newer(path: Path, *than: Path) -> bool:
    """Whether ``path`` exists and is at least as new as every file in ``than``."""
    return path.is_file() and all(path.stat().st_mtime >= t.stat().st_mtime for t in than)


def analyse(run_dir: Path) -> dict[str, Any] | None:
    """The ``soi analyze`` summary of a run directory: cached in its ``analysis/`` folder while at least as new
    as its ``result.json``, else computed (and cached); ``None`` without recorded dynamics (no ``run.json``)."""
    from soi.analysis.per_example import SUMMARY_FILE as ANALYSIS_SUMMARY
    from soi.analysis.per_example import analyze_run
    from soi.store.meta import ANALYSIS_DIR

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        return None
    cached = run_dir / ANALYSIS_DIR / ANALYSIS_SUMMARY
    result = StudyLayout.result(run_dir)
    if cached.is_file() and (not result.is_file() or newer(cached, result)):
        return read_json(cached)
    return analyze_run(run_dir).summary


def compare_cached(layout: StudyLayout, comp: ComparisonJob, seeds: Sequence[int], *, console: Any = None,
                   n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``stats.json`` of the comparison of every seed of ``comp.a`` with every seed of ``comp.b``
    (:func:`soi.analysis.compare.compare_runs` into ``compare/<a>__vs__<b>``), reused while newer than every
    ``result.json`` of both runs."""
    from soi.analysis.compare import compare_runs

    cdir = layout.compare_dir(comp.a, comp.b)
    stats_path = layout.compare_stats(comp.a, comp.b)
    finished = [layout.result(layout.run_dir(r, s)) for r in (comp.a, comp.b) for s in seeds]
    if newer(stats_path, *finished):
        return read_json(stats_path)
    if cdir.is_dir() and not stats_path.exists() and any(cdir.glob("seed-*/stats.json")):
        shutil.rmtree(cdir)  # the per-seed layout of older soi versions: replaced by the seed-folder one
    if console is not None:
        console.print(f"comparing {comp.a} \u2192 {comp.b} ({len(seeds)} + {len(seeds)} seeds)")
    return compare_runs(layout.seed_folder(comp.a), layout.seed_folder(comp.b), cdir, group_by=list(comp.group_by),
                        late_fraction=0.5, n_boot=n_boot, seed=seed, label_a=comp.a, label_b=comp.b)


def foreign_seeds(layout: StudyLayout, runs: Sequence[str], seeds: Sequence[int]) -> None:
    """Refuse a ``runs/<run>/seed-<s>`` outside the study's seeds (a comparison reads every seed folder)."""
    allowed = {layout.run_dir(r, s).name for r in runs for s in seeds}
    for run in runs:
        extra = sorted(p.name for p in layout.seed_folder(run).glob("seed-*") if p.name not in allowed)
        if extra:
            raise SoiError(f"seeds: runs/{run}/{extra[0]} is not one of the study's seeds {list(seeds)}; use a new "
                           "--out (or delete that run directory)", path=layout.out)


@contextlib.contextmanager
def hf_progress(progress: bool) -> Iterator[None]:
    """Quiet means quiet: no Hugging Face progress bars ("Loading weights") while ``progress`` is False."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def run_study_with(adapter: StudyAdapter, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study of ``adapter`` into ``out_dir``; returns the ``summary.json`` content."""
    from rich.console import Console

    out = prepare_out(out_dir, adapter.config)
    adapter.layout = StudyLayout(out)
    adapter.progress = progress
    adapter.console = Console(highlight=False, quiet=not progress)
    with hf_progress(progress):
        adapter.prepare()
        jobs = list(adapter.runs())
        results = run_jobs(adapter, jobs)
        analyses = {job.key: adapter.analyse(job, results[job.key]) for job in jobs}
        seeds = sorted({job.seed for job in jobs})
        comparisons = [(c, compare_cached(adapter.layout, c, seeds, console=adapter.console))
                       for c in adapter.comparisons()]
        summary = {"schema_version": SCHEMA_VERSION, **adapter.summarise(results, analyses, comparisons)}
        adapter.write_outputs(summary)
        if adapter.kind in TYPED_KINDS:  # the summary of a built-in study type must fit its schema
            validate_summary(summary, strict=True, path=adapter.layout.summary)
        write_json(adapter.layout.summary, summary)
    if progress:
        adapter.print_summary(summary)
    return summary


# ---------------------------------------------------------------------------------------------- seeds
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{mean, std (ddof 1; 0 for one value), values}`` of per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "values": [float(v) for v in arr]}


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Student t confidence interval of the mean, ``mean -/+ t_{(1+level)/2, n-1} * s / sqrt(n)`` (Student
    1908); ``s`` the sample standard deviation (ddof 1). ``None`` for fewer than two values."""
    from scipy.stats import t

    x = np.asarray(values, np.float64)
    if x.size < 2:
        return None
    half = float(t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    m = float(x.mean())
    return [m - half, m + half]


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``{mean, std (ddof 1; 0 for one value), ci95 (t-interval or None), values}``."""
    return {**mean_std(values), "ci95": t_interval(values)}


def paired_difference(arm: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """Per-seed differences ``arm - control`` (paired by seed) with their mean and 95% t-interval."""
    a, b = np.asarray(arm, np.float64), np.asarray(control, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    d = a - b
    return {"mean": float(d.mean()), "ci95": t_interval(d), "values": [float(v) for v in d]}


def mean_shares(summaries: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[str, dict[str, float]]]:
    """SOI shares per group key / group / category (``soi analyze`` summaries' ``groups``), averaged over the
    seeds that have an analysis and the group; ``{}`` when none has."""
    have = [s for s in summaries if s is not None]
    out: dict[str, dict[str, dict[str, float]]] = {}
    if not have:
        return out
    for gkey, groups in have[0]["groups"].items():
        out[gkey] = {}
        for gname in groups:
            vals = [s["groups"][gkey][gname]["shares"] for s in have if gname in s["groups"].get(gkey, {})]
            out[gkey][gname] = {c: float(np.mean([v[c] for v in vals])) for c in vals[0]}
    return out


__all__ = ["TYPED_KINDS", "ComparisonJob", "RunJob", "StudyAdapter", "analyse", "compare_cached", "fingerprint_of",
           "finished_result", "foreign_seeds", "hf_progress", "mean_shares", "mean_std", "newer", "paired_difference",
           "prepare_out", "read_json", "run_jobs", "run_one", "run_study_with", "seed_stats", "t_interval"]
