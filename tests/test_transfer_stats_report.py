"""The transfer statistics, transfer against model size and multi-task differences in the HTML report: the data
it embeds, the static figures, and (when chromium is available) the page renders them without errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soi.analysis.transfer import transfer_statistics
from soi.report import read_report_data, write_report
from test_report import TRANSFER


def stats_study(root: Path) -> Path:
    rng = np.random.default_rng(0)
    x = {lang: (rng.random((3, 2, 30)) < p + np.array([0, 0.1, 0.2])[:, None, None]).astype(float)
         for lang, p in (("en", 0.5), ("de", 0.4), ("sw", 0.1))}
    st = transfer_statistics(x, [0, 8, 32], seen=["en", "de"], unseen=["sw"], metric="exact_match", n_boot=200)
    two = transfer_statistics({k: v[:2] for k, v in x.items()}, [0, 1], seen=["en", "de"], unseen=["sw"],
                              metric="exact_match", n_boot=200)
    mt = {"both:gsm": {"data": "test set", "task": "gsm", "single": "gsm", "multi": "both", "metric": "exact_match",
                       "level": 0.95, "n_seeds": 2, "notes": [], "method": "multi - single",
                       "k": {"8": {lang: {"group": b["group"], "single": b["score"]["0"], "multi": b["score"]["1"],
                                          "difference": b["gain"]["1"]} for lang, b in two["languages"].items()}}}}
    points = [{"model": m, "slug": m, "parameters": n, "k": 32, "seen": st["groups"]["seen"]["gain"]["32"],
               "unseen": st["groups"]["unseen"]["gain"]["32"], "gap": st["gap"]["32"]}
              for m, n in (("tiny-a", 27_000), ("tiny-b", 80_000))]
    root.mkdir(parents=True)
    summary = {"study": "gen", "type": "generative", "model": "tiny", "seeds": [0, 1], "out": str(root), "runs": {},
               "comparisons": [], "transfer": TRANSFER, "transfer_stats": {"gsm": st}, "by_model": {"gsm": points},
               "multitask": mt}
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


def test_report_data_and_figures(tmp_path: Path) -> None:
    out = write_report(stats_study(tmp_path / "gen"))
    d = read_report_data(out)
    assert d["transfer_stats"]["gsm"]["data"] == "test set"
    g = d["transfer_stats"]["gsm"]["languages"]["de"]["gain"]["32"]
    assert g["lo"] <= g["mean"] <= g["hi"]
    assert [p["parameters"] for p in d["by_model"]["gsm"]] == [27_000, 80_000]
    assert set(d["multitask"]["both:gsm"]["k"]["8"]) == {"en", "de", "sw"}
    names = sorted(Path(f).name for f in d["figures"])
    assert names == ["transfer_by_model_gsm.png", "transfer_gsm_curves.png", "transfer_gsm_heatmap.png",
                     "transfer_gsm_intervals.png"]
    assert all((out.parent / f).stat().st_size > 1000 for f in d["figures"])


def test_report_renders_the_tables(tmp_path: Path) -> None:
    browser_mod = pytest.importorskip("test_report_browser")
    exe = browser_mod.find_chromium()
    if exe is None:
        pytest.skip("no chromium found")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = write_report(stats_study(tmp_path / "gen"), figures=False)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        try:
            got = browser_mod.open_report(b, out)
            assert got.errors == [] and got.page.query_selector(".error") is None
            text = got.page.inner_text("#transfer")
            assert "gain at k = 8" in text and "plateau k (90% of max)" in text and "gap slope per 100" in text
            assert "Transfer against model size" in text and "80,000" in text
            assert "Multi-task against single-task runs" in text
            assert "gap (seen − unseen)" in text
            # the gain curves with their intervals (one error bar per language, group mean and gap at each k),
            # and transfer against model size (seen, unseen, gap per model)
            figs = got.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#transfer figure')]
                .map((f) => [f.dataset.figure, f.querySelectorAll('[data-interval]').length]))""")
            assert figs["transfer-intervals"] == (3 + 2 + 1) * 3 and figs["transfer-by-model"] == 3 * 2
            for name in ("transfer-intervals", "transfer-by-model"):
                ink, total = browser_mod.plot_ink(got.page.query_selector(f'figure[data-figure="{name}"] [data-plot]'))
                assert ink > 0.005 * total, name  # drawn, not an empty frame
            tips = got.page.eval_on_selector_all('figure[data-figure="transfer-intervals"] circle title',
                                                 "ts => ts.map((t) => t.textContent)")
            de32 = read_report_data(out)["transfer_stats"]["gsm"]["languages"]["de"]["gain"]["32"]  # as embedded
            assert f"de (seen) at 32: {de32['mean']:.3f} [{de32['lo']:.3f}, {de32['hi']:.3f}]" in " | ".join(tips)
            assert got.page.evaluate("window.__soiReport.ready") is True
        finally:
            b.close()
