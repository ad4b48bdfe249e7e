"""Which language-model output layer is affordable on a CPU: tokens/s of each, side by side.

Usage:
    python scripts/bench_lm.py [--vocab 45000] [--hidden 128] [--embedding 128] [--cell gru]
        [--seconds 20] [--softmax sampled,adaptive,full] [--samples 512,1024,4096]

Trains the same bidirectional encoder as a language model (``rnn-sentiment pretrain``'s
:class:`~rnn_sentiment.training.language_model.LanguageModel`) on batches of Zipf-distributed
token ids, 64 pieces of 256 tokens, bf16 autocast where the CPU has it (like the IMDB presets),
for a few seconds with each output layer, and prints trained tokens per second and the ratio to
the sampled softmax.
Run it alone: two heavy jobs on 2 cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rnn_sentiment.config import LanguageModelConfig, ModelConfig
from rnn_sentiment.training.language_model import LanguageModel
from rnn_sentiment.training.loop import autocast


def tokens_per_second(
    cfg: ModelConfig, lm: LanguageModelConfig, vocab: int, seconds: float
) -> float:
    rng = np.random.default_rng(0)
    counts = 1.0 / np.arange(1, vocab + 1)  # Zipf, the shape of word frequencies
    model = LanguageModel(cfg, counts * 1e6, lm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    probs = counts / counts.sum()
    tokens = torch.from_numpy(rng.choice(vocab, size=(64, 256), p=probs)).clamp(min=2)
    lengths = torch.full((64,), 256)
    done, start = 0, None
    while True:
        with autocast(torch.device("cpu"), "auto"):  # bf16 where the CPU has it
            loss = model(tokens, lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start is None:  # the first step warms up the kernels
            start = time.perf_counter()
            continue
        done += int(lengths.sum())
        if time.perf_counter() - start > seconds:
            return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=45_000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--softmax", default="sampled,adaptive,full")
    parser.add_argument("--samples", default="1024")
    args = parser.parse_args()
    cfg = ModelConfig(
        cell=args.cell, embedding_dim=args.embedding, hidden_size=args.hidden, bidirectional=True
    )
    rows: list[tuple[str, float]] = []
    for kind in args.softmax.split(","):
        for samples in args.samples.split(",") if kind == "sampled" else ["-"]:
            lm = LanguageModelConfig(softmax=kind, samples=int(samples) if samples != "-" else 1)
            name = f"{kind} ({samples} samples)" if kind == "sampled" else kind
            rows.append((name, tokens_per_second(cfg, lm, args.vocab, args.seconds)))
            print(f"{name}: {rows[-1][1]:,.0f} tokens/s", flush=True)
    base = rows[0][1]
    print(
        f"\nbidirectional {args.cell} {args.embedding}/{args.hidden}, vocabulary {args.vocab:,}, "
        f"{torch.get_num_threads()} threads, bf16"
    )
    print("| output layer | tokens/s | vs first row |\n| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
