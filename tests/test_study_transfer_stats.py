"""Transfer statistics of classification ``k_grid`` studies (soi.study.runner.transfer_stats) on a fabricated
2-seed study whose gains, group means, gap, slope and correlation are computed by hand; the shared tables and
console lines (soi.study.transfer_stats)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soi.config import StudyConfig
from soi.errors import SoiError
from soi.study.runner import transfer_stats
from soi.study.transfer_stats import print_transfer_stats, write_transfer_tables

# per language (eval key, language), k and seed: the correctness of items 0..3
CORRECT = {
    ("en", "en"): {k: {s: [1, 1, 0, 0] for s in (0, 1)} for k in (0, 4, 16)},  # the fixed set: unchanged
    ("fa", "fa"): {0: {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}, 4: {0: [1, 1, 0, 0], 1: [1, 0, 0, 0]},
                   16: {0: [1, 1, 1, 1], 1: [1, 1, 1, 1]}},  # seen
    ("de", "de"): {0: {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}, 4: {0: [1, 0, 0, 0], 1: [1, 0, 0, 0]},
                   16: {0: [1, 1, 0, 0], 1: [1, 1, 0, 0]}},  # unseen
}


def config(tmp_path: Path) -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "t", "model": "m", "data_dir": str(tmp_path), "seeds": [0, 1], "data_seed": 1,
        "datasets": {"en": {"name": "massive_en", "task": "intent"}, "fa": {"name": "massive_fa", "task": "intent"},
                     "de": {"name": "massive_fa", "task": "intent"}},
        "runs": [{"name": "g", "setting": "multi-lingual", "train": ["en"], "eval": ["de"],
                  "k_grid": {"datasets": ["fa"], "k": [0, 4, 16]}}]})


def fabricate(out: Path, *, order: dict[tuple[int, int], list[int]] | None = None,
              drop: tuple[int, int] | None = None) -> dict:
    """eval/<key>.parquet of every run and seed, and the ``results`` the study engine would hand over."""
    results: dict = {}
    for k in (0, 4, 16):
        for s in (0, 1):
            run_dir = out / "runs" / f"g-k{k}" / f"seed-{s}" / "eval"
            run_dir.mkdir(parents=True, exist_ok=True)
            evals = {}
            for (key, lang), by_k in CORRECT.items():
                items = (order or {}).get((k, s), [0, 1, 2, 3])
                if drop == (k, s) and key == "fa":
                    items = items[:-1]
                corr = [bool(by_k[k][s][i]) for i in items]
                pq.write_table(pa.table({"example_id": [f"{lang}-{i}" for i in items], "gold": [0] * len(items),
                                         "pred": [0] * len(items), "p_gold": [0.5] * len(items), "correct": corr,
                                         "language": [lang] * len(items)}), run_dir / f"{key}.parquet")
                evals[key] = {"languages": {lang: {"accuracy": float(np.mean(corr)), "n": len(items)}}}
            results.setdefault(f"g-k{k}", {})[s] = {"eval": evals}
    return results


def test_gains_groups_gap_and_trend_by_hand(tmp_path: Path) -> None:
    results = fabricate(tmp_path)
    st = transfer_stats(config(tmp_path), tmp_path, results, n_boot=500)["g"]
    assert st["data"] == "test set" and st["metric"] == "accuracy" and st["ks"] == [0, 4, 16]
    assert st["seen"] == ["fa"] and st["unseen"] == ["de"] and st["n_seeds"] == 2 and st["notes"] == []
    assert st["n_items"] == {"en": 4, "fa": 4, "de": 4} and st["languages"]["en"]["group"] == "other"
    score = {lang: [st["languages"][lang]["score"][str(k)]["mean"] for k in (0, 4, 16)] for lang in ("en", "fa", "de")}
    # seed means of item means: fa at k=4 (2/4 + 1/4) / 2
    assert score["en"] == pytest.approx([0.5, 0.5, 0.5])
    assert score["fa"] == pytest.approx([0.0, 0.375, 1.0])
    assert score["de"] == pytest.approx([0.0, 0.25, 0.5])
    fa16, en16 = st["languages"]["fa"]["gain"]["16"], st["languages"]["en"]["gain"]["16"]
    # every item goes 0 -> 1 on both seeds: every replicate's gain is 1; the fixed set never moves
    assert (fa16["mean"], fa16["lo"], fa16["hi"], fa16["significant"]) == (pytest.approx(1.0), 1.0, 1.0, True)
    assert (en16["mean"], en16["lo"], en16["hi"], en16["significant"]) == (0.0, 0.0, 0.0, False)
    # one item of four gains on both seeds: 0.25; (3/4)^4 = 32% of the item resamples miss it, so the interval
    # reaches 0 (below it: the expanded bootstrap scales item deviations by sqrt(4/3)) and is not significant
    de4 = st["languages"]["de"]["gain"]["4"]
    assert de4["mean"] == pytest.approx(0.25) and de4["lo"] <= 0.0 < 0.25 < de4["hi"] and not de4["significant"]
    assert "significant" not in st["languages"]["fa"]["gain"]["0"]
    assert st["languages"]["fa"]["plateau"]["k"] == 16  # 0.375 < 0.9 * 1.0
    assert st["groups"]["seen"]["score"]["4"]["mean"] == pytest.approx(0.375)
    gap = [0.0, 0.375 - 0.25, 1.0 - 0.5]
    assert [st["gap"][str(k)]["mean"] for k in (0, 4, 16)] == pytest.approx(gap)
    assert st["gap_slope"]["per_100"] == pytest.approx(100 * np.polyfit([0, 4, 16], gap, 1)[0])
    assert st["correlation"]["r"] == pytest.approx(np.corrcoef([0, 0.375, 1.0], [0, 0.25, 0.5])[0, 1])
    # the point estimates agree with the seed-mean accuracies of the results (soi.gen.transfer.transfer_summary)
    for lang in ("fa", "de"):
        for k in (0, 4, 16):
            want = np.mean([results[f"g-k{k}"][s]["eval"][lang]["languages"][lang]["accuracy"] for s in (0, 1)])
            assert st["languages"][lang]["score"][str(k)]["mean"] == pytest.approx(want)


def test_items_align_by_id_and_a_missing_item_is_an_error(tmp_path: Path) -> None:
    a = transfer_stats(config(tmp_path), tmp_path / "a", fabricate(tmp_path / "a"), n_boot=300)
    b = transfer_stats(config(tmp_path), tmp_path / "b", fabricate(tmp_path / "b", order={(4, 1): [3, 1, 0, 2],
                                                                                           (16, 0): [2, 3, 1, 0]}),
                       n_boot=300)
    assert a == b  # the same items in another row order: the same statistics, replicate for replicate
    with pytest.raises(SoiError, match=r"k_grid family 'g': language 'fa': the eval items at k=4 seed 1 differ "
                                       r"from those at k=0 seed 0"):
        transfer_stats(config(tmp_path), tmp_path / "c", fabricate(tmp_path / "c", drop=(4, 1)), n_boot=10)


def test_tables_and_console(tmp_path: Path) -> None:
    from rich.console import Console

    stats = transfer_stats(config(tmp_path), tmp_path, fabricate(tmp_path), n_boot=300)
    paths = write_transfer_tables(stats, tmp_path)
    rows = list(csv.DictReader(paths["transfer_stats"].open(encoding="utf-8")))
    assert len(rows) == (3 + 2) * 3  # (3 languages + 2 group means) x 3 values of k
    row = next(r for r in rows if r["language"] == "fa" and r["k"] == "16")
    assert (float(row["gain"]), row["significant"], row["data"]) == (1.0, "True", "test set")
    trend = list(csv.DictReader(paths["transfer_trend"].open(encoding="utf-8")))
    assert [float(r["gap"]) for r in trend] == pytest.approx([0.0, 0.125, 0.5])
    assert {r["seen_plateau_k"] for r in trend} == {"16"}
    console = Console(record=True, width=200)
    print_transfer_stats(stats, console)
    text = " ".join(console.export_text().split())
    assert "g: gain in accuracy over k=0, 95% intervals (test set, 2 seed(s); * excludes 0)" in text
    assert "+1.000 [+1.000, +1.000] *" in text and "gap slope per 100 examples" in text
    assert write_transfer_tables({}, tmp_path / "none") == {} and not (tmp_path / "none").exists()
