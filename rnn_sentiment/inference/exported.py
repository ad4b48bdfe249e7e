"""Score reviews with an exported model directory: onnxruntime, the same text pipeline, no torch.

An exported directory (written by :func:`rnn_sentiment.inference.export.export_model`) holds::

    model.onnx      the network (inputs and outputs below)
    tokenizer.json  the run's tokenizer, truncation to the trained length included
    labels.json     label names, in logit order
    export.json     text preparation, the model's shape, precision and provenance
    metrics.json    the run's metrics
    model_card.md   a short card for people
    manifest.json   SHA-256 of every file above (a run directory's format)

``model.onnx`` takes ``ids``, int64 [batch, time] token ids right-padded with 0, and ``lengths``,
int64 [batch] (each at least 1), and returns ``logits`` and ``probabilities`` (their softmax),
float32 [batch, labels]. Both dimensions are free; padding never changes a probability.

A review becomes ids through :class:`~rnn_sentiment.text.TextPipeline`, built from the directory's
tokenizer and ``export.json``'s ``text.clean_html``, exactly as the run directory builds it, so an
exported model scores every review as ``predict`` does with the run (to 1e-4 in fp32).

Loading trusts nothing in the directory (see :mod:`rnn_sentiment.runfiles`): every file read must
be listed in the manifest with its SHA-256 and is read once, from the directory itself (a link,
FIFO or device is refused), within its cap; ``model.onnx`` at most :data:`MAX_ONNX_BYTES`. The
checked bytes are what onnxruntime parses: a model loaded from bytes has no folder to resolve
external data against, and onnxruntime refuses it rather than read another file. Inputs and
outputs must be the ones above, and one probe (the largest token id) must give finite
probabilities. Every problem is a one-line :class:`~rnn_sentiment.errors.CheckpointError` that
never quotes the file. A hostile graph that passes these checks can still waste CPU time when
run, as any model file can.

This module imports neither torch nor ``datasets``: a cold ``predict`` is mostly onnxruntime's
import and the session's creation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rnn_sentiment.config import ModelConfig, TokenizerConfig, check_engine, check_threads
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.results import Explanation, Prediction, explain_with, prediction
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.metrics import with_temperature
from rnn_sentiment.runfiles import (
    CALIBRATION_FILE,
    LABELS_FILE,
    MAX_FILE_BYTES,
    MAX_PARAMETERS,
    METRICS_FILE,
    TOKENIZER_FILE,
    RunFiles,
    parse_labels,
    read_temperature,
)
from rnn_sentiment.text import (
    LongReviews,
    TextPipeline,
    review_list,
    review_stream,
    window_stride_of,
)
from rnn_sentiment.tokenizer import PAD_ID, parse_tokenizer

ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"
CARD_FILE = "model_card.md"
EXPORTED_FILES = (
    ONNX_FILE, TOKENIZER_FILE, LABELS_FILE, EXPORT_FILE, METRICS_FILE, CARD_FILE, CALIBRATION_FILE
)  # fmt: skip
INPUTS = ("ids", "lengths")
OUTPUTS = ("logits", "probabilities")
# The largest model a run directory may hold, as float32, plus room for its graph.
MAX_ONNX_BYTES = 4 * MAX_PARAMETERS + 64 * 2**20
MAX_BYTES = {
    **MAX_FILE_BYTES,
    ONNX_FILE: MAX_ONNX_BYTES,
    EXPORT_FILE: 64 * 2**10,  # about 2 KiB
    CARD_FILE: 2**20,
}

Precision = Literal["fp32", "int8"]
# Reviews per onnxruntime run. Its recurrent operators are fastest on small batches: on one
# thread, 2,000 IMDB test reviews with the bundled GRU scored at 763/s in batches of 16 against
# 573/s in batches of 256 (the PyTorch Predictor's default), and 8 was within noise of 16.
BATCH_SIZE = 16
# On one thread (``serve``'s default) smaller still: the same 1,000 IMDB test reviews in calls
# of 32, as a server's micro-batches come, scored at 1,144-1,224/s in batches of 4 against
# 927-983/s in batches of 16; in one call of 1,000, 1,323-1,382/s against 1,173-1,402/s (3
# alternating rounds, quiet 2-core machine). With more threads 16 stays faster (1,766-1,827/s
# against 721-1,606/s in one call), as each run's matrices are split between them.
ONE_THREAD_BATCH_SIZE = 4


def default_batch_size(threads: int | None) -> int:
    """Reviews per onnxruntime run when none is asked for, for ``threads`` intra-op threads."""
    return ONE_THREAD_BATCH_SIZE if threads == 1 else BATCH_SIZE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class TextSettings(_Strict):
    """How a raw review becomes token ids: the run's settings (``data.clean_html`` and its
    tokenizer section; the tokenizer itself is ``tokenizer.json``)."""

    clean_html: bool
    tokenizer: TokenizerConfig


class OnnxSettings(_Strict):
    """What ``model.onnx`` is."""

    opset: int
    precision: Precision
    int8_parts: list[str] = Field(default_factory=list)
    """What runs in int8: "embedding table", "classifier", "LSTM layers" (empty in fp32)."""
    max_abs_diff: float
    """Largest |probability difference| from the PyTorch model on the export's probe batch."""
    notes: list[str] = Field(default_factory=list)
    """What a user should know, such as the layers int8 leaves in fp32."""


