"""Cold start and batch-scoring throughput of an exported (ONNX) model, next to PyTorch's.

usage: python scripts/bench_onnx.py [--model RUN_DIR] [--data ../shared/data/imdb/test.parquet]
           [--reviews 2000] [--repeat 3] [--threads 1] [--cells rnn,lstm] [--full]

Exports --model (default: the bundled model) in fp32 and in int8 to a temporary folder, then
prints, from one run:

1. Cold start, each in a fresh process, best of --repeat: ``python -c "import torch"``, and a
   process that loads the exported fp32 model and predicts one review without importing torch;
   their ratio (issue 19's goal: at most 0.35).
2. Batch scoring of --reviews test reviews (the first of --data when it exists, else the
   built-in test corpus), text pipeline included, --threads threads everywhere: reviews/s and
   accuracy of ONNX fp32, ONNX int8, and the PyTorch Predictor in fp32 and int8 (its default
   stepwise engine), best of two passes. --cells repeats this for models of --model's shape with
   another cell and random weights (the speed of a trained one; the accuracy is meaningless).
3. With --full, on every review of --data: the largest |probability difference| between ONNX
   fp32 and PyTorch (goal: at most 1e-4), and the accuracy of int8 against fp32 (goal: within
   0.3 points). About two minutes on one thread for the 25,000 IMDB test reviews.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rnn_sentiment.checkpoint import load_run, save_metrics, save_run_files, save_weights
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.exported import ExportedPredictor
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.model import build_model

ROOT = Path(__file__).parents[1]
IMDB_TEST = ROOT / ".." / "shared" / "data" / "imdb" / "test.parquet"
BUILTIN_TEST = ROOT / "rnn_sentiment" / "assets" / "builtin" / "test.jsonl"
REVIEW = "This movie is not good"
TORCH_FREE_PREDICT = """
import sys
from rnn_sentiment.inference.exported import ExportedPredictor
print(ExportedPredictor.from_dir(sys.argv[1]).predict([sys.argv[2]])[0].label)
assert "torch" not in sys.modules
"""


def load_reviews(
    data: Path, label_names: list[str], limit: int | None
) -> tuple[list[str], np.ndarray, str]:
    """Texts and labels (as indices into ``label_names``) and where they came from."""
    if data.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(data, columns=["text", "label"])
        if limit:  # evenly spaced: the shared files are sorted by label
            table = table.take(np.linspace(0, len(table) - 1, limit).astype(int))
        texts = [str(t) for t in table.column("text").to_pylist()]
        names = ["negative", "positive"]  # the shared data's 0 and 1
        labels = [label_names.index(names[y]) for y in table.column("label").to_pylist()]
        return texts, np.asarray(labels), f"{data.resolve()} ({len(texts):,} reviews)"
    rows = [json.loads(line) for line in BUILTIN_TEST.read_text(encoding="utf-8").splitlines()]
    rows = rows[:limit] if limit else rows
    indices = [label_names.index(r["label"]) for r in rows]
    return (
        [r["text"] for r in rows],
        np.asarray(indices),
        f"built-in test corpus ({len(rows):,} reviews)",
    )


def best_wall(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return min(times)


def cold_start(fp32: Path, repeat: int) -> None:
    torch_s = best_wall([sys.executable, "-c", "import torch"], repeat)
    onnx_s = best_wall([sys.executable, "-c", TORCH_FREE_PREDICT, str(fp32), REVIEW], repeat)
    # What a user types: the command line with its default model (the bundled model's exported
    # copy), argument parsing, model note and table included.
    cli = [sys.executable, "-m", "rnn_sentiment", "predict", REVIEW]
    cli_s = best_wall(cli, repeat)
    print(f"\ncold start, best of {repeat} fresh processes")
    rows = [
        ('python -c "import torch"', f"{torch_s:.3f} s"),
        ("exported fp32: load + predict 1 review", f"{onnx_s:.3f} s (torch never imported)"),
        ("ratio (goal <= 0.35)", f"{onnx_s / torch_s:.2f}"),
        (f'rnn-sentiment predict "{REVIEW}"', f"{cli_s:.3f} s (default model; goal <= 0.5 s)"),
        ("ratio to import torch (goal <= 0.35)", f"{cli_s / torch_s:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<42}{value}")


Scorer = Callable[[Sequence[str]], np.ndarray]


def throughput(scorers: dict[str, Scorer], texts: list[str], labels: np.ndarray) -> None:
    print(f"\nbatch scoring of {len(texts):,} reviews, text pipeline included, best of 2")
    print(f"  {'engine':<28}{'reviews/s':>10}{'accuracy':>10}")
    for name, score in scorers.items():
        score(texts[:64])  # warm-up: sessions, the stepwise engine's first batch
        best, probs = float("inf"), np.zeros(0)
        for _ in range(2):
            start = time.perf_counter()
            probs = score(texts)
            best = min(best, time.perf_counter() - start)
        accuracy = float((probs.argmax(axis=1) == labels).mean())
        print(f"  {name:<28}{len(texts) / best:>10,.0f}{accuracy:>10.4f}", flush=True)


def full_check(scorers: dict[str, Scorer], texts: list[str], labels: np.ndarray) -> None:
    print(f"\nevery review ({len(texts):,})", flush=True)
    probs = {name: score(texts) for name, score in scorers.items()}
    accuracy = {name: float((p.argmax(axis=1) == labels).mean()) for name, p in probs.items()}
    fp32, int8 = probs["ONNX fp32"], probs["ONNX int8"]
    difference = float(np.abs(fp32 - probs["PyTorch fp32"]).max())
    print(f"  ONNX fp32 max |dp| vs PyTorch fp32: {difference:.2e} (goal <= 1e-4)")
    print("  accuracy: " + ", ".join(f"{name} {value:.4f}" for name, value in accuracy.items()))
    points = 100 * (accuracy["ONNX int8"] - accuracy["ONNX fp32"])
    flips = int((int8.argmax(axis=1) != fp32.argmax(axis=1)).sum())
    print(
        f"  ONNX int8 - fp32 accuracy: {points:+.2f} points (goal within 0.3); labels changed: "
        f"{flips:,}; max |dp| {float(np.abs(int8 - fp32).max()):.3f}"
    )


def engines(run_dir: Path, folder: Path, threads: int) -> dict[str, Scorer]:
    """The four ways to score with ``run_dir``: ONNX fp32 and int8 (exported into ``folder``)
    and the PyTorch Predictor in fp32 and int8."""
    fp32 = export_model(run_dir, folder / "fp32")
    int8 = ExportedPredictor.from_dir(
        export_model(run_dir, folder / "int8", "int8"), threads=threads
    )
    sizes = [(d / "model.onnx").stat().st_size / 2**20 for d in (fp32, int8.path)]
    print(f"  model.onnx: fp32 {sizes[0]:.1f} MiB, int8 {sizes[1]:.1f} MiB")
    for note in int8.notes:
        print(f"  note: {note}")
    return {
        "ONNX fp32 (onnxruntime)": ExportedPredictor.from_dir(fp32, threads=threads).predict_proba,
        "ONNX int8 (onnxruntime)": int8.predict_proba,
        "PyTorch fp32 (Predictor)": Predictor.from_dir(run_dir).predict_proba,
        "PyTorch int8 (Predictor)": Predictor.from_dir(run_dir, quantize="int8").predict_proba,
    }


def random_run(model: Path, cell: str, folder: Path) -> Path:
    """A run directory shaped like ``model`` but of another cell, with random weights: its
    speed is that of a trained one, its accuracy meaningless."""
    run = load_run(model)
    config = run.config.model_copy(
        update={"model": run.config.model.model_copy(update={"cell": cell})}
    )
    run_dir = folder / f"random-{cell}"
    save_run_files(run_dir, config, run.tokenizer, run.label_names)
    torch.manual_seed(0)
    vocab = run.tokenizer.get_vocab_size()
    save_weights(run_dir, build_model(config.model, vocab, len(run.label_names)))
    save_metrics(run_dir, {"status": "complete"})
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL_DIR, help="a run directory")
    parser.add_argument("--data", type=Path, default=IMDB_TEST)
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cells", default="", help="e.g. rnn,lstm: random models of --model's shape"
    )
    parser.add_argument("--full", action="store_true", help="also check every review of --data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        folder = Path(tmp)
        print(f"model {args.model} ({load_run(args.model).config.model.cell})")
        scorers = engines(args.model, folder / "model", args.threads)
        cold_start(folder / "model" / "fp32", args.repeat)
        labels_of = Predictor.from_dir(args.model).label_names
        texts, labels, where = load_reviews(args.data, labels_of, args.reviews)
        print(f"\nreviews: {where}; threads: {args.threads}")
        throughput(scorers, texts, labels)
        for cell in filter(None, args.cells.split(",")):
            print(f"\n{cell}: random weights, the shape of {args.model} (accuracy meaningless)")
            run_dir = random_run(args.model, cell, folder)
            throughput(engines(run_dir, folder / cell, args.threads), texts, labels)
        if args.full:
            texts, labels, _ = load_reviews(args.data, labels_of, None)
            names = (
                "PyTorch fp32 (Predictor)",
                "ONNX fp32 (onnxruntime)",
                "ONNX int8 (onnxruntime)",
            )
            full_check({name.split(" (")[0]: scorers[name] for name in names}, texts, labels)


if __name__ == "__main__":
    main()
