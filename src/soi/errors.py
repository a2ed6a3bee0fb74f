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
