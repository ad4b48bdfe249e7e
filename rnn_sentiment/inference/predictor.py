"""Load a model and score texts in length-sorted batches, returning results in input order.

This module never imports ``datasets``: scoring a review should cost little more than importing
torch.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from rnn_sentiment.checkpoint import MANIFEST_FILE, METRICS_FILE, LoadedRun, load_run
from rnn_sentiment.data.batching import TokenIds, collate, inference_batches
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.model import SentimentRNN
from rnn_sentiment.tokenizer import configure_truncation, encode_arrays

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


def predict_proba_ids(
    model: nn.Module,
    sequences: Sequence[TokenIds],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities [n, labels] for token id sequences, in their input order."""
    model.eval()
    lengths = [len(s) for s in sequences]
    out: np.ndarray | None = None
    with torch.inference_mode():
        for batch in inference_batches(lengths, batch_size):
            tokens, batch_lengths = collate([sequences[i] for i in batch])
            logits = model(tokens.to(device), batch_lengths)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(sequences), probs.shape[1]), dtype=np.float32)
            out[batch] = probs
    return out if out is not None else np.zeros((0, 2), dtype=np.float32)


@dataclass
class Encoded:
    """Token ids of ``count`` texts: one sequence each, or windows with the text they belong to."""

    ids: list[np.ndarray]
    owner: np.ndarray | None
    count: int


Quantize = Literal["int8"]
Dtype = Literal["fp32", "bf16"]


def prepare_model(
    model: SentimentRNN,
    quantize: Quantize | None = None,
    dtype: Dtype = "fp32",
    stepwise: bool = True,
) -> tuple[nn.Module, list[str]]:
    """The model to run inference with, and notes on what could not be converted.

    On CPU, ``stepwise`` (the default) scores with
    :class:`~rnn_sentiment.inference.stepwise.StepwiseClassifier`: a first-layer lookup table and
    a step loop that skips finished reviews; its recurrent matrix product runs in fp32, bf16
    (``dtype``) or int8 (``quantize``), everything else in fp32.
    Otherwise PyTorch's own layers: ``int8`` is dynamic quantization of the LSTM, GRU and linear
    layers (PyTorch has no dynamic-quantized ``nn.RNN``) and ``bf16`` puts every weight and
    activation in bfloat16. bf16 is fast on CPUs with AVX512-BF16 or AMX, emulated elsewhere.
    """
    if quantize is not None and dtype != "fp32":
        raise CheckpointError("--quantize int8 and --dtype bf16 cannot be combined; pick one")
    if stepwise and next(model.parameters()).device.type == "cpu":
        return _stepwise(model, quantize or dtype)
    notes: list[str] = []
    if dtype == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval(), notes
    if quantize == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            from torch.ao.quantization import quantize_dynamic

            layers: set[type[nn.Module]] = {nn.LSTM, nn.GRU, nn.Linear}
            quantized = quantize_dynamic(copy.deepcopy(model), layers, dtype=torch.qint8)
        if model.cfg.cell == "rnn":
            notes.append("int8: nn.RNN has no dynamic-quantized kernel; its layers stay fp32")
        return quantized.eval(), notes
    return model, notes


