"""Inference-only recurrence for batch scoring: a lookup table, a step loop, no wasted rows.

:class:`StepwiseClassifier` computes what :class:`~rnn_sentiment.model.SentimentRNN` computes, for
scoring only, with three savings measured on the CPU yardstick (see the README):

- The first layer's input projection ``embedding @ W_ih^T + biases`` is the same for every
  occurrence of a token, so it is computed once per vocabulary entry when the model is loaded; per
  token it becomes a row gather instead of a third of the layer's multiply-adds.
- The recurrence runs one step at a time over rows sorted longest first, and each step computes
  only the reviews still running, so padding costs nothing and pooling happens on the fly.
- ``tanh(x)`` is written as ``2 * sigmoid(2x) - 1`` with the factor 2 folded into the weights:
  PyTorch's CPU tanh is several times slower than its sigmoid.

The recurrent matrix product runs in fp32, bf16 or int8; everything else (input projections,
gates, cell state, pooling, classifier) stays fp32. In int8, ``h`` (always in [-1, 1] for LSTM,
GRU and tanh RNN cells) is quantized with the fixed scale 1/127 and the weights per output unit.

In fp32 and int8 the steps run in compiled code when it can be built
(:mod:`rnn_sentiment.inference.native`):
per step one matrix product and one fused pass over the running rows, instead of about 14 PyTorch
calls. Without a compiler the same steps run as PyTorch calls (``native=False`` forces that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from rnn_sentiment.model import RecurrentLayer, SentimentRNN, reverse_within_length

Precision = Literal["fp32", "bf16", "int8"]

# The lookup table costs vocabulary x gates x 4 bytes per direction; past this the first layer's
# input projection is computed per batch instead, like that of the layers above it.
LOOKUP_BUDGET_BYTES = 256 * 2**20
# Input gates are computed (or gathered) for about this many rows x steps in one call: fewer
# calls, and a block that stays in cache (measured: 1024 beat 4096 by 10-20% at batch 256-512).
BLOCK_ROWS = 1024


class Projection:
    """``x @ W^T`` with ``W`` stored in one precision; results are always fp32."""

    def __init__(self, weight: torch.Tensor, precision: Precision) -> None:
        self.precision = precision
        weight = weight.detach().float()
        if precision == "int8":
            scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
            self.weight = torch.round(weight / scale[:, None]).to(torch.int8).T
            self.scale = (scale / 127).contiguous()  # inputs in [-1, 1] are scaled by 127
        else:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            self.weight = weight.to(dtype).T

    def add_to(self, out: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
        """``out += x[:k] @ W^T`` in place, for fp32 ``out`` [k, n] and ``x``."""
        if self.precision == "fp32":
            return out.addmm_(x[:k], self.weight)
        if self.precision == "bf16":
            # oneDNN keeps a primitive (and a copy of the weights) per shape it has seen, so k
            # is rounded up to a multiple of 16: a few shapes instead of one per batch size.
            rows = min(-(-k // 16) * 16, x.shape[0])
            return out.add_(torch.mm(x[:rows].to(torch.bfloat16), self.weight)[:k])
        quantized = torch.round(x[:k] * 127).to(torch.int8)
        return out.addcmul_(torch._int_mm(quantized, self.weight), self.scale)

    def apply(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``bias + x @ W^T``, a new fp32 tensor."""
        return self.add_to(bias.expand(x.shape[0], -1).clone(), x, x.shape[0])


class Cell:
    """One direction of one layer: weights rearranged for :meth:`step`."""

    hidden: int
    w_ih: torch.Tensor
    bias: torch.Tensor  # added to the input gates (folded into the lookup table)
    hh: Projection

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.hidden)]

    def step(self, gates: torch.Tensor, state: list[torch.Tensor], k: int) -> torch.Tensor:
        """Advance the first ``k`` rows given their input gates (overwritten); the new ``h``."""
        raise NotImplementedError


