"""Training throughput of rnn-sentiment against a plain tutorial loop and the machine's own peak.

usage: python scripts/bench_train.py [--data ../shared/data/imdb] [--steps 30]
           [--cells rnn,lstm,gru] [--directions uni,bi] [--batch-size 64] [--max-length 400]
           [--json FILE]

For each cell and direction it trains, in one process and one after another on the same reviews:

* ``plain``: the way tutorials do it: batches of reviews in shuffled order, each padded to its
  longest review, tokenized in Python for every batch, fp32.
* ``project fp32`` and ``project bf16``: the project's path: token ids encoded once by the Rust
  tokenizer, length-bucketed batches (``batching.training_batches``) and ``train.train_step``
  with ``training.precision`` fp32 or bf16, with freed memory kept between steps
  (``training.keep_freed_memory``, ``allocator.keep_freed_memory``: on here for every cell;
  ``train`` turns it on by default for LSTMs on machines with 16 GiB or more).
* ``plain*``: the plain loop again with freed memory kept, so the table shows how much of the
  gain that setting alone gives. The plain loops without it run first, before it is made
  (undoing it restores glibc's limits but not the thresholds glibc had adapted on its own).

Every figure is real (non-padding) tokens per second over ``--steps`` steps after two warm-up
steps, so padding counts as waste. The machine's fp32 and bf16 matrix-multiply peaks are
measured in the same run, and the fraction of that peak reached comes from the cell's FLOP count
per token (forward 2 * gates * hidden * (input + hidden) per direction, backward twice that).
The machine is shared and noisy: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import torch

from rnn_sentiment.config import ModelConfig, TokenizerConfig, TrainingConfig
from rnn_sentiment.data.batching import collate, training_batches
from rnn_sentiment.hardware import bf16_refused, native_bf16, no_bf16
from rnn_sentiment.model import build_model
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import PAD_ID, UNK_ID
from rnn_sentiment.training.allocator import keep_freed_memory
from rnn_sentiment.training.loop import available_cpus, build_optimizer, train_step

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
EMBEDDING, HIDDEN = 128, 256


def matmul_gflops(dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of a square matrix multiply in ``dtype``."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def train_flops_per_token(cell: str, bidirectional: bool) -> float:
    """FLOPs to train on one token: the recurrent matmuls, forward plus twice that backward."""
    forward = 2 * GATES[cell] * HIDDEN * (EMBEDDING + HIDDEN) * (2 if bidirectional else 1)
    return 3 * forward


def plain_tokenize(vocab: dict[str, int], max_length: int) -> Callable[[str], list[int]]:
    """Tutorial-style tokenization in Python: lower-case, split words and punctuation, look up."""
    words = re.compile(r"\w+|[^\w\s]")

    def tokenize(text: str) -> list[int]:
        ids = [vocab.get(w, UNK_ID) for w in words.findall(text.lower())]
        return ids[-max_length:] or [UNK_ID]  # keep the end, like the presets

    return tokenize


def time_steps(step: Callable[[int], int], steps: int, warmup: int = 2) -> tuple[float, float]:
    """(real tokens per second, seconds) over ``steps`` calls after ``warmup`` calls."""
    for i in range(warmup):
        step(i)
    tokens, start = 0, time.perf_counter()
    for i in range(warmup, warmup + steps):
        tokens += step(i)
    seconds = time.perf_counter() - start
    return tokens / seconds, seconds


class Padding:
    """Counts real and padded token slots, so waste is measured, not assumed."""

    def __init__(self) -> None:
        self.real = self.slots = 0
        self.data_seconds = 0.0  # time spent building batches, while the model waits

    def add(self, tokens: torch.Tensor, real: int) -> int:
        self.slots += tokens.numel()
        self.real += real
        return real

    @property
    def fraction(self) -> float:
        return 1 - self.real / max(1, self.slots)


def plain_stepper(
    model_cfg: ModelConfig, texts: list[str], labels: torch.Tensor, vocab_size: int,
    tokenize: Callable[[str], list[int]], batch_size: int, padding: Padding,
) -> Callable[[int], int]:  # fmt: skip
    """A tutorial training step: shuffled batches, Python tokenization, padded to the longest."""
    torch.manual_seed(0)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    model = build_model(model_cfg, vocab_size, 2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(i: int) -> int:
        sequences = [tokenize(texts[j]) for j in batches[i]]
        width = max(len(s) for s in sequences)
        tokens = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
        for row, s in enumerate(sequences):
            tokens[row, : len(s)] = torch.tensor(s)
        # A tutorial passes the padded width as every review's length: padding is computed too.
        logits = model(tokens, torch.full((len(sequences),), width))
        loss = torch.nn.functional.cross_entropy(logits, labels[batches[i]])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return padding.add(tokens, sum(len(s) for s in sequences))

    return step


def project_stepper(
    model_cfg: ModelConfig, ids: list[list[int]], labels: torch.Tensor, vocab_size: int,
    tcfg: TrainingConfig, padding: Padding,
) -> Callable[[int], int]:  # fmt: skip
    """The project's step: ids encoded once, length-bucketed batches, ``train_step``."""
    torch.manual_seed(0)
    model = build_model(model_cfg, vocab_size, 2).train()
    optimizer = build_optimizer(model, tcfg)
    batches = training_batches([len(s) for s in ids], tcfg.batch_size, seed=0, epoch=1)

    def step(i: int) -> int:
        start = time.perf_counter()
        tokens, lengths = collate([ids[j] for j in batches[i]])
        padding.data_seconds += time.perf_counter() - start
        train_step(model, optimizer, tokens, lengths, labels[batches[i]], tcfg)
        return padding.add(tokens, int(lengths.sum()))

    return step


