"""The self-contained HTML report: ``write_report(DIR)`` -> ``DIR/report.html`` (+ ``DIR/figures/*.png``).

One file, no network: the page's CSS and JavaScript (``soi/report/assets/``) are inlined, the data is one
JSON document in ``<script type="application/json">`` (every ``<`` escaped as ``\\u003c``, so no text in
the data can close the script element), and a Content-Security-Policy forbids loading anything from
elsewhere. See docs/report.md.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from soi._io import atomic_dir, atomic_path
from soi.errors import SoiError
from soi.report.data import collect

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
_TOKEN = re.compile(r"\{\{(TITLE|VERSION|CSS|JS|DATA)\}\}")
_DATA_RE = re.compile(r'<script type="application/json" id="soi-data">(.*?)</script>', re.S)


def _asset(name: str) -> str:
    return resources.files("soi.report").joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON text safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and U+2028/9 are ``\\u`` escapes."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(data: dict[str, Any]) -> str:
    """The report page for collected data (see :func:`soi.report.data.collect`)."""
    values = {
        "TITLE": html.escape(f"{data.get('title', 'soi')} — soi report"),
        "VERSION": html.escape(str(data.get("soi_version", ""))),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "DATA": embed_json(data),
    }
    if "</script" in values["JS"].lower():
        raise SoiError("report.js must not contain '</script'")
    return _TOKEN.sub(lambda m: values[m.group(1)], _asset("report.html"))


def read_report_data(path: str | Path) -> dict[str, Any]:
    """The data embedded in a report file (for tests and scripts; columns stay encoded, see ``decode_column``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SoiError(f"cannot read report ({exc})", path=path) from None
    m = _DATA_RE.search(text)
    if m is None:
        raise SoiError("no embedded soi-data JSON found", path=path)
    return json.loads(m.group(1))


def write_report(path: str | Path, out: str | Path | None = None, *, max_examples: int = 100_000,
                 figures: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Write the HTML report of a study directory, a directory of runs, or one run directory.

    Parameters
    ----------
    path : the directory to report on (``soi run`` output, ``soi demo`` output, or a run directory)
    out : the HTML file (default ``path/report.html``); static figures go to ``figures/`` beside it
    max_examples : examples embedded for the data maps and the example browser (a seeded sample beyond)
    figures : also draw PNG copies of the main figures (matplotlib)
    log : called with short progress messages

    Returns
    -------
    The path of the HTML file (written atomically).
    """
    return build_report(path, out, max_examples=max_examples, figures=figures, log=log)[0]


def build_report(path: str | Path, out: str | Path | None = None, *, max_examples: int = 100_000,
                 figures: bool = True, log: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """:func:`write_report`, also returning the embedded data."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise SoiError(f"max_examples must be an integer >= 1, got {max_examples!r}")
    src = Path(path)
    target = Path(out) if out is not None else src / REPORT_FILE
    if target.exists() and target.is_dir():
        raise SoiError("--out is a directory; give a file name such as report.html", path=target)
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    data = collect(src, max_examples=max_examples, log=say)
    # the page and figures/ are written as a set: the page is written (not yet moved in) first, figures/ is
    # drawn into a temporary folder that replaces figures/ as a unit, then the page is moved into place; an
    # error (full disk, ...) anywhere before leaves the old page and the old figures/ as they were
    with contextlib.ExitStack() as stack:
        page_tmp = stack.enter_context(atomic_path(target))
        if figures:
            from soi.report.figures import write_figures

            say("drawing static figures")
            fig_tmp = stack.enter_context(atomic_dir(target.parent / FIGURES_DIR))
            written = write_figures(src, data, fig_tmp)
            data["figures"] = [str(Path(FIGURES_DIR) / p.relative_to(fig_tmp)) for p in written]
        say("writing the page")
        data["build_seconds"] = round(time.perf_counter() - start, 3)
        page_tmp.write_text(render_html(data), encoding="utf-8")
    return target, data
