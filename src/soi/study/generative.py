"""The generative (cross-lingual SFT) study runner: ``soi run FILE`` / ``soi demo`` for ``type: generative`` YAMLs.

For every run x k x seed: build the task mixtures (:mod:`soi.gen.mixture`), fine-tune the causal LM on the
English set plus ``k`` examples per seen language through TRL (:func:`soi.train.sft.train_sft_trl`: LoRA or full
fine-tuning, constant learning rate, a checkpoint every N steps, train-pass dynamics recorded into the run directory
by :class:`~soi.record.SoiSFTTrainer`), keep the checkpoint with the lowest validation loss, evaluate per language
by greedy decoding (math: exact match of the final number; instruction / summarization: ROUGE-L, chrF and
response-language fidelity), then compute the transfer metrics (:mod:`soi.gen.transfer`) and write the summary,
CSV tables and figures. The run protocol (skip / resume, ``result.json`` last, cached analysis) is the study
engine's (:mod:`soi.study.engine`); :class:`GenerativeStudy` is its adapter.

Layout under ``out``::

    config.json                           # the validated study config
    runs/<run>-k<k>/seed-<s>/             # one fine-tuning run (a soi run directory when dynamics are recorded)
        fingerprint.json                  # the run's settings hash (an interrupted run resumes only when it matches)
        mixture.json                      # the mixture manifest: ids per task / language / split, counts, sources
        model-best/, model-final/         # HF save_pretrained folders (LoRA merged); final only when != best
        predictions.jsonl                 # one line per eval row: prediction and per-example scores
        result.json                       # written last: its presence marks the run finished
    tables/scores.csv, tables/transfer.csv, tables/transfer_groups.csv
    figures/transfer_<key>_curves.png, figures/transfer_<key>_heatmap.png
    summary.json                          # + summary["transfer"]

Re-running on the same ``out`` resumes: finished runs are kept (a run whose settings changed is an error), an
unfinished run continues from its last Trainer checkpoint (``checkpoints/``, deleted when the run finishes; its
dynamics equal an uninterrupted run's), and an unfinished run without one is cleared and trained again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soi._io import write_json, write_text
from soi.config.generative import GenerativeStudyConfig, RunSpec, ScoringSpec
from soi.errors import SoiError
from soi.gen.mixture import Mixture, MixtureSpec, PoolSource, build_mixture
from soi.store.layout import (
    FIGURES_DIR,
    FINGERPRINT_FILE,
    MIXTURE_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    SUMMARY_FILE,
    TABLES_DIR,
    StudyLayout,
)
from soi.store.layout import k_run_name as run_name
from soi.store.summary import validate_summary
from soi.study.engine import RunJob, StudyAdapter, analyse, fingerprint_of, mean_shares, mean_std, run_study_with
from soi.study.tables import csv_text


def run_dir_of(out: Path, run: str, k: int, seed: int) -> Path:
    """``out/runs/<run>-k<k>/seed-<seed>``."""
    return StudyLayout(out).k_run_dir(run, k, seed)


# ------------------------------------------------------------------------------------------------ mixtures
def default_sources(kind: str, mix: Mapping[str, Any]) -> dict[str, list[PoolSource]]:
    """Offline pools per task kind: math = gsm8k (English) + mgsm (other languages); instruction = oasst_fr."""
    seen = tuple(mix["seen"])
    if kind == "math":
        langs = (mix["english"], *mix["seen"], *mix["unseen"])
        return {"train": [PoolSource("gsm8k", "train"), *([PoolSource("mgsm", "test", seen)] if seen else [])],
                "validation": [PoolSource("gsm8k", "validation"),
                               *([PoolSource("mgsm", "test", seen)] if seen else [])],
                "eval": [PoolSource("mgsm", "test", langs)]}
    if kind == "instruction":
        return {"train": [PoolSource("oasst_fr", "train")], "validation": [PoolSource("oasst_fr", "validation")],
                "eval": [PoolSource("oasst_fr", "validation")]}
    raise SoiError(f"no offline data for {kind!r} tasks: give train and eval sources")


def mixture_spec(config: GenerativeStudyConfig, task: str) -> MixtureSpec:
    """The :class:`MixtureSpec` of one task (effective mixture fields, the task's pools or the defaults)."""
    mix = config.task_mixture(task)
    spec = config.tasks[task]
    kind = config.kind(task)
    needs = None in (spec.train, spec.eval) or (spec.validation is None and kind in ("math", "instruction"))
    defaults = default_sources(kind, mix) if needs else {}

    def pools(role: str) -> tuple[PoolSource, ...]:
        given = getattr(spec, role)
        if given is None:
            return tuple(defaults.get(role, ()))
        return tuple(PoolSource(s.dataset, s.split, None if s.languages is None else tuple(s.languages), s.origin)
                     for s in given)

    return MixtureSpec(seen=tuple(mix["seen"]), unseen=tuple(mix["unseen"]), ks=tuple(mix["k"]),
                       train=pools("train"), validation=pools("validation"), eval=pools("eval"),
                       english=mix["english"], english_n=mix["english_n"], n_eval=mix["n_eval"],
                       n_validation=mix["n_validation"], seed=config.data_seed,
                       parallel_train=mix["parallel_train"], response_template=mix["response_template"])


def build_mixtures(config: GenerativeStudyConfig, source: str = "<study>") -> dict[str, Mixture]:
    """Build every task's mixture; problems are one-line errors naming ``source`` and ``tasks.<task>``."""
    out = {}
    for task in config.tasks:
        try:
            out[task] = build_mixture(mixture_spec(config, task), data_dir=config.data_dir, task=task,
                                      where="mixture")
        except SoiError as exc:
            raise SoiError(f"tasks.{task}: {exc}", path=source) from None
    return out


# ------------------------------------------------------------------------------------------------- scoring
def study_languages(config: GenerativeStudyConfig) -> list[str]:
    """Every language of the study (English, seen, unseen over all tasks), in first-mention order."""
    langs: list[str] = []
    for task in config.tasks:
        mix = config.task_mixture(task)
        for x in (mix["english"], *mix["seen"], *mix["unseen"]):
            if x not in langs:
                langs.append(x)
    return langs


def score_examples(kind: str, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str],
                   candidates: Sequence[str] | None = None,
                   scoring: ScoringSpec | None = None) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per-example scores and raw scorer outputs (:func:`soi.gen.scorers.score_rows`) of the ``scoring:`` plan:
    math ``exact_match``; otherwise ``rouge_l`` (F), ``chrf`` and ``language_fidelity``; plus the extra scorers and
    the switch-aware columns (docs/generative.md, "Scoring")."""
    from soi.gen.scorers import score_rows

    plan = (scoring or ScoringSpec()).plan(kind, None if candidates is None else list(candidates))
    return score_rows(plan, rows, predictions)


def aggregate(kind: str, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str],
              per_example: Mapping[str, np.ndarray], scoring: ScoringSpec | None = None) -> dict[str, float]:
    """One language's scores: means of the per-example scores, chrF at corpus level (Popović 2015)."""
    from soi.gen.scorers import aggregate_rows

    return aggregate_rows((scoring or ScoringSpec()).plan(kind), rows, predictions, per_example)


