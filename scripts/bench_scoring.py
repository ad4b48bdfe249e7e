"""Throughput, accuracy and peak memory of batch scoring on the IMDB test reviews.

usage: python scripts/bench_scoring.py --model RUN_DIR [--data ../shared/data/imdb/test.parquet]
           [--batch-size 256] [--threads 2] [--single 2000] [--limit N] [--cells rnn,lstm]
       python scripts/bench_scoring.py --model RUN_DIR --million [--rows 1000000] [--dtype int8]
       python scripts/bench_scoring.py --model MODEL --engine ray [--limit 5000] [--workers 2]
           [--threads 2] [--chunk-size 500]

The first form prints one table: reviews/s and accuracy for (a) a plain baseline that pads each
batch to its longest review in input order, (b) the project's scoring path in fp32 (reading the
Parquet file, length-sorted chunks, writing a CSV), (c) the same with --quantize int8, (d) with
--dtype bf16, and (e) a one-review-at-a-time loop timed on the first --single reviews; then
(f) the scoring path in fp32 on PyTorch's own recurrent layers (``stepwise=False``, what the
scoring path ran before the stepwise scorer), and (g), (h) the scoring path with the model
exported (``export_model``, into a temporary folder) to ONNX in fp32 and in int8, run by
onnxruntime as ``predict`` runs an exported model (its own batch size); then the speed-ups, the
largest probability difference of ONNX fp32 from (b) and of ONNX int8's accuracy from ONNX fp32's
(issue 19's goals: at most 1e-4, within 0.3 points), the peak resident memory of this process,
and the fastest engine for the model's cell. --cells times the four engines (PyTorch and ONNX,
fp32 and int8) again for models of --model's shape with another cell and random weights (the
speed of a trained one; their accuracy is meaningless) and names the fastest for each cell.
Cold start (an exported model never imports torch) is scripts/bench_startup.py's.

--million writes a file of --rows reviews (the test reviews repeated) to a temporary folder, scores
it with the real CLI in a subprocess and reports that subprocess's peak resident memory.

--engine ray scores the same file (the first --limit reviews) side by side: the real CLI in a
subprocess with --threads threads (its own scoring time, and its wall time with the process
start) and with one thread, then Ray Data with --workers workers of one thread each
(score_with_ray, with Ray started beforehand, as a cluster is; its start is timed apart). All
use --chunk-size (workers share the file chunk by chunk) and must write the same rows; the CLI
also runs at its default chunk size. It prints the ratio of the rates, one worker's rate (rows /
the workers' busy seconds) and the time 100 million reviews would take on N machines at it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnn_sentiment.checkpoint import load_run, save_metrics, save_run_files, save_weights
from rnn_sentiment.data.batching import collate
from rnn_sentiment.data.sources import to_reviews
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.exported import ONNX_FILE, ExportedPredictor, default_batch_size
from rnn_sentiment.inference.models import load_predictor
from rnn_sentiment.inference.predictor import Predictor, set_threads
from rnn_sentiment.inference.scoring import Scorer, ScoringOptions, score_file
from rnn_sentiment.model import build_model

Row = tuple[str, float, float, str]  # variant, reviews/s, accuracy, reviews


def load_test(path: Path, label_names: list[str]) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["text", "label"])
    texts = [str(t) for t in table.column("text").to_pylist()]
    labels = to_reviews((texts, table.column("label").to_pylist()), label_names).labels
    return texts, np.asarray(labels)


def limited(data: Path, rows: int, work: Path) -> Path:
    """The first ``rows`` reviews of ``data`` as a Parquet file in ``work`` (quick checks)."""
    import pyarrow.parquet as pq

    path = work / "limited.parquet"
    pq.write_table(pq.read_table(data).slice(0, rows), path)
    return path


def baseline(predictor: Predictor, texts: list[str], batch_size: int) -> np.ndarray:
    """Tokenize, then batches in input order, each padded to its longest review."""
    ids = predictor.run.pipeline.encode(texts)
    model = predictor.run.model
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            tokens, lengths = collate(ids[start : start + batch_size])
            out.append(torch.softmax(model(tokens, lengths), dim=-1).numpy())
    return np.concatenate(out).argmax(1)


def project_path(predictor: Scorer, data: Path, work: Path, tag: str) -> np.ndarray:
    """The real thing: score_file from the Parquet file to ``scored-TAG.csv``, then read the
    labels back."""
    out = work / f"scored-{tag}.csv"
    score_file(predictor, data, out, ScoringOptions(keep_columns="none"))
    import csv

    with out.open(newline="") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    index = {name: i for i, name in enumerate(predictor.label_names)}
    return np.asarray([index[label] for label in labels])


def scored_probs(work: Path, tag: str, label_names: list[str]) -> np.ndarray:
    """The probabilities [n, labels] that :func:`project_path` wrote (6 decimals)."""
    import csv

    with (work / f"scored-{tag}.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.asarray([[float(row[f"p_{name}"]) for name in label_names] for row in rows])


def one_at_a_time(predictor: Predictor, texts: list[str]) -> np.ndarray:
    return np.asarray([int(predictor.predict_proba([t])[0].argmax()) for t in texts])


def timed(action: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def bench(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    fp32 = Predictor.from_dir(args.model, args.batch_size)
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    data = limited(args.data, args.limit, work) if args.limit else args.data
    texts, labels = load_test(data, fp32.label_names)
    rows: list[Row] = []

    def path_row(name: str, predictor: Scorer, tag: str) -> None:
        guess, seconds = timed(lambda: project_path(predictor, data, work, tag))
        rows.append((name, len(texts) / seconds, float((guess == labels).mean()), f"{len(texts)}"))

    guess, seconds = timed(lambda: baseline(fp32, texts, args.batch_size))
    rows.append(("(a) baseline: input order, padded to longest", len(texts) / seconds,
                 float((guess == labels).mean()), f"{len(texts)}"))  # fmt: skip
    variants: list[tuple[str, Any, Any]] = [
        ("(b) scoring path fp32, length-sorted", None, "fp32"),
        ("(c) scoring path --quantize int8", "int8", "fp32"),
        ("(d) scoring path --dtype bf16", None, "bf16"),
    ]
    for name, quantize, dtype in variants:
        predictor = Predictor.from_dir(args.model, args.batch_size, quantize, dtype)
        path_row(name, predictor, quantize or dtype)
    subset = texts[: args.single]
    guess, seconds = timed(lambda: one_at_a_time(fp32, subset))
    accuracy = float((guess == labels[: args.single]).mean())
    rows.append(("(e) one review at a time", len(subset) / seconds, accuracy, f"{len(subset)}"))
    layers = Predictor.from_dir(args.model, args.batch_size, stepwise=False)
    path_row("(f) fp32 length-sorted, PyTorch nn layers", layers, "layers")
    exported = export_both(args.model, work / "exported")
    for letter, (precision, path) in zip("gh", exported.items(), strict=True):
        onnx = load_predictor(path, threads=args.threads)
        path_row(f"({letter}) exported ONNX {precision}, onnxruntime", onnx, f"onnx-{precision}")
    print_table(args, rows)
    print_exported(exported, work, fp32.label_names, rows)
    speeds = {cell_name(args.model, "this model"): engine_speeds(rows)}
    for cell in filter(None, args.cells.split(",")):
        run_dir = random_run(args.model, cell, work / f"random-{cell}")
        speeds[f"{cell} (random weights)"] = cell_speeds(run_dir, data, work, args)
    print_fastest(speeds)


ENGINES = ("PyTorch fp32", "PyTorch int8", "ONNX fp32", "ONNX int8")  # (b), (c), (g), (h)


def engine_speeds(rows: list[Row]) -> dict[str, float]:
    """reviews/s of the four engines on the scoring path, from the table's rows."""
    return dict(zip(ENGINES, (rows[i][1] for i in (1, 2, 6, 7)), strict=True))


