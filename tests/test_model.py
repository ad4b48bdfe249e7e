from __future__ import annotations

import itertools

import pytest
import torch

from rnn_sentiment.config import ModelConfig
from rnn_sentiment.data.batching import collate
from rnn_sentiment.model import build_model, count_parameters, reverse_within_length

SEQUENCES = [[3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13], [2], [9, 9, 4, 3]]
CASES = list(
    itertools.product(["rnn", "lstm", "gru"], [False, True], ["last", "mean", "max", "maxmean"])
)


@pytest.mark.parametrize(("cell", "bidirectional", "pooling"), CASES)
def test_padding_never_changes_a_prediction(cell: str, bidirectional: bool, pooling: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        cell=cell, bidirectional=bidirectional, pooling=pooling,  # type: ignore[arg-type]
        num_layers=2, embedding_dim=8, hidden_size=12,
    )  # fmt: skip
    model = build_model(cfg, vocab_size=20, num_labels=2).eval()
    tokens, lengths = collate(SEQUENCES)
    with torch.no_grad():
        batched = torch.softmax(model(tokens, lengths), dim=-1)
        for row, sequence in enumerate(SEQUENCES):
            alone = torch.softmax(model(*collate([sequence])), dim=-1)[0]
            torch.testing.assert_close(alone, batched[row], atol=1e-5, rtol=0)


def test_reverse_within_length_leaves_padding_in_place() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])[:, :, None]
    out = reverse_within_length(x, torch.tensor([3, 2]))[:, :, 0]
    assert out.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


def test_word_order_reaches_the_output() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm", pooling="last"), 20, 2).eval()
    with torch.no_grad():
        forward = model(*collate([[3, 4, 5]]))
        reversed_ = model(*collate([[5, 4, 3]]))
    assert not torch.allclose(forward, reversed_)


@pytest.mark.parametrize(("cell", "gates"), [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_parameter_count_follows_the_cell(cell: str, gates: int) -> None:
    cfg = ModelConfig(cell=cell, embedding_dim=4, hidden_size=5)  # type: ignore[arg-type]
    model = build_model(cfg, vocab_size=10, num_labels=2)
    recurrent = gates * (5 * 4 + 5 * 5 + 2 * 5)
    assert count_parameters(model) == 10 * 4 + recurrent + 5 * 2 + 2


def test_relu_nonlinearity_is_used_by_the_vanilla_cell() -> None:
    model = build_model(ModelConfig(cell="rnn", nonlinearity="relu"), 10, 2)
    assert model.layers[0].forward_rnn.nonlinearity == "relu"


def test_maxmean_pooling_concatenates_max_and_mean() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", bidirectional=True, hidden_size=6, pooling="maxmean")
    model = build_model(cfg, 20, 2).eval()
    tokens, lengths = collate(SEQUENCES)
    with torch.no_grad():
        pooled = model.encode(tokens, lengths)
        states = model.hidden_states(tokens, lengths)
    assert pooled.shape == (len(SEQUENCES), 24)
    for row, n in enumerate(lengths.tolist()):
        real = states[row, :n]
        torch.testing.assert_close(pooled[row, :12], real.amax(dim=0))
        torch.testing.assert_close(pooled[row, 12:], real.mean(dim=0))
