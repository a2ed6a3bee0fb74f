"""Benchmark `soi analyze`: whole process on N examples x E checkpoints, and vs a per-example Python loop.

Prints one JSON object. Usage::

    python benchmarks/bench_analyze.py                       # 1,000,000 x 10 x 3 (issue target: <= 2 s, <= 1.5 GB)
    python benchmarks/bench_analyze.py --n 100000 --repeats 3

The loop baseline computes the same per-example quantities the way allenai/cartography's
``compute_train_dy_metrics`` does (one Python iteration per example over lists, np.mean / np.std per
example, the forgetting state machine), plus the SOI category and AUM. Both sides run on the same
``--loop-n`` examples in one process, so the ratio is measured side by side; the loop is also
extrapolated linearly to N for the whole-run comparison.
"""

from __future__ import annotations

import argparse
import json
import math
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


def loop_metrics(p_gold: np.ndarray, correct: np.ndarray, margin: np.ndarray, late_fraction: float = 0.5) -> list:
    """cartography-style per-example loop (the baseline)."""
    rows = []
    cutoff = math.ceil(late_fraction * p_gold.shape[1])
    for p_list, c_list, m_list in zip(p_gold.tolist(), correct.tolist(), margin.tolist(), strict=True):
        conf = np.mean(p_list)
        var = np.std(p_list)
        learnt, forgotten = False, 0
        for is_correct in c_list:
            if learnt and not is_correct:
                learnt, forgotten = False, forgotten + 1
            elif not learnt and is_correct:
                learnt = True
        forgetfulness = forgotten if any(c_list) else 1000
        if all(c_list):
            cat = "always_correct"
        elif not any(c_list):
            cat = "never_learned"
        elif forgotten:
            cat = "forgettable_recovered" if c_list[-1] else "forgettable_lost"
        else:
            cat = "learned_early" if c_list.index(True) + 1 <= cutoff else "learned_late"
        rows.append((conf, var, sum(c_list), forgetfulness, conf * (1 - conf), float(np.mean(m_list)), cat))
    return rows


def run_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-n", type=int, default=50_000)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated run here (reused if present)")
    args = ap.parse_args()

    from soi.analysis.categories import soi_categories
    from soi.analysis.metrics import all_metrics
    from soi.simulate import simulate_run
    from soi.store import load_dynamics

    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="soi-bench-")
        workdir = Path(tmp)
    else:
        workdir = args.workdir
    run = workdir / f"run-{args.n}x{args.checkpoints}x{args.classes}"
    try:
        if not (run / "run.json").is_file():
            t = time.perf_counter()
            simulate_run(run, n=args.n, checkpoints=args.checkpoints, classes=args.classes, seed=0,
                         groups={"task": ["a", "b", "c"], "language": ["en", "fa", "de"]})
            print(f"generated {run} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        soi_bin = shutil.which("soi") or "soi"
        cmd = [soi_bin, "analyze", str(run), "--quiet"]
        run_process(cmd)  # warm the page cache
        walls, rss = [], []
        for _ in range(args.repeats):
            w, r = run_process(cmd)
            walls.append(w)
            rss.append(r)

        # side by side on the same examples, same process: vectorised soi vs per-example loop
        dyn = load_dynamics(run)
        k = min(args.loop_n, args.n)
        p, c, m = dyn.p_gold[:k], dyn.correct[:k], dyn.margin[:k]
        t = time.perf_counter()
        all_metrics(p, c, m)
        soi_categories(c)
        soi_s = time.perf_counter() - t
        t = time.perf_counter()
        loop_metrics(p, c, m)
        loop_s = time.perf_counter() - t
        dynamics_bytes = sum(f.stat().st_size for f in (run / "dynamics").iterdir())
        result = {
            "benchmark": "soi analyze",
            "n_examples": args.n,
            "checkpoints": args.checkpoints,
            "classes": args.classes,
            "repeats": args.repeats,
            "analyze_wall_s_median": round(statistics.median(walls), 3),
            "analyze_wall_s_min": round(min(walls), 3),
            "analyze_peak_rss_mb_max": round(max(rss), 1),
            "loop_n": k,
            "metrics_soi_s": round(soi_s, 4),
            "metrics_loop_s": round(loop_s, 3),
            "speedup_same_work": round(loop_s / soi_s, 1),
            "loop_extrapolated_full_s": round(loop_s * args.n / k, 1),
            "speedup_vs_whole_process": round(loop_s * args.n / k / statistics.median(walls), 1),
            "dynamics_bytes_per_example_checkpoint": round(dynamics_bytes / (args.n * args.checkpoints), 2),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        }
        print(json.dumps(result, indent=2))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