def model_config(cell: str, bidirectional: bool) -> ModelConfig:
    return ModelConfig(
        cell=cell, embedding_dim=EMBEDDING, hidden_size=HIDDEN, bidirectional=bidirectional
    )


def run_plain(
    cell: str, bidirectional: bool, texts: list[str], labels: torch.Tensor,
    tokenize: Callable[[str], list[int]], vocab_size: int, args: argparse.Namespace,
) -> tuple[float, float]:  # fmt: skip
    """(real tokens per second, padding fraction) of the plain loop."""
    padding = Padding()
    plain = plain_stepper(
        model_config(cell, bidirectional), texts, labels, vocab_size, tokenize,
        args.batch_size, padding,
    )  # fmt: skip
    return time_steps(plain, args.steps)[0], padding.fraction


def run_project(
    cell: str, bidirectional: bool, ids: list[list[int]], labels: torch.Tensor,
    vocab_size: int, args: argparse.Namespace,
) -> dict[str, float]:  # fmt: skip
    """Real tokens per second of the project's path in fp32 and bf16."""
    result = {}
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and bf16_refused(cell, "cpu"):
            result.update(project_bf16=math.nan, data_share_bf16=math.nan)  # train refuses it
            continue
        padding = Padding()
        tcfg = TrainingConfig(batch_size=args.batch_size, precision=precision)
        model_cfg = model_config(cell, bidirectional)
        step = project_stepper(model_cfg, ids, labels, vocab_size, tcfg, padding)
        rate, seconds = time_steps(step, args.steps)
        result[f"project_{precision}"] = rate
        result["project_padding"] = padding.fraction
        result[f"data_share_{precision}"] = padding.data_seconds / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/imdb", help="folder with train.parquet")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--directions", default="uni,bi")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args()

    torch.set_num_threads(available_cpus())
    table = pq.read_table(Path(args.data) / "train.parquet", columns=["text", "label"])
    texts = table.column("text").to_pylist()
    labels = torch.tensor(table.column("label").to_pylist())
    tok_cfg = TokenizerConfig(max_length=args.max_length, truncation_side="left")
    pipeline = TextPipeline.learn(texts, tok_cfg, html=True)
    tokenizer = pipeline.tokenizer
    ids = pipeline.encode_lists(texts)
    tokenize = plain_tokenize(tokenizer.get_vocab(), args.max_length)
    peaks = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    print(
        f"{available_cpus()} CPU threads; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s ({peaks['bf16'] / peaks['fp32']:.1f}x); "
        f"batch {args.batch_size}, max length {args.max_length}, {args.steps} timed steps; "
        "figures are real (non-padding) tokens/s"
    )
    if not native_bf16("cpu"):
        print(
            f"{no_bf16('cpu')}; an LSTM cannot train in it here (nan), and "
            "training.precision=auto trains in fp32"
        )
    header = (
        f"{'cell':<9}{'plain':>9}{'pad%':>6}{'plain*':>9}{'fp32':>9}{'bf16':>9}{'pad%':>6}"
        f"{'fp32/plain':>11}{'bf16/plain':>11}{'bf16/plain*':>12}{'fp32 %peak':>11}"
        f"{'bf16 %peak':>11}{'data%':>7}"
    )
    cells = [(c, d == "bi") for c in args.cells.split(",") for d in args.directions.split(",")]
    vocab_size = tokenizer.get_vocab_size()
    # The plain loops first, with the C library's default memory allocator, as a tutorial runs;
    # then the allocator setting that `rnn-sentiment train` makes (allocator.keep_freed_memory),
    # under which the plain loop runs again (plain*) before the project's path.
    plain = [run_plain(c, bi, texts, labels, tokenize, vocab_size, args) for c, bi in cells]
    kept = keep_freed_memory()
    print(
        "plain* = the plain loop with freed memory kept (training.keep_freed_memory, on in "
        f"this benchmark: {'applied' if kept else 'not available here'})"
    )
    print(header)
    rows = []
    for (cell, bi), (plain_rate, plain_padding) in zip(cells, plain, strict=True):
        r = {"plain": plain_rate, "plain_padding": plain_padding}
        r["plain_kept"] = run_plain(cell, bi, texts, labels, tokenize, vocab_size, args)[0]
        r.update(run_project(cell, bi, ids, labels, vocab_size, args))
        flops = train_flops_per_token(cell, bi)
        r["fp32_peak_fraction"] = r["project_fp32"] * flops / (peaks["fp32"] * 1e9)
        r["bf16_peak_fraction"] = r["project_bf16"] * flops / (peaks["bf16"] * 1e9)
        name = f"{'bi' if bi else ''}{cell}"
        rows.append({"cell": name, **r})
        print(
            f"{name:<9}{r['plain']:>9,.0f}{100 * r['plain_padding']:>5.0f}%{r['plain_kept']:>9,.0f}"
            f"{r['project_fp32']:>9,.0f}{r['project_bf16']:>9,.0f}"
            f"{100 * r['project_padding']:>5.0f}%"
            f"{r['project_fp32'] / r['plain']:>10.2f}x{r['project_bf16'] / r['plain']:>10.2f}x"
            f"{r['project_bf16'] / r['plain_kept']:>11.2f}x"
            f"{100 * r['fp32_peak_fraction']:>10.0f}%{100 * r['bf16_peak_fraction']:>10.0f}%"
            f"{100 * r['data_share_bf16']:>6.1f}%",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"peaks_gflops": peaks, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
