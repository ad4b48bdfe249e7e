"""Batch scoring of review files: streaming, order-preserving, atomic and resumable.

Every input row gives exactly one output row, in input order. Input is read in chunks; each chunk
is tokenized in Rust, sorted by length into batches, scored, restored to input order and appended
to a temporary output file. After each chunk the output is flushed to disk and a small progress
file records how many rows and bytes are committed, so an interrupted run (Ctrl-C, a kill, a full
disk) can be resumed with ``resume=True``: the partial output is cut back to the last committed
chunk and that many input rows are skipped. The temporary file is renamed to the output only when
every row is written, so a truncated file never looks finished (the outputs and the progress file
are :mod:`rnn_sentiment.inference.sinks`). A row that cannot be scored or kept as it is, is
flagged (the ``error`` column says why), never the end of the run.

What each output format holds
-----------------------------
Every value of every input format reaches every output format; kept input columns are converted
(the added ``label``, ``score``, ``p_*`` and ``error`` columns are plain strings and numbers):

* **JSON Lines**: strings, integers, booleans and null as they are; a float as it is, but NaN
  and Infinity, which JSON cannot hold, as null; dates, times and timestamps as ISO 8601 strings
  (``"2020-01-02"``, ``"2020-01-02T03:04:05+00:00"``), durations as ISO 8601 durations
  (``"P0DT0H0M5S"``); decimals as strings, exactly (``"1.50"``); binary as base64 strings;
  lists, structs and maps as JSON arrays and objects, converted by the same rules inside (a map
  is an array of ``[key, value]`` pairs).
* **CSV and TSV**: a string as it is, null (and NaN) as an empty cell, any other value as the
  JSON text of its JSON Lines value (``true``, ``1.5``, ``"2020-01-02"`` without quotes,
  ``[1, 2]``).
* **Parquet**: a column of a Parquet input keeps its type (an integer id stays an integer, a
  timestamp a timestamp, NaN stays NaN); a column of any other input is a string column holding
  the CSV cell.

A value that cannot be kept as it is flags its row (the row is still scored): a lone surrogate
(half of a cut emoji escaped in JSON, ``"\\ud83d"``, or bytes that are not UTF-8) becomes U+FFFD,
``invalid UTF-8 replaced in column 'x'``; a value nested more than
:data:`~rnn_sentiment.data.writers.MAX_DEPTH` levels deep, one that does not fit its Parquet type,
or a Parquet value pyarrow cannot turn into a Python one (a date past the year 9999) is null.

JSON Lines input names its columns after its first object, as a CSV header row does; with
``keep_columns="all"`` a later object with keys the first one lacks is flagged (``keys not in the
first object: a, b``), scored, and written without them.

Memory and the longest review
-----------------------------
A review, and any other field, may hold at most ``max_review_chars`` characters (default
1,000,000, about 70 times IMDB's longest review). A longer one is not read whole: its row is
flagged (``field 'text' longer than 1,000,000 characters``), not scored, and the value is written
as null. A CSV record or JSON line may hold 8 times that (other columns, JSON escapes); a longer
one is a flagged row with every value null. So memory stays flat and the output small for any
input, however it was made (see :mod:`rnn_sentiment.data.readers` for how each reader stops).

Output and resume
-----------------
``--output`` naming a directory, or anything but a regular file (a symbolic link, a FIFO, a
device, ``/dev/stdout``: the final rename would replace it), is refused before anything is read;
write to stdout (``--output -``) and redirect instead. When stdout's reader goes
away (``predict --input big.csv | head``), :class:`~rnn_sentiment.errors.OutputClosed` stops the
run (the CLI ends quietly with exit code 141, what a shell reports for a tool that a closed pipe
ended). A resume must use the same input, model and settings, ``chunk_size`` included (the
batches of a chunk set the sixth decimal of a probability); a resume of a run that was stopped
after its output was complete says so and succeeds.

Shards
------
``shard=(K, N)`` (``predict --shard K/N``, K from 0) scores the K-th of N contiguous blocks of the
input, for a scheduler of one's own (Slurm arrays, Kubernetes indexed jobs, GNU parallel). A block
is a run of whole chunks (N blocks as even as whole chunks allow): a chunk's length-sorted batches
set the sixth decimal of its probabilities, so a shard scores exactly the chunks an unsharded run
would, and the N outputs, concatenated in shard order (``cat``; gzip members concatenate too), are
byte for byte the output of one unsharded run. Only the shard holding the first chunk writes the
CSV/TSV header row; a shard with no chunk (more shards than chunks) writes no rows. Parquet
shards hold the same rows, in the same order, as one run's file. To find its block a shard needs
the input's chunk sizes: Parquet metadata gives them without reading (and the row groups before
the block are not read); any other format is read once to count them, then again up to the end of
the block. Reading IMDB reviews from CSV or JSON Lines runs at about 75,000 rows/s on one core,
30 times the scoring rate of two threads (2,500 reviews/s), so a shard of 1/N of such a file
spends about N/20 of its scoring time reading (the last shard N/15): for many shards of one big
file, use Parquet or split the file.
``ScoringSummary.first_row`` is the input row the shard starts at. Each shard resumes on its own;
the shard is part of the resume identity.

Like :mod:`rnn_sentiment.inference.predictor`, this module never imports ``datasets``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from rnn_sentiment.callbacks import ScoringCallback, checked_scoring_callback
from rnn_sentiment.config import CheckedModel
from rnn_sentiment.data.files import choose_text_column, detect_format, missing_column, open_reader
from rnn_sentiment.data.readers import (
    MAX_FIELD_CHARS,
    MISSING,
    Chunk,
    ParquetReader,
    Reader,
    TableReader,
)
from rnn_sentiment.data.writers import output_column, parquet_table
from rnn_sentiment.errors import DataError, RnnSentimentError
from rnn_sentiment.inference.sinks import (
    FileSink,
    ParquetSink,
    Progress,
    Sink,
    StdoutSink,
    partial_path,
    progress_path,
)
from rnn_sentiment.runfiles import given_path, replaces_model_file
from rnn_sentiment.signals import StopRequested, StopSignals
from rnn_sentiment.text import LongReviews, fix_text

# A bound that keeps N (part of the resume identity) small: a million shards of a billion-row
# file still hold a thousand rows each.
MAX_SHARDS = 1_000_000

FINGERPRINT_BYTES = 1 << 20
# The largest max_review_chars: the readers hand multiples of it to C functions taking a C long
# (csv.field_size_limit) or Py_ssize_t (readline), and no review comes near it.
MAX_REVIEW_CHARS_LIMIT = 2**31 - 1


class Scorer(Protocol):
    """What batch scoring needs of a model: the PyTorch ``Predictor`` or an exported model's
    ``ExportedPredictor`` (which never imports torch)."""

    label_names: list[str]

    @property
    def path(self) -> Path: ...  # the model directory

    @property
    def quantize(self) -> str | None: ...

    @property
    def dtype(self) -> str: ...

    @property
    def manifest_sha256(self) -> str: ...

    def score(
        self,
        texts: Sequence[str],
        long_reviews: LongReviews = "truncate",
        window_stride: int | None = None,
    ) -> np.ndarray: ...


class ScoringOptions(CheckedModel):
    """How a file is read, scored and written (everything but the model and the paths).
    ``ScoringOptions.checked(...)`` builds one raising ConfigError, as the command line reports
    a wrong option, where the constructor raises pydantic's ValidationError."""

    model_config = ConfigDict(extra="forbid")

    input_format: str | None = None
    """Force the input format (csv, tsv, jsonl, parquet, txt, folder); default: by extension."""
    output_format: str | None = None
    """Force the output format (csv, tsv, jsonl, parquet); default: by extension (stdout: jsonl)."""
    text_column: str | None = None
    """Column holding the review; default: text, review, sentence, content or body."""
    keep_columns: str = "all"
    """Input columns copied to the output: 'all', 'none' or a comma-separated list."""
    chunk_size: int = Field(default=4096, ge=1, le=2**31 - 1)
    """Rows read, sorted by length and scored together; memory grows with it."""
    max_review_chars: int = Field(default=MAX_FIELD_CHARS, ge=1, le=MAX_REVIEW_CHARS_LIMIT)
    """Longest review (and other field) read, in characters; a longer one flags its row."""
    long_reviews: Literal["truncate", "window"] = "truncate"
    """'truncate' at the trained max length, or 'window': overlapping windows, mean probability."""
    window_stride: int | None = Field(default=None, ge=1)
    """Tokens between window starts; default: half the max length."""
    resume: bool = False
    """Continue an interrupted run writing to the same output."""
    shard: tuple[int, int] | None = None
    """``(K, N)`` or ``"K/N"``, K from 0: score only the K-th of N contiguous blocks of the input
    (see "Shards" above); the N outputs, concatenated in order, are one unsharded run's output."""

    @field_validator("shard", mode="before")
    @classmethod
    def _parse_shard(cls, value: Any) -> Any:
        if isinstance(value, str):
            k, sep, n = value.partition("/")
            if not (sep and k.strip().isdigit() and n.strip().isdigit()):
                raise ValueError(f"shard '{value}' is not K/N (such as 0/4)")
            value = (int(k), int(n))
        return value

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[1] > MAX_SHARDS:
            raise ValueError(f"shard {value[0]}/{value[1]}: N is at most {MAX_SHARDS:,}")
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(
                f"shard {value[0]}/{value[1]}: K counts from 0 to N-1 (0/{max(value[1], 1)} is "
                "the first of N)"
            )
        return value