def export_both(run_dir: Path, folder: Path) -> dict[str, Path]:
    """``run_dir`` exported to ONNX in fp32 and in int8 (onnxruntime's dynamic quantization)."""
    return {"fp32": export_model(run_dir, folder / "fp32"),
            "int8": export_model(run_dir, folder / "int8", "int8")}  # fmt: skip


def print_table(args: argparse.Namespace, rows: list[Row]) -> None:
    import onnxruntime

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_scoring {when}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}; onnxruntime "
          f"{onnxruntime.__version__}, batch {default_batch_size(args.threads)}")  # fmt: skip
    print(f"model {args.model}, data {args.data}")
    print(f"{'variant':<46} {'reviews/s':>10} {'accuracy':>9} {'reviews':>8}")
    for name, rate, accuracy, n in rows:
        print(f"{name:<46} {rate:>10,.0f} {accuracy:>9.4f} {n:>8}")
    fp32_accuracy = rows[1][2]
    scoring_paths = rows[1:4] + rows[5:8]  # (b)-(d), (f)-(h): every engine on the real path
    eligible = [r for r in scoring_paths if fp32_accuracy - r[2] <= 0.003]
    fastest = max(eligible, key=lambda r: r[1])
    single = rows[4][1]
    print(f"fastest within 0.3 points of fp32: {fastest[0][4:]} at {fastest[1]:,.0f} reviews/s "
          f"({(fastest[2] - fp32_accuracy) * 100:+.2f} points)")  # fmt: skip
    print(f"  = {fastest[1] / single:.1f}x one-at-a-time, {fastest[1] / rows[0][1]:.1f}x the "
          f"input-order baseline, {fastest[1] / rows[1][1]:.1f}x fp32 length-sorted")  # fmt: skip
    print(f"fp32 length-sorted = {rows[1][1] / rows[0][1]:.1f}x the input-order baseline, "
          f"{rows[1][1] / rows[5][1]:.1f}x the same on PyTorch nn layers")  # fmt: skip
    print(f"compiled steps in (b) and (c): {compiled_steps()}")
    print(f"peak resident memory of this process: {peak_rss_mib():,.0f} MiB")


