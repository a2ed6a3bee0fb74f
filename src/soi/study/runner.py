"""Classification studies on the study engine: train every run x seed with dynamics recording, evaluate, analyse,
compare, summarise.

:class:`ClassificationStudy` is the :class:`soi.study.engine.StudyAdapter` of classification studies (the engine
owns the run protocol: fingerprints, skip / resume, ``result.json`` last, cached analyses and comparisons,
``summary.json`` last); :func:`run_study` runs one. Layout under ``out`` (:class:`soi.store.layout.StudyLayout`)::

    config.json                         # the validated study config
    runs/<run>/seed-<s>/                # a soi run directory (run.json, examples.parquet, dynamics/, analysis/)
        eval/<key>.parquet              # per-example test-set predictions of every eval set
        trainer/checkpoint-N/           # the Trainer's last checkpoint while the run is unfinished
        result.json                     # eval metrics; written last: its presence marks the run finished
    compare/<a>__vs__<b>/               # all seeds of a vs all seeds of b (soi.analysis.compare.compare_runs)
    summary.json                        # seed means/stds of eval metrics, SOI shares, seed-calibrated comparisons
    summary.md, tables/*.csv            # the same as Markdown / CSV, with the findings in words

Every run trains through :func:`soi.train.hf.train_run` (HF ``Trainer``). Re-running on the same ``out`` resumes:
runs with a ``result.json`` are not retrained (a run whose settings changed since is an error), an unfinished run
of the same settings continues from its last Trainer checkpoint, any other unfinished run directory is cleared and
trained again. Under ``accelerate launch`` / ``torchrun`` every process trains each run (DDP) and the main process
evaluates, analyses and writes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from soi.config.study import StudyConfig
from soi.errors import SoiError
from soi.store.layout import CONFIG_FILE, EVAL_DIR, RESULT_FILE, SUMMARY_FILE, StudyLayout
from soi.study.classification import TRAINER_DIR, StudyData, eval_table, evaluate_all, load_tokenizer, run_dir_of
from soi.study.engine import (
    ComparisonJob,
    RunJob,
    StudyAdapter,
    fingerprint_of,
    foreign_seeds,
    mean_shares,
    mean_std,
    newer,
    prepare_out,
    run_study_with,
)

ENGINE = "hf-trainer"  # every run trains through soi.train.hf.train_run (part of the fingerprint)


def compare_dir_of(out: Path, a: str, b: str) -> Path:
    """``out/compare/<a>__vs__<b>``: the comparison of all seeds of run ``a`` with all seeds of run ``b``."""
    return StudyLayout(out).compare_dir(a, b)


def full_run_of(config: StudyConfig, run: str) -> str | None:
    """The unmatched run of a ``match_size`` run: same ``train`` datasets and ``n_train``, no ``match_size``
    (the first in YAML order), else None."""
    spec = config.run(run)
    for other in config.runs:
        if (other.match_size is None and other.name != run and set(other.train) == set(spec.train)
                and other.n_train == spec.n_train):
            return other.name
    return None


def study_comparisons(config: StudyConfig) -> list[Any]:
    """The comparisons a study runs: ``config.comparisons()`` and, without an explicit ``compare`` list, every
    ``match_size`` run against its unmatched run (:func:`full_run_of`; the same mixture with more data)."""
    from soi.config.study import CompareSpec

    comps = config.comparisons()
    if config.compare is None:
        have = {(c.a, c.b) for c in comps}
        for spec in config.runs:
            full = full_run_of(config, spec.name) if spec.match_size is not None else None
            if full is not None and (spec.name, full) not in have:
                comps.append(CompareSpec(a=spec.name, b=full))
    return comps


_Data = StudyData  # the former name (tests/test_hub.py imports it)


def yaml_field(config: StudyConfig, run: str, field: str) -> str:
    """``runs[<i>].<field>``: the YAML path of ``field`` of run ``run`` (``i``: its index in the YAML's runs
    list, where a k grid is one entry)."""
    spec = config.run(run)
    entries = list(dict.fromkeys(("grid", r.family) if r.family else ("run", r.name) for r in config.runs))
    return f"runs[{entries.index(('grid', spec.family) if spec.family else ('run', spec.name))}].{field}"


def proportional_sizes(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over the datasets in proportion to ``sizes`` (largest remainder method, ties in order):
    the counts sum to ``total`` exactly and none exceeds its dataset's size (``total <= sum(sizes)``)."""
    n = np.asarray(list(sizes.values()), dtype=np.int64)
    if total > int(n.sum()) or total < 0:
        raise ValueError(f"total {total} outside [0, {int(n.sum())}]")
    exact = n * total / max(int(n.sum()), 1)
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return dict(zip(sizes, (int(x) for x in out), strict=True))


