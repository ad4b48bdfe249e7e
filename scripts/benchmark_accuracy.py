"""Train and evaluate the accuracy presets, next to a TF-IDF + logistic regression baseline.

    python scripts/benchmark_accuracy.py --data ../shared/data
    python scripts/benchmark_accuracy.py --data ../shared/data --presets imdb-gru,sst2-gru --reuse
    python scripts/benchmark_accuracy.py --data ../shared/data --run imdb-lstm=runs/my-lstm-run
    python scripts/benchmark_accuracy.py --data ../shared/data --presets imdb-lstm \
        --set training.max_minutes=2 --set data.max_train_samples=2000      # a quick smoke run

Each preset (``configs/<name>.yaml``) is trained with the project's own ``train`` on the local copy
of its dataset (hub ids such as ``stanfordnlp/imdb`` map to ``<data>/imdb``), then scored on its
held-out split: IMDB test (25,000 reviews), or SST-2 validation (872 sentences). In the same run a
TF-IDF (word 1-2 grams) + logistic regression baseline is fitted on exactly the same training rows
and scored on the same split, so each model's gain is measured side by side. ``bundled`` is also
scored on SST-2 validation. The table (Markdown) and all figures (JSON) are written to ``--out``.

Needs scikit-learn for the baseline: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.checkpoint import load_run
from rnn_sentiment.compare import LENGTH_BUCKETS, measure
from rnn_sentiment.config import Config, load_config
from rnn_sentiment.data.sources import DataSplits, load_splits
from rnn_sentiment.inference.evaluate import evaluate
from rnn_sentiment.runfiles import METRICS_FILE
from rnn_sentiment.training.loop import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESETS = "imdb-rnn,imdb-lstm,imdb-gru,sst2-lstm,sst2-gru,bundled"


class EpochPrinter(TrainCallback):
    def __init__(self, name: str) -> None:
        self.name = name

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        print(
            f"  {self.name} epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"val acc {record['val_accuracy']:.4f}, {record['seconds']:.0f} s",
            flush=True,
        )


def local_source(source: str, data_root: Path) -> str:
    """``stanfordnlp/imdb`` -> ``<data_root>/imdb`` when that folder exists; else unchanged."""
    local = data_root / source.rsplit("/", 1)[-1]
    return str(local) if "/" in source and local.is_dir() else source


def preset_config(name: str, data_root: Path, runs: Path, sets: list[str]) -> Config:
    base = load_config(CONFIGS / f"{name}.yaml")
    sources = [local_source(s, data_root) for s in base.data.extra_train_sources]
    overrides = [
        f"data.source={local_source(base.data.source, data_root)}",
        f"data.extra_train_sources={json.dumps(sources)}",
        f"output.dir={runs}",
        f"output.name={name}",
        *sets,
    ]
    return load_config(CONFIGS / f"{name}.yaml", overrides)


def recipe(config: Config) -> dict[str, Any]:
    """What decides a run's result: the config without where it is written, how many threads it
    used or how often it logs, and with data paths resolved."""
    tree = config.model_dump(mode="json")
    tree.pop("output")
    for key in ("num_threads", "log_every", "checkpoint_every", "keep_freed_memory"):
        tree["training"].pop(key)
    data = tree["data"]
    data["source"] = local_key(data["source"])
    data["extra_train_sources"] = [local_key(s) for s in data["extra_train_sources"]]
    data.pop("cache_dir")
    return tree


def local_key(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def trained_run(
    config: Config, name: str, reuse: bool, given: Path | None
) -> tuple[Path, dict[str, Any]]:
    """Train, or take a finished run of the same recipe (``given``, or with ``reuse`` the
    preset's own run directory)."""
    run_dir = given or Path(config.output.dir) / name
    if (given or reuse) and (run_dir / METRICS_FILE).is_file():
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        same = recipe(load_run(run_dir).config) == recipe(config)
        if metrics.get("status") == "complete" and same:
            print(f"{name}: reusing {run_dir}", flush=True)
            return run_dir, metrics
    if given is not None:
        raise SystemExit(f"error: {given} is not a finished run of configs/{name}.yaml")
    if run_dir.exists():  # another config's run: keep it, under a new name
        aside = run_dir.with_name(f"{name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"{name}: moved the earlier run to {aside}", flush=True)
    print(f"{name}: training", flush=True)
    result = train(config, EpochPrinter(name))
    return result.run_dir, result.metrics


def tfidf_baseline(splits: DataSplits) -> dict[str, float]:
    """TF-IDF + logistic regression fitted on ``splits.train``, scored on test (or validation)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(splits.train.texts)
    classifier = LogisticRegression(C=4.0, max_iter=1000).fit(features, splits.train.labels)
    seconds = time.perf_counter() - start
    held_out = splits.test if splits.test is not None else splits.validation
    guess = classifier.predict(vectorizer.transform(held_out.texts))
    truth = np.asarray(held_out.labels)
    return {
        "accuracy": float((guess == truth).mean()),
        "macro_f1": float(f1_score(truth, guess, average="macro")),
        "train_seconds": seconds,
    }


def data_key(config: Config) -> str:
    d = config.data
    return json.dumps([d.source, d.extra_train_sources, d.train_split, d.validation_split,
                       d.test_split, d.validation_fraction, d.max_train_samples,
                       config.training.seed])  # fmt: skip


def dataset_name(config: Config) -> str:
    name = Path(config.data.source).name
    return name + "".join(f"+{Path(s).name}" for s in config.data.extra_train_sources)


def run_preset(name: str, args: argparse.Namespace, baselines: dict[str, Any]) -> dict[str, Any]:
    config = preset_config(name, args.data, args.runs, args.set)
    given = dict(item.split("=", 1) for item in args.run).get(name)
    run_dir, metrics = trained_run(config, name, args.reuse, Path(given) if given else None)
    outcome = measure(config, run_dir, metrics)
    key = data_key(config)
    if key not in baselines:
        baselines[key] = tfidf_baseline(load_splits(config.data, config.training.seed))
    row: dict[str, Any] = {
        "preset": name,
        "dataset": dataset_name(config),
        "split": "test" if config.data.test_split else "validation",
        "cell": config.model.cell + (" bi" if config.model.bidirectional else ""),
        "accuracy": outcome.accuracy,
        "macro_f1": outcome.macro_f1,
        "parameters": outcome.parameters,
        "train_seconds": outcome.train_seconds,
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": len(metrics.get("history", [])),
        "by_length": outcome.by_length,
        "baseline": baselines[key],
        "run_dir": str(run_dir),
    }
    sst2 = args.data / "sst2"
    if name == "bundled" and sst2.is_dir():
        row["sst2_validation"] = evaluate(run_dir, str(sst2), "validation")["accuracy"]
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| preset | trained on | scored on | cell | accuracy | macro-F1 | TF-IDF+LR (same split)"
        " | error vs TF-IDF | parameters | training time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        base = r["baseline"]["accuracy"]
        lines.append(
            f"| {r['preset']} | {r['dataset']} | {r['split']} | {r['cell']} | "
            f"**{r['accuracy']:.4f}** | {r['macro_f1']:.4f} | {base:.4f} | "
            f"{(1 - r['accuracy']) / (1 - base):.2f}x | {r['parameters']:,} | "
            f"{r['train_seconds'] / 60:.1f} min |"
        )
    extra = [r for r in rows if "sst2_validation" in r]
    for r in extra:
        lines.append(f"\n{r['preset']}: SST-2 validation accuracy {r['sst2_validation']:.4f}")
    imdb = [r for r in rows if r["split"] == "test"]
    if imdb:
        labels = [label for label, _, _ in LENGTH_BUCKETS]
        lines += ["", "Accuracy by review length (tokens before truncation), held-out split:", "",
                  "| preset | " + " | ".join(labels) + " |",
                  "| --- |" + " --- |" * len(labels)]  # fmt: skip
        for r in imdb:
            cells = [r["by_length"][label] for label in labels]
            lines.append(
                f"| {r['preset']} | "
                + " | ".join(
                    "-" if c["accuracy"] is None else f"{c['accuracy']:.3f} ({c['n']})"
                    for c in cells
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    parser.add_argument(
        "--run", action="append", default=[], metavar="PRESET=RUN_DIR",
        help="use this finished run for a preset (its recipe must match)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a finished run of the same config instead of retraining",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every preset (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write <out>.md and <out>.json (default: <runs>/results)",
    )
    args = parser.parse_args()  # fmt: skip
    if not args.data.is_dir():
        raise SystemExit(f"error: data folder not found: {args.data} (pass --data PATH)")
    names = [name for name in args.presets.split(",") if name]
    missing = [name for name in names if not (CONFIGS / f"{name}.yaml").is_file()]
    if missing:  # before hours of training, not after
        raise SystemExit(f"error: no configs/{missing[0]}.yaml; presets are files in {CONFIGS}")
    baselines: dict[str, Any] = {}
    rows = [run_preset(name, args, baselines) for name in names]
    table = markdown(rows)
    out = args.out or args.runs / "results"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(table)
    print(f"written: {out.with_suffix('.md')}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
