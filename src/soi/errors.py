"""User-facing errors.

Every problem with user input (files, columns, values, options) is raised as :class:`SoiError` with a
one-line message that names the file or field and says what is wrong. The CLI prints the message and
exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class SoiError(Exception):
    """A problem with the user's input, explained in one line."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        text = " ".join(str(message).split())
        super().__init__(f"{path}: {text}" if path is not None else text)
        self.path = None if path is None else Path(path)


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error: ``<path>: <reason>`` (e.g. ``out/report.html: No space left on
    device``), or the reason alone when the error names no file."""
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = " ".join(str(reason).split())
    if exc.filename is None:
        return reason
    where = str(exc.filename) if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{where}: {reason}"
