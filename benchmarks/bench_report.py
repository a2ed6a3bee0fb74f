"""Benchmark `soi report`: build time and HTML size for N examples x E checkpoints, and the page in chromium.

Prints one JSON object. Usage::

    python benchmarks/bench_report.py                    # 100,000 x 10 (simulated, analysed), 3 builds
    python benchmarks/bench_report.py --n 20000 --repeats 1
    python benchmarks/bench_report.py --n 16000 --seeds 3  # seed sets: 2 settings x 3 seeds x 16,000, one compare

Build: ``write_report`` on one analysed simulated run (3 tasks x 2 languages, no text), median of
``--repeats`` builds without figures, plus one build with the PNG figures; each build is a call in a fresh process
(benchmarks/harness.py: the call's wall and CPU seconds, the process's peak RSS). Browser (when chromium and
Playwright are found, as in tests/test_report_browser.py): navigation start to the page's "rendered" mark
(``window.__soiReport.readyAt``: JSON parsed, columns decoded, every section drawn), median of
``--browser-repeats`` fresh page loads, and the time of three interactions on all N examples.

With ``--seeds S`` (> 1) the report covers a directory of two seed folders (single, and multi with a planted
effect on a third of the examples; S seeds x N examples each) and their ``compare_runs`` output, so the page also
draws the seed stability, the reseeding null and the test-set views; the switch of the transitions group (which
redraws the three null heatmaps) is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from harness import machine, run_function


def find_chromium() -> str | None:
    if os.environ.get("SOI_CHROMIUM"):
        return os.environ["SOI_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


INTERACT = """() => {
  const t = {};
  const fire = (id, value) => {
    const s = document.getElementById(id); s.value = value; s.dispatchEvent(new Event('change'));
  };
  let t0 = performance.now(); fire('filter-soi', '4'); t.filter_category_ms = performance.now() - t0;
  t0 = performance.now(); document.querySelector('#browser-table th[data-col=confidence]').click();
  t.sort_confidence_ms = performance.now() - t0;
  t0 = performance.now(); fire('datamap-key', document.getElementById('datamap-key').options[1].value);
  t.datamap_per_group_ms = performance.now() - t0;
  const g = document.getElementById('transitions-group');
  if (g && g.options.length > 1) {
    t0 = performance.now(); fire('transitions-group', g.options[1].value);
    t.transitions_group_ms = performance.now() - t0;
  }
  t.matching = +document.getElementById('browser-count').dataset.count;
  return t;
}"""


def build(run: str, out: str | None, figures: bool) -> str:
    """``write_report`` of ``run`` (timed in its own process by :func:`harness.run_function`); the HTML's path."""
    from soi.report import write_report

    return str(write_report(run, out, figures=figures))


def compare(a: str, b: str, out: str) -> None:
    """``compare_runs`` of two seed folders, without heatmaps (timed in its own process)."""
    from soi.analysis.compare import compare_runs

    compare_runs(a, b, out, heatmaps=False)


def browser_figures(html: Path, repeats: int) -> dict:
    exe = find_chromium()
    if exe is None:
        return {"browser": "no chromium found"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"browser": "playwright not installed"}
    loads, renders = [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        for _ in range(repeats):
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(html.resolve().as_uri())
            page.wait_for_function("window.__soiReport && window.__soiReport.ready", timeout=120_000)
            info = page.evaluate("window.__soiReport")
            loads.append(info["readyAt"] / 1000)
            renders.append(info["renderMs"] / 1000)
            last = page
        interactions = last.evaluate(INTERACT)
        version = b.version
        b.close()
    return {"browser": f"chromium {version} (headless)", "load_to_rendered_s": round(statistics.median(loads), 3),
            "load_to_rendered_s_all": [round(x, 3) for x in loads],
            "script_s": round(statistics.median(renders), 3),
            "interactions_ms": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in interactions.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--browser-repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1, help="Seeds per setting (> 1: two seed folders + compare).")
    ap.add_argument("--keep", type=Path, default=None, help="Also copy the report here.")
    args = ap.parse_args()

    import numpy as np

    from soi.analysis.per_example import analyze_run
    from soi.simulate import simulate_run, simulate_seed_folder

    groups = {"task": ["a", "b", "c"], "language": ["en", "de"]}
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.seeds > 1:
            run = Path(tmp) / "study"
            planted = np.zeros(args.n, bool)
            planted[: args.n // 3] = True
            seeds = list(range(args.seeds))
            for name, kw in (("single", {"setting": "single"}),
                             ("multi", {"setting": "multi-task", "planted": planted, "planted_shift": 1.0})):
                folder = simulate_seed_folder(run / "runs" / name, seeds, n=args.n, checkpoints=args.checkpoints,
                                              classes=3, groups=groups, run_effect=0.1, **kw)
                for sd in seeds:
                    analyze_run(folder / f"seed-{sd}")
            done = run_function(compare, str(run / "runs" / "single"), str(run / "runs" / "multi"),
                                str(run / "compare" / "single__vs__multi"))
            extra = {"seeds": args.seeds, "compare_s": round(done.wall_s, 3), "compare_cpu_s": round(done.cpu_s, 3),
                     "compare_peak_rss_mb": round(done.peak_rss_mb, 1)}
        else:
            run = simulate_run(Path(tmp) / "run", n=args.n, checkpoints=args.checkpoints, classes=3, seed=0,
                               groups=groups)
            analyze_run(run)
        builds = [run_function(build, str(run), None, False) for _ in range(args.repeats)]
        html = Path(builds[-1].value)
        with_figures = run_function(build, str(run), str(Path(tmp) / "with-figures" / "report.html"), True)
        size = html.stat().st_size
        n_examples = args.n * (2 * args.seeds if args.seeds > 1 else 1)
        result = {
            "benchmark": "report", "n": args.n, "checkpoints": args.checkpoints, **extra,
            "build_s": round(statistics.median(b.wall_s for b in builds), 3),
            "build_s_all": [round(b.wall_s, 3) for b in builds],
            "build_cpu_s": round(statistics.median(b.cpu_s for b in builds), 3),
            "build_peak_rss_mb": round(max(b.peak_rss_mb for b in builds), 1),
            "build_with_figures_s": round(with_figures.wall_s, 3),
            "build_with_figures_cpu_s": round(with_figures.cpu_s, 3),
            "build_with_figures_peak_rss_mb": round(with_figures.peak_rss_mb, 1),
            "html_bytes": size, "html_mb": round(size / 1e6, 2), "bytes_per_example": round(size / n_examples, 1),
        }
        result |= browser_figures(html, args.browser_repeats)
        if args.keep:
            shutil.copyfile(html, args.keep)
    result |= machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