def _params(rnn: nn.RNNBase) -> list[torch.Tensor]:
    """W_ih, W_hh, b_ih, b_hh of a one-layer PyTorch recurrent module, as fp32."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return [getattr(rnn, name).detach().float() for name in names]


class LSTMCell(Cell):
    """Gates reordered (i, f, o, g) so one sigmoid covers them all; g is pre-scaled by 2."""

    def __init__(self, rnn: nn.RNNBase, precision: Precision) -> None:
        w_ih, w_hh, b_ih, b_hh = _params(rnn)
        h = self.hidden = rnn.hidden_size
        order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h),
                           torch.arange(2 * h, 3 * h)])  # fmt: skip
        scale = torch.ones(4 * h)
        scale[3 * h :] = 2
        self.w_ih = w_ih[order] * scale[:, None]
        self.bias = (b_ih + b_hh)[order] * scale
        self.hh = Projection(w_hh[order] * scale[:, None], precision)

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.hidden), torch.zeros(batch, self.hidden)]

    def step(self, gates: torch.Tensor, state: list[torch.Tensor], k: int) -> torch.Tensor:
        h, c = state[0][:k], state[1][:k]
        n = self.hidden
        gates = self.hh.add_to(gates, state[0], k).sigmoid_()
        i, f, o, g = gates[:, :n], gates[:, n : 2 * n], gates[:, 2 * n : 3 * n], gates[:, 3 * n :]
        c.mul_(f).addcmul_(i, g, value=2).sub_(i)  # f * c + i * tanh(g)
        tanh_c = torch.mul(c, 2).sigmoid_()  # (tanh(c) + 1) / 2
        return torch.neg(o, out=h).addcmul_(o, tanh_c, value=2)  # o * tanh(c)


class GRUCell(Cell):
    """Reset and update gates as in PyTorch; the candidate's pre-activation is scaled by 2."""

    def __init__(self, rnn: nn.RNNBase, precision: Precision) -> None:
        w_ih, w_hh, b_ih, b_hh = _params(rnn)
        h = self.hidden = rnn.hidden_size
        scale = torch.ones(3 * h)
        scale[2 * h :] = 2
        self.w_ih = w_ih * scale[:, None]
        self.bias = b_ih * scale + torch.cat([b_hh[: 2 * h], torch.zeros(h)])
        self.hh_bias = torch.cat([torch.zeros(2 * h), b_hh[2 * h :] * 2])  # inside r * (...)
        self.hh = Projection(w_hh * scale[:, None], precision)

    def step(self, gates: torch.Tensor, state: list[torch.Tensor], k: int) -> torch.Tensor:
        h = state[0][:k]
        n = self.hidden
        hidden_gates = self.hh.add_to(self.hh_bias.expand(k, -1).clone(), state[0], k)
        rz = gates[:, : 2 * n].add_(hidden_gates[:, : 2 * n]).sigmoid_()
        r, z = rz[:, :n], rz[:, n:]
        candidate = gates[:, 2 * n :].addcmul_(r, hidden_gates[:, 2 * n :])
        candidate = candidate.sigmoid_().mul_(2).sub_(1)
        return h.sub_(candidate).mul_(z).add_(candidate)  # (1 - z) * n + z * h


class RNNCell(Cell):
    """Elman cell; a tanh cell's pre-activation is scaled by 2."""

    def __init__(self, rnn: nn.RNNBase, precision: Precision) -> None:
        w_ih, w_hh, b_ih, b_hh = _params(rnn)
        self.hidden = rnn.hidden_size
        self.tanh = getattr(rnn, "nonlinearity", "tanh") == "tanh"
        factor = 2.0 if self.tanh else 1.0
        self.w_ih = w_ih * factor
        self.bias = (b_ih + b_hh) * factor
        self.hh = Projection(w_hh * factor, precision)

    def step(self, gates: torch.Tensor, state: list[torch.Tensor], k: int) -> torch.Tensor:
        gates = self.hh.add_to(gates, state[0], k)
        gates = gates.sigmoid_().mul_(2).sub_(1) if self.tanh else gates.relu_()
        return state[0][:k].copy_(gates)


_CELLS: dict[str, Callable[[nn.RNNBase, Precision], Cell]] = {
    "lstm": LSTMCell,
    "gru": GRUCell,
    "rnn": RNNCell,
}

# Supplies the input gates [steps, rows, gates] of steps s0..s1 for the first ``rows`` rows.
GateSource = Callable[[int, int, int], torch.Tensor]


@dataclass
class Inputs:
    """A direction's input gates: ``gates_of`` blocks, or rows of ``table`` picked by ``ids``."""

    gates_of: GateSource
    table: torch.Tensor | None = None  # [vocabulary, gates], biases included
    ids: torch.Tensor | None = None  # [steps, batch], in step order


class Pooled:
    """What a direction's top-layer pass keeps: running max, running sum, last state."""

    def __init__(self, batch: int, hidden: int, pooling: str) -> None:
        self.max = torch.full((batch, hidden), float("-inf")) if "max" in pooling else None
        self.sum = torch.zeros(batch, hidden) if "mean" in pooling else None

    def add(self, h: torch.Tensor, k: int) -> None:
        if self.max is not None:
            torch.maximum(self.max[:k], h, out=self.max[:k])
        if self.sum is not None:
            self.sum[:k].add_(h)


