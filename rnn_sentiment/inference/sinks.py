"""Where batch scoring's rows go, committed chunk by chunk, and the progress file to resume from.

A :class:`Sink` takes each scored chunk of :func:`rnn_sentiment.inference.scoring.score_file`:
stdout (streamed, never resumed), a text file written to ``<output>.partial`` and flushed to disk
at each commit, or Parquet parts in ``<output>.partial/`` merged at the end. After each commit the
:class:`Progress` file (``<output>.progress.json``) records how many rows and bytes (or parts) are
committed and what was scored, so an interrupted run can be cut back to its last commit and
resumed; the output is renamed into place only when every row is written.

Whatever another user or program left at ``<output>.partial`` or ``<output>.progress.json`` is
never followed: a symbolic link there is removed, not written through (so it cannot aim the
output at another file), and a resume refuses a partial output or progress file that is not a
regular file.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import IO, Any

from rnn_sentiment import atomic
from rnn_sentiment.data.files import is_gzip
from rnn_sentiment.data.writers import encode_rows, merge_parquet_parts, write_parquet_part
from rnn_sentiment.errors import CheckpointError, DataError, OutputClosed
from rnn_sentiment.jsonfile import parse_json

PROGRESS_VERSION = 2  # 2: chunk_size and max_review_chars are part of the identity
PROGRESS_BYTES = 1 << 20  # a progress file is a few hundred bytes; a larger one is not ours


class Sink:
    """Where scored chunks go; ``commit`` makes a chunk durable, ``finish`` publishes the file."""

    rows = 0

    def write(self, columns: dict[str, list[Any]]) -> None:
        raise NotImplementedError

    def commit(self, rows: int) -> None:
        self.rows += rows

    def finish(self) -> None:
        """Publish the output."""

    def abort(self) -> None:
        """Leave committed work for a later ``--resume``."""


class StdoutSink(Sink):
    """Rows streamed to stdout as they are scored (no resume: a pipe cannot be rewound)."""

    def __init__(self, kind: str, stream: IO[bytes] | None = None, header: bool = True) -> None:
        if kind == "parquet":
            raise DataError("Parquet output needs a file: pass --output FILE.parquet")
        if stream is None and sys.stdout is None:
            raise DataError("stdout is closed; pass --output FILE")
        self.kind = kind
        self.stream = stream or sys.stdout.buffer
        self.header = header

    def write(self, columns: dict[str, list[Any]]) -> None:
        try:
            self.stream.write(encode_rows(columns, self.kind, self.header, compress=False))
            self.stream.flush()
        except BrokenPipeError:  # the reader went away (| head): the CLI ends quietly, 141
            raise OutputClosed(f"stdout was closed after {self.rows} rows") from None
        except OSError as exc:
            raise DataError(f"cannot write to stdout: {exc.strerror}") from None
        self.header = False


class FileSink(Sink):
    """A text output (CSV, TSV, JSONL, optionally gzip) written to ``<output>.partial``.

    ``header``: a CSV/TSV output starts with the header row (not a shard after the first: the
    shards, concatenated, are one file with one header).
    """

    def __init__(
        self, output: Path, kind: str, progress: Progress, resume_state: Any, header: bool = True
    ) -> None:
        self.output = output
        self.kind = kind
        self.compress = is_gzip(output)
        self.partial = partial_path(output)
        self.progress = progress
        self.handle = self._open(resume=bool(resume_state))
        if resume_state:
            self.rows = int(resume_state["rows"])
            self.handle.truncate(int(resume_state["offset"]))  # drop an uncommitted tail
            self.handle.seek(0, os.SEEK_END)
        self.header = header and self.handle.tell() == 0

    def _open(self, resume: bool) -> IO[bytes]:
        """The partial output: the existing regular file to resume, or a new one, never through
        a link (O_NOFOLLOW, and O_EXCL after removing whatever was there)."""
        try:
            if resume:
                fd = os.open(self.partial, os.O_RDWR | os.O_NOFOLLOW)
            else:
                remove_path(self.partial)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(self.partial, flags, 0o666)
        except OSError as exc:
            if resume and exc.errno == errno.ELOOP:
                raise _not_ours(self.partial, "a symbolic link") from None
            raise DataError(f"cannot write {self.partial}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _not_ours(self.partial, "not a regular file")
        return os.fdopen(fd, "r+b" if resume else "wb")

    def write(self, columns: dict[str, list[Any]]) -> None:
        data = encode_rows(columns, self.kind, self.header, self.compress)
        try:
            self.handle.write(data)
        except OSError as exc:
            raise DataError(f"cannot write {self.partial}: {exc.strerror}") from None
        self.header = False

    def commit(self, rows: int) -> None:
        super().commit(rows)
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            raise DataError(f"cannot write {self.partial}: {exc.strerror}") from None
        self.progress.save(self.rows, offset=self.handle.tell())

    def finish(self) -> None:
        try:
            self.handle.close()
            os.replace(self.partial, self.output)
        except OSError as exc:
            raise DataError(f"cannot write {self.output}: {exc.strerror}") from None
        self.progress.remove()

    def abort(self) -> None:
        self.handle.close()


class ParquetSink(Sink):
    """Parquet output: one part file per chunk in ``<output>.partial/``, merged at the end."""

    def __init__(self, output: Path, schema: Any, progress: Progress, resume_state: Any) -> None:
        self.output = output
        self.schema = schema
        self.progress = progress
        self.parts_dir = partial_path(output)
        self.parts = 0
        if resume_state:
            self.rows = int(resume_state["rows"])
            self.parts = int(resume_state["parts"])
        try:
            if not resume_state:  # a fresh folder, never one reached through a link
                remove_path(self.parts_dir)
                self.parts_dir.mkdir(parents=True)
            elif not stat.S_ISDIR(os.lstat(self.parts_dir).st_mode):
                raise _not_ours(self.parts_dir, "not a directory")
        except OSError as exc:
            raise DataError(f"cannot write {self.parts_dir}: {exc.strerror}") from None
        for stale in self.parts_dir.glob("part-*.parquet"):  # written but never committed
            if int(stale.stem.split("-")[1]) >= self.parts:
                stale.unlink()

    def _part(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:06d}.parquet"

    def write(self, columns: dict[str, list[Any]]) -> None:
        try:
            write_parquet_part(columns, self.schema, self._part(self.parts))
        except OSError as exc:
            raise DataError(f"cannot write {self.parts_dir}: {exc}") from None

    def commit(self, rows: int) -> None:
        super().commit(rows)
        self.parts += 1
        self.progress.save(self.rows, parts=self.parts)

    def finish(self) -> None:
        merged = self.parts_dir.with_name(self.parts_dir.name + ".merge")
        parts = [self._part(i) for i in range(self.parts)]
        try:
            remove_path(merged)  # pyarrow would write through a link left there
            merge_parquet_parts(parts, self.schema, merged)
            os.replace(merged, self.output)
        except OSError as exc:
            raise DataError(f"cannot write {self.output}: {exc}") from None
        shutil.rmtree(self.parts_dir)
        self.progress.remove()


def partial_path(output: Path) -> Path:
    """Where an unfinished output is written."""
    return output.with_name(output.name + ".partial")


def progress_path(output: Path) -> Path:
    """Where the progress of an unfinished output is recorded."""
    return output.with_name(output.name + ".progress.json")


def remove_path(path: Path) -> None:
    """Remove whatever is at ``path`` without following it: a link or file is unlinked, only a
    real directory is removed with its contents."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _not_ours(path: Path, what: str) -> DataError:
    return DataError(
        f"cannot resume: {path} is {what}, not an unfinished output of rnn-sentiment; "
        "run without --resume to start over"
    )


