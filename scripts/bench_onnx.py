"""Moved: the exported (ONNX) model's benchmarks now run next to the others they are compared with.

usage: python scripts/bench_onnx.py   (prints where each measurement went, and exits)

- batch-scoring throughput and accuracy of ONNX fp32 and int8 next to the PyTorch engines, the
  fastest per cell (--cells), and the fp32 / int8 goals on every review:
  ``python scripts/bench_scoring.py --model RUN_DIR [--cells rnn,lstm]``
- cold start of an exported model (torch never imported) next to ``import torch``:
  ``python scripts/bench_startup.py [--model RUN_DIR]``

This pointer goes once the README names those scripts instead.
"""

import sys

if __name__ == "__main__":
    sys.exit(__doc__)
