"""Batch scoring on Ray Data: many files, many workers, many machines, the same rows as one process.

:func:`score_with_ray` (``predict --input ... --output DIR --engine ray``) reads review files with
Ray Data, scores them with ``map_batches`` on a pool of actors (one :class:`BatchScorer` per
worker: the model is loaded once per worker process, one thread each by default) and writes one
Parquet part per chunk into the output folder. Without ``address`` it starts a local Ray, so the
same call runs on a laptop; with ``address`` (``ray://host:10001``, ``auto``) it joins a cluster.

What it reads and writes
------------------------
* **Input**: files (Parquet, CSV, TSV, JSON Lines, text lines; each optionally .gz but Parquet),
  or a folder: its data files (not .txt, sorted by name; with ``input_format``, all its files),
  or, when it holds none, a folder of .txt reviews as ``predict --input`` reads one. Each file is
  read by one Ray read task with the same reader ``predict --input`` uses
  (:mod:`rnn_sentiment.data.readers`), in the same chunks (``chunk_size`` rows), so a file gives
  the same rows, values and row flags on either path, and every chunk is scored as one batch, as
  an unsharded run scores it: the probabilities are identical to the last digit. Read tasks ship
  each chunk to the workers whole.
* **Output**: ``part-FFFFF-CCCCCC.parquet`` for chunk C of input file F: the columns a Parquet
  output of ``predict --input`` holds (kept input columns with their types, ``label``, ``score``,
  ``p_*``, ``error``) plus ``source_file`` (the input file) and ``source_row`` (the row's
  position in it, from 0; an input column of either name is kept as ``input_<name>``). Rows out =
  rows in, ids and input columns carried. Workers finish chunks in any order; the parts, sorted
  by name, or the rows sorted by (file order, ``source_row``), are the input order. A part has
  its input file's columns and types, so the parts of inputs that differ (an integer id in one
  file, a text id in another) are read per file or with a schema that holds both.
* **Paths**: the input files, the model and the output folder must be readable (the output
  writable) at the same path on every node: one machine, or a shared file system. The output
  folder must be new or empty.

Faults
------
A worker that dies (killed, out of memory, its machine lost) is restarted and its chunk is
scored again: ``max_restarts`` and ``max_task_retries`` are unlimited, Ray Data's defaults for an
actor pool (Ray logs a line saying that a restart needs the actor's arguments, which the driver
holds to the end of the run). A read task that fails is retried. A part is written to a
temporary name and renamed, and its name is its chunk's, so a chunk scored twice is written
once: every row is in exactly one part (``tests/test_ray.py`` kills a worker in the middle of a
run). Ray itself is an optional extra: ``pip install 'rnn-sentiment[ray]'``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rnn_sentiment.config import MAX_WORKERS, is_whole
from rnn_sentiment.data.files import EXTENSIONS, detect_format, format_of, open_reader
from rnn_sentiment.data.readers import ParquetReader
from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.batch import BatchScorer
from rnn_sentiment.inference.scoring import (
    ScoringOptions,
    ScoringPlan,
    ScoringSummary,
    plan_scoring,
    tally,
)
from rnn_sentiment.runfiles import given_path

SOURCE_COLUMNS = ("source_file", "source_row")
INSTALL_HINT = "Ray is not installed; pip install 'rnn-sentiment[ray]' (or pip install 'ray[data]')"
# A read task reads at tens of thousands of rows a second, a one-thread worker scores about a
# thousand IMDB reviews a second: one read task at a time per this many workers keeps them busy.
WORKERS_PER_READ = 8
PART = "part-{file:05d}-{chunk:06d}.parquet"


@dataclass(frozen=True)
class _Input:
    """One input file (or folder of .txt reviews), its format and how its rows are scored."""

    name: str  # as given: the source_file column
    path: str  # absolute: workers may run in other folders
    kind: str
    plan: ScoringPlan


def score_with_ray(
    model: str | Path | None,
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    options: ScoringOptions | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    batch_size: int | None = None,
    quantize: Literal["int8"] | None = None,
    dtype: Literal["fp32", "bf16"] = "fp32",
    quiet: bool = False,
) -> ScoringSummary:
    """Score every row of ``inputs`` into Parquet parts in ``output_dir`` with Ray Data.

    Args:
        model: A run or exported directory; None: as ``predict`` without ``--model``.
        inputs: A file, a folder (see the module docstring) or a list of them.
        output_dir: A new or empty folder for the parts.
        options: As for :func:`~rnn_sentiment.inference.scoring.score_file`: input format,
            columns, chunk size, review cap, long reviews; output format Parquet, no resume
            (a run is retried by Ray), no shard (Ray splits the work).
        address: A Ray cluster to join; None starts a local Ray (stopped at the end).
        workers: Scoring actors; default: the cluster's CPUs divided by ``threads``.
        threads: CPU threads per worker.
        batch_size, quantize, dtype: As for ``predict``.
        quiet: Keep Ray's progress and information lines off stderr (its warnings stay).

    Raises:
        DataError: Ray missing, an unreadable input or a wrong column, an output folder that is
            not empty, unsupported options.
    """
    ray = _import_ray()
    _check_arguments(options, address, workers)
    options = _checked(options or ScoringOptions())
    load = {"batch_size": batch_size, "quantize": quantize, "dtype": dtype}
    scorer = BatchScorer.from_options(model, options, threads=threads, **load)
    model_here = scorer.with_threads(None).predictor  # loads here: a broken model fails at once
    labels = model_here.label_names
    model_here.score([], options.long_reviews, options.window_stride)  # checks them, scores none
    files = [_input(path, kind, labels, options) for path, kind in _input_files(inputs, options)]
    output = _empty_folder(given_path(output_dir, "output", "give a new or empty folder"))
    started = time.perf_counter()
    ours = not ray.is_initialized()
    if ours:
        level = logging.WARNING if quiet else logging.INFO
        ray.init(address=address, include_dashboard=False, logging_level=level)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        with _ray_quiet(ray, quiet):
            done = _run(ray, scorer, files, output, options.chunk_size, workers, threads)
    finally:
        if ours:
            ray.shutdown()
    _remove_temporary(output)
    return _summary(done, files, output, time.perf_counter() - started)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DataError(INSTALL_HINT) from None
    return ray


@contextlib.contextmanager
def _ray_quiet(ray: Any, quiet: bool) -> Iterator[None]:
    """Ray Data's progress lines and information off stderr, when ``quiet``; restored after."""
    context, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    if quiet:
        context.enable_progress_bars = False
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)


