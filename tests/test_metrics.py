"""Classification metrics shared by training (validation) and evaluate."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_sentiment.metrics import compute_metrics, probability_metrics


def test_confusion_matrix_and_per_class_scores() -> None:
    metrics = compute_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["negative", "positive"])
    assert metrics["confusion_matrix"] == [[1, 1], [1, 2]]
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["positive"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["positive"]["recall"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["negative"]["f1"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics["n"] == 5 and metrics["labels"] == ["negative", "positive"]


def test_a_class_never_predicted_has_zero_precision_not_an_error() -> None:
    metrics = compute_metrics([0, 1, 2], [0, 0, 0], ["a", "b", "c"])
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_probability_metrics_add_the_mean_cross_entropy() -> None:
    probs = np.asarray([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    metrics = probability_metrics(probs, [0, 1, 1], ["negative", "positive"])
    expected = -(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert probability_metrics(np.zeros((0, 2)), [], ["a", "b"])["loss"] == 0.0
