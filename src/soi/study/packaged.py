"""Packaged studies (``soi demo --study NAME`` runs ``soi/studies/NAME.yaml``) and running any study file.

A study YAML with ``type: generative`` is a cross-lingual generative study (:mod:`soi.study.generative`); without a
``type`` (or ``type: classification``) a classification study (:class:`~soi.config.StudyConfig`,
:func:`~soi.study.run_study`); :data:`STUDY_TYPES` maps each type to its runner.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from soi.errors import SoiError


def packaged_studies() -> dict[str, Path]:
    """``{name: path}`` of the study YAMLs shipped in ``soi/studies/``."""
    root = resources.files("soi") / "studies"
    return {Path(p.name).stem: Path(str(p)) for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def describe(path: Path) -> str:
    """The first comment line of a study file (its one-line description)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def read_study(path: str | Path) -> dict[str, Any]:
    """Parse a study YAML into a mapping (one-line errors)."""
    from soi.config.study import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SoiError(f"the study must be a mapping, got {type(data).__name__}", path=path)
    return data


def scale(data: dict[str, Any], *, n_train: int | None = None, n_eval: int | None = None,
          epochs: int | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    """A copy of a classification study mapping with every dataset's ``n_train`` / ``n_eval`` (where set, and
    each run's ``n_train`` overrides) capped, and ``train.epochs`` / ``seeds`` replaced: a quick, smaller run."""
    out = dict(data)
    if n_train is not None or n_eval is not None:
        datasets = {}
        for key, ds in (data.get("datasets") or {}).items():
            ds = dict(ds)
            for field, cap in (("n_train", n_train), ("n_eval", n_eval)):
                if cap is not None:
                    ds[field] = cap if not isinstance(ds.get(field), int) else min(ds[field], cap)
            datasets[key] = ds
        out["datasets"] = datasets
    if epochs is not None:
        out["train"] = dict(data.get("train") or {}) | {"epochs": epochs}
    if seeds is not None:
        out["seeds"] = list(seeds)
    return out


def is_generative(data: dict[str, Any]) -> bool:
    return data.get("type") == "generative"


def run_study_file(path: str | Path, out: str | Path, *, progress: bool = True,
                   overrides: dict[str, Any] | None = None, report: bool = True) -> dict[str, Any]:
    """Run (or resume) the study in ``path`` into ``out``, whichever its type, then write ``out/report.html``
    (``report=False``: no report); returns the summary.

    ``overrides``: :func:`scale` keyword arguments (classification studies only).
    """
    summary = _run(path, out, progress=progress, overrides=overrides)
    if report and summary:  # an empty summary: a non-main process of a distributed run (the main one reports)
        from soi.report import write_report

        html = write_report(out)
        if progress:
            from rich.console import Console

            Console(highlight=False).print(f"wrote {html} (open it in a browser; figures/ has PNG copies)")
    return summary


def _run_generative(path: Path, data: dict[str, Any], out: str | Path, *, progress: bool,
                    overrides: dict[str, Any]) -> dict[str, Any]:
    if overrides:
        raise SoiError(f"--{next(iter(overrides)).replace('_', '-')} applies to classification studies only; "
                       "edit the generative study file instead", path=path)
    from soi.study.generative import run_generative_study

    return run_generative_study(path, out, progress=progress)


def _run_classification(path: Path, data: dict[str, Any], out: str | Path, *, progress: bool,
                        overrides: dict[str, Any]) -> dict[str, Any]:
    from soi.config import StudyConfig
    from soi.study.runner import run_study

    if overrides or "type" in data:
        from soi.config.study import resolve_relative

        data = {k: v for k, v in data.items() if k != "type"}  # type: classification is the default
        config = StudyConfig.from_dict(resolve_relative(scale(data, **overrides), path), source=path.name)
    else:
        config = StudyConfig.from_yaml(path)
    return run_study(config, out, progress=progress)


StudyRunner = Callable[..., dict[str, Any]]
STUDY_TYPES: dict[str, StudyRunner] = {"classification": _run_classification, "generative": _run_generative}
"""The study types ``soi run`` knows, by the YAML's ``type`` (default ``classification``): each runs a parsed
study file, ``runner(path, data, out, progress=..., overrides=...)``, and returns its summary. A new study type
adds its entry here (its runner builds the config and calls :func:`soi.study.engine.run_study_with`)."""


def study_type(data: dict[str, Any], path: str | Path | None = None) -> str:
    """The ``type`` of a parsed study file (``classification`` when absent); an unknown one is an error."""
    kind = data.get("type", "classification")
    if kind not in STUDY_TYPES:
        raise SoiError(f"type: unknown study type {kind!r} (use {' or '.join(STUDY_TYPES)})", path=path)
    return str(kind)


def _run(path: str | Path, out: str | Path, *, progress: bool, overrides: dict[str, Any] | None) -> dict[str, Any]:
    path = Path(path)
    data = read_study(path)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    return STUDY_TYPES[study_type(data, path)](path, data, out, progress=progress, overrides=overrides)


__all__ = ["STUDY_TYPES", "StudyRunner", "describe", "is_generative", "packaged_studies", "read_study",
           "run_study_file", "scale", "study_type"]
