"""Classification metrics: accuracy, per-class precision/recall/F1, macro-F1, confusion, log loss,
and calibration (expected calibration error, Brier score, reliability bins).

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


ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) "On Calibration of Modern NNs"


def calibration_metrics(
    probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS
) -> dict[str, Any]:
    """How far the probabilities are from the frequencies they claim.

    - ``ece``: expected calibration error of the top label: the confidence of the most likely
      class against its accuracy, in ``bins`` equal-width bins over [0, 1], weighted by count.
    - ``brier``: two classes: mean squared error of p(second class), as scikit-learn's
      ``brier_score_loss``; more: the mean over reviews of the squared error summed over classes.
    - ``log_loss``: mean cross-entropy (natural log), probabilities clipped at 1e-12.
    - ``reliability``: per non-empty bin: its range, count, mean confidence and accuracy.
    """
    truth = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if not len(truth):
        return {"ece": 0.0, "ece_bins": bins, "brier": 0.0, "log_loss": 0.0, "reliability": []}
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == truth).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece, reliability = 0.0, []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count:
            conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            ece += count / len(truth) * abs(conf - acc)
            reliability.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                                "count": count, "confidence": conf, "accuracy": acc})  # fmt: skip
    onehot = np.eye(p.shape[1])[truth]
    if p.shape[1] == 2:
        brier = float(((p[:, 1] - onehot[:, 1]) ** 2).mean())
    else:
        brier = float(((p - onehot) ** 2).sum(axis=1).mean())
    picked = np.clip(p[np.arange(len(truth)), truth], 1e-12, None)
    return {
        "ece": float(ece),
        "ece_bins": bins,
        "brier": brier,
        "log_loss": max(0.0, float(-np.log(picked).mean())),  # never -0.0
        "reliability": reliability,
    }


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of the logits divided by ``temperature``: softmax(z / T) is proportional
    to p ** (1 / T), so no logits are needed. T > 1 softens, T < 1 sharpens; the most likely
    class never changes."""
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    scaled = np.exp(logp)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(probs.dtype, copy=False)


# The range fit_temperature searches. At 10 a 0.99 becomes 0.61, at 0.1 a 0.6 becomes 0.98: a
# model whose best temperature lies beyond is not made trustworthy by one.
TEMPERATURE_RANGE = (0.1, 10.0)


def fit_temperature(probs: np.ndarray, labels: Sequence[int]) -> float:
    """The temperature that minimises the log loss of ``probs`` on ``labels`` (Guo et al. 2017,
    temperature scaling), by golden-section search over log T in :data:`TEMPERATURE_RANGE`."""
    truth = np.asarray(labels, dtype=np.int64)
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float((log_norm - z[np.arange(len(truth)), truth]).mean())

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(60):  # the bracket shrinks by 0.618 each step: far below 1e-6 in log T
        if loss(a) < loss(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    return float(np.exp((low + high) / 2))


# A temperature at the end of its range is worth a warning when it lowered the log loss by more.
MATTERING_LOSS = 0.01
# Fewer mistakes than this on the held-out reviews say nothing about how confident the model
# should be: with none, the log loss falls forever as T shrinks (every probability pushed to 1).
MIN_ERRORS_TO_FIT = 5


def fit_calibration(probs: np.ndarray, labels: Sequence[int], fitted_on: str) -> dict[str, Any]:
    """The temperature for ``probs`` on held-out ``labels``, and calibration before and after,
    as ``calibration.json`` records it; 1 (and why) when too few reviews are misclassified, and
    a ``warning`` when the fit stopped at an end of :data:`TEMPERATURE_RANGE`."""
    errors = int((np.asarray(probs).argmax(axis=1) != np.asarray(labels)).sum())
    fitted = errors >= MIN_ERRORS_TO_FIT
    temperature = fit_temperature(probs, labels) if fitted else 1.0
    low, high = TEMPERATURE_RANGE
    keys = ("ece", "brier", "log_loss")
    before = calibration_metrics(probs, labels)
    after = calibration_metrics(with_temperature(probs, temperature), labels)
    # The search ends within 1e-6 of the end of the range (in log T) when the best lies beyond;
    # it matters where the loss still fell there (a model near chance and unsure drifts to 10
    # for a change in the fourth decimal).
    at_end = fitted and not low * 1.001 < temperature < high / 1.001
    at_end = at_end and before["log_loss"] - after["log_loss"] > MATTERING_LOSS
    warning = (
        f"the temperature stopped at the end of its range ({temperature:.3g}, of {low:g} to "
        f"{high:g}): the model is far {'less' if temperature < 1 else 'more'} confident than "
        f"right on these reviews ({errors:,} of {len(labels):,} misclassified), more than "
        "temperature scaling corrects; check that they are the kind of reviews it was trained on"
    )
    return {
        "temperature": temperature,
        "fitted_on": fitted_on,
        "reviews": len(labels),
        "errors": errors,
        **(
            {}
            if fitted
            else {
                "not_fitted": f"fewer than {MIN_ERRORS_TO_FIT} misclassified "
                "reviews: too little evidence to fit a temperature"
            }
        ),  # fmt: skip
        **({"warning": warning} if at_end else {}),
        "before": {key: before[key] for key in keys},
        "after": {key: after[key] for key in keys},
    }