def train_sizes(config: StudyConfig, data: StudyData, run: str) -> dict[str, int]:
    """Training rows per dataset key of ``run``: ``runs[].n_train`` / ``datasets.<key>.n_train`` subsamples, or,
    with ``match_size: <other>``, those rows subsampled in proportion (:func:`proportional_sizes`) to the other
    run's total (seeded with ``data_seed`` and nested: the matched rows are a subset of the unmatched ones)."""
    spec = config.run(run)
    own = {key: len(data.get(key, "train", spec.n_train.get(key))) for key in spec.train}
    if spec.match_size is None:
        return own
    target = sum(train_sizes(config, data, spec.match_size).values())
    where = yaml_field(config, run, "match_size")
    if target > sum(own.values()):
        parts = ", ".join(f"{k}: {v}" for k, v in own.items())
        raise SoiError(f"{where}: run {spec.match_size!r} trains on {target} examples, more than the "
                       f"{sum(own.values())} of run {run!r}'s mixture ({parts})")
    sizes = proportional_sizes(own, target)
    if empty := [k for k, v in sizes.items() if v == 0]:
        raise SoiError(f"{where}: matching run {spec.match_size!r}'s {target} examples leaves no example of "
                       f"{', '.join(empty)} in run {run!r}")
    return sizes


def run_fingerprint(config: StudyConfig, run: str, seed: int, sizes: Mapping[str, int] | None = None) -> str:
    """Hash of everything that determines one run's training and evaluation."""
    spec = config.run(run)
    keys = sorted(set(spec.train) | set(spec.eval) | set(config.eval.ood))
    blob = {"engine": ENGINE, "model": config.model, "data_dir": config.data_dir, "data_seed": config.data_seed,
            "max_length": config.max_length, "train": config.train.model_dump(exclude={"report_to"}),
            "recording": config.recording.model_dump(), "run": spec.model_dump(), "seed": seed,
            "datasets": {k: config.datasets[k].model_dump() for k in keys}}
    if spec.match_size is not None:
        blob["sizes"] = dict(sizes or {})  # a matched run's rows follow its target run's size
    if config.two_stage is not None and config.two_stage.saves_weights(run, seed, config.seeds):
        blob["weights"] = True  # a two-stage start: a run trained without keeping its weights is not reusable
    return fingerprint_of(blob)


def tracker_callback(trackers: Any, run_dir: Path) -> Any:
    """A ``TrainerCallback`` sending each newly closed soi checkpoint's metrics to ``trackers``
    (:class:`soi.record.trackers.AccelerateTrackers`) at its global step."""
    from transformers import TrainerCallback

    from soi.record.trackers import completed_checkpoints

    class Callback(TrainerCallback):
        logged = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.logged = completed_checkpoints(run_dir)  # a resumed run: those are logged already

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            n = completed_checkpoints(run_dir)
            if n > self.logged:
                trackers.on_checkpoint(n - 1, int(state.global_step))
            self.logged = n

        on_train_end = on_step_end

    return Callback()


def start_distributed() -> None:
    """Join the process group when launched on several processes (``WORLD_SIZE`` > 1: ``accelerate launch``,
    ``torchrun``) through accelerate's ``PartialState`` (the state the Trainer then shares); a no-op otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()


def world_size() -> int:
    """The number of processes of a ``torch.distributed`` job (1 when alone)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 of a ``torch.distributed`` job (``accelerate launch`` / ``torchrun``), or a single process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def broadcast(value: Any) -> Any:
    """The main process's ``value`` in every process of a ``torch.distributed`` job (itself when alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """``torch.distributed.barrier()`` when several processes run; a no-op otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def study_tasks(config: StudyConfig, data: StudyData, run: str) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Run ``run``'s training data ``{task (head): [splits]}`` in YAML order and its rows per dataset key."""
    spec = config.run(run)
    sizes = train_sizes(config, data, run)
    tasks: dict[str, list[Any]] = {}
    empty = []
    for key in spec.train:
        n = sizes[key] if spec.match_size is not None else spec.n_train.get(key)
        split = data.get(key, "train", n)
        if len(split) == 0:
            empty.append(key)
        tasks.setdefault(config.datasets[key].head, []).append(split)
    if empty:  # never train (or mark finished) a run with no examples of a dataset
        raise SoiError(f"run {run!r}: no training examples of {', '.join(empty)} (check n_train and the label "
                       "filter)")
    return tasks, sizes


