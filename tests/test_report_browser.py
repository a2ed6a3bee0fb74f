"""The HTML report in a real headless browser (Debian's chromium driven by Playwright).

Skipped when no chromium (or Playwright) is found, unless ``SOI_REQUIRE_BROWSER=1`` (CI), where that fails.
``SOI_CHROMIUM`` names the browser binary explicitly.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from report_common import report_fixtures
from soi.report import read_report_data, write_report
from test_report import XSS, build_study, transfer_only_study

REQUIRED = os.environ.get("SOI_REQUIRE_BROWSER") == "1"
INK_DIFF = 40
"""A pixel is ink when a channel differs from the white background by more than this (light grid lines do not)."""
INSET = 3
"""Pixels cut from each side of a plot box before counting (the frame line sits on the box edge)."""


def find_chromium() -> str | None:
    """``$SOI_CHROMIUM``, else the first of chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("SOI_CHROMIUM"):
        exe = os.environ["SOI_CHROMIUM"]
        return exe if os.access(exe, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"SOI_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = find_chromium()
    if exe is None:
        _unavailable("no chromium found (apt-get install chromium, or set SOI_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


study, report, _ = report_fixtures(build_study, "bstudy", "toy", figures=False)


class Loaded:
    """A page with the report loaded, and what it logged and requested while loading."""

    def __init__(self, page: Any, errors: list[str], requests: list[str]) -> None:
        self.page, self.errors, self.requests = page, errors, requests


def open_report(browser: Any, path: Path) -> Loaded:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_function("window.__soiReport && window.__soiReport.ready", timeout=30_000)
    return Loaded(page, errors, requests)


@pytest.fixture
def loaded(browser: Any, report: Path) -> Iterator[Loaded]:
    got = open_report(browser, report)
    yield got
    got.page.close()


# ------------------------------------------------------------------------------------------- pixel checker


def plot_ink(handle: Any) -> tuple[int, int]:
    """(ink pixels, all pixels) inside a plot box (its frame cut off), from a real screenshot of the page."""
    from PIL import Image

    handle.scroll_into_view_if_needed()
    img = np.asarray(Image.open(io.BytesIO(handle.screenshot())).convert("RGB"), np.int16)
    img = img[INSET:-INSET, INSET:-INSET]
    ink = (np.abs(img - 255).max(axis=2) > INK_DIFF).sum()
    return int(ink), int(img.shape[0] * img.shape[1])


def blank_figures(page: Any) -> list[str]:
    """``name#i`` of every figure with a plot box holding (almost) no ink; a figure without a plot box counts too."""
    blank = []
    for i, fig in enumerate(page.query_selector_all("[data-figure]")):
        name = fig.get_attribute("data-figure")
        plots = fig.query_selector_all("[data-plot]")
        if not plots:
            blank.append(f"{name}#{i} (no plot box)")
        for plot in plots:
            ink, total = plot_ink(plot)
            if ink < max(25, 0.002 * total):
                blank.append(f"{name}#{i} ({ink} ink pixels of {total})")
    return blank


def figure_names(page: Any) -> list[str]:
    return [f.get_attribute("data-figure") for f in page.query_selector_all("[data-figure]")]


# ------------------------------------------------------------------------------------------- tests


def test_loads_offline_without_errors(loaded: Loaded, report: Path) -> None:
    assert loaded.errors == []
    assert loaded.requests == [report.resolve().as_uri()]
    assert loaded.page.evaluate("window.__xss") is None
    assert loaded.page.evaluate("window.__soiReport.examples") == 960
    for section in ("overview", "datamaps", "shares", "transitions", "two-stage", "transfer", "examples"):
        assert loaded.page.query_selector(f"section#{section}") is not None, section
    assert loaded.page.query_selector(".error") is None


def test_main_figures_render_non_blank(loaded: Loaded) -> None:
    page = loaded.page
    names = figure_names(page)
    assert names.count("datamap") == 4  # 4 run directories side by side
    for name in ("eval", "shares", "transitions", "two-stage", "transfer-curves", "transfer-heatmap",
                 "transfer-intervals"):  # a classification k_grid family: gains with intervals
        assert names.count(name) == 1, name
    assert blank_figures(page) == []
    # every control state of the data maps, the transitions and the shares draws something too
    page.select_option("#datamap-mode", "density")
    page.select_option("#datamap-key", "language")
    assert figure_names(page).count("datamap") == 8
    page.select_option("#datamap-colour", "soi")
    page.select_option("#transitions-comparison", "1")
    page.select_option("#transitions-group", label="task = b")
    page.select_option("#shares-key", "task")
    assert blank_figures(page) == []
    assert {f.get_attribute("data-mode") for f in page.query_selector_all("[data-figure=datamap]")} == {"density"}
    assert loaded.errors == []


def test_checker_flags_an_empty_figure(loaded: Loaded) -> None:
    page = loaded.page
    assert blank_figures(page) == []
    # a data map whose canvas holds nothing
    page.evaluate("""() => { const c = document.querySelector('[data-figure=datamap] canvas');
                             c.getContext('2d').clearRect(0, 0, c.width, c.height); }""")
    assert [b.split(" ")[0] for b in blank_figures(page)] == [f"datamap#{figure_names(page).index('datamap')}"]
    # share bars with every mark removed (the plot box stays)
    page.evaluate("""() => document.querySelectorAll('[data-figure=shares] svg > :not([data-plot])')
                             .forEach((n) => n.remove())""")
    flagged = [b.split("#")[0] for b in blank_figures(page)]
    assert flagged == ["datamap", "shares"]
    # a figure that lost its plot box
    page.evaluate("() => document.querySelector('[data-figure=eval] [data-plot]').remove()")
    assert any(b.startswith("eval#") and "no plot box" in b for b in blank_figures(page))


def _python_count(study: Path, data: dict[str, Any], *, category: str, query: str, run: int | None = None,
                  conf_min: float | None = None) -> int:
    """The example browser's filter, computed from the runs' per_example.parquet files."""
    n = 0
    for r in data["runs"]:
        if run is not None and r["id"] != run:
            continue
        t = pq.read_table(study / r["dir"] / "analysis" / "per_example.parquet")
        soi = np.asarray(t["soi"].cast(pa.string()).to_pylist())
        hay = [f"{i}\x01{x or ''}".lower() for i, x in zip(t["example_id"].to_pylist(), t["text"].to_pylist(),
                                                            strict=True)]
        keep = (soi == category) & np.asarray([query in h for h in hay])
        if conf_min is not None:
            conf = t["confidence"].to_numpy()
            assert not np.any(np.abs(conf - conf_min) < 1e-4), "threshold too close to a value for quantised data"
            keep &= conf >= conf_min
        n += int(keep.sum())
    return n


def _count(page: Any, expected: int) -> int:
    """The browser's matching count once the (debounced) filter has run."""
    deadline = time.monotonic() + 5
    while True:
        got = int(page.get_attribute("#browser-count", "data-count"))
        if got == expected or time.monotonic() > deadline:
            return got
        page.wait_for_timeout(50)


def test_example_browser_filters(loaded: Loaded, study: Path, report: Path) -> None:
    page = loaded.page
    data = read_report_data(report)
    assert _count(page, 960) == 960
    assert len(page.query_selector_all("#browser-table tbody tr")) == 100
    page.click("#browser-next")
    assert page.inner_text("#browser-page") == "page 2 of 10"
    assert len(page.query_selector_all("#browser-table tbody tr")) == 100

    page.select_option("#filter-soi", label="forgettable_lost")
    page.fill("#filter-text", "GARDEN")
    want = _python_count(study, data, category="forgettable_lost", query="garden")
    assert want > 0
    assert _count(page, want) == want
    rows = page.query_selector_all("#browser-table tbody tr")
    assert len(rows) == min(want, 100)
    assert all("forgettable_lost" in r.inner_text() and "garden" in r.inner_text().lower() for r in rows)

    page.select_option("#filter-run", "2")
    page.click("#ranges-toggle")
    page.fill("#range-confidence-min", "0.2")
    want2 = _python_count(study, data, category="forgettable_lost", query="garden", run=2, conf_min=0.2)
    assert 0 < want2 < want
    assert _count(page, want2) == want2
    assert len(page.query_selector_all("#browser-table tbody tr")) == want2

    # sorting by confidence, descending on the first click
    page.click("#browser-table th[data-col=confidence]")
    col = [h.get_attribute("data-col") for h in page.query_selector_all("#browser-table thead th")].index("confidence")
    rows = page.query_selector_all("#browser-table tbody tr")
    shown = [float(r.query_selector_all("td")[col].inner_text()) for r in rows]
    assert shown == sorted(shown, reverse=True) and len(shown) == want2
    assert loaded.errors == []


def test_example_text_is_shown_literally(loaded: Loaded) -> None:
    page = loaded.page
    page.fill("#filter-text", "window.__xss")
    assert _count(page, 4) == 4  # one such text per run directory
    cells = [c.inner_text() for c in page.query_selector_all("#browser-table td.text")]
    assert cells == [XSS] * 4
    assert page.evaluate("window.__xss") is None
    assert loaded.requests == [loaded.requests[0]]  # the <img src=x> in the text never loaded


def test_demo_directory_a_single_run_and_a_study_without_dynamics(browser: Any, tmp_path: Path,
                                                                   sim_run: Path) -> None:
    """``soi demo``'s layout (no summary.json), one run directory analysed on the fly, and a generative-style
    study without dynamics all render without errors."""
    cmd = ["demo", "--study", "synthetic", "--out", str(tmp_path / "demo"), "--n", "300"]
    proc = subprocess.run([sys.executable, "-m", "soi.cli.main", *cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    targets = [write_report(tmp_path / "demo", figures=False), write_report(sim_run, figures=False),
               write_report(transfer_only_study(tmp_path / "gen"), figures=False)]
    expected = [{"datamap", "shares", "transitions"}, {"datamap", "shares"}, {"transfer-curves", "transfer-heatmap"}]
    for target, want in zip(targets, expected, strict=True):
        got = open_report(browser, target)
        try:
            assert got.errors == []
            assert got.requests == [target.resolve().as_uri()]
            assert set(figure_names(got.page)) == want
            assert blank_figures(got.page) == []
            assert got.page.query_selector(".error") is None
        finally:
            got.page.close()
