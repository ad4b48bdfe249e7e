"""rnn-sentiment: train, evaluate and use recurrent sentiment classifiers.

The public API, imported lazily so that ``import rnn_sentiment`` stays cheap::

    from rnn_sentiment import Config, load_config, train, load_model, evaluate, classify

    result = train(load_config("configs/default.yaml", ["model.cell=gru"]))
    model = load_model(result.run_dir)
    model.predict(["This movie is not good"])[0].label   # 'negative'
    classify(["This movie is not bad"])[0].label          # the bundled model unless told otherwise
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "rnn_sentiment.config",
    "load_config": "rnn_sentiment.config",
    "train": "rnn_sentiment.api",
    "pretrain": "rnn_sentiment.training.lm_pretraining",
    "PretrainResult": "rnn_sentiment.training.lm_pretraining",
    "TrainCallback": "rnn_sentiment.callbacks",
    "TrainResult": "rnn_sentiment.training.loop",
    "evaluate": "rnn_sentiment.inference.evaluate",
    "calibrate": "rnn_sentiment.inference.evaluate",
    "load_suite": "rnn_sentiment.inference.check",
    "run_suite": "rnn_sentiment.inference.check",
    "SuiteResult": "rnn_sentiment.inference.check",
    "Predictor": "rnn_sentiment.inference.predictor",
    "Prediction": "rnn_sentiment.inference.results",
    "ExportedPredictor": "rnn_sentiment.inference.exported",
    "export_model": "rnn_sentiment.inference.export",
    "score_file": "rnn_sentiment.inference.scoring",
    "BatchScorer": "rnn_sentiment.inference.batch",
    "score_with_ray": "rnn_sentiment.inference.ray_scoring",
    "ScoringOptions": "rnn_sentiment.inference.scoring",
    "ScoringSummary": "rnn_sentiment.inference.scoring",
    "RnnSentimentError": "rnn_sentiment.errors",
    "ConfigError": "rnn_sentiment.errors",
    "DataError": "rnn_sentiment.errors",
    "CheckpointError": "rnn_sentiment.errors",
    "TrainingError": "rnn_sentiment.errors",
}
__all__ = [
    "BatchScorer",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "ExportedPredictor",
    "Prediction",
    "Predictor",
    "PretrainResult",
    "RnnSentimentError",
    "ScoringOptions",
    "ScoringSummary",
    "SuiteResult",
    "TrainCallback",
    "TrainResult",
    "TrainingError",
    "calibrate",
    "classify",
    "evaluate",
    "export_model",
    "load_config",
    "load_model",
    "load_suite",
    "pretrain",
    "run_suite",
    "score_file",
    "score_with_ray",
    "train",
]

if TYPE_CHECKING:
    from rnn_sentiment.api import train
    from rnn_sentiment.callbacks import TrainCallback
    from rnn_sentiment.config import Config, load_config
    from rnn_sentiment.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        RnnSentimentError,
        TrainingError,
    )
    from rnn_sentiment.inference.batch import BatchScorer
    from rnn_sentiment.inference.check import SuiteResult, load_suite, run_suite
    from rnn_sentiment.inference.evaluate import calibrate, evaluate
    from rnn_sentiment.inference.export import export_model
    from rnn_sentiment.inference.exported import ExportedPredictor
    from rnn_sentiment.inference.predictor import Predictor
    from rnn_sentiment.inference.ray_scoring import score_with_ray
    from rnn_sentiment.inference.results import Prediction
    from rnn_sentiment.inference.scoring import ScoringOptions, ScoringSummary, score_file
    from rnn_sentiment.training.lm_pretraining import PretrainResult, pretrain
    from rnn_sentiment.training.loop import TrainResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rnn_sentiment' has no attribute {name!r}")


def load_model(
    run_dir: str | None = None, batch_size: int | None = None
) -> Predictor | ExportedPredictor:
    """Load a run directory as a :class:`Predictor`, or an exported directory (``rnn-sentiment
    export``) as an :class:`ExportedPredictor`, which never imports torch; both have ``predict``,
    ``predict_proba``, ``score``, ``iter_predict`` and ``explain``.

    Default: the run named by ``$RNN_SENTIMENT_MODEL``, else the bundled model (named on
    stderr, once per process and model); ``"latest"``: the newest finished run under ``runs/``.
    """
    import sys

    from rnn_sentiment.inference.models import describe_model_dir, load_predictor, resolve_model_dir

    model_dir = resolve_model_dir(run_dir)
    note = describe_model_dir(model_dir, run_dir, "load_model(RUN_DIR)")
    if note and model_dir not in _NAMED:
        _NAMED.add(model_dir)
        print(note, file=sys.stderr)
    return load_predictor(model_dir, batch_size)


def classify(texts: list[str], model: str | None = None) -> list[Prediction]:
    """Score ``texts`` with a run directory (default as in :func:`load_model`).

    The last model used stays loaded, so calling this in a loop does not reload it each time.
    """
    from rnn_sentiment.inference.models import resolve_model_dir

    model_dir = resolve_model_dir(model)
    stamp = _manifest_stamp(model_dir)
    if not _LAST or _LAST[0] != (model_dir, stamp):
        _LAST[:] = [(model_dir, stamp), load_model(model)]
    return _LAST[1].predict(texts)


def _manifest_stamp(model_dir: Path) -> float:
    # A run directory rewritten in place (retrained into the same folder) is loaded again.
    from rnn_sentiment.runfiles import MANIFEST_FILE

    try:
        return (model_dir / MANIFEST_FILE).stat().st_mtime
    except OSError:
        return 0.0


_NAMED: set[Path] = set()
_LAST: list[Any] = []
