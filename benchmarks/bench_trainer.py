"""Training throughput of ``soi run``'s engine (soi.train.hf.train_run: TaskTrainer + train-pass recording) vs a
plain Hugging Face Trainer script on the same model, data, batch size and checkpointing (one Trainer checkpoint
per epoch, as soi keeps for resume), side by side in one process.

Both train a :class:`soi.train.MultiHeadModel` (one head) on the same tokenised SST-2 rows for one epoch; the plain
script uses the stock ``Trainer`` (random sampler, ``DataCollatorWithPadding``, no recording). Runs alternate
(plain, soi, plain, soi, ...) so that load drifts hit both; the figure is the ratio of median examples/s.

    .venv/bin/python benchmarks/bench_trainer.py --model minilm-l6 --n 512 --repeats 3

Prints one JSON object (``ratio`` = soi / plain examples/s; the issue's bar: >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm-l6", help="encoder (soi alias, path or hub id)")
    ap.add_argument("--n", type=int, default=512, help="SST-2 training rows")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from soi.data import load_split
    from soi.model import resolve_model
    from soi.train.hf import MultiHeadModel, TaskCollator, task_dataset, train_run

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    split = load_split("sst2", "train", n=args.n)
    tasks = {"sst2": [split]}
    cuda = torch.cuda.is_available()

    def model() -> MultiHeadModel:
        torch.manual_seed(0)
        return MultiHeadModel.from_encoder(path, {"sst2": len(split.labels)})

    def plain(tmp: Path) -> float:
        m = model()
        start = time.perf_counter()  # as train_run: tokenise, set up, train
        ds = task_dataset(tok, tasks, m.cap_length(args.max_length))
        targs = TrainingArguments(output_dir=str(tmp / "plain"), num_train_epochs=1,
                                  per_device_train_batch_size=args.batch_size, learning_rate=2e-5, seed=0,
                                  save_strategy="epoch", save_total_limit=1, logging_strategy="epoch", report_to=[],
                                  disable_tqdm=True, use_cpu=not cuda, bf16=cuda, dataloader_num_workers=0)
        trainer = Trainer(model=m, args=targs, train_dataset=ds, data_collator=TaskCollator(tok),
                          processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return len(ds) / (time.perf_counter() - start)

    def soi(tmp: Path, k: int) -> float:
        m = model()
        start = time.perf_counter()
        train_run(m, tok, tasks, run_dir=tmp / f"run-{k}", output_dir=tmp / f"out-{k}", epochs=1,
                  batch_size=args.batch_size, max_length=args.max_length, seed=0)
        return args.n / (time.perf_counter() - start)

    plain_eps, soi_eps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            plain_eps.append(plain(Path(tmp)))
            soi_eps.append(soi(Path(tmp), k))
    load = os.getloadavg()
    out = {
        "benchmark": "soi run trainer (TaskTrainer + train-pass recording) vs plain HF Trainer",
        "model": args.model, "n": args.n, "batch_size": args.batch_size, "max_length": args.max_length,
        "device": "cuda" if cuda else "cpu", "threads": args.threads, "repeats": args.repeats,
        "plain_examples_per_s": [round(x, 2) for x in plain_eps],
        "soi_examples_per_s": [round(x, 2) for x in soi_eps],
        "plain_median": round(statistics.median(plain_eps), 2), "soi_median": round(statistics.median(soi_eps), 2),
        "ratio": round(statistics.median(soi_eps) / statistics.median(plain_eps), 4),
        "loadavg_1m": round(load[0], 2),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
