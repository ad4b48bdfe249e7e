"""Learning curves on small labelled sets: the small-data recipe against training from scratch,
TF-IDF + logistic regression and NB-SVM, all in one run.

    python scripts/benchmark_small_data.py --encoder DIR --out /tmp/small-data --plot curves.png
    python scripts/benchmark_small_data.py --dataset imdb --sizes 500,1000,2000 --encoder DIR
    python scripts/benchmark_small_data.py --encoder DIR --validation-only --arms recipe \
        --set training.lr=0.001                          # tuning: the carved validation only
    python scripts/benchmark_small_data.py --dataset imdb --dev 2000 --sizes 2000,5000 --seeds 1 \
        --set tokenizer.max_length=800                   # tuning: pool rows set aside, all arms
    python scripts/benchmark_small_data.py --smoke      # under a minute, on the built-in corpus

For every size and seed, a training set of that many labelled examples is drawn from the pool
(SST-2 training sentences, or IMDB training reviews with --dataset imdb; nested: a seed's 1,000
hold its 500) and written to a Parquet file under --out, the file a user would pass as
``data.source``. Four arms learn from exactly those rows:

* recipe: ``configs/small-data.yaml`` from the pretrained encoder (--encoder, default the
  config's ``pretraining.from``), the real ``rnn_sentiment.train``;
* scratch: the same config and model from random weights (``pretraining.from`` unset, method
  none), without the two knobs that only make sense for pretrained layers (gradual unfreezing,
  lower rates for lower layers), which would only hold random layers back;
* TF-IDF + LR: ``tfidf_baseline`` of scripts/benchmark_accuracy.py;
* NB-SVM: uni+bigram naive-Bayes log-count ratios feeding a linear SVM (Wang & Manning 2012).

Every arm is scored on the same fixed held-out set, which nothing is tuned on and which training
never reads: SST-2's validation split (872 sentences), or 5,000 IMDB test reviews drawn once with
seed 0. The recurrent arms carve their own validation split from the drawn rows (early stopping,
calibration); the linear baselines use all the rows with fixed settings. ``--validation-only``
scores the recurrent arms on that carved split alone and never scores the held-out set; ``--dev
N`` sets N rows of the pool aside before drawing (the same rows in every run) and scores every
arm on them instead of the held-out set, which it never scores: use either to tune (on IMDB the
shipped encoder's language model has read the set-aside texts, as it has read every training
review, so their margin over the baselines can read higher than the held-out one). Prints
Markdown tables (held-out accuracy, mean +- std over seeds; the recipe's margin over NB-SVM,
paired by seed; wall time per arm), written with every run's figures as <out>/<dataset>.md and
.json. The JSON is saved after every run; ``--resume`` keeps the runs it holds (when they were
made with the same settings) and runs only the missing ones, so a benchmark longer than a session
continues where it was stopped, and more seeds or sizes can be added to an earlier one.
``--report`` prints (and plots) what a stopped run saved, fitting nothing.

Needs scikit-learn for the baselines: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnn_sentiment import evaluate, load_config, pretrain, train
from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.sources import DataSplits, Reviews, load_splits
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.inference.models import load_predictor
from rnn_sentiment.runfiles import MANIFEST_FILE
from rnn_sentiment.training.encoder import resolve_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_accuracy import tfidf_baseline  # noqa: E402  (a sibling script, not a package)

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "small-data.yaml"
ARMS = ("recipe", "scratch", "tfidf", "nbsvm")
ARM_NAMES = {"recipe": "small-data recipe", "scratch": "same model from scratch",
             "tfidf": "TF-IDF + LR", "nbsvm": "NB-SVM"}  # fmt: skip
SCRATCH = ["pretraining.from=null", "pretraining.method=none",
           "training.unfreeze_steps=0", "training.layer_lr_decay=1"]  # fmt: skip
# Each run's own files: the token cache would fill up with one entry per drawn set.
EVERY_RUN = ["data.cache_dir=null", "data.validation_split=null", "data.test_split=null"]
IMDB_HELD_OUT = 5000
# Each row records the code it was made with (--resume keeps rows of earlier commits).
COMMIT = subprocess.run(
    ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
    capture_output=True, text=True, check=False,
).stdout.strip() or None  # fmt: skip
# The smoke run: a tiny encoder pretrained on the built-in corpus first, tiny models throughout.
SMOKE_MODEL = ["model.embedding_dim=16", "model.hidden_size=16", "training.epochs=2",
               "training.unfreeze_steps=5", "training.num_threads=1"]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# NB-SVM


class NBSVM:
    """NB-SVM (Wang & Manning 2012): binarised n-gram features scaled by their naive-Bayes
    log-count ratio r, a linear SVM on them, and its weights interpolated towards their mean
    magnitude: w' = (1 - beta) mean|w| + beta w, beta 0.25 as in the paper.

    The SVM's bias is scaled by beta with its weights, so the interpolated score is
    ``beta * svm + (1 - beta) * mean|w| * naive Bayes``: kept unscaled, the bias outweighed the
    shrunken weights (2-4 points lower on SST-2 training rows held out from 1,000 and 5,000
    drawn ones; the held-out set was not looked at)."""

    def __init__(self, ngrams: int = 2, alpha: float = 1.0, c: float = 1.0, beta: float = 0.25):
        from sklearn.feature_extraction.text import CountVectorizer

        self.alpha, self.c, self.beta = alpha, c, beta
        # Single letters and digits count as words ("i", "a", "9"): the paper keeps every token.
        self.vectorizer = CountVectorizer(
            ngram_range=(1, ngrams), binary=True, token_pattern=r"(?u)\b\w+\b"
        )

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> NBSVM:
        from sklearn.svm import LinearSVC

        features = self.vectorizer.fit_transform(texts)
        y = np.asarray(labels)
        if set(np.unique(y)) != {0, 1}:
            raise ValueError("NB-SVM here is binary: labels must be 0 and 1")
        p = self.alpha + np.asarray(features[y == 1].sum(axis=0)).ravel()
        q = self.alpha + np.asarray(features[y == 0].sum(axis=0)).ravel()
        self.r = np.log((p / p.sum()) / (q / q.sum()))
        svm = LinearSVC(C=self.c, max_iter=10_000).fit(features.multiply(self.r).tocsr(), y)
        w = svm.coef_.ravel()
        self.w = (1 - self.beta) * np.abs(w).mean() + self.beta * w
        self.b = self.beta * float(svm.intercept_[0])
        return self

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        features = self.vectorizer.transform(texts).multiply(self.r).tocsr()
        return np.asarray(features @ self.w).ravel() + self.b

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.decision_function(texts) > 0).astype(int)


# ----------------------------------------------------------------------------------------------
# Data: the pool to draw from, the fixed held-out set, the drawn files


@dataclass
class Task:
    """Where training sets are drawn from and what every arm is scored on."""

    name: str
    pool: Reviews
    held_out: Reviews
    label_names: list[str]


def load_task(dataset: str, data_root: Path) -> Task:
    """SST-2 (train / validation), IMDB (train / 5,000 test reviews) or the built-in corpus."""
    source, held_split = {
        "sst2": (str(data_root / "sst2"), "validation"),
        "imdb": (str(data_root / "imdb"), "test"),
        "builtin": ("builtin", "test"),
    }[dataset]
    if dataset != "builtin" and not Path(source).is_dir():
        raise SystemExit(f"error: {source} not found (pass --data PATH)")
    cfg = DataConfig(source=source, validation_split=held_split, cache_dir=None)
    splits = load_splits(cfg, seed=0)
    held_out = splits.validation
    if dataset == "imdb":  # a fixed sample, the same in every run of this script
        rows = np.random.default_rng(0).permutation(len(held_out))[:IMDB_HELD_OUT]
        held_out = Reviews([held_out.texts[i] for i in rows], [held_out.labels[i] for i in rows])
    return Task(dataset, splits.train, held_out, splits.label_names)


def set_aside(task: Task, rows: int) -> Task:
    """``task`` scored on ``rows`` rows of its pool (one fixed permutation) instead of its
    held-out set, and drawing from the rest, so no training set holds a scored row."""
    if rows >= len(task.pool):
        raise SystemExit(
            f"error: --dev {rows} leaves nothing to draw from ({len(task.pool):,} rows)"
        )
    order = np.random.default_rng(1234).permutation(len(task.pool))
    dev, rest = (Reviews([task.pool.texts[i] for i in part], [task.pool.labels[i] for i in part])
                 for part in (order[:rows], order[rows:]))  # fmt: skip
    return Task(task.name, rest, dev, task.label_names)


def check_size(pool: Reviews, size: int) -> None:
    if size > len(pool):
        raise SystemExit(f"error: size {size:,} is larger than the pool ({len(pool):,} rows)")


def draw(pool: Reviews, size: int, seed: int) -> Reviews:
    """``size`` rows of ``pool``: the first of one permutation per seed, so sets are nested."""
    check_size(pool, size)
    rows = np.random.default_rng(seed).permutation(len(pool))[:size]
    return Reviews([pool.texts[i] for i in rows], [pool.labels[i] for i in rows])


def write_reviews(path: Path, reviews: Reviews, label_names: list[str]) -> Path:
    """A Parquet file with text and label columns, labels by name, as a user's file would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [label_names[i] for i in reviews.labels]
    pd.DataFrame({"text": reviews.texts, "label": labels}).to_parquet(path, index=False)
    return path