class Progress:
    """``<output>.progress.json``: rows committed, where the output ends, and what was scored."""

    def __init__(self, output: Path, identity: dict[str, Any]) -> None:
        self.path = progress_path(output)
        self.identity = identity

    def load(self) -> dict[str, Any] | None:
        """The saved state of an interrupted run writing to the same output, if any."""
        unreadable = DataError(f"{self.path} is unreadable; delete it to start over")
        try:  # never through a link, never blocked by a FIFO, never more than PROGRESS_BYTES
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError:
            raise unreadable from None
        try:
            with os.fdopen(fd, "rb") as handle:
                regular = stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
                data = handle.read(PROGRESS_BYTES + 1) if regular else b""
            if not regular or len(data) > PROGRESS_BYTES:
                raise unreadable
            state = parse_json(data.decode("utf-8"), self.path)
        except (OSError, ValueError, CheckpointError):  # a key given twice included
            raise unreadable from None
        if not isinstance(state, dict):
            raise unreadable
        return state

    def exists(self) -> bool:
        """Whether anything (a link included) is at the progress file's path."""
        return os.path.lexists(self.path)

    def check(self, state: dict[str, Any]) -> None:
        """Refuse to resume when the input, the model or a setting changed."""
        if state.get("version") != PROGRESS_VERSION or not isinstance(state.get("rows"), int):
            raise DataError(
                f"cannot resume: {self.path} was written by another version of rnn-sentiment; "
                "run without --resume to start over"
            )
        saved = state.get("identity", {})
        changed = [k for k in self.identity if saved.get(k) != self.identity[k]]
        if changed:
            what = ", ".join(changed)
            settings = saved.get("settings")
            if "settings" in changed and isinstance(settings, dict):
                names = [k for k, v in self.identity["settings"].items() if settings.get(k) != v]
                what = what.replace("settings", f"settings ({', '.join(names)})")
            raise DataError(
                f"cannot resume: the {what} changed since the interrupted run "
                f"({self.path}); run without --resume to start over"
            )

    def save(self, rows: int, **where: int) -> None:
        state = {"version": PROGRESS_VERSION, "rows": rows, **where, "identity": self.identity}
        try:
            atomic.write_json(self.path, state)
        except OSError as exc:
            raise DataError(f"cannot write {self.path}: {exc.strerror}") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
