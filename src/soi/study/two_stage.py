"""Two-stage fine-tuning: continue stage-1 runs on SOI-selected subsets, judged against same-compute controls.

For every experiment (a ``from_run`` x a rule of the study's ``two_stage:`` section) and every stage-2 seed:

* ``soi``    -- the stage-1 weights trained ``epochs`` epochs on the rule's selection (:func:`soi.selection.select`
  on the stage-1 ``analysis/per_example.parquet``); this fixes the stage-2 optimizer steps ``S``;
* ``random`` -- the same, on a seeded random subset with the same number of examples per task (so the same ``S``);
* ``full``   -- ``S`` steps on the full stage-1 data, sampled without replacement (usually a fraction of an epoch);
* ``stage1`` -- the stage-1 model alone (no stage 2; its evaluation from the stage-1 ``result.json``).

Every trained arm x seed is a soi run directory with dynamics and ``result.json`` (written last; re-running skips
finished arms)::

    two_stage/<from_run>/<rule>/<arm>/seed-<s>/    run.json, examples.parquet, dynamics/, analysis/, result.json
    two_stage/<from_run>/<rule>/selection/stage1-seed-<s>/   the selection (soi.selection.save)
    two_stage/results.csv, differences.csv, results.md

Results: accuracy / macro-F1 per arm and eval set as the seed mean with a 95% t-interval (Student, n - 1 degrees
of freedom; ``None`` with one seed), and the seed-paired difference of ``soi`` to each control with its t-interval.
See ``docs/two_stage.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from soi._io import atomic_path, write_text
from soi.config.study import StudyConfig
from soi.config.two_stage import ARMS, SelectionRule, TwoStageSpec
from soi.errors import SoiError
from soi.store.layout import RESULT_FILE, TWO_STAGE_DIR, StudyLayout
from soi.study.classification import TRAINER_DIR, evaluate_all, load_tokenizer, run_dir_of
from soi.study.engine import RunJob, StudyAdapter, newer, paired_difference, run_one, seed_stats, t_interval
from soi.study.tables import csv_text

WEIGHTS_FILE = "model.safetensors"
RESULTS_CSV = "results.csv"
DIFFERENCES_CSV = "differences.csv"
RESULTS_MD = "results.md"
TRAINED_ARMS = ("soi", "random", "full")
CONTROLS = ("random", "full", "stage1")
METRICS = ("accuracy", "macro_f1")


# ---------------------------------------------------------------------------------------------- weights
def save_weights(model: Any, run_dir: str | Path) -> Path:
    """Write the trained :class:`~soi.train.hf.MultiHeadModel`'s parameters to ``run_dir/model.safetensors``
    (atomically).

    The heads' label lists are in the run's ``run.json`` / ``result.json``; the head sizes are kept in the
    file's metadata.
    """
    from safetensors.torch import save_model

    path = Path(run_dir) / WEIGHTS_FILE
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"heads": json.dumps(dict(model.num_labels_per_task))},
                   force_contiguous=True)
    return path


def load_weights(run_dir: str | Path, model_path: str, heads: Mapping[str, int], *,
                 freeze_embeddings: bool = False, task_labels: Mapping[str, Sequence[str]] | None = None) -> Any:
    """A :class:`~soi.train.hf.MultiHeadModel` (encoder ``model_path``, ``heads`` in task order) with the stage-1
    weights saved by :func:`save_weights` (strict: every parameter must match)."""
    from safetensors.torch import load_model

    from soi.train.hf import MultiHeadModel

    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise SoiError(f"no stage-1 weights ({WEIGHTS_FILE}); delete this run directory so that soi run trains it "
                       "again and keeps them", path=run_dir)
    model = MultiHeadModel.from_encoder(model_path, dict(heads), task_labels=task_labels,
                                        freeze_embeddings=freeze_embeddings)
    try:
        load_model(model, str(path))
    except RuntimeError as exc:
        raise SoiError(f"{WEIGHTS_FILE} does not fit the study's model and heads ({str(exc).splitlines()[0]}); "
                       "delete this run directory so that soi run trains it again", path=run_dir) from None
    return model


# statistics: t_interval, seed_stats and paired_difference are the engine's (soi.study.engine), re-exported here


# ---------------------------------------------------------------------------------------------- subsets
def experiment_dir_of(out: Path, from_run: str, rule: str) -> Path:
    """``out/two_stage/<from_run>/<rule>``."""
    return StudyLayout(out).experiment_dir(from_run, rule)


def arm_dir_of(out: Path, from_run: str, rule: str, arm: str, seed: int) -> Path:
    """``out/two_stage/<from_run>/<rule>/<arm>/seed-<seed>``."""
    return StudyLayout(out).arm_dir(from_run, rule, arm, seed)


def stage1_tasks(config: StudyConfig, data: Any, run: str) -> dict[str, list[Any]]:
    """The stage-1 run's training data as ``{task: [splits]}`` (the runner's order, so global idx match)."""
    spec = config.run(run)
    tasks: dict[str, list[Any]] = {}
    for key in spec.train:
        tasks.setdefault(config.datasets[key].head, []).append(data.get(key, "train", spec.n_train.get(key)))
    return tasks


def _blocks(tasks: Mapping[str, Sequence[Any]]) -> dict[str, tuple[int, int]]:
    """``{task: (first global idx, rows)}``."""
    out, start = {}, 0
    for task, splits in tasks.items():
        n = sum(len(s) for s in splits)
        out[task] = (start, n)
        start += n
    return out


def subset_tasks(tasks: Mapping[str, Sequence[Any]], idx: np.ndarray) -> dict[str, list[Any]]:
    """The rows at global ``idx`` (the order of :func:`soi.train.run_examples`) as ``{task: [splits]}``, in
    stage-1 order; tasks and splits without a selected row are left out."""
    idx = np.unique(np.asarray(idx, np.int64))
    out: dict[str, list[Any]] = {}
    start = 0
    for task, splits in tasks.items():
        for s in splits:
            pos = idx[(idx >= start) & (idx < start + len(s))] - start
            if pos.size:
                out.setdefault(task, []).append(s.take(pos))
            start += len(s)
    if start and idx.size and (idx[0] < 0 or idx[-1] >= start):
        raise SoiError(f"selected idx out of range [0, {start})")
    return out


def per_task_counts(tasks: Mapping[str, Sequence[Any]], idx: np.ndarray) -> dict[str, int]:
    """Number of ``idx`` in each task's block."""
    idx = np.asarray(idx, np.int64)
    return {t: int(((idx >= a) & (idx < a + n)).sum()) for t, (a, n) in _blocks(tasks).items()}


