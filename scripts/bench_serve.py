"""HTTP throughput and latency of the model server, next to in-process batch scoring of the same
model and reviews in the same run.

usage: python scripts/bench_serve.py [--model DIR] [--data ../shared/data/imdb/test.parquet]
           [--reviews 1000] [--clients 32] [--batch 64] [--batch-clients 4] [--seconds 8]
           [--requests 4000] [--threads 1] [--wait-ms 1] [--batch-size N]

Scores --reviews reviews (IMDB test reviews, shuffled with seed 0, when --data exists; else the
built-in corpus) in one ``predict_proba`` call in this process, then starts the server (the
library function ``rnn-sentiment serve`` calls) on 127.0.0.1 at a free port in a subprocess and
drives it from this process: --clients keep-alive connections each sending one review per request,
then --batch-clients connections sending --batch reviews per request, each phase stopping after
--requests requests or --seconds seconds. Prints requests/s, reviews/s, p50/p95/p99 latency and
reviews/s as a multiple of in-process scoring; checks that the server's probabilities equal
in-process ones and that SIGTERM stops it with exit code 0. The clients are raw HTTP/1.1 on
asyncio streams, so the client side costs as little CPU as it can on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rnn_sentiment.inference.models import load_predictor, resolve_model_dir

DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "imdb" / "test.parquet"
BUILTIN = Path(__file__).parents[1] / "rnn_sentiment" / "assets" / "builtin" / "test.jsonl"
# The server, started as `rnn-sentiment serve` starts it: resolve, load, serve.
LAUNCH = """
import sys
from rnn_sentiment.inference.models import load_predictor, resolve_model_dir
from rnn_sentiment.serving.app import ServeSettings
from rnn_sentiment.serving.server import serve
model, threads, wait_ms = sys.argv[1] or None, int(sys.argv[2]), float(sys.argv[3])
batch_size = int(sys.argv[4]) if sys.argv[4] else None
predictor = load_predictor(resolve_model_dir(model), batch_size, threads=threads)
served = serve(predictor, port=0, settings=ServeSettings(batch_wait_ms=wait_ms),
               on_listening=lambda url: print("listening on", url, file=sys.stderr, flush=True))
print(f"served {served.reviews} reviews in {served.batches} model calls", file=sys.stderr)
"""


def load_texts(data: Path, count: int) -> tuple[list[str], str]:
    """``count`` reviews: IMDB test reviews when ``data`` exists, else the built-in corpus."""
    if data.is_file():
        import pyarrow.parquet as pq

        texts = [str(t) for t in pq.read_table(data, columns=["text"]).column("text").to_pylist()]
        source = str(data)
    else:
        lines = BUILTIN.read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines]
        source = f"{BUILTIN.name} (built-in; {data} not found)"
    random.Random(0).shuffle(texts)
    return (texts * (count // len(texts) + 1))[:count], source


@dataclass
class Phase:
    """One load pattern's requests: latencies in seconds, bodies for the equality check."""

    name: str
    clients: int
    per_request: int
    latencies: list[float] = field(default_factory=list)
    bodies: list[tuple[int, bytes]] = field(default_factory=list)  # (first review, response)
    failures: int = 0
    seconds: float = 0.0


async def drive(port: int, texts: list[str], phase: Phase, requests: int, seconds: float) -> None:
    """``phase.clients`` connections sending requests of ``phase.per_request`` reviews."""
    starts = iter(range(0, requests * phase.per_request, phase.per_request))
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for start in starts:
                if time.perf_counter() > deadline:
                    break
                chunk = [texts[(start + i) % len(texts)] for i in range(phase.per_request)]
                sent = time.perf_counter()
                status, body = await post(reader, writer, {"texts": chunk})
                phase.latencies.append(time.perf_counter() - sent)
                if status == 200:
                    phase.bodies.append((start % len(texts), body))
                else:
                    phase.failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(phase.clients)))
    phase.seconds = time.perf_counter() - started


async def post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: object
) -> tuple[int, bytes]:
    """One POST /predict on a keep-alive connection: (status, body)."""
    body = json.dumps(payload).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    reply = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", reply)
    content = await reader.readexactly(int(length.group(1)) if length else 0)
    return int(reply[9:12]), content


