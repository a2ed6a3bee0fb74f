"""Per-example training dynamics of generative SFT, in the soi store (see docs/store.md, "Generative runs").

At every checkpoint :func:`~soi.gen.sft.train_sft` runs one batched, no-grad, eval-mode teacher-forced pass over
the training examples and writes one dynamics part per checkpoint into ``RUN_DIR/dynamics/``. Per example, over
its ``T`` response tokens ``y_t`` (closing token included) with model probabilities ``p_t = p(y_t | y_<t, prompt)``:

==============  =========================================================================================
``p_gold``      mean gold-token probability ``(1/T) sum_t p_t`` (the confidence of cartography, Swayamdipta
                et al. 2020, at token level)
``loss``        mean token NLL ``-(1/T) sum_t log p_t`` (the training objective)
``margin``      mean over tokens of (gold logit - largest other logit), AUM's margin (Pleiss et al. 2020)
``logp``        sequence log-likelihood ``sum_t log p_t`` (extra column)
``token_acc``   teacher-forced token accuracy: share of tokens whose argmax is the gold token (extra column)
``n_tokens``    ``T`` (extra column)
``pred``        1 (``correct``) when ``token_acc >= correct_threshold`` (default 0.5), else 0 (``incorrect``)
``gold``        always 1: ``run.json`` tasks are ``{task: ["incorrect", "correct"]}``
==============  =========================================================================================

``token_acc == 1`` means greedy decoding reproduces the reference exactly, so the threshold interpolates between
"mostly right" and "exactly right". Answer correctness needs decoding, which is costly, so it is measured on a
seeded probe subset (``probe``, drawn with ``probe_seed`` independently of the training seed) and stored as a
second, complete run directory ``RUN_DIR/probe/``: the store requires every dynamics folder of a run to cover all
of its ``examples.parquet``, so a subset cannot live next to the full pass in the same run. The probe run has the
same columns (teacher-forced values of those examples, identical to the main run's) except that ``pred`` is the
greedy answer correctness: exact match of the final number (:func:`soi.gen.metrics.exact_match`) when the
example has an ``answer``, else ROUGE-L F >= 0.5 against the reference response; the greedy text is kept in a
``generation`` column. ``soi analyze RUN_DIR`` and ``soi analyze RUN_DIR/probe`` both work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from soi.errors import SoiError
from soi.store.meta import RunMeta
from soi.store.writer import GENERATIVE_COLUMNS, dynamics_table, examples_table, write_examples, write_part

LABELS = ["incorrect", "correct"]
PROBE_DIR = "probe"
ROUGE_THRESHOLD = 0.5
_CHUNK_LOGITS = 1 << 26  # at most this many logits (256 MB of float32) at once in the no-grad pass


def score_sequences(model: Any, enc: Any, pad_id: int, *, batch_size: int = 16, dtype: str = "auto",
                    rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Teacher-forced per-example statistics (no grad; batches of similar length, longest first).

    Returns float32 ``p_gold``, ``margin``, ``loss``, ``logp``, ``token_acc`` and int32 ``n_tokens`` per example
    of ``enc`` (or of ``rows``), in that order. Results stay on the device until the end (one transfer).
    """
    import torch

    from soi.gen.sft import autocast_for, collate, head_logits, model_device, response_hidden

    rows = np.arange(len(enc.ids)) if rows is None else np.asarray(rows)
    perm = np.argsort(-enc.lengths[rows], kind="stable")
    order = rows[perm]
    dev = model_device(model)
    head = model.get_output_embeddings()
    chunk = max(16, _CHUNK_LOGITS // (head.weight.shape[0] if head is not None else 1 << 16))
    outs = []
    with torch.inference_mode(), autocast_for(model, dtype):
        for start in range(0, len(order), batch_size):
            sub = order[start:start + batch_size]
            batch = collate(enc, sub, pad_id, device=dev)
            h, targets, brow = response_hidden(model, batch)
            sums = torch.zeros((len(sub), 5), dtype=torch.float64, device=dev)  # p, margin, logp, acc, count
            for c in range(0, targets.numel(), chunk):
                z = head_logits(model, h[c:c + chunk])
                y = targets[c:c + chunk].unsqueeze(1)
                lp = torch.log_softmax(z, dim=-1).gather(1, y).squeeze(1)
                zg = z.gather(1, y).squeeze(1)
                other = z.scatter(1, y, float("-inf")).amax(dim=1)
                acc = (z.argmax(dim=1) == y.squeeze(1)).double()
                vals = torch.stack([lp.exp().double(), (zg - other).double(), lp.double(), acc,
                                    torch.ones_like(acc)], dim=1)
                sums.index_add_(0, brow[c:c + chunk], vals)
            outs.append(sums)
    by_length = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 5))
    stats = np.empty_like(by_length)
    stats[perm] = by_length  # order[j] == rows[perm[j]]: back to the order of rows
    n = stats[:, 4]
    if np.any(n < 1):
        raise SoiError("an example has no response token (empty response truncated away?)")
    return {"p_gold": (stats[:, 0] / n).astype(np.float32), "margin": (stats[:, 1] / n).astype(np.float32),
            "loss": (-stats[:, 2] / n).astype(np.float32), "logp": stats[:, 2].astype(np.float32),
            "token_acc": (stats[:, 3] / n).astype(np.float32), "n_tokens": n.astype(np.int32)}