def random_subset(tasks: Mapping[str, Sequence[Any]], counts: Mapping[str, int], seed: int) -> np.ndarray:
    """Seeded uniform draw without replacement of ``counts[task]`` rows of each task (global idx, sorted)."""
    rng = np.random.default_rng([seed, 1])
    picks = [a + rng.choice(n, size=counts.get(t, 0), replace=False) for t, (a, n) in _blocks(tasks).items()]
    return np.sort(np.concatenate(picks)).astype(np.int64) if picks else np.zeros(0, np.int64)


def stage2_steps(counts: Mapping[str, int], batch_size: int, epochs: int) -> dict[str, int]:
    """Optimizer steps per task of ``epochs`` epochs over ``counts`` rows (the last batch of a task may be short)."""
    return {t: epochs * math.ceil(c / batch_size) for t, c in counts.items() if c}


def full_plan(tasks: Mapping[str, Sequence[Any]], steps: Mapping[str, int], batch_size: int, seed: int
              ) -> tuple[np.ndarray | None, int]:
    """The ``full`` arm's data: ``(global idx, epochs)``.

    When every task's ``steps[task] * batch_size`` rows fit in the task (the usual case: ``S`` steps are less than
    an epoch of the full data) these rows are drawn without replacement (seeded) and trained for one epoch, which
    gives exactly ``steps[task]`` full batches per task. Otherwise ``(None, epochs)``: train on all rows for
    ``epochs = ceil(S / steps per full epoch)`` with ``max_steps = S``.
    """
    blocks = _blocks(tasks)
    if all(steps.get(t, 0) * batch_size <= n for t, (_, n) in blocks.items()):
        rng = np.random.default_rng([seed, 2])
        picks = [a + rng.choice(n, size=steps.get(t, 0) * batch_size, replace=False) for t, (a, n) in blocks.items()]
        return np.sort(np.concatenate(picks)).astype(np.int64), 1
    per_epoch = sum(math.ceil(n / batch_size) for _, n in blocks.values())
    return None, math.ceil(sum(steps.values()) / per_epoch)


