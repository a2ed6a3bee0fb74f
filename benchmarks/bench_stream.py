"""Benchmark out-of-core `soi analyze --memory-limit`: whole process on 10M examples x 10 checkpoints x 3 classes.

Prints one JSON object. Usage::

    python benchmarks/bench_stream.py                     # 10M x 10 x 3 (issue target: peak RSS <= 2 GB, >= 10M/s)
    python benchmarks/bench_stream.py --n 100000000       # 1B example-checkpoints (~12 GB of disk)
    python benchmarks/bench_stream.py --n 1000000 --skip-small
    python benchmarks/bench_stream.py --timeline          # per-thread phase times of one in-process run

The large store is generated once into ``--workdir`` (default ``/tmp/soi-bench-stream``, reused when present) with
the chunked writers (``soi.store.shards.ChunkedExamplesWriter`` / ``ChunkedPartWriter``), chunk by chunk, with the
learning model of ``soi.simulate`` (3 tasks x 3 languages). Side by side in the same run, on a 1M x 10 store
(``soi.simulate.simulate_run``, as ``bench_analyze.py``): the in-memory ``soi analyze`` and the streamed one, whole
processes, and a check that both write the same summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TAGS = {"task": ["a", "b", "c"], "language": ["en", "fa", "de"]}


CPU_S: list[float] = []
"""CPU seconds (user + system) of every child run, in order (load-independent, unlike wall time)."""


def run_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process (its CPU seconds appended to ``CPU_S``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    CPU_S.append(usage.ru_utime + usage.ru_stime)
    return wall, usage.ru_maxrss / 1024


def _chunk_data(seed: int, classes: int, k: int, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Examples ``lo .. hi`` (chunk ``k``): true class, gold (5% flipped), difficulty, tags; seeded per chunk."""
    rng = np.random.default_rng([seed, k])
    m = hi - lo
    true = rng.integers(0, classes, m)
    flip = rng.random(m) < 0.05
    gold = np.where(flip, (true + rng.integers(1, classes, m)) % classes, true)
    return {"true": true, "gold": gold, "d": rng.normal(0.0, 1.0, m) - rng.normal(0.0, 0.3, m),
            **{key: rng.integers(0, len(v), m) for key, v in TAGS.items()}}


def _write_checkpoint(job: tuple[Path, int, int, int, int, int, int]) -> None:
    """One dynamics part, chunk by chunk (the learning model of soi.simulate)."""
    from soi.store import dynamics_table, rows_from_logits
    from soi.store.shards import ChunkedPartWriter

    run, n, checkpoints, classes, chunk, seed, t = job
    with ChunkedPartWriter(run, checkpoint=t) as part:
        for k, lo in enumerate(range(0, n, chunk)):
            hi = min(lo + chunk, n)
            d = _chunk_data(seed, classes, k, lo, hi)
            rng = np.random.default_rng([seed, k, t + 1])
            logits = rng.normal(0.0, 1.0, (hi - lo, classes)).astype(np.float32)
            logits[np.arange(hi - lo), d["true"]] += (4.0 * (t + 1) / checkpoints * (1.0 - d["d"])).astype(np.float32)
            rows = rows_from_logits(logits, d["gold"])
            part.write(dynamics_table(checkpoint=t, step=(t + 1) * 100, idx=np.arange(lo, hi), gold=d["gold"],
                                      sort=False, **rows))