def _stepwise(model: SentimentRNN, precision: str) -> tuple[nn.Module, list[str]]:
    from rnn_sentiment.inference.stepwise import StepwiseClassifier

    fast = StepwiseClassifier(model, precision)  # type: ignore[arg-type]
    notes = []
    if fast.recurrent_precision != precision:
        notes.append("int8: a ReLU RNN's states are unbounded; its recurrence stays fp32")
    return fast.eval(), notes


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
        self.model, self.notes = prepare_model(run.model, quantize, dtype, stepwise)
        self._window_tokenizer: Tokenizer | None = None

    @classmethod
    def from_dir(
        cls,
        run_dir: str | Path,
        batch_size: int = 256,
        quantize: Quantize | None = None,
        dtype: Dtype = "fp32",
        stepwise: bool = True,
    ) -> Predictor:
        """Load the run directory ``run_dir`` (verified against its manifest); ``stepwise``: see
        :func:`prepare_model`."""
        return cls(load_run(run_dir), batch_size, quantize, dtype, stepwise)

    @property
    def path(self) -> Path:
        """The run directory this predictor was loaded from."""
        return self.run.path

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, labels] for ``texts``, in input order."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        ids = encode_arrays(self.run.tokenizer, texts)
        return predict_proba_ids(self.model, ids, self.batch_size, self.device)

    def score(
        self,
        texts: Sequence[str],
        long_reviews: str = "truncate",
        window_stride: int | None = None,
    ) -> np.ndarray:
        """Probabilities [n, labels]; ``window``: long reviews as overlapping windows, averaged.

        Truncation keeps the side of a long review the model was trained on; windows of the
        trained max length, ``window_stride`` tokens apart (default half of it), cover all of it.
        """
        return self.score_encoded(self.encode(texts, long_reviews, window_stride))

    def encode(
        self,
        texts: Sequence[str],
        long_reviews: str = "truncate",
        window_stride: int | None = None,
    ) -> Encoded:
        """The token ids :meth:`score_encoded` scores: the first half of :meth:`score`."""
        if long_reviews == "truncate" or not texts:
            return Encoded(encode_arrays(self.run.tokenizer, texts), None, len(texts))
        max_length = self.run.config.tokenizer.max_length
        stride = window_stride or max(max_length // 2, 1)
        windows: list[np.ndarray] = []
        owner: list[int] = []
        for i, sequence in enumerate(encode_arrays(self._untruncated(), texts)):
            for start in window_starts(len(sequence), max_length, stride):
                windows.append(sequence[start : start + max_length])
                owner.append(i)
        return Encoded(windows, np.asarray(owner), len(texts))

    def score_encoded(self, encoded: Encoded) -> np.ndarray:
        """Probabilities [n, labels] for the texts of ``encoded``, in their order."""
        if not encoded.count:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        probs = predict_proba_ids(self.model, encoded.ids, self.batch_size, self.device)
        if encoded.owner is None:
            return probs
        sums = np.zeros((encoded.count, probs.shape[1]), dtype=np.float64)
        np.add.at(sums, encoded.owner, probs)
        counts = np.bincount(encoded.owner, minlength=encoded.count)[:, None]
        return (sums / counts).astype(np.float32)

    def _untruncated(self) -> Tokenizer:
        if self._window_tokenizer is None:
            tokenizer = Tokenizer.from_str(self.run.tokenizer.to_str())
            configure_truncation(tokenizer, None, "right")
            self._window_tokenizer = tokenizer
        return self._window_tokenizer

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Label, score and per-class probabilities for each text."""
        probs = self.predict_proba(texts)
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


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` tokens, ``stride`` apart, the last one ending at the
    end of the review; a review that fits is one window."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def resolve_model_dir(model: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """The model to use: the one given, else the newest complete run under ``runs_dir``, else
    the bundled model shipped with the package."""
    if model is not None:
        return Path(model)
    root = Path(runs_dir)
    runs = [p for p in root.glob("*") if _is_complete(p)] if root.is_dir() else []
    if runs:
        return max(runs, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime)
    if (BUNDLED_MODEL_DIR / MANIFEST_FILE).is_file():
        return BUNDLED_MODEL_DIR
    raise CheckpointError(
        f"no trained model under {root}/ and no bundled model in this installation; "
        "train one with 'rnn-sentiment train' or pass --model RUN_DIR"
    )


def describe_model_dir(model_dir: Path) -> str:
    """How to name ``model_dir`` on stderr: the bundled model is named as such."""
    if model_dir == BUNDLED_MODEL_DIR:
        return (
            "using the bundled model (trained on IMDB + SST-2 reviews; see 'Bundled model' "
            "in the README); train your own or name a run directory"
        )
    return f"using model {model_dir}"


def _is_complete(run_dir: Path) -> bool:
    """A finished run: training that is still going or was interrupted does not count."""
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (run_dir / MANIFEST_FILE).is_file() and metrics.get("status") == "complete"
