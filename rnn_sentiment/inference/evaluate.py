"""Metrics of a trained model on labelled data: accuracy, per-class P/R/F1, macro-F1, confusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.files import (
    ParquetReader,
    choose_text_column,
    detect_format,
    did_you_mean,
    open_reader,
)
from rnn_sentiment.data.sources import read_split, resolve_source, to_reviews
from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.inference.scoring import ScoringOptions, iter_scored
from rnn_sentiment.metrics import compute_metrics


def evaluate(
    model: Predictor | str | Path,
    source: str | None = None,
    split: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model on a labelled split.

    Args:
        model: a :class:`Predictor` or a run directory.
        source: data source (file, folder, hub id); default: the one the model was trained on.
        split: split or file stem; default: the run's test split, else its validation split.
        text_column: overrides the run's text column.
        label_column: overrides the run's label column.
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_dir(model)
    data_cfg = predictor.run.config.data.model_copy()
    if source is not None:
        data_cfg.source = source
    data_cfg.text_column = text_column or (None if source else data_cfg.text_column)
    if label_column is not None:
        data_cfg.label_column = label_column
    chosen = split or data_cfg.test_split or data_cfg.validation_split or "test"
    single_file = data_cfg.source != "builtin" and Path(data_cfg.source).expanduser().is_file()
    if source is None and split is None and single_file:
        raise DataError(
            f"{predictor.path} was trained on the single file {data_cfg.source}, which holds no "
            "held-out split; pass --data FILE with held-out labelled reviews"
        )
    location = resolve_source(data_cfg.source, chosen)
    unscored = 0
    if location is not None and _streamable(location):
        labels, predicted, unscored = evaluate_stream(predictor, location, data_cfg)
    else:
        labels, predicted = _evaluate_in_memory(predictor, data_cfg, chosen)
    if not labels:
        raise DataError(f"split '{chosen}' of {data_cfg.source} has no labelled reviews")
    metrics = compute_metrics(labels, predicted, predictor.label_names)
    metrics.update({"source": data_cfg.source, "split": chosen, "model": str(predictor.path)})
    metrics["unscored"] = unscored
    return metrics


def _streamable(location: Path) -> bool:
    """Files and folders the streaming readers handle (JSON arrays and fastText go in memory)."""
    if location.is_dir():
        return True
    name = location.name.lower().removesuffix(".gz")
    return name.endswith((".csv", ".tsv", ".jsonl", ".parquet"))


def evaluate_stream(
    predictor: Predictor, location: Path, data_cfg: DataConfig, chunk_size: int = 4096
) -> tuple[list[int], list[int], int]:
    """Labels and predictions of every labelled row, read and scored chunk by chunk.

    Returns (labels, predicted, unscored): labelled rows whose text is missing or empty are
    counted in ``unscored`` and left out of the metrics.
    """
    reader = open_reader(str(location), detect_format(str(location), None))
    try:
        text_column = choose_text_column(reader.columns, data_cfg.text_column, str(location))
        label_column = data_cfg.label_column
        if label_column not in reader.columns:
            error = did_you_mean(label_column, reader.columns, str(location))
            raise DataError(str(error).replace("--text-column", "--label-column"))
        if isinstance(reader, ParquetReader):
            reader.wanted = [text_column, label_column]
        labels: list[int] = []
        predicted: list[int] = []
        unscored = 0
        options = ScoringOptions(chunk_size=chunk_size)
        for chunk, scored in iter_scored(predictor, reader, text_column, options):
            truth = to_reviews(
                ([""] * chunk.rows, chunk.columns[label_column]), predictor.label_names
            )
            for label, guess in zip(truth.labels, scored.predicted, strict=True):
                if label >= 0 and guess < 0:
                    unscored += 1
                elif label >= 0:
                    labels.append(label)
                    predicted.append(guess)
    finally:
        reader.close()
    return labels, predicted, unscored


def _evaluate_in_memory(
    predictor: Predictor, data_cfg: DataConfig, chosen: str
) -> tuple[list[int], list[int]]:
    reviews = to_reviews(read_split(data_cfg.source, chosen, data_cfg), predictor.label_names)
    keep = [i for i, label in enumerate(reviews.labels) if label >= 0]
    texts = [reviews.texts[i] for i in keep]
    probs = predictor.predict_proba(texts)
    return [reviews.labels[i] for i in keep], probs.argmax(axis=1).tolist() if keep else []
