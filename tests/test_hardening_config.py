"""Hardening, class 5: study YAML (classification, two_stage and generative) refuses what would run wrongly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hf_common import data_dir
from shared_data import needs_dataset
from soi.config import StudyConfig
from soi.config.generative import GenerativeStudyConfig
from soi.errors import SoiError

pytestmark = needs_dataset("sst2")

BASE: dict[str, Any] = {
    "name": "t", "model": "minilm-l6", "data_dir": str(data_dir()), "seeds": [0],
    "train": {"epochs": 2, "lr": 1e-3},
    "datasets": {"sst2": {"name": "sst2", "n_train": 16}, "mr": {"name": "mr", "n_train": 16}},
    "runs": [{"name": "sst2-only", "setting": "single", "train": ["sst2"]},
             {"name": "both", "setting": "multi-source", "train": ["sst2", "mr"]}],
}
GEN: dict[str, Any] = {"type": "generative", "name": "t", "model": "m", "tasks": {"math": {}},
                       "mixture": {"english_n": 8, "seen": ["es"], "unseen": ["de"], "k": [0, 4]}}


def error_of(tmp_path: Path, data: Any, *, text: str | bytes | None = None, cls: type = StudyConfig) -> str:
    path = tmp_path / "s.yaml"
    if text is None:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(SoiError) as info:
        cls.from_yaml(path)
    msg = str(info.value)
    assert "\n" not in msg and (msg.startswith("s.yaml: ") or msg.startswith(str(path)))
    return msg


def changed(fn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    fn(data)
    return data


def test_base_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert StudyConfig.from_yaml(path).train.epochs == 2


@pytest.mark.parametrize(("mutate", "expect"), [
    (lambda d: d["train"].update(epochs=True), "train.epochs: Input should be a valid integer"),
    (lambda d: d["train"].update(batch_size=False), "train.batch_size: Input should be a valid integer"),
    (lambda d: d["train"].update(lr=True), "train.lr: Input should be a valid number"),
    (lambda d: d.update(seeds=[0, True]), "seeds[1]: Input should be a valid integer"),
    (lambda d: d["datasets"]["sst2"].update(n_train=True), "datasets.sst2.n_train"),
    (lambda d: d["runs"][1].update(n_train={"mr": True}), "runs[1].n_train.mr"),
    (lambda d: d.update(max_length=True), "max_length: Input should be a valid integer"),
])
def test_booleans_are_not_numbers(tmp_path: Path, mutate, expect: str) -> None:
    assert expect in error_of(tmp_path, changed(mutate))


def test_booleans_still_accepted_where_boolean(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(changed(lambda d: d["train"].update(freeze_embeddings=True))))
    assert StudyConfig.from_yaml(path).train.freeze_embeddings is True


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("field", ["lr", "weight_decay", "temperature"])
def test_non_finite_floats_refused(tmp_path: Path, field: str, value: str) -> None:
    text = yaml.safe_dump(BASE).replace("  lr: 0.001", f"  lr: 0.001\n  {field}: {value}" if field != "lr"
                                        else f"  lr: {value}")
    assert f"train.{field}:" in error_of(tmp_path, None, text=text)


def test_non_finite_fraction_refused(tmp_path: Path) -> None:
    assert "datasets.sst2.n_train" in error_of(tmp_path, changed(lambda d: d["datasets"]["sst2"].update(
        n_train=float("nan"))))


@pytest.mark.parametrize(("seeds", "ok"), [([0], True), ([2**32 - 1], True), ([-1], False), ([2**32], False),
                                           ([2**64 + 5], False)])
def test_seed_range(tmp_path: Path, seeds: list[int], ok: bool) -> None:
    data = changed(lambda d: d.update(seeds=seeds))
    if ok:
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(data))
        assert StudyConfig.from_yaml(path).seeds == seeds
    else:
        assert "seeds: seeds must be integers in [0, 2**32)" in error_of(tmp_path, data)


def test_seed_range_matches_numpy_and_torch() -> None:
    """The accepted range [0, 2**32) is what numpy's legacy seeding takes; torch takes it too."""
    import numpy as np
    import torch

    np.random.RandomState(2**32 - 1)
    torch.manual_seed(2**32 - 1)
    with pytest.raises(ValueError):
        np.random.RandomState(2**32)
    with pytest.raises(ValueError):
        np.random.RandomState(-1)


