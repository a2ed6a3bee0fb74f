"""soi.gen.transfer's per-item score arrays (from predictions.jsonl records) and the interval figures."""

from __future__ import annotations

import numpy as np
import pytest

from soi.analysis.transfer import transfer_statistics
from soi.errors import SoiError
from soi.gen.transfer import item_scores, plot_transfer_by_model, plot_transfer_stats


def records(k: int, seed: int, order: list[int]) -> list[dict]:
    rows = []
    for i in order:
        for lang in ("en", "es"):
            rows.append({"task": "math", "id": f"{lang}-{i}", "language": lang,
                         "exact_match": float((i + k + seed + (lang == "es")) % 2)})
    rows.append({"task": "other", "id": "x", "language": "en", "exact_match": 1.0})
    return rows


def test_item_scores_align_by_id() -> None:
    rows = {(0, 0): records(0, 0, [0, 1, 2]), (0, 1): records(0, 1, [2, 0, 1]),
            (8, 0): records(8, 0, [1, 2, 0]), (8, 1): records(8, 1, [0, 2, 1])}
    x = item_scores(rows, task="math", metric="exact_match", ks=[0, 8], seeds=[0, 1])
    assert set(x) == {"en", "es"}
    assert x["en"].shape == (2, 2, 3)
    for ki, k in enumerate([0, 8]):
        for si, s in enumerate([0, 1]):
            assert x["en"][ki, si].tolist() == [float((i + k + s) % 2) for i in range(3)]
            assert x["es"][ki, si].tolist() == [float((i + k + s + 1) % 2) for i in range(3)]
    rows[8, 1] = records(8, 1, [0, 2])
    with pytest.raises(SoiError, match="items at k=8 seed 1 differ"):
        item_scores(rows, task="math", metric="exact_match", ks=[0, 8], seeds=[0, 1])


def test_figures(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = {lang: (rng.random((3, 2, 20)) < 0.4 + 0.1 * np.arange(3)[:, None, None]).astype(float)
         for lang in ("en", "es", "de")}
    st = transfer_statistics(x, [0, 8, 32], seen=["es"], unseen=["de"], n_boot=100, metric="exact_match")
    p = plot_transfer_stats(st, tmp_path / "f.png", title="math")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = [{"model": m, "parameters": n, "k": 32, "seen": st["groups"]["seen"]["gain"]["32"],
            "unseen": st["groups"]["unseen"]["gain"]["32"]} for m, n in (("a", 27_000), ("b", 135_000_000))]
    q = plot_transfer_by_model(pts, tmp_path / "m.png", metric="exact_match")
    assert q.stat().st_size > 1000


def test_multitask_vs_single_from_predictions(tmp_path) -> None:
    """multi - single per language and k from written predictions.jsonl files (no training), hand-checked."""
    import json

    from soi.config.generative import GenerativeStudyConfig
    from soi.study.gen_stats import multitask_rows, multitask_vs_single, transfer_stats
    from soi.study.generative import PREDICTIONS_FILE, run_dir_of

    cfg = GenerativeStudyConfig.from_dict({
        "type": "generative", "name": "t", "model": "m", "seeds": [0, 1], "tasks": {"math": {}, "instruction": {
            "mixture": {"english_n": 0, "seen": ["fr"], "unseen": []}}},
        "mixture": {"english_n": 4, "seen": ["es"], "unseen": ["de"], "k": [0, 2]},
        "runs": [{"name": "m", "tasks": ["math"]}, {"name": "i", "tasks": ["instruction"]},
                 {"name": "mi", "tasks": ["math", "instruction"]}]})
    rng = np.random.default_rng(0)
    truth: dict = {}
    for run, tasks in (("m", ["math"]), ("i", ["instruction"]), ("mi", ["math", "instruction"])):
        for k in (0, 2):
            for s in (0, 1):
                lines = []
                for task in tasks:
                    langs = ("en", "es", "de") if task == "math" else ("fr",)
                    metric = "exact_match" if task == "math" else "rouge_l"
                    for lang in langs:
                        vals = rng.integers(0, 2, 6).astype(float) if task == "math" else rng.random(6)
                        truth[run, task, k, s, lang] = vals
                        lines += [json.dumps({"task": task, "id": f"{lang}-{i}", "language": lang, metric: v})
                                  for i, v in enumerate(vals)]
                d = run_dir_of(tmp_path, run, k, s)
                d.mkdir(parents=True)
                (d / PREDICTIONS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    mt = multitask_vs_single(cfg, tmp_path, n_boot=200)
    assert set(mt) == {"mi:math", "mi:instruction"}
    for key, run_s, task in (("mi:math", "m", "math"), ("mi:instruction", "i", "instruction")):
        assert mt[key]["single"] == run_s and mt[key]["data"] == "test set"
        for k in (0, 2):
            for lang, v in mt[key]["k"][str(k)].items():
                if lang.endswith(" mean"):
                    continue
                single = np.mean([truth[run_s, task, k, s, lang] for s in (0, 1)])
                multi = np.mean([truth["mi", task, k, s, lang] for s in (0, 1)])
                assert v["difference"]["mean"] == pytest.approx(multi - single)
                assert v["difference"]["lo"] <= v["difference"]["mean"] <= v["difference"]["hi"]
    assert mt["mi:math"]["k"]["2"]["seen mean"]["difference"]["mean"] == pytest.approx(
        mt["mi:math"]["k"]["2"]["es"]["difference"]["mean"])
    rows = multitask_rows(mt)
    assert len(rows) == 2 * (3 + 2) + 2 * (1 + 1)  # math: en, es, de + seen/unseen means; instruction: fr + seen
    st = transfer_stats(cfg, tmp_path, n_boot=100)
    assert set(st) == {"m:math", "mi:math", "i:instruction", "mi:instruction"}
    assert st["i:instruction"]["metric"] == "rouge_l" and st["i:instruction"]["gap"] is None