def select_subset(config: StudyConfig, tasks: Mapping[str, Sequence[Any]], stage1_dir: Path, rule: SelectionRule
                  ) -> Any:
    """Apply ``rule`` to the stage-1 per-example table (checked against the study's data); a Selection whose
    ``rows`` have the run's global ``idx``.

    A ``consensus`` rule (or one with ``min_stability``) selects from the seed consensus of every seed of the
    stage-1 run (``runs/<run>/``, the parent of ``stage1_dir``): :func:`soi.analysis.seeds.analyze_seeds`, made
    selectable by :func:`soi.analysis.seeds.selection_table` (``soi`` = the consensus category, metrics = seed
    means), then :func:`soi.selection.select` with ``min_stability`` (share of seeds agreeing on the category).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from soi.analysis.per_example import PER_EXAMPLE_FILE
    from soi.selection import select
    from soi.store.meta import ANALYSIS_DIR
    from soi.train import run_examples

    examples, _ = run_examples(tasks)
    ids = np.asarray(examples["example_id"].to_pylist(), dtype=object)
    if rule.uses_consensus:
        from soi.analysis.seeds import analyze_seeds, selection_table

        folder = stage1_dir.parent
        table = selection_table(analyze_seeds(folder, write=False).table)
        got = np.asarray(table["example_id"].to_pylist(), dtype=object)
        position = {x: i for i, x in enumerate(ids.tolist())}
        if len(position) != ids.size or got.size != ids.size or any(x not in position for x in got.tolist()):
            raise SoiError("the stage-1 seeds' consensus does not match the study's training data for this run "
                           "(settings changed?); use a new --out", path=folder)
        table = table.append_column("idx", pa.array([position[x] for x in got.tolist()], pa.int64()))
        source = folder
    else:
        path = stage1_dir / ANALYSIS_DIR / PER_EXAMPLE_FILE
        if not path.is_file():
            raise SoiError("no stage-1 analysis; run soi run again", path=path)
        table = pq.read_table(path)
        idx = table["idx"].to_numpy().astype(np.int64)
        if table.num_rows != ids.size or not np.array_equal(ids[idx], np.asarray(table["example_id"].to_pylist(),
                                                                                 dtype=object)):
            raise SoiError("the stage-1 analysis does not match the study's training data for this run "
                           "(settings changed?); use a new --out", path=path)
        source = stage1_dir
    try:
        return select(table, **rule.select_kwargs(), source_run=source)  # type: ignore[arg-type]
    except SoiError as exc:
        raise SoiError(f"two_stage rule {rule.name!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------- training
def _hyper(config: StudyConfig, ts: TwoStageSpec) -> dict[str, Any]:
    """Resolved stage-2 hyper-parameters (defaults from ``train``)."""
    t = config.train
    return {"epochs": ts.epochs, "lr": ts.lr if ts.lr is not None else t.lr,
            "batch_size": ts.batch_size if ts.batch_size is not None else t.batch_size,
            "warmup_ratio": ts.warmup_ratio if ts.warmup_ratio is not None else t.warmup_ratio,
            "weight_decay": t.weight_decay, "sampling": t.sampling, "temperature": t.temperature,
            "max_length": config.max_length, "recording": config.recording.model_dump()}


def _arm_fingerprint(stage1_fp: str, hyper: Mapping[str, Any], rule: SelectionRule, arm: str, seed: int,
                     stage1_seed: int, evals: Sequence[str]) -> str:
    blob = {"stage1": stage1_fp, "stage1_seed": stage1_seed, "hyper": dict(hyper), "rule": rule.model_dump(),
            "arm": arm, "seed": seed, "eval": list(evals)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ArmPlan:
    """One trained arm x seed: what it trains on (``train_tasks``, ``epochs``, ``max_steps``), from which stage-1
    weights (``stage1_dir``, ``heads``), its recorded ``unit``, the eval sets it reports and its result header."""

    stage1_dir: Path
    heads: Mapping[str, list[str]]
    train_tasks: Mapping[str, list[Any]]
    epochs: int
    max_steps: int | None
    unit: str
    evals: Sequence[str]
    header: Mapping[str, Any]
    arm: str


@dataclass
class TrainedArm:
    model: Any
    result: Any
    n_train: int
    resumed: bool


class TwoStageArms(StudyAdapter):
    """The engine adapter of the two-stage arms (:func:`soi.study.engine.run_one` per arm x seed: skip a finished
    arm of the same fingerprint, resume an unfinished one from its Trainer checkpoint, ``result.json`` last). The
    arms depend on the stage-1 selections, so :func:`run_two_stage` plans them (``runs`` is empty) and builds the
    summary itself."""

    kind = "two-stage"
    resumable = True

    def __init__(self, config: StudyConfig, data: Any, model_path: str, hyper: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.data, self.model_path, self.hyper = data, model_path, dict(hyper)

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use."""
        return load_tokenizer(self.model_path)

    def runs(self) -> list[RunJob]:
        return []

    def fingerprint(self, job: RunJob) -> str:
        return str(job.spec.header["fingerprint"])

    def can_resume(self, job: RunJob, run_dir: Path) -> bool:
        from soi.train.hf import last_checkpoint

        return last_checkpoint(run_dir / TRAINER_DIR) is not None

    def train_one(self, job: RunJob, run_dir: Path, *, resume: bool) -> TrainedArm:
        """Train the arm from the stage-1 weights through :func:`soi.train.hf.train_run`.

        ``max_steps`` (the ``full`` arm's fallback on all stage-1 rows) ends training and the LR schedule after
        that many optimizer steps, as ``S`` for the other arms; the Trainer closes a last recorded checkpoint there
        (a train-pass one fills the rows not trained on since the previous checkpoint with an eval-mode pass)."""
        from soi.store import RunMeta
        from soi.train import run_examples
        from soi.train.hf import train_run

        config, plan, hyper, rec = self.config, job.spec, self.hyper, self.config.recording
        examples, _ = run_examples(plan.train_tasks)
        model = load_weights(plan.stage1_dir, self.model_path, {t: len(v) for t, v in plan.heads.items()},
                             task_labels=plan.heads, freeze_embeddings=config.train.freeze_embeddings)
        res = train_run(model, self.tokenizer, plan.train_tasks, run_dir=run_dir, output_dir=run_dir / TRAINER_DIR,
                        epochs=plan.epochs, batch_size=hyper["batch_size"], lr=hyper["lr"],
                        weight_decay=hyper["weight_decay"], warmup_ratio=hyper["warmup_ratio"],
                        max_length=hyper["max_length"], seed=job.seed, sampling=hyper["sampling"],
                        temperature=hyper["temperature"], record_mode=rec.mode, keep_logits=rec.keep_logits,
                        max_steps=plan.max_steps, model_name=config.model, setting="two-stage", resume=resume,
                        extra={"study": config.name, **plan.header}, progress=self.progress)
        if plan.unit != "epoch":  # the full arm's one pass over S * batch rows: a checkpoint after S steps
            meta = RunMeta.load(run_dir)
            meta.checkpoint_unit = plan.unit  # type: ignore[assignment]
            meta.save(run_dir)
        return TrainedArm(model, res, int(examples.num_rows), resume)

    def evaluate(self, job: RunJob, trained: TrainedArm, run_dir: Path) -> dict[str, Any]:
        plan, res = job.spec, trained.result
        spec = self.config.run(plan.header["from_run"])
        evaluated, skipped = evaluate_all(trained.model, self.tokenizer, self.config, self.data, plan.heads, spec,
                                          run_dir)
        return {**plan.header, "arm": plan.arm, "seed": job.seed, "n_train": trained.n_train,
                "steps": res.steps, "steps_per_task": res.trainer.task_sampler.steps_per_task(res.steps),
                "epoch_loss": [float(x) for x in res.epoch_loss], "hyper": dict(self.hyper),
                "eval": {k: v for k, v in evaluated.items() if k in plan.evals}, "eval_skipped": skipped,
                "resumed": trained.resumed}

    def summarise(self, results: Mapping[Any, Mapping[str, Any]], analyses: Mapping[Any, Any],
                  comparisons: Sequence[Any]) -> dict[str, Any]:
        raise NotImplementedError("run_two_stage builds the two-stage summary")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- driver