def test_data_seed_range(tmp_path: Path) -> None:
    assert "data_seed: Input should be greater than or equal to 0" in error_of(
        tmp_path, changed(lambda d: d.update(data_seed=-3)))


def test_over_long_run_name(tmp_path: Path) -> None:
    msg = error_of(tmp_path, changed(lambda d: d["runs"][0].update(name="r" * 81)))
    assert "runs[0].name: String should have at most 80 characters" in msg


def test_missing_local_model_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    msg = error_of(tmp_path, changed(lambda d: d.update(model=str(missing))))
    assert f"model: local model path not found: {missing}" in msg
    msg = error_of(tmp_path, changed(lambda d: d.update(model="./nope")))
    assert "model: local model path not found: ./nope" in msg
    msg = error_of(tmp_path, dict(GEN, model=str(missing)), cls=GenerativeStudyConfig)
    assert f"model: local model path not found: {missing}" in msg


def test_missing_data_dir_reported_as_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nodata"
    msg = error_of(tmp_path, changed(lambda d: d.update(data_dir=str(missing))))
    assert f"data_dir: folder not found: {missing}" in msg and "unknown dataset" not in msg


def test_non_utf8_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE).encode().replace(b"name: t\n", b"name: caf\xe9\n")
    msg = error_of(tmp_path, None, text=text)
    assert "study file is not UTF-8 text (byte 0xe9" in msg
    assert "not UTF-8" in error_of(tmp_path, None, text=text, cls=GenerativeStudyConfig)


def test_deeply_nested_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE) + "extra: " + "[" * 20_000 + "]" * 20_000 + "\n"
    msg = error_of(tmp_path, None, text=text)
    assert "invalid YAML (nested too deeply)" in msg


def test_two_stage_fields(tmp_path: Path) -> None:
    rule = {"name": "low", "categories": ["never_learned"]}
    ts = {"from_run": "sst2-only", "rules": [rule]}
    assert "two_stage.epochs: Input should be a valid integer" in error_of(
        tmp_path, changed(lambda d: d.update(two_stage=ts | {"epochs": True})))
    assert "two_stage.stage1_seed: Input should be less than 4294967296" in error_of(
        tmp_path, changed(lambda d: d.update(two_stage=ts | {"stage1_seed": 2**40})))
    assert "two_stage.rules[0].seed: Input should be a valid integer" in error_of(
        tmp_path, changed(lambda d: d.update(two_stage=ts | {"rules": [rule | {"seed": True}]})))
    assert "two_stage.lr:" in error_of(tmp_path, None, text=yaml.safe_dump(
        changed(lambda d: d.update(two_stage=ts | {"lr": 0.1}))).replace("lr: 0.1", "lr: .inf"))


def test_generative_fields(tmp_path: Path) -> None:
    assert "training.batch_size: Input should be a valid integer" in error_of(
        tmp_path, dict(GEN, training={"batch_size": True}), cls=GenerativeStudyConfig)
    assert "seeds: seeds must be integers in [0, 2**32)" in error_of(
        tmp_path, dict(GEN, seeds=[-1]), cls=GenerativeStudyConfig)
    assert "runs[0].name: String should have at most 80" in error_of(
        tmp_path, dict(GEN, runs=[{"name": "x" * 100, "tasks": ["math"]}]), cls=GenerativeStudyConfig)


def test_fraction_rounding_to_zero_rows_refused() -> None:
    from soi.data import load_split

    split = load_split("sst2", "validation")
    with pytest.raises(SoiError, match="rounds to 0 rows"):
        split.subsample(0.5 / len(split) / 2)
    assert len(split.subsample(1.0 / len(split))) == 1
