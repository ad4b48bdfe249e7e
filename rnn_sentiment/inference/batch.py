"""The engine-neutral batch scorer: a model directory applied to in-memory batches of rows.

A distributed engine (Ray Data, Spark, Dask, a process pool) hands :class:`BatchScorer` a batch,
a pyarrow ``Table`` or ``RecordBatch`` or a pandas ``DataFrame`` with a review column, and gets the
same batch back (same kind, same rows, same order) with ``label``, ``score``, ``p_<label>`` and
``error`` columns added. The rows are what ``predict --input FILE.parquet --output OUT.parquet``
writes for the same rows scored as one chunk: the same functions read the batch (as the Parquet
reader reads a record batch), flag bad rows, score the reviews through the model's one text
pipeline and round the probabilities (:func:`rnn_sentiment.inference.scoring.score_rows`). The
probabilities of a row depend on the batch it is scored in only in the sixth decimal (a chunk's
batches are sorted by length), as they do on ``--chunk-size``.

A pandas batch is converted to Arrow first (``pa.Table.from_pandas``, so None and NaN are null,
as in a Parquet file written from that frame) and back (``Table.to_pandas``); a frame Arrow cannot
hold (a lone surrogate, an object column of mixed types) is a :class:`DataError`.

The scorer is picklable and loads nothing until it scores (or is asked for its labels), so an
engine ships it to its workers first; there the model loads once per process, whatever the number
of copies of the scorer a process receives (Spark deserialises its function once per task). It
imports no engine.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rnn_sentiment.config import check_engine
from rnn_sentiment.data.readers import MAX_FIELD_CHARS, Chunk, arrow_chunk
from rnn_sentiment.errors import DataError, first_line
from rnn_sentiment.inference.models import load_predictor, resolve_model_dir
from rnn_sentiment.inference.scoring import (
    ScoredChunk,
    Scorer,
    ScoringOptions,
    ScoringPlan,
    parquet_schema,
    plan_scoring,
    score_rows,
    scored_table,
)

if TYPE_CHECKING:
    import pyarrow as pa

# The models loaded in this process, by what they were loaded with: every copy of a scorer that
# an engine deserialises in a worker process scores with the one model loaded there.
_LOADED: dict[tuple[Any, ...], Scorer] = {}


class BatchScorer:
    """Score batches of rows with a model directory, exactly as ``predict --input`` does.

    Args:
        model: A run directory or an exported one (``rnn-sentiment export``), or ``latest``,
            made absolute here (an engine's workers may run in other folders); None: as
            ``predict`` without ``--model`` ($RNN_SENTIMENT_MODEL, else the bundled model),
            decided where the model loads (each machine has its own bundled copy).
        text_column: The review column; default: text, review, sentence, content or body.
        keep_columns: Input columns in the output: 'all', 'none' or a comma-separated list.
        long_reviews: 'truncate' at the trained length, or 'window' (overlapping, averaged).
        window_stride: Tokens between windows (default: half the trained length).
        max_review_chars: The longest review (or other text field) scored; a longer one is
            null and flags its row.
        threads: CPU threads of the model (None: every core); 1 when an engine runs one scorer
            per core.
        batch_size: Reviews per model call (default: 256 on PyTorch, 16 on onnxruntime).
        quantize: 'int8' for a run directory on PyTorch.
        dtype: 'fp32' or 'bf16' for a run directory on PyTorch.

    Example (a Spark or Ray worker does the same with each batch)::

        scorer = BatchScorer("runs/imdb-gru", threads=1)
        scored = scorer(pyarrow.table({"id": [1, 2], "text": ["not good", "a joy"]}))
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        text_column: str | None = None,
        keep_columns: str = "all",
        long_reviews: Literal["truncate", "window"] = "truncate",
        window_stride: int | None = None,
        max_review_chars: int = MAX_FIELD_CHARS,
        threads: int | None = None,
        batch_size: int | None = None,
        quantize: Literal["int8"] | None = None,
        dtype: Literal["fp32", "bf16"] = "fp32",
    ) -> None:
        check_engine(batch_size, quantize, dtype, threads)  # here, not at the first batch
        self.model = None if model is None else resolve_model_dir(model).absolute()
        self.options = ScoringOptions(
            text_column=text_column,
            keep_columns=keep_columns,
            long_reviews=long_reviews,
            window_stride=window_stride,
            max_review_chars=max_review_chars,
        )
        self.threads = threads
        self.batch_size = batch_size
        self.quantize = quantize
        self.dtype = dtype
        self._predictor: Scorer | None = None

    @classmethod
    def from_options(
        cls, model: str | Path | None, options: ScoringOptions, **load: Any
    ) -> BatchScorer:
        """A scorer with the scoring settings of ``options`` (a file run's), ``load``: threads,
        batch_size, quantize, dtype."""
        return cls(
            model,
            text_column=options.text_column,
            keep_columns=options.keep_columns,
            long_reviews=options.long_reviews,
            window_stride=options.window_stride,
            max_review_chars=options.max_review_chars,
            **load,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_predictor": None}  # ship the settings, never the model

    def with_threads(self, threads: int | None) -> BatchScorer:
        """The same scorer with another number of threads (nothing loaded)."""
        other = copy.copy(self)
        other.threads, other._predictor = threads, None
        return other

    @property
    def predictor(self) -> Scorer:
        """The loaded model: loaded on first use, once per process for the same settings."""
        if self._predictor is None:
            model_dir = resolve_model_dir(self.model)
            key = (str(model_dir), self.batch_size, self.quantize, self.dtype, self.threads)
            if key not in _LOADED:
                _LOADED[key] = load_predictor(
                    model_dir, self.batch_size, self.quantize, self.dtype, self.threads
                )
            self._predictor = _LOADED[key]
        return self._predictor

    @property
    def label_names(self) -> list[str]:
        """The model's labels, in the order of its ``p_*`` columns (loads the model)."""
        return list(self.predictor.label_names)

    def __call__(self, batch: Any) -> Any:
        """``batch`` (pyarrow Table or RecordBatch, or pandas DataFrame) with its scores: a
        pyarrow Table, or a pandas DataFrame for a DataFrame.

        Raises:
            DataError: no review column (or a kept column missing), or a DataFrame that Arrow
                cannot hold.
        """
        if _is_arrow(batch):
            return self._score_arrow(batch)
        return self._score_arrow(_from_pandas(batch)).to_pandas()

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema of the scored batch of a batch with ``schema`` (loads the model for its
        labels): what Spark's ``mapInPandas`` must be told, say."""
        return parquet_schema(self.label_names, self.plan(schema))

    def plan(self, schema: pa.Schema) -> ScoringPlan:
        """How a batch with ``schema`` is scored: its review column, the columns kept and
        their types (loads the model for its labels)."""
        if not (hasattr(schema, "names") and hasattr(schema, "field")):  # pyarrow: lazily
            raise DataError(f"schema must be a pyarrow Schema (table.schema), not {schema!r}")
        names = list(schema.names)
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # pyarrow allows it; which one is the review would be a guess
            raise DataError(f"the batch has more than one column named {', '.join(twice)}; "
                            "rename them")  # fmt: skip
        types = {name: schema.field(name).type for name in names}

        def schema_of(wanted: Any) -> dict[str, Any]:
            return {name: types[name] for name in wanted}

        return plan_scoring(self.label_names, names, schema_of, "batch", "parquet", self.options)

    def score_chunk(self, chunk: Chunk, plan: ScoringPlan) -> tuple[pa.Table, ScoredChunk]:
        """The rows of one chunk as a reader reads them (a Ray worker's file chunks) and the
        scoring of them (its flags and counts)."""
        scored = score_rows(self.predictor, chunk, plan, self.options)
        return scored_table(self.label_names, scored, plan), scored

    def _score_arrow(self, batch: Any) -> pa.Table:
        plan = self.plan(batch.schema)
        chunk = arrow_chunk(batch.select(plan.read), self.options.max_review_chars)
        return self.score_chunk(chunk, plan)[0]


def _is_arrow(batch: Any) -> bool:
    import pyarrow as pa

    return isinstance(batch, (pa.Table, pa.RecordBatch))


def _from_pandas(frame: Any) -> pa.Table:
    import pyarrow as pa

    if not hasattr(frame, "iloc"):
        raise DataError(
            f"a batch is a pyarrow Table or RecordBatch or a pandas DataFrame, not "
            f"{type(frame).__name__}"
        )
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, UnicodeError, TypeError, ValueError) as exc:
        raise DataError(f"cannot convert the DataFrame to Arrow: {first_line(exc)}") from None
