"""Review files: their formats, how a path's format is told, and the reader that opens it.

The one place that opens local files, for every command: training (``sources.read_split``),
``evaluate`` and batch scoring (``predict --input``) all open their input with :func:`open_reader`,
so a file has the same columns, the same text column (:data:`TEXT_COLUMN_CANDIDATES`, chosen by
:func:`choose_text_column`) and the same rows whichever command reads it.

A format is named by the file's extension (:data:`EXTENSIONS`, each but Parquet optionally
``.gz``), or forced (:func:`detect_format`); ``-`` is stdin or stdout. How each format is read, in
bounded chunks, is :mod:`rnn_sentiment.data.readers`; how output rows are written is
:mod:`rnn_sentiment.data.writers`.

This module never imports ``datasets``; pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal, cast

from rnn_sentiment import errors
from rnn_sentiment.data.readers import (
    MAX_FIELD_CHARS,
    ROW_CHARS_PER_FIELD_CHAR,
    CsvReader,
    FolderReader,
    JsonlReader,
    ParquetReader,
    Reader,
    TextLineReader,
)
from rnn_sentiment.errors import DataError

InputFormat = Literal["csv", "tsv", "jsonl", "parquet", "txt", "folder"]
OutputFormat = Literal["csv", "tsv", "jsonl", "parquet"]
INPUT_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "parquet", "txt", "folder")
OUTPUT_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "parquet")
# The file formats, by extension (each may end in .gz, but Parquet). A folder holding several
# files of one split tries them in this order, so Parquet wins over a CSV copy of it.
EXTENSIONS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".txt": "txt",
}
# The column holding the review, when none is named: the first of these a file has.
TEXT_COLUMN_CANDIDATES = ("text", "review", "sentence", "content", "body")


def is_gzip(path: str | Path) -> bool:
    """Compressed input or output, by its last extension."""
    return str(path).lower().endswith(".gz")


def detect_format(path: str, forced: str | None, output: bool = False) -> str:
    """The format of ``path`` (``-`` is stdin/stdout): ``forced`` if given, else its extension."""
    allowed = OUTPUT_FORMATS if output else INPUT_FORMATS
    role = "output" if output else "input"
    if forced is not None:
        if forced not in allowed:
            raise DataError(f"unknown {role} format '{forced}'; use one of {', '.join(allowed)}")
        return forced
    if path == "-":
        return "jsonl" if output else "txt"
    if not output and Path(path).is_dir():
        return "folder"
    kind = format_of(path)
    if kind is None or kind not in allowed:
        raise DataError(
            f"cannot tell the {role} format of {path} from its extension; use "
            f"{', '.join('.' + f for f in allowed if f != 'folder')} (optionally .gz) "
            f"or --{role}-format"
        )
    return kind


def format_of(path: str | Path) -> str | None:
    """The format named by a file's extension (``.gz`` looked through), or None."""
    name = str(path).lower().removesuffix(".gz")
    return EXTENSIONS.get(Path(name).suffix)


def missing_column(
    name: str, columns: Sequence[str], where: str, option: str = "--text-column "
) -> DataError:
    """The error for a column that is not there, with the closest real column.

    ``option`` is how the user names a column where the error is shown: ``--text-column `` on the
    command line, ``data.text_column=`` in a training config.
    """
    hint = errors.did_you_mean(name, columns, shown=option + "{}")
    return DataError(
        f"no column '{name}' in {where}; {hint}columns are: {errors.listed(columns) or 'none'}"
    )


def choose_text_column(
    columns: Sequence[str], wanted: str | None, where: str, option: str = "--text-column "
) -> str:
    """``wanted`` if it is a column, else the first usual name for a review column.

    A file with one column needs no name. ``option`` is as in :func:`missing_column`.
    """
    if wanted is not None:
        if wanted not in columns:
            raise missing_column(wanted, columns, where, option)
        return wanted
    if not columns:
        raise DataError(
            f"{where} names no columns: it is empty, or none of its first rows is a JSON object "
            f"(or a readable one: a row may hold {ROW_CHARS_PER_FIELD_CHAR} times the longest "
            "review)"
        )
    found = next((c for c in TEXT_COLUMN_CANDIDATES if c in columns), None)
    if found is None:
        if len(columns) == 1:
            return columns[0]
        raise DataError(
            f"no text column ({', '.join(TEXT_COLUMN_CANDIDATES)}) in {where}; pass "
            f"{option}NAME; columns are: {errors.listed(columns) or 'none'}"
        )
    return found


def labelled_columns(
    columns: Sequence[str],
    text_wanted: str | None,
    label_column: str,
    where: str,
    options: tuple[str, str] = ("--text-column ", "--label-column "),
) -> str:
    """The text column of a labelled file (as :func:`choose_text_column` picks it), refused
    when the label column is missing or is that same column. ``options``: how the text and the
    label column are set, as in :func:`missing_column`."""
    text = choose_text_column(columns, text_wanted, where, options[0])
    if label_column not in columns:
        raise missing_column(label_column, columns, where, options[1])
    if text == label_column:
        raise DataError(
            f"{where}: the reviews and their labels would both be read from the column "
            f"{ascii(text)[:60]}; pass {options[0]}NAME naming the reviews' column"
        )
    return text


def open_reader(path: str, kind: str, max_chars: int = MAX_FIELD_CHARS) -> Reader:
    """A reader for ``path`` (``-`` for stdin) in format ``kind``; fields hold at most
    ``max_chars`` characters (a longer one flags its row)."""
    if kind == "folder":
        return FolderReader(Path(path), max_chars)
    if kind == "parquet":
        if path == "-" or is_gzip(path):
            raise DataError("Parquet input must be an uncompressed file, not stdin or .gz")
        return ParquetReader(Path(path), max_chars)
    handle, raw = _open_binary(path)
    reader: Reader
    try:
        _refuse_utf16(handle, "stdin" if path == "-" else path)
        if kind in ("csv", "tsv"):
            reader = CsvReader(handle, "\t" if kind == "tsv" else ",", path, max_chars)
        elif kind == "jsonl":
            reader = JsonlReader(handle, path, max_chars)
        else:
            reader = TextLineReader(handle, "stdin" if path == "-" else path, max_chars)
    except BaseException:
        if raw is not None:
            raw.close()
        raise
    reader.raw = raw
    return reader


def _refuse_utf16(handle: IO[bytes], where: str) -> None:
    """Refuse a UTF-16 (or UTF-32) text, which spreadsheets save as "Unicode text": read as
    UTF-8 it would be a garbled column name or a NUL between every two letters."""
    try:
        head = handle.peek(2)[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError, EOFError):  # no peek; a bad gzip stream: said when read
        return
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(
            f"{where} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8, "
            "for example: iconv -f UTF-16 -t UTF-8 IN > OUT"
        )


def _open_binary(path: str) -> tuple[IO[bytes], IO[bytes] | None]:
    """The decompressed byte stream and the raw file under it (None for stdin)."""
    if path == "-":
        return sys.stdin.buffer, None
    file = Path(path)
    if file.is_dir():
        raise DataError(f"{path} is a directory; use --input-format folder or give a file")
    try:
        raw = file.open("rb")
    except FileNotFoundError:
        raise DataError(f"input file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot open {path}: {exc.strerror}") from None
    if is_gzip(path):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), raw
    return raw, raw
