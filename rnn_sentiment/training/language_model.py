"""A language model over the classifier's own embeddings and recurrent layers.

Pretraining teaches the encoder (embedding + recurrent layers) what reviews look like before it
sees a label: the left-to-right direction of each layer predicts the next token, the
right-to-left direction (bidirectional models) the previous one. The encoder is the very
:class:`~rnn_sentiment.model.SentimentRNN` body the classifier has, so its weights carry over by
name; only the output layers are the language model's own, and are dropped afterwards.

A bidirectional model of several layers cannot be pretrained so: its second layer reads both
directions of the first, so the left-to-right states would already have seen the next token.

Output layers, for a 45,000-word vocabulary and 128 hidden units (one direction):

- ``full``: a softmax over every word, ~11.5 MFLOP a token with its gradient; exact.
- ``adaptive``: PyTorch's adaptive softmax (Grave et al. 2017), the frequent words in a small
  head, rarer ones in clusters behind narrower projections; exact, several times cheaper.
- ``sampled``: the true word against ``samples`` negatives shared by the batch, drawn from the
  unigram distribution to the power 0.75, with the logQ correction (Jean et al. 2015) and
  accidental hits removed; a biased estimate of the full loss, the cheapest by far. Perplexity
  is always measured exactly, with the full softmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rnn_sentiment.config import LanguageModelConfig, ModelConfig
from rnn_sentiment.model import SentimentRNN
from rnn_sentiment.tokenizer import PAD_ID

# Positions scored at once by the full softmax: 1,024 x 45,000 words is 184 MB of fp32 logits.
_NLL_ROWS = 1024
# Adaptive softmax clusters: the most frequent words in the head, then two tails.
_CUTOFFS = (2_000, 10_000)


def token_counts(sequences: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """How often each token id occurs in ``sequences`` (float64 [vocab])."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for ids in sequences:
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1.0)
    return counts


def lm_pieces(sequences: Sequence[Sequence[int]], length: int) -> list[list[int]]:
    """Each sequence cut into consecutive pieces of at most ``length`` tokens; pieces of one
    token (nothing to predict) are dropped."""
    pieces: list[list[int]] = []
    for ids in sequences:
        for start in range(0, len(ids), length):
            piece = list(ids[start : start + length])
            if len(piece) >= 2:
                pieces.append(piece)
    return pieces


