"""Load a model and score texts in length-sorted batches, returning results in input order.

This module never imports ``datasets``: scoring a review should cost little more than importing
torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnn_sentiment.checkpoint import LoadedRun, load_run
from rnn_sentiment.config import check_engine, check_threads
from rnn_sentiment.data.batching import predict_proba_ids
from rnn_sentiment.inference.engine import Dtype, Quantize, choose_engine
from rnn_sentiment.inference.results import Prediction, prediction
from rnn_sentiment.metrics import with_temperature
from rnn_sentiment.text import (
    LongReviews,
    TextPipeline,
    Windows,
    review_list,
    review_stream,
    window_stride_of,
)

if TYPE_CHECKING:
    from rnn_sentiment.inference.explain import Explanation


class Predictor:
    """A loaded model that turns review texts into labels and probabilities."""

    def __init__(
        self,
        run: LoadedRun,
        batch_size: int = 256,
        quantize: Quantize | None = None,
        dtype: Dtype = "fp32",
        stepwise: bool = True,
    ) -> None:
        check_engine(batch_size, quantize, dtype)
        self.run = run
        self.batch_size = batch_size
        self.label_names = run.label_names
        self.device = next(run.model.parameters()).device
        self.quantize = quantize
        self.dtype = dtype
        self.engine = choose_engine(run.model, quantize, dtype, stepwise)
        self.model, self.notes = self.engine.model, self.engine.notes

    @classmethod
    def from_dir(
        cls,
        run_dir: str | Path,
        batch_size: int = 256,
        quantize: Quantize | None = None,
        dtype: Dtype = "fp32",
        stepwise: bool = True,
    ) -> Predictor:
        """Load the run directory ``run_dir`` (verified against its manifest); ``quantize``,
        ``dtype`` and ``stepwise``: see :mod:`rnn_sentiment.inference.engine`."""
        return cls(load_run(run_dir), batch_size, quantize, dtype, stepwise)

    @property
    def manifest_sha256(self) -> str:
        """Identifies exactly the files this model was loaded from (batch scoring's resume)."""
        return self.run.manifest_sha256

    @property
    def path(self) -> Path:
        """The run directory this predictor was loaded from."""
        return self.run.path

    @property
    def pipeline(self) -> TextPipeline:
        """The model directory's text pipeline: raw review to token ids, as everywhere."""
        return self.run.pipeline

    @property
    def temperature(self) -> float:
        """The run's calibration, applied to every probability (as an exported model's is)."""
        return self.run.temperature

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, labels] for ``texts``, in input order."""
        return self.score(texts)

    def score(
        self,
        texts: Sequence[str],
        long_reviews: LongReviews = "truncate",
        window_stride: int | None = None,
    ) -> np.ndarray:
        """Probabilities [n, labels]; ``window``: long reviews as overlapping windows, averaged.

        Every text goes through the model's :class:`~rnn_sentiment.text.TextPipeline`.
        Truncation keeps the side of a long review the model was trained on; windows of the
        trained max length, ``window_stride`` tokens apart (default half of it), cover all of it.
        """
        size = self.run.config.tokenizer.max_length
        stride = window_stride_of(size, window_stride, long_reviews)
        texts = review_list(texts)
        if not texts:  # the stride is checked above, with no texts too
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        pipeline = self.run.pipeline
        if stride is None:
            return self._probabilities(pipeline.encode(texts))
        windows = pipeline.encode_windows(texts, size, stride)
        return self._mean_by_review(windows)

    def _probabilities(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        # Every scoring path comes through here: the run's calibration applies to all of them.
        probs = predict_proba_ids(self.model, ids, self.batch_size, self.device)
        return with_temperature(probs, self.run.temperature)

    def _mean_by_review(self, windows: Windows) -> np.ndarray:
        return windows.mean(self._probabilities(windows.ids))

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
        """Per word: the running sentiment and its occlusion attribution (see ``explain.py``);
        a review of more than ``max_words`` words is refused before it is scored."""
        from rnn_sentiment.inference.explain import explain

        return explain(self.run, text, max_words)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for PyTorch (None: leave PyTorch's default, every core)."""
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)
