"""Atomic file writes (temp file in the same directory + ``os.replace``).

A reader never sees a half-written file: either the old content or the new one. An interrupted
write leaves at most a ``.tmp-*`` file behind, which readers ignore and the next write into the same
folder removes (:func:`clean_stale`). An ``OSError`` of a write (full disk, read-only folder) names the
target path, not the temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"
STALE_SECONDS = 6 * 3600
"""A ``.tmp-*`` entry without a live owner mark counts as stale once it is this old (seconds)."""

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_OWNER_RE = re.compile(r"\.h([0-9a-f]{8})-p(\d+)\.")
_cleaned: set[str] = set()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _owner_mark() -> str:
    """``h<host hash>-p<pid>.``: lets a later process tell a live writer's temp file from a killed one's."""
    return f"h{_HOST}-p{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_stale(path: str | Path, *, now: float | None = None) -> bool:
    """Whether a ``.tmp-*`` entry is a leftover of a dead process.

    Entries written by :func:`atomic_path` / :func:`atomic_dir` carry their writer's host and pid: one of
    this host whose pid is gone is stale at once. Any other ``.tmp-*`` entry (another host, another tool,
    an older soi) is stale when older than :data:`STALE_SECONDS`.
    """
    path = Path(path)
    if not path.name.startswith(TMP_PREFIX):
        return False
    m = _OWNER_RE.search(path.name)
    if m and m.group(1) == _HOST and int(m.group(2)) != os.getpid():
        return not _pid_alive(int(m.group(2)))
    if m and m.group(1) == _HOST:
        return False  # this process's own temp entry
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_SECONDS


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove stale ``.tmp-*`` leftovers (see :func:`is_stale`) directly inside ``folder``; return them.

    Best effort: entries that vanish meanwhile or cannot be removed (read-only folder) are skipped.
    """
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(TMP_PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if not is_stale(path):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _clean_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _cleaned:
        _cleaned.add(key)
        clean_stale(folder)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` re-labelled with the target ``path`` (a temp name in an error message means nothing to users).

    pyarrow's I/O errors carry no ``errno``; the ``[Errno N]`` in their message is recovered when present.
    """
    code = exc.errno
    if code is None and (m := re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)):
        code = int(m.group(1))
    if code is None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        new = OSError(text)
        new.filename = str(path)
        new.strerror = text
        return new
    cls = type(exc) if type(exc).__module__ == "builtins" else OSError
    return cls(code, os.strerror(code) if exc.errno is None else (exc.strerror or os.strerror(code)), str(path))


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An ``OSError`` raised in the block is re-raised labelled with the user's target ``path`` (:func:`_named`)."""
    try:
        yield
    except OSError as exc:
        raise _named(exc, path) from None


def _temp_next_to(path: Path, make: Callable[..., Any]) -> Any:
    """``make`` (``tempfile.mkstemp`` / ``mkdtemp``) of a ``.tmp-*`` name next to ``path`` with this process's owner
    mark; the first one in a folder also removes that folder's stale leftovers."""
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(path.parent)
        return make(prefix=f"{TMP_PREFIX}{path.name}.{_owner_mark()}", dir=path.parent)


def relabel(exc: OSError, path: str | Path) -> OSError:
    """An ``OSError`` of writing a temporary file or folder, re-labelled with the user's target ``path``."""
    return _named(exc, Path(path))


def temp_dir_for(path: str | Path) -> Path:
    """A new empty ``.tmp-*`` folder next to ``path`` carrying this process's owner mark (see :func:`is_stale`);
    the first one in a folder also removes that folder's stale leftovers."""
    return Path(_temp_next_to(Path(path), tempfile.mkdtemp))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    The first write into a folder in a process also removes that folder's stale ``.tmp-*`` leftovers.
    """
    path = Path(path)
    fd, tmp = _temp_next_to(path, tempfile.mkstemp)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(path):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp creates 0600; give the file the usual umask-based mode
            os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; text that is not UTF-8 is a one-line :class:`~soi.errors.SoiError`.

    soi decides text encodings once: every text it reads (rules, study YAML, cartography JSONL, ids and texts
    in Parquet files) must be UTF-8 and is refused at the door otherwise (docs/errors.md).
    """
    from soi.errors import SoiError

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SoiError(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                       "save it as UTF-8", path=path) from None


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_parquet(path: str | Path, table: pa.Table, **kwargs: Any) -> None:
    """Write ``table`` to ``path`` atomically (zstd unless ``compression`` is given)."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path`` as one unit.

    For outputs made of several files that must describe the same result (e.g. an analysis folder, a
    ``soi compare --out``): write everything into the yielded folder; when the block ends without an
    exception, an existing ``path`` is moved aside and the new folder renamed into place (two renames on the
    same filesystem), then the old one is deleted. Readers see the old set or the new set, never a mix
    (during the instant between the two renames ``path`` is briefly absent). Two processes finishing at
    once both succeed and ``path`` holds one of the two complete sets. On error the temporary folder is
    removed and ``path`` is untouched. Leftovers of a killed process are ``.tmp-*`` folders next to ``path``,
    removed by the next write into that folder.
    """
    path = Path(path)
    tmp = temp_dir_for(path)
    try:
        with _naming(path):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path, attempts: int = 20) -> None:
    """Rename folder ``tmp`` to ``path``, moving an existing ``path`` aside first (retried if another
    process puts its own ``path`` in place between the two renames)."""
    for _ in range(attempts):
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.old.{_owner_mark()}", dir=path.parent))
            os.rmdir(old)
            try:
                os.replace(path, old)
            except FileNotFoundError:  # someone else moved it aside first
                old = None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another process renamed its folder in meanwhile: move that one aside too
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(errno.EBUSY, "folder replaced concurrently too often", str(path))