# ------------------------------------------------------------------------------------------------- running
def fingerprint(config: GenerativeStudyConfig, run: RunSpec, k: int, seed: int) -> str:
    """Hash of everything that determines one run's training and evaluation."""
    blob = {"model": config.model, "data_dir": config.data_dir, "data_seed": config.data_seed,
            "training": config.training.model_dump(), "generation": config.generation.model_dump(),
            "recording": config.recording.model_dump(), "run": run.model_dump(), "k": k, "seed": seed,
            "tasks": {t: {"spec": config.tasks[t].model_dump(), "mixture": config.task_mixture(t)} for t in run.tasks},
            "languages": study_languages(config)}
    if not config.scoring.is_default:  # where the judge runs and how it is retried does not change a score
        blob["scoring"] = config.scoring.model_dump(exclude={"judge": {"url", "cache_dir", "timeout_s", "retries",
                                                                       "backoff_s", "api_key_env", "workers"}})
    return fingerprint_of(blob)


def evaluate_run(config: GenerativeStudyConfig, mixtures: Mapping[str, Mixture], run: RunSpec, model: Any,
                 tokenizer: Any, rdir: Path, progress: bool) -> dict[str, Any]:
    """Greedy-decode every eval row of the run's tasks, score it per example and per language, and write
    ``predictions.jsonl``; returns ``result["eval"]``."""
    from soi.gen.sft import generate

    candidates = study_languages(config)
    evals: dict[str, Any] = {}
    lines = []
    for task in run.tasks:
        kind = config.kind(task)
        rows = mixtures[task].eval_rows()
        preds = generate(model, tokenizer, [r["prompt"] for r in rows],
                         max_new_tokens=config.generation.max_new_tokens, batch_size=config.generation.batch_size,
                         max_length=config.training.max_length, dtype=config.training.dtype, progress=progress)
        per_ex, raw = score_examples(kind, rows, preds, candidates, config.scoring)
        langs = np.array([r["language"] for r in rows])
        by_lang = {}
        for lang in dict.fromkeys(langs.tolist()):
            idx = np.flatnonzero(langs == lang)
            sub_rows = [rows[i] for i in idx]
            scores = aggregate(kind, sub_rows, [preds[i] for i in idx], {m: v[idx] for m, v in per_ex.items()},
                               config.scoring)
            by_lang[lang] = {"n": int(idx.size)} | scores
        evals[task] = {"kind": kind, "metrics": list(per_ex), "languages": by_lang}
        for i, r in enumerate(rows):
            lines.append(json.dumps({"task": task, "id": r["id"], "language": r["language"], "prediction": preds[i],
                                     "reference": r["answer"] if kind == "math" else r["response"]}
                                    | {m: float(v[i]) for m, v in per_ex.items()}
                                    | {f"{m}_raw": v[i] for m, v in raw.items()}, ensure_ascii=False))
    write_text(StudyLayout.predictions(rdir), "\n".join(lines) + "\n")
    return evals