def run_direction(
    cell: Cell,
    inputs: Inputs,
    active: list[int],
    pooled: Pooled | None,
    compiled: ModuleType | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run one direction over its steps: (final h per row, every step's h when not pooling).

    ``active[s]`` rows (a prefix, since rows are sorted longest first) are still running at step
    ``s``; a finished row keeps its last state, which is what ``last`` pooling reads.
    ``compiled`` is the :mod:`~rnn_sentiment.inference.native` module (fp32 and int8 products).
    """
    batch, steps = active[0], len(active)
    state = cell.zero_state(batch)
    outputs = torch.zeros(steps, batch, cell.hidden) if pooled is None else None
    if compiled is not None:
        _run_compiled(compiled, cell, inputs, active, state, pooled, outputs)
        return state[0], outputs
    for s0, s1 in _blocks(steps, batch):
        block = inputs.gates_of(s0, s1, active[s0])
        for s in range(s0, s1):
            k = active[s]
            h = cell.step(block[s - s0, :k], state, k)
            if pooled is not None:
                pooled.add(h, k)
            else:
                assert outputs is not None
                outputs[s, :k] = h
    return state[0], outputs


def _blocks(steps: int, batch: int) -> list[tuple[int, int]]:
    """Step ranges [s0, s1) of about ``BLOCK_ROWS`` rows x steps each."""
    size = max(BLOCK_ROWS // batch, 1)
    return [(s0, min(s0 + size, steps)) for s0 in range(0, steps, size)]


def _cell_code(cell: Cell) -> int:
    """The cell's number in csrc/stepwise.cpp: LSTM 0, GRU 1, tanh RNN 2, ReLU RNN 3."""
    if isinstance(cell, LSTMCell):
        return 0
    if isinstance(cell, GRUCell):
        return 1
    return 2 if cast(RNNCell, cell).tanh else 3


def _run_compiled(
    compiled: ModuleType,
    cell: Cell,
    inputs: Inputs,
    active: list[int],
    state: list[torch.Tensor],
    pooled: Pooled | None,
    outputs: torch.Tensor | None,
) -> None:
    """:func:`run_direction` in compiled code; updates ``state``, ``pooled`` and ``outputs``."""
    batch, gates = active[0], cell.bias.shape[0]
    int8 = cell.hh.precision == "int8"
    quantized = torch.zeros(batch, cell.hidden, dtype=torch.int8) if int8 else None
    product = torch.empty(batch, gates, dtype=torch.int32 if int8 else torch.float32)
    scale = cell.hh.scale if int8 else None
    hh_bias = cell.hh_bias if isinstance(cell, GRUCell) else None
    c = state[1] if len(state) > 1 else None
    running_max = pooled.max if pooled is not None else None
    running_sum = pooled.sum if pooled is not None else None

    def run(source: torch.Tensor, ids: torch.Tensor | None, steps: list[int], first: int) -> None:
        compiled.run_steps(_cell_code(cell), source, ids, steps, cell.hh.weight, scale, hh_bias,
                           state[0], c, quantized, product, running_max, running_sum, outputs,
                           first)  # fmt: skip

    if inputs.table is not None:  # the kernel gathers the table's rows itself
        run(inputs.table, inputs.ids, active, 0)
        return
    for s0, s1 in _blocks(len(active), batch):
        block = inputs.gates_of(s0, s1, active[s0]).contiguous()
        run(block, None, active[s0:s1], s0)


class StepwiseClassifier(nn.Module):
    """Scores like ``model`` (same logits up to rounding in fp32) for right-padded batches;
    batches of fewer than ``fused_below`` reviews are scored by ``model`` itself, in fp32.
    Which precision, ``fused_below`` and ``native`` to use is decided in
    :func:`~rnn_sentiment.inference.engine.choose_engine`, not here."""

    def __init__(
        self,
        model: SentimentRNN,
        precision: Precision = "fp32",
        fused_below: int = 0,
        native: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.fused_below = fused_below
        self.cfg = model.cfg
        self.precision = precision
        recurrent = "fp32" if precision == "int8" and self._unbounded() else precision
        self.layers: list[list[Cell]] = []
        for layer in cast(list[RecurrentLayer], list(model.layers)):
            rnns = [layer.forward_rnn] + ([layer.backward_rnn] if layer.backward_rnn else [])
            self.layers.append([_CELLS[self.cfg.cell](rnn, recurrent) for rnn in rnns])
        self.embedding = model.embedding.weight.detach().float()
        # Input products of upper layers (or of a first layer too big for a table) are one large
        # product per block of steps, kept in fp32: oneDNN would cache one bf16 primitive per shape.
        self.input_projections = [
            [Projection(cell.w_ih, "fp32") for cell in cells] for cells in self.layers
        ]
        vocab, gates = self.embedding.shape[0], self.layers[0][0].bias.shape[0]
        self.lookup: list[torch.Tensor] | None = None
        if vocab * gates * 4 * len(self.layers[0]) <= LOOKUP_BUDGET_BYTES:
            with torch.no_grad():
                self.lookup = [
                    torch.addmm(c.bias, self.embedding, c.w_ih.T) for c in self.layers[0]
                ]
        self.classifier = model.classifier
        self.recurrent_precision = recurrent
        self._native = native and recurrent != "bf16"

    @property
    def compiled(self) -> ModuleType | None:
        """The compiled steps, loaded on first use (a few reviews never need them), or None."""
        if not self._native:
            return None
        from rnn_sentiment.inference.native import kernels

        return kernels()

    def _unbounded(self) -> bool:
        # int8 quantizes h with a fixed scale, right for states in [-1, 1]; ReLU states are not.
        return self.cfg.cell == "rnn" and self.cfg.nonlinearity == "relu"

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [batch, labels] for right-padded token ids [batch, time] of true ``lengths``."""
        if tokens.shape[0] < self.fused_below:
            return self.model(tokens, lengths)
        lengths = lengths.cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        tokens, lengths = tokens.cpu()[order], lengths[order]
        steps = int(lengths[0]) if len(lengths) else 0
        tokens = tokens[:, :steps]
        active = (lengths[None, :] > torch.arange(steps)[:, None]).sum(dim=1).tolist()
        features = self._encode(tokens, lengths, active)
        logits = self.classifier(features)
        return logits[torch.argsort(order)]

    def _encode(
        self, tokens: torch.Tensor, lengths: torch.Tensor, active: list[int]
    ) -> torch.Tensor:
        x: torch.Tensor | None = None
        top = len(self.layers) - 1
        for index, cells in enumerate(self.layers):
            sources = [self._gates(index, d, tokens, x, lengths) for d in range(len(cells))]
            if index < top:
                outs = [
                    run_direction(c, g, active, None, self.compiled)[1]
                    for c, g in zip(cells, sources, strict=True)
                ]
                x = self._layer_output(outs, lengths)
                continue
            pools = [Pooled(len(lengths), c.hidden, self.cfg.pooling) for c in cells]
            lasts = [
                run_direction(c, g, active, p, self.compiled)[0]
                for c, g, p in zip(cells, sources, pools, strict=True)
            ]
            return self._pool(pools, lasts, lengths)
        raise AssertionError("a model has at least one layer")

    def _gates(
        self,
        layer: int,
        direction: int,
        tokens: torch.Tensor,
        x: torch.Tensor | None,
        lengths: torch.Tensor,
    ) -> Inputs:
        """Input gates in step order: left to right, or each review reversed within its length."""
        if x is None:
            ids = tokens if direction == 0 else _reverse_ids(tokens, lengths)
            ids = ids.T.contiguous().long()  # [steps, batch]
            if self.lookup is not None:
                table = self.lookup[direction]
                return Inputs(lambda s0, s1, k: F.embedding(ids[s0:s1, :k], table), table, ids)
            x_steps = None
        else:
            x_steps = (x if direction == 0 else reverse_within_length(x, lengths)).transpose(0, 1)
        projection = self.input_projections[layer][direction]
        bias = self.layers[layer][direction].bias

        def gates_of(s0: int, s1: int, k: int) -> torch.Tensor:
            inputs = (
                F.embedding(ids[s0:s1, :k], self.embedding)
                if x_steps is None
                else x_steps[s0:s1, :k]
            )
            flat = projection.apply(inputs.reshape(-1, inputs.shape[-1]), bias)
            return flat.view(s1 - s0, k, -1)

        return Inputs(gates_of)

    @staticmethod
    def _layer_output(outs: list[torch.Tensor | None], lengths: torch.Tensor) -> torch.Tensor:
        states = [o.transpose(0, 1) for o in outs if o is not None]  # [batch, steps, hidden]
        if len(states) == 2:
            states[1] = reverse_within_length(states[1], lengths)
        return torch.cat(states, dim=-1)

    def _pool(
        self, pools: list[Pooled], lasts: list[torch.Tensor], lengths: torch.Tensor
    ) -> torch.Tensor:
        pooling = self.cfg.pooling
        if pooling == "last":
            return torch.cat(lasts, dim=-1)
        parts: list[torch.Tensor] = []
        if "max" in pooling:
            parts += [p.max for p in pools if p.max is not None]
        if "mean" in pooling:
            parts += [p.sum / lengths[:, None].float() for p in pools if p.sum is not None]
        return torch.cat(parts, dim=-1)


def _reverse_ids(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return reverse_within_length(tokens[:, :, None], lengths)[:, :, 0]
