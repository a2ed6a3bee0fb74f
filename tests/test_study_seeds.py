"""soi.study with several seeds: per-example test-set predictions (eval/<key>.parquet), data-matched runs
(match_size), seed-folder comparisons in the summary, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import yaml

from soi.config import StudyConfig
from soi.errors import SoiError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common import data_dir, sentiment_study, study_error, tiny_encoder
from shared_data import needs_dataset

pytestmark = needs_dataset("sst2")

SEEDS = [0, 1, 2]


def study_dict(model: str) -> dict:
    return sentiment_study(model, "tiny-seeds", {"sst2": (12, 20), "mr": (18, 16), "cr": (None, 14)}, [
        {"name": "sst2-only", "setting": "single", "train": ["sst2"]},
        {"name": "pooled", "setting": "multi-source", "train": ["sst2", "mr"]},
        {"name": "pooled-matched", "setting": "multi-source", "train": ["sst2", "mr"], "match_size": "sst2-only"},
    ], train={"epochs": 3, "batch_size": 8, "lr": 1e-3}, seeds=SEEDS, data_seed=5, eval={"ood": ["cr"]})


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from soi.study import run_study

    root = tmp_path_factory.mktemp("seeds")
    yml = root / "study.yaml"
    yml.write_text(yaml.safe_dump(study_dict(tiny_encoder(root / "tiny-bert"))))
    out = root / "out"
    summary = run_study(StudyConfig.from_yaml(yml), out, progress=False)
    return yml, out, summary


def test_eval_parquets_match_result_json(study: tuple[Path, Path, dict]) -> None:
    from soi.data import load_split

    _, out, _ = study
    eval_ids = {key: load_split(name, "test", data_dir=data_dir()).subsample(n, 5).ids
                for key, name, n in (("sst2", "sst2", 20), ("mr", "mr", 16), ("cr", "cr", 14))}
    for run, keys in (("sst2-only", {"sst2", "cr"}), ("pooled", {"sst2", "mr", "cr"}),
                      ("pooled-matched", {"sst2", "mr", "cr"})):
        for seed in SEEDS:
            rdir = out / "runs" / run / f"seed-{seed}"
            result = json.loads((rdir / "result.json").read_text())
            assert {p.stem for p in (rdir / "eval").glob("*.parquet")} == keys == set(result["eval"])
            for key in keys:
                t = pq.read_table(rdir / "eval" / f"{key}.parquet")
                assert t.column_names == ["example_id", "gold", "pred", "p_gold", "correct", "language"]
                assert t.column("example_id").to_pylist() == eval_ids[key]  # the eval split's rows, in order
                gold, pred = t.column("gold").to_numpy(), t.column("pred").to_numpy()
                p_gold, correct = t.column("p_gold").to_numpy(), t.column("correct").to_numpy()
                assert np.array_equal(correct, pred == gold)
                assert np.all((p_gold >= 0) & (p_gold <= 1))
                # two labels: the argmax is the gold label exactly when its probability is above one half
                assert np.array_equal(p_gold > 0.5, correct) or np.any(np.isclose(p_gold, 0.5))
                ev = result["eval"][key]
                assert ev["n"] == t.num_rows and ev["accuracy"] == pytest.approx(correct.mean(), abs=1e-12)
                assert set(t.column("language").to_pylist()) == set(ev["languages"]) == {"en"}


def test_match_size_exact_and_nested(study: tuple[Path, Path, dict]) -> None:
    from soi.store import read_examples as load_examples

    _, out, summary = study
    for seed in SEEDS:
        ids = {run: load_examples(out / "runs" / run / f"seed-{seed}") for run in ("sst2-only", "pooled",
                                                                                    "pooled-matched")}
        matched = ids["pooled-matched"]
        # 12 sst2 examples to match, pooled holds 12 + 18: proportional 4.8 / 7.2 -> 5 / 7 (largest remainder)
        src = matched.column("source").to_pylist()
        assert matched.num_rows == 12 and src.count("sst2") == 5 and src.count("mr") == 7
        full = set(ids["pooled"].column("example_id").to_pylist())
        assert set(matched.column("example_id").to_pylist()) <= full  # nested in the unmatched mixture
        single = set(ids["sst2-only"].column("example_id").to_pylist())
        sst2_matched = {i for i, s in zip(matched.column("example_id").to_pylist(), src, strict=True) if s == "sst2"}
        assert sst2_matched <= single
    run = summary["runs"]["pooled-matched"]
    assert run["n_train"] == 12 and run["train_sizes"] == {"sst2": 5, "mr": 7} and run["match_size"] == "sst2-only"
    assert summary["runs"]["pooled"]["train_sizes"] == {"sst2": 12, "mr": 18}


def test_seed_folder_comparisons(study: tuple[Path, Path, dict]) -> None:
    _, out, summary = study
    pairs = {(c["a"], c["b"]) for c in summary["comparisons"]}
    # defaults: the single run vs both multi runs, and the matched run vs its unmatched mixture (more data)
    assert pairs == {("sst2-only", "pooled"), ("sst2-only", "pooled-matched"), ("pooled-matched", "pooled")}
    results = {(r, s): json.loads((out / "runs" / r / f"seed-{s}" / "result.json").read_text())
               for r in ("sst2-only", "pooled", "pooled-matched") for s in SEEDS}
    for comp in summary["comparisons"]:
        cdir = out / "compare" / f"{comp['a']}__vs__{comp['b']}"
        assert comp["dir"] == str(cdir) and not list(cdir.glob("seed-*"))  # one folder for all seeds
        stats = json.loads((cdir / "stats.json").read_text())
        assert comp["seeds"] == {"a": SEEDS, "b": SEEDS} == stats["groups"][0]["seeds"]
        assert comp["n_shared"] == stats["n_shared"] == (5 if comp["a"] == "sst2-only" and "matched" in comp["b"]
                                                         else 12)
        for g, sg in zip(comp["groups"], stats["groups"], strict=True):
            assert g["data"] == "training dynamics" == sg["mcnemar"]["data"]
            assert g["seed_null"]["p_value"] == sg["seed_null"]["overall"]["p_value"]
            assert g["seed_null"]["p_value"] is not None and 0.0 <= g["seed_null"]["p_value"] <= 1.0  # 3 seeds
            flagged = {(c["from"], c["to"]) for c in sg["seed_null"]["cells"] if c["significant"]}
            assert {(t["from"], t["to"]) for t in g["significant_transitions"]} == flagged
        # test-set statistics on the eval sets both runs have, consistent with result.json accuracies
        shared = set(results[comp["a"], 0]["eval"]) & set(results[comp["b"], 0]["eval"])
        assert set(comp["test_set"]) == shared
        for key, t in comp["test_set"].items():
            assert t["data"] == "test set" and t["n_items"] == results[comp["a"], 0]["eval"][key]["n"]
            for side, run in (("accuracy_a", comp["a"]), ("accuracy_b", comp["b"])):
                assert t[side] == pytest.approx(np.mean([results[run, s]["eval"][key]["accuracy"] for s in SEEDS]))
            assert t["difference"] == pytest.approx(t["accuracy_b"] - t["accuracy_a"])
            assert t["lo"] <= t["difference"] <= t["hi"] and len(t["mcnemar_p_per_seed"]) == len(SEEDS)
            assert t["significant"] == (t["lo"] > 0 or t["hi"] < 0)
    text = (out / "summary.md").read_text()
    assert "## What the comparisons show" in text and "test data" in text and "training dynamics" in text
    for line in summary["findings"]:
        assert line in text
    assert sum("sst2-only \u2192 pooled (3 + 3 seeds), sst2 test set" in x for x in summary["findings"]) == 1
    assert (out / "tables" / "test_set.csv").read_text().count("\n") == 1 + sum(
        len(c["test_set"]) for c in summary["comparisons"])


def test_data_matched_summary(study: tuple[Path, Path, dict]) -> None:
    _, out, summary = study
    [m] = summary["data_matched"]
    assert (m["run"], m["target"], m["full"]) == ("pooled-matched", "sst2-only", "pooled")
    assert m["n_train"] == {"target": 12, "matched": 12, "full": 30}
    runs = summary["runs"]
    effects = {(e["effect"], e["eval_set"]): e for e in m["effects"]}
    assert set(effects) == {(eff, key) for eff in ("pooling at equal data", "pooling with more data")
                            for key in ("sst2", "cr")} | {("more data", k) for k in ("sst2", "mr", "cr")}
    comps = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    for (_, key), e in effects.items():
        acc = {r: runs[r]["eval"][key]["accuracy"]["mean"] for r in (e["a"], e["b"])}
        assert e["difference"] == pytest.approx(acc[e["b"]] - acc[e["a"]]) and e["data"] == "test set"
        ts = comps[e["a"], e["b"]]["test_set"][key]
        assert (e["lo"], e["hi"], e["significant"]) == (ts["lo"], ts["hi"], ts["significant"])
    rows = (out / "tables" / "data_matched.csv").read_text().splitlines()
    assert len(rows) == 1 + len(m["effects"]) and rows[0].startswith("matched_run,effect,a,b,n_train_a")
    assert any(x.startswith("data-matched control pooled-matched: pooling at equal data (sst2-only, 12 examples")
               for x in summary["findings"])


def test_proportional_sizes() -> None:
    from soi.study.runner import proportional_sizes

    assert proportional_sizes({"a": 12, "b": 18}, 12) == {"a": 5, "b": 7}
    assert proportional_sizes({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}  # ties: first in order
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = {f"d{i}": int(x) for i, x in enumerate(rng.integers(1, 500, rng.integers(1, 5)))}
        total = int(rng.integers(0, sum(sizes.values()) + 1))
        out = proportional_sizes(sizes, total)
        assert sum(out.values()) == total
        for k, v in out.items():
            assert 0 <= v <= sizes[k] and abs(v - sizes[k] * total / sum(sizes.values())) < 1
    with pytest.raises(ValueError):
        proportional_sizes({"a": 3}, 4)


def test_rerun_skips_finished_runs(study: tuple[Path, Path, dict]) -> None:
    from soi.study import run_study

    yml, out, summary = study
    results = sorted(out.glob("runs/*/seed-*/result.json"))
    assert len(results) == 3 * len(SEEDS)
    stamps = {p: p.stat().st_mtime_ns for p in [*results, *out.glob("runs/*/seed-*/eval/*.parquet"),
                                                 *out.glob("compare/*/stats.json")]}
    again = run_study(StudyConfig.from_yaml(yml), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["runs"] == summary["runs"] and again["comparisons"] == summary["comparisons"]
    # a seed folder the study does not list would silently join the comparisons: refused
    extra = out / "runs" / "pooled" / "seed-9"
    extra.mkdir()
    with pytest.raises(SoiError, match=r"seeds: runs/pooled/seed-9 is not one of the study's seeds \[0, 1, 2\]"):
        run_study(StudyConfig.from_yaml(yml), out, progress=False)
    extra.rmdir()
    # the matched run's rows follow its target's size: a changed target makes the finished matched run stale
    changed = yaml.safe_load(yml.read_text())
    changed["runs"][2]["match_size"] = "pooled"
    with pytest.raises(SoiError, match="'pooled-matched' seed 0 was trained with different settings"):
        run_study(StudyConfig.from_dict(changed), out, progress=False)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["runs"][2].update(match_size="nope"), "study.yaml: runs[2].match_size: unknown run 'nope'"),
    (lambda d: d["runs"][2].update(match_size="pooled-matched"),
     "study.yaml: runs[2].match_size: a run cannot match its own size"),
    (lambda d: (d["runs"][1].update(match_size="pooled-matched"), d["runs"][2].update(match_size="pooled")),
     "study.yaml: runs[1].match_size: cycle: pooled -> pooled-matched -> pooled"),
    (lambda d: d["runs"][2].update(match_size=""), "study.yaml: runs[2].match_size: "),
])
def test_match_size_config_errors(tmp_path: Path, edit, expected: str) -> None:
    data = study_dict("some/model")
    edit(data)
    assert study_error(tmp_path, data).startswith(expected)


def test_match_size_larger_than_available(tmp_path: Path) -> None:
    from soi.study import run_study

    data = study_dict("some/model")
    data["runs"][0]["match_size"] = "pooled"  # 30 examples wanted, sst2-only has 12
    with pytest.raises(SoiError, match=r"^runs\[0\]\.match_size: run 'pooled' trains on 30 examples, more than "
                                       r"the 12 of run 'sst2-only'") as err:
        run_study(StudyConfig.from_dict(data), tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "runs").exists()  # refused before training anything
