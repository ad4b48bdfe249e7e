"""Load a model and score texts in length-sorted batches, returning results in input order.

This module never imports ``datasets``: scoring a review should cost little more than importing
torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from rnn_sentiment.checkpoint import LoadedRun, load_run, read_metrics
from rnn_sentiment.data.batching import predict_proba_ids
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.engine import Dtype, Quantize, choose_engine
from rnn_sentiment.runfiles import MANIFEST_FILE
from rnn_sentiment.text import Windows

LongReviews = Literal["truncate", "window"]
BUNDLED_MODEL_DIR = Path(__file__).parents[1] / "assets" / "bundled"

if TYPE_CHECKING:
    from rnn_sentiment.inference.explain import Explanation


@dataclass
class Prediction:
    """One scored review."""

    text: str
    label: str
    score: float
    probabilities: dict[str, float]


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
    def path(self) -> Path:
        """The run directory this predictor was loaded from."""
        return self.run.path

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
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        pipeline = self.run.pipeline
        if long_reviews == "truncate":
            return self._probabilities(pipeline.encode(texts))
        size = self.run.config.tokenizer.max_length
        windows = pipeline.encode_windows(texts, size, window_stride or max(size // 2, 1))
        return self._mean_by_review(windows)

    def _probabilities(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        return predict_proba_ids(self.model, ids, self.batch_size, self.device)

    def _mean_by_review(self, windows: Windows) -> np.ndarray:
        probs = self._probabilities(windows.ids)
        sums = np.zeros((windows.count, probs.shape[1]), dtype=np.float64)
        np.add.at(sums, windows.owner, probs)
        counts = np.bincount(windows.owner, minlength=windows.count)[:, None]
        return (sums / counts).astype(np.float32)

    def predict(
        self,
        texts: Sequence[str],
        long_reviews: LongReviews = "truncate",
        window_stride: int | None = None,
    ) -> list[Prediction]:
        """Label, score and per-class probabilities for each text (``long_reviews``: as in
        :meth:`score`)."""
        probs = self.score(texts, long_reviews, window_stride)
        return [self._prediction(text, row) for text, row in zip(texts, probs, strict=True)]

    def iter_predict(self, texts: Iterable[str], chunk_size: int = 4096) -> Iterator[Prediction]:
        """Score a stream of texts chunk by chunk, so memory stays flat for any input size."""
        iterator = iter(texts)
        while chunk := list(islice(iterator, chunk_size)):
            yield from self.predict(chunk)

    def explain(self, text: str) -> Explanation:
        """Per word: the running sentiment and its occlusion attribution (see ``explain.py``)."""
        from rnn_sentiment.inference.explain import explain

        return explain(self.run, text)

    def _prediction(self, text: str, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        probabilities = {name: float(p) for name, p in zip(self.label_names, row, strict=True)}
        return Prediction(text, self.label_names[best], float(row[best]), probabilities)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for PyTorch (None: leave PyTorch's default, every core)."""
    if threads is not None:
        torch.set_num_threads(threads)


LATEST = "latest"
MODEL_ENV = "RNN_SENTIMENT_MODEL"


def resolve_model_dir(model: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """The model to use: the one given, else the one named by ``$RNN_SENTIMENT_MODEL``, else the
    bundled model shipped with the package.

    Training a run never changes the default by itself (a demo run would silently replace a good
    model); ``latest`` names the newest complete run under ``runs_dir``.
    """
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    if chosen is None:
        if (BUNDLED_MODEL_DIR / MANIFEST_FILE).is_file():
            return BUNDLED_MODEL_DIR
        raise CheckpointError(
            "no bundled model in this installation; pass --model RUN_DIR (or set "
            f"{MODEL_ENV}=RUN_DIR), or train one with 'rnn-sentiment train'"
        )
    if str(chosen) == LATEST and not Path(chosen).exists():
        return _newest_run(Path(runs_dir))
    return Path(chosen)


def _newest_run(root: Path) -> Path:
    runs = [p for p in root.glob("*") if _is_complete(p)] if root.is_dir() else []
    if not runs:
        raise CheckpointError(
            f"'{LATEST}' names the newest finished run under {root}/, and there is none; "
            "train one with 'rnn-sentiment train'"
        )
    return max(runs, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime)


def describe_model_dir(model_dir: Path, given: str | Path | None = None) -> str | None:
    """Which model scores, for stderr, unless the user named it (``given``) on the command line."""
    if given is not None and Path(given) == model_dir:
        return None
    if model_dir == BUNDLED_MODEL_DIR:
        return "model: the bundled model (a bidirectional GRU trained on IMDB + SST-2); " + (
            "yours: --model RUN_DIR"
        )
    if given is None:
        return f"model: {model_dir} (from {MODEL_ENV})"
    return f"model: {model_dir} (the newest finished run: '{LATEST}')"


def _is_complete(run_dir: Path) -> bool:
    """A finished run: training that is still going or was interrupted does not count.

    Its metrics are read as any run file is (checked against the manifest, no links, a size
    cap), so a planted ``metrics.json -> /dev/zero`` cannot hang picking the default model.
    """
    try:
        return read_metrics(run_dir).get("status") == "complete"
    except CheckpointError:
        return False
