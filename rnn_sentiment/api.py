"""Library functions that join layers: training that reports test metrics as ``evaluate`` does.

``training`` never imports ``inference`` (the layers stay independent); this module, above both,
hands training the scorer that ``predict`` and ``evaluate`` use for the final test pass.
"""

from __future__ import annotations

from pathlib import Path

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.config import Config
from rnn_sentiment.inference.evaluate import score_texts
from rnn_sentiment.training.loop import TrainResult
from rnn_sentiment.training.loop import train as train_loop


def train(
    config: Config | None,
    callback: TrainCallback | None = None,
    resume: str | Path | None = None,
    force: bool = False,
) -> TrainResult:
    """Train a classifier as ``config`` says and write a self-contained run directory.

    Its test metrics (when the data has a test split) come from the same scorer as ``evaluate``.

    Args:
        config: the run's settings; None with ``resume`` takes the run's saved config.
        callback: receives progress; None trains silently.
        resume: a run directory to continue from its last saved training state.
        force: resume even when ``config`` differs from the run's saved config.
    """
    return train_loop(config, callback, resume, force, score_test=score_texts)
