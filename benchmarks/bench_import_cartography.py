"""Benchmark: `soi import cartography` (whole process) vs cartography's own per-line JSON reader.

Generates seeded allenai/cartography files (``training_dynamics/dynamics_epoch_<E>.jsonl``, written with
pandas ``to_json`` like cartography's ``log_training_dynamics``; every epoch in its own shuffled order),
then times, in the same run on the same page-cache-warm files:

* ``soi_import_s`` -- wall time of the whole ``python -m soi.cli.main import cartography SRC RUN`` process
  (interpreter start, imports, parsing, validation, metrics rows, Parquet writing), best of ``--repeat``;
* ``cartography_reader_s`` -- ``read_training_dynamics`` of tests/cartography_ref.py (cartography's
  reader: ``json.loads`` per line into a dict keyed by guid), in this process, best of ``--repeat``.

Prints one JSON object. Usage::

    python benchmarks/bench_import_cartography.py            # 550,000 examples x 6 epochs x 3 classes
    python benchmarks/bench_import_cartography.py --n 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

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

        soi_times: list[float] = []
        cart_times: list[float] = []
        run = root / "run"
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "soi.cli.main", "import", "cartography", str(model), str(run)]
            os.sync()  # flush earlier writes so their writeback is not timed here
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            soi_times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                sys.exit(f"soi import failed ({proc.returncode}): {proc.stderr.strip()}")
            gc.collect()
            os.sync()
            t = time.perf_counter()
            dynamics = read_training_dynamics(model)
            cart_times.append(time.perf_counter() - t)
            if len(dynamics) != args.n:
                sys.exit(f"reference reader found {len(dynamics)} examples, expected {args.n}")
            del dynamics
            gc.collect()

        dyn_bytes = dir_bytes(run / "dynamics")
        lean = root / "run-no-logits"
        cmd = [sys.executable, "-m", "soi.cli.main", "import", "cartography", str(model), str(lean),
               "--no-keep-logits"]
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        lean_s = time.perf_counter() - t
        checkpoints = args.n * args.epochs
        soi_s, cart_s = min(soi_times), min(cart_times)
        print(json.dumps({
            "n": args.n,
            "epochs": args.epochs,
            "classes": args.classes,
            "soi_import_s": round(soi_s, 3),
            "soi_import_median_s": round(statistics.median(soi_times), 3),
            "cartography_reader_s": round(cart_s, 3),
            "speedup": round(cart_s / soi_s, 2),
            "bytes_per_example_checkpoint": round(dyn_bytes / checkpoints, 2),
            "bytes_per_example_checkpoint_no_logits": round(dir_bytes(lean / "dynamics") / checkpoints, 2),
            "soi_import_no_logits_s": round(lean_s, 3),
            "source_bytes_per_example_checkpoint": round(src_bytes / checkpoints, 2),
            "run_dir_bytes": dir_bytes(run),
            "soi_import_runs_s": [round(x, 3) for x in soi_times],
            "cartography_reader_runs_s": [round(x, 3) for x in cart_times],
            "generate_s": round(generate_s, 1),
            "soi_summary": proc.stdout.strip(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        }))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
