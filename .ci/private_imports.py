"""CI: no private (``_name``) object is imported from another soi module (docs/architecture.md).

The core helper modules ``soi._io`` and ``soi._arrow`` are shared by design and may be imported; private *names*
inside any module may not. Prints one line per offence and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ALLOWED_MODULES = {"soi._io", "soi._arrow"}


def offences(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module or not node.module.startswith("soi"):
                continue
            for alias in node.names:
                name = alias.name
                private = name.startswith("_") and not name.startswith("__")
                if private and f"{node.module}.{name}" not in ALLOWED_MODULES:
                    found.append(f"{path}:{node.lineno}: imports private name {name} from {node.module}")
    return found


if __name__ == "__main__":
    bad = offences(Path(sys.argv[1] if len(sys.argv) > 1 else "src/soi"))
    print("\n".join(bad) if bad else "no private names imported across modules")
    sys.exit(1 if bad else 0)
