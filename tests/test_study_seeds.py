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
from hf_common import data_dir, study_error, tiny_encoder

pytestmark = pytest.mark.skipif(not (data_dir() / "sst2" / "info.json").is_file(), reason="shared data missing")

SEEDS = [0, 1]


def study_dict(model: str) -> dict:
    return {
        "name": "tiny-seeds",
        "model": model,
        "data_dir": str(data_dir()),
        "seeds": SEEDS,
        "data_seed": 5,
        "max_length": 32,
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3},
        "datasets": {
            "sst2": {"name": "sst2", "task": "sentiment", "n_train": 12, "n_eval": 20},
            "mr": {"name": "mr", "task": "sentiment", "n_train": 18, "n_eval": 16},
            "cr": {"name": "cr", "task": "sentiment", "n_eval": 14},
        },
        "runs": [
            {"name": "sst2-only", "setting": "single", "train": ["sst2"]},
            {"name": "pooled", "setting": "multi-source", "train": ["sst2", "mr"]},
            {"name": "pooled-matched", "setting": "multi-source", "train": ["sst2", "mr"], "match_size": "sst2-only"},
        ],
        "eval": {"ood": ["cr"]},
    }


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
    stamps = {p: p.stat().st_mtime_ns for p in [*results, *out.glob("runs/*/seed-*/eval/*.parquet")]}
    again = run_study(StudyConfig.from_yaml(yml), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["runs"] == summary["runs"]
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