def generate(run: Path, n: int, checkpoints: int, classes: int, chunk: int, seed: int = 0, procs: int = 1) -> float:
    """Write a synthetic run chunk by chunk (memory ~ one chunk per process); return the seconds it took.

    Resumable: an existing ``examples.parquet`` of ``n`` rows and finished parts are kept; ``procs`` processes
    write the missing checkpoints.
    """
    import multiprocessing

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from soi.store import RunMeta, examples_table
    from soi.store.meta import part_name
    from soi.store.shards import ChunkedExamplesWriter

    start = time.perf_counter()
    labels = [f"class_{i}" for i in range(classes)]
    meta = RunMeta(tasks={t: labels for t in TAGS["task"]}, setting="synthetic-large", seed=seed, model="simulated",
                   extra={"simulated": {"n": n, "checkpoints": checkpoints, "chunked": chunk}})
    run.mkdir(parents=True, exist_ok=True)
    ex_path = run / "examples.parquet"
    if not (ex_path.is_file() and pq.ParquetFile(ex_path).metadata.num_rows == n):
        with ChunkedExamplesWriter(run) as ex:
            for k, lo in enumerate(range(0, n, chunk)):
                hi = min(lo + chunk, n)
                d = _chunk_data(seed, classes, k, lo, hi)
                ids = pc.binary_join_element_wise("ex-", pa.array(np.arange(lo, hi)).cast(pa.string()), "")
                ex.write(examples_table(ids, d["gold"], task=np.asarray(TAGS["task"])[d["task"]],
                                        language=np.asarray(TAGS["language"])[d["language"]]))
    jobs = [(run, n, checkpoints, classes, chunk, seed, t) for t in range(checkpoints)
            if not (run / "dynamics" / part_name(t, 0)).is_file()]
    if procs > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            pool.map(_write_checkpoint, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_checkpoint(job)
    meta.save(run)
    return time.perf_counter() - start


def disk_bytes(run: Path) -> dict[str, int]:
    dyn = sum(f.stat().st_size for f in (run / "dynamics").iterdir())
    out = {"dynamics": dyn, "examples": (run / "examples.parquet").stat().st_size}
    analysis = run / "analysis"
    if analysis.is_dir():
        out["analysis"] = sum(f.stat().st_size for f in analysis.iterdir())
    return out


def control_parallelism(threads: int = 2, seconds: float = 1.5) -> float:
    """CPU seconds per wall second that ``threads`` GIL-free NumPy threads (``np.sort``) get right now: what the
    machine gives one process at this moment (on a shared machine with autogrouped scheduling, ~1 while another
    session is busy, whatever its nice level)."""
    import threading

    a = np.random.default_rng(0).random(1 << 20)
    stop = time.perf_counter() + seconds

    def spin() -> None:
        while time.perf_counter() < stop:
            np.sort(a)

    pool = [threading.Thread(target=spin) for _ in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def timeline(run: Path, memory_limit: str, workers: int) -> dict:
    """``stream_analysis`` in this process with every phase timed per thread: wall and thread-CPU seconds of
    reading (``read_shard``: decode + validate + fill), kernels (``per_example_table``), id hashes, the main
    thread's merge and Parquet write; the pipeline's parallelism (process CPU / wall) next to the control's."""
    import threading
    from collections import defaultdict

    import pyarrow.parquet as pq

    import soi.analysis.streaming as streaming

    spans: list[tuple[str, str, float, float, float]] = []

    def timed(owner, name: str, label: str):
        real = getattr(owner, name)

        def wrapper(*a, **k):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return real(*a, **k)
            finally:
                spans.append((threading.current_thread().name, label, t0, time.perf_counter(),
                              time.thread_time() - c0))
        return real, wrapper

    patches = [(streaming, "read_shard", "read"), (streaming, "per_example_table", "kernels"),
               (streaming, "id_hashes", "id_hashes"), (streaming.ShardMerger, "add", "merge"),
               (pq.ParquetWriter, "write_table", "write"), (streaming, "analyze_shard", "shard")]
    saved = []
    for owner, name, label in patches:
        real, wrapper = timed(owner, name, label)
        saved.append((owner, name, real))
        setattr(owner, name, wrapper)
    control_before = control_parallelism(workers)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        _, info = streaming.stream_analysis(run, memory_limit=memory_limit, workers=workers)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for owner, name, real in saved:
            setattr(owner, name, real)
    control_after = control_parallelism(workers)
    phases: dict[str, dict[str, float]] = defaultdict(lambda: {"wall_s": 0.0, "thread_cpu_s": 0.0, "n": 0})
    for thread, label, a, b, c in spans:
        who = "main" if thread == "MainThread" else "workers"
        x = phases[f"{who}:{label}"]
        x["wall_s"] += b - a
        x["thread_cpu_s"] += c
        x["n"] += 1
    first = min(a for _, _, a, _, _ in spans)
    shards = sorted((round(a - first, 2), round(b - first, 2), thread.rsplit("_", 1)[-1])
                    for thread, label, a, b, _ in spans if label == "shard")
    return {"shards": info.n_shards, "shard_size": info.shard_size, "workers": info.workers,
            "wall_s": round(wall, 2), "process_cpu_s": round(cpu, 2), "pipeline_parallelism": round(cpu / wall, 2),
            "control_parallelism_before_after": [round(control_before, 2), round(control_after, 2)],
            "phases": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in sorted(phases.items())},
            "shard_spans_s": shards,
            "note": "thread_cpu_s excludes Arrow's own decode threads (counted in process_cpu_s)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--extra-limits", nargs="*", default=["1GB"], help="also one run at each of these bounds")
    ap.add_argument("--chunk", type=int, default=1 << 20, help="examples per generated chunk")
    ap.add_argument("--gen-procs", type=int, default=1, help="processes writing the generated checkpoints")
    ap.add_argument("--small-n", type=int, default=1_000_000)
    ap.add_argument("--small-repeats", type=int, default=5)
    ap.add_argument("--skip-small", action="store_true", help="skip the 1M side-by-side part")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/soi-bench-stream"))
    ap.add_argument("--keep", action="store_true", help="keep the generated stores (default: keep the large one)")
    ap.add_argument("--timeline", action="store_true",
                    help="only time the phases of one in-process streamed analysis, per thread (and a GIL-free "
                         "control of the CPU the machine gives now)")
    args = ap.parse_args()

    soi_bin = shutil.which("soi") or "soi"
    result: dict = {"benchmark": "soi analyze --memory-limit (streamed)", "load_before": os.getloadavg()}
    run = args.workdir / f"run-{args.n}x{args.checkpoints}x{args.classes}"
    if not (run / "run.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        result["generate_s"] = round(generate(run, args.n, args.checkpoints, args.classes, args.chunk,
                                              procs=args.gen_procs), 1)
        print(f"generated {run} in {result['generate_s']} s", file=sys.stderr)
    if args.timeline:
        result |= {"n_examples": args.n, "checkpoints": args.checkpoints, "memory_limit": args.memory_limit,
                   **timeline(run, args.memory_limit, args.workers), "load_after": os.getloadavg()}
        print(json.dumps(result, indent=2))
        return
    stream_cmd = [soi_bin, "analyze", str(run), "--quiet", "--memory-limit", args.memory_limit,
                  "--workers", str(args.workers)]
    walls, rss, cpu = [], [], []
    for _ in range(args.repeats):
        w, r = run_process(stream_cmd)
        walls.append(w)
        rss.append(r)
        cpu.append(CPU_S[-1])
    ec = args.n * args.checkpoints
    result |= {
        "n_examples": args.n, "checkpoints": args.checkpoints, "classes": args.classes,
        "example_checkpoints": ec, "memory_limit": args.memory_limit, "workers": args.workers,
        "command": " ".join(stream_cmd[1:]),
        "stream_wall_s": [round(w, 2) for w in walls],
        "stream_wall_s_median": round(statistics.median(walls), 2),
        "stream_peak_rss_mb_max": round(max(rss), 1),
        "stream_cpu_s": [round(c, 2) for c in cpu],
        "stream_cpu_s_per_10m_example_checkpoints": round(statistics.median(cpu) / (ec / 1e7), 2),
        "stream_example_checkpoints_per_s": round(ec / statistics.median(walls)),
        "disk_bytes": disk_bytes(run),
        "dynamics_bytes_per_example_checkpoint": round(disk_bytes(run)["dynamics"] / ec, 2),
    }
    result["extra_limits"] = {}

    def summary_of(path: Path) -> dict:
        summary = json.loads((path / "analysis" / "summary.json").read_text())
        summary.pop("run")
        return summary

    first = summary_of(run)
    for limit in args.extra_limits:
        cmd = [soi_bin, "analyze", str(run), "--quiet", "--memory-limit", limit, "--workers", str(args.workers)]
        w, r = run_process(cmd)
        result["extra_limits"][limit] = {"wall_s": round(w, 2), "peak_rss_mb": round(r, 1),
                                         "cpu_s": round(CPU_S[-1], 2), "summary_equal": summary_of(run) == first}
    if not args.skip_small:
        from soi.simulate import simulate_run
        from soi.store import writer as store_writer

        small = args.workdir / f"small-{args.small_n}x{args.checkpoints}x{args.classes}"
        # the same run in the layout of soi before ROW_BLOCK (one row group per 1,048,576 rows, pyarrow's default)
        old = args.workdir / f"small-old-layout-{args.small_n}x{args.checkpoints}x{args.classes}"
        for path, block in ((small, store_writer.ROW_BLOCK), (old, 1 << 30)):
            if not (path / "run.json").is_file():
                shutil.rmtree(path, ignore_errors=True)
                saved, store_writer.ROW_BLOCK = store_writer.ROW_BLOCK, block
                try:
                    simulate_run(path, n=args.small_n, checkpoints=args.checkpoints, classes=args.classes, seed=0,
                                 groups=TAGS)
                finally:
                    store_writer.ROW_BLOCK = saved
        cmds = {
            "memory": [soi_bin, "analyze", str(small), "--quiet"],
            "memory_old_layout": [soi_bin, "analyze", str(old), "--quiet"],
            "stream": [soi_bin, "analyze", str(small), "--quiet", "--memory-limit", args.memory_limit,
                       "--workers", str(args.workers)],
        }
        run_process(cmds["memory"])  # warm the page cache
        run_process(cmds["memory_old_layout"])
        timing: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        cpus: dict[str, list[float]] = {k: [] for k in cmds}
        summaries = {}
        for _ in range(args.small_repeats):  # alternate, so load changes hit all alike
            for key, cmd in cmds.items():
                timing[key].append(run_process(cmd))
                cpus[key].append(CPU_S[-1])
                summaries[key] = summary_of(Path(cmd[2]))
        result["small"] = {"n_examples": args.small_n, "repeats": args.small_repeats,
                           "summaries_equal": summaries["memory"] == summaries["stream"] == summaries[
                               "memory_old_layout"]}
        for key in cmds:
            result["small"] |= {
                f"{key}_wall_s_median": round(statistics.median(w for w, _ in timing[key]), 3),
                f"{key}_wall_s_min": round(min(w for w, _ in timing[key]), 3),
                f"{key}_peak_rss_mb_max": round(max(r for _, r in timing[key]), 1),
                f"{key}_cpu_s_median": round(statistics.median(cpus[key]), 3),
            }
        if not args.keep:
            shutil.rmtree(small, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    result |= {"load_after": os.getloadavg(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
