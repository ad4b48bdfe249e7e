"""Progress callbacks: what training, comparisons and batch scoring report as they go.

The library never prints; it calls these no-op methods, the CLI's console subclasses them to draw
progress, and a library user may subclass them too. They live here, apart from the code that
calls them, so that the console (and every one-line error the CLI prints) does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

_Callback = TypeVar("_Callback", "TrainCallback", "ScoringCallback")


def checked_callback(callback: object) -> TrainCallback:
    """``callback`` as ``train`` and ``pretrain`` take it: None (silent) or a TrainCallback
    instance, refused (ConfigError) before any run directory is made (a class, or a str,
    failed later)."""
    from rnn_sentiment.errors import ConfigError

    return _checked(callback, TrainCallback, lambda text: ConfigError([text]))


def checked_scoring_callback(callback: object) -> ScoringCallback:
    """``callback`` as ``score_file``, ``evaluate`` and ``calibrate`` take it: None (silent) or
    a ScoringCallback instance, refused (DataError) before anything is read."""
    from rnn_sentiment.errors import DataError

    return _checked(callback, ScoringCallback, DataError)


def _checked(
    callback: object, kind: type[_Callback], error: Callable[[str], Exception]
) -> _Callback:
    """``callback``, or a silent ``kind()`` for None; ``error`` when it is no ``kind``."""
    if callback is None:
        return kind()
    if not isinstance(callback, kind):
        raise error(f"callback must be a {kind.__name__} instance, not {callback!r}")
    return callback


class TrainCallback:
    """Receives progress; the CLI renders it, library users may subclass it. No-ops by default."""

    def on_message(self, text: str) -> None:
        """A one-line status message (data loaded, tokenizer trained, ...)."""

    def on_train_start(self, model: nn.Module) -> None:
        """The model is built (and restored when resuming), on its device, about to train."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch of ``steps`` batches begins (``epoch`` counts from 1)."""

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        """A batch was trained; ``grad_norm`` is the gradient norm before clipping."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch ended; ``record`` holds its training and validation metrics."""

    def on_warning(self, text: str) -> None:
        """Something looks wrong but training goes on (for example the gradient exploded)."""
        self.on_message(f"warning: {text}")


class CompareCallback(TrainCallback):
    """Training progress, plus the start of each run of a comparison."""

    def on_run_start(self, index: int, total: int, cell: str, seed: int, hidden_size: int) -> None:
        """Run ``index`` (from 1) of ``total`` begins."""


class ScoringCallback:
    """Receives progress; the CLI's console draws it, a library user may subclass it."""

    def on_start(self, total_rows: int | None) -> None:
        """Scoring starts; ``total_rows`` when the input says it (Parquet, folders)."""

    def on_chunk(self, rows_done: int, fraction: float | None) -> None:
        """After each committed chunk: rows so far, and the share of the input read if known."""

    def on_message(self, text: str) -> None:
        """A one-line note (resuming, discarding a stale partial output, quantization)."""
