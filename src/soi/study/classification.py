"""What classification studies and their two-stage arms share: the study's data (:class:`StudyData`), evaluation
of a trained model on every eval set (:func:`evaluate_all`, per-example predictions in ``eval/<key>.parquet``) and
the run paths. :mod:`soi.study.runner` (the classification adapter) and :mod:`soi.study.two_stage` both import it,
so neither imports the other's internals and there is no import cycle between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from soi.config.study import StudyConfig
from soi.errors import SoiError
from soi.store.layout import StudyLayout

TRAINER_DIR = "trainer"  # runs/<run>/seed-<s>/trainer/checkpoint-N: the Trainer's checkpoints while unfinished


def run_dir_of(out: Path, run: str, seed: int) -> Path:
    """``out/runs/<run>/seed-<seed>``."""
    return StudyLayout(out).run_dir(run, seed)


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer of ``model_path`` (the classification adapters load it on first use, so a study whose runs
    are all finished never loads it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


class StudyData:
    """Loads and caches the study's splits."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self._cache: dict[tuple[str, str], Any] = {}

    def source(self, key: str) -> Any:
        """Where dataset ``key`` comes from (a :class:`soi.data.DataSource`)."""
        from soi.data import DataSource, HubDataset

        ds = self.config.datasets[key]
        hub = None
        if ds.hub is not None:
            h = ds.hub
            hub = HubDataset(ds.name, h.path, config=h.config, columns=h.columns,
                             **({"splits": h.splits} if h.splits is not None else {}),
                             labels=tuple(h.labels) if h.labels else None, label_map=h.label_map, language=h.language,
                             task=ds.task, kwargs={"revision": h.revision} if h.revision else {},
                             where=f"datasets.{key}.hub")
        return DataSource(ds.name, origin=ds.origin, data_dir=self.config.data_dir, hub=hub, spec=ds.spec)

    def eval_split_name(self, key: str) -> str:
        ds = self.config.datasets[key]
        if ds.eval_split:
            return ds.eval_split
        try:
            splits = self.source(key).splits()
        except SoiError as exc:
            raise SoiError(f"datasets.{key}: {exc}") from None
        for name in ("test", "validation"):
            if name in splits:
                return name
        raise SoiError(f"datasets.{key}: dataset {ds.name!r} has no test or validation split; set eval_split")

    def get(self, key: str, which: str, n: int | float | None = None) -> Any:
        """The ``train`` or ``eval`` split of dataset ``key``, subsampled with ``data_seed`` to ``n`` rows
        (default: the dataset's ``n_train`` / ``n_eval``). Subsamples are nested: a smaller ``n`` is a subset."""
        ds = self.config.datasets[key]
        if n is None:
            n = ds.n_train if which == "train" else ds.n_eval
        if (key, which, n) not in self._cache:
            split = "train" if which == "train" else self.eval_split_name(key)
            try:
                loaded = self.source(key).load(split)
                if loaded.labels is None:
                    raise SoiError(f"{ds.name!r} is generative; studies need classification data")
                if ds.labels is not None:
                    loaded = loaded.keep_labels(ds.labels)
            except SoiError as exc:
                raise SoiError(f"datasets.{key}: {exc}") from None
            loaded = loaded.subsample(n, self.config.data_seed) if n is not None else loaded
            self._cache[key, which, n] = loaded
        return self._cache[key, which, n]


def eval_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """``{accuracy, macro_f1, n}`` of predicted vs gold label indices (0 for no rows)."""
    from soi.train import macro_f1

    n = int(gold.size)
    return {"accuracy": float((pred == gold).mean()) if n else 0.0,
            "macro_f1": macro_f1(gold, pred) if n else 0.0, "n": n}


def eval_table(split: Any, res: Any) -> Any:
    """The per-example test-set predictions of one eval set as a pyarrow table: ``example_id, gold, pred,
    p_gold, correct, language`` (the split's row order)."""
    import pyarrow as pa

    return pa.table({"example_id": split.table.column("id").combine_chunks().cast(pa.string()),
                     "gold": pa.array(res.gold, pa.int64()), "pred": pa.array(res.pred, pa.int64()),
                     "p_gold": pa.array(res.p_gold, pa.float64()), "correct": pa.array(res.correct, pa.bool_()),
                     "language": split.table.column("language").combine_chunks().cast(pa.string())})


def evaluate_all(model: Any, tokenizer: Any, config: StudyConfig, data: StudyData, labels: Mapping[str, list[str]],
                  run: Any, run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Eval results per eval set: in-distribution (each trained dataset), transfer (the run's ``eval`` sets,
    e.g. languages it saw few or no examples of) and OOD (``eval.ood``), where the run has a matching head.
    Every eval set's per-example predictions go to ``run_dir/eval/<key>.parquet`` (:func:`eval_table`)."""
    from soi._arrow import to_numpy
    from soi._io import write_parquet
    from soi.train.evaluate import predict_rows

    out: dict[str, Any] = {}
    skipped: list[str] = []
    sets = ([(k, "in-distribution") for k in run.train] + [(k, "transfer") for k in run.eval]
            + [(k, "ood") for k in config.eval.ood])
    for key, kind in sets:
        ds = config.datasets[key]
        task = ds.head
        if task not in labels:
            continue
        split = data.get(key, "eval")
        if list(split.labels) != list(labels[task]):
            skipped.append(f"{key}: labels {list(split.labels)} differ from head {task!r}'s {labels[task]}")
            continue
        res = predict_rows(model, tokenizer, split, task, max_length=config.max_length)
        pred, gold = res.pred, res.gold
        write_parquet(StudyLayout.eval_file(run_dir, key), eval_table(split, res))
        entry = {"dataset": ds.name, "split": split.split, "task": task, "kind": kind}
        entry |= eval_metrics(pred, gold)
        langs = np.asarray(to_numpy(split.table["language"]).astype(str))
        entry["languages"] = {str(lang): eval_metrics(pred[langs == lang], gold[langs == lang])
                              for lang in sorted(set(langs.tolist()))}
        out[key] = entry
    return out, skipped


__all__ = ["TRAINER_DIR", "StudyData", "eval_metrics", "eval_table", "evaluate_all", "run_dir_of"]