def run_two_stage(config: StudyConfig, out: str | Path, data: Any = None, model_path: str | None = None, *,
                  progress: bool = True, console: Any = None) -> dict[str, Any]:
    """Run (or resume) every two-stage experiment of ``config`` into ``out/two_stage``; return
    ``summary["two_stage"]`` (see ``docs/two_stage.md``). Needs the stage-1 runs (with weights and analysis)."""
    ts = config.two_stage
    if ts is None:
        raise SoiError("the study has no two_stage section")
    from rich.console import Console

    from soi.analysis.per_example import SUMMARY_FILE as ANALYSIS_SUMMARY
    from soi.analysis.per_example import analyze_run
    from soi.model import resolve_model
    from soi.selection import save
    from soi.store.meta import ANALYSIS_DIR, dynamics_dir
    from soi.study.classification import StudyData

    out = Path(out)
    console = console if console is not None else Console(highlight=False, quiet=not progress)
    data = data if data is not None else StudyData(config)
    model_path = model_path if model_path is not None else resolve_model(config.model)
    hyper = _hyper(config, ts)
    bs = int(hyper["batch_size"])
    seeds = ts.stage2_seeds(config.seeds)
    trainer = TwoStageArms(config, data, model_path, hyper)
    trainer.layout, trainer.progress, trainer.console = StudyLayout(out), progress, console
    experiments = []
    n_jobs = len(ts.from_runs) * len(ts.rules) * len(seeds) * len(TRAINED_ARMS)
    job = 0
    for from_run in ts.from_runs:
        spec = config.run(from_run)
        tasks = stage1_tasks(config, data, from_run)
        n_stage1 = sum(len(s) for ss in tasks.values() for s in ss)
        evals = ts.eval_keys(config, from_run)
        for rule in ts.rules:
            exp_dir = experiment_dir_of(out, from_run, rule.name)
            arms: dict[str, dict[str, Any]] = {a: {"results": [], "dirs": [], "n_train": []} for a in TRAINED_ARMS}
            stage1: dict[int, dict[str, Any]] = {}
            steps_values = []
            for seed in seeds:
                s1 = ts.start_seed(seed)
                s1_dir = run_dir_of(out, from_run, s1)
                if not (s1_dir / RESULT_FILE).is_file():
                    raise SoiError(f"stage-1 run {from_run!r} seed {s1} is not finished", path=s1_dir)
                if s1 not in stage1:
                    stage1[s1] = json.loads((s1_dir / RESULT_FILE).read_text(encoding="utf-8"))
                s1_result = stage1[s1]
                sel = select_subset(config, tasks, s1_dir, rule)
                if len(sel) == 0:
                    raise SoiError(f"two_stage rule {rule.name!r} selects no example of run {from_run!r} seed {s1}; "
                                   "loosen the rule", path=s1_dir)
                sel_dir = exp_dir / "selection" / f"stage1-seed-{s1}"
                if not (sel_dir / "selection.json").is_file():
                    save(sel, sel_dir)
                soi_idx = sel.rows["idx"].to_numpy().astype(np.int64)
                counts = per_task_counts(tasks, soi_idx)
                steps = stage2_steps(counts, bs, ts.epochs)
                total_steps = sum(steps.values())
                steps_values.append(total_steps)
                full_idx, full_epochs = full_plan(tasks, steps, bs, seed)
                plans = {
                    "soi": (subset_tasks(tasks, soi_idx), ts.epochs, None, "epoch"),
                    "random": (subset_tasks(tasks, random_subset(tasks, counts, seed)), ts.epochs, None, "epoch"),
                    "full": ((subset_tasks(tasks, full_idx), 1, None, "step") if full_idx is not None
                             else (dict(tasks), full_epochs, total_steps, "epoch")),
                }
                for arm in TRAINED_ARMS:
                    job += 1
                    adir = arm_dir_of(out, from_run, rule.name, arm, seed)
                    fp = _arm_fingerprint(s1_result["fingerprint"], hyper, rule, arm, seed, s1, evals)
                    name = f"[{job}/{n_jobs}] two-stage {from_run}/{rule.name}: {arm} arm, seed {seed}"
                    train_tasks, epochs, max_steps, unit = plans[arm]
                    n_rows = sum(len(s) for ss in train_tasks.values() for s in ss)
                    header = {"study": config.name, "experiment": f"{from_run}/{rule.name}", "from_run": from_run,
                              "rule": rule.name, "stage1_seed": s1, "stage1_dir": str(s1_dir), "fingerprint": fp}
                    plan = ArmPlan(s1_dir, s1_result["tasks"], train_tasks, epochs, max_steps, unit, evals, header,
                                   arm)
                    result = run_one(trainer, RunJob((from_run, rule.name, arm, seed), f"{from_run}/{rule.name}/{arm}",
                                                     seed, adir, f"{name} ({n_rows} examples, {total_steps} steps)",
                                                     spec=plan))
                    stale = not newer(adir / ANALYSIS_DIR / ANALYSIS_SUMMARY, adir / RESULT_FILE)
                    # a full-data fallback shorter than one epoch has no checkpoint to analyse
                    if stale and any(dynamics_dir(adir).glob("ckpt-*.parquet")):
                        analyze_run(adir)
                    arms[arm]["results"].append(result)
                    arms[arm]["dirs"].append(str(adir))
                    arms[arm]["n_train"].append(int(result["n_train"]))
            experiments.append(_experiment_summary(config, ts, from_run, spec, rule, seeds, arms, stage1, evals,
                                                   steps_values, n_stage1, out))
    summary = {"experiments": experiments}
    write_tables(summary, out / TWO_STAGE_DIR)
    if progress:
        print_two_stage(summary, console)
    return summary


