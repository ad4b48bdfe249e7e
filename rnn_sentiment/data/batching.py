"""Length-bucketed batches with dynamic padding.

Reviews of similar length go in the same batch, so little compute is spent on padding, and each
batch is padded only to its own longest review.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rnn_sentiment.tokenizer import PAD_ID

# A training epoch sorts by length inside pools of this many batches: large enough that batches
# are nearly uniform in length, small enough that the order stays random across the epoch.
POOL_BATCHES = 50


def training_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Shuffled, length-bucketed batches of indices; the same (seed, epoch) gives the same list."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool_size = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda i: lengths[i])
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    rng.shuffle(batches)
    return batches


def inference_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length (longest first); callers restore the input order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# One review's token ids: a list, or an int32 array as batch scoring keeps them.
TokenIds = Sequence[int] | np.ndarray


def collate(sequences: Sequence[TokenIds]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id sequences to the longest one: (tokens [batch, time], lengths [batch])."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    tokens = np.full((len(sequences), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def predict_proba_ids(
    model: nn.Module,
    sequences: Sequence[TokenIds],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities [n, labels] for token id sequences, in their input order."""
    model.eval()
    lengths = [len(s) for s in sequences]
    out: np.ndarray | None = None
    with torch.inference_mode():
        for batch in inference_batches(lengths, batch_size):
            tokens, batch_lengths = collate([sequences[i] for i in batch])
            logits = model(tokens.to(device), batch_lengths)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(sequences), probs.shape[1]), dtype=np.float32)
            out[batch] = probs
    return out if out is not None else np.zeros((0, 2), dtype=np.float32)