def compiled_steps() -> str:
    """Whether the stepwise engine ran its compiled steps (built on first use), or why not."""
    from rnn_sentiment.inference.engine import native_allowed
    from rnn_sentiment.inference.native import failure, kernels

    if not native_allowed():
        return "off (RNN_SENTIMENT_NATIVE=0)"
    return "used" if kernels() is not None else f"not built ({failure()})"


def print_exported(
    exported: dict[str, Path], work: Path, label_names: list[str], rows: list[Row]
) -> None:
    """The exported files' sizes and notes, and issue 19's two goals, from the CSVs written."""
    sizes = ", ".join(f"{p} {(d / ONNX_FILE).stat().st_size / 2**20:.1f} MiB"
                      for p, d in exported.items())  # fmt: skip
    print(f"exported {ONNX_FILE}: {sizes}")
    for note in ExportedPredictor.from_dir(exported["int8"]).info.onnx.notes:
        print(f"  note: {note}")
    torch_fp32, onnx_fp32 = (scored_probs(work, tag, label_names) for tag in ("fp32", "onnx-fp32"))
    difference = float(np.abs(onnx_fp32 - torch_fp32).max())
    points = (rows[7][2] - rows[6][2]) * 100
    print(f"ONNX fp32 max |dp| from (b), 6-decimal CSVs: {difference:.1e} (goal <= 1e-4); "
          f"ONNX int8 - fp32 accuracy: {points:+.2f} points (goal within 0.3)")  # fmt: skip


def cell_name(run_dir: Path, what: str) -> str:
    return f"{load_run(run_dir).config.model.cell} ({what})"


def random_run(model: Path, cell: str, run_dir: Path) -> Path:
    """A run directory shaped like ``model`` but of another cell, with random weights: its
    speed is that of a trained one, its accuracy meaningless."""
    run = load_run(model)
    config = run.config.model_copy(
        update={"model": run.config.model.model_copy(update={"cell": cell})}
    )
    save_run_files(run_dir, config, run.tokenizer, run.label_names)
    torch.manual_seed(0)
    vocab = run.tokenizer.get_vocab_size()
    save_weights(run_dir, build_model(config.model, vocab, len(run.label_names)))
    save_metrics(run_dir, {"status": "complete"})
    return run_dir