def answer_correct(generations: Sequence[str], examples: Sequence[Any],
                   rouge_threshold: float = ROUGE_THRESHOLD) -> np.ndarray:
    """Greedy answer correctness: final-number exact match where an ``answer`` exists, else ROUGE-L F >= threshold."""
    from soi.gen.metrics import exact_match, rouge_l_f

    out = np.zeros(len(examples), bool)
    math_rows = [i for i, ex in enumerate(examples) if ex.answer is not None]
    other = [i for i, ex in enumerate(examples) if ex.answer is None]
    if math_rows:
        out[math_rows] = exact_match([generations[i] for i in math_rows], [examples[i].answer for i in math_rows])
    if other:
        out[other] = rouge_l_f([generations[i] for i in other],
                               [examples[i].response for i in other]) >= rouge_threshold
    return out


def probe_rows(n: int, probe: int | float | None, seed: int) -> np.ndarray:
    """Sorted indices of the seeded probe subset: a count, a fraction in (0, 1], or None/0 for none."""
    if probe is None or probe == 0:
        return np.zeros(0, np.int64)
    if isinstance(probe, float):
        if not 0 < probe <= 1:
            raise SoiError(f"probe must be a count or a fraction in (0, 1], got {probe!r}")
        size = max(1, round(probe * n))
    elif isinstance(probe, int) and probe > 0:
        size = min(probe, n)
    else:
        raise SoiError(f"probe must be a count or a fraction in (0, 1], got {probe!r}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def generative_meta(kind: str, correct_threshold: float, probe: dict[str, Any] | None, *,
                    source: str = "teacher-forced, eval mode") -> dict[str, Any]:
    """``run.json`` ``extra.generative``: columns, correctness rule (``kind`` ``"token_acc"`` or ``"answer"``) and
    where the numbers come from (``source``)."""
    cols = ["token_acc", "logp", "n_tokens"] + (["generation"] if kind == "answer" else [])
    rule = ({"kind": "token_acc", "threshold": correct_threshold} if kind == "token_acc"
            else {"kind": "answer", "math": "final-number exact match", "other": f"ROUGE-L F >= {ROUGE_THRESHOLD}"})
    return {"version": 1, "gold": "always 1 ('correct')", "correct": rule, "columns": cols,
            "p_gold": f"mean gold-token probability over the response tokens ({source})",
            "loss": "mean token NLL", "margin": "mean gold logit minus largest other logit",
            **({"probe": probe} if probe else {})}


def _examples(examples: Sequence[Any]) -> pa.Table:
    ids = [ex.id for ex in examples]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise SoiError(f"duplicate example id {i!r} in the training set (the store needs unique ids)")
        seen.add(i)
    return examples_table(ids, np.ones(len(examples), np.int16), task=[ex.task for ex in examples],
                          source=[ex.source or ex.task for ex in examples],
                          language=[ex.language for ex in examples], text=[ex.prompt for ex in examples],
                          text_pair=[ex.response for ex in examples])