def _check_arguments(options: object, address: object, workers: object) -> None:
    """What Ray would otherwise be started with: each a DataError before it starts."""
    if options is not None and not isinstance(options, ScoringOptions):
        raise DataError(f"options must be ScoringOptions(...), not {type(options).__name__}")
    if address is not None and not isinstance(address, str):
        raise DataError(f"address must be a Ray address (str) or None, not {address!r}")
    if workers is not None and not is_whole(workers, 1, MAX_WORKERS):
        raise DataError(
            f"workers must be a whole number from 1 to {MAX_WORKERS:,} (or None), not {workers!r}"
        )


def _checked(options: ScoringOptions) -> ScoringOptions:
    problems = []
    if options.output_format not in (None, "parquet"):
        problems.append("Ray writes Parquet parts; drop --output-format")
    if options.resume:
        problems.append("a Ray run is retried by Ray itself; drop --resume")
    if options.shard:
        problems.append("Ray splits the work itself; drop --shard")
    if problems:
        raise DataError("; ".join(problems))
    return options


def _input_files(
    inputs: str | Path | Sequence[str | Path], options: ScoringOptions
) -> list[tuple[str, str]]:
    """Each input file and its format, in order: a folder's data files sorted by name."""
    given: list[object]
    if isinstance(inputs, (str, os.PathLike)):
        given = [inputs]
    elif isinstance(inputs, Sequence):
        given = list(inputs)
    else:
        raise DataError(f"inputs must be a file, a folder or a list of them, not {inputs!r}")
    if not given:
        raise DataError("no input to score")
    found: list[tuple[str, str]] = []
    for item in (given_path(path, "input", "give a file or a folder") for path in given):
        if str(item) == "-":
            raise DataError("--engine ray reads files, not stdin")
        if item.is_dir() and options.input_format != "folder":
            files = sorted(f for f in item.iterdir() if f.is_file() and f.name[:1] != ".")
            # Every file in the format forced, else those whose extension names a data format.
            data = files if options.input_format else [f for f in files if _is_data_file(f)]
            if data:
                found += [(str(f), detect_format(str(f), options.input_format)) for f in data]
                continue
        found.append((str(item), detect_format(str(item), options.input_format)))
    return found


def _is_data_file(path: Path) -> bool:
    kind = format_of(path)
    return kind is not None and kind != EXTENSIONS[".txt"]


def _input(path: str, kind: str, labels: list[str], options: ScoringOptions) -> _Input:
    """Open the file here, once, so that a missing file or column fails before Ray starts."""
    reader = open_reader(path, kind, options.max_review_chars)
    try:
        plan = plan_scoring(labels, reader.columns, reader.schema_of, path, "parquet", options,
                            SOURCE_COLUMNS)  # fmt: skip
    finally:
        reader.close()
    return _Input(path, str(Path(path).absolute()), kind, plan)


def _empty_folder(output: Path) -> Path:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DataError(f"--output {output} must be a new or empty folder for Ray's Parquet parts")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {output}: {exc.strerror}") from None
    return output.resolve()