def cell_speeds(
    run_dir: Path, data: Path, work: Path, args: argparse.Namespace
) -> dict[str, float]:
    """reviews/s of the four engines on the scoring path with ``run_dir``."""
    exported = export_both(run_dir, run_dir.parent / f"{run_dir.name}-exported")
    scorers: list[Scorer] = [
        Predictor.from_dir(run_dir, args.batch_size),
        Predictor.from_dir(run_dir, args.batch_size, "int8"),
        load_predictor(exported["fp32"], threads=args.threads),
        load_predictor(exported["int8"], threads=args.threads),
    ]
    speeds = {}
    for i, (engine, scorer) in enumerate(zip(ENGINES, scorers, strict=True)):
        started = time.perf_counter()
        guess = project_path(scorer, data, work, f"{run_dir.name}-{i}")
        speeds[engine] = len(guess) / (time.perf_counter() - started)
    return speeds


def print_fastest(speeds: dict[str, dict[str, float]]) -> None:
    print("fastest per cell of PyTorch (compiled steps) and ONNX, fp32 and int8, scoring path:")
    for cell, rates in speeds.items():
        ranked = sorted(rates.items(), key=lambda item: -item[1])
        order = " > ".join(f"{engine} {rate:,.0f}" for engine, rate in ranked)
        print(f"  {cell:<24} {ranked[0][0]:<13} ({order})")