def summarise(config: StudyConfig, out: Path, results: dict[str, dict[int, dict[str, Any]]],
               analyses: dict[str, dict[int, dict[str, Any]]], comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for spec in config.runs:
        per_seed = [results[spec.name][s] for s in config.seeds]
        evals: dict[str, Any] = {}
        for key in per_seed[0]["eval"]:
            rows = [r["eval"][key] for r in per_seed if key in r["eval"]]
            first = rows[0]
            evals[key] = {"dataset": first["dataset"], "split": first["split"], "task": first["task"],
                          "kind": first["kind"], "n": first["n"],
                          "accuracy": mean_std([r["accuracy"] for r in rows]),
                          "macro_f1": mean_std([r["macro_f1"] for r in rows]),
                          "languages": {lang: {"n": m["n"],
                                               "accuracy": mean_std([r["languages"][lang]["accuracy"] for r in rows]),
                                               "macro_f1": mean_std([r["languages"][lang]["macro_f1"] for r in rows])}
                                        for lang, m in first["languages"].items()}}
        sums = [analyses[spec.name][s] for s in config.seeds]
        shares = mean_shares(sums)
        runs[spec.name] = {"setting": spec.setting, "train": list(spec.train), "k": spec.k, "family": spec.family,
                           "n_train": results[spec.name][config.seeds[0]]["n_train"],
                           "train_sizes": results[spec.name][config.seeds[0]].get("train_sizes"),
                           "match_size": spec.match_size, "seeds": list(config.seeds),
                           "dirs": [str(run_dir_of(out, spec.name, s)) for s in config.seeds],
                           "eval": evals, "soi_shares": shares,
                           "train_accuracy_final": mean_std([s["groups"]["all"]["all"]["final_accuracy"]
                                                              for s in sums])}
    summary = {"study": config.name, "model": config.model, "seeds": list(config.seeds),
               "data_seed": config.data_seed, "out": str(out), "runs": runs, "comparisons": comparisons}
    matched = _data_matched(config, runs, comparisons)
    if matched:
        summary["data_matched"] = matched
    from soi.study.tables import findings

    summary["findings"] = findings(summary)
    transfer = _transfer(config, results)
    if transfer:
        summary["transfer"] = transfer
        summary["transfer_stats"] = transfer_stats(config, out, results)
    return summary


def k_families(config: StudyConfig) -> dict[str, tuple[Any, list[Any]]]:
    """``{family: (its k = 0 run, all its runs in grid order)}`` of every ``k_grid`` family with a k = 0 run (gains
    need one)."""
    families: dict[str, list[Any]] = {}
    for spec in config.runs:
        if spec.family is not None:
            families.setdefault(spec.family, []).append(spec)
    return {f: (next(s for s in specs if s.k == 0), specs) for f, specs in families.items()
            if any(s.k == 0 for s in specs)}


def family_languages(config: StudyConfig, results: Mapping[str, Mapping[int, Mapping[str, Any]]], base: Any,
                     specs: Sequence[Any]) -> tuple[dict[tuple[str, str], str], list[str], list[str]]:
    """The transfer curves of a ``k_grid`` family: ``{(eval key, language): curve name}`` (the language, or
    ``<key>/<language>`` when the k = 0 run evaluates the language on several eval sets), and the seen / unseen
    curve names. Seen: the languages of the datasets that get k examples; unseen: those of the family's other
    eval sets that no run trains on; the fixed set's language is in neither group."""
    k_keys = {d for s in specs if s.k for d in s.train if d not in base.train}
    pairs = [(key, lang) for key, ev in results[base.name][config.seeds[0]]["eval"].items()
             for lang in ev["languages"]]
    twice = {lang for _, lang in pairs if sum(lang == x for _, x in pairs) > 1}
    names: dict[tuple[str, str], str] = {}
    seen: set[str] = set()
    unseen: set[str] = set()
    for spec in specs:
        for seed in config.seeds:
            for key, ev in results[spec.name][seed]["eval"].items():
                for lang in ev["languages"]:
                    name = names.setdefault((key, lang), f"{key}/{lang}" if lang in twice else lang)
                    if key in k_keys:
                        seen.add(name)
                    elif key not in base.train:
                        unseen.add(name)
    return names, sorted(seen), sorted(unseen - seen)


def _transfer(config: StudyConfig, results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Cross-lingual transfer of every ``k_grid`` family (metric: accuracy per eval language, seed means;
    :func:`soi.gen.transfer.transfer_summary`; curves and groups from :func:`family_languages`)."""
    from soi.gen.transfer import transfer_summary

    out: dict[str, Any] = {}
    for family, (base, specs) in k_families(config).items():
        names, seen, unseen = family_languages(config, results, base, specs)
        scores: dict[str, dict[int, list[float]]] = {}
        for spec in specs:
            for seed in config.seeds:
                for key, ev in results[spec.name][seed]["eval"].items():
                    for lang, m in ev["languages"].items():
                        scores.setdefault(names[key, lang], {}).setdefault(int(spec.k or 0), []).append(m["accuracy"])
        out[family] = transfer_summary(scores, seen=seen, unseen=unseen, metric="accuracy")
    return out


def eval_items(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(example_id, language, correct)`` of one ``eval/<key>.parquet`` (test-set predictions of one run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from soi._arrow import to_numpy

    try:
        table = pq.read_table(path, columns=["example_id", "language", "correct"])
    except (OSError, pa.ArrowException) as exc:
        raise SoiError(f"cannot read the eval predictions ({exc})", path=path) from None
    return (np.asarray(table["example_id"].to_pylist(), dtype=str), np.asarray(table["language"].to_pylist(),
                                                                               dtype=str),
            to_numpy(table["correct"]).astype(np.float64))


def transfer_stats(config: StudyConfig, out: Path, results: Mapping[str, Mapping[int, Mapping[str, Any]]], *,
                   n_boot: int = 2000, level: float = 0.95) -> dict[str, Any]:
    """``summary["transfer_stats"]``: per ``k_grid`` family, :func:`soi.analysis.transfer.transfer_statistics` of
    the per-item test-set correctness of every k and seed (``eval/<key>.parquet`` of the family's k = 0 run's eval
    sets, aligned on example ids): accuracy gains over k = 0 with paired bootstrap intervals over items and seeds,
    seen / unseen means and their gap, the gap's slope, the seen-unseen correlation, the plateau."""
    from soi.analysis.transfer import align_items, transfer_statistics

    stats: dict[str, Any] = {}
    for family, (base, specs) in k_families(config).items():
        names, seen, unseen = family_languages(config, results, base, specs)
        keys = list(results[base.name][config.seeds[0]]["eval"])
        by_k = {int(s.k or 0): s for s in specs}
        ks, seeds = sorted(by_k), list(config.seeds)
        runs = {}
        for k in ks:
            for seed in seeds:
                parts = []
                for key in keys:
                    ids, langs, correct = eval_items(StudyLayout.eval_file(run_dir_of(out, by_k[k].name, seed), key))
                    curve = np.asarray([names[key, x] for x in langs.tolist()], dtype=str)
                    parts.append((ids, curve, correct))
                runs[k, seed] = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
        arrays = align_items(runs, ks, seeds, what=f"k_grid family {family!r}: ")
        stats[family] = transfer_statistics(arrays, ks, seen=[x for x in seen if x in arrays],
                                            unseen=[x for x in unseen if x in arrays], metric="accuracy",
                                            n_boot=n_boot, seed=int(config.data_seed), level=level)
    return stats


def comparison_entry(stats: dict[str, Any], a: str, b: str, path: Path, *, top: int = 5) -> dict[str, Any]:
    """The ``summary.json`` digest of one seed-folder comparison's ``stats.json`` (see docs/studies.md): per group
    the training-dynamics McNemar, the seeds' agreement, the reseeding null (overall test, the ``top`` cells
    with the largest excess, the significant ones) and the share changes; per eval set the paired test-set
    statistics."""
    groups = []
    for g in stats["groups"]:
        changes = sorted(g["share_change"].items(), key=lambda kv: -abs(kv[1]["observed"]))
        null = g.get("seed_null") or {}
        overall = null.get("overall") or {}
        cells = sorted(null.get("cells") or [], key=lambda c: -abs(c["excess"]))
        groups.append({
            "key": g["key"], "group": g["group"], "n_shared": g["n_shared"],
            "accuracy_a": g["accuracy_a"], "accuracy_b": g["accuracy_b"], "data": "training dynamics",
            "mcnemar_p": g["mcnemar"]["p_value"], "mcnemar_method": g["mcnemar"]["method"],
            "stability": {side: {"agreement": st.get("agreement"), "kappa": st.get("kappa")}
                          for side, st in (g.get("stability") or {}).items()},
            "seed_null": {"p_value": overall.get("p_value"), "statistic": overall.get("statistic"),
                          "method": overall.get("method"), "significant": bool(overall.get("significant")),
                          "note": null.get("note")},
            "excess_transitions": [{k: c.get(k) for k in ("from", "to", "observed", "null", "excess", "lo", "hi",
                                                           "q_value", "significant")}
                                   for c in cells[:top] if c["excess"] != 0],
            "significant_transitions": [{k: c.get(k) for k in ("from", "to", "excess", "lo", "hi", "q_value")}
                                        for c in cells if c.get("significant")],
            "biggest_share_changes": [
                {"category": c, "change": v["observed"], "lo": v["lo"], "hi": v["hi"],
                 "significant": v["significant"]} for c, v in changes[:3] if v["observed"] != 0]})
    test_set = {}
    for key, t in (stats.get("test_set") or {}).items():
        if "difference" not in t:
            test_set[key] = {"data": "test set", "n_items": t["n_items"], "note": t.get("note")}
            continue
        d, mc = t["difference"], t["mcnemar"]
        test_set[key] = {"data": "test set", "n_items": t["n_items"], "accuracy_a": t["accuracy_a"]["mean"],
                         "accuracy_b": t["accuracy_b"]["mean"], "difference": d["observed"], "lo": d["lo"],
                         "hi": d["hi"], "level": d["level"], "significant": d["significant"],
                         "p_value": d.get("p_value"), "test": d.get("test"), "ci_over": d.get("ci_over"),
                         "mcnemar_p": mc["combined"]["p_value"],
                         "mcnemar_p_per_seed": [m["p_value"] for m in mc["per_seed"]], "note": t.get("note")}
    run_a, run_b = stats.get("run_a") or {}, stats.get("run_b") or {}
    return {"a": a, "b": b, "seed": None, "dir": str(path),
            "seeds": {"a": run_a.get("seeds"), "b": run_b.get("seeds")}, "n_shared": stats["n_shared"],
            "n_only_a": stats["n_only_a"], "n_only_b": stats["n_only_b"], "notes": list(stats.get("notes") or []),
            "groups": groups, "test_set": test_set}


def _data_matched(config: StudyConfig, runs: dict[str, Any], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ``match_size`` run M (target T, unmatched run F): the pooling effect at equal data (T -> M), the
    effect of more data (M -> F) and both (T -> F) on every test set the pair shares (seed-mean accuracy
    differences; CIs and p-values where the pair was compared)."""
    by_pair = {(c["a"], c["b"]): c for c in comparisons}
    out = []
    for spec in config.runs:
        if spec.match_size is None:
            continue
        target, full = spec.match_size, full_run_of(config, spec.name)
        entry: dict[str, Any] = {"run": spec.name, "target": target, "full": full,
                                 "n_train": {"target": runs[target]["n_train"], "matched": runs[spec.name]["n_train"],
                                             "full": runs[full]["n_train"] if full else None},
                                 "effects": []}
        for effect, (x, y) in (("pooling at equal data", (target, spec.name)), ("more data", (spec.name, full)),
                               ("pooling with more data", (target, full))):
            if y is None:
                continue
            comp = by_pair.get((x, y))
            for key in runs[x]["eval"]:
                if key not in runs[y]["eval"]:
                    continue
                acc_x, acc_y = runs[x]["eval"][key]["accuracy"]["mean"], runs[y]["eval"][key]["accuracy"]["mean"]
                row = {"effect": effect, "a": x, "b": y, "eval_set": key, "kind": runs[x]["eval"][key]["kind"],
                       "data": "test set", "accuracy_a": acc_x, "accuracy_b": acc_y, "difference": acc_y - acc_x,
                       "lo": None, "hi": None, "significant": None, "p_value": None, "mcnemar_p": None}
                ts = (comp or {}).get("test_set", {}).get(key)
                if ts is not None and "difference" in ts:
                    row |= {k: ts.get(k) for k in ("lo", "hi", "significant", "p_value", "mcnemar_p")}
                entry["effects"].append(row)
        out.append(entry)
    return out


@dataclass
class Trained:
    """What :meth:`ClassificationStudy.train_one` hands to ``evaluate``."""

    model: Any
    labels: dict[str, list[str]]
    sizes: dict[str, int]
    n_train: int
    result: Any
    resumed: bool


class ClassificationStudy(StudyAdapter):
    """The engine adapter of classification studies: one job per run x seed (``runs/<run>/seed-<s>``), trained
    through :func:`soi.train.hf.train_run` and resumable from its Trainer checkpoints (``<run dir>/trainer``)."""

    kind = "classification"
    resumable = True

    def __init__(self, config: StudyConfig) -> None:
        super().__init__(config)
        self.data = StudyData(config)
        self.matched: dict[str, dict[str, int]] = {}
        self.model_path = ""

    def prepare(self) -> None:
        from soi.model import resolve_model

        config = self.config
        # a comparison reads every seed-*/ of runs/<run>/: no seed outside the study's
        foreign_seeds(self.layout, [s.name for s in config.runs], config.seeds)
        # matched runs' sizes first: a match_size larger than its mixture is refused before anything is trained
        self.matched = {s.name: train_sizes(config, self.data, s.name) for s in config.runs
                        if s.match_size is not None}
        self.model_path = resolve_model(config.model)

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use."""
        return load_tokenizer(self.model_path)

    def runs(self) -> list[RunJob]:
        config = self.config
        todo = [(spec, seed) for spec in config.runs for seed in config.seeds]
        return [RunJob((spec.name, seed), spec.name, seed, self.layout.run_dir(spec.name, seed),
                       f"[{i}/{len(todo)}] {spec.name} ({spec.setting}: {', '.join(spec.train)}) seed {seed}",
                       spec=spec) for i, (spec, seed) in enumerate(todo, 1)]

    def fingerprint(self, job: RunJob) -> str:
        return run_fingerprint(self.config, job.run, job.seed, self.matched.get(job.run))

    def can_resume(self, job: RunJob, run_dir: Path) -> bool:
        from soi.train.hf import last_checkpoint

        return last_checkpoint(run_dir / TRAINER_DIR) is not None

    def train_one(self, job: RunJob, run_dir: Path, *, resume: bool | None) -> Trained:
        """Train the run (every process of a distributed launch; ``resume`` is the main process's decision,
        broadcast to the others, which pass ``None``)."""
        import torch

        from soi.train import run_examples
        from soi.train.hf import MultiHeadModel, train_run

        config, spec, seed = self.config, job.spec, job.seed
        resume = bool(broadcast(resume))
        tasks, sizes = study_tasks(config, self.data, job.run)
        examples, labels = run_examples(tasks)
        torch.manual_seed(seed)  # head initialisation
        model = MultiHeadModel.from_encoder(self.model_path, {t: len(v) for t, v in labels.items()},
                                            task_labels=labels, freeze_embeddings=config.train.freeze_embeddings)
        t, rec = config.train, config.recording
        trackers, callbacks = None, []
        if t.report_to and is_main_process():  # per-checkpoint SOI metrics to accelerate trackers, under trackers/
            from soi.record.trackers import AccelerateTrackers

            trackers = AccelerateTrackers(t.report_to, run_dir, project=f"{config.name}-{job.run}-seed{seed}",
                                          logging_dir=run_dir / "trackers",
                                          config={"study": config.name, "run": job.run, "seed": seed,
                                                  "model": config.model})
            callbacks.append(tracker_callback(trackers, run_dir))
        res = train_run(model, self.tokenizer, tasks, run_dir=run_dir, output_dir=run_dir / TRAINER_DIR,
                        epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                        warmup_ratio=t.warmup_ratio, max_length=config.max_length, seed=seed, sampling=t.sampling,
                        temperature=t.temperature, record_mode=rec.mode, every_steps=rec.every_steps,
                        keep_logits=rec.keep_logits, model_name=config.model, setting=spec.setting, resume=resume,
                        callbacks=callbacks, progress=self.progress,
                        extra={"study": config.name, "run": job.run, "train": list(spec.train), "k": spec.k})
        if trackers is not None:
            trackers.close()
        return Trained(model, labels, sizes, int(examples.num_rows), res, resume)

    def evaluate(self, job: RunJob, trained: Trained, run_dir: Path) -> dict[str, Any]:
        config, spec = self.config, job.spec
        evals, skipped = evaluate_all(trained.model, self.tokenizer, config, self.data, trained.labels, spec,
                                      run_dir)
        if config.two_stage is not None and config.two_stage.saves_weights(job.run, job.seed, config.seeds):
            from soi.study.two_stage import save_weights

            save_weights(trained.model, run_dir)  # stage 2 starts from these
        res = trained.result
        return {"study": config.name, "run": job.run, "setting": spec.setting, "seed": job.seed,
                "model": config.model, "train_datasets": list(spec.train), "train_sizes": trained.sizes,
                "match_size": spec.match_size, "tasks": trained.labels, "n_train": trained.n_train,
                "steps": res.steps, "epoch_loss": [float(x) for x in res.epoch_loss], "eval": evals,
                "eval_skipped": skipped, "engine": ENGINE, "resumed": trained.resumed}

    def comparisons(self) -> list[ComparisonJob]:
        return [ComparisonJob(c.a, c.b, tuple(c.group_by)) for c in study_comparisons(self.config)]

    def summarise(self, results: Mapping[Hashable, Mapping[str, Any]], analyses: Mapping[Hashable, Any],
                  comparisons: Sequence[tuple[ComparisonJob, dict[str, Any]]]) -> dict[str, Any]:
        config = self.config
        by_run = {s.name: {seed: dict(results[s.name, seed]) for seed in config.seeds} for s in config.runs}
        ana = {s.name: {seed: analyses[s.name, seed] for seed in config.seeds} for s in config.runs}
        comps = [comparison_entry(stats, c.a, c.b, self.layout.compare_dir(c.a, c.b)) for c, stats in comparisons]
        return summarise(config, self.layout.out, by_run, ana, comps)

    def write_outputs(self, summary: dict[str, Any]) -> None:
        if self.config.two_stage is not None:
            from soi.study.two_stage import run_two_stage

            summary["two_stage"] = run_two_stage(self.config, self.layout.out, self.data, self.model_path,
                                                 progress=self.progress, console=self.console)
        from soi.study.tables import write_tables

        write_tables(summary, self.layout.out)  # with tables/transfer_stats.csv, transfer_trend.csv

    def print_summary(self, summary: Mapping[str, Any]) -> None:
        print_summary(dict(summary), self.console)


def follow(adapter: ClassificationStudy, out: Path) -> None:
    """A non-main process of a distributed study: train every unfinished run with the main process (which
    decides skip / resume, evaluates and writes every file), nothing else."""
    from soi.study.engine import finished_result

    adapter.layout = StudyLayout(out)
    adapter.progress = False
    adapter.prepare()
    for job in adapter.runs():
        if finished_result(job, adapter.fingerprint(job)) is None:
            adapter.train_one(job, job.dir, resume=None)


def run_study(config: StudyConfig | str | Path, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a study into ``out_dir``; returns the ``summary.json`` content (``{}`` in the non-main
    processes of a distributed launch).

    ``progress`` shows progress bars and prints the result tables (rich); ``False`` is silent.
    """
    if not isinstance(config, StudyConfig):
        config = StudyConfig.from_yaml(config)
    start_distributed()
    if config.two_stage is not None and world_size() > 1:  # every process refuses, before anything is written
        raise SoiError("two_stage studies run in one process; launch soi run without accelerate / torchrun")
    adapter = ClassificationStudy(config)
    if is_main_process():
        return run_study_with(adapter, out_dir, progress=progress)
    from soi.study.engine import hf_progress

    with hf_progress(False):
        follow(adapter, Path(out_dir))
    return {}


def print_summary(summary: dict[str, Any], console: Any) -> None:
    """Rich tables: eval metrics, overall SOI shares, comparisons."""
    from rich.table import Table

    from soi.analysis.paired import ci_label

    pm = "\u00b1"
    table = Table(title=f"{summary['study']}: evaluation (mean {pm} std over seeds {summary['seeds']})")
    for col in ("run", "setting", "eval set", "kind", "n", "accuracy", "macro-F1"):
        table.add_column(col, justify="right" if col in ("n", "accuracy", "macro-F1") else "left")
    for name, run in summary["runs"].items():
        for key, ev in run["eval"].items():
            a, f = ev["accuracy"], ev["macro_f1"]
            table.add_row(name, run["setting"], key, ev["kind"], str(ev["n"]), f"{a['mean']:.3f} {pm} {a['std']:.3f}",
                          f"{f['mean']:.3f} {pm} {f['std']:.3f}")
    console.print(table)

    runs = summary["runs"]
    cats = list(next(iter(runs.values()))["soi_shares"]["all"]["all"]) if runs else []
    table = Table(title="SOI shares of the training examples (all, seed mean)")
    table.add_column("run")
    for c in cats:
        table.add_column(c, justify="right")
    for name, run in runs.items():
        shares = run["soi_shares"]["all"]["all"]
        table.add_row(name, *(f"{100 * shares[c]:.1f}%" for c in cats))
    console.print(table)

    if summary["comparisons"]:
        table = Table(title="single \u2192 multi transitions (shared training examples; training dynamics)")
        for col in ("a \u2192 b", "seeds", "group", "n", "train acc a \u2192 b", "McNemar p", "seed-null p",
                    "transitions beyond reseeding noise"):
            table.add_column(col)
        for comp in summary["comparisons"]:
            seeds = comp.get("seeds") or {}
            for g in comp["groups"]:
                null = g.get("seed_null") or {}
                sig = ", ".join(f"{t['from']}\u2192{t['to']} {100 * t['excess']:+.1f}pp"
                                for t in g.get("significant_transitions") or [])
                p = null.get("p_value")
                table.add_row(f"{comp['a']} \u2192 {comp['b']}", f"{len(seeds.get('a') or [])}+"
                              f"{len(seeds.get('b') or [])}",
                              "all" if g["key"] == "all" else f"{g['key']}={g['group']}", str(g["n_shared"]),
                              f"{g['accuracy_a']:.3f} \u2192 {g['accuracy_b']:.3f}", f"{g['mcnemar_p']:.2g}",
                              "n/a" if p is None else f"{p:.2g}", sig or ("-" if p is not None else "too few seeds"))
        console.print(table)
        table = Table(title="paired test-set differences (test data; p: the seed-aware test with >= 2 seeds per side, "
                               "McNemar with 1; * p <= alpha)")
        for col in ("a \u2192 b", "eval set", "n", "acc a \u2192 b", "difference", "CI", "p (test)",
                    "McNemar p (item-level)"):
            table.add_column(col)
        for comp in summary["comparisons"]:
            for key, t in (comp.get("test_set") or {}).items():
                if t.get("difference") is None:
                    continue
                p = t.get("p_value")
                table.add_row(f"{comp['a']} \u2192 {comp['b']}", key, str(t["n_items"]),
                              f"{t['accuracy_a']:.3f} \u2192 {t['accuracy_b']:.3f}",
                              f"{100 * t['difference']:+.1f}pp{'*' if t['significant'] else ''}",
                              f"[{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}] {ci_label(t.get('ci_over'))}",
                              "n/a" if p is None else f"{p:.2g} ({t.get('test')})", f"{t['mcnemar_p']:.2g}")
        console.print(table)
    from soi.study.transfer_stats import print_transfer_stats

    print_transfer_stats(summary.get("transfer_stats") or {}, console)
    for line in summary.get("findings") or []:
        console.print(f"\u2022 {line}", markup=False)
    console.print(f"wrote {summary['out']}/summary.json")


__all__ = ["CONFIG_FILE", "ENGINE", "EVAL_DIR", "RESULT_FILE", "SUMMARY_FILE", "TRAINER_DIR", "ClassificationStudy",
           "StudyData", "Trained", "barrier", "broadcast", "compare_dir_of", "comparison_entry", "eval_items",
           "eval_table", "evaluate_all", "family_languages", "follow", "full_run_of", "is_main_process", "k_families",
           "newer", "prepare_out", "print_summary", "proportional_sizes", "run_dir_of", "run_fingerprint", "run_study",
           "start_distributed", "study_comparisons", "study_tasks", "summarise", "tracker_callback", "train_sizes",
           "transfer_stats", "world_size", "yaml_field"]