def next_and_previous_targets(
    tokens: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets [batch, time] of each position, ``PAD_ID`` where there is none (ignored): the
    next token for the left-to-right direction, the previous one for the right-to-left."""
    steps = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    real = steps < lengths.to(tokens.device)[:, None]
    following = torch.full_like(tokens, PAD_ID)
    following[:, :-1] = tokens[:, 1:]
    following = following.masked_fill(~real, PAD_ID)
    preceding = torch.full_like(tokens, PAD_ID)
    preceding[:, 1:] = tokens[:, :-1]
    preceding = preceding.masked_fill(~real, PAD_ID)
    return following, preceding


class OutputLayer(nn.Module):
    """One direction's word prediction: the loss of hidden states [n, hidden] for targets [n]."""

    def __init__(self, hidden: int, counts: np.ndarray, lm: LanguageModelConfig) -> None:
        super().__init__()
        vocab = len(counts)
        self.kind, self.samples = lm.softmax, lm.samples
        # The adaptive softmax has its own weights; the others share these.
        shared = lm.softmax != "adaptive"
        self.weight = nn.Parameter(
            torch.empty(vocab if shared else 0, hidden).normal_(0.0, hidden**-0.5)
        )
        self.bias = nn.Parameter(torch.zeros(vocab if shared else 0))
        # Sampling distribution and its log (the logQ correction), from the texts' counts.
        smoothed = (counts + 1.0) ** 0.75
        smoothed[PAD_ID] = 0.0
        proposal = torch.tensor(smoothed / smoothed.sum(), dtype=torch.float32)  # float64 promoted
        self.register_buffer("proposal", proposal, persistent=False)  # the loss to float64
        # The adaptive softmax wants ids in order of frequency: rank[id] is that order.
        order = np.argsort(-counts, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.rank: torch.Tensor
        self.register_buffer("rank", torch.tensor(rank), persistent=False)
        cutoffs = [c for c in _CUTOFFS if c < vocab - 1] or [max(1, vocab // 2)]
        self.adaptive = (
            nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs, div_value=4.0)
            if lm.softmax == "adaptive"
            else None
        )

    def loss(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean training loss of ``states`` [n, hidden] predicting ``targets`` [n]."""
        if self.adaptive is not None:  # its cluster outputs are copied into one fp32 tensor
            with torch.autocast(states.device.type, enabled=False):
                return self.adaptive(states.float(), self.rank[targets]).loss
        if self.kind == "full":
            return self.nll(states, targets).mean()
        return self._sampled(states, targets)

    def nll(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Exact negative log-likelihood [n] of each target (the full or adaptive softmax), in
        slices: a batch's 16,000 positions against 45,000 words would be 2.9 GB at once."""
        pairs = zip(states.split(_NLL_ROWS), targets.split(_NLL_ROWS), strict=True)
        return torch.cat([self._nll(part, wanted) for part, wanted in pairs])

    def _nll(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.adaptive is not None:
            with torch.autocast(states.device.type, enabled=False):
                log_probs = self.adaptive.log_prob(states.float())
            return -log_probs.gather(1, self.rank[targets][:, None])[:, 0]
        logits = nn.functional.linear(states, self.weight, self.bias).float()
        return nn.functional.cross_entropy(logits, targets, reduction="none")

    def _sampled(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        proposal: torch.Tensor = self.proposal  # type: ignore[assignment]
        negatives = torch.multinomial(proposal, self.samples, replacement=True)
        log_expected = torch.log(proposal * self.samples)
        true_logits = (states * self.weight[targets].to(states.dtype)).sum(-1).float()
        true_logits = true_logits + self.bias[targets] - log_expected[targets]
        sampled = (
            nn.functional.linear(
                states,
                self.weight[negatives].to(states.dtype),
                self.bias[negatives].to(states.dtype),
            ).float()
            - log_expected[negatives]
        )
        sampled = sampled.masked_fill(negatives[None, :] == targets[:, None], -math.inf)
        logits = torch.cat([true_logits[:, None], sampled], dim=1)
        zeros = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
        return nn.functional.cross_entropy(logits, zeros)


class LanguageModel(nn.Module):
    """The classifier's body (``body``, a :class:`SentimentRNN` whose classifier is unused) with
    an output layer per direction."""

    def __init__(
        self, cfg: ModelConfig, counts: np.ndarray, lm: LanguageModelConfig, num_labels: int = 2
    ) -> None:
        super().__init__()
        self.body = SentimentRNN(cfg, len(counts), num_labels)
        self.body.classifier.requires_grad_(False)  # not trained here, not saved
        self.hidden = cfg.hidden_size
        directions = 2 if cfg.bidirectional else 1
        self.heads = nn.ModuleList(
            OutputLayer(cfg.hidden_size, counts, lm) for _ in range(directions)
        )

    def directions(
        self, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, OutputLayer]]:
        """(states [n, hidden], targets [n], output layer) of each direction, real steps only."""
        states = self.body.dropout(self.body.hidden_states(tokens, lengths))
        following, preceding = next_and_previous_targets(tokens, lengths)
        found: list[tuple[torch.Tensor, torch.Tensor, OutputLayer]] = []
        heads: list[OutputLayer] = list(self.heads)  # type: ignore[arg-type]
        for d, (head, targets) in enumerate(zip(heads, (following, preceding), strict=False)):
            keep = targets != PAD_ID
            part = states[..., d * self.hidden : (d + 1) * self.hidden]
            found.append((part[keep], targets[keep], head))
        return found

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The training loss: the mean over directions of each direction's mean loss."""
        losses = [head.loss(s, t) for s, t, head in self.directions(tokens, lengths)]
        return torch.stack(losses).mean()

    @torch.no_grad()
    def nll_sums(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[tuple[float, int]]:
        """(summed exact negative log-likelihood, predicted tokens) of each direction."""
        return [
            (float(head.nll(s, t).sum()), len(t)) for s, t, head in self.directions(tokens, lengths)
        ]
