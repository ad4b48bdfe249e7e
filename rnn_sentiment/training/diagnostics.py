"""Gradient flow through time: how much of the loss's gradient reaches each step of a review.

Backpropagation through time multiplies the gradient by the recurrent Jacobian once per step, so in
a vanilla RNN the gradient that reaches early words shrinks geometrically (or explodes); the gates
of LSTM and GRU keep a path along which it survives. :func:`gradient_flow` measures this with
autograd on the real model: it reruns the top recurrent layer one step at a time with the model's
own weights, so each hidden state h_t is a tensor in the graph that both the output and the next
step read, and ``d loss / d h_t`` is the full derivative through every later step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rnn_sentiment.data.batching import collate
from rnn_sentiment.model import RecurrentLayer, SentimentRNN


def state_gradient_norms(
    model: SentimentRNN, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``||d loss / d h_t||`` [batch, time] for the top layer's left-to-right states.

    The loss is the *summed* cross-entropy, so a review's gradients do not depend on what else is
    in the batch; steps in a review's padding get zero. Dropout is off (eval mode) and the
    parameters' ``.grad`` are left untouched.
    """
    states: list[torch.Tensor] = []

    def unrolled(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
        assert isinstance(module, RecurrentLayer)
        states.extend(_unroll(module.forward_rnn, inputs[0]))
        forward = torch.stack(states, dim=1)
        if module.backward_rnn is None:
            return forward
        return torch.cat([forward, output[..., forward.shape[-1] :]], dim=-1)

    was_training = model.training
    model.eval()
    handle = model.layers[-1].register_forward_hook(unrolled)
    try:
        # cuDNN refuses the backward pass of an RNN in eval mode; its CUDA fallback does not.
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            logits = model(tokens, lengths)
            loss = F.cross_entropy(logits, labels.to(logits.device), reduction="sum")
            grads = torch.autograd.grad(loss, states, allow_unused=True)
    finally:
        handle.remove()
        model.train(was_training)
    norms = [
        torch.zeros(len(tokens)) if g is None else g.detach().float().norm(dim=-1).cpu()
        for g in grads
    ]
    return torch.stack(norms, dim=1)


def _unroll(rnn: nn.RNNBase, x: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states [batch, hidden] of ``rnn`` over ``x`` [batch, time, in], one step at a time."""
    states: list[torch.Tensor] = []
    state: Any = None
    for t in range(x.shape[1]):
        out, state = rnn(x[:, t : t + 1], state)
        h = out[:, 0]
        states.append(h)
        # The next step must read this very tensor, so that its gradient includes the recurrence.
        state = (h[None], state[1]) if isinstance(state, tuple) else h[None]
    return states


def by_distance(norms: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """Mean norm over reviews at each distance from the end (0 = last token) [longest length]."""
    total = np.zeros(int(lengths.max()))
    count = np.zeros(int(lengths.max()))
    for row, length in zip(norms.numpy(), lengths.tolist(), strict=True):
        total[:length] += row[:length][::-1]
        count[:length] += 1
    return total / count


def gradient_flow(
    model: SentimentRNN,
    sequences: Sequence[Sequence[int]],
    labels: Sequence[int],
    device: torch.device | str = "cpu",
) -> list[float]:
    """Mean ``||d loss / d h_t||`` by distance from the end of the review, for token id sequences.

    Reviews are right-padded as in training; element ``d`` averages the reviews longer than ``d``.
    """
    tokens, lengths = collate(sequences)
    norms = state_gradient_norms(model, tokens.to(device), lengths, torch.tensor(list(labels)))
    return [float(v) for v in by_distance(norms, lengths)]


def longest_reviews(
    sequences: Sequence[Sequence[int]], labels: Sequence[int], count: int
) -> tuple[list[Sequence[int]], list[int]]:
    """The ``count`` longest labelled reviews: where vanishing gradients show."""
    labelled = [i for i, label in enumerate(labels) if label >= 0]
    picked = sorted(labelled, key=lambda i: (-len(sequences[i]), i))[:count]
    return [sequences[i] for i in picked], [labels[i] for i in picked]


def explosion_warning(norms: Sequence[float], ratio: float, grad_clip: float | None) -> str | None:
    """A warning when an epoch's gradient norms explode: non-finite, or a max that is both
    ``ratio`` times the median and large in itself (10x the clipping threshold, or 10 unclipped).
    A converged model's tiny median makes harmless bumps look large in ratio alone.
    """
    if not norms:
        return None
    bad = sum(1 for n in norms if not math.isfinite(n))
    if bad:
        return f"the gradient norm was not finite on {bad} of {len(norms)} steps"
    median, peak = float(np.median(norms)), float(np.max(norms))
    if peak <= ratio * max(median, 1e-12) or peak <= 10 * (grad_clip or 1.0):
        return None
    advice = (
        f"clipping to {grad_clip} kept the updates bounded"
        if grad_clip is not None
        else "set training.grad_clip (for example 1.0) or lower training.lr"
    )
    return (
        f"the gradient norm exploded: its max {peak:.3g} is {peak / max(median, 1e-12):.0f}x "
        f"the median {median:.3g}; {advice}"
    )
