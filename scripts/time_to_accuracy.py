"""Wall-clock time to reach given IMDB test accuracies, next to TF-IDF + logistic regression.

usage: python scripts/time_to_accuracy.py [--data ../shared/data/imdb]
           [--config configs/imdb-lstm.yaml] [--targets 0.88,0.90] [--evals-per-epoch 2]
           [--json FILE] [KEY=VALUE ...]

Trains the preset with the project's own ``train`` (overrides as on the command line) and
scores the 25,000 test reviews every 1/``--evals-per-epoch`` of an epoch. The clock runs from
the call to ``train`` (data loading and tokenizer training included) and stops while the test set
is scored, so each figure is the time a plain ``rnn-sentiment train`` would have needed. The
test set is only watched, never used to choose anything. The baseline (scikit-learn, word
uni+bigram TF-IDF, logistic regression) is timed on the same machine in the same run.
Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from torch import nn

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.checkpoint import load_pipeline
from rnn_sentiment.config import Config, load_config
from rnn_sentiment.data.batching import predict_proba_ids
from rnn_sentiment.inference.evaluate import evaluate
from rnn_sentiment.text import clean_html
from rnn_sentiment.training.loop import train


def read_imdb(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path, columns=["text", "label"])
    texts = table.column("text").to_pylist()
    return texts, np.asarray(table.column("label").to_pylist())


def tfidf_baseline(data: Path) -> dict[str, float]:
    """Accuracy and wall-clock seconds (reading and vectorizing included) of TF-IDF + LR."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    train_texts, train_labels = read_imdb(data / "train.parquet")
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2),
        min_df=2,
        sublinear_tf=True,
        preprocessor=lambda t: clean_html(t).lower(),
    )
    features = vectorizer.fit_transform(train_texts)
    classifier = LogisticRegression(C=4.0, max_iter=1000).fit(features, train_labels)
    seconds = time.perf_counter() - start
    test_texts, test_labels = read_imdb(data / "test.parquet")
    accuracy = float((classifier.predict(vectorizer.transform(test_texts)) == test_labels).mean())
    return {"accuracy": accuracy, "seconds": seconds}


class TestWatcher(TrainCallback):
    """Scores the test set ``evals`` times an epoch, with the clock stopped while it does."""

    def __init__(
        self, runs: Path, texts: list[str], labels: np.ndarray, evals: int, config: Config
    ) -> None:
        self.runs, self.texts, self.labels, self.evals = runs, texts, labels, evals
        self.config = config
        self.every = 1
        self.start = time.perf_counter()
        self.paused = 0.0
        self.model: nn.Module | None = None
        self.ids: list[list[int]] = []
        self.epoch = self.steps = 0
        self.curve: list[dict[str, Any]] = []

    def on_train_start(self, model: nn.Module) -> None:
        # The run's tokenizer is on disk by now: encode the test set once, clock stopped.
        pause = time.perf_counter()
        (run_dir,) = self.runs.iterdir()
        self.ids = load_pipeline(run_dir, self.config).encode_lists(self.texts)
        self.model = model
        self.paused += time.perf_counter() - pause

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        # The run's own steps per epoch: a config with extra training sources has more than
        # IMDB's train split alone.
        self.epoch, self.steps = epoch, steps
        self.every = max(1, steps // self.evals)

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        if step % self.every == 0 or step == self.steps:
            self.score(step)

    def score(self, step: int) -> None:
        assert self.model is not None
        clock = time.perf_counter() - self.start - self.paused
        pause = time.perf_counter()
        device = next(self.model.parameters()).device
        probs = predict_proba_ids(self.model, self.ids, device=device)  # type: ignore[arg-type]
        self.model.train()  # scoring switched it to eval mode
        accuracy = float((probs.argmax(axis=1) == self.labels).mean())
        self.curve.append({"epoch": self.epoch, "step": step, "seconds": clock,
                           "test_accuracy": accuracy})  # fmt: skip
        print(f"epoch {self.epoch} step {step}: {clock:7.1f} s  test accuracy {accuracy:.4f}",
              flush=True)  # fmt: skip
        self.paused += time.perf_counter() - pause


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb"))
    parser.add_argument("--config", default="configs/imdb-lstm.yaml")
    parser.add_argument("--targets", default="0.88,0.90")
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    args = parser.parse_args()
    targets = [float(t) for t in args.targets.split(",")]

    baseline = tfidf_baseline(args.data)
    print(f"TF-IDF + logistic regression: test accuracy {baseline['accuracy']:.4f} "
          f"in {baseline['seconds']:.1f} s", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as runs:
        config = load_config(
            args.config,
            [f"data.source={args.data}", "data.test_split=null", f"output.dir={runs}",
             *args.overrides],
        )  # fmt: skip
        test_texts, test_labels = read_imdb(args.data / "test.parquet")
        watcher = TestWatcher(Path(runs), test_texts, test_labels, args.evals_per_epoch,
                              config)  # fmt: skip
        result = train(config, watcher)
        final = evaluate(result.run_dir, str(args.data), "test")
    seconds = watcher.curve[-1]["seconds"]  # the clock without the test passes
    print(f"best-epoch weights (epoch {result.metrics['best_epoch']}): test accuracy "
          f"{final['accuracy']:.4f}; the run took {seconds:.0f} s")  # fmt: skip

    print(f"\n{'model':<34}{'target':>8}{'seconds':>13}{'best test acc':>15}")
    best = max(point["test_accuracy"] for point in watcher.curve)
    report: dict[str, Any] = {
        "baseline": baseline, "curve": watcher.curve, "targets": {},
        "final_test_accuracy": final["accuracy"], "seconds": seconds,
    }  # fmt: skip
    for target in targets:
        reached = next((p for p in watcher.curve if p["test_accuracy"] >= target), None)
        shown = f"{reached['seconds']:.0f}" if reached else "not reached"
        report["targets"][str(target)] = reached["seconds"] if reached else None
        print(f"{Path(args.config).stem + ' ' + ' '.join(args.overrides):<34}"
              f"{target:>8g}{shown:>13}{best:>15.4f}")  # fmt: skip
    print(f"{'TF-IDF + logistic regression':<34}{'':>8}{baseline['seconds']:>13.0f}"
          f"{baseline['accuracy']:>15.4f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
