"""Writes that a crash cannot leave half done: a file or a directory is there whole, or not at all.

A file is written to a temporary file in its own directory, flushed to disk (``fsync``) and renamed over
its name; a directory (a checkpoint) is written whole under a temporary name beside its final one, every
file in it flushed, then renamed into place. A rename within one file system is atomic, so a reader, or
a run resumed after the machine lost power, sees the old version or the new one, never a mixture.
Temporaries are hidden files (``.name.tmp-<pid>``) that :func:`remove_temporaries` clears.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (its directory entry is on disk)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: whole or not at all, and on disk when this returns."""
    path = Path(path)
    temporary = _temporary(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """:func:`write_bytes` of ``text`` encoded."""
    write_bytes(path, text.encode(encoding))


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and every directory entry, deepest first."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(folder))


@contextlib.contextmanager
def replacing_directory(target: str | Path) -> Iterator[Path]:
    """A fresh directory to fill; when the block ends, it becomes ``target`` whole.

    On an error inside the block the temporary directory is removed and ``target`` is left as it was. An
    existing ``target`` is replaced: it is moved aside, the new one renamed in, then the old one deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(target)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        fsync_tree(temporary)
        if target.exists():
            old = target.with_name(f".{target.name}.old{TEMP_MARK}{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(temporary, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_directory(target.parent)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete what an interrupted write left in ``folder`` (its hidden temporaries); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    left = [entry for entry in folder.iterdir() if entry.name.startswith(".") and TEMP_MARK in entry.name]
    for entry in left:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return left