def million(args: argparse.Namespace) -> None:
    """Write ``--rows`` reviews (repeated test reviews) and score them with the CLI."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="bench-million-") as folder:
        big = Path(folder) / "reviews.parquet"
        source = pq.read_table(args.data, columns=["text", "label"])
        written = 0
        with pq.ParquetWriter(big, source.schema) as writer:
            while written < args.rows:
                part = source.slice(0, min(source.num_rows, args.rows - written))
                writer.write_table(part)
                written += part.num_rows
        size = big.stat().st_size / 2**20
        out = Path(folder) / "scored.csv"
        command = [sys.executable, "-m", "rnn_sentiment", "predict", "-m", str(args.model),
                   "-i", str(big), "-o", str(out), "-q"]  # fmt: skip
        command += ["--quantize", "int8"] if args.dtype == "int8" else ["--dtype", args.dtype]
        if args.threads:
            command += ["--threads", str(args.threads)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"scoring failed: {done.stderr.strip()}")
        with out.open("rb") as handle:
            lines = sum(1 for _ in handle) - 1
        print(f"bench_scoring --million {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, "
              f"{os.cpu_count()} CPU cores")  # fmt: skip
        print(f"input: {written:,} reviews, Parquet {size:,.0f} MiB; output rows: {lines:,}")
        print(f"scored with {args.dtype} in {seconds:,.0f} s "
              f"({written / seconds:,.0f} reviews/s, process start included)")  # fmt: skip
        print(f"peak resident memory of the scoring process: "
              f"{peak_rss_mib(resource.RUSAGE_CHILDREN):,.0f} MiB")  # fmt: skip
        print(done.stderr.strip().splitlines()[-1])


def cli_scoring(
    args: argparse.Namespace, data: Path, out: Path, chunk: int, threads: int
) -> tuple[dict, float]:
    """The real `rnn-sentiment predict --input` in a subprocess: its JSON summary, wall time."""
    import json

    command = [sys.executable, "-m", "rnn_sentiment", "predict", "-m", str(args.model), "-q",
               "-i", str(data), "-o", str(out), "--threads", str(threads),
               "--chunk-size", str(chunk), "--format", "json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"scoring failed: {done.stderr.strip()}")
    return json.loads(done.stdout), wall


def ray_engine(args: argparse.Namespace) -> None:
    """Ray Data (--workers x 1 thread) against the single-process CLI (--threads) on one file."""
    import pyarrow.parquet as pq
    import ray

    from rnn_sentiment.inference.ray_scoring import score_with_ray

    args.model = args.model.absolute()  # as given to the CLI and to Ray: the same engine
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    data = limited(args.data, args.limit or 5000, work)
    rows = pq.ParquetFile(data).metadata.num_rows
    threads = args.threads or 2
    default, _ = cli_scoring(args, data, work / "default.parquet", 4096, threads)
    single, wall = cli_scoring(args, data, work / "single.parquet", args.chunk_size, threads)
    one, _ = cli_scoring(args, data, work / "one.parquet", args.chunk_size, 1)
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning")
    ray_start = time.perf_counter() - started
    options = ScoringOptions(chunk_size=args.chunk_size)
    try:
        scored = score_with_ray(args.model, data, work / "ray", options, workers=args.workers,
                                quiet=True)  # fmt: skip
    finally:
        ray.shutdown()
    # While the workers scored: from the first part written to the last, plus one chunk's time
    # (the first part is written when its chunk is done). The rest is the run's fixed cost.
    parts = [part.stat().st_mtime for part in (work / "ray").glob("part-*.parquet")]
    window = max(parts) - min(parts) + scored.worker_seconds / len(parts)
    same = pq.read_table(work / "ray").sort_by("source_row").drop_columns(
        ["source_file", "source_row"]).equals(pq.read_table(work / "single.parquet"))  # fmt: skip
    steady = rows / window
    table = [
        (f"CLI, {threads} threads, --chunk-size 4096 (default), scoring",
         default["rows_per_second"], default["seconds"]),
        (f"CLI, {threads} threads, --chunk-size {args.chunk_size}, scoring",
         single["rows_per_second"], single["seconds"]),
        ("  the same, wall time (process start, model load)", rows / wall, wall),
        (f"CLI, 1 thread, --chunk-size {args.chunk_size}, scoring",
         one["rows_per_second"], one["seconds"]),
        (f"Ray, {args.workers} workers x 1 thread, wall time (actors start, load)",
         rows / scored.seconds, scored.seconds),
        ("  while the workers scored (first chunk to last)", steady, window),
        ("  the rest: actors start, load the model, stop", None, scored.seconds - window),
        ("  one worker busy scoring (rows / worker seconds)",
         rows / scored.worker_seconds, scored.worker_seconds),
        ("Ray start (ray.init, once per cluster), in no rate", None, ray_start),
    ]  # fmt: skip
    print(f"bench_scoring --engine ray {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, model "
          f"{args.model}, {rows:,} reviews of {args.data}")  # fmt: skip
    print(f"{'path':<62} {'reviews/s':>10} {'seconds':>8}")
    for name, rate, seconds in table:
        print(f"{name:<62} {f'{rate:,.0f}' if rate else '':>10} {seconds:>8.2f}")
    ratio, scoring = wall / scored.seconds, steady / single["rows_per_second"]
    print(f"Ray / CLI, wall to wall (both load the model): {ratio:.2f}x (goal >= 0.85x); "
          f"while scoring: {scoring:.2f}x; same rows, same probabilities: {same}")  # fmt: skip
    per_worker = steady / args.workers
    print(f"100 million reviews at {per_worker:,.0f} reviews/s per worker (while scoring), one "
          f"worker per core, the input spread over files, the fixed cost not counted:")  # fmt: skip
    cores = os.cpu_count() or 1
    for machines in (1, 4, 16, 64):
        hours = [100e6 / (machines * size * per_worker) / 3600 for size in (cores, 16)]
        print(f"  {machines:>3} machine(s): {hours[0]:>6.2f} h with {cores} cores each, "
              f"{hours[1]:>5.2f} h with 16")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="run directory")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/test.parquet"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--single", type=int, default=2000, help="reviews for the one-at-a-time loop"
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N reviews")
    parser.add_argument(
        "--cells", default="", help="e.g. rnn,lstm: the engines on random models of --model's shape"
    )
    parser.add_argument("--million", action="store_true", help="peak memory on a large file")
    parser.add_argument("--engine", choices=["ray"], default=None, help="Ray Data vs the CLI")
    parser.add_argument("--workers", type=int, default=2, help="--engine ray: Ray workers")
    parser.add_argument("--chunk-size", type=int, default=500, help="--engine ray: both paths")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--dtype", default="bf16", choices=["fp32", "bf16", "int8"], help="int8: --quantize int8"
    )
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found; pass --data PATH/test.parquet")
    if args.engine == "ray":
        ray_engine(args)
    else:
        million(args) if args.million else bench(args)


if __name__ == "__main__":
    main()
