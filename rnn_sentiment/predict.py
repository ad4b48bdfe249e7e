"""Load a model and score texts in length-sorted batches, returning results in input order.

This module never imports ``datasets``: scoring a review should cost little more than importing
torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnn_sentiment.batching import collate, inference_batches
from rnn_sentiment.checkpoint import MANIFEST_FILE, METRICS_FILE, LoadedRun, load_run
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.model import SentimentRNN
from rnn_sentiment.tokenizer import encode

if TYPE_CHECKING:
    from rnn_sentiment.explain import Explanation


@dataclass
class Prediction:
    """One scored review."""

    text: str
    label: str
    score: float
    probabilities: dict[str, float]


def predict_proba_ids(
    model: SentimentRNN,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities [n, labels] for token id sequences, in their input order."""
    model.eval()
    lengths = [len(s) for s in sequences]
    out = np.zeros((len(sequences), model.classifier.out_features), dtype=np.float32)
    with torch.inference_mode():
        for batch in inference_batches(lengths, batch_size):
            tokens, batch_lengths = collate([sequences[i] for i in batch])
            logits = model(tokens.to(device), batch_lengths)
            out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


class Predictor:
    """A loaded model that turns review texts into labels and probabilities."""

    def __init__(self, run: LoadedRun, batch_size: int = 256) -> None:
        self.run = run
        self.batch_size = batch_size
        self.label_names = run.label_names
        self.device = next(run.model.parameters()).device

    @classmethod
    def from_dir(cls, run_dir: str | Path, batch_size: int = 256) -> Predictor:
        """Load the run directory ``run_dir`` (verified against its manifest)."""
        return cls(load_run(run_dir), batch_size)

    @property
    def path(self) -> Path:
        """The run directory this predictor was loaded from."""
        return self.run.path

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [n, labels] for ``texts``, in input order."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        ids = encode(self.run.tokenizer, texts)
        return predict_proba_ids(self.run.model, ids, self.batch_size, self.device)

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
        from rnn_sentiment.explain import explain

        return explain(self.run, text)

    def _prediction(self, text: str, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        probabilities = {name: float(p) for name, p in zip(self.label_names, row, strict=True)}
        return Prediction(text, self.label_names[best], float(row[best]), probabilities)


def resolve_model_dir(model: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """The model to use: the one given, else the most recent complete run under ``runs_dir``."""
    if model is not None:
        return Path(model)
    root = Path(runs_dir)
    runs = [p for p in root.glob("*") if _is_complete(p)] if root.is_dir() else []
    if not runs:
        raise CheckpointError(
            f"no trained model under {root}/; train one with 'rnn-sentiment train' "
            "or pass --model RUN_DIR"
        )
    return max(runs, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime)


def _is_complete(run_dir: Path) -> bool:
    """A finished run: training that is still going or was interrupted does not count."""
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (run_dir / MANIFEST_FILE).is_file() and metrics.get("status") == "complete"