@dataclass
class _Trained:
    model: Any
    tokenizer: Any
    info: dict[str, Any]
    start: float


class GenerativeStudy(StudyAdapter):
    """The engine adapter of generative studies: one job per run x k x seed (``runs/<run>-k<k>/seed-<s>``),
    resumable from TRL checkpoints."""

    kind = "generative"
    resumable = True

    def __init__(self, config: GenerativeStudyConfig, source: str = "<study>") -> None:
        super().__init__(config)
        self.source = source
        self.mixtures: dict[str, Mixture] = {}
        self.model_path = ""

    def prepare(self) -> None:
        from soi.model import resolve_model

        self.mixtures = build_mixtures(self.config, self.source)
        self.model_path = resolve_model(self.config.model)

    def runs(self) -> list[RunJob]:
        cfg = self.config
        todo = [(run, k, s) for run in cfg.run_list() for k in cfg.ks(run) for s in cfg.seeds]
        return [RunJob((run.name, k, s), run_name(run.name, k), s, self.layout.k_run_dir(run.name, k, s),
                       f"[{i}/{len(todo)}] {run.name} ({', '.join(run.tasks)}) k={k} seed {s}", spec=(run, k))
                for i, (run, k, s) in enumerate(todo, 1)]

    def fingerprint(self, job: RunJob) -> str:
        run, k = job.spec
        return fingerprint(self.config, run, k, job.seed)

    def can_resume(self, job: RunJob, run_dir: Path) -> bool:
        from soi.train.sft import CHECKPOINTS_DIR, last_checkpoint

        return last_checkpoint(run_dir / CHECKPOINTS_DIR) is not None

    def train_one(self, job: RunJob, run_dir: Path, *, resume: bool) -> _Trained:
        from soi.model.causal import load_causal_lm
        from soi.train.sft import train_sft_trl

        config, mixtures, (run, k), seed = self.config, self.mixtures, job.spec, job.seed
        start = time.perf_counter()
        write_json(StudyLayout.mixture(run_dir), {t: mixtures[t].manifest(k) for t in run.tasks})
        train_rows = [r for t in run.tasks for r in mixtures[t].train_rows(k)]
        val_rows = [r for t in run.tasks for r in mixtures[t].validation_rows()]
        t, rec = config.training, config.recording
        info: dict[str, Any] = {"n_train": len(train_rows), "n_validation": len(val_rows)}
        if not train_rows:  # nothing to train on (english_n = 0 and k = 0): the base model is the k = 0 baseline
            model, tokenizer = load_causal_lm(self.model_path, dtype=t.dtype)
            info |= {"steps": 0, "best_step": None, "validation_loss": {}, "train_loss": [], "dynamics": False}
            return _Trained(model, tokenizer, info, start)
        res = train_sft_trl(self.model_path, train_rows, run_dir, validation=val_rows or None, record=rec.enabled,
                            epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size, lr=t.lr,
                            warmup_steps=t.warmup_steps, checkpoint_every=t.checkpoint_every,
                            max_length=t.max_length,
                            lora=None if t.lora is None else t.lora.model_dump(exclude_none=True), dtype=t.dtype,
                            seed=seed, probe=rec.probe or None, probe_seed=config.data_seed,
                            probe_max_new_tokens=rec.probe_max_new_tokens,
                            eval_batch_size=config.generation.batch_size, model_name=config.model,
                            setting=run.setting, progress=self.progress, resume=resume,
                            meta_extra={"study": config.name, "run": job.run, "family": run.name,
                                        "k": k, "train_tasks": list(run.tasks)})
        info |= {"steps": res.steps, "best_step": res.best_step,
                 "validation_loss": {str(s): v for s, v in res.validation_loss.items()},
                 "train_loss": res.train_loss, "train_tokens": res.train_tokens,
                 "train_seconds": round(res.train_seconds, 3), "tokens_per_second": round(res.tokens_per_second, 1),
                 "dynamics": rec.enabled, "resumed_from": res.resumed_from,
                 "models": {"best": res.best_dir.name if res.best_dir else None,
                            "final": (res.final_dir or res.best_dir).name if res.best_dir else None}}
        return _Trained(res.model, res.tokenizer, info, start)

    def evaluate(self, job: RunJob, trained: _Trained, run_dir: Path) -> dict[str, Any]:
        config, (run, k) = self.config, job.spec
        info = dict(trained.info)
        t_eval = time.perf_counter()
        evals = evaluate_run(config, self.mixtures, run, trained.model, trained.tokenizer, run_dir, self.progress)
        info["eval_seconds"] = round(time.perf_counter() - t_eval, 3)
        return {"study": config.name, "run": run.name, "setting": run.setting, "tasks": list(run.tasks), "k": k,
                "seed": job.seed, "model": config.model, "fingerprint": self.fingerprint(job),
                "n_train_by_language": {task: self.mixtures[task].manifest(k)["counts"]["train"]
                                        for task in run.tasks},
                **info, "eval": evals, "elapsed_s": round(time.perf_counter() - trained.start, 3)}

    def analyse(self, job: RunJob, result: Mapping[str, Any]) -> dict[str, Any]:
        return {"main": analyse(job.dir), "probe": analyse(StudyLayout.probe(job.dir))}

    def summarise(self, results: Mapping[Any, Mapping[str, Any]], analyses: Mapping[Any, Any],
                  comparisons: Sequence[Any]) -> dict[str, Any]:
        return summarise(self.config, self.layout.out, results, analyses)

    def write_outputs(self, summary: dict[str, Any]) -> None:
        from soi.gen.transfer import plot_transfer

        figures = []
        for key, t in summary["transfer"].items():
            figures += [str(p) for p in plot_transfer(t, self.layout.figures, key.replace(":", "_"))]
        summary["figures"] = figures
        write_tables(summary, self.layout.out)
        from soi.study.gen_stats import study_statistics  # transfer intervals, SOI across mixtures (k=0 vs k)

        study_statistics(self.config, self.layout.out, summary, progress=False)

    def print_summary(self, summary: Mapping[str, Any]) -> None:
        from soi.study.gen_stats import print_stats

        print_summary(summary, self.console)
        print_stats(summary, self.console)


