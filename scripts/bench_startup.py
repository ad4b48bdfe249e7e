"""Wall time of the commands people type most, next to the cost of importing torch alone.

usage: python scripts/bench_startup.py [--model RUN_DIR] [--repeat 5]

Each command runs in a fresh process ``--repeat`` times; the table shows the median and the
fastest. ``python -c "import torch"`` is timed in the same run: it is the floor of any command
that runs a model on PyTorch, so the gap between it and ``predict`` is what the project itself
costs. --model (default: the bundled model) is also exported to ONNX in fp32, into a temporary
folder: ``predict`` with the exported copy, and a bare process that loads it and predicts one
review, never import torch, and their ratio to ``import torch`` is issue 19's goal (at most 0.35;
``predict`` with the default model, the bundled model's exported copy, at most 0.5 s too).
Throughput of the exported model is in scripts/bench_scoring.py.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR

REVIEW = "This movie is not good"
TORCH_FREE_PREDICT = """
import sys
from rnn_sentiment.inference.exported import ExportedPredictor
print(ExportedPredictor.from_dir(sys.argv[1]).predict([sys.argv[2]])[0].label)
assert "torch" not in sys.modules
"""


def wall_times(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def commands(model: Path, exported: Path) -> dict[str, list[str]]:
    cli = shutil.which("rnn-sentiment") or f"{sys.prefix}/bin/rnn-sentiment"
    return {
        "rnn-sentiment --help": [cli, "--help"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        'predict --model MODEL "..."': [cli, "predict", "--model", str(model), REVIEW],
        'predict --model EXPORTED "..."': [cli, "predict", "--model", str(exported), REVIEW],
        "EXPORTED: load + predict, bare": [sys.executable, "-c", TORCH_FREE_PREDICT,
                                           str(exported), REVIEW],
        'predict "..." (default model)': [cli, "predict", REVIEW],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL_DIR, help="a run directory")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from rnn_sentiment.inference.export import export_model

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        exported = export_model(args.model, Path(folder) / "exported")
        print(
            f"MODEL {args.model}, EXPORTED its fp32 ONNX copy; {args.repeat} fresh processes each"
        )
        print(f"{'command':<34}{'median s':>10}{'fastest s':>11}{'/ torch':>9}")
        torch_s = None
        for name, command in commands(args.model, exported).items():
            median = statistics.median(times := wall_times(command, args.repeat))
            torch_s = median if "import torch" in name else torch_s
            ratio = f"{median / torch_s:.2f}" if torch_s and "torch" not in name else ""
            print(f"{name:<34}{median:>10.2f}{min(times):>11.2f}{ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
