"""Benchmark seed-set analysis: `soi compare` of 5 + 5 seeds and `soi analyze` (consensus) of 5 seeds.

Prints one JSON object. Usage::

    python benchmarks/bench_seeds.py                  # 5 + 5 seeds x 1,000,000 examples x 10 checkpoints
    python benchmarks/bench_seeds.py --n 100000 --repeats 1 --workdir /tmp/seeds   # keep the runs

Targets (issue 11): the whole `soi compare A B --out` process, including the reseeding null, its tests
and the heatmaps, <= 15 s and peak RSS <= 3 GB; the whole `soi analyze SEEDS_DIR` (consensus) <= 10 s.
Wall time, CPU seconds (user + system, less sensitive to other load on the machine) and peak RSS of each
process are reported (benchmarks/harness.py).
Both are measured twice, side by side: without cached per-seed analyses (every seed's dynamics analysed
in the process) and with them (each seed's ``analysis/per_example.parquet`` written by `soi analyze
RUN_DIR`, as `soi run` does, and reused when fresh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from harness import machine, repeat_command, run_command, workdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated runs here (reused if present)")
    args = ap.parse_args()

    from soi.simulate import simulate_seed_folder

    seeds = list(range(1, args.seeds + 1))
    groups = {"task": ["a", "b", "c"], "language": ["en", "fa", "de"]}
    with workdir(args.workdir, "soi-bench-seeds-") as folder_root:
        root = folder_root / f"seeds-{args.seeds}x{args.n}x{args.checkpoints}"
        a, b = root / "single", root / "multi"
        t = time.perf_counter()
        for folder, skill in ((a, 1.0), (b, 1.3)):
            todo = [s for s in seeds if not (folder / f"seed-{s}" / "run.json").is_file()]
            if todo:
                simulate_seed_folder(folder, todo, n=args.n, checkpoints=args.checkpoints, groups=groups,
                                     skill=skill, run_effect=0.1, setting=folder.name)
        print(f"runs ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        soi_bin = shutil.which("soi") or str(Path(sys.executable).with_name("soi"))
        out = root / "compare"
        compare = [soi_bin, "compare", str(a), str(b), "--out", str(out), "--quiet"]
        consensus = [soi_bin, "analyze", str(a), "--quiet"]

        def clear_caches() -> None:
            for folder in (a, b):
                for s in seeds:
                    shutil.rmtree(folder / f"seed-{s}" / "analysis", ignore_errors=True)
                shutil.rmtree(folder / "analysis", ignore_errors=True)

        clear_caches()
        run_command(compare)  # warm the page cache
        uncached = {"compare": repeat_command(compare, args.repeats),
                    "consensus": repeat_command(consensus, args.repeats)}
        for folder in (a, b):  # per-seed analyses, as soi run writes them
            for s in seeds:
                run_command([soi_bin, "analyze", str(folder / f"seed-{s}"), "--quiet"])
        cached = {"compare": repeat_command(compare, args.repeats),
                  "consensus": repeat_command(consensus, args.repeats)}
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        overall = stats["groups"][0]
        result = {
            "benchmark": "seed sets: soi compare (5 + 5 seeds) and soi analyze SEEDS_DIR (consensus)",
            "n": args.n, "checkpoints": args.checkpoints, "seeds_per_setting": args.seeds,
            "groups": len(stats["groups"]), "run_pairs": (2 * args.seeds) * (2 * args.seeds - 1) // 2,
            "uncached_per_seed_analyses": uncached,
            "cached_per_seed_analyses": cached,
            "targets": {"compare_s": 15, "compare_rss_mb": 3072, "consensus_s": 10},
            "overall_seed_null_p": overall["seed_null"]["overall"]["p_value"],
            "overall_significant_cells": len(overall["seed_null"]["significant_cells"]),
            "repeats": args.repeats,
            **machine(),
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
