"""Classification metrics: accuracy, per-class precision/recall/F1, macro-F1, confusion, log loss.

Below both training (validation) and inference (``evaluate``), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def compute_metrics(
    labels: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

    ``confusion_matrix[i][j]`` counts reviews of true class i predicted as class j.
    """
    n_classes = len(label_names)
    truth = np.asarray(labels, dtype=np.int64)
    guess = np.asarray(predicted, dtype=np.int64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, guess), 1)
    per_class: dict[str, dict[str, float]] = {}
    for i, name in enumerate(label_names):
        tp = confusion[i, i]
        precision = tp / max(confusion[:, i].sum(), 1)
        recall = tp / max(confusion[i, :].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[i, :].sum()),
        }
    return {
        "n": len(truth),
        "accuracy": float((truth == guess).mean()) if len(truth) else 0.0,
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "labels": list(label_names),
        "confusion_matrix": confusion.tolist(),
    }


def probability_metrics(
    probs: np.ndarray, labels: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """:func:`compute_metrics` of the most likely class, plus mean cross-entropy as ``loss``."""
    truth = np.asarray(labels, dtype=np.int64)
    metrics = compute_metrics(truth.tolist(), probs.argmax(axis=1).tolist(), label_names)
    picked = probs[np.arange(len(truth)), truth]
    metrics["loss"] = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(truth) else 0.0
    return metrics
