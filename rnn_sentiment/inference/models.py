"""Which model directory to use, and the one decision of how to run it.

A run directory runs on PyTorch (:class:`~rnn_sentiment.inference.predictor.Predictor`); an
exported directory (``rnn-sentiment export``) runs on onnxruntime
(:class:`~rnn_sentiment.inference.exported.ExportedPredictor`) and never imports torch. This module
imports torch only when a run directory is loaded, so ``predict`` with an exported model starts
in about a quarter of PyTorch's import time.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from rnn_sentiment.config import check_engine
from rnn_sentiment.errors import CheckpointError, DataError
from rnn_sentiment.inference.exported import ExportedPredictor, is_exported_dir
from rnn_sentiment.runfiles import MANIFEST_FILE, given_path

if TYPE_CHECKING:
    from rnn_sentiment.inference.predictor import Predictor

BUNDLED_MODEL_DIR = Path(__file__).parents[1] / "assets" / "bundled"
# The same model exported (scripts/bundle_model.py writes both): scoring with the bundled model
# runs on onnxruntime and never imports torch, unless a PyTorch precision is asked for.
BUNDLED_EXPORT_DIR = Path(__file__).parents[1] / "assets" / "bundled-onnx"
TORCH_BATCH_SIZE = 256


def load_predictor(
    model_dir: Path,
    batch_size: int | None = None,
    quantize: str | None = None,
    dtype: str = "fp32",
    threads: int | None = None,
) -> Predictor | ExportedPredictor:
    """``model_dir`` ready to score: an exported directory on onnxruntime (``batch_size``
    default 16, or 4 on one thread: see ``exported.default_batch_size``), a run directory on
    PyTorch (default 256, with ``quantize`` / ``dtype`` as :mod:`rnn_sentiment.inference.engine`
    decides). The bundled model runs from its exported copy unless ``quantize`` or ``dtype``
    asks for PyTorch.

    Raises:
        DataError: ``quantize`` or ``dtype`` for an exported model (its precision was chosen
            when it was exported).
    """
    check_engine(batch_size, quantize, dtype, threads)
    bundled = Path(model_dir).resolve() == BUNDLED_MODEL_DIR.resolve()  # however it is spelled
    if bundled and quantize is None and dtype == "fp32":
        usable = is_exported_dir(BUNDLED_EXPORT_DIR) and find_spec("onnxruntime") is not None
        model_dir = BUNDLED_EXPORT_DIR if usable else model_dir
    if is_exported_dir(model_dir):
        if quantize is not None or dtype != "fp32":
            raise DataError(
                f"{model_dir} is an exported model: it runs in the precision it was exported in; "
                "drop --quantize/--dtype, or export again with --quantize int8"
            )
        return ExportedPredictor.from_dir(model_dir, batch_size, threads)
    from rnn_sentiment.inference.predictor import Predictor, set_threads

    set_threads(threads)
    return Predictor.from_dir(model_dir, batch_size or TORCH_BATCH_SIZE, quantize, dtype)  # type: ignore[arg-type]


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
    path = model_path(chosen)
    if str(chosen) == LATEST and not path.exists():
        return _newest_run(Path(runs_dir))
    return path


def model_path(model: object) -> Path:
    """``model`` as a directory path: a str or Path, and not "" (which pathlib reads as the
    current folder); anything else is a DataError that says what to pass."""
    return given_path(model, "model", "give a run directory, or None for the default")


def _newest_run(root: Path) -> Path:
    runs = [p for p in root.glob("*") if _is_complete(p)] if root.is_dir() else []
    if not runs:
        raise CheckpointError(
            f"'{LATEST}' names the newest finished run under {root}/, and there is none; "
            "train one with 'rnn-sentiment train'"
        )
    return max(runs, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime)


def describe_model_dir(
    model_dir: Path, given: str | Path | None = None, yours: str = "--model RUN_DIR"
) -> str | None:
    """Which model scores, for stderr, unless the user named it (``given``) on the command line;
    ``yours``: how the command is given another (an option, or its argument)."""
    if given is not None and Path(given) == model_dir:
        return None
    if model_dir == BUNDLED_MODEL_DIR:
        return "model: the bundled model (a bidirectional GRU trained on IMDB + SST-2); " + (
            f"yours: {yours}"
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
        from rnn_sentiment.checkpoint import read_metrics  # torch: only for 'latest'

        return read_metrics(run_dir).get("status") == "complete"
    except CheckpointError:
        return False