@dataclass
class ScoringSummary:
    """What a scoring run did."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_flagged: int = 0
    rows_resumed: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = "-"
    first_row: int = 0  # the input row the output starts at (not 0 only for a shard)
    worker_seconds: float = 0.0  # Ray: the workers' time in scoring, summed (0: one process)

    @property
    def rows_per_second(self) -> float:
        done = self.rows_read - self.rows_resumed
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


class ScoringInterrupted(RnnSentimentError):
    """Scoring stopped early (Ctrl-C or SIGTERM); the committed rows are kept for ``--resume``."""

    exit_code = 130


# ----------------------------------------------------------------------------------------------
# The scoring of one chunk


@dataclass
class ScoredChunk:
    """Output columns for one chunk; ``predicted`` is each row's class index, -1 if unscored."""

    columns: dict[str, list[Any]]
    predicted: list[int]
    scored: int
    flagged: list[str]
    probs: np.ndarray | None = None  # [rows, labels], unrounded; NaN rows for unscored ones


def text_values(values: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The review of each row ('' when none) and the problem of each row ('' if none).

    Only checks and flags: the model's text pipeline (``Predictor.score``) prepares the review,
    as it does on every other path.
    """
    texts: list[str] = []
    problems: list[str] = []
    for value in values:
        problem = ""
        if value is MISSING:
            text, problem = "", "missing text"
        elif isinstance(value, str):
            text = value
            problem = "invalid UTF-8 replaced" if fix_text(value)[1] else ""
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
        else:
            text, problem = "", f"text is not a string ({type(value).__name__})"
        if not problem and not text.strip():
            problem = "empty text"
        texts.append(text)
        problems.append(problem)
    return texts, problems


def score_chunk(
    predictor: Scorer,
    chunk: Chunk,
    text_column: str,
    kept: dict[str, str],
    long_reviews: LongReviews = "truncate",
    window_stride: int | None = None,
) -> ScoredChunk:
    """Score the rows of ``chunk`` that have text; flag the others. Output keeps input order.

    Kept columns hold their values as read (:func:`format_kept` converts them for a format).
    """
    texts, problems = text_values(chunk.columns.get(text_column, [MISSING] * chunk.rows))
    problems = [read or own for read, own in zip(chunk.problems, problems, strict=True)]
    scorable = [i for i, text in enumerate(texts) if text.strip() and not _unscorable(problems[i])]
    probs = predictor.score([texts[i] for i in scorable], long_reviews, window_stride)
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():  # a broken model: NaN is no probability, and not JSON either
        for i in np.asarray(scorable)[~finite].tolist():
            problems[i] = "the model gave no probability (NaN)"
        scorable, probs = np.asarray(scorable)[finite].tolist(), probs[finite]
    names = [fix_text(name)[0] for name in predictor.label_names]
    n = chunk.rows
    best = probs.argmax(axis=1)
    rounded = np.round(probs.astype(np.float64), 6)
    label: list[Any] = [names[b] for b in best.tolist()]
    score: list[Any] = rounded[np.arange(len(scorable)), best].tolist()
    per_class: list[list[Any]] = rounded.T.tolist()
    predicted: list[int] = best.tolist()
    if len(scorable) < n:  # scored rows back in their place; None (class -1) for the others
        label, score = _spread(label, scorable, n), _spread(score, scorable, n)
        per_class = [_spread(column, scorable, n) for column in per_class]
        predicted = _spread(predicted, scorable, n, fill=-1)
    out = {new: chunk.columns.get(old, [MISSING] * n) for old, new in kept.items()}
    out["label"] = label
    out["score"] = score
    out.update({f"p_{name}": per_class[k] for k, name in enumerate(names)})
    out["error"] = [p or None for p in problems]
    full = np.full((n, len(names)), np.nan)
    full[scorable] = probs
    return ScoredChunk(out, predicted, len(scorable), problems, full)


def format_kept(
    scored: ScoredChunk, kept: Sequence[str], kind: str, types: dict[str, Any] | None = None
) -> None:
    """Convert the kept columns of ``scored`` in place for output format ``kind`` (see the module
    docstring); a value that had to change flags its row. ``types``: Parquet types to keep."""
    for name in kept:
        arrow_type = (types or {}).get(name)
        values, problems = output_column(scored.columns[name], kind, arrow_type)
        scored.columns[name] = values
        for i, problem in enumerate(problems):
            if problem:
                _flag(scored, i, f"{problem} in column '{name}'")


def _flag(scored: ScoredChunk, row: int, problem: str) -> None:
    """Give a row its first problem; a later one is not shown."""
    if not scored.flagged[row]:
        scored.flagged[row] = problem
        scored.columns["error"][row] = problem


def _spread(values: list[Any], rows: list[int], n: int, fill: Any = None) -> list[Any]:
    out = [fill] * n
    for value, i in zip(values, rows, strict=True):
        out[i] = value
    return out


def _unscorable(problem: str) -> bool:
    return "longer than" in problem or problem.startswith(
        ("missing", "empty", "text is not", "invalid JSON", "not a JSON", "row holds")
    )


def output_columns(
    input_columns: Sequence[str],
    keep: str,
    label_names: Sequence[str],
    where: str,
    also_added: Sequence[str] = (),
) -> dict[str, str]:
    """Map of kept input column -> output name; a clash with an added column (``also_added``:
    more of them, as an engine adds) gets ``input_``, as many times as it takes to be unique."""
    if keep == "all":
        chosen = list(input_columns)
    elif keep == "none":
        chosen = []
    else:
        chosen = [c.strip() for c in keep.split(",") if c.strip()]
        for name in chosen:
            if name not in input_columns:
                raise missing_column(name, input_columns, where, "--keep-columns ")
    added = {"label", "score", "error", *(f"p_{fix_text(n)[0]}" for n in label_names)}
    added.update(also_added)
    taken = added | {c for c in chosen if c not in added}
    names = {}
    for column in chosen:
        name = column
        while column in added and name in taken:  # label -> input_label, or input_input_label
            name = f"input_{name}"
        taken.add(name)
        names[column] = name
    return names


# ----------------------------------------------------------------------------------------------
# What a resumed run must match: the input, as it was


def fingerprint(path: str, kind: str, reader: Reader) -> dict[str, Any]:
    """Size, modification time and a hash of the first megabyte (or the file list of a folder).

    Stdin has none (it cannot be resumed, so nothing is compared).
    """
    if path == "-":
        return {"stdin": True}
    digest = hashlib.sha256()
    if kind == "folder":
        files = getattr(reader, "files", [])
        for file, _ in files:
            digest.update(str(file).encode("utf-8", "surrogateescape") + b"\0")
        return {"files": len(files), "sha256": digest.hexdigest()}
    stat = Path(path).stat()
    with open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


# ----------------------------------------------------------------------------------------------
# The run


def score_file(
    predictor: Scorer,
    input_path: str | Path,
    output_path: str | Path = "-",
    options: ScoringOptions | None = None,
    callback: ScoringCallback | None = None,
    stdout: IO[bytes] | None = None,
) -> ScoringSummary:
    """Score every review of ``input_path`` into ``output_path`` (``-``: stdin / stdout).

    Raises:
        DataError: unreadable input, a wrong column or format, an output that cannot be written
            (a directory, say), or ``resume`` against a changed input or settings.
        ScoringInterrupted: Ctrl-C or SIGTERM; the committed rows stay for ``resume``.
        OutputClosed: stdout's reader went away (``| head``).
    """
    options, callback = _checked_arguments(predictor, options, callback)
    source, target = (_stream_or_path(path, what) for path, what in
                      ((input_path, "input"), (output_path, "output")))  # fmt: skip
    _check_paths(source, target, options, predictor.path)
    predictor.score([], options.long_reviews, options.window_stride)  # checks them, scores none
    in_kind = detect_format(source, options.input_format)
    out_kind = detect_format(target, options.output_format, output=True)
    reader = open_reader(source, in_kind, options.max_review_chars)
    try:
        plan = _plan(predictor, reader, source, out_kind, options)
        block = _shard_block(reader, source, in_kind, options) if options.shard else None
        header = block is None or block.start == 0  # only the first shard has the header row
        if target == "-":
            sink: Sink = StdoutSink(out_kind, stdout, header)
            return _run(predictor, reader, plan, sink, target, options, callback, block)
        output = Path(target)
        identity = _identity(predictor, reader, source, in_kind, out_kind, options)
        progress = Progress(output, identity)
        state = _resume_state(progress, output, options, callback)
        if state is not None and not os.path.lexists(partial_path(output)):
            return _already_complete(progress, state, output, out_kind, callback)
        if out_kind == "parquet":
            schema = parquet_schema(predictor.label_names, plan)
            sink = ParquetSink(output, schema, progress, state)
        else:
            sink = FileSink(output, out_kind, progress, state, header)
        return _run(predictor, reader, plan, sink, target, options, callback, block)
    finally:
        reader.close()


def _checked_arguments(
    predictor: object, options: object, callback: object
) -> tuple[ScoringOptions, ScoringCallback]:
    """score_file's arguments as a library caller may pass them: a DataError that says what
    to pass, before any file is touched, not an AttributeError from deep inside."""
    if not (hasattr(predictor, "label_names") and hasattr(predictor, "score")):
        raise DataError(f"the model must come from load_model(), not {type(predictor).__name__}")
    if options is not None and not isinstance(options, ScoringOptions):
        raise DataError(f"options must be ScoringOptions(...), not {type(options).__name__}")
    return options or ScoringOptions(), checked_scoring_callback(callback)


def _stream_or_path(path: object, what: str) -> str:
    """'-' (stdin or stdout), or a path as :func:`given_path` takes it."""
    if path == "-":
        return "-"
    given_path(path, what, "give a file, or '-'")
    return os.fspath(path)  # type: ignore[call-overload]  # checked: str or PathLike


def _check_paths(source: str, target: str, options: ScoringOptions, model_dir: Path) -> None:
    """Refuse an output that cannot be written, or would replace the input or a file of the
    model, before anything is read or scored."""
    if target != "-" and source != "-":
        _refuse_overwriting_the_input(Path(source), Path(target))
    if target != "-" and replaces_model_file(Path(target), model_dir):
        raise DataError(f"--output {target} would replace a file of the model {model_dir}; "
                        "choose another output path")  # fmt: skip
    if target != "-" and Path(target).is_dir():
        raise DataError(f"--output {target} is a directory; name a file, such as {target}/out.csv")
    if target != "-" and not _regular_or_absent(target):  # the final rename would replace it
        raise DataError(
            f"--output {target} is not a regular file (a link, FIFO or device); to write there, "
            f"use --output - and redirect: > {target}"
        )
    if options.resume and "-" in (source, target):
        raise DataError("--resume needs a file input and a file output (not stdin / stdout)")
    if options.shard and source == "-":
        raise DataError("--shard needs a file input (each shard reads it from the start)")


def _refuse_overwriting_the_input(source: Path, target: Path) -> None:
    """Refuse an output whose writing would replace or delete the input: the output itself, or
    the ``.partial`` / ``.progress.json`` beside it, which a run removes when it starts afresh."""
    read = source.resolve()
    written_by_run = (target, partial_path(target), progress_path(target))
    for written in written_by_run:
        where = written.resolve()
        if read == where or where in read.parents:
            if written == target:
                raise DataError(f"--output {target} is the input file; choose another output path")
            raise DataError(
                f"--output {target} would replace the input: a run writes {written}; "
                "choose another output path"
            )


def _regular_or_absent(path: str) -> bool:
    """Whether ``path`` is nothing yet or a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:  # a parent that is not a folder, no permission: said when writing
        return True


@dataclass
class ScoringPlan:
    """How the rows of one input become output rows: its review column, the columns kept (and
    their output names and Parquet types), the output format."""

    text_column: str
    kept: dict[str, str]  # input column -> output column
    out_kind: str
    keep_all: bool  # every column: a JSON key the first object lacks is flagged
    types: dict[str, Any]  # output column -> Parquet type kept from a Parquet or JSON input

    @property
    def read(self) -> list[str]:
        """The input columns a reader must decode."""
        return list(dict.fromkeys([*self.kept, self.text_column]))


def plan_scoring(
    label_names: Sequence[str],
    columns: Sequence[str],
    schema_of: Callable[[Sequence[str]], dict[str, Any]],
    where: str,
    out_kind: str,
    options: ScoringOptions,
    also_added: Sequence[str] = (),
) -> ScoringPlan:
    """The plan for an input with ``columns`` (``schema_of``: their Parquet types, as
    :meth:`Reader.schema_of`); a wrong column name is a :class:`DataError` naming ``where``."""
    text_column = choose_text_column(columns, options.text_column, where)
    kept = output_columns(columns, options.keep_columns, label_names, where, also_added)
    types: dict[str, Any] = {}
    if out_kind == "parquet":
        types = {kept[old]: kind for old, kind in schema_of(list(kept)).items()}
    return ScoringPlan(text_column, kept, out_kind, options.keep_columns == "all", types)


def _plan(
    predictor: Scorer, reader: Reader, where: str, out_kind: str, options: ScoringOptions
) -> ScoringPlan:
    labels = predictor.label_names
    plan = plan_scoring(labels, reader.columns, reader.schema_of, where, out_kind, options)
    if isinstance(reader, ParquetReader):
        reader.wanted = plan.read
    return plan


# ----------------------------------------------------------------------------------------------
# Shards: contiguous blocks of whole chunks


@dataclass
class _Block:
    """The chunks ``start`` to ``stop`` (exclusive) of the input: input rows ``first_row`` on."""

    start: int
    stop: int
    first_row: int
    rows: int


def _shard_block(reader: Reader, source: str, kind: str, options: ScoringOptions) -> _Block:
    """Shard K of N: the K-th of N runs of whole chunks, as even as chunks allow.

    Whole chunks, because a chunk's length-sorted batches set the sixth decimal of its
    probabilities: a shard must score exactly the chunks an unsharded run would.
    """
    assert options.shard is not None
    k, n = options.shard
    sizes = _chunk_sizes(reader, source, kind, options)
    start, stop = len(sizes) * k // n, len(sizes) * (k + 1) // n
    return _Block(start, stop, sum(sizes[:start]), sum(sizes[start:stop]))


def _chunk_sizes(reader: Reader, source: str, kind: str, options: ScoringOptions) -> list[int]:
    """The rows of each chunk of the input: from Parquet metadata, else by reading it once."""
    if isinstance(reader, ParquetReader):
        return reader.chunk_rows(options.chunk_size)
    counter = open_reader(source, kind, options.max_review_chars)
    try:
        return [chunk.rows for chunk in counter.chunks(options.chunk_size)]
    finally:
        counter.close()


def _input_chunks(reader: Reader, chunk_size: int, block: _Block | None) -> Iterator[Chunk]:
    """The chunks to score: all of them, or a shard's block (Parquet skips row groups unread)."""
    if block is None:
        return reader.chunks(chunk_size)
    if isinstance(reader, ParquetReader):
        return itertools.islice(reader.chunks(chunk_size, block.start), block.stop - block.start)
    return itertools.islice(reader.chunks(chunk_size), block.start, block.stop)


def _identity(
    predictor: Scorer,
    reader: Reader,
    source: str,
    in_kind: str,
    out_kind: str,
    options: ScoringOptions,
) -> dict[str, Any]:
    """What a resume must find unchanged: the input, the model and every setting but resume."""
    # An unsharded run's settings are what they were before shards, so its resume still matches.
    unused = {"resume"} | ({"shard"} if options.shard is None else set())
    return {
        "input": fingerprint(source, in_kind, reader),
        "model": _model_identity(predictor),
        "settings": {**options.model_dump(mode="json", exclude=unused), "output": out_kind},
    }


def _resume_state(
    progress: Progress, output: Path, options: ScoringOptions, callback: ScoringCallback
) -> dict[str, Any] | None:
    """The state to resume from (checked), or None to start over."""
    if not options.resume:  # the progress file is replaced unread, whatever it is
        if progress.exists() or os.path.lexists(partial_path(output)):
            callback.on_message(f"discarding the unfinished output of an earlier run ({output})")
        return None
    state = progress.load()
    if state is None:
        callback.on_message(f"nothing to resume for {output}; scoring from the start")
        return None
    progress.check(state)
    if os.path.lexists(partial_path(output)):
        callback.on_message(f"resuming {output}: {state['rows']} rows already scored")
    return state


def _already_complete(
    progress: Progress,
    state: dict[str, Any],
    output: Path,
    kind: str,
    callback: ScoringCallback,
) -> ScoringSummary:
    """Resume of a run stopped after its output was published, before its progress file went."""
    rows = int(state["rows"])
    if not _is_published(output, kind, state):
        raise DataError(
            f"cannot resume: the unfinished output {partial_path(output)} is gone; "
            "run without --resume to start over"
        )
    progress.remove()
    callback.on_message(f"{output} is already complete ({rows} rows); nothing left to resume")
    return ScoringSummary(rows_read=rows, rows_resumed=rows, output=str(output))


def _is_published(output: Path, kind: str, state: dict[str, Any]) -> bool:
    """Whether ``output`` is what the run of ``state`` renamed into place."""
    if not output.is_file():
        return False
    if kind != "parquet":
        return output.stat().st_size == state.get("offset")
    import pyarrow.parquet as pq

    try:
        return bool(pq.ParquetFile(output).metadata.num_rows == state["rows"])
    except Exception:  # pyarrow raises several types for a file that is not Parquet
        return False


def _model_identity(predictor: Scorer) -> dict[str, Any]:
    # The hash of the manifest bytes that were checked when the model was loaded.
    digest = predictor.manifest_sha256
    return {"manifest_sha256": digest, "quantize": predictor.quantize, "dtype": predictor.dtype}


def parquet_schema(label_names: Sequence[str], plan: ScoringPlan) -> Any:
    """The pyarrow schema of a Parquet output: kept columns, label, score, p_*, error."""
    import pyarrow as pa

    fields = [pa.field(new, plan.types.get(new, pa.string())) for new in plan.kept.values()]
    fields += [pa.field("label", pa.string()), pa.field("score", pa.float64())]
    fields += [pa.field(f"p_{fix_text(n)[0]}", pa.float64()) for n in label_names]
    fields.append(pa.field("error", pa.string()))
    return pa.schema(fields)


def score_rows(
    predictor: Scorer, chunk: Chunk, plan: ScoringPlan, options: ScoringOptions
) -> ScoredChunk:
    """One chunk's output rows, its kept values as the output format holds them: what every
    runner writes (a file, a shard, an in-memory batch, a Ray worker)."""
    scored = score_chunk(predictor, chunk, plan.text_column, plan.kept, options.long_reviews,
                         options.window_stride)  # fmt: skip
    _for_output(scored, chunk, plan)
    return scored


def scored_table(label_names: Sequence[str], scored: ScoredChunk, plan: ScoringPlan) -> Any:
    """A Parquet plan's output rows as a pyarrow table: what one Parquet part of it holds."""
    return parquet_table(scored.columns, parquet_schema(label_names, plan))


def _run(
    predictor: Scorer,
    reader: Reader,
    plan: ScoringPlan,
    sink: Sink,
    target: str,
    options: ScoringOptions,
    callback: ScoringCallback,
    block: _Block | None = None,
) -> ScoringSummary:
    skip = sink.rows  # committed by the interrupted run being resumed
    summary = ScoringSummary(output=target, rows_read=skip, rows_resumed=skip)
    summary.first_row = block.first_row if block else 0
    started = time.perf_counter()
    callback.on_start(block.rows if block else total_rows(reader))
    try:
        with StopSignals(raise_at_once=True):  # at once: even a read blocked on stdin stops
            chunks = _input_chunks(reader, options.chunk_size, block)
            for chunk in _skip_rows(chunks, skip):
                scored = score_rows(predictor, chunk, plan, options)
                sink.write(scored.columns)
                sink.commit(chunk.rows)
                tally(summary, chunk.rows, scored)
                callback.on_chunk(summary.rows_read, reader.fraction_read())
    except (KeyboardInterrupt, StopRequested) as exc:
        sink.abort()
        sigterm = isinstance(exc, StopRequested) and exc.signal_name == "SIGTERM"
        how = "stopped by SIGTERM" if sigterm else "interrupted"
        raise ScoringInterrupted(
            f"{how} after {sink.rows} rows; rerun the same command with --resume to continue"
            if target != "-"
            else f"{how} after {sink.rows} rows"
        ) from None
    except BaseException:
        sink.abort()
        raise
    sink.finish()
    summary.seconds = time.perf_counter() - started
    return summary


def _for_output(scored: ScoredChunk, chunk: Chunk, plan: ScoringPlan) -> None:
    """Kept values as the output format holds them; what had to change, or was left out, flags
    its row."""
    format_kept(scored, list(plan.kept.values()), plan.out_kind, plan.types)
    if plan.keep_all:
        for i, note in enumerate(chunk.notes):
            if note:
                _flag(scored, i, note)


def tally(summary: ScoringSummary, rows: int, scored: ScoredChunk) -> None:
    """Count a scored chunk's rows into ``summary``: read, scored, flagged and why."""
    summary.rows_read += rows
    summary.rows_scored += scored.scored
    for problem in scored.flagged:
        if problem:
            summary.rows_flagged += 1
            reason = problem if not problem[0].isdigit() else "wrong number of fields"
            summary.problems[reason] = summary.problems.get(reason, 0) + 1


def total_rows(reader: Reader) -> int | None:
    """The rows ``reader`` holds, where it knows without reading them (Parquet, a folder, a
    table in memory: a hub split)."""
    if isinstance(reader, ParquetReader):
        return int(reader.file.metadata.num_rows)
    if isinstance(reader, TableReader):
        return reader.rows
    files = getattr(reader, "files", None)
    return len(files) if files is not None else None


def _skip_rows(chunks: Iterator[Chunk], skip: int) -> Iterator[Chunk]:
    """Drop the first ``skip`` rows (already committed by an interrupted run)."""
    for chunk in chunks:
        if skip >= chunk.rows:
            skip -= chunk.rows
            continue
        if skip:
            columns = {k: v[skip:] for k, v in chunk.columns.items()}
            chunk = Chunk(columns, chunk.rows - skip, chunk.problems[skip:], chunk.notes[skip:])
            skip = 0
        yield chunk


def iter_scored(
    predictor: Scorer,
    reader: Reader,
    text_column: str,
    options: ScoringOptions,
    keep: Sequence[str] = (),
    callback: ScoringCallback | None = None,
) -> Iterator[tuple[Chunk, ScoredChunk]]:
    """Score a reader chunk by chunk (what ``evaluate`` and ``calibrate`` stream through),
    telling ``callback`` the rows scored after each chunk."""
    kept = {name: name for name in keep}
    callback = callback or ScoringCallback()
    callback.on_start(total_rows(reader))
    rows = 0
    for chunk in reader.chunks(options.chunk_size):
        yield chunk, score_chunk(predictor, chunk, text_column, kept, options.long_reviews,
                                 options.window_stride)  # fmt: skip
        rows += chunk.rows
        callback.on_chunk(rows, reader.fraction_read())
