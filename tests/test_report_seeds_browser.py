"""The seed-calibrated views in a real headless browser (Debian's chromium via Playwright, as
tests/test_report_browser.py): no console error, every new figure has ink, the significance marks drawn on the
reseeding-null heatmaps are exactly the cells stats.json flags (every group), and with too few seeds the page shows
the note and no p-value. Skipped without chromium unless ``SOI_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from report_common import report_fixtures
from test_report_browser import Loaded, blank_figures, browser, figure_names, open_report  # noqa: F401
from test_report_seeds import EVAL_KEYS, build_seed_study, stats_of

study, report, _ = report_fixtures(build_seed_study, "bseedstudy", "study", figures=False)


@pytest.fixture
def loaded(browser: Any, report: Path) -> Iterator[Loaded]:  # noqa: F811
    got = open_report(browser, report)
    yield got
    got.page.close()


def marks(page: Any, panel: str) -> set[str]:
    return {m.get_attribute("data-sig")
            for m in page.query_selector_all(f"[data-figure=seed-null][data-panel={panel}] [data-sig]")}


def js_p(p: float) -> str:
    """The page's p-value format (``toExponential(1)`` below 1e-4, else ``toPrecision(2)``)."""
    if p < 1e-4:
        mantissa, exp = f"{p:.1e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{p:.{max(1, 1 - math.floor(math.log10(p)))}f}"


def test_seed_views_render_without_errors(loaded: Loaded, report: Path) -> None:
    page = loaded.page
    assert loaded.errors == []
    assert loaded.requests == [report.resolve().as_uri()]
    for section in ("stability", "transitions", "test-set"):
        assert page.query_selector(f"section#{section}") is not None, section
    names = figure_names(page)
    assert names.count("stability") == 3  # single, multi, pair
    assert names.count("seed-null") == 3  # within, observed, excess
    assert names.count("test-set") == 2  # one forest per comparison
    assert [f.get_attribute("data-panel") for f in page.query_selector_all("[data-figure=seed-null]")] == [
        "within", "observed", "excess"]
    assert blank_figures(page) == []
    assert page.query_selector(".error") is None


def test_significance_marks_equal_stats_json_in_every_group(loaded: Loaded, study: Path) -> None:
    page = loaded.page
    stats = stats_of(study, "single", "multi")
    n_marked = 0
    for gi, g in enumerate(stats["groups"]):
        page.select_option("#transitions-group", str(gi))
        want = set(g["seed_null"]["significant_cells"])
        assert marks(page, "excess") == want, g["group"]
        assert marks(page, "observed") == want
        assert marks(page, "within") == set()
        # the table lists every flagged cell as significant, with its q-value <= alpha
        rows = page.query_selector_all("#seed-null-table tbody tr.sig")
        assert {r.query_selector("td").inner_text().replace(" → ", " -> ") for r in rows} == want
        p = g["seed_null"]["overall"]["p_value"]
        assert p is not None
        assert f"p = {js_p(p)}" in page.inner_text(".null-test")
        assert g["seed_null"]["overall"]["method"] in page.inner_text(".null-test")
        n_marked += len(want)
        assert blank_figures(page) == []
    assert n_marked >= 2  # the planted effect is found somewhere
    assert loaded.errors == []


def test_too_few_seeds_shows_the_note_and_no_p_value(loaded: Loaded, study: Path) -> None:
    page = loaded.page
    page.select_option("#transitions-comparison", "1")  # pair (2 seeds) vs multi (3 seeds)
    stats = stats_of(study, "pair", "multi")
    for gi, g in enumerate(stats["groups"]):
        page.select_option("#transitions-group", str(gi))
        assert g["seed_null"]["overall"]["p_value"] is None
        assert page.inner_text("[data-null-note]") == g["seed_null"]["note"]
        assert page.query_selector(".null-test") is None
        assert marks(page, "excess") == marks(page, "observed") == set()
        assert page.query_selector_all("#seed-null-table tbody tr.sig") == []
        assert "q (BH)" in page.inner_text("#seed-null-table thead")
        assert all(r.query_selector_all("td")[5].inner_text() == "–"
                   for r in page.query_selector_all("#seed-null-table tbody tr"))
    assert blank_figures(page) == []
    assert loaded.errors == []


def test_test_set_table_is_labelled_and_equals_stats(loaded: Loaded, study: Path) -> None:
    page = loaded.page
    tables = page.query_selector_all("section#test-set #test-set-table")
    assert len(tables) == 2
    for table, (a, b) in zip(tables, (("single", "multi"), ("pair", "multi")), strict=True):
        stats = stats_of(study, a, b)["test_set"]
        rows = [[td.inner_text() for td in r.query_selector_all("td")] for r in table.query_selector_all("tbody tr")]
        assert [r[0] for r in rows] == list(EVAL_KEYS)
        for r in rows:
            ref = stats[r[0]]
            assert r[1] == "test set" and int(r[2]) == ref["n_items"]
            d = ref["difference"]
            lo, hi = (float(x.strip(" []").removesuffix(" pp")) for x in r[7].split(","))
            shown = [float(r[6].removesuffix(" pp")), lo, hi]
            # one decimal of pp (0.05) of values rounded to 4 significant digits in the page data (double rounding)
            assert shown == pytest.approx([100 * d["observed"], 100 * d["lo"], 100 * d["hi"]], abs=0.06)
            assert (r[8] == "yes") is d["significant"]
    labels = [t.text_content() for t in page.query_selector_all("[data-figure=test-set] svg text")]
    assert sum("test set" in t for t in labels) == 2 * len(EVAL_KEYS)
    # the transitions section says its McNemar runs on training dynamics
    assert "training dynamics" in page.inner_text("section#transitions")
    assert loaded.errors == []