def _eval_kind(spec: Any, key: str) -> str:
    return "in-distribution" if key in spec.train else "ood"


def _experiment_summary(config: StudyConfig, ts: TwoStageSpec, from_run: str, spec: Any, rule: SelectionRule,
                        seeds: list[int], arms: dict[str, dict[str, Any]], stage1: dict[int, dict[str, Any]],
                        evals: list[str], steps_values: list[int], n_stage1: int, out: Path) -> dict[str, Any]:
    """One ``experiments[]`` entry (schema in ``docs/two_stage.md``)."""
    starts = [ts.start_seed(s) for s in seeds]

    def metric_of(result: Mapping[str, Any], key: str, metric: str) -> float:
        if key not in result["eval"]:
            raise SoiError(f"two_stage: eval set {key!r} was not evaluated for run {from_run!r} "
                           f"(skipped: {result.get('eval_skipped')})")
        return float(result["eval"][key][metric])

    per_seed: dict[str, dict[str, dict[str, list[float]]]] = {}
    for arm in TRAINED_ARMS:
        per_seed[arm] = {k: {m: [metric_of(r, k, m) for r in arms[arm]["results"]] for m in METRICS} for k in evals}
    per_seed["stage1"] = {k: {m: [metric_of(stage1[s], k, m) for s in starts] for m in METRICS} for k in evals}
    distinct = list(dict.fromkeys(starts))
    out_arms: dict[str, Any] = {}
    for arm in ARMS:
        kind = arm
        if arm == "stage1":
            values = {k: {m: [metric_of(stage1[s], k, m) for s in distinct] for m in METRICS} for k in evals}
            n_train, dirs, n_values = n_stage1, [str(run_dir_of(out, from_run, s)) for s in distinct], [n_stage1]
        else:
            values = per_seed[arm]
            n_values = arms[arm]["n_train"]
            n_train, dirs = round(float(np.mean(n_values))), arms[arm]["dirs"]
        out_arms[arm] = {"kind": kind, "n_train": n_train, "n_train_values": n_values, "dirs": dirs,
                         "eval": {k: {"kind": _eval_kind(spec, k), **{m: seed_stats(values[k][m]) for m in METRICS}}
                                  for k in evals}}
    differences = [{"arm": "soi", "control": c, "eval": k, "metric": m,
                    **paired_difference(per_seed["soi"][k][m], per_seed[c][k][m])}
                   for c in CONTROLS for k in evals for m in METRICS]
    notes = ["95% CIs: Student t-interval over seeds (n - 1 df); differences paired by stage-2 seed"]
    if len(seeds) < 2:
        notes.append("one stage-2 seed: no confidence intervals (ci95 is null)")
    if len(distinct) < 2:
        notes.append(f"every stage-2 seed starts from stage-1 seed {distinct[0]}: the stage1 arm is one model, "
                     "so intervals reflect stage-2 variation only")
    steps = round(float(np.mean(steps_values)))
    return {"name": f"{from_run}/{rule.name}", "from_run": from_run, "rule": rule.describe(),
            "rule_name": rule.name, "stage2_epochs": ts.epochs, "stage2_steps": steps,
            "stage2_steps_values": steps_values, "seeds": list(seeds), "stage1_seeds": starts,
            "arms": out_arms, "differences": differences, "notes": notes}


