"""The recurrent sentiment classifier: embedding -> RNN / LSTM / GRU -> pooling -> linear.

Padding never changes a prediction. Batches are right-padded and run through the fused recurrent
kernels (PyTorch's packed-sequence path is about 20x slower on CPU); a left-to-right pass never
reads the padding that follows a review, pooling masks it out, and the right-to-left pass of a
bidirectional layer reads each review reversed within its own length, so its padding comes last too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rnn_sentiment.config import ModelConfig
from rnn_sentiment.tokenizer import PAD_ID

_CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``length`` steps and leave its padding in place: [b, t, ...]."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    last = (lengths.to(x.device) - 1)[:, None]
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index[:, :, None].expand_as(x))


class RecurrentLayer(nn.Module):
    """One recurrent layer, left-to-right and optionally right-to-left."""

    def __init__(self, cfg: ModelConfig, input_size: int) -> None:
        super().__init__()
        extra = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
        cell = _CELLS[cfg.cell]
        self.forward_rnn = cell(input_size, cfg.hidden_size, batch_first=True, **extra)
        self.backward_rnn = (
            cell(input_size, cfg.hidden_size, batch_first=True, **extra)
            if cfg.bidirectional
            else None
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, time, hidden * directions]; padded steps hold garbage."""
        out, _ = self.forward_rnn(x)
        if self.backward_rnn is None:
            return out
        back, _ = self.backward_rnn(reverse_within_length(x, lengths))
        return torch.cat([out, reverse_within_length(back, lengths)], dim=-1)


class SentimentRNN(nn.Module):
    """A many-to-one recurrent classifier over token ids."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_directions = 2 if cfg.bidirectional else 1
        width = cfg.hidden_size * self.num_directions
        pooled = width * 2 if cfg.pooling == "maxmean" else width
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=PAD_ID)
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)
        self.layers = nn.ModuleList(
            RecurrentLayer(cfg, cfg.embedding_dim if i == 0 else width)
            for i in range(cfg.num_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(pooled, num_labels)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [batch, labels] for right-padded token ids [batch, time] of true ``lengths``."""
        return self.classifier(self.dropout(self.encode(tokens, lengths)))

    def from_embeddings(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [batch, labels] of reviews given as embeddings [batch, time, dim] (adversarial
        training perturbs these)."""
        states = self._states(embedded, lengths)
        return self.classifier(self.dropout(self._pool(states, lengths.to(embedded.device))))

    def hidden_states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Top-layer hidden states [batch, time, hidden * directions]."""
        return self._states(self.embedding(tokens), lengths)

    def _states(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding_dropout(embedded)
        for i, layer in enumerate(self.layers):
            x = layer(self.dropout(x) if i else x, lengths)
        return x

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled review vector [batch, hidden * directions (x2 for maxmean)]."""
        return self._pool(self.hidden_states(tokens, lengths), lengths.to(tokens.device))

    def _pool(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cfg.pooling == "last":
            return self._last_state(states, lengths)
        mask = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]
        if self.cfg.pooling == "max":
            return self._max(states, mask)
        if self.cfg.pooling == "mean":
            return self._mean(states, mask, lengths)
        return torch.cat([self._max(states, mask), self._mean(states, mask, lengths)], dim=-1)

    @staticmethod
    def _max(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return states.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)

    @staticmethod
    def _mean(states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        summed = (states * mask[:, :, None]).sum(dim=1)
        return summed / lengths[:, None].to(states.dtype)

    def _last_state(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Left-to-right ends at each review's last real step; right-to-left ends at step 0.
        hidden = self.cfg.hidden_size
        rows = torch.arange(states.shape[0], device=states.device)
        forward_last = states[rows, lengths - 1, :hidden]
        if self.num_directions == 1:
            return forward_last
        return torch.cat([forward_last, states[:, 0, hidden:]], dim=-1)


def build_model(cfg: ModelConfig, vocab_size: int, num_labels: int) -> SentimentRNN:
    """A freshly initialised classifier for ``vocab_size`` tokens and ``num_labels`` classes."""
    return SentimentRNN(cfg, vocab_size, num_labels)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_shapes(cfg: ModelConfig, vocab_size: int, num_labels: int) -> dict[str, torch.Size]:
    """The shape of every tensor in :func:`build_model`'s state dict, with nothing allocated.

    The model is built on PyTorch's meta device, so a config asking for billions of parameters
    can be measured and refused before it costs memory (a hidden size of 16,384 in 8
    bidirectional layers reached 4.4 GB while being built for real).
    """
    with torch.device("meta"):
        model = build_model(cfg, vocab_size, num_labels)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}
