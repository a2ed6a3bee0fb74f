"""Scoring inside a generative study: switch-aware columns and an LLM judge (stub server on localhost) in
predictions, results, summary and tables; a judge that is down leaves no finished run and no summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from shared_data import SHARED, needs_dataset
from soi.config.generative import GenerativeStudyConfig
from soi.errors import SoiError
from test_gen_judge import Stub, good

pytestmark = needs_dataset("mgsm")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    import torch

    from soi.model.causal import tiny_causal_lm

    torch.set_num_threads(1)
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")


def _study(model: Path, scoring: dict[str, Any]) -> GenerativeStudyConfig:
    """A base-model evaluation (nothing to train at k = 0 with english_n 0): 2 MGSM items in es and de."""
    return GenerativeStudyConfig.from_dict({
        "type": "generative", "name": "scored", "model": str(model), "data_dir": str(SHARED), "seeds": [0],
        "tasks": {"math": {"metric": "exact_match_switch"} if scoring.get("switch_aware") else {}},
        "mixture": {"english": "en", "english_n": 0, "seen": ["es"], "unseen": ["de"], "k": [0], "n_eval": 2},
        "generation": {"max_new_tokens": 5, "batch_size": 8}, "recording": {"enabled": False, "probe": 0},
        "scoring": scoring})


def test_switch_aware_and_judge_columns_everywhere(tiny_lm: Path, tmp_path: Path) -> None:
    from soi.study.generative import run_generative_study

    stub = Stub(good)
    try:
        scoring = {"switch_aware": "multiply", "scorers": ["judge"],
                   "judge": {"url": stub.url, "model": "stub", "cache_dir": str(tmp_path / "cache"),
                             "backoff_s": 0.0, "workers": 2}}
        out = tmp_path / "study"
        summary = run_generative_study(_study(tiny_lm, scoring), out, progress=False)
        assert stub.count == 6  # en, es, de x 2 items
        rdir = out / "runs" / "math-k0" / "seed-0"
        preds = [json.loads(x) for x in (rdir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        cols = ["exact_match", "exact_match_switch", "judge", "judge_switch", "unparsed", "language_fidelity"]
        for p in preds:
            assert set(cols) | {"judge_raw"} <= set(p)
            assert p["judge"] in (0.25, 1.0) and p["judge_raw"].endswith(f"[[{1 + round(p['judge'] * 4)}]]")
            assert p["exact_match_switch"] <= p["exact_match"] and p["judge_switch"] <= p["judge"]
        result = json.loads((rdir / "result.json").read_text(encoding="utf-8"))
        ev = result["eval"]["math"]
        assert ev["metrics"] == cols
        for lang in ("en", "es", "de"):
            mine = [p for p in preds if p["language"] == lang]
            for c in cols:
                assert ev["languages"][lang][c] == pytest.approx(sum(p[c] for p in mine) / len(mine))
        assert summary["transfer"]["math"]["metric"] == "exact_match_switch"
        with open(out / "tables" / "scores.csv", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        assert [h for h in header if h.endswith("_mean")] == [f"{c}_mean" for c in cols]
        # a rerun with a fresh out re-scores from the cache: no request reaches the endpoint
        run_generative_study(_study(tiny_lm, scoring), tmp_path / "again", progress=False)
        assert stub.count == 6
    finally:
        stub.close()


def test_judge_down_leaves_no_finished_run(tiny_lm: Path, tmp_path: Path) -> None:
    from soi.study.generative import run_generative_study

    stub = Stub(lambda n, body: (502, b"bad gateway", 0))
    try:
        scoring = {"scorers": ["judge"], "judge": {"url": stub.url, "model": "stub", "retries": 1, "backoff_s": 0.0,
                                                   "cache_dir": str(tmp_path / "cache"), "workers": 1}}
        out = tmp_path / "study"
        with pytest.raises(SoiError, match=rf"judge endpoint {stub.url}/v1/chat/completions: HTTP 502 Bad Gateway "
                           r"after 2 attempt\(s\)"):
            run_generative_study(_study(tiny_lm, scoring), out, progress=False)
        assert stub.count == 2
        assert not (out / "runs" / "math-k0" / "seed-0" / "result.json").exists()
        assert not (out / "summary.json").exists() and not (out / "tables").exists()
    finally:
        stub.close()


def test_label_match_gets_transfer_statistics_next_to_the_metric(tiny_lm: Path, tmp_path: Path) -> None:
    """``metric: [exact_match, label_match]``: summary ``transfer_stats`` has both (the second under
    ``<key>:label_match``), ``tables/transfer_stats.csv`` too, and the per-item label match is the stripped
    prediction equal to the reference."""
    from soi.study.generative import run_generative_study

    cfg = _study(tiny_lm, {"scorers": ["label_match"]}).model_dump()
    cfg["tasks"]["math"]["metric"] = ["exact_match", "label_match"]
    out = tmp_path / "study"
    summary = run_generative_study(GenerativeStudyConfig.from_dict(cfg), out, progress=False)
    preds = [json.loads(x) for x in (out / "runs" / "math-k0" / "seed-0" / "predictions.jsonl").read_text(
        encoding="utf-8").splitlines()]
    assert all(p["label_match"] == float(p["prediction"].strip() == str(p["reference"]).strip()) for p in preds)
    stats = summary["transfer_stats"]
    assert list(stats) == ["math", "math:label_match"]
    assert stats["math"]["metric"] == "exact_match" and stats["math:label_match"]["metric"] == "label_match"
    for lang in ("es", "de"):
        mine = [p["label_match"] for p in preds if p["language"] == lang]
        assert stats["math:label_match"]["languages"][lang]["score"]["0"]["mean"] == pytest.approx(
            sum(mine) / len(mine))
    assert summary["transfer"]["math"]["metric"] == "exact_match"  # the curves keep the first metric
    with open(out / "tables" / "transfer_stats.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert {(r["key"], r["metric"]) for r in table} == {("math", "exact_match"), ("math:label_match", "label_match")}
