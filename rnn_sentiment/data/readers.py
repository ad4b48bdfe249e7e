"""Streaming readers of review files: CSV, TSV, JSONL, Parquet, text lines, folders, tables.

:func:`rnn_sentiment.data.files.open_reader` picks the reader of a file's format; every reader
yields :class:`Chunk` objects of at most ``chunk_size`` rows, so memory stays flat for any file
size. Bytes that are not valid UTF-8 are kept as surrogate escapes while reading and replaced
(U+FFFD) when a row is fixed, so the row is still scored and flagged instead of lost. Texts are
returned raw: the model's text pipeline (:mod:`rnn_sentiment.text`) prepares them.

Two shapes are recognised from the start of a file:

* a ``.txt`` file with fastText's ``__label__NAME `` at the start of one of its first
  :data:`FASTTEXT_PEEK` lines is labelled: each line's ``__label__NAME`` goes to a ``label``
  column and the rest of the line is its text (a line without it is unlabelled);
* a JSON file whose first character is ``[`` is one JSON array of objects (a ``.json`` export);
  it is parsed whole, so it is refused above :data:`JSON_ARRAY_LIMIT` characters (JSON Lines,
  one object a line, is read in chunks at any size).

A UTF-8 byte-order mark at the start of a file (Excel's CSV exports) is skipped.

Memory stays flat for any input, however hostile, because every read is bounded:

* a field (a review, or any other column) holds at most ``max_chars`` characters
  (:data:`MAX_FIELD_CHARS` unless the caller names another cap). A longer one is never held
  whole: the row is flagged (``field 'text' longer than 1,000,000 characters``) and the value
  is missing. The readers stop at the cap: CSV through the csv module's field size limit, text
  lines and folder files by reading at most the cap (in bytes: four per character);
* a row (a CSV record, a JSON line) holds at most :data:`ROW_CHARS_PER_FIELD_CHAR` times the cap
  (room for other columns and for JSON escapes); a longer one is read on in bounded pieces to
  its end, and is one flagged row with every value missing (``row longer than ...``);
* a JSON line holds at most :data:`JSON_ROW_CONTAINERS` arrays and objects; one with more is
  a flagged row with every value missing (``row holds more than 100,000 JSON arrays/objects``);
* a chunk ends at ``chunk_size`` rows, once it holds :data:`CHUNK_CHARS` characters or (JSON
  Lines) once its rows hold :data:`JSON_CHUNK_CONTAINERS` arrays and objects.

A CSV header row is read under at least :data:`HEADER_FIELD_CHARS` characters a name, however
small the review cap.

Parquet values are decoded by pyarrow a page at a time before the cap can be checked, so there
the cap flags a row but bounds memory only through the file's own page sizes.

This module never imports ``datasets``; pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import collections
import csv
import errno
import io
import itertools
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rnn_sentiment.errors import DataError, first_line
from rnn_sentiment.text import fix_text

# A JSON array is parsed whole (json cannot stream one), so its size is capped. Measured, the
# parsed rows take 1.1x (IMDB-length reviews) to 3.1x (12-word reviews with an id and a label)
# the memory of the text, held with it while parsing: 64 Mi characters peak at 140-265 MiB.
# JSON Lines has no cap.
JSON_ARRAY_LIMIT = 64 * 2**20
# The longest field (a review, or any other column) a reader hands out, in characters, unless
# the caller names another cap: far above any real review (IMDB's longest is 13,704 characters)
# and small enough that a chunk of such rows still fits in memory.
MAX_FIELD_CHARS = 1_000_000
# A CSV header row's names are read under this field cap (and its row limit) at least, whatever
# the review cap: a small max_chars (--max-review-chars 1) caps reviews, not the column names.
HEADER_FIELD_CHARS = MAX_FIELD_CHARS
# A row (CSV record, JSON line) may hold this many times the field cap: a few other columns, and
# JSON's escapes (one character of an ensure_ascii export can take six).
ROW_CHARS_PER_FIELD_CHAR = 8
# A chunk ends at chunk_size rows or once its rows hold this many characters (read as text, or
# as bytes for text lines and folders): 4096 IMDB reviews are about 5 Mi characters, so only
# rows near the cap end a chunk early.
CHUNK_CHARS = 32 * 2**20
# What one cell of a chunk's columns counts for against CHUNK_CHARS, empty or not (a list slot):
# a 273 KB JSON Lines file of 8,000 "{}" after an object of 20,000 keys, or a CSV header of
# 700,000 columns over short rows, held 1.6 GB of empty cells in one chunk.
CELL_CHARS = 8
# JSON arrays and objects ("containers") are what makes a parsed JSON line larger than its text:
# an empty {} takes 64 bytes for 2 characters, so an 8 Mi-character line of them held 2.4 GB per
# chunk. A line with more than JSON_ROW_CONTAINERS (counted from its '{' and '[' characters,
# strings included: an upper bound, cheap) is a flagged row, never parsed, and a chunk ends once
# its rows hold more than JSON_CHUNK_CONTAINERS (about 100 MB of empty ones).
JSON_ROW_CONTAINERS = 100_000
JSON_CHUNK_CONTAINERS = 1_000_000
# A JSON array file is parsed whole, so its arrays and objects are bounded as one chunk's are,
# a little more generously (a row object per review: 2 million reviews).
JSON_ARRAY_CONTAINERS = 2 * JSON_CHUNK_CONTAINERS
# UTF-8 spends at most four bytes on a character.
_BYTES_PER_CHAR = 4
# A .txt file is fastText-labelled when one of its first this many lines has a __label__ prefix.
FASTTEXT_PEEK = 1000
_FASTTEXT_LABEL = re.compile(r"__label__(\S+)\s+(.*)", re.DOTALL)
_BOM = b"\xef\xbb\xbf"
# What a damaged file (truncated or corrupt gzip, a broken CSV quote) raises while it is read.
_READ_ERRORS = (OSError, EOFError, zlib.error, csv.Error, UnicodeError)
# A missing cell: distinct from an empty string, so "missing text" and "empty text" differ.
MISSING: Any = None


@dataclass
class Chunk:
    """Up to ``chunk_size`` input rows, column-wise; ``problems[i]`` is a read error or ''.

    ``notes[i]`` says what the reader left out of a row that is otherwise whole (JSON keys the
    first object lacks): batch scoring flags it, training has no use for it.
    """

    columns: dict[str, list[Any]]
    rows: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.problems:
            self.problems = [""] * self.rows
        if not self.notes:
            self.notes = [""] * self.rows


def too_long(what: str, limit: int) -> str:
    """The problem of a row with a field (or as a whole) over its limit; never scored."""
    return f"{what} longer than {limit:,} characters"


class Reader:
    """A streaming source of rows. ``columns`` is known after construction (the header)."""

    columns: list[str]
    where: str = "input"  # the file or folder, as error messages name it
    raw: IO[bytes] | None = None  # the file under a text or gzip stream, for progress
    max_chars: int = MAX_FIELD_CHARS  # the longest field handed out

    @property
    def row_limit(self) -> int:
        """The most characters one row (a CSV record, a JSON line) may hold."""
        return ROW_CHARS_PER_FIELD_CHAR * self.max_chars

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        raise NotImplementedError

    def schema_of(self, names: Sequence[str]) -> dict[str, Any]:
        """The pyarrow types of those of ``names`` whose values are not text, to keep them in
        a Parquet output; a column not named here is written as text."""
        return {}

    def close(self) -> None:
        """Release the file handle."""
        if self.raw is not None:
            self.raw.close()

    def fraction_read(self) -> float | None:
        """Share of the input file consumed so far, when it can be told, else None."""
        if self.raw is None or self.raw.closed:
            return None
        try:
            size = os.fstat(self.raw.fileno()).st_size
            return min(self.raw.tell() / size, 1.0) if size else None
        except (OSError, ValueError):
            return None


def _text_stream(handle: IO[bytes], newline: str = "") -> io.TextIOWrapper:
    # surrogateescape: a bad byte never stops the read; fix_text flags and replaces it per row.
    # utf-8-sig: a byte-order mark is skipped, not glued to the first column's name.
    # newline: "" (lines end at \n, \r\n or a lone \r, as the csv module needs), or "\n" only.
    return io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline=newline)


class _RecordTooLong(Exception):
    """Raised through the csv module when a record passes the row limit."""


# Where the csv module's parser (default dialect, not strict) is, to find the end of a record
# that was cut short: at a field start, in an unquoted field, in a quoted one, just after a quote
# in a quoted one, or just after a record's end.
_START, _UNQUOTED, _QUOTED, _AFTER_QUOTE, _END = range(5)


def _csv_state(line: str, delimiter: str, state: int) -> int:
    """The parser state after ``line``, starting in ``state``.

    ``line`` is one piece of a ``readline`` (newline="" mode), so a line ending can only be its
    last character(s); that lets each step jump with ``str.find``, fast on a huge field.
    """
    i, n = 0, len(line)
    while i < n:
        if state == _QUOTED:
            j = line.find('"', i)
            if j < 0:
                return _QUOTED
            state, i = _AFTER_QUOTE, j + 1
        elif state == _UNQUOTED:
            j = line.find(delimiter, i)
            if j < 0:
                return _END if line[-1] in "\r\n" else _UNQUOTED
            state, i = _START, j + 1
        else:  # a field starts, or a quote ended: the next character decides
            char, i = line[i], i + 1
            if char == '"':
                state = _QUOTED  # a quoted field opens, or "" inside one is a quote
            elif char == delimiter:
                state = _START
            elif char in "\r\n":
                state = _END
            else:
                state = _UNQUOTED
    return state


class _CsvLines:
    """The lines of a CSV stream for the csv module, at most ``limit`` characters per record.

    Each line is read with a bounded ``readline``; when a record passes the limit,
    :class:`_RecordTooLong` goes up through the csv module (which starts a new record on the next
    call) and :meth:`skip_record` reads on to the record's end without holding it.
    """

    def __init__(self, stream: IO[str], delimiter: str, limit: int) -> None:
        self.stream = stream
        self.delimiter = delimiter
        self.limit = limit
        self.record: list[str] = []  # the lines of the record being parsed
        self.size = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self.stream.readline(self.limit + 1 - self.size)
        if not line:
            raise StopIteration
        self.record.append(line)
        self.size += len(line)
        if self.size > self.limit:
            raise _RecordTooLong
        return line

    def next_record(self) -> int:
        """Start a new record; returns the size of the one that ended."""
        size, self.record, self.size = self.size, [], 0
        return size

    def skip_record(self) -> None:
        """Read on to the end of a record the csv module gave up on, in bounded pieces."""
        state = _START
        for line in self.record:
            state = _csv_state(line, self.delimiter, state)
        self.next_record()
        while state != _END and (piece := self.stream.readline(self.limit + 1)):
            state = _csv_state(piece, self.delimiter, state)


class CsvReader(Reader):
    """CSV or TSV with a header row; a short or long row is flagged, never dropped."""

    def __init__(
        self, handle: IO[bytes], delimiter: str, where: str, max_chars: int = MAX_FIELD_CHARS
    ) -> None:
        self.max_chars = max_chars
        self.stream = _text_stream(handle)
        self.lines = _CsvLines(self.stream, delimiter, self.row_limit)
        self.rows = csv.reader(self.lines, delimiter=delimiter)
        self.where = where
        header, problem = self._next_record(max(max_chars, HEADER_FIELD_CHARS))
        if problem:
            raise DataError(f"cannot read {where}: the header row has a problem ({problem})")
        if header is None:
            raise DataError(f"{where} is empty: a header row naming the columns is needed")
        self.columns = [fix_text(c)[0] for c in header]
        twice = [name for name, n in collections.Counter(self.columns).items() if n > 1]
        if twice:
            raise DataError(f"{where} has duplicate column name(s): {', '.join(twice)}")

    def _next_record(self, max_chars: int = 0) -> tuple[list[str] | None, str]:
        """The next non-blank record and its problem ('' or too long); (None, '') at the end.

        ``max_chars``: the field cap of this record, when not the reader's own (the header).
        """
        max_chars = max_chars or self.max_chars
        self.lines.limit = row_limit = ROW_CHARS_PER_FIELD_CHAR * max_chars
        while True:
            csv.field_size_limit(max_chars)  # module-wide: set for this reader each time
            try:
                row = next(self.rows, None)
            except _RecordTooLong:
                self.lines.skip_record()
                return [], too_long("row", row_limit)
            except csv.Error as exc:
                if "field limit" not in str(exc):
                    raise DataError(f"cannot read {self.where}: {exc}") from None
                self.lines.skip_record()
                return [], too_long("a field", max_chars)
            except _READ_ERRORS as exc:
                raise DataError(f"cannot read {self.where}: {exc}") from None
            self.lines.next_record()
            if row != []:  # a blank line is no row (a trailing one is common)
                return row, ""

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        width = len(self.columns)
        while True:
            cells: list[list[Any]] = [[] for _ in range(width)]
            problems: list[str] = []
            chars = 0
            while len(problems) < chunk_size and chars < CHUNK_CHARS:
                row, problem = self._next_record()
                if row is None:
                    break
                chars += sum(map(len, row)) + CELL_CHARS * width  # empty cells cost too
                if not problem and len(row) != width:
                    problem = f"{len(row)} fields, expected {width}"
                row = row[:width] + [MISSING] * (width - len(row))
                for column, value in zip(cells, row, strict=True):
                    column.append(value)
                problems.append(problem)
            if not problems:
                return
            yield Chunk(dict(zip(self.columns, cells, strict=True)), len(problems), problems)

    def close(self) -> None:
        if self.raw is not None:  # not stdin
            self.stream.close()
        super().close()


def _bounded_lines(
    readline: Callable[[int], Any], limit: int, ends: Any, first: Any = None
) -> Iterator[Any]:
    """The lines of a stream (str or bytes, with their endings), each read with at most
    ``limit`` + 2 characters; None stands for a longer line, whose rest is read and dropped in
    pieces of that size. ``ends`` holds the line-ending characters; ``first`` is a piece already
    read."""
    line = readline(limit + 2) if first is None else first
    while line:
        if line[-1:] in ends or len(line) < limit + 2:
            yield line
        else:
            while (piece := readline(limit + 2)) and piece[-1:] not in ends:
                pass
            yield None
        line = readline(limit + 2)


def _cap_fields(
    row: dict[str, Any], names: Sequence[str], max_chars: int
) -> tuple[dict[str, Any], str]:
    """``row`` with any text or bytes value longer than ``max_chars`` missing, and the problem."""
    problem = ""
    for name in names:
        value = row.get(name)
        if isinstance(value, (str, bytes)) and len(value) > max_chars:
            row = {**row, name: MISSING}
            problem = problem or too_long(f"field '{name}'", max_chars)
    return row, problem


class JsonlReader(Reader):
    """One JSON object per line; a line that is not one is a flagged row. Blank lines skipped.

    The first object names the columns, as a header row does; a later object's keys that it lacks
    are left out (noted in :attr:`Chunk.notes`). A file whose first character is ``[`` is one JSON
    array instead, read whole (up to :data:`JSON_ARRAY_LIMIT` characters); its elements are the
    rows.
    """

    def __init__(self, handle: IO[bytes], where: str, max_chars: int = MAX_FIELD_CHARS) -> None:
        self.max_chars = max_chars
        self.stream = _text_stream(handle, newline="\n")  # a lone \r is JSON white space
        self.where = where
        self.pending: list[str | None] = []
        self.array: list[Any] | None = None
        self.keys: dict[str, str] = {}  # column name -> the key it is read from
        self.known: set[str] = set()
        self.columns = []
        # The first objects name the columns; they are read now and replayed by chunks().
        try:
            first = self._skip_blank()
            if first.lstrip().startswith("["):
                self.array = self._read_array(first.lstrip())
                self._name_columns(next((v for v in self.array if isinstance(v, dict)), {}))
                return
            self.lines = _bounded_lines(self.stream.readline, self.row_limit, "\n", first)
            self._peek()
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read {where}: {exc}") from None

    def _skip_blank(self) -> str:
        """The first piece of the stream that is not white space ('' at the end)."""
        while (piece := self.stream.readline(self.row_limit + 2)) and not piece.strip():
            pass
        return piece

    def _peek(self) -> None:
        held = 0
        for line in self.lines:
            if line is None or not line.strip():
                self.pending.append(line)
                continue
            self.pending.append(line)
            held += len(line)
            # A row over the limit is flagged, never read (chunks check the same length): it
            # cannot name the columns either.
            value = _parse(line)[0] if len(line.rstrip("\r\n")) <= self.row_limit else None
            if isinstance(value, dict):
                self._name_columns(value)
                return
            if len(self.pending) >= FASTTEXT_PEEK or held >= CHUNK_CHARS:
                return

    def _name_columns(self, first: dict[str, Any]) -> None:
        for key in first:  # a key with a lone surrogate is named fixed, read as it is
            self.keys.setdefault(fix_text(key)[0], key)
        self.columns = list(self.keys)
        self.known = set(self.keys.values())
        self.first = first

    def schema_of(self, names: Sequence[str]) -> dict[str, Any]:
        """Integer, number and true/false fields keep the type of their value in the first
        object (an integer ``id`` stays an integer); a later value of another type does not fit
        and is flagged by the writer."""
        import pyarrow as pa

        types: dict[str, Any] = {}
        for name in names:
            value = getattr(self, "first", {}).get(self.keys.get(name, name))
            if isinstance(value, bool):
                types[name] = pa.bool_()
            elif isinstance(value, int) and -(2**63) <= value < 2**63:
                types[name] = pa.int64()
            elif isinstance(value, float):
                types[name] = pa.float64()
        return types

    def _read_array(self, head: str) -> list[Any]:
        text = head + self.stream.read(max(0, JSON_ARRAY_LIMIT + 1 - len(head)))  # never -1: all
        if len(text) > JSON_ARRAY_LIMIT:
            raise DataError(
                f"{self.where} is a JSON array of more than {JSON_ARRAY_LIMIT >> 20} Mi "
                "characters, too large to read whole; write it as JSON Lines (one object a line), "
                "which is read in chunks"
            )
        if text.count("{") + text.count("[") > JSON_ARRAY_CONTAINERS:  # parsed whole: bound it
            raise DataError(
                f"{self.where} is a JSON array of more than {JSON_ARRAY_CONTAINERS:,} arrays and "
                "objects, too many to read whole; write it as JSON Lines (one object a line)"
            )
        value = _loads(text)
        if not isinstance(value, list):
            raise DataError(
                f"{self.where} starts with '[' but is not a valid JSON array; use one JSON "
                "array of objects, or JSON Lines (one object a line)"
            )
        return value

    def _values(self) -> Iterator[tuple[Any, int, int]]:
        """Each row's JSON value (:data:`_TOO_LONG` for an over-long line, :data:`_TOO_NESTED`
        for one with too many containers), its size and the containers it holds."""
        if self.array is not None:
            yield from ((value, 0, 0) for value in self.array)
            return
        lines = itertools.chain(self.pending, self.lines)
        self.pending = []
        try:
            for line in lines:
                if line is None or len(line.rstrip("\r\n")) > self.row_limit:
                    yield _TOO_LONG, 0, 0
                elif line.strip():
                    yield *_parse(line), len(line)
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read {self.where}: {exc}") from None

    def _row(self, value: Any) -> tuple[dict[Any, Any], str, str]:
        """The row of one JSON value, its problem and its note."""
        if value is _TOO_LONG:
            return {}, too_long("row", self.row_limit), ""
        if value is _TOO_NESTED:
            return {}, f"row holds more than {JSON_ROW_CONTAINERS:,} JSON arrays/objects", ""
        if not isinstance(value, dict):
            return {}, "not a JSON object" if value is not _BAD_JSON else "invalid JSON", ""
        extra = [fix_text(k)[0] for k in value if k not in self.known]
        note = f"keys not in the first object: {', '.join(extra)}" if extra else ""
        row, problem = _cap_fields(value, list(self.keys.values()), self.max_chars)
        return row, problem, note

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        rows: list[dict[Any, Any]] = []
        problems: list[str] = []
        notes: list[str] = []
        chars = containers = 0
        for value, held, size in self._values():
            row, problem, note = self._row(value)
            rows.append(row)
            problems.append(problem)
            notes.append(note)
            chars += size + CELL_CHARS * len(self.keys)  # a column per key of the first object
            containers += held
            full = chars >= CHUNK_CHARS or containers > JSON_CHUNK_CONTAINERS
            if len(rows) == chunk_size or full:
                yield self._columnar(rows, problems, notes)
                rows, problems, notes, chars, containers = [], [], [], 0, 0
        if rows:
            yield self._columnar(rows, problems, notes)

    def _columnar(self, rows: list[dict[Any, Any]], problems: list[str], notes: list[str]) -> Chunk:
        columns = {name: [row.get(key, MISSING) for row in rows] for name, key in self.keys.items()}
        return Chunk(columns, len(rows), problems, notes)

    def close(self) -> None:
        if self.raw is not None:  # not stdin
            self.stream.close()
        super().close()


_BAD_JSON = object()
_TOO_LONG = object()
_TOO_NESTED = object()


def _parse(line: str) -> tuple[Any, int]:
    """A JSON line's value (:data:`_TOO_NESTED` unparsed when it holds too many arrays and
    objects) and how many it holds (0 when unparsed)."""
    containers = line.count("{") + line.count("[")
    if containers > JSON_ROW_CONTAINERS:
        return _TOO_NESTED, 0
    return _loads(line), containers


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return _BAD_JSON


class TextLineReader(Reader):
    """One review per line (``\\n`` or ``\\r\\n`` endings); every line is a row, blank ones too.

    When one of the first :data:`FASTTEXT_PEEK` lines starts with ``__label__NAME `` (fastText),
    the file is labelled: columns ``text`` and ``label``, the prefix is taken off every line that
    has one, and a line without it is an unlabelled row.
    """

    # Bytes read for one line: the longest review in UTF-8, and room for a fastText label.
    _LABEL_ROOM = 4096

    def __init__(
        self, handle: IO[bytes], where: str = "input", max_chars: int = MAX_FIELD_CHARS
    ) -> None:
        self.handle = handle
        self.where = where
        self.max_chars = max_chars
        limit = _BYTES_PER_CHAR * max_chars + self._LABEL_ROOM
        self.lines = _bounded_lines(handle.readline, limit, b"\n")
        self.pending: list[bytes | None] = []
        held = 0
        try:
            for line in self.lines:
                self.pending.append(line)
                held += len(line or b"")
                if len(self.pending) == FASTTEXT_PEEK or held >= CHUNK_CHARS:
                    break
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read {where}: {exc}") from None
        if self.pending and self.pending[0] is not None:
            self.pending[0] = self.pending[0].removeprefix(_BOM)
        self.fasttext = any(
            _FASTTEXT_LABEL.match(self._decode(line)) is not None
            for line in self.pending
            if line is not None
        )
        self.columns = ["text", "label"] if self.fasttext else ["text"]

    @staticmethod
    def _decode(line: bytes) -> str:
        return line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    def _lines(self) -> Iterator[bytes | None]:
        yield from self.pending
        self.pending = []
        try:
            yield from self.lines
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read {self.where}: {exc}") from None

    def _row(self, raw: bytes | None) -> tuple[Any, Any, str]:
        """The text, label and problem of one line."""
        if raw is None:
            return MISSING, MISSING, too_long("field 'text'", self.max_chars)
        text, label = self._decode(raw), MISSING
        if self.fasttext and (match := _FASTTEXT_LABEL.match(text)):
            text, label = match.group(2), match.group(1)
        if len(text) > self.max_chars:
            return MISSING, label, too_long("field 'text'", self.max_chars)
        return text, label, ""

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        texts: list[Any] = []
        labels: list[Any] = []
        problems: list[str] = []
        held = 0
        for raw in self._lines():
            text, label, problem = self._row(raw)
            texts.append(text)
            labels.append(label)
            problems.append(problem)
            held += len(raw or b"")
            if len(texts) == chunk_size or held >= CHUNK_CHARS:
                yield self._chunk(texts, labels, problems)
                texts, labels, problems, held = [], [], [], 0
        if texts:
            yield self._chunk(texts, labels, problems)

    def _chunk(self, texts: list[Any], labels: list[Any], problems: list[str]) -> Chunk:
        columns = {"text": texts, "label": labels} if self.fasttext else {"text": texts}
        return Chunk(columns, len(texts), problems)

    def close(self) -> None:
        if self.raw is not None:  # not stdin
            self.handle.close()
        super().close()


class FolderReader(Reader):
    """``aclImdb``-style ``pos/``, ``neg/`` (and ``unsup/``) folders of .txt reviews, or a
    folder of .txt files; columns ``id`` (the relative path), ``text`` and ``label``.

    At most the cap of each file is read; a file that is not a regular one (a FIFO, a device), or
    a link (of a file or a subfolder) that leads out of the folder, is a flagged row, never read.
    """

    def __init__(self, folder: Path, max_chars: int = MAX_FIELD_CHARS) -> None:
        if not folder.is_dir():
            raise DataError(f"input folder not found: {folder}")
        labelled = [d for d in ("neg", "pos", "unsup") if (folder / d).is_dir()]
        self.files: list[tuple[Path, Any]] = []
        for name in labelled:
            label = None if name == "unsup" else name
            self.files.extend((f, label) for f in sorted((folder / name).glob("*.txt")))
        if not labelled:
            self.files = [(f, None) for f in sorted(folder.glob("*.txt"))]
        if not self.files:
            raise DataError(f"no .txt reviews in {folder} (nor in its pos/, neg/, unsup/)")
        self.folder = folder
        self.root = folder.resolve()
        self.where = str(folder)
        self.max_chars = max_chars
        self.columns = ["id", "text", "label"]

    def _review(self, file: Path) -> tuple[Any, str]:
        """The text of one file and its problem."""
        try:
            real = file.resolve()  # a link is followed only while it stays inside the folder
        except (OSError, RuntimeError):  # a loop of links (RuntimeError in Python 3.10 to 3.12)
            return MISSING, "cannot read file: a loop of links"
        if not real.is_relative_to(self.root):
            return MISSING, "cannot read file: a link out of the input folder (not followed)"
        limit = _BYTES_PER_CHAR * (self.max_chars + 1)  # a BOM and the cap, in any characters
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # from Python 3.13 resolve() leaves a loop to open: ELOOP
            loop = exc.errno == errno.ELOOP
            return MISSING, "cannot read file: a loop of links" if loop else (
                f"cannot read file: {exc.strerror}"
            )
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder named like a review: x.txt/
            os.close(fd)
            return MISSING, "cannot read file: not a regular file"
        with os.fdopen(fd, "rb") as handle:
            try:
                data = handle.read(limit)
            except OSError as exc:
                return MISSING, f"cannot read file: {exc.strerror}"
        text = data.decode("utf-8", "surrogateescape")
        if len(data) == limit or len(text.removeprefix("\ufeff")) > self.max_chars:
            return MISSING, too_long("field 'text'", self.max_chars)
        return text, ""

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        start = 0
        while start < len(self.files):
            texts: list[Any] = []
            problems: list[str] = []
            held = 0
            for file, _ in self.files[start : start + chunk_size]:
                text, problem = self._review(file)
                texts.append(text)
                problems.append(problem)
                held += len(text or "")
                if held >= CHUNK_CHARS:
                    break
            part = self.files[start : start + len(texts)]
            start += len(texts)
            ids = [str(f.relative_to(self.folder)) for f, _ in part]
            columns = {"id": ids, "text": texts, "label": [label for _, label in part]}
            yield Chunk(columns, len(part), problems)


class ParquetReader(Reader):
    """Parquet read batch by batch with pyarrow; only the needed columns are decoded.

    A value pyarrow cannot turn into a Python one (a string that is not UTF-8 is kept as a
    surrogate-escaped string instead; a date out of Python's range) is missing and flags its row.
    """

    def __init__(self, path: Path, max_chars: int = MAX_FIELD_CHARS) -> None:
        import pyarrow.parquet as pq

        if not path.is_file():
            raise DataError(f"input file not found: {path}")
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"cannot read {path} as Parquet: {first_line(exc)}") from None
        self.path = path
        self.where = str(path)
        self.max_chars = max_chars
        self.columns = list(self.file.schema_arrow.names)
        self.wanted: list[str] | None = None

    def schema_of(self, names: Sequence[str]) -> dict[str, Any]:
        """The pyarrow types of ``names``, to keep them in a Parquet output."""
        schema = self.file.schema_arrow
        return {name: schema.field(name).type for name in names}

    def _batch_rows(self, group: int, chunk_size: int) -> int:
        """Rows per batch in a row group: ``chunk_size``, fewer if its rows are large."""
        meta = self.file.metadata.row_group(group)
        names = set(self.wanted or self.columns)
        size = sum(
            meta.column(i).total_uncompressed_size
            for i in range(meta.num_columns)
            if meta.column(i).path_in_schema.split(".")[0] in names
        )
        return max(1, min(chunk_size, meta.num_rows * CHUNK_CHARS // max(size, 1)))

    def chunk_rows(self, chunk_size: int) -> list[int]:
        """The rows of each chunk :meth:`chunks` yields, from the file's metadata alone (a
        sharded run splits the file by them without reading it)."""
        sizes: list[int] = []
        for group in range(self.file.metadata.num_row_groups):
            rows = self.file.metadata.row_group(group).num_rows
            size = self._batch_rows(group, chunk_size)
            sizes += [size] * (rows // size) + ([rows % size] if rows % size else [])
        return sizes

    def chunks(self, chunk_size: int, skip: int = 0) -> Iterator[Chunk]:
        """Chunks in file order, after the first ``skip`` (their row groups are not read)."""
        # One iterator per row group: a single iter_batches over the whole file keeps the
        # pre-buffered column chunks of every row group it has read (measured: +0.8 MiB per
        # 1,000 IMDB reviews, without bound), one per group frees them as it goes.
        try:
            for group in range(self.file.metadata.num_row_groups):
                rows = self.file.metadata.row_group(group).num_rows
                size = self._batch_rows(group, chunk_size)
                in_group = -(-rows // size)
                if skip >= in_group:
                    skip -= in_group
                    continue
                batches = self.file.iter_batches(
                    batch_size=size, columns=self.wanted, row_groups=[group]
                )
                for batch in itertools.islice(batches, skip, None):
                    yield arrow_chunk(batch, self.max_chars)
                skip = 0
        except Exception as exc:
            raise DataError(f"cannot read {self.path}: {first_line(exc)}") from None


def arrow_chunk(batch: Any, max_chars: int = MAX_FIELD_CHARS) -> Chunk:
    """A pyarrow record batch or table as a :class:`Chunk`: what the Parquet reader hands out,
    and what :class:`~rnn_sentiment.inference.batch.BatchScorer` makes of an in-memory batch."""
    problems = [""] * batch.num_rows
    columns = {}
    for name in batch.schema.names:
        values = columns[name] = _python_values(batch.column(name), name, problems)
        for i, value in enumerate(values):
            if isinstance(value, (str, bytes)) and len(value) > max_chars:
                values[i] = MISSING
                problems[i] = problems[i] or too_long(f"field '{name}'", max_chars)
    return Chunk(columns, batch.num_rows, problems)


def _python_values(column: Any, name: str, problems: list[str]) -> list[Any]:
    """A pyarrow column as Python values; one that cannot be converted is missing and flagged."""
    import pyarrow as pa

    try:
        return list(column.to_pylist())
    except Exception:  # pyarrow raises several types for one bad value
        pass
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # not UTF-8: keep the bytes
        binary = column.cast(pa.large_binary())
        return [
            v if v is None else v.decode("utf-8", "surrogateescape") for v in binary.to_pylist()
        ]
    values: list[Any] = []
    for i in range(len(column)):
        try:
            values.append(column[i].as_py())
        except Exception as exc:
            values.append(MISSING)
            problems[i] = problems[i] or f"field '{name}' cannot be read: {first_line(exc)}"
    return values


class TableReader(Reader):
    """Columns already in memory (a hub split, a generated corpus), handed out in chunks."""

    def __init__(self, table: dict[str, list[Any]], where: str) -> None:
        self.table = table
        self.where = where
        self.columns = list(table)
        self.rows = len(next(iter(table.values()), []))

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        for start in range(0, self.rows, chunk_size):
            part = {name: values[start : start + chunk_size] for name, values in self.table.items()}
            yield Chunk(part, min(chunk_size, self.rows - start))
