"""Transfer metrics on hand-computed numbers, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soi.errors import SoiError
from soi.gen.transfer import plot_transfer, scores_from_records, transfer_summary

SCORES = {
    "en": {0: [0.5, 0.6], 8: [0.6, 0.6], 32: [0.7, 0.5]},
    "es": {0: [0.2, 0.2], 8: [0.3, 0.4], 32: [0.5, 0.5]},
    "fr": {0: [0.1, 0.1], 8: [0.2, 0.2], 32: [0.3, 0.3]},
    "de": {0: [0.1, 0.1], 8: [0.12, 0.12], 32: [0.2, 0.2]},
    "ja": {0: [0.0, 0.0], 8: [0.05, 0.05], 32: [0.1, 0.1]},
}


def test_transfer_summary_by_hand() -> None:
    t = transfer_summary(SCORES, seen=["es", "fr"], unseen=["de", "ja"], metric="exact_match")
    assert t["metric"] == "exact_match" and t["ks"] == [0, 8, 32]
    assert t["seen"] == ["es", "fr"] and t["unseen"] == ["de", "ja"]
    assert t["scores"]["es"]["8"] == {"mean": pytest.approx(0.35), "std": pytest.approx(0.0707106781),
                                      "values": [0.3, 0.4]}
    assert t["scores"]["fr"]["0"]["std"] == 0.0
    # gain = mean(k) - mean(0)
    assert t["gain"]["es"] == {"0": 0.0, "8": pytest.approx(0.15), "32": pytest.approx(0.3)}
    assert t["gain"]["en"]["32"] == pytest.approx(0.6 - 0.55)
    # relative gain = gain / mean(0); None where mean(0) = 0
    assert t["relative_gain"]["es"]["32"] == pytest.approx(1.5)
    assert t["relative_gain"]["fr"]["8"] == pytest.approx(1.0)
    assert t["relative_gain"]["ja"] == {"0": None, "8": None, "32": None}
    # gain per 100 examples = 100 * gain / k; None at k = 0
    assert t["gain_per_100"]["es"] == {"0": None, "8": pytest.approx(100 * 0.15 / 8),
                                       "32": pytest.approx(100 * 0.3 / 32)}
    assert t["gain_per_100"]["de"]["32"] == pytest.approx(100 * 0.1 / 32)
    # group means and their gap: seen (es, fr), unseen (de, ja); English in neither
    assert t["seen_mean"] == {"0": pytest.approx(0.15), "8": pytest.approx(0.275), "32": pytest.approx(0.4)}
    assert t["unseen_mean"] == {"0": pytest.approx(0.05), "8": pytest.approx(0.085), "32": pytest.approx(0.15)}
    assert t["gap"] == {"0": pytest.approx(0.1), "8": pytest.approx(0.19), "32": pytest.approx(0.25)}
    json.dumps(t, allow_nan=False)  # JSON-able, string keys


def test_transfer_summary_without_unseen() -> None:
    t = transfer_summary({"en": {0: [1.0], 4: [1.0]}, "fr": {0: [0.0], 4: [0.5]}}, seen=["fr"], unseen=[],
                         metric="rouge_l")
    assert t["unseen_mean"] == {"0": None, "4": None} and t["gap"] == {"0": None, "4": None}
    assert t["seen_mean"] == {"0": 0.0, "4": 0.5}


def test_scores_from_records_orders_by_seed() -> None:
    recs = [{"language": "es", "k": 8, "seed": 1, "score": 0.4}, {"language": "es", "k": 8, "seed": 0, "score": 0.3},
            {"language": "es", "k": 0, "seed": 0, "score": 0.2}]
    assert scores_from_records(recs) == {"es": {0: [0.2], 8: [0.3, 0.4]}}


@pytest.mark.parametrize(("scores", "msg"), [
    ({"es": {8: [0.1]}}, "need k=0"),
    ({"es": {0: [0.1], 8: [0.2]}, "de": {0: [0.1]}}, "language 'de' has k"),
    ({"es": {0: [0.1], 8: []}}, "no score for language 'es' at k=8"),
    ({}, "at least one language"),
])
def test_transfer_summary_errors(scores: dict, msg: str) -> None:
    with pytest.raises(SoiError, match=msg):
        transfer_summary(scores, seen=[], unseen=[], metric="m")


def test_transfer_summary_missing_group_language() -> None:
    with pytest.raises(SoiError, match=r"no scores for language\(s\) \['ja'\]"):
        transfer_summary({"es": {0: [0.1]}}, seen=["es"], unseen=["ja"], metric="m")


def test_plot_transfer_writes_pngs(tmp_path: Path) -> None:
    t = transfer_summary(SCORES, seen=["es", "fr"], unseen=["de", "ja"], metric="exact_match")
    paths = plot_transfer(t, tmp_path / "figures", "math")
    assert [p.name for p in paths] == ["transfer_math_curves.png", "transfer_math_heatmap.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
