"""Benchmark the LLM judge (:class:`soi.gen.scorers.OpenAIJudge`) against a local stub endpoint with a fixed latency.

Prints one JSON object: seconds to judge ``--n`` responses with 1 worker and with ``--workers`` workers (uncached,
each against a fresh cache), and a rerun answered from the on-disk cache (no request), side by side in one
process. The stub answers after ``--latency`` seconds, standing in for a served model's time per reply. Usage::

    python benchmarks/bench_judge.py                     # 200 responses, 20 ms latency, 1 vs 8 workers
    python benchmarks/bench_judge.py --n 500 --latency 0.05 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from soi.gen.scorers import OpenAIJudge


def serve(latency: float) -> tuple[ThreadingHTTPServer, list[int]]:
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                count[0] += 1
            time.sleep(latency)
            payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                           "content": "Fine.\nRating: [[4]]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    server, count = serve(args.latency)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    rows = [{"prompt": f"Question {i}: what is {i} + {i}?", "response": f"#### {2 * i}", "language": "en"}
            for i in range(args.n)]
    preds = [f"The answer is {2 * i}. #### {2 * i}" for i in range(args.n)]
    out: dict[str, Any] = {"n": args.n, "latency_s": args.latency, "workers": args.workers,
                           "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers in (("one_worker", 1), ("parallel", args.workers)):
            judge = OpenAIJudge(url, "stub", cache_dir=Path(tmp) / label, workers=workers)
            before = count[0]
            t0 = time.perf_counter()
            judge.evaluate(rows, preds)
            out[f"{label}_s"] = round(time.perf_counter() - t0, 3)
            out[f"{label}_requests"] = count[0] - before
        cached = OpenAIJudge(url, "stub", cache_dir=Path(tmp) / "parallel", workers=args.workers)
        before = count[0]
        t0 = time.perf_counter()
        cached.evaluate(rows, preds)
        out["cached_rerun_s"] = round(time.perf_counter() - t0, 3)
        out["cached_rerun_requests"] = count[0] - before
    out["speedup_parallel"] = round(out["one_worker_s"] / out["parallel_s"], 2)
    out["floor_one_worker_s"] = round(args.n * args.latency, 3)
    server.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
