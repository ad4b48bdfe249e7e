from __future__ import annotations

import torch

from rnn_sentiment.data.batching import collate, inference_batches, training_batches


def test_training_batches_cover_every_review_once_and_are_seeded() -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    batches = training_batches(lengths, batch_size=32, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == training_batches(lengths, 32, seed=3, epoch=1)
    assert batches != training_batches(lengths, 32, seed=3, epoch=2)


def test_bucketing_wastes_little_padding() -> None:
    lengths = [(i * 37) % 400 + 1 for i in range(3200)]
    batches = training_batches(lengths, batch_size=32, seed=0, epoch=1)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert sum(lengths) / padded > 0.95


def test_inference_batches_sort_by_length() -> None:
    batches = inference_batches([3, 9, 1, 5], batch_size=2)
    assert batches == [[1, 3], [0, 2]]


def test_collate_pads_to_the_longest_sequence() -> None:
    tokens, lengths = collate([[5, 6, 7], [8]])
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1]
    assert tokens.dtype == torch.int64