class Source(_Strict):
    """Where the model came from."""

    run: str
    manifest_sha256: str
    rnn_sentiment_version: str


class ExportInfo(_Strict):
    """``export.json``: everything but the network, tokenizer and labels that the predictor and
    a person need."""

    format: Literal["rnn-sentiment-onnx"] = "rnn-sentiment-onnx"
    format_version: Literal[1] = 1
    text: TextSettings
    model: ModelConfig
    vocab_size: int = Field(ge=2)
    onnx: OnnxSettings
    source: Source


def is_exported_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``model.onnx`` (an exported model, not a run
    directory); nothing is read and no link in it is followed."""
    return os.path.isdir(path) and os.path.lexists(Path(path) / ONNX_FILE)


class ExportedPredictor:
    """An exported model that turns review texts into labels and probabilities, without torch.

    The same public surface as :class:`~rnn_sentiment.inference.predictor.Predictor` where it
    makes sense: ``predict``, ``predict_proba``, ``score`` (``long_reviews="window"`` included),
    ``iter_predict``, ``explain`` (occlusion: each word left out and the rest re-scored by the
    same session), ``path``, ``label_names``, ``quantize``, ``dtype``, ``notes`` (always empty:
    what an int8 export leaves in fp32 is in ``info.onnx.notes``, said once, by ``export``) and
    ``manifest_sha256``. ``info`` is ``export.json``; ``metadata()`` adds the card and metrics.
    """

    def __init__(
        self,
        path: Path,
        info: ExportInfo,
        pipeline: TextPipeline,
        label_names: list[str],
        session: Any,
        manifest_sha256: str,
        batch_size: int = BATCH_SIZE,
        temperature: float = 1.0,
    ) -> None:
        self.path = path
        self.temperature = temperature  # the run's calibration, applied to every probability
        self.info = info
        self.pipeline = pipeline
        self.label_names = label_names
        self.session = session
        self.manifest_sha256 = manifest_sha256
        self.batch_size = batch_size
        self.quantize: Literal["int8"] | None = "int8" if info.onnx.precision == "int8" else None
        self.dtype = "fp32"
        self.notes: list[str] = []  # what was asked and not done: nothing (export told it all)

    @classmethod
    def from_dir(
        cls, path: str | Path, batch_size: int | None = None, threads: int | None = None
    ) -> ExportedPredictor:
        """Load and check an exported directory; ``batch_size``: reviews per onnxruntime run
        (None: :func:`default_batch_size`); ``threads``: its intra-op threads (None: one per
        core)."""
        return load_exported(Path(path), batch_size, threads)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, labels] for ``texts``, in input order."""
        return self.score(texts)

    def score(
        self,
        texts: Sequence[str],
        long_reviews: LongReviews = "truncate",
        window_stride: int | None = None,
    ) -> np.ndarray:
        """Probabilities [n, labels]; ``window``: long reviews as overlapping windows of the
        trained length, ``window_stride`` tokens apart (default half of it), averaged."""
        size = self.info.text.tokenizer.max_length
        stride = window_stride_of(size, window_stride, long_reviews)
        texts = review_list(texts)
        if not texts:  # the stride is checked above, with no texts too
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        if stride is None:
            return self.score_ids(self.pipeline.encode(texts))
        windows = self.pipeline.encode_windows(texts, size, stride)
        return windows.mean(self.score_ids(windows.ids))

    def score_ids(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Probabilities [n, labels] for token id sequences (each at least one id), in input
        order; scored in length-sorted batches, each padded to its longest sequence."""
        out = np.zeros((len(sequences), len(self.label_names)), dtype=np.float32)
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            ids = np.full((len(rows), int(lengths[rows[0]])), PAD_ID, dtype=np.int64)
            for row, index in enumerate(rows.tolist()):
                ids[row, : lengths[index]] = sequences[index]
            feed = {"ids": ids, "lengths": lengths[rows]}
            out[rows] = self.session.run(["probabilities"], feed)[0]
        return with_temperature(out, self.temperature)

    def predict(
        self,
        texts: Sequence[str],
        long_reviews: LongReviews = "truncate",
        window_stride: int | None = None,
    ) -> list[Prediction]:
        """Label, score and per-class probabilities for each text (``long_reviews``: as in
        :meth:`score`)."""
        texts = review_list(texts)  # a generator is read once, for both
        probs = self.score(texts, long_reviews, window_stride)
        return [prediction(t, row, self.label_names) for t, row in zip(texts, probs, strict=True)]

    def iter_predict(self, texts: Iterable[str], chunk_size: int = 4096) -> Iterator[Prediction]:
        """Score a stream of texts chunk by chunk, so memory stays flat for any input size."""
        iterator = iter(review_stream(texts, chunk_size))
        while chunk := list(islice(iterator, chunk_size)):
            yield from self.predict(chunk)

    def explain(self, text: str, max_words: int | None = None) -> Explanation:
        """Per word: the running sentiment and its occlusion attribution (see ``results.py``);
        a review of more than ``max_words`` words is refused before it is scored."""
        return explain_with(self.pipeline, self.label_names, self.score_ids, text, max_words)

    def metadata(self) -> dict[str, Any]:
        """The model card, metrics, labels and ``export.json``, each file checked as at load."""
        with RunFiles(self.path, (CARD_FILE, METRICS_FILE), EXPORTED_FILES, MAX_BYTES) as files:
            card = files.read(CARD_FILE).decode("utf-8", "replace")
            metrics = _json_object(files.read(METRICS_FILE), self.path / METRICS_FILE)
        return {
            "labels": self.label_names,
            "model_card": card,
            "metrics": metrics,
            "export": self.info.model_dump(),
        }


def load_exported(
    path: Path, batch_size: int | None = None, threads: int | None = None
) -> ExportedPredictor:
    """Read and check an exported directory (see the module docstring) into a predictor."""
    check_engine(batch_size, threads=threads)
    if os.path.isdir(path) and not is_exported_dir(path):
        raise CheckpointError(
            f"{path} is not an exported model (it has no {ONNX_FILE}); make one with "
            "'rnn-sentiment export RUN_DIR --output DIR'"
        )
    needed = (ONNX_FILE, TOKENIZER_FILE, LABELS_FILE, EXPORT_FILE)
    with RunFiles(path, needed, EXPORTED_FILES, MAX_BYTES) as files:
        info = parse_export_info(files.read(EXPORT_FILE), path / EXPORT_FILE)
        label_names = parse_labels(files.read(LABELS_FILE), path / LABELS_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)
        network = files.read(ONNX_FILE)
        manifest_sha256 = files.manifest_sha256
        temperature = read_temperature(files, path)
    _check_text_settings(info, tokenizer.truncation, tokenizer.get_vocab_size(), path)
    session = onnx_session(network, path / ONNX_FILE, threads)
    del network  # onnxruntime holds its own copy
    pipeline = TextPipeline(tokenizer, info.text.clean_html)
    predictor = ExportedPredictor(
        path, info, pipeline, label_names, session, manifest_sha256,
        batch_size or default_batch_size(threads), temperature,
    )  # fmt: skip
    _probe(predictor, path / ONNX_FILE)
    return predictor


def parse_export_info(data: bytes, where: Path) -> ExportInfo:
    """``export.json``, checked; a problem is counted, never quoted."""
    try:
        return ExportInfo.model_validate(_json_object(data, where))
    except ValidationError as exc:
        raise CheckpointError(
            f"{where} is not an export description this version can use "
            f"({exc.error_count()} problem(s)); export the run again"
        ) from None


def _json_object(data: bytes, where: Path) -> dict[str, Any]:
    value = parse_json(data, where)
    if not isinstance(value, dict):
        raise CheckpointError(f"{where} does not hold a JSON object")
    return value


def _check_text_settings(
    info: ExportInfo, truncation: dict[str, Any] | None, vocab_size: int, path: Path
) -> None:
    """The tokenizer must truncate as ``export.json`` says (windows use that length too) and
    have the vocabulary the network was exported with."""
    settings = info.text.tokenizer
    expected = (settings.max_length, settings.truncation_side)
    if truncation is None or (truncation["max_length"], truncation["direction"]) != expected:
        raise CheckpointError(
            f"{path / TOKENIZER_FILE} does not truncate as {EXPORT_FILE} says; export the run again"
        )
    if vocab_size != info.vocab_size:
        raise CheckpointError(
            f"{path / TOKENIZER_FILE} does not have the vocabulary {ONNX_FILE} was exported with"
        )


def onnx_session(network: bytes, where: Path, threads: int | None) -> Any:
    """An onnxruntime session on ``network`` (checked bytes, never a path): CPU only, quiet,
    with the expected inputs and outputs."""
    check_threads(threads)
    ort = _onnxruntime()
    options = ort.SessionOptions()
    # Fatal only: its warnings and errors would reach stderr past the console (an error is
    # raised as an exception anyway)
    options.log_severity_level = 4
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
    try:
        session = ort.InferenceSession(network, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail, InvalidGraph, ... types
        raise CheckpointError(
            f"{where} is not a model onnxruntime can run ({type(exc).__name__}); it may be "
            "corrupted, use external data, or come from a newer version"
        ) from None
    inputs = {(i.name, i.type, len(i.shape)) for i in session.get_inputs()}
    outputs = {(o.name, o.type, len(o.shape)) for o in session.get_outputs()}
    expected_in = {("ids", "tensor(int64)", 2), ("lengths", "tensor(int64)", 1)}
    expected_out = {(name, "tensor(float)", 2) for name in OUTPUTS}
    if inputs != expected_in or not expected_out <= outputs:
        raise CheckpointError(
            f"{where} does not take ids and lengths and give logits and probabilities; "
            "export the run again"
        )
    return session


def _onnxruntime() -> Any:
    """The onnxruntime module, imported on first use (importing this module stays cheap)."""
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(
            "an exported model runs with onnxruntime, which is not installed: "
            "pip install 'rnn-sentiment[onnx]'"
        ) from None
    return onnxruntime


def _probe(predictor: ExportedPredictor, where: Path) -> None:
    """One review of one token, the largest id: a network whose embedding is smaller than the
    tokenizer's vocabulary, or whose output has another number of labels, fails here, once."""
    try:
        probs = predictor.score_ids([[predictor.info.vocab_size - 1]])
    except Exception as exc:
        raise CheckpointError(
            f"{where} failed on a probe review ({type(exc).__name__}); it does not fit its "
            "tokenizer or labels"
        ) from None
    if not np.isfinite(probs).all():
        raise CheckpointError(f"{where} gives no probability (NaN) on a probe review")
