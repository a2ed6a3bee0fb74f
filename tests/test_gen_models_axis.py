"""Model size as a generative-study axis (``models:``), the transfer statistics and the SOI-across-mixtures
comparisons in the summary, tables and report, on two tiny random causal LMs of different sizes."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from soi.config.generative import GenerativeStudyConfig
from soi.errors import SoiError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOI_DATA_DIR") or REPO.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "mgsm" / "info.json").is_file(),
                                  reason=f"shared data not found at {SHARED} (set SOI_DATA_DIR)")
BASE: dict[str, Any] = {"type": "generative", "name": "t", "tasks": {"math": {}},
                        "mixture": {"english_n": 8, "seen": ["es"], "unseen": ["de"], "k": [0, 4]}}


@pytest.mark.parametrize(("data", "message"), [
    ({**BASE, "model": "a", "models": ["b", "c"]}, "s.yaml: model: give either model (one) or models (a list)"),
    (BASE, "s.yaml: model: model is required (or models: a list of models)"),
    ({**BASE, "models": ["a", "b", "a"]}, "s.yaml: models[2]: duplicate model 'a'"),
    ({**BASE, "models": []}, "s.yaml: models: List should have at least 1 item"),
    ({**BASE, "models": ["a", "./no-such-dir"]}, "s.yaml: models[1]:"),
    ({**BASE, "model": "a", "mixture": {**BASE["mixture"], "seen": ["es", "xx"]}},
     "s.yaml: mixture.seen: [1] unknown language code 'xx' (not ISO 639-1)"),
    ({**BASE, "model": "a", "tasks": {"math": {"mixture": {"unseen": ["d e"]}}}},
     "s.yaml: tasks.math.mixture.unseen: [0] 'd e' is not a language code"),
    ({**BASE, "model": "a", "mixture": {**BASE["mixture"], "english": "qq"}},
     "s.yaml: mixture.english: unknown language code 'qq'"),
    ({**BASE, "model": "a", "mixture": {**BASE["mixture"], "unseen": ["es"]}},
     "s.yaml: tasks.math.mixture: the English, seen and unseen languages overlap"),
])
def test_models_field_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SoiError) as info:
        GenerativeStudyConfig.from_dict(data, source="s.yaml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@needs_shared
def test_k_larger_than_the_pool_names_the_field() -> None:
    from soi.study.generative import build_mixtures

    cfg = GenerativeStudyConfig.from_dict({**BASE, "model": "a", "data_dir": str(SHARED),
                                           "mixture": {**BASE["mixture"], "k": [0, 400], "n_eval": 5}})
    with pytest.raises(SoiError) as info:
        build_mixtures(cfg, "s.yaml")
    assert str(info.value).startswith("s.yaml: tasks.math: mixture.k: seen language 'es' has 245 training rows")
    assert "\n" not in str(info.value)


def test_single_model_keeps_working() -> None:
    cfg = GenerativeStudyConfig.from_dict({**BASE, "model": "smollm2-135m"})
    assert cfg.model == "smollm2-135m" and cfg.models is None
    cfg = GenerativeStudyConfig.from_dict({**BASE, "models": ["smollm2-135m", "gemma3-270m"]})
    assert cfg.model is None and cfg.models == ["smollm2-135m", "gemma3-270m"]


@pytest.fixture(scope="module")
def two_lms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("transformers")
    import torch

    from soi.model.causal import tiny_causal_lm

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("lms")
    return tiny_causal_lm(d / "small"), tiny_causal_lm(d / "large", hidden_size=48, layers=3, seed=1)


@needs_shared
def test_models_axis_end_to_end(two_lms: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from soi.study.generative import run_generative_study

    small, large = two_lms
    data = {"type": "generative", "name": "sizes", "models": [str(small), str(large)], "data_dir": str(SHARED),
            "seeds": [0], "tasks": {"math": {}},
            "mixture": {"english_n": 4, "seen": ["es"], "unseen": ["de"], "k": [0, 2], "n_eval": 3,
                        "n_validation": 1},
            "training": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 1, "max_length": 96},
            "generation": {"max_new_tokens": 4, "batch_size": 8},
            "recording": {"probe": 2, "probe_max_new_tokens": 4}}
    out = tmp_path / "study"
    summary = run_generative_study(GenerativeStudyConfig.from_dict(data), out, progress=False)
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(summary))
    from soi.store.summary import undeclared_fields

    assert undeclared_fields(saved) == []  # docs/summary-schema.md lists every field written
    slugs = [m["slug"] for m in saved["models"]]
    assert slugs == ["small", "large"]
    for m, path in zip(saved["models"], (small, large), strict=True):
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        assert m["parameters"] == sum(p.numel() for p in ref.parameters())  # tied embeddings counted once
        sub = json.loads((out / m["out"] / "summary.json").read_text(encoding="utf-8"))
        assert undeclared_fields(sub) == []
        assert sub["model"] == str(path)
        assert saved["transfer"][f"{m['slug']}:math"] == sub["transfer"]["math"]
        assert saved["transfer_stats"][f"{m['slug']}:math"] == sub["transfer_stats"]["math"]
        for k in (0, 2):
            assert saved["runs"][f"{m['slug']}:math-k{k}"]["model"] == str(path)
            assert (out / m["out"] / "runs" / f"math-k{k}" / "seed-0" / "result.json").is_file()
        # the interval statistics agree with the per-language seed means of the plain transfer metrics
        st, t = sub["transfer_stats"]["math"], sub["transfer"]["math"]
        assert st["data"] == "test set" and st["n_items"] == {"en": 3, "es": 3, "de": 3}
        for lang in ("en", "es", "de"):
            assert st["languages"][lang]["score"]["2"]["mean"] == pytest.approx(t["scores"][lang]["2"]["mean"])
            assert st["languages"][lang]["gain"]["2"]["mean"] == pytest.approx(t["gain"][lang]["2"])
            assert st["languages"][lang]["gain"]["2"]["lo"] <= st["languages"][lang]["gain"]["2"]["mean"]
        # SOI across mixtures: the k = 0 run against k = 2 on the shared (English) training examples
        (comp,) = sub["comparisons"]
        assert (comp["a"], comp["b"], comp["k"]) == ("math-k0", "math-k2", 2)
        assert comp["n_shared"] == 4 and comp["n_only_b"] == 2  # the fixed English set; 2 es examples only in k=2
        stats = json.loads((out / m["out"] / comp["dir"] / "stats.json").read_text(encoding="utf-8"))
        assert stats["groups"][0]["group"] == "all" and stats["groups"][0]["n_shared"] == 4
        assert comp["groups"][0]["share_a"] == stats["groups"][0]["share_a"]
        assert (out / m["out"] / "tables" / "transfer_stats.csv").is_file()
        probe = list(csv.DictReader((out / m["out"] / "tables" / "probe_soi.csv").open(encoding="utf-8")))
        assert {r["data"] for r in probe} == {"training", "probe"}
    # every model's transfer statistics in the study folder's tables too (keys <slug>:<key>)
    combined = list(csv.DictReader((out / "tables" / "transfer_stats.csv").open(encoding="utf-8")))
    assert {r["key"] for r in combined} == {f"{s}:math" for s in slugs}
    assert len(combined) == sum(len(list(csv.DictReader((out / m["out"] / "tables" / "transfer_stats.csv").open(
        encoding="utf-8")))) for m in saved["models"])
    # transfer against model size
    (key,) = saved["by_model"]
    pts = saved["by_model"][key]
    assert [p["slug"] for p in pts] == slugs and all(p["k"] == 2 for p in pts)
    assert pts[0]["parameters"] < pts[1]["parameters"]
    for p, m in zip(pts, saved["models"], strict=True):
        assert p["seen"] == saved["transfer_stats"][f"{m['slug']}:math"]["groups"]["seen"]["gain"]["2"]
    rows = list(csv.DictReader((out / "tables" / "transfer_by_model.csv").open(encoding="utf-8")))
    assert {(r["model"], r["statistic"]) for r in rows} == {(str(x), s) for x in (small, large)
                                                            for s in ("seen mean gain", "unseen mean gain", "gap")}
    assert (out / "figures" / "transfer_by_model_math.png").stat().st_size > 1000
    # the report reads the combined study: every model's runs, comparisons and transfer keys
    from soi.report.data import collect

    rep = collect(out)
    assert {r["name"] for r in rep["runs"]} == {f"{s}:math-k{k}" for s in slugs for k in (0, 2)}
    assert {c["a"] for c in rep["comparisons"]} == {f"{s}:math-k0" for s in slugs}
    assert set(rep["transfer"]) == {f"{s}:math" for s in slugs}
    assert set(rep["transfer_stats"]) == set(rep["transfer"]) and rep["by_model"] == saved["by_model"]
    from soi.report.html import build_report

    build_report(out)
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {f"transfer_{s}_math_intervals.png" for s in slugs} <= figs and "transfer_by_model_math.png" in figs
    from rich.console import Console

    from soi.study.gen_stats import print_stats

    console = Console(record=True, width=200)
    print_stats(saved, console)
    text = " ".join(console.export_text().split())
    assert "small:math: gain in exact_match over k=0, 95% intervals (test set, 1 seed(s)" in text
    assert "SOI across mixtures" in text and "reseeding null p = n/a (< 3 seeds)" in text
    # resume: nothing retrained, the same summary
    again = run_generative_study(GenerativeStudyConfig.from_dict(data), out, progress=False)
    assert again["transfer_stats"] == summary["transfer_stats"]