class GenRunRecorder:
    """Writes a generative run directory (and its probe run) for :func:`~soi.gen.sft.train_sft`."""

    def __init__(self, run_dir: str | Path, examples: Sequence[Any], *, probe: int | float | None = 32,
                 probe_seed: int = 0, correct_threshold: float = 0.5, model_name: str | None = None,
                 setting: str | None = None, seed: int | None = None, extra: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.examples = list(examples)
        self.correct_threshold = correct_threshold
        self.probe_idx = probe_rows(len(self.examples), probe, probe_seed)
        self.probe_dir = self.run_dir / PROBE_DIR if self.probe_idx.size else None
        tasks = {t: list(LABELS) for t in dict.fromkeys(ex.task for ex in self.examples)}
        probe_info = ({"requested": probe, "size": int(self.probe_idx.size), "seed": probe_seed,
                       "run_dir": PROBE_DIR} if self.probe_idx.size else None)
        base = {"tasks": tasks, "recording_mode": "eval-pass", "checkpoint_unit": "step", "model": model_name,
                "setting": setting, "seed": seed}
        self.meta = RunMeta(**base, extra={**dict(extra or {}), "generative": generative_meta(
            "token_acc", correct_threshold, probe_info)})
        for sub in ("dynamics", PROBE_DIR):  # a fresh run: no parts of an earlier one
            _clear(self.run_dir / sub)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.meta.save(self.run_dir)
        write_examples(self.run_dir, _examples(self.examples))
        if self.probe_dir is not None:
            self.probe_meta = RunMeta(**base, extra={"recorder": "soi.gen.sft.train_sft", "parent": "..",
                                                     "generative": generative_meta("answer", correct_threshold,
                                                                                    probe_info)})
            self.probe_dir.mkdir(parents=True, exist_ok=True)
            self.probe_meta.save(self.probe_dir)
            write_examples(self.probe_dir, _examples([self.examples[i] for i in self.probe_idx]))
        self.checkpoint = 0

    def record(self, model: Any, tokenizer: Any, fmt: Any, enc: Any, *, step: int, batch_size: int,
               dtype: str = "auto", max_new_tokens: int = 128) -> dict[str, np.ndarray]:
        """Score every example (teacher-forced) and the probe (greedy), write both parts of this checkpoint."""
        from soi.gen.sft import generate

        stats = score_sequences(model, enc, fmt.pad_id, batch_size=batch_size, dtype=dtype)
        pred = (stats["token_acc"] >= self.correct_threshold).astype(np.int16)
        idx = np.arange(len(self.examples))
        write_part(self.run_dir, gen_table(self.checkpoint, step, idx, pred, stats), checkpoint=self.checkpoint)
        if self.probe_dir is not None:
            probe_ex = [self.examples[i] for i in self.probe_idx]
            texts = generate(model, tokenizer, [ex.prompt for ex in probe_ex], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, dtype=dtype, fmt=fmt)
            ok = answer_correct(texts, probe_ex).astype(np.int16)
            sub = {k: v[self.probe_idx] for k, v in stats.items()}
            write_part(self.probe_dir, gen_table(self.checkpoint, step, np.arange(self.probe_idx.size), ok, sub,
                                                 generations=texts), checkpoint=self.checkpoint)
        self.checkpoint += 1
        return stats

    def save_history(self, history: list[dict[str, Any]], best_step: int | None,
                     final: dict[str, Any] | None = None) -> None:
        """Rewrite ``run.json`` with the checkpoint history (``extra.sft_history``) and the best step."""
        self.meta.extra["sft_history"] = history
        self.meta.extra["best_step"] = best_step
        if final is not None:
            self.meta.extra["sft_result"] = final
        self.meta.save(self.run_dir)


def gen_table(checkpoint: int, step: int, idx: np.ndarray, pred: np.ndarray, stats: Mapping[str, np.ndarray],
              generations: Sequence[str] | None = None) -> pa.Table:
    """One generative dynamics part: the store's columns plus ``token_acc``, ``logp``, ``n_tokens`` (and
    ``generation`` for the probe run)."""
    table = dynamics_table(checkpoint=checkpoint, step=step, idx=idx, gold=np.ones(len(idx), np.int16), pred=pred,
                           p_gold=stats["p_gold"], margin=stats["margin"], loss=stats["loss"], sort=False)
    for name in ("token_acc", "logp", "n_tokens"):
        table = table.append_column(pa.field(name, GENERATIVE_COLUMNS[name]),
                                    pa.array(np.asarray(stats[name]), GENERATIVE_COLUMNS[name]))
    if generations is not None:
        table = table.append_column(pa.field("generation", GENERATIVE_COLUMNS["generation"]),
                                    pa.array(list(generations), pa.string()))
    return table


def _clear(folder: Path) -> None:
    import shutil

    if folder.is_dir():
        shutil.rmtree(folder)


def load_generative(run_dir: str | Path, columns: Sequence[str] = ("token_acc", "logp", "n_tokens")
                    ) -> dict[str, np.ndarray]:
    """Dense (N, E) arrays of the extra generative columns of a run (rows in ``examples.parquet`` order)."""
    from soi._arrow import to_numpy
    from soi.store.reader import iter_checkpoints, read_examples

    meta = RunMeta.load(run_dir)
    if not meta.is_generative:
        raise SoiError("not a generative run (run.json has no extra.generative)", path=run_dir)
    n = read_examples(run_dir, meta).num_rows
    cols: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for _, table in iter_checkpoints(run_dir, ("idx", *columns)):
        order = np.argsort(to_numpy(table["idx"]), kind="stable")
        for c in columns:
            cols[c].append(to_numpy(table[c])[order])
    out = {c: np.stack(v, axis=1) if v else np.zeros((n, 0)) for c, v in cols.items()}
    return out
