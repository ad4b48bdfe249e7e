"""Training in fp32 against bf16 on this machine, side by side: what ``training.precision=auto``
chooses and what the other choice would cost.

    python scripts/bench_precision.py [--config configs/imdb-lm.yaml] [--cells gru,lstm]
        [--steps 4] [--rounds 3] [--batch-size 64] [--length 400]

For each cell (the config's model shape otherwise), the project's own training step
(``training.loop.train_step``, as ``train`` runs it) on a batch of random token ids, timed in
fp32 and in bf16 alternately, ``--rounds`` times ``--steps`` steps each after a warm-up round, so
both see the same machine load; it prints the median seconds per step of each and their ratio.
On a CPU without bfloat16 instructions bf16 is emulated (slower) and an LSTM cannot train in it
at all: ``train`` refuses it, and so does this script's row. The ratios are the point: other
work on the machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnn_sentiment.config import TrainingConfig, load_config
from rnn_sentiment.hardware import bf16_refused, native_bf16, no_bf16
from rnn_sentiment.model import build_model
from rnn_sentiment.training.loop import available_cpus, build_optimizer, train_step, used_precision

VOCABULARY = 30_000


def step_seconds(cell: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per training step of ``cell`` in each precision."""
    config = load_config(args.config, [f"model.cell={cell}"])
    torch.manual_seed(0)
    tokens = torch.randint(2, VOCABULARY, (args.batch_size, args.length))
    lengths = torch.full((args.batch_size,), args.length)
    targets = torch.randint(0, 2, (args.batch_size,))
    runs = {}
    for precision in ("fp32", "bf16"):
        model = build_model(config.model, VOCABULARY, 2).train()
        tcfg = TrainingConfig(batch_size=args.batch_size, precision=precision)
        runs[precision] = (model, build_optimizer(model, tcfg), tcfg)
    times: dict[str, list[float]] = {p: [] for p in runs}
    for _ in range(args.rounds + 1):  # the first round warms up and is not counted
        for precision, (model, optimizer, tcfg) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, tokens, lengths, targets, tcfg)
            times[precision].append((time.perf_counter() - start) / args.steps)
    return {p: statistics.median(t[1:]) for p, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/imdb-lm.yaml", help="the model shape")
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="fp32/bf16 alternations")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=400, help="tokens per review")
    args = parser.parse_args()
    torch.set_num_threads(available_cpus())
    native = native_bf16("cpu")
    auto = used_precision(torch.device("cpu"), "auto")
    print(
        f"{available_cpus()} CPU threads; "
        + ("this CPU has bfloat16 instructions" if native else no_bf16("cpu"))
        + f"; training.precision=auto trains in {auto}; batch {args.batch_size} x "
        f"{args.length} tokens, median of {args.rounds} rounds of {args.steps} steps"
    )
    print(f"{'cell':<8}{'fp32 s/step':>13}{'bf16 s/step':>13}{'bf16/fp32':>11}")
    for cell in args.cells.split(","):
        if bf16_refused(cell, "cpu"):
            print(f"{cell:<8}{'':>13}{'refused':>13}{'':>11}  (train refuses it here)")
            continue
        seconds = step_seconds(cell, args)
        print(
            f"{cell:<8}{seconds['fp32']:>13.3f}{seconds['bf16']:>13.3f}"
            f"{seconds['bf16'] / seconds['fp32']:>10.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
