"""Gradient flow through time, checked against known answers."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rnn_sentiment.config import ModelConfig
from rnn_sentiment.model import build_model
from rnn_sentiment.training.diagnostics import (
    by_distance,
    explosion_warning,
    gradient_flow,
    state_gradient_norms,
)


def tiny_model(cell: str, pooling: str = "last", hidden: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=4, hidden_size=hidden, pooling=pooling, dropout=0.0)
    return build_model(cfg, vocab_size=12, num_labels=2)


def manual_states(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The recurrence written out by hand with the model's weights: the textbook equations."""
    rnn = model.layers[0].forward_rnn
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    x = model.embedding(tokens)
    h = torch.zeros(len(tokens), rnn.hidden_size)
    c = torch.zeros_like(h)
    states = []
    for t in range(tokens.shape[1]):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if isinstance(rnn, torch.nn.LSTM):
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif isinstance(rnn, torch.nn.GRU):
            (ri, zi, ni), (rh, zh, nh) = gi.chunk(3, dim=-1), gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
            h = (1 - z) * torch.tanh(ni + r * nh) + z * h
        else:
            h = torch.tanh(gi + gh)
        states.append(h)
    return states


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "max", "mean"])
def test_five_step_norms_equal_a_direct_autograd_computation(cell: str, pooling: str) -> None:
    model = tiny_model(cell, pooling).eval()
    tokens = torch.tensor([[2, 5, 7, 3, 9], [4, 4, 8, 1, 6]])
    lengths = torch.tensor([5, 5])
    labels = torch.tensor([1, 0])

    measured = state_gradient_norms(model, tokens, lengths, labels)

    states = manual_states(model, tokens)
    stacked = torch.stack(states, dim=1)
    if pooling == "last":
        pooled = stacked[:, -1]
    elif pooling == "max":
        pooled = stacked.amax(dim=1)
    else:
        pooled = stacked.mean(dim=1)
    loss = F.cross_entropy(model.classifier(pooled), labels, reduction="sum")
    expected = torch.stack([g.norm(dim=-1) for g in torch.autograd.grad(loss, states)], dim=1)
    torch.testing.assert_close(measured, expected, rtol=1e-4, atol=1e-7)
    assert (measured[:, 0] > 0).all()  # the first step is reached through the recurrence


def test_small_recurrent_weights_decay_geometrically_with_distance() -> None:
    model = tiny_model("rnn", hidden=8)
    scale = 0.5
    rnn = model.layers[0].forward_rnn
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(scale * torch.eye(8))
        rnn.bias_hh_l0.zero_()
        rnn.bias_ih_l0.zero_()
        model.embedding.weight.mul_(1e-3)  # tiny states: tanh' is 1, so each step multiplies by 0.5
    tokens = torch.randint(2, 12, (4, 12))
    curve = gradient_flow(model, tokens.tolist(), [0, 1, 0, 1])
    ratios = [curve[d + 1] / curve[d] for d in range(len(curve) - 1)]
    assert ratios == pytest.approx([scale] * len(ratios), rel=1e-3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_does_not_change_the_gradient_flow(cell: str) -> None:
    model = tiny_model(cell, pooling="max")
    short, long = [3, 7, 2, 9, 4, 5], [6, 2, 8, 3, 3, 9, 10, 4, 2, 7]
    alone = gradient_flow(model, [short], [1])
    tokens = torch.tensor([short + [0] * 4, long])
    norms = state_gradient_norms(model, tokens, torch.tensor([6, 10]), torch.tensor([1, 0]))
    assert by_distance(norms[:1], torch.tensor([6])).tolist() == pytest.approx(alone, rel=1e-5)
    assert norms[0, 6:].abs().max() == 0  # padding steps do not reach the loss


def test_measuring_leaves_parameter_gradients_and_mode_alone() -> None:
    model = tiny_model("lstm").train()
    gradient_flow(model, [[2, 3, 4]], [1])
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_explosion_warning() -> None:
    assert explosion_warning([1.0, 1.2, 0.9, 1.1], 20.0, 1.0) is None
    assert explosion_warning([0.001, 0.001, 0.001, 4.0], 20.0, 1.0) is None  # converged, a bump
    warning = explosion_warning([1.0, 1.0, 1.0, 500.0], 20.0, 1.0)
    assert warning is not None and "500x the median" in warning and "clipping to 1.0" in warning
    no_clip = explosion_warning([1.0, 1.0, 1.0, 500.0], 20.0, None)
    assert no_clip is not None and "training.grad_clip" in no_clip
    assert "not finite" in (explosion_warning([1.0, float("inf")], 20.0, None) or "")