# ---------------------------------------------------------------------------------------------- tables
def result_rows(two_stage: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per experiment x arm x eval set x metric."""
    rows = []
    for exp in two_stage["experiments"]:
        for arm, a in exp["arms"].items():
            for key, ev in a["eval"].items():
                for m in METRICS:
                    s = ev[m]
                    ci = s["ci95"] or [None, None]
                    rows.append({"experiment": exp["name"], "from_run": exp["from_run"], "rule": exp["rule"],
                                 "arm": arm, "n_train": a["n_train"], "stage2_steps": exp["stage2_steps"],
                                 "eval": key, "eval_kind": ev["kind"], "metric": m, "mean": s["mean"],
                                 "std": s["std"], "ci95_lo": ci[0], "ci95_hi": ci[1], "n_seeds": len(s["values"]),
                                 "values": ";".join(f"{v:.6g}" for v in s["values"])})
    return rows


def difference_rows(two_stage: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per experiment x control x eval set x metric: the paired difference ``soi - control``."""
    rows = []
    for exp in two_stage["experiments"]:
        for d in exp["differences"]:
            ci = d["ci95"] or [None, None]
            rows.append({"experiment": exp["name"], "arm": d["arm"], "control": d["control"], "eval": d["eval"],
                         "eval_kind": exp["arms"]["soi"]["eval"][d["eval"]]["kind"], "metric": d["metric"],
                         "mean": d["mean"], "ci95_lo": ci[0], "ci95_hi": ci[1], "n_seeds": len(d["values"]),
                         "values": ";".join(f"{v:.6g}" for v in d["values"])})
    return rows


def _ci(s: Mapping[str, Any], scale: float = 100.0, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(scale * s["mean"])
    if s["ci95"] is None:
        return text + " (1 seed)"
    lo, hi = s["ci95"]
    return f"{text} [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"


def markdown(two_stage: Mapping[str, Any]) -> str:
    """Markdown tables (accuracy / macro-F1 in %, seed mean [95% CI]) of every experiment."""
    lines = []
    for exp in two_stage["experiments"]:
        lines += [f"### {exp['name']}: {exp['rule']}", "",
                  f"stage 2: {exp['stage2_epochs']} epochs over the selection = {exp['stage2_steps']} optimizer "
                  f"steps per arm; seeds {exp['seeds']}", "",
                  "| arm | n train | eval set | kind | accuracy % | macro-F1 % |", "|---|---:|---|---|---:|---:|"]
        for arm, a in exp["arms"].items():
            for key, ev in a["eval"].items():
                lines.append(f"| {arm} | {a['n_train']} | {key} | {ev['kind']} | {_ci(ev['accuracy'])} | "
                             f"{_ci(ev['macro_f1'])} |")
        lines += ["", "| soi minus | eval set | accuracy (pp) | macro-F1 (pp) |", "|---|---|---:|---:|"]
        diffs = {(d["control"], d["eval"], d["metric"]): d for d in exp["differences"]}
        for control in CONTROLS:
            for key in exp["arms"]["soi"]["eval"]:
                acc, f1 = diffs[control, key, "accuracy"], diffs[control, key, "macro_f1"]
                lines.append(f"| {control} | {key} | {_ci(acc, signed=True)} | {_ci(f1, signed=True)} |")
        lines += ["", *(f"*{n}*" for n in exp["notes"]), ""]
    return "\n".join(lines)


def write_tables(two_stage: Mapping[str, Any], folder: str | Path) -> dict[str, Path]:
    """``results.csv`` (arms), ``differences.csv`` (paired differences) and ``results.md`` under ``folder``."""
    folder = Path(folder)
    paths = {"results": folder / RESULTS_CSV, "differences": folder / DIFFERENCES_CSV, "markdown": folder / RESULTS_MD}
    write_text(paths["results"], csv_text(result_rows(two_stage)))
    write_text(paths["differences"], csv_text(difference_rows(two_stage)))
    write_text(paths["markdown"], markdown(two_stage))
    return paths


def print_two_stage(two_stage: Mapping[str, Any], console: Any) -> None:
    """Rich tables: every arm's accuracy / macro-F1 per eval set, and the paired differences soi - control."""
    from rich.markup import escape
    from rich.table import Table

    for exp in two_stage["experiments"]:
        table = Table(title=escape(f"two-stage {exp['name']} ({exp['rule']}; {exp['stage2_steps']} stage-2 steps, "
                                   f"seeds {exp['seeds']}): mean [95% CI], %"))
        for col in ("arm", "n train", "eval set", "kind", "accuracy", "macro-F1"):
            table.add_column(col, justify="right" if col in ("n train", "accuracy", "macro-F1") else "left")
        for arm, a in exp["arms"].items():
            for key, ev in a["eval"].items():
                table.add_row(arm, str(a["n_train"]), key, ev["kind"], _ci(ev["accuracy"]), _ci(ev["macro_f1"]))
        console.print(table)
        table = Table(title=escape(f"two-stage {exp['name']}: soi minus control, paired by seed (pp, mean [95% CI])"))
        for col in ("control", "eval set", "accuracy", "macro-F1"):
            table.add_column(col, justify="right" if col in ("accuracy", "macro-F1") else "left")
        diffs = {(d["control"], d["eval"], d["metric"]): d for d in exp["differences"]}
        for control in CONTROLS:
            for key in exp["arms"]["soi"]["eval"]:
                table.add_row(control, key, _ci(diffs[control, key, "accuracy"], signed=True),
                              _ci(diffs[control, key, "macro_f1"], signed=True))
        console.print(table)
        for note in exp["notes"]:
            console.print(escape(f"  {note}"))


__all__ = ["TWO_STAGE_DIR", "WEIGHTS_FILE", "ArmPlan", "TrainedArm", "TwoStageArms", "arm_dir_of", "difference_rows",
           "experiment_dir_of", "full_plan", "load_weights", "markdown", "paired_difference", "per_task_counts",
           "print_two_stage", "random_subset", "result_rows", "run_two_stage", "save_weights", "seed_stats",
           "select_subset", "stage1_tasks", "stage2_steps", "subset_tasks", "t_interval", "write_tables"]
