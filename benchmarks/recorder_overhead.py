"""Benchmark: training-step overhead of the train-pass :class:`soi.record.DynamicsRecorder` in a plain loop.

MiniLM-L6 (``resolve_model("minilm-l6")``, ``AutoModelForSequenceClassification``, 2 labels) fine-tunes with
AdamW on a seeded 1,000-example sample of SST-2 train (the offline copy in the data dir: ``$SOI_DATA_DIR`` or
``<repo>/../shared/data``), batch 32, padded to 64 tokens. In one process, every batch of an epoch is trained
twice, back to back, once per condition:

* ``baseline`` -- the plain step (forward, cross-entropy, backward, AdamW step), and
* ``recorder`` -- the same step plus ``rec.update(ids, logits, labels)``, with ``rec.end_checkpoint(step=...)``
  after the epoch,

alternating which condition goes first, so both see the same batches, model state and machine load (the
reference machine has 2 cores that other work may share). Step times are measured per full batch (on CUDA
after a ``torch.cuda.synchronize()``, in both conditions) after ``--warmup`` untimed steps. Reported: the
ratio of the median step times (target <= 1.03) and the median of the per-batch paired ratios, the
``end_checkpoint`` time, and the cost of an eval-pass checkpoint (a no-grad pass over the 1,000 examples in
batches of similar length, recorded with a second recorder) relative to one training epoch (the summed
baseline step times of an epoch).

Prints one JSON object. Usage::

    python benchmarks/recorder_overhead.py                          # CPU, default thread count
    python benchmarks/recorder_overhead.py --device cuda --bf16     # GPU, bf16 autocast
    python benchmarks/recorder_overhead.py --n 200 --epochs 1       # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from soi.model.registry import resolve_model
from soi.record import DynamicsRecorder
from soi.store import RunMeta, examples_table

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("SOI_DATA_DIR", REPO.parent / "shared" / "data"))


def load_sst2_sample(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """ids, texts, label indices and label names of a seeded sample of SST-2 train (in file order)."""
    folder = data_dir() / "sst2"
    labels = json.loads((folder / "info.json").read_text(encoding="utf-8"))["labels"]
    with open(folder / "train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False))
    rows = [rows[i] for i in pick]
    return ([r["id"] for r in rows], [r["text"] for r in rows],
            np.asarray([labels.index(r["label"]) for r in rows], np.int64), labels)


def quantiles(values: list[float]) -> dict[str, float]:
    q = np.quantile(np.asarray(values), [0.0, 0.25, 0.5, 0.75])
    return {name: round(1e3 * float(v), 2) for name, v in zip(("min_ms", "p25_ms", "median_ms", "p75_ms"), q,
                                                               strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="SST-2 train examples (seeded sample)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=64, help="batch size of the eval pass (length-bucketed)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per condition")
    ap.add_argument("--warmup", type=int, default=5, help="untimed training steps before measuring")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for forward passes")
    ap.add_argument("--model", default="minilm-l6")
    args = ap.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    torch.manual_seed(args.seed)
    ids, texts, gold, label_names = load_sst2_sample(args.n, args.seed)
    n = len(ids)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    input_ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    labels = torch.from_numpy(gold).to(device)
    lengths = enc["attention_mask"].sum(1).numpy()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(label_names)).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    run_dir = Path(tempfile.mkdtemp(prefix="soi-bench-rec-"))
    table = examples_table(ids, gold, task="sst2", text=texts)
    meta = RunMeta(tasks={"sst2": label_names}, model=args.model, setting="single", seed=args.seed)
    rec = DynamicsRecorder(run_dir, meta, examples=table)
    eval_rec = DynamicsRecorder(run_dir, mode="eval-pass", examples=table)

    def train_step(batch: torch.Tensor, recorder: DynamicsRecorder | None) -> float:
        """One optimizer step on example rows ``batch`` (CPU int64); returns the update() time (s)."""
        dev_batch = batch.to(device, non_blocking=True)
        with autocast():
            logits = model(input_ids=input_ids[dev_batch], attention_mask=mask[dev_batch]).logits
        y = labels[dev_batch]
        t_update = 0.0
        if recorder is not None:
            t0 = time.perf_counter()
            recorder.update(batch, logits, y)  # train pass: this forward's logits, before the update
            t_update = time.perf_counter() - t0
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t_update

    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        perm = torch.from_numpy(np.random.default_rng(args.seed + 1000 + epoch).permutation(n))
        return list(perm.split(args.batch))

    @torch.no_grad()
    def eval_pass(step: int) -> float:
        """Eval-pass checkpoint: no-grad forward over all examples in length-sorted batches, recorded."""
        model.eval()
        sync()
        t0 = time.perf_counter()
        order = torch.from_numpy(np.argsort(lengths, kind="stable"))
        for batch in order.split(args.eval_batch):
            width = int(lengths[batch.numpy()].max())
            dev_batch = batch.to(device, non_blocking=True)
            with autocast():
                logits = model(input_ids=input_ids[dev_batch, :width], attention_mask=mask[dev_batch, :width]).logits
            eval_rec.update(batch, logits, labels[dev_batch])
        eval_rec.end_checkpoint(step=step)
        sync()
        model.train()
        return time.perf_counter() - t0

    for batch in epoch_batches(-1)[: args.warmup]:  # warm-up (allocator, kernels, thread pools); not timed
        train_step(batch, None)
    sync()

    steps: dict[str, list[float]] = {"baseline": [], "recorder": []}
    epoch_s: list[float] = []  # summed baseline step times per epoch (all batches)
    update_s: list[float] = []
    end_ckpt_s: list[float] = []
    eval_s: list[float] = []
    global_step = 0
    t_all = time.perf_counter()
    for epoch in range(args.epochs):
        epoch_s.append(0.0)
        for k, batch in enumerate(epoch_batches(epoch)):
            for cond in ("baseline", "recorder") if k % 2 == 0 else ("recorder", "baseline"):
                recorder = rec if cond == "recorder" else None
                t0 = time.perf_counter()
                t_upd = train_step(batch, recorder)
                sync()
                dt = time.perf_counter() - t0
                global_step += 1
                if cond == "baseline":
                    epoch_s[-1] += dt
                if batch.numel() == args.batch:  # full batches only: the short last batch is cheaper
                    steps[cond].append(dt)
                    if recorder is not None:
                        update_s.append(t_upd)
        t0 = time.perf_counter()
        rec.end_checkpoint(step=global_step)
        end_ckpt_s.append(time.perf_counter() - t0)
        eval_s.append(eval_pass(global_step))
    total_s = time.perf_counter() - t_all

    base = statistics.median(steps["baseline"])
    with_rec = statistics.median(steps["recorder"])
    train_epoch = statistics.median(epoch_s)
    paired = [r / b for b, r in zip(steps["baseline"], steps["recorder"], strict=True)]
    result = {
        "benchmark": "recorder_overhead",
        "model": args.model,
        "device": args.device if not cuda else torch.cuda.get_device_name(device),
        "bf16": args.bf16,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "examples": n,
        "batch": args.batch,
        "max_length": args.max_length,
        "epochs_per_condition": args.epochs,
        "warmup_steps": args.warmup,
        "timed_steps_per_condition": len(steps["baseline"]),
        "step_baseline": quantiles(steps["baseline"]),
        "step_recorder": quantiles(steps["recorder"]),
        "ratio_median_step": round(with_rec / base, 4),
        "ratio_target": 1.03,
        "meets_target": with_rec / base <= 1.03,
        "ratio_paired_median": round(statistics.median(paired), 4),
        "update_call_median_us": round(1e6 * statistics.median(update_s), 1),
        "end_checkpoint_ms": [round(1e3 * t, 2) for t in end_ckpt_s],
        "train_epoch_s": round(train_epoch, 3),
        "eval_pass_s": [round(t, 3) for t in eval_s],
        "eval_pass_vs_train_epoch": round(statistics.median(eval_s) / train_epoch, 4),
        "total_measured_s": round(total_s, 1),
        "argv": sys.argv[1:],
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
