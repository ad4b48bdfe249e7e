"""Which code runs a model at inference: the one place where that is decided.

:func:`choose_engine` maps (device, ``stepwise``, precision) to one of these, and nothing else in
the package picks an engine:

=============================  =========================================  =====================
engine                         when                                       what it costs
=============================  =========================================  =====================
``stepwise``, compiled steps   CPU, ``stepwise``, fp32 or int8, the C++   fastest CPU scoring;
                               steps built (on first use, once per        a one-minute build
                               machine; off: ``RNN_SENTIMENT_NATIVE=0``)  the first time
``stepwise``, PyTorch calls    CPU, ``stepwise``, bf16, or fp32/int8      same results, about
                               where the steps cannot be built            half the speed
``nn``                         a GPU, or ``stepwise=False``               PyTorch's own layers
=============================  =========================================  =====================

Precision: ``fp32`` (exact), ``int8`` (the recurrent matrix product quantized; a ReLU RNN keeps
an fp32 recurrence, its states being unbounded; on ``nn`` it is dynamic quantization of the
LSTM/GRU/linear layers and ``nn.RNN`` stays fp32) or ``bf16`` (the recurrent product, or on ``nn``
every weight, in bfloat16; fast on CPUs with AVX512-BF16 or AMX, emulated elsewhere).

Small batches: in fp32, batches of fewer than :data:`SMALL_BATCH` reviews go to PyTorch's fused
layers (the step loop's fixed cost per step loses there; same logits up to rounding). In int8 and
bf16 every batch stays on the chosen engine, so a review's probability never depends on how many
reviews share its batch.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from rnn_sentiment import hardware
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.stepwise import StepwiseClassifier
from rnn_sentiment.model import SentimentRNN

Quantize = Literal["int8"]
Dtype = Literal["fp32", "bf16"]
EngineName = Literal["stepwise", "nn"]
# In fp32, batches smaller than this run on PyTorch's fused layers: the step loop's fixed cost per
# step (about 14 small kernels) loses to them there (measured on the yardstick LSTM, one thread:
# 1 review 5.3 vs 12.6 ms fp32, 10.7 ms int8; 16 reviews 35 vs 49 ms fp32, 23 ms int8; 64 reviews
# 151 vs 126 ms fp32, 59 ms int8: int8 wins from 16 reviews and is never handed over).
SMALL_BATCH = 32


@dataclass
class Engine:
    """The module that scores, which engine it is, and notes on what could not be honoured.

    ``native``: the stepwise engine may run its compiled steps (built on first use, so scoring
    a few reviews never waits for a build; without a compiler it runs PyTorch calls).
    """

    model: nn.Module
    name: EngineName
    precision: str
    native: bool = False
    notes: list[str] = field(default_factory=list)


def native_allowed() -> bool:
    """Whether the compiled steps may be used (``RNN_SENTIMENT_NATIVE=0`` turns them off)."""
    return os.environ.get("RNN_SENTIMENT_NATIVE", "1") != "0"


def choose_engine(
    model: SentimentRNN,
    quantize: Quantize | None = None,
    dtype: Dtype = "fp32",
    stepwise: bool = True,
) -> Engine:
    """The engine that scores with ``model`` (see the module docstring for the table)."""
    if quantize is not None and dtype != "fp32":
        raise CheckpointError("--quantize int8 and --dtype bf16 cannot be combined; pick one")
    precision = quantize or dtype
    device = next(model.parameters()).device.type
    engine = _stepwise(model, precision) if stepwise and device == "cpu" else _nn(model, precision)
    if precision == "bf16" and not hardware.native_bf16(device):
        engine.notes.append(f"bf16: {hardware.no_bf16(device)}; --dtype fp32 instead")
    return engine


def _stepwise(model: SentimentRNN, precision: str) -> Engine:
    native = precision != "bf16" and native_allowed()
    small = SMALL_BATCH if precision == "fp32" else 0
    fast = StepwiseClassifier(model, precision, fused_below=small, native=native)  # type: ignore[arg-type]
    notes = []
    if fast.recurrent_precision != precision:
        notes.append("int8: a ReLU RNN's states are unbounded; its recurrence stays fp32")
    if precision != "bf16" and not native:
        notes.append("compiled steps turned off by RNN_SENTIMENT_NATIVE=0; PyTorch calls instead")
    return Engine(fast.eval(), "stepwise", precision, native, notes)


def _nn(model: SentimentRNN, precision: str) -> Engine:
    if precision == "bf16":
        return Engine(copy.deepcopy(model).to(torch.bfloat16).eval(), "nn", precision)
    if precision != "int8":
        return Engine(model.eval(), "nn", precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        from torch.ao.quantization import quantize_dynamic

        layers: set[type[nn.Module]] = {nn.LSTM, nn.GRU, nn.Linear}
        quantized = quantize_dynamic(copy.deepcopy(model), layers, dtype=torch.qint8)
    notes = []
    if model.cfg.cell == "rnn":
        notes.append("int8: nn.RNN has no dynamic-quantized kernel; its layers stay fp32")
    return Engine(quantized.eval(), "nn", precision, notes=notes)
