"""Wall time of the commands people type most, next to the cost of importing torch alone.

usage: python scripts/bench_startup.py --model RUN_DIR [--repeat 5]

Each command runs in a fresh process ``--repeat`` times; the table shows the median and the
fastest. ``python -c "import torch"`` is timed in the same run: it is the floor of any command
that runs a model, so the gap between it and ``predict`` is what the project itself costs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall_times(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run directory to predict with")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cli = shutil.which("rnn-sentiment") or f"{sys.prefix}/bin/rnn-sentiment"
    commands = {
        "rnn-sentiment --help": [cli, "--help"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        'rnn-sentiment predict "..."': [cli, "predict", "--model", args.model,
                                        "This movie is not good"],
    }  # fmt: skip
    print(f"{'command':<30}{'median s':>10}{'fastest s':>11}")
    for name, command in commands.items():
        times = wall_times(command, args.repeat)
        print(f"{name:<30}{statistics.median(times):>10.2f}{min(times):>11.2f}", flush=True)


if __name__ == "__main__":
    main()
