"""Benchmark: `soi import cartography` (whole process) vs cartography's own per-line JSON reader.

Generates seeded allenai/cartography files (``training_dynamics/dynamics_epoch_<E>.jsonl``, written with
pandas ``to_json`` like cartography's ``log_training_dynamics``; every epoch in its own shuffled order),
then times, in the same run on the same page-cache-warm files:

* ``soi_import_s`` -- wall time of the whole ``python -m soi.cli.main import cartography SRC RUN`` process
  (interpreter start, imports, parsing, validation, metrics rows, Parquet writing), best of ``--repeat``;
* ``cartography_reader_s`` -- ``read_training_dynamics`` of tests/cartography_ref.py (cartography's
  reader: ``json.loads`` per line into a dict keyed by guid), the call itself in a fresh process, best of
  ``--repeat``.

Each side also has its CPU seconds (user + system) and peak RSS (``*_cpu_s``, ``*_peak_rss_mb``: the run with
the best wall time), measured by benchmarks/harness.py.

Prints one JSON object. Usage::

    python benchmarks/bench_import_cartography.py            # 550,000 examples x 6 epochs x 3 classes
    python benchmarks/bench_import_cartography.py --n 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness import machine, run_command, run_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cartography_ref import read_training_dynamics


def generate(model_dir: Path, n: int, epochs: int, classes: int, seed: int) -> None:
    """Seeded cartography files: logits drift towards the gold class over epochs, order shuffled per epoch."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, classes, n)
    skill = rng.normal(size=n)
    folder = model_dir / "training_dynamics"
    folder.mkdir(parents=True)
    for e in range(epochs):
        z = rng.normal(size=(n, classes))
        z[np.arange(n), gold] += (e + 1) / epochs * 3.0 * (skill + 0.5)
        order = rng.permutation(n)
        frame = pd.DataFrame({"guid": order, f"logits_epoch_{e}": list(z[order]), "gold": gold[order]})
        frame.to_json(folder / f"dynamics_epoch_{e}.jsonl", lines=True, orient="records")


def reference_read(model: Path) -> int:
    """Examples read by cartography's reader (run in its own process by :func:`harness.run_function`)."""
    return len(read_training_dynamics(model))


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=550_000, help="examples")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best is reported")
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the files [default: a temp dir]")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="soi-bench-cartography-", dir=args.workdir))
    try:
        model = root / "model"
        t = time.perf_counter()
        generate(model, args.n, args.epochs, args.classes, args.seed)
        generate_s = time.perf_counter() - t
        src_bytes = dir_bytes(model / "training_dynamics")

        soi_runs, cart_runs = [], []
        run = root / "run"
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "soi.cli.main", "import", "cartography", str(model), str(run)]
            os.sync()  # flush earlier writes so their writeback is not timed here
            soi_runs.append(run_command(cmd, capture=True))
            os.sync()
            cart_runs.append(run_function(reference_read, model))
            if cart_runs[-1].value != args.n:
                sys.exit(f"reference reader found {cart_runs[-1].value} examples, expected {args.n}")

        dyn_bytes = dir_bytes(run / "dynamics")
        lean = root / "run-no-logits"
        lean_run = run_command([sys.executable, "-m", "soi.cli.main", "import", "cartography", str(model), str(lean),
                                "--no-keep-logits"])
        checkpoints = args.n * args.epochs
        soi_best, cart_best = min(soi_runs, key=lambda r: r.wall_s), min(cart_runs, key=lambda r: r.wall_s)
        soi_s, cart_s = soi_best.wall_s, cart_best.wall_s
        print(json.dumps({
            "n": args.n,
            "epochs": args.epochs,
            "classes": args.classes,
            "soi_import_s": round(soi_s, 3),
            "soi_import_median_s": round(statistics.median(r.wall_s for r in soi_runs), 3),
            "soi_import_cpu_s": round(soi_best.cpu_s, 3),
            "soi_import_peak_rss_mb": round(soi_best.peak_rss_mb, 1),
            "cartography_reader_s": round(cart_s, 3),
            "cartography_reader_cpu_s": round(cart_best.cpu_s, 3),
            "cartography_reader_peak_rss_mb": round(cart_best.peak_rss_mb, 1),
            "speedup": round(cart_s / soi_s, 2),
            "bytes_per_example_checkpoint": round(dyn_bytes / checkpoints, 2),
            "bytes_per_example_checkpoint_no_logits": round(dir_bytes(lean / "dynamics") / checkpoints, 2),
            "soi_import_no_logits_s": round(lean_run.wall_s, 3),
            "source_bytes_per_example_checkpoint": round(src_bytes / checkpoints, 2),
            "run_dir_bytes": dir_bytes(run),
            "soi_import_runs_s": [round(r.wall_s, 3) for r in soi_runs],
            "cartography_reader_runs_s": [round(r.wall_s, 3) for r in cart_runs],
            "generate_s": round(generate_s, 1),
            "soi_summary": soi_runs[-1].value.strip(),
            **machine(),
        }))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
