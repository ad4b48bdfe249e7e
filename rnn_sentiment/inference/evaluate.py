"""Metrics of a trained model on labelled data: accuracy, per-class P/R/F1, macro-F1, confusion,
calibration; and refitting a run's calibration (temperature) on held-out data.

Every source is read through the reader training uses (``sources.open_split``): local files and
folders stream chunk by chunk, so memory stays flat for any size; a hub split is read whole by
``datasets`` and then scored chunk by chunk like a file.

A model directory runs as ``predict`` runs it (``models.load_predictor``): a run directory on
PyTorch, an exported one on onnxruntime, and then torch is never imported. An exported directory
does not record the data its run was trained on, so it is evaluated on the data it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from rnn_sentiment.callbacks import ScoringCallback, checked_scoring_callback
from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.files import labelled_columns
from rnn_sentiment.data.readers import ParquetReader, Reader
from rnn_sentiment.data.sources import (
    open_split,
    single_source,
    split_location,
    to_reviews,
)
from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.exported import ExportedPredictor, is_exported_dir
from rnn_sentiment.inference.models import load_predictor, model_path
from rnn_sentiment.inference.scoring import ScoringOptions, iter_scored
from rnn_sentiment.metrics import (
    MIN_ERRORS_TO_FIT,
    calibration_metrics,
    compute_metrics,
    fit_calibration,
    with_temperature,
)
from rnn_sentiment.runfiles import CALIBRATION_FILE, CONFIG_FILE, RunFiles, parse_config

if TYPE_CHECKING:
    from rnn_sentiment.inference.predictor import Predictor


# Reviews scored at a time by training's test pass, as evaluate reads them (its chunks).
TEST_CHUNK = 4096


def score_texts(
    run_dir: Path, texts: Sequence[str], scored: Callable[[int], None] | None = None
) -> np.ndarray:
    """Class probabilities [n, labels] of ``texts`` with the run directory's model, as
    ``predict`` computes them (its engine, its text pipeline): training's test pass uses it.
    When they are more than one chunk of :data:`TEST_CHUNK`, ``scored`` is told how many are
    done after each."""
    from rnn_sentiment.inference.predictor import Predictor

    predictor = Predictor.from_dir(run_dir)
    parts = []
    for first in range(0, len(texts), TEST_CHUNK):
        parts.append(predictor.predict_proba(texts[first : first + TEST_CHUNK]))
        if scored is not None and len(texts) > TEST_CHUNK:
            scored(min(first + TEST_CHUNK, len(texts)))
    if not parts:
        return np.zeros((0, len(predictor.label_names)), dtype=np.float32)
    return np.concatenate(parts)


def evaluate(
    model: Predictor | ExportedPredictor | str | Path,
    source: str | None = None,
    split: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    *,
    callback: ScoringCallback | None = None,
) -> dict[str, Any]:
    """Evaluate a model on a labelled split.

    Labelled rows whose text is missing or empty, and rows that cannot be read, are left out of
    the metrics and counted in ``unscored``; unlabelled rows (label -1, empty, ``unsup``) are
    skipped.
    ``calibration`` is that of the probabilities the model gives (its temperature applied);
    ``uncalibrated``, when it has a temperature, that of the network's own.

    Args:
        model: a :class:`Predictor` or :class:`ExportedPredictor`, or a model directory: a run
            directory or an exported one, run as ``predict`` runs it.
        source: data source (file, folder, hub id); default: the one the model was trained on
            (an exported directory does not record it: pass it).
        split: split or file stem; default: the run's test split, else its validation split.
        text_column: overrides the run's text column.
        label_column: overrides the run's label column.
        callback: told the rows scored as they are (the command line's progress line).
    """
    callback = checked_scoring_callback(callback)
    predictor: Predictor | ExportedPredictor
    if hasattr(model, "label_names"):  # a Predictor or ExportedPredictor (torch: lazily)
        predictor = cast("Predictor | ExportedPredictor", model)
    else:
        predictor = load_predictor(model_path(model))
    trained_on = _trained_on(model, predictor)
    data_cfg = _data_config(trained_on, source, text_column, label_column, predictor.path)
    chosen = split or data_cfg.test_split or data_cfg.validation_split or "test"
    labels, probs, unscored = _labelled_probs(predictor, data_cfg, chosen, source, split, callback)
    metrics = compute_metrics(labels, probs.argmax(axis=1).tolist(), predictor.label_names)
    temperature = predictor.temperature
    metrics["calibration"] = {"temperature": temperature, **calibration_metrics(probs, labels)}
    if temperature != 1.0:
        raw = with_temperature(probs.astype(np.float64), 1.0 / temperature)
        metrics["uncalibrated"] = calibration_metrics(raw, labels)
    whole = single_source(data_cfg.source) is not None  # a file: no split was chosen
    split_name = None if whole else chosen
    metrics.update({"source": data_cfg.source, "split": split_name, "model": str(predictor.path)})
    metrics["unscored"] = unscored
    return metrics


def calibrate(
    run_dir: str | Path,
    source: str | None = None,
    split: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    *,
    callback: ScoringCallback | None = None,
) -> dict[str, Any]:
    """Fit the run's temperature on held-out labelled data and save it as ``calibration.json``.

    Training fits it on the validation split; this refits it on other held-out data (never the
    data you will report test figures on). Returns what was saved: the temperature, the data,
    and ECE, Brier score and log loss before and after. Raises DataError, leaving
    ``calibration.json`` as it was, when too few reviews are misclassified to fit one.

    Args:
        run_dir: a run directory (an exported model: calibrate its run and export again).
        source: labelled data; default: the run's own data.
        split: split or file stem; default: the run's validation split.
        callback: told the rows scored as they are (the command line's progress line).
    """
    callback = checked_scoring_callback(callback)
    path = model_path(run_dir)
    if is_exported_dir(path):
        raise DataError(
            f"{path} is an exported model; calibrate the run directory it came from and export "
            "it again"
        )
    from rnn_sentiment.checkpoint import save_calibration
    from rnn_sentiment.inference.predictor import Predictor

    predictor = Predictor.from_dir(path)
    predictor.run = replace(predictor.run, temperature=1.0)  # fit on the network's own scores
    data_cfg = _data_config(predictor.run.config.data, source, text_column, label_column, path)
    chosen = split or data_cfg.validation_split or "validation"
    if source is None and split is None and data_cfg.validation_split is None:
        raise DataError(
            f"{path}'s validation reviews were carved from its training data and cannot be "
            "told apart now; pass --data FILE (and --split) with other held-out labelled reviews"
        )
    role = _own_role(data_cfg.source, chosen, predictor.run.config.data)
    if role is not None:
        what = data_cfg.source if single_source(data_cfg.source) else f"--split {chosen}"
        raise DataError(
            f"{what} is the run's {role} split: a temperature fitted there is "
            "over-confident (training) or leaks into the test figures; fit it on held-out "
            "reviews (the default, its validation split, or --data FILE)"
        )
    labels, probs, _ = _labelled_probs(predictor, data_cfg, chosen, source, split, callback)
    where = data_cfg.source if single_source(data_cfg.source) else f"{data_cfg.source}:{chosen}"
    calibration = fit_calibration(probs.astype(np.float64), labels, where)
    if "not_fitted" in calibration:  # a refit that fits nothing must not undo the last one
        raise DataError(
            f"{where}: {calibration['errors']} of {calibration['reviews']:,} reviews "
            f"misclassified, and a temperature needs at least {MIN_ERRORS_TO_FIT}; "
            f"{path / CALIBRATION_FILE} is unchanged; pass more held-out labelled reviews"
        )
    save_calibration(path, calibration)
    return calibration


def _own_role(source: str, split: str, own: DataConfig) -> str | None:
    """'training' or 'test' when ``split`` of ``source`` holds the run's own training reviews
    (its extra training sources too) or those ``evaluate`` reports on, however named: the same
    local file or folder (``--data`` naming the file itself, or the whole file a run was
    trained on), else, for a hub split, the same names."""
    here = split_location(source, split)
    if own.validation_split is not None and here == split_location(
        own.source, own.validation_split
    ):
        return None
    training = [split_location(own.source, own.train_split)]
    training += [split_location(extra, own.train_split) for extra in own.extra_train_sources]
    if here in training:
        return "training"
    reported = own.test_split or (None if own.validation_split else "test")  # evaluate's default
    return "test" if reported is not None and here == split_location(own.source, reported) else None


def _trained_on(
    model: Predictor | ExportedPredictor | str | Path, predictor: Predictor | ExportedPredictor
) -> DataConfig | None:
    """The data settings of the model's run: a run directory records them (also when its
    exported copy scores, as the bundled model's does); an exported directory does not."""
    if not isinstance(predictor, ExportedPredictor):
        return predictor.run.config.data
    if isinstance(model, (str, Path)):
        return recorded_data(Path(model))
    return None


def recorded_data(model_dir: Path) -> DataConfig | None:
    """The data settings a model directory records: a run directory's (read from its checked
    config, as load_run reads it); ``None`` for an exported directory, which records none."""
    if is_exported_dir(model_dir):
        return None
    with RunFiles(model_dir, needed=(CONFIG_FILE,)) as files:
        return parse_config(files.read(CONFIG_FILE), model_dir / CONFIG_FILE).data


def _data_config(
    trained_on: DataConfig | None,
    source: str | None,
    text_column: str | None,
    label_column: str | None,
    model_path: Path,
) -> DataConfig:
    for name, value in (("source", source), ("text_column", text_column),
                        ("label_column", label_column)):  # fmt: skip
        if value is not None and (not isinstance(value, str) or not value):
            raise DataError(f"{name} must be a non-empty str (None: the run's own), not {value!r}")
    if trained_on is None and source is None:
        raise DataError(
            f"{model_path} is an exported model, which does not record the data it was trained "
            "on; pass --data with labelled reviews (and --split)"
        )
    data_cfg = (trained_on or DataConfig.model_validate({})).model_copy()
    if source is not None:
        data_cfg.source = source
    data_cfg.text_column = text_column or (None if source else data_cfg.text_column)
    if label_column is not None:
        data_cfg.label_column = label_column
    return data_cfg


def _labelled_probs(
    predictor: Predictor | ExportedPredictor,
    data_cfg: DataConfig,
    chosen: str,
    source: str | None,
    split: str | None,
    callback: ScoringCallback | None = None,
) -> tuple[list[int], np.ndarray, int]:
    single = single_source(data_cfg.source)
    if source is None and split is None and single is not None:
        raise DataError(
            f"{predictor.path} was trained on the single {single} {data_cfg.source}, which holds "
            "no held-out split; pass --data FILE with held-out labelled reviews"
        )
    if split is not None and single is not None:  # it would read the whole of it, as any split
        raise DataError(
            f"--split {split}: {data_cfg.source} is a single {single}, which holds one split "
            "only; drop --split"
        )
    reader = open_split(data_cfg.source, chosen, data_cfg)
    try:
        labels, probs, unscored = evaluate_reader(predictor, reader, data_cfg, callback=callback)
    finally:
        reader.close()
    if not labels:
        where = data_cfg.source if single else f"split '{chosen}' of {data_cfg.source}"
        empty = f" with text ({unscored:,} labelled rows unscored: no text, or unreadable)"
        raise DataError(f"{where} has no labelled reviews{empty if unscored else ''}")
    return labels, probs, unscored


def evaluate_reader(
    predictor: Predictor | ExportedPredictor,
    reader: Reader,
    data_cfg: DataConfig,
    chunk_size: int = 4096,
    callback: ScoringCallback | None = None,
) -> tuple[list[int], np.ndarray, int]:
    """Labels and class probabilities of every labelled row, read and scored chunk by chunk.

    Returns (labels, probabilities [n, labels], unscored): labelled rows whose text is missing or
    empty, and rows that could not be read (a field or the row over its length cap: its label
    is lost with it), are counted in ``unscored`` and left out of the metrics.
    """
    where = reader.where
    label_column = data_cfg.label_column
    text_column = labelled_columns(reader.columns, data_cfg.text_column, label_column, where)
    if isinstance(reader, ParquetReader):
        reader.wanted = list(dict.fromkeys([text_column, label_column]))
    labels: list[int] = []
    probs: list[np.ndarray] = []
    unscored = 0
    options = ScoringOptions(chunk_size=chunk_size)
    for chunk, scored in iter_scored(predictor, reader, text_column, options, callback=callback):
        truth = to_reviews(
            ([""] * chunk.rows, chunk.columns[label_column]), predictor.label_names, where=where
        )
        assert scored.probs is not None
        for row, (label, guess) in enumerate(zip(truth.labels, scored.predicted, strict=True)):
            if (label >= 0 and guess < 0) or chunk.problems[row]:
                unscored += 1
            elif label >= 0:
                labels.append(label)
                probs.append(scored.probs[row])
    classes = len(predictor.label_names)
    return labels, np.array(probs).reshape(len(probs), classes), unscored
