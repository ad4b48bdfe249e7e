"""rnn-sentiment: train, evaluate and use recurrent sentiment classifiers.

The public API, imported lazily so that ``import rnn_sentiment`` stays cheap::

    from rnn_sentiment import Config, load_config, train, load_model, evaluate

    result = train(load_config("configs/default.yaml", ["model.cell=gru"]))
    model = load_model(result.run_dir)
    model.predict(["This movie is not good"])[0].label   # 'negative'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "rnn_sentiment.config",
    "load_config": "rnn_sentiment.config",
    "train": "rnn_sentiment.train",
    "TrainCallback": "rnn_sentiment.train",
    "TrainResult": "rnn_sentiment.train",
    "evaluate": "rnn_sentiment.evaluate",
    "Predictor": "rnn_sentiment.predict",
    "Prediction": "rnn_sentiment.predict",
    "RnnSentimentError": "rnn_sentiment.errors",
    "ConfigError": "rnn_sentiment.errors",
    "DataError": "rnn_sentiment.errors",
    "CheckpointError": "rnn_sentiment.errors",
    "TrainingError": "rnn_sentiment.errors",
}
__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Prediction",
    "Predictor",
    "RnnSentimentError",
    "TrainCallback",
    "TrainResult",
    "TrainingError",
    "evaluate",
    "load_config",
    "load_model",
    "predict",
    "train",
]

if TYPE_CHECKING:
    from rnn_sentiment.config import Config, load_config
    from rnn_sentiment.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        RnnSentimentError,
        TrainingError,
    )
    from rnn_sentiment.evaluate import evaluate
    from rnn_sentiment.predict import Prediction, Predictor
    from rnn_sentiment.train import TrainCallback, TrainResult, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rnn_sentiment' has no attribute {name!r}")


def load_model(run_dir: str | None = None, batch_size: int = 256) -> Predictor:
    """Load a run directory as a :class:`Predictor`.

    Default: the newest complete run under ``runs/``, else the bundled model (named on stderr).
    """
    import sys

    from rnn_sentiment.predict import Predictor, describe_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(run_dir)
    if run_dir is None:
        print(describe_model_dir(model_dir), file=sys.stderr)
    return Predictor.from_dir(model_dir, batch_size)


def predict(texts: list[str], model: str | None = None) -> list[Prediction]:
    """Score ``texts`` with a run directory (default as in :func:`load_model`)."""
    return load_model(model).predict(texts)
