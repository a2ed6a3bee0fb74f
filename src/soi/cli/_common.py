"""Shared CLI helpers: console, option parsing, rules files."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from soi.errors import SoiError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def defer_pandas_import() -> None:
    """Keep pyarrow from importing pandas (~0.2 s) when it first converts a NumPy array.

    pyarrow probes for pandas on its first conversion only to recognise pandas objects; the CLI never hands
    it any. With pandas hidden during that probe, pyarrow records "no pandas" and retries the import the
    moment pandas is really needed (``Table.to_pandas``/``from_pandas``), so nothing is lost
    (``tests/test_cli_analyze.py`` checks both).
    """
    import sys

    if "pandas" in sys.modules:
        return
    import numpy as np
    import pyarrow as pa

    class _HidePandas:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "pandas" or name.startswith("pandas."):
                raise ImportError("pandas hidden while pyarrow probes for it")

    hider = _HidePandas()
    sys.meta_path.insert(0, hider)
    try:
        pa.array(np.zeros(1))
    finally:
        sys.meta_path.remove(hider)


def split_list(values: list[str] | str | None) -> list[str]:
    """Accept repeated options and/or comma-separated lists."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [x.strip() for v in items for x in v.split(",") if x.strip()]


def load_rules(path: Path):
    """Read category rules from JSON or YAML: ``{"rules": {name: expression, ...}, "default": name}``."""
    from soi._io import read_text
    from soi.analysis import expr
    from soi.analysis.categories import CategoryRules
    from soi.analysis.per_example import RULE_COLUMNS
    from soi.config.study import read_yaml

    if not path.is_file():
        raise SoiError("rules file not found", path=path)
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(path, "rules file")
    else:
        try:
            data = json.loads(read_text(path, "rules file"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
            raise SoiError(f"cannot parse rules (invalid JSON: {reason})", path=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), dict):
        raise SoiError("expected a mapping with a 'rules' mapping of name: expression", path=path)
    unknown = set(data) - {"rules", "default"}
    if unknown:
        raise SoiError(f"unknown field(s) {sorted(unknown)}", path=path)
    if not isinstance(data.get("default", "other"), str):
        raise SoiError("'default' must be a category name (a string)", path=path)
    try:
        rules = CategoryRules({str(k): v for k, v in data["rules"].items()}, default=str(data.get("default", "other")),
                              source=str(path))
        for name, rule in rules.rules.items():
            unknown = sorted(expr.names(rule) - set(RULE_COLUMNS))
            if unknown:
                raise SoiError(f"rule {name!r}: unknown column {unknown[0]!r}; available: {', '.join(RULE_COLUMNS)}")
    except SoiError as exc:
        raise SoiError(str(exc), path=path) from None
    return rules