def largest_difference(phase: Phase, expected: np.ndarray, labels: list[str]) -> float:
    """The largest |probability difference| between the server's answers and in-process."""
    worst = 0.0
    for first, body in phase.bodies:
        for offset, row in enumerate(json.loads(body)["predictions"]):
            got = np.asarray([row["probabilities"][name] for name in labels])
            worst = max(
                worst, float(np.abs(got - expected[(first + offset) % len(expected)]).max())
            )
    return worst


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The server in a subprocess and its port, once it listens (its log goes to ``log``)."""
    command = [sys.executable, "-c", LAUNCH, str(args.model or ""), str(args.threads),
               str(args.wait_ms), str(args.batch_size or "")]  # fmt: skip
    with log.open("wb") as handle:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return server, int(found.group(1))
        time.sleep(0.05)
    server.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def row(name: str, phase: Phase | None, rate: float, baseline: float, requests: float) -> str:
    if phase is None:
        return f"{name:<36} {'':>10} {rate:>10,.0f} {'':>8} {'':>8} {'':>8} {1:>8.2f}x"
    p50, p95, p99 = np.percentile(np.asarray(phase.latencies) * 1000, [50, 95, 99])
    return (f"{name:<36} {requests:>10,.0f} {rate:>10,.0f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
            f"{rate / baseline:>8.2f}x")  # fmt: skip


def bench(args: argparse.Namespace) -> None:
    texts, source = load_texts(args.data, args.reviews)
    model_dir = resolve_model_dir(args.model)
    predictor = load_predictor(model_dir, args.batch_size, threads=args.threads)
    predictor.predict_proba(texts[:32])  # warm up
    engine = "pytorch" if hasattr(predictor, "run") else "onnxruntime"
    expected, before = in_process_rate(predictor, texts)

    log = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "server.log"
    server, port = start_server(args, log)
    phases = [
        Phase(f"HTTP, {args.clients} clients x 1 review", args.clients, 1),
        Phase(f"HTTP, {args.batch_clients} clients x {args.batch} reviews", args.batch_clients,
              args.batch),
    ]  # fmt: skip
    try:
        asyncio.run(drive(port, texts, Phase("warm-up", 4, 1), 64, 10))
        for phase in phases:
            requests = max(1, args.requests // phase.per_request) if phase.per_request > 1 else (
                args.requests)  # fmt: skip
            asyncio.run(drive(port, texts, phase, requests, args.seconds))
    finally:
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
    # Other work on the machine comes and goes: in-process scoring is timed before and after
    # the HTTP phases, and their mean is the baseline.
    after = in_process_rate(predictor, texts)[1]
    in_process = (before + after) / 2
    calls = re.search(r"served (\d+) reviews in (\d+) model calls", log.read_text())

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_serve {when}: {os.cpu_count()} CPU cores (load {os.getloadavg()[0]:.1f}), "
          f"scoring threads {args.threads}, batch wait {args.wait_ms:g} ms, "
          f"model batch {args.batch_size or 'default'}")  # fmt: skip
    print(f"model {predictor.path} ({engine}); {len(texts):,} reviews from {source}")
    print(f"{'':<36} {'requests/s':>10} {'reviews/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'vs in-process':>9}")  # fmt: skip
    print(row("in-process predict_proba, one call", None, in_process, in_process, 0)
          + f"  (before {before:,.0f}, after {after:,.0f})")  # fmt: skip
    for phase in phases:
        requests = len(phase.latencies) / phase.seconds
        rate = len(phase.bodies) * phase.per_request / phase.seconds
        print(row(phase.name, phase, rate, in_process, requests))
    labels = list(json.loads(phase.bodies[0][1])["predictions"][0]["probabilities"])
    difference = max(largest_difference(phase, expected, labels) for phase in phases)
    failures = sum(phase.failures for phase in phases)
    print(f"failed requests: {failures}; largest |HTTP - in-process| probability: "
          f"{difference:.1e}; server exit code after SIGTERM: {exit_code}")  # fmt: skip
    if calls:
        reviews, batches = int(calls.group(1)), int(calls.group(2))
        print(f"server: {reviews:,} reviews in {batches:,} model calls "
              f"({reviews / max(batches, 1):.1f} per call, warm-up included)")  # fmt: skip


def in_process_rate(predictor: Any, texts: list[str]) -> tuple[np.ndarray, float]:
    """Probabilities of ``texts`` in one ``predict_proba`` call, and reviews/s."""
    started = time.perf_counter()
    probs = predictor.predict_proba(texts)
    return probs, len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Default: as rnn-sentiment serve (the bundled model).")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wait-ms", type=float, default=1.0)
    parser.add_argument(
        "--batch-size", type=int, help="Reviews per model call (default: as serve)."
    )
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