# ----------------------------------------------------------------------------------------------
# The arms


def recurrent_arm(
    arm: str, train_file: Path, held_out_file: Path | None, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train the recipe (or the same model from scratch) on ``train_file``; score the run with
    ``evaluate`` on the held-out file unless there is none (--validation-only)."""
    run_name = f"{arm}-{train_file.stem}"
    runs = args.out / "runs"
    shutil.rmtree(runs / run_name, ignore_errors=True)  # an earlier benchmark's run
    overrides = [
        f"data.source={train_file}", *EVERY_RUN, f"training.seed={seed}",
        f"output.dir={runs}", f"output.name={run_name}",
        *(SMOKE_MODEL if args.smoke else []),
        *(recipe_encoder(args) if arm == "recipe" else []),
        *(SCRATCH if arm == "scratch" else []),
        *args.set,
    ]  # fmt: skip
    config = load_config(args.config, overrides)
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    row = {
        "validation": result.metrics["validation"]["accuracy"],
        "seconds": seconds,
        "best_epoch": result.metrics["best_epoch"],
        "epochs_run": len(result.history),
    }
    start_from = result.metrics.get("pretraining", {})
    for key in ("words_from_encoder", "new_words"):  # the recipe's vocabulary
        if key in start_from:
            row[key] = start_from[key]
    if held_out_file is not None:
        start = time.perf_counter()
        row["held_out"] = evaluate(result.run_dir, source=str(held_out_file))["accuracy"]
        row["score_seconds"] = time.perf_counter() - start
        if args.by_length is not None:
            predictor = load_predictor(result.run_dir)
            guess = predictor.score(args.by_length.texts).argmax(axis=1)
            row.update(args.by_length.accuracies(guess))
            rescored = float((guess == args.by_length.labels).mean())
            if abs(rescored - row["held_out"]) > 1e-9:  # evaluate and predict read it alike
                print(f"warning: the predictor scored {rescored:.4f}, "
                      f"evaluate {row['held_out']:.4f}")  # fmt: skip
    if not args.keep_runs:
        shutil.rmtree(result.run_dir, ignore_errors=True)
    return row


def recipe_encoder(args: argparse.Namespace) -> list[str]:
    """The recipe arm's override for --encoder (a --set after it still wins)."""
    return [f"pretraining.from={args.encoder}"] if args.encoder else []


def linear_arm(
    arm: str, train: Reviews, held_out: Reviews, by_length: Halves | None = None
) -> dict[str, Any]:
    """Fit TF-IDF + LR or NB-SVM on all of ``train``; score on ``held_out`` (and on its halves
    by length; TF-IDF + LR's figures are its own ``tfidf_baseline``'s, no halves)."""
    if arm == "tfidf":
        splits = DataSplits(train, Reviews([], []), held_out)
        scored = tfidf_baseline(splits)
        return {"held_out": scored["accuracy"], "seconds": scored["train_seconds"]}
    start = time.perf_counter()
    model = NBSVM().fit(train.texts, train.labels)
    seconds = time.perf_counter() - start
    guess = model.predict(held_out.texts)
    row = {"held_out": float((guess == np.asarray(held_out.labels)).mean()), "seconds": seconds}
    return row | (by_length.accuracies(guess) if by_length is not None else {})


@dataclass
class Halves:
    """The held-out reviews split at their median length in words (whitespace-separated, the
    same count for every arm): the shorter half (at most the median) and the longer half."""

    texts: list[str]
    labels: np.ndarray
    long: np.ndarray  # True: longer than the median
    median: float

    @classmethod
    def of(cls, held_out: Reviews) -> Halves:
        words = np.array([len(text.split()) for text in held_out.texts])
        median = float(np.median(words))
        return cls(list(held_out.texts), np.asarray(held_out.labels), words > median, median)

    def accuracies(self, guess: np.ndarray) -> dict[str, float]:
        """Accuracy on the shorter and the longer half of the held-out set."""
        right = np.asarray(guess) == self.labels
        return {"held_out_short": float(right[~self.long].mean()),
                "held_out_long": float(right[self.long].mean())}  # fmt: skip


def run_all(
    task: Task, args: argparse.Namespace, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every arm on every (size, seed) not in ``rows`` already; one row each, added to ``rows``
    and saved as it goes."""
    held_out_file = None
    if not args.validation_only:
        held_out_file = write_reviews(
            args.out / "data" / f"{task.name}-{'dev' if args.dev else 'held-out'}.parquet",
            task.held_out,
            task.label_names,
        )
    scored = "dev" if args.dev else "held_out"
    if args.by_length:
        args.by_length = Halves.of(task.held_out)
        print(
            f"by length: {int((~args.by_length.long).sum()):,} reviews of at most "
            f"{args.by_length.median:g} words, {int(args.by_length.long.sum()):,} longer"
        )
    done = {(r["arm"], r["size"], r["seed"]) for r in rows}
    for size in args.sizes:
        for seed in seed_range(args):
            drawn = draw(task.pool, size, seed)
            train_file = write_reviews(
                args.out / "data" / f"{task.name}-{size}-seed{seed}.parquet",
                drawn,
                task.label_names,
            )
            for arm in args.arms:
                if (arm, size, seed) in done:
                    print(progress_line(saved(rows, arm, size, seed), scored) + " (saved)")
                    continue
                if arm in ("recipe", "scratch"):
                    row = recurrent_arm(arm, train_file, held_out_file, seed, args)
                elif args.validation_only:
                    continue  # the baselines have nothing to tune and nothing else to score
                else:
                    row = linear_arm(arm, drawn, task.held_out, args.by_length)
                rows.append({"arm": arm, "size": size, "seed": seed, **row, "commit": COMMIT})
                print(progress_line(rows[-1], scored), flush=True)
                save(rows, args, task.name)
    return rows


def seed_range(args: argparse.Namespace) -> range:
    """The seeds asked for: --seeds of them from --first-seed (a draw depends on its size and
    seed only, so one seed of a cell can be run, or rerun, on its own)."""
    return range(args.first_seed, args.first_seed + args.seeds)


def saved(rows: list[dict[str, Any]], arm: str, size: int, seed: int) -> dict[str, Any]:
    return next(r for r in rows if (r["arm"], r["size"], r["seed"]) == (arm, size, seed))


def requested(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows this invocation asked for (a resumed file can hold more)."""
    wanted = {(arm, size, seed) for arm in args.arms for size in args.sizes
              for seed in seed_range(args)}  # fmt: skip
    return [r for r in rows if (r["arm"], r["size"], r["seed"]) in wanted]


def progress_line(row: dict[str, Any], scored: str = "held_out") -> str:
    """One run's figures; ``scored`` names what the "held_out" key was scored on."""
    names = {"held_out": scored, "validation": "validation"}
    figures = [f"{names[key]} {row[key]:.4f}" for key in names if key in row]
    if "best_epoch" in row:
        figures.append(f"best epoch {row['best_epoch']}/{row['epochs_run']}")
    return f"  {row['size']:>6} seed {row['seed']} {row['arm']:<8} " + ", ".join(
        [*figures, f"{row['seconds']:.1f} s"]
    )


# ----------------------------------------------------------------------------------------------
# Tables, plot


def by_seed(rows: list[dict[str, Any]], arm: str, size: int, key: str) -> dict[int, float]:
    """``key`` of ``arm`` at ``size``, by seed."""
    return {r["seed"]: r[key] for r in rows if (r["arm"], r["size"]) == (arm, size) and key in r}


def figures(rows: list[dict[str, Any]], arm: str, size: int, key: str) -> list[float]:
    """``key`` of ``arm`` at ``size``, in seed order."""
    return [value for _, value in sorted(by_seed(rows, arm, size, key).items())]


def mean_std(
    values: list[float], scale: float = 1.0, digits: int = 4, sign: str = "", of: int = 0
) -> str:
    """Mean ± sample standard deviation, times ``scale``; one value alone, without a spread it
    does not have; and how many seeds when fewer than ``of`` (a run still going, or resumed)."""
    if not values:
        return "-"
    text = f"{np.mean(values) * scale:{sign}.{digits}f}"
    if len(values) > 1:
        text += f" ± {float(np.std(values, ddof=1)) * scale:.{digits}f}"
    return text + (f" ({len(values)} of {of} seeds)" if len(values) < of else "")


def markdown(rows: list[dict[str, Any]], arms: list[str], key: str) -> str:
    """Accuracy (``key``: held_out or validation) per size and arm, and the recipe's margin over
    NB-SVM in points, paired by seed; then mean wall time per run."""
    sizes = sorted({r["size"] for r in rows})
    shown = [arm for arm in arms if any(r["arm"] == arm and key in r for r in rows)]
    margin = key == "held_out" and {"recipe", "nbsvm"} <= set(shown)
    head = ["labelled examples", *(ARM_NAMES[a] for a in shown)]
    head += ["recipe − NB-SVM (points)"] if margin else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    seeds = max((len(figures(rows, a, size, key)) for a in shown for size in sizes), default=0)
    for size in sizes:
        cells = [f"{size:,}", *(mean_std(figures(rows, a, size, key), of=seeds) for a in shown)]
        if margin:
            recipe, nbsvm = (by_seed(rows, arm, size, key) for arm in ("recipe", "nbsvm"))
            gaps = [recipe[seed] - nbsvm[seed] for seed in sorted(recipe.keys() & nbsvm.keys())]
            cells.append(mean_std(gaps, scale=100, digits=1, sign="+", of=seeds))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Wall time per run (seconds, mean over seeds; the recurrent arms: train() end "
              "to end, reading the file and learning the vocabulary included):", "",
              "| labelled examples | " + " | ".join(ARM_NAMES[a] for a in shown) + " |",
              "|" + " --- |" * (len(shown) + 1)]  # fmt: skip
    for size in sizes:
        times = [figures(rows, a, size, "seconds") for a in shown]
        cells = [f"{np.mean(seconds):.1f}" if seconds else "-" for seconds in times]
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    totals = ", ".join(
        f"{ARM_NAMES[a]} {sum(r['seconds'] for r in rows if r['arm'] == a) / 60:.1f} min"
        for a in shown
    )
    return "\n".join([*lines, "", f"Total fitting time per arm: {totals}."]) + "\n"


def length_markdown(rows: list[dict[str, Any]]) -> str:
    """The recipe's and NB-SVM's held-out accuracy on the shorter and the longer half of the
    held-out reviews, and the recipe's margin on each, paired by seed ("" when no row has
    them: --by-length was not given)."""
    halves = ("held_out_short", "held_out_long")
    sizes = sorted({r["size"] for r in rows if halves[0] in r and r["arm"] == "recipe"})
    if not sizes or not any(r["arm"] == "nbsvm" and halves[0] in r for r in rows):
        return ""
    head = ["labelled examples", "recipe, shorter half", "recipe, longer half",
            "NB-SVM, shorter half", "NB-SVM, longer half", "recipe − NB-SVM, shorter (points)",
            "recipe − NB-SVM, longer (points)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for size in sizes:
        cells = [f"{size:,}"]
        cells += [mean_std(figures(rows, arm, size, half))
                  for arm in ("recipe", "nbsvm") for half in halves]  # fmt: skip
        for half in halves:
            recipe, nbsvm = (by_seed(rows, arm, size, half) for arm in ("recipe", "nbsvm"))
            gaps = [recipe[seed] - nbsvm[seed] for seed in sorted(recipe.keys() & nbsvm.keys())]
            cells.append(mean_std(gaps, scale=100, digits=1, sign="+"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(["By length (the held-out reviews split at their median length in words):",
                      "", *lines]) + "\n"  # fmt: skip


def plot(rows: list[dict[str, Any]], arms: list[str], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for arm in arms:
        means = [np.mean(figures(rows, arm, s, "held_out") or [np.nan]) for s in sizes]
        stds = [np.std(figures(rows, arm, s, "held_out") or [np.nan]) for s in sizes]
        axes.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=ARM_NAMES[arm])
    axes.set_xscale("log")
    axes.minorticks_off()  # the log axis's own minor labels ("6 x 10^2") clash with the sizes
    axes.set_xticks(sizes, [f"{s:,}" for s in sizes])
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel("held-out accuracy")
    titles = {"sst2": "SST-2 validation (872 sentences)", "imdb": f"IMDB test ({IMDB_HELD_OUT:,})"}
    held = titles.get(dataset, f"{dataset} held-out set")
    axes.set_title(f"Small labelled sets: {held}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def save(rows: list[dict[str, Any]], args: argparse.Namespace, dataset: str) -> None:
    scored_on = (
        "carved validation" if args.validation_only
        else f"{args.dev} pool rows set aside (dev)" if args.dev
        else "held-out set"
    )  # fmt: skip
    data = {"argv": sys.argv[1:], "dataset": dataset, "encoder": args.encoder,
            "held_out_is": scored_on, "settings": args.settings, "rows": rows}  # fmt: skip
    path = args.out / f"{dataset}.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(data, indent=2) + "\n")
    path.with_suffix(".json.tmp").replace(path)  # a kill mid-write keeps the last whole file


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a row's figures depend on besides its arm, size and seed: the recipe as resolved
    (config file and --set), the encoder, the data and what is scored."""
    try:  # a bad --set or encoder fails now, not at the first recurrent run
        config = load_config(args.config, list(args.set))
        encoder = load_config(args.config, [*recipe_encoder(args), *args.set]).pretraining.from_
        manifest = resolve_encoder(encoder) / MANIFEST_FILE if encoder else None
        encoder_files = hashlib.sha256()  # its manifest lists every file's checksum
        if manifest is not None and manifest.is_file():
            with manifest.open("rb") as stream:
                encoder_files = hashlib.file_digest(stream, "sha256")
        elif manifest is not None and "recipe" in args.arms:
            raise SystemExit(
                f"error: {manifest.parent} is no encoder (it has no {MANIFEST_FILE}); give "
                "the directory rnn-sentiment pretrain wrote, or leave --encoder out"
            )
    except (ConfigError, CheckpointError, OSError) as error:
        raise SystemExit(f"error: {error}") from None
    resolved = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return {
        "dataset": args.dataset,
        "data": str(args.data.resolve()),
        "dev": args.dev,
        "validation_only": args.validation_only,
        "smoke": args.smoke,
        "encoder": args.encoder,
        "config_sha256": hashlib.sha256(resolved).hexdigest(),
        "encoder_sha256": encoder_files.hexdigest(),  # a retrained encoder: another recipe
    }


def resumed_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows an earlier run saved under --out, when --resume is given and they were made with
    the same settings; a one-line error when they were not."""
    path = args.out / f"{args.dataset}.json"
    if not args.resume or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        old, rows = data.get("settings"), list(data["rows"])
        runs = [(r["arm"], r["size"], r["seed"]) for r in rows]
        whole = all(isinstance(r["seconds"], float | int) for r in rows) and all(
            isinstance(r["validation" if args.validation_only else "held_out"], float | int)
            for r in rows
            if r["arm"] in ("recipe", "scratch") or not args.validation_only
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        whole, runs = False, []
    if not whole or len(set(runs)) != len(runs):
        raise SystemExit(
            f"error: {path} is not a whole results file of this script (a row lacks its "
            "figures, or a run is there twice); pass another --out"
        )
    if old != args.settings:
        keys = sorted(set(args.settings) | set(old if isinstance(old, dict) else {}))
        differ = (
            "all"
            if not isinstance(old, dict)
            else next(k for k in keys if old.get(k) != args.settings.get(k))
        )
        raise SystemExit(
            f"error: {path} holds runs made with other settings ({differ} differs); pass "
            "another --out, or drop --resume to start over"
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Main


def smoke_encoder(args: argparse.Namespace) -> str:
    """A tiny encoder pretrained on the built-in corpus in a few seconds."""
    config = load_config(args.config, [
        "data.source=builtin", "data.cache_dir=null", "pretraining.from=null",
        "pretraining.lm.epochs=1", "pretraining.lm.samples=64", "pretraining.lm.batch_size=32",
        *SMOKE_MODEL, f"output.dir={args.out}", "output.name=smoke-encoder",
    ])  # fmt: skip
    shutil.rmtree(args.out / "smoke-encoder", ignore_errors=True)
    return str(pretrain(config).encoder_dir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dataset", choices=("sst2", "imdb", "builtin"), default="sst2")
    parser.add_argument(
        "--sizes",
        default="500,1000,2000,5000,10000",
        help="labelled training examples, comma-separated",
    )
    parser.add_argument("--seeds", type=int, default=3, help="draws (and training seeds) per size")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="the first seed: the seeds are K, K+1, ... (default 0)",
    )
    parser.add_argument("--arms", default=",".join(ARMS), help=f"any of {', '.join(ARMS)}")
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder directory for the recipe (default: the config's pretraining.from)",
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="the recipe")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for both recurrent arms (repeatable)",
    )
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="score the recurrent arms on their carved validation split only, "
        "never reading the held-out set (for tuning)",
    )
    parser.add_argument(
        "--dev",
        type=int,
        default=0,
        metavar="N",
        help="score every arm on N pool rows set aside before drawing, never scoring the "
        "held-out set (for tuning; on IMDB the shipped encoder has read these texts, not "
        "their labels, as it has every training review)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "small-data",
        help="drawn data files, runs and results (keep it out of the repo)",
    )
    parser.add_argument(
        "--by-length",
        action="store_true",
        help="also score the recipe and NB-SVM on the shorter and the longer half of the "
        "held-out reviews (split at their median length in words; the recipe's held-out "
        "reviews are scored a second time, by its predictor)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="save the learning curves here")
    parser.add_argument("--keep-runs", action="store_true", help="keep every run directory")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs saved in OUT/<dataset>.json by an earlier run with the same settings "
        "and run only the missing (arm, size, seed)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="fit nothing: print the tables (and --plot) of the runs saved in OUT/<dataset>.json "
        "with the same settings, for a run stopped or still going; a cell with fewer seeds "
        "than the rest says how many it has",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny models on the built-in corpus, sizes 200,400, one seed; a "
        "tiny encoder pretrained first unless --encoder is given",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.seeds = "builtin", 1
        if args.sizes == parser.get_default("sizes"):
            args.sizes = "200,400"
    if args.seeds < 1 or args.first_seed < 0:
        parser.error("--seeds takes 1 or more, --first-seed 0 or more")
    if args.dev < 0:
        parser.error("--dev takes a number of rows, 1 or more")
    if args.dev and args.validation_only:
        parser.error("--dev and --validation-only are two ways to tune: pass one")
    if args.report and args.smoke:
        parser.error("--smoke fits tiny models; --report fits nothing: pass one")
    args.resume = args.resume or args.report
    if args.by_length and args.validation_only:
        parser.error("--by-length scores the held-out set; --validation-only never does")
    args.by_length = args.by_length or None  # run_all makes it the Halves of the held-out set
    if args.plot is not None and (args.dev or args.validation_only):
        parser.error("--plot draws held-out learning curves: leave it out when tuning")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        args.sizes = []
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes takes one or more positive counts, e.g. 500,1000")
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke and args.encoder is None and "recipe" in args.arms:
        args.encoder = smoke_encoder(args)  # first: the settings name the encoder used
    args.settings = settings(args)
    rows = resumed_rows(args)
    if args.report:
        report(requested(rows, args), args)
        return
    task = load_task(args.dataset, args.data)
    if args.dev:
        task = set_aside(task, args.dev)
    check_size(task.pool, max(args.sizes))  # now, not hours in
    print(
        f"{task.name}: drawing from {len(task.pool):,} labelled rows, "
        + ("scoring the carved validation only" if args.validation_only
           else f"{len(task.held_out):,} pool rows set aside to score" if args.dev
           else f"held-out set of {len(task.held_out):,}")
        + f"; sizes {args.sizes}, {args.seeds} seeds, arms {args.arms}",
        flush=True,
    )  # fmt: skip
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report(requested(run_all(task, args, rows), args), args, f"started {started}")


def report(rows: list[dict[str, Any]], args: argparse.Namespace, when: str = "") -> None:
    """Print the tables of ``rows`` (and plot them); a fitting run also writes them to OUT."""
    if not rows:
        raise SystemExit(
            f"error: {args.out / f'{args.dataset}.json'} holds no run of these sizes, seeds and "
            "arms with these settings; run without --report first"
        )
    key = "validation" if args.validation_only else "held_out"
    table = markdown(rows, args.arms, key)
    if lengths := length_markdown(rows):
        table += "\n" + lengths
    what = "carved validation" if args.validation_only else "set-aside" if args.dev else "held-out"
    when = when or "saved runs, nothing fitted"
    seeds = f"({args.first_seed} to {args.first_seed + args.seeds - 1})"
    header = (
        f"{args.dataset}, {what} accuracy, mean ± std over {args.seeds} seeds {seeds} "
        f"({when}; python scripts/benchmark_small_data.py {' '.join(sys.argv[1:])})"
    )
    if not args.report:
        (args.out / f"{args.dataset}.md").write_text(f"{header}\n\n{table}")
    print(f"\n{header}\n\n{table}")
    if args.plot is not None:
        plot(rows, args.arms, args.dataset, args.plot)
        print(f"plot: {args.plot}")
    if not args.report:
        print(f"written: {args.out / f'{args.dataset}.md'}, {args.out / f'{args.dataset}.json'}")


if __name__ == "__main__":
    main()
