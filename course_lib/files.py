"""Writing files so that a crash mid-write never leaves half of one.

``write_durably`` writes, flushes and fsyncs: the bytes are on disk when it returns.
``write_atomically`` does that to a temporary file in the same folder, then renames it over
the target with ``os.replace``, which is atomic: a reader (or a process restarted after a
crash) sees the old file or the new one, never half of one. Checkpoints, notebooks, the model
registry and secure model folders all write this way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_durably", "write_atomically"]

Content = bytes | str | Callable[[BinaryIO], None]


def write_durably(path: str | os.PathLike, content: Content) -> None:
    """Write ``content`` (bytes, text as UTF-8, or a function that writes to a binary file)."""
    with open(path, "wb") as file:
        _write(file, content)


def write_atomically(path: str | os.PathLike, content: Content) -> Path:
    """Replace ``path`` by ``content`` in one step; its folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            _write(file, content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _write(file: BinaryIO, content: Content) -> None:
    if callable(content):
        content(file)
    else:
        file.write(content.encode("utf-8") if isinstance(content, str) else content)
    file.flush()
    os.fsync(file.fileno())  # on disk before anything (a rename) makes it visible