def _run(
    ray: Any,
    scorer: BatchScorer,
    files: list[_Input],
    output: Path,
    chunk_size: int,
    workers: int,
    threads: int,
) -> list[dict[str, Any]]:
    """The Ray Data pipeline: read chunks -> score and write them on the actors -> summaries."""
    source = _chunk_source(files, chunk_size, scorer.options.max_review_chars)
    # Reading takes no CPU of its own: every core is a worker's, and a read task that waited
    # for one would starve them all.
    reads = max(1, -(-workers // WORKERS_PER_READ))
    dataset = ray.data.read_datasource(source, num_cpus=0, concurrency=reads)
    scored = dataset.map_batches(
        _ChunkWorker,
        fn_constructor_kwargs={"scorer": scorer, "files": files, "output": output},
        batch_size=1,  # one chunk a call: scored as one batch, as predict --input scores it
        batch_format="pyarrow",
        # One chunk at a time per actor, none queued behind a busy one: the last chunks go to
        # whichever worker is free. A dead actor is restarted and its chunk retried: Ray Data's
        # defaults for actor pools (max_restarts=-1, max_task_retries=-1).
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=threads,
    )
    return list(scored.take_all())


def _chunk_source(files: list[_Input], chunk_size: int, max_chars: int) -> Any:
    """A Ray Data datasource: one read task per input file, one row per chunk of it (a class
    built here, so that this module imports without Ray)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ChunkSource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[Any]:
            return [
                ReadTask(
                    functools.partial(_read_chunks, index, file, chunk_size, max_chars),
                    BlockMetadata(
                        num_rows=None, size_bytes=None, exec_stats=None, input_files=(file.path,)
                    ),
                )
                for index, file in enumerate(files)
            ]

    return ChunkSource()


def _read_chunks(index: int, file: _Input, chunk_size: int, max_chars: int) -> Iterator[Any]:
    """A read task: the chunks of one file, each one row holding the pickled chunk (pickled
    whole, so its values reach the worker exactly as the reader read them)."""
    import pyarrow as pa

    reader = open_reader(file.path, file.kind, max_chars)
    if isinstance(reader, ParquetReader):
        reader.wanted = file.plan.read  # as score_file reads it: the same chunks
    try:
        first = 0
        for number, chunk in enumerate(reader.chunks(chunk_size)):
            payload = pickle.dumps(chunk, protocol=5)
            yield pa.table({"file": [index], "chunk": [number], "first_row": [first],
                            "payload": pa.array([payload], pa.large_binary())})  # fmt: skip
            first += chunk.rows
    finally:
        reader.close()


class _ChunkWorker:
    """A Ray actor: scores chunks with its scorer (the model loaded once, when it starts) and
    writes each to its own Parquet part; returns one summary row per chunk."""

    def __init__(self, scorer: BatchScorer, files: list[_Input], output: Path) -> None:
        self.scorer, self.files, self.output = scorer, files, output
        scorer.predictor  # noqa: B018  (load the model now, not in the first chunk)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        return pa.Table.from_pylist([self._one(row) for row in batch.to_pylist()])

    def _one(self, envelope: dict[str, Any]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        started = time.perf_counter()
        file = self.files[envelope["file"]]
        table, scored = self.scorer.score_chunk(pickle.loads(envelope["payload"]), file.plan)
        first = envelope["first_row"]
        table = table.append_column("source_file", pa.array([file.name] * table.num_rows))
        rows = pa.array(range(first, first + table.num_rows), pa.int64())
        table = table.append_column("source_row", rows)
        part = self.output / PART.format(file=envelope["file"], chunk=envelope["chunk"])
        temporary = part.with_name(f".{part.name}.{os.getpid()}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, part)  # a chunk scored twice (a retry) is written once
        counts = ScoringSummary()
        tally(counts, table.num_rows, scored)
        return {"file": envelope["file"], "chunk": envelope["chunk"], "rows": counts.rows_read,
                "scored": counts.rows_scored, "problems": json.dumps(counts.problems),
                "seconds": time.perf_counter() - started}  # fmt: skip


def _remove_temporary(output: Path) -> None:
    """Parts a killed worker was writing (its chunk was written again by another)."""
    for stale in output.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


def _summary(
    done: list[dict[str, Any]], files: list[_Input], output: Path, seconds: float
) -> ScoringSummary:
    """What the run did, from the workers' summaries (a chunk counted once, however often it
    was scored); every file's chunks must be there, in an unbroken run from 0."""
    chunks = {(row["file"], row["chunk"]): row for row in done}
    for index, file in enumerate(files):
        numbers = sorted(chunk for f, chunk in chunks if f == index)
        if numbers != list(range(len(numbers))):
            raise DataError(f"chunks of {file.name} are missing from the output: {numbers}")
    summary = ScoringSummary(output=str(output), seconds=seconds)
    for row in chunks.values():
        summary.rows_read += row["rows"]
        summary.rows_scored += row["scored"]
        summary.worker_seconds += row["seconds"]
        for reason, count in json.loads(row["problems"]).items():
            summary.rows_flagged += count
            summary.problems[reason] = summary.problems.get(reason, 0) + count
    return summary
