"""What two test-time choices buy a trained run: reading long reviews whole, and averaging runs.

    python scripts/ensemble.py ../models/semi/lm+at-s42 ../models/semi/lm+at-s43

For each run, accuracy on its own validation split (carved from train with its seed, as in
training) and on the test split, each read two ways: truncated to the run's max length (what
training saw and what ``predict`` does by default) and as overlapping windows of that length,
their probabilities averaged (``predict --long-reviews window``). Then the ensemble, the plain
mean of the runs' probabilities (nothing weighted or tuned), on test only: runs with other seeds
carved other validation splits, so no validation set is unseen by all of them. Each run reads
the reviews through its own model directory's pipeline, so runs with different vocabularies
combine. ``--set KEY=VALUE`` overrides the runs' configs (``data.source=`` for runs trained
elsewhere, ``data.test_split=`` where none was named). Nothing here is
chosen on test: the validation columns are there to choose by. Prints a Markdown table and, with
``--json FILE``, writes every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rnn_sentiment import Predictor, load_config
from rnn_sentiment.data.sources import load_splits
from rnn_sentiment.errors import DataError, RnnSentimentError

MODES = ("truncate", "window")


def accuracy(probs: np.ndarray, labels: list[int]) -> float:
    return float((probs.argmax(axis=1) == np.asarray(labels)).mean())


def score_run(run_dir: Path, sets: list[str]) -> tuple[dict, dict[str, np.ndarray], list[int]]:
    """(figures, test probabilities by mode, test labels) of one run."""
    config = load_config(run_dir / "config.yaml", sets)
    splits = load_splits(config.data, config.training.seed)
    if splits.test is None:
        raise SystemExit(
            f"error: {run_dir}'s data has no test split; name one with --set data.test_split=NAME"
        )
    predictor = Predictor.from_dir(run_dir)
    figures: dict = {"run": str(run_dir), "seed": config.training.seed}
    test_probs = {}
    for mode in MODES:
        start = time.perf_counter()
        validation = predictor.score(splits.validation.texts, long_reviews=mode)
        test_probs[mode] = predictor.score(splits.test.texts, long_reviews=mode)
        figures[mode] = {
            "validation": accuracy(validation, splits.validation.labels),
            "test": accuracy(test_probs[mode], splits.test.labels),
            "seconds": time.perf_counter() - start,
        }
        print(f"{run_dir.name} ({mode}): {figures[mode]}", flush=True)
    return figures, test_probs, list(splits.test.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="trained run directories")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    rows, probs, labels = [], [], None
    for run_dir in args.runs:
        try:
            figures, test_probs, test_labels = score_run(run_dir, args.set)
        except RnnSentimentError as error:  # a moved data source, a missing run: one line
            hint = ""
            if isinstance(error, DataError):  # relative data paths are read from here
                hint = " (a relative data.source is read from here: --set data.source=PATH)"
            raise SystemExit(f"error: {run_dir}: {error}{hint}") from None
        if labels is not None and test_labels != labels:
            raise SystemExit(f"error: {run_dir} reads another test split than {args.runs[0]}")
        rows.append(figures)
        probs.append(test_probs)
        labels = test_labels
    assert labels is not None
    ensemble = {mode: accuracy(np.mean([p[mode] for p in probs], axis=0), labels) for mode in MODES}
    lines = [
        "| run | validation, truncated | validation, windows | test, truncated | test, windows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['run']).name} (seed {r['seed']}) | {r['truncate']['validation']:.4f} | "
            f"{r['window']['validation']:.4f} | {r['truncate']['test']:.4f} | "
            f"{r['window']['test']:.4f} |"
        )
    lines.append(
        f"| mean of the {len(rows)} runs' probabilities | | | {ensemble['truncate']:.4f} | "
        f"{ensemble['window']:.4f} |"
    )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "ensemble": ensemble}, indent=2) + "\n")


if __name__ == "__main__":
    main()
