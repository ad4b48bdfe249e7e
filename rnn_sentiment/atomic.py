"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file the package writes for later reading (run directories, scoring progress, the token
cache, the built-in corpus) goes through :func:`atomic_open`: a temporary file in the same folder,
flushed to disk, then renamed over the target. A failure or an interrupt (Ctrl-C, a full disk)
removes the temporary file and leaves the previous version untouched. Errors are plain
``OSError``; callers turn them into their own message or skip the write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)  # read once: setting it back at once is the only way to read it
os.umask(_UMASK)


@contextmanager
def atomic_open(path: Path, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary handle whose content replaces ``path`` when the block ends without an error.

    Args:
        path: the file to write; its folder is created when missing.
        mode: permission bits; None gives what ``open`` would under the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp's 0600 would hide the file from everyone else.
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK if mode is None else mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, mode) as handle:
        handle.write(data)


def write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write UTF-8 text atomically, newlines as given."""
    write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically, human-readable."""
    write_text(path, json.dumps(value, indent=2) + "\n")
