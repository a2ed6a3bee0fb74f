"""The benchmarks' one process-timing harness: a command, or a function, in a fresh process.

Every measurement has the wall seconds, the CPU seconds (user + system of the process and the children it waited
for: less sensitive than wall time to other load on a shared machine) and the peak RSS of the process, so a figure
in the docs can say all three. Used by bench_seeds.py, bench_report.py and bench_import_cartography.py. As a script
it times one command and prints JSON::

    python benchmarks/harness.py --repeats 3 -- soi analyze RUN_DIR --quiet
    {"median_s": 1.93, "min_s": 1.9, "cpu_s_median": 1.85, "peak_rss_mb": 611.2, ..., "load_average": [...]}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measured:
    """One measured process: ``wall_s``, ``cpu_s`` (user + system), ``peak_rss_mb``, and what it gave back
    (a command's stdout when captured, a function's return value)."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    value: Any = None

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


def run_command(cmd: Sequence[str], *, capture: bool = False, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` once and measure the whole process (interpreter start, imports, work, exit).

    Its stdout is discarded, or returned as ``value`` with ``capture``; a non-zero exit stops the benchmark with
    the command and the end of its stderr.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out if capture else subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own rusage (waitpid would lose it)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
        out.seek(0)
        value = out.read().decode("utf-8", "replace") if capture else None
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, value)


def _cpu(kind: int) -> float:
    r = resource.getrusage(kind)
    return r.ru_utime + r.ru_stime


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        wall = time.perf_counter() - start
        cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0
        conn.send(("ok", Measured(wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, value)))
    except BaseException as exc:  # report any failure to the parent, which stops the benchmark
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_function(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Measured:
    """Call ``fn(*args, **kwargs)`` once in a fresh (spawned) Python process and measure the call itself.

    ``wall_s`` and ``cpu_s`` cover the call (not the interpreter start and imports); ``peak_rss_mb`` is the
    process's peak, unpolluted by the benchmark's own memory; ``value`` is the return value (keep it small: it
    is pickled back). ``fn`` must be importable (a module-level function, also in a benchmark script).
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    child.close()
    try:
        status, got = parent.recv()
    except EOFError:
        status, got = "error", "the process died without a result"
    proc.join()
    if status != "ok":
        raise SystemExit(f"{getattr(fn, '__name__', fn)} failed in its process (exit {proc.exitcode}): {got}")
    return got


def summarize(runs: Sequence[Measured]) -> dict[str, Any]:
    """Median and best wall seconds, median CPU seconds and the largest peak RSS of repeated runs (and all walls)."""
    walls = [r.wall_s for r in runs]
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "cpu_s_median": round(statistics.median(r.cpu_s for r in runs), 3),
            "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1), "wall_s_all": [round(w, 3) for w in walls]}


def repeat_command(cmd: Sequence[str], repeats: int) -> dict[str, Any]:
    """:func:`summarize` of ``repeats`` runs of ``cmd``."""
    return summarize([run_command(cmd) for _ in range(repeats)])


@contextlib.contextmanager
def workdir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """The benchmark's folder: ``keep`` (``--workdir``: created if missing; what is generated there stays and is
    reused by the next run), else a new temporary folder, removed at the end."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> dict[str, Any]:
    """Python version, CPU count and the load average now (report it next to wall times)."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": sys.platform,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd or args.repeats < 1:
        ap.error("give --repeats >= 1 and a command after --")
    print(json.dumps({"command": cmd, "repeats": args.repeats, **repeat_command(cmd, args.repeats), **machine()}))


if __name__ == "__main__":
    main()
