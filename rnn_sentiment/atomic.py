"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every file the package writes for later reading (run directories, scoring progress, the token
cache, the built-in corpus) goes through :func:`atomic_open`: a temporary file in the same folder,
flushed to disk, then renamed over the target. A failure or an interrupt (Ctrl-C, a full disk)
removes the temporary file and leaves the previous version untouched. Errors are plain
``OSError``; callers turn them into their own message or skip the write.

A writer killed outright (``kill -9``, power loss) cannot remove its temporary file, so each write
removes the ones earlier writers of the same target left behind: files named exactly
``.<target name>.<8 random characters>.tmp`` in the target's folder whose writer is gone. A writer
holds an exclusive ``flock`` on its temporary file from creating it until the rename, and the
kernel releases the lock when the process dies, so a file whose lock can be taken is stale and a
writer that is still running (another process writing the same target) is never disturbed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
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
    fd, tmp, locked = _locked_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if locked:  # (a file system without locks keeps every temp file: none can be judged)
                _remove_stale_temp_files(path)
            # mkstemp's 0600 would hide the file from everyone else.
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK if mode is None else mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)  # still locked: a finished temp file is never taken for stale
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


def _remove_stale_temp_files(path: Path) -> None:
    """Remove the temporary files of ``path`` (and nothing else) that killed writers left."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    try:
        with os.scandir(path.parent) as entries:
            names = [e.name for e in entries if pattern.fullmatch(e.name)]
    except OSError:
        return  # a folder that can be written but not listed: nothing to clean, nothing lost
    for name in names:
        _remove_if_unlocked(path.parent / name)


def _locked_temp_file(path: Path) -> tuple[int, str, bool]:
    """A new temporary file next to ``path``, locked by this process when the file system can."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while another writer's cleanup has it
        except OSError:
            return fd, tmp, False
        if os.fstat(fd).st_nlink:
            return fd, tmp, True
        os.close(fd)  # that cleanup took it for stale before it was locked: take another


def _remove_if_unlocked(candidate: Path) -> None:
    try:
        fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # gone already (renamed into place), a symbolic link, or not ours to read
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer lives
            if os.stat(candidate, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                candidate.unlink()  # (else the name was renamed away and reused meanwhile)
    except OSError:
        pass
    finally:
        os.close(fd)
