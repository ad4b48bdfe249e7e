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


def test_calibration_metrics_on_a_hand_computed_example() -> None:
    from rnn_sentiment.metrics import calibration_metrics

    # Confidences 0.9, 0.9, 0.6, 0.8 (bins (0.867, 0.933], (0.533, 0.6], (0.733, 0.8] of 15);
    # the first two right and wrong, the third right, the fourth wrong.
    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.6, 0.4], [0.2, 0.8]])
    labels = [1, 0, 0, 0]
    got = calibration_metrics(probs, labels)
    # ECE: bin 0.9: |0.9 - 0.5| * 2/4; bin 0.6: |0.6 - 1| * 1/4; bin 0.8: |0.8 - 0| * 1/4.
    assert got["ece"] == pytest.approx(0.4 * 0.5 + 0.4 * 0.25 + 0.8 * 0.25)
    # Brier of p(positive): (0.9-1)^2, (0.9-0)^2, (0.4-0)^2, (0.8-0)^2.
    assert got["brier"] == pytest.approx((0.01 + 0.81 + 0.16 + 0.64) / 4)
    assert got["log_loss"] == pytest.approx(-np.log([0.9, 0.1, 0.6, 0.2]).mean())
    assert [(b["count"], b["accuracy"]) for b in got["reliability"]] == [(1, 1.0), (1, 0.0),
                                                                         (2, 0.5)]  # fmt: skip


def test_a_perfectly_calibrated_bin_has_no_error_and_three_classes_use_the_sum() -> None:
    from rnn_sentiment.metrics import calibration_metrics

    probs = np.array([[0.75, 0.25, 0.0]] * 4)
    got = calibration_metrics(probs, [0, 0, 0, 1])
    assert got["ece"] == pytest.approx(0.0)
    # Brier over classes: three rows (0.25^2 + 0.25^2), one row (0.75^2 + 0.75^2).
    assert got["brier"] == pytest.approx((3 * 0.125 + 1.125) / 4)


def test_temperature_scaling_cures_overconfidence_without_changing_a_label() -> None:
    from rnn_sentiment.metrics import calibration_metrics, fit_temperature, with_temperature

    rng = np.random.default_rng(0)
    # A model right 75% of the time that always says 0.99: over-confident.
    labels = rng.integers(0, 2, 2000)
    right = rng.random(2000) < 0.75
    guess = np.where(right, labels, 1 - labels)
    probs = np.where(guess[:, None] == np.arange(2), 0.99, 0.01)
    temperature = fit_temperature(probs, labels.tolist())
    calibrated = with_temperature(probs, temperature)
    assert temperature > 1
    assert (calibrated.argmax(1) == probs.argmax(1)).all()
    before, after = calibration_metrics(probs, labels), calibration_metrics(calibrated, labels)
    assert after["log_loss"] < before["log_loss"] and after["ece"] < 0.02 < before["ece"]
    assert calibrated.max(1) == pytest.approx(np.full(2000, right.mean()), abs=0.01)
    assert with_temperature(probs, 1.0) is probs


def test_no_temperature_is_fitted_without_mistakes_to_learn_from() -> None:
    from rnn_sentiment.metrics import fit_calibration

    probs = np.array([[0.2, 0.8], [0.7, 0.3]] * 50)  # always right, never confident
    calibration = fit_calibration(probs, [1, 0] * 50, "validation")
    assert calibration["temperature"] == 1.0 and calibration["errors"] == 0
    assert "too little evidence" in calibration["not_fitted"]
    assert calibration["after"] == calibration["before"]


def test_a_temperature_at_the_end_of_its_range_is_flagged() -> None:
    from rnn_sentiment.metrics import fit_calibration

    labels = np.arange(400) % 2

    def fitted(every: int, confidence: float) -> dict[str, object]:
        """Calibration of a model wrong on one review in ``every``, always this confident."""
        guess = np.where(np.arange(400) % every == 0, 1 - labels, labels)
        probs = np.where(guess[:, None] == np.arange(2), confidence, 1 - confidence)
        return fit_calibration(probs, labels.tolist(), "validation")

    for every, confidence, end, how in ((2, 0.999, 10.0, "more"), (20, 0.51, 0.1, "less")):
        calibration = fitted(every, confidence)  # a coin sure of itself; a sure thing unsure
        assert calibration["temperature"] == pytest.approx(end, rel=1e-3)
        assert "stopped at the end of its range" in str(calibration["warning"])
        assert f"far {how} confident than right" in str(calibration["warning"])
    assert "warning" not in fitted(20, 0.9)  # 95% right and 0.9 sure: well inside the range
    unsure = fitted(2, 0.52)  # a coin that knows it: T drifts to 10 for a loss change of 0.0008
    assert unsure["temperature"] > 9 and "warning" not in unsure