# ------------------------------------------------------------------------------------------------- summary
def transfer_keys(config: GenerativeStudyConfig) -> dict[tuple[str, str], str]:
    """``{(run, task): key of summary["transfer"]}``: the task name, or ``<run>:<task>`` when several runs train
    the task (e.g. single-task vs multi-task)."""
    runs = config.run_list()
    count = {t: sum(t in r.tasks for r in runs) for t in config.tasks}
    return {(r.name, t): (t if count[t] == 1 else f"{r.name}:{t}") for r in runs for t in r.tasks}


def _group(lang: str, mix: Mapping[str, Any]) -> str:
    return "seen" if lang in mix["seen"] else "unseen" if lang in mix["unseen"] else "english"


def summarise(config: GenerativeStudyConfig, out: Path, results: Mapping[tuple[str, int, int], Mapping[str, Any]],
              analyses: Mapping[tuple[str, int, int], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``summary.json`` content from the per-(run, k, seed) results and (optional) dynamics analyses
    ``{(run, k, seed): {"main": soi analyze summary or None, "probe": ...}}`` (see docs/generative.md)."""
    from soi.gen.transfer import transfer_summary

    analyses = analyses or {}

    runs: dict[str, Any] = {}
    transfer: dict[str, Any] = {}
    keys = transfer_keys(config)
    for run in config.run_list():
        ks = config.ks(run)
        for k in ks:
            per_seed = [results[run.name, k, s] for s in config.seeds]
            evals: dict[str, Any] = {}
            for task in run.tasks:
                mix = config.task_mixture(task)
                first = per_seed[0]["eval"][task]
                langs = {}
                for lang, m in first["languages"].items():
                    langs[lang] = {"n": m["n"], "group": _group(lang, mix)} | {
                        metric: mean_std([r["eval"][task]["languages"][lang][metric] for r in per_seed])
                        for metric in first["metrics"]}
                evals[task] = {"kind": first["kind"], "metric": config.metric(task), "metrics": first["metrics"],
                               "languages": langs}
            runs[run_name(run.name, k)] = {
                "setting": run.setting, "run": run.name, "k": k, "tasks": list(run.tasks),
                "seeds": list(config.seeds), "dirs": [str(run_dir_of(out, run.name, k, s)) for s in config.seeds],
                "n_train": per_seed[0]["n_train_by_language"], "eval": evals,
                "best_step": [r.get("best_step") for r in per_seed], "steps": [r.get("steps") for r in per_seed],
                "soi_shares": mean_shares([analyses.get((run.name, k, s), {}).get("main") for s in config.seeds]),
                "probe_soi_shares": mean_shares([analyses.get((run.name, k, s), {}).get("probe")
                                             for s in config.seeds])}
        for task in run.tasks:
            mix, metric = config.task_mixture(task), config.metric(task)
            scores = {lang: {k: [results[run.name, k, s]["eval"][task]["languages"][lang][metric]
                                 for s in config.seeds] for k in ks}
                      for lang in results[run.name, ks[0], config.seeds[0]]["eval"][task]["languages"]}
            transfer[keys[run.name, task]] = transfer_summary(scores, seen=mix["seen"], unseen=mix["unseen"],
                                                              metric=metric)
    return {"study": config.name, "type": "generative", "model": config.model, "seeds": list(config.seeds),
            "data_seed": config.data_seed, "out": str(out), "runs": runs, "comparisons": [],
            "transfer": transfer, "transfer_runs": {key: {"run": r, "task": t} for (r, t), key in keys.items()}}


def write_tables(summary: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """``tables/scores.csv`` (run x k x task x language, every metric's seed mean/std), ``tables/transfer.csv``
    (per transfer key, language and k: score, gain, relative gain, gain per 100) and ``tables/transfer_groups.csv``
    (seen / unseen means and their gap). The summary is read through its schema (:mod:`soi.store.summary`)."""
    validate_summary(summary, path=StudyLayout(out).summary)
    scores, trans, groups = [], [], []
    for name, run in summary["runs"].items():
        for task, ev in run["eval"].items():
            for lang, m in ev["languages"].items():
                row = {"run": run["run"], "k": run["k"], "task": task, "language": lang, "group": m["group"],
                       "n": m["n"]}
                for metric in ev["metrics"]:
                    row[f"{metric}_mean"] = round(m[metric]["mean"], 6)
                    row[f"{metric}_std"] = round(m[metric]["std"], 6)
                scores.append(row)
        del name
    for key, t in summary["transfer"].items():
        for lang in t["scores"]:
            group = "seen" if lang in t["seen"] else "unseen" if lang in t["unseen"] else "english"
            for k in t["ks"]:
                s = str(k)
                trans.append({"key": key, "metric": t["metric"], "language": lang, "group": group, "k": k,
                              "score_mean": round(t["scores"][lang][s]["mean"], 6),
                              "score_std": round(t["scores"][lang][s]["std"], 6), "gain": round(t["gain"][lang][s], 6),
                              "relative_gain": _round(t["relative_gain"][lang][s]),
                              "gain_per_100": _round(t["gain_per_100"][lang][s])})
        for k in t["ks"]:
            s = str(k)
            groups.append({"key": key, "metric": t["metric"], "k": k, "seen_mean": _round(t["seen_mean"][s]),
                           "unseen_mean": _round(t["unseen_mean"][s]), "gap": _round(t["gap"][s])})
    paths = {}
    for name, rows in (("scores", scores), ("transfer", trans), ("transfer_groups", groups)):
        paths[name] = StudyLayout(out).table(name)
        write_text(paths[name], csv_text(rows))
    return paths


def _round(v: float | None) -> float | str:
    return "" if v is None else round(v, 6)


def print_summary(summary: Mapping[str, Any], console: Any) -> None:
    """One rich table per transfer key: language x k scores (seed mean), seen/unseen means and the gap."""
    from rich.table import Table

    for key, t in summary["transfer"].items():
        table = Table(title=f"{summary['study']}: {key} ({t['metric']}, mean over seeds {summary['seeds']})")
        table.add_column("language")
        table.add_column("group")
        for k in t["ks"]:
            table.add_column(f"k={k}", justify="right")
        for lang in t["scores"]:
            group = "seen" if lang in t["seen"] else "unseen" if lang in t["unseen"] else "english"
            table.add_row(lang, group, *(f"{t['scores'][lang][str(k)]['mean']:.3f}" for k in t["ks"]))
        for label, field in (("seen mean", "seen_mean"), ("unseen mean", "unseen_mean"), ("gap", "gap")):
            vals = [t[field][str(k)] for k in t["ks"]]
            if any(v is not None for v in vals):
                table.add_row(label, "", *("-" if v is None else f"{v:.3f}" for v in vals))
        console.print(table)
    console.print(f"wrote {summary['out']}/summary.json, tables/, figures/")


def run_generative_study(config_or_path: GenerativeStudyConfig | str | Path, out_dir: str | Path, *,
                         progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a generative study into ``out_dir``; returns the ``summary.json`` content."""
    if isinstance(config_or_path, GenerativeStudyConfig):
        config, source = config_or_path, "<study>"
    else:
        config, source = GenerativeStudyConfig.from_yaml(config_or_path), Path(config_or_path).name
    if config.models is not None:  # model size / family as an axis: the whole study once per model
        from soi.study.engine import prepare_out
        from soi.study.gen_stats import run_models

        return run_models(config, prepare_out(out_dir, config),
                          lambda sub, sub_out: run_study_with(GenerativeStudy(sub, source), sub_out,
                                                              progress=progress), progress=progress)
    return run_study_with(GenerativeStudy(config, source), out_dir, progress=progress)


__all__ = ["FIGURES_DIR", "FINGERPRINT_FILE", "MIXTURE_FILE", "PREDICTIONS_FILE", "RESULT_FILE", "SUMMARY_FILE",
           "TABLES_DIR", "GenerativeStudy", "GenerativeStudyConfig", "build_mixtures", "evaluate_run", "fingerprint",
           "mixture_spec", "run_dir_of", "run_generative_study", "run_name", "summarise", "transfer_keys",
           "write_tables"]
