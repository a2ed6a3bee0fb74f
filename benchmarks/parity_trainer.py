"""Parity of soi's two classification engines on the packaged multitask study's joint run, at reduced size.

The plain loop (``train`` of ``tests/plain_loop.py``, soi 0.1.0's ``soi.train.train``, + ``MultiHeadClassifier``)
and the Trainer engine (``soi.train.hf.train_run`` + ``MultiHeadModel``) train MiniLM-L6 on the same SST-2 + MRPC +
RTE rows (one head each) with the same seeds and hyper-parameters (``src/soi/studies/multitask.yaml``'s: lr, batch,
warmup, decay, sampling), then report per seed the validation accuracy per task and the SOI category shares of the
training examples (``analyze_run``), and the mean/std per engine. Parity = the engines' differences are within
the seed spread.

    .venv/bin/python benchmarks/parity_trainer.py --seeds 0 1 --n 120 60 60 --epochs 2

Prints one JSON object.
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TASKS = ("sst2", "mrpc", "rte")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n", type=int, nargs=3, default=[120, 60, 60], help="train rows of sst2, mrpc, rte")
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from torch import nn
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from plain_loop import train  # the plain reference loop, kept with the tests
    from soi.analysis.per_example import analyze_run
    from soi.config import StudyConfig
    from soi.data import load_split
    from soi.model import resolve_model
    from soi.record import DynamicsRecorder
    from soi.store import RunMeta
    from soi.train import MultiHeadClassifier, evaluate, run_examples
    from soi.train.hf import MultiHeadModel, train_run

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    config = StudyConfig.from_yaml(Path(__file__).resolve().parents[1] / "src/soi/studies/multitask.yaml")
    t = config.train
    path = resolve_model(config.model)
    tok = AutoTokenizer.from_pretrained(path)
    tasks = {name: [load_split(name, "train", n=n, seed=0)] for name, n in zip(TASKS, args.n, strict=True)}
    evals = {name: load_split(name, "validation", n=args.n_eval, seed=0) for name in TASKS}
    _, labels = run_examples(tasks)
    heads = {k: len(v) for k, v in labels.items()}
    hyper = {"epochs": args.epochs, "batch_size": t.batch_size, "lr": t.lr, "weight_decay": t.weight_decay,
             "warmup_ratio": t.warmup_ratio, "max_length": args.max_length, "sampling": t.sampling,
             "temperature": t.temperature}

    class Logits(nn.Module):  # evaluate() calls model(..., task=) for logits
        def __init__(self, inner: MultiHeadModel) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **kw: Any) -> torch.Tensor:
            return self.inner(**kw).logits

    def old(seed: int, run_dir: Path) -> nn.Module:
        torch.manual_seed(seed)
        model = MultiHeadClassifier(path, heads)
        examples, _ = run_examples(tasks)
        rec = DynamicsRecorder(run_dir, RunMeta(tasks=labels, seed=seed), examples=examples)
        train(model, tok, tasks, seed=seed, recorder=rec, device="cpu", **hyper)
        rec.close()
        return model

    def new(seed: int, run_dir: Path) -> nn.Module:
        torch.manual_seed(seed)
        model = MultiHeadModel.from_encoder(path, heads)
        train_run(model, tok, tasks, run_dir=run_dir, output_dir=run_dir.parent / f"{run_dir.name}-out", seed=seed,
                  **hyper)
        return Logits(model)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for engine, fn in (("loop", old), ("trainer", new)):
                run_dir = Path(tmp) / f"{engine}-{seed}"
                start = time.perf_counter()
                model = fn(seed, run_dir)
                elapsed = time.perf_counter() - start
                acc = {k: evaluate(model, tok, evals[k], k, max_length=args.max_length)["accuracy"] for k in TASKS}
                shares = analyze_run(run_dir, write=False).summary["groups"]["all"]["all"]["shares"]
                rows.append({"engine": engine, "seed": seed, "accuracy": acc, "soi_shares": shares,
                             "train_s": round(elapsed, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    def agg(engine: str) -> dict[str, Any]:
        mine = [r for r in rows if r["engine"] == engine]

        def ms(values: list[float]) -> dict[str, float]:
            return {"mean": round(statistics.mean(values), 4),
                    "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}

        return {"accuracy": {k: ms([r["accuracy"][k] for r in mine]) for k in TASKS},
                "soi_shares": {c: ms([r["soi_shares"][c] for r in mine]) for c in mine[0]["soi_shares"]}}

    out = {"benchmark": "parity: plain loop vs Trainer engine (multitask joint run, reduced)",
           "model": config.model, "n_train": dict(zip(TASKS, args.n, strict=True)), "n_eval": args.n_eval,
           "hyper": hyper, "seeds": args.seeds, "runs": rows, "loop": agg("loop"), "trainer": agg("trainer"),
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
