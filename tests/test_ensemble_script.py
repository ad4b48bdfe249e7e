"""scripts/ensemble.py: each run read two ways, and the mean of the runs' probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rnn_sentiment.config import load_config
from rnn_sentiment.data.sources import load_splits
from rnn_sentiment.inference.predictor import Predictor

SCRIPT = Path(__file__).parents[1] / "scripts" / "ensemble.py"


def test_ensemble_of_a_run_with_itself_scores_as_the_run(builtin_run: Path, tmp_path: Path) -> None:
    figures = tmp_path / "ensemble.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(builtin_run), str(builtin_run), "--json", str(figures),
         "--set", "data.test_split=test"],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(figures.read_text())
    run = result["runs"][0]
    # the figures are the run's own, scored here independently of the script
    config = load_config(builtin_run / "config.yaml", ["data.test_split=test"])
    test = load_splits(config.data, config.training.seed).test
    assert test is not None
    probs = Predictor.from_dir(builtin_run).predict_proba(test.texts)
    expected = float((probs.argmax(axis=1) == np.asarray(test.labels)).mean())
    assert run["truncate"]["test"] == expected
    # the built-in reviews fit in one window, so reading them as windows changes nothing
    assert run["window"] == {
        **run["window"],
        **{k: run["truncate"][k] for k in ("validation", "test")},
    }
    assert result["ensemble"] == {"truncate": expected, "window": expected}
    assert (
        f"| mean of the 2 runs' probabilities | | | {expected:.4f} | {expected:.4f} |"
        in done.stdout
    )


def test_a_run_without_a_test_split_is_refused_in_one_line(builtin_run: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(builtin_run)],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"error: {builtin_run}'s data has no test split; name one with --set data.test_split=NAME\n"
    )


def test_a_data_source_that_is_not_there_is_one_line(builtin_run: Path, tmp_path: Path) -> None:
    gone = tmp_path / "moved-away"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(builtin_run), "--set", f"data.source={gone}"],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {builtin_run}: data source not found: {gone}")
    assert "--set data.source=PATH" in done.stderr


def test_a_run_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "no-run")],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"error: {tmp_path / 'no-run'}: config file not found: {tmp_path / 'no-run'}/config.yaml\n"
    )
