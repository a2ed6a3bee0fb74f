"""The report's seed-calibrated views: seed stability, the reseeding null and the paired test-set differences.

``build_seed_study`` writes a study directory the way ``soi run`` now lays it out (seed folders
``runs/<run>/seed-<s>/`` from :func:`soi.simulate.simulate_seed_folder`, with per-item eval predictions
``eval/<key>.parquet``; one ``compare/<a>__vs__<b>/`` per pair over all seeds, by
:func:`soi.analysis.compare.compare_runs`). The multi-setting runs carry a planted effect, so the reseeding
null has significant cells; a second comparison has only 2 seeds on one side (too few for a test). The browser
tests (tests/test_report_seeds_browser.py) reuse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from report_common import report_fixtures
from soi.analysis.compare import compare_runs
from soi.analysis.seeds import analyze_seeds
from soi.errors import SoiError
from soi.report.data import collect
from soi.simulate import simulate_seed_folder

N = 300
SEEDS = (0, 1, 2)
GROUPS = {"task": ["a", "b"], "language": ["en", "de"]}
EVAL_KEYS = {"a-test": (160, 0.70, 0.80), "ood-test": (120, 0.60, 0.61)}
"""Eval set: (items, accuracy of A, accuracy of B) of the simulated per-item predictions."""


def write_eval(run: Path, seed: int, side: int) -> None:
    """Per-item test-set predictions ``run/eval/<key>.parquet`` (as ``soi run`` writes them)."""
    for j, (key, (n, acc_a, acc_b)) in enumerate(EVAL_KEYS.items()):
        rng = np.random.default_rng([seed, side, j])
        skill = np.random.default_rng([j, 99]).normal(0.0, 1.0, n)  # item difficulty shared by all runs
        p = 1.0 / (1.0 + np.exp(-(skill + np.log((acc_b if side else acc_a) / (1 - (acc_b if side else acc_a))))))
        correct = rng.random(n) < p
        gold = np.arange(n) % 3
        pred = np.where(correct, gold, (gold + 1) % 3)
        (run / "eval").mkdir(exist_ok=True)
        pq.write_table(pa.table({"example_id": [f"{key}-{i}" for i in range(n)], "gold": gold, "pred": pred,
                                 "p_gold": np.where(correct, 0.8, 0.2), "correct": correct,
                                 "language": ["en"] * n}), run / "eval" / f"{key}.parquet")


def build_seed_study(root: Path) -> Path:
    """runs/single (3 seeds), runs/multi (3 seeds, planted effect), runs/pair (2 seeds); two comparisons."""
    planted = np.zeros(N, bool)
    planted[: N // 3] = True
    specs = {"single": ("single", SEEDS, {}),
             "multi": ("multi-task", SEEDS, {"planted": planted, "planted_shift": 1.5}),
             "pair": ("single", SEEDS[:2], {})}
    runs = {}
    for name, (setting, seeds, extra) in specs.items():
        folder = simulate_seed_folder(root / "runs" / name, seeds, n=N, checkpoints=5, groups=GROUPS,
                                      setting=setting, run_effect=0.1, **extra)
        for s in seeds:
            write_eval(folder / f"seed-{s}", s, int(name == "multi"))
        runs[name] = {"setting": setting, "train": ["a", "b"] if name == "multi" else ["a"], "seeds": list(seeds),
                      "dirs": [str(folder / f"seed-{s}") for s in seeds]}
    comparisons = []
    for a, b in (("single", "multi"), ("pair", "multi")):
        out = root / "compare" / f"{a}__vs__{b}"
        compare_runs(root / "runs" / a, root / "runs" / b, out, n_boot=100, label_a=a, label_b=b, heatmaps=False)
        comparisons.append({"a": a, "b": b, "seed": None, "dir": str(out)})
    summary = {"study": "seed-study", "model": "simulated", "seeds": list(SEEDS), "data_seed": 0, "out": str(root),
               "runs": runs, "comparisons": comparisons}
    (root / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return root


def stats_of(study: Path, a: str, b: str) -> dict[str, Any]:
    return json.loads((study / "compare" / f"{a}__vs__{b}" / "stats.json").read_text(encoding="utf-8"))


study, report, data = report_fixtures(build_seed_study, "seedstudy", "study")


def cells_by_name(null: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["from"], c["to"]): c for c in null["cells"]}


# ------------------------------------------------------------------------------------------- layout


def test_discover_seed_set_comparisons(study: Path) -> None:
    from soi.report.data import discover

    layout = discover(study)
    assert [(c.a, c.b, c.seed) for c in layout.comparisons] == [("single", "multi", None), ("pair", "multi", None)]
    assert [c.path for c in layout.comparisons] == [study / "compare" / "single__vs__multi",
                                                   study / "compare" / "pair__vs__multi"]
    assert layout.notes == []


def test_moved_study_finds_comparisons_by_layout(study: Path, tmp_path: Path) -> None:
    """The summary's recorded dirs point at the old place; the compare/<a>__vs__<b>/ layout still finds them."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(study, moved, ignore=shutil.ignore_patterns("report.html", "figures"))
    summary = json.loads((moved / "summary.json").read_text(encoding="utf-8"))
    for c in summary["comparisons"]:
        c["dir"] = str(tmp_path / "gone" / Path(c["dir"]).name)
    (moved / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    from soi.report.data import discover

    layout = discover(moved)
    assert [c.path for c in layout.comparisons] == [moved / "compare" / "single__vs__multi",
                                                   moved / "compare" / "pair__vs__multi"]


# ------------------------------------------------------------------------------------------- reseeding null


def test_fixture_has_a_detected_planted_effect_and_a_too_few_seeds_case(study: Path) -> None:
    strong = stats_of(study, "single", "multi")["groups"][0]["seed_null"]
    assert strong["overall"]["p_value"] is not None and strong["overall"]["p_value"] < 0.05
    assert len(strong["significant_cells"]) >= 2
    few = stats_of(study, "pair", "multi")["groups"][0]["seed_null"]
    assert few["overall"]["p_value"] is None and few["note"]
    assert not any(c["significant"] for c in few["cells"])


@pytest.mark.parametrize("pair", [("single", "multi"), ("pair", "multi")])
def test_seed_null_view_equals_stats(study: Path, data: dict[str, Any], pair: tuple[str, str]) -> None:
    stats = stats_of(study, *pair)
    comp = next(c for c in data["comparisons"] if (c["a"], c["b"]) == pair)
    cats = comp["categories"]
    assert cats == stats["categories"]
    assert comp["kind_a"] == comp["kind_b"] == "seeds"
    assert [(g["key"], g["group"]) for g in comp["groups"]] == [(g["key"], g["group"]) for g in stats["groups"]]
    for view, g in zip(comp["groups"], stats["groups"], strict=True):
        sn, ref = view["seed_null"], g["seed_null"]
        cells = cells_by_name(ref)
        assert len(cells) == len(cats) ** 2
        for i, a in enumerate(cats):
            for j, b in enumerate(cats):
                cell = cells[(a, b)]
                assert sn["significant"][i][j] is bool(cell["significant"])
                for mat, fld in (("between", "observed"), ("within", "null"), ("excess", "excess")):
                    assert sn[mat][i][j] == pytest.approx(cell[fld], rel=1e-3, abs=1e-6)
                for fld in ("q_value", "p_value", "lo", "hi"):
                    if cell[fld] is None:
                        assert sn[fld][i][j] is None
                    else:
                        assert sn[fld][i][j] == pytest.approx(cell[fld], rel=1e-3, abs=1e-9)
        flagged = {f"{a} -> {b}" for i, a in enumerate(cats) for j, b in enumerate(cats) if sn["significant"][i][j]}
        assert flagged == set(ref["significant_cells"])
        o = ref["overall"]
        assert (sn["overall"]["p_value"] is None) == (o["p_value"] is None)
        if o["p_value"] is not None:
            assert sn["overall"]["p_value"] == pytest.approx(o["p_value"], rel=1e-3)
        else:  # too few seeds: the note, never a p-value
            assert sn["note"] == ref["note"] and sn["overall"]["significant"] is False
        assert sn["overall"]["method"] == o["method"]
        for side in ("a", "b"):
            assert view["stability"][side]["kappa"] == pytest.approx(g["stability"][side]["kappa"], rel=1e-3)
        assert view["mcnemar_data"] == "training dynamics"


def test_test_set_view_equals_stats(study: Path, data: dict[str, Any]) -> None:
    for comp in data["comparisons"]:
        stats = stats_of(study, comp["a"], comp["b"])
        assert [t["key"] for t in comp["test_set"]] == list(stats["test_set"]) == list(EVAL_KEYS)
        for t in comp["test_set"]:
            ref = stats["test_set"][t["key"]]
            assert t["data"] == "test set" and t["n_items"] == ref["n_items"] == EVAL_KEYS[t["key"]][0]
            for mine, theirs in (("difference", "observed"), ("lo", "lo"), ("hi", "hi")):
                assert t[mine] == pytest.approx(ref["difference"][theirs], rel=1e-3)
            assert t["significant"] is ref["difference"]["significant"]
            assert t["mcnemar_p"] == pytest.approx(ref["mcnemar"]["combined"]["p_value"], rel=1e-3)
            assert [m["p_value"] for m in t["mcnemar_per_seed"]] == pytest.approx(
                [m["p_value"] for m in ref["mcnemar"]["per_seed"]], rel=1e-3)
            assert len(t["mcnemar_per_seed"]) == (3 if comp["a"] == "single" else 2)


# ------------------------------------------------------------------------------------------- stability


def test_stability_equals_the_consensus_analysis(study: Path, data: dict[str, Any]) -> None:
    """Histogram and per-group kappa equal soi's consensus analysis (analysis/consensus.parquet of analyze_seeds)."""
    sets = {st["name"]: st for st in data["stability"]}
    assert set(sets) == {"single", "multi", "pair"}
    for name, st in sets.items():
        res = analyze_seeds(study / "runs" / name, write=False)
        s = res.summary["n_seeds"]
        assert st["n_seeds"] == s == (2 if name == "pair" else 3) and st["n"] == N
        stab = res.table["soi_stability"].to_numpy()
        hist = np.bincount(np.rint(stab * s).astype(int), minlength=s + 1)[1:]
        assert st["hist"] == hist.tolist() and sum(st["hist"]) == N
        for key, groups in res.summary["groups"].items():
            for gname, ref in groups.items():
                got = st["groups"][key][gname]
                assert got["n"] == ref["n"]
                for fld in ("mean_stability", "agreement", "kappa"):
                    assert got[fld] == pytest.approx(ref[fld], rel=1e-3)


def test_one_seed_per_run_has_no_stability(sim_run: Path) -> None:

    assert collect(sim_run)["stability"] == []


# ------------------------------------------------------------------------------------------- figures


def test_seed_null_and_stability_pngs(study: Path, data: dict[str, Any]) -> None:
    from PIL import Image

    figs = set(data["figures"])
    for name in ("seed_null_single__vs__multi.png", "seed_null_pair__vs__multi.png", "stability.png"):
        assert f"figures/{name}" in figs
        img = np.asarray(Image.open(study / "figures" / name).convert("L"))
        assert img.shape[0] > 300 and img.shape[1] > 400
        assert (img < 200).mean() > 0.01  # ink, not a blank canvas


def test_seed_null_png_marks_follow_the_flags(tmp_path: Path) -> None:
    """A framed cell differs from the same figure without the frame exactly where the flag is."""
    from PIL import Image

    from soi.plots import seed_null_heatmaps

    k = 3
    rng = np.random.default_rng(0)
    within, between = rng.random((k, k)) / 10, rng.random((k, k)) / 10
    sig = np.zeros((k, k), bool)
    paths = []
    for flag in (False, True):
        sig[0, 2] = flag
        paths.append(seed_null_heatmaps(within, between, between - within, ["x", "y", "z"], title="t", label_a="A",
                                        label_b="B", path=tmp_path / f"{flag}.png", significant=sig.copy()))
    a, b = (np.asarray(Image.open(p).convert("L"), np.int16) for p in paths)
    assert a.shape == b.shape
    diff = np.abs(a - b) > 40
    assert diff.sum() > 50  # the frames and stars of two panels
    cols = np.flatnonzero(diff.any(axis=0))
    # the changes sit in the right-hand column of the observed and excess panels, not in the null panel
    assert cols.min() > a.shape[1] / 3


# ------------------------------------------------------------------------------------------- older outputs, bad input


def test_single_run_compare_shows_the_note_not_a_test(study: Path, tmp_path: Path) -> None:
    from soi.analysis.seeds import SINGLE_SEED_NOTE

    out = tmp_path / "cmp"
    compare_runs(study / "runs" / "single" / "seed-0", study / "runs" / "multi" / "seed-0", out, n_boot=50,
                 heatmaps=False)
    comp = collect(tmp_path)["comparisons"][0]
    sn = comp["groups"][0]["seed_null"]
    assert sn["overall"]["p_value"] is None and sn["between"] is None and sn["note"] == SINGLE_SEED_NOTE
    assert not any(any(r) for r in sn["significant"])
    assert comp["kind_a"] == "run" and SINGLE_SEED_NOTE in comp["notes"]


def test_stats_without_seed_fields_still_render(study: Path, tmp_path: Path) -> None:
    """A stats.json of an older soi (no seeds, stability, seed_null or test_set) is shown without them."""

    stats = stats_of(study, "single", "multi")
    for g in stats["groups"]:
        for fld in ("seeds", "stability", "seed_null", "counts_pooled_over", "share_change_method"):
            g.pop(fld)
    stats.pop("test_set")
    stats.pop("notes")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    comp = collect(tmp_path)["comparisons"][0]
    assert comp["groups"][0]["seed_null"] is None and comp["test_set"] == [] and comp["notes"] == []


@pytest.mark.parametrize("case", ["unknown-category", "cells-not-list", "test-set-not-object"])
def test_malformed_seed_fields_are_one_line_errors(study: Path, tmp_path: Path, case: str) -> None:

    stats = stats_of(study, "single", "multi")
    if case == "unknown-category":
        stats["groups"][1]["seed_null"]["cells"][0]["from"] = "no_such_category"
    elif case == "cells-not-list":
        stats["groups"][0]["seed_null"]["cells"] = 5
    else:
        stats["test_set"]["a-test"] = [1, 2]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    with pytest.raises(SoiError) as err:
        collect(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "bad" / "stats.json") in msg


def test_report_of_one_seed_folder(study: Path) -> None:
    """``soi report runs/<name>/``: the seeds are one run name, with their stability."""
    from soi.report.data import collect

    got = collect(study / "runs" / "single")
    assert [(r["name"], r["seed"]) for r in got["runs"]] == [("single", s) for s in SEEDS]
    assert [st["name"] for st in got["stability"]] == ["single"]
    ref = analyze_seeds(study / "runs" / "single", write=False).summary["groups"]["all"]["all"]
    assert got["stability"][0]["groups"]["all"]["all"]["kappa"] == pytest.approx(ref["kappa"], rel=1e-3)  # 4 digits
