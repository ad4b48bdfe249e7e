"""Word vectors learned from review texts before supervised training (word2vec, via gensim).

A classifier trained from scratch learns what each word means from the labelled reviews alone.
word2vec learns it from every review text, labelled or not (IMDB ships 50,000 unlabelled ones):
words used in the same contexts get similar vectors, so a word seen a few times in training, or
only in unlabelled reviews' company, starts close to the words it behaves like. The vectors are
learned over the classifier's own token ids and become the embedding layer's starting weights;
supervised training then goes on to change them like any other weight. Words outside the
vocabulary are ``[UNK]`` in the texts too, so ``[UNK]`` gets a vector like any frequent word.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnn_sentiment.config import PretrainingConfig
from rnn_sentiment.errors import TrainingError
from rnn_sentiment.tokenizer import PAD_ID

if TYPE_CHECKING:
    from gensim.models import KeyedVectors


@dataclass
class PretrainedVectors:
    """Vectors for every token id, and which ids the texts taught (the rest stay random)."""

    vectors: torch.Tensor  # [vocab, dim], unit standard deviation; zero where not learned
    learned: torch.Tensor  # [vocab] bool
    texts: int
    tokens: int
    seconds: float

    def summary(self) -> dict[str, float | int]:
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "words": int(self.learned.sum()),
            "seconds": self.seconds,
        }


class EnoughEpochs(Exception):  # noqa: N818 - a signal, not an error
    """Raised by ``on_epoch`` to end pretraining after that epoch, keeping what was learned."""


def pretrain_vectors(
    token_ids: Sequence[Sequence[int]],
    vocab_size: int,
    dim: int,
    cfg: PretrainingConfig,
    seed: int,
    on_epoch: Callable[[int], None] | None = None,
) -> PretrainedVectors:
    """word2vec over tokenized texts; ``on_epoch(n)`` is called after each of ``cfg.epochs``
    and may raise :class:`EnoughEpochs` to stop there (a time budget)."""
    start = time.perf_counter()
    names = [str(i) for i in range(vocab_size)]  # shared strings: one per id, not per token
    sentences = [[names[i] for i in ids if i != PAD_ID] for ids in token_ids]
    distinct = len({word for sentence in sentences for word in sentence})
    if distinct < 2:
        raise TrainingError(
            f"pretraining needs texts with at least two different known words; these "
            f"{len(sentences):,} texts have {distinct} (check data.unlabelled_split and the "
            "tokenizer settings, or set pretraining.method=none)"
        )
    wv = _word2vec(sentences, dim, cfg, seed, on_epoch)
    ids = torch.from_numpy(np.array([int(key) for key in wv.index_to_key], dtype=np.int64))
    found = wv.vectors
    # nn.Embedding starts from N(0, 1); the learned vectors keep their directions at that scale.
    scaled = torch.from_numpy(found / max(float(found.std()), 1e-12))
    vectors = torch.zeros(vocab_size, dim)
    learned = torch.zeros(vocab_size, dtype=torch.bool)
    vectors[ids] = scaled  # at least two words: checked above; never [PAD]
    learned[ids] = True
    return PretrainedVectors(
        vectors=vectors,
        learned=learned,
        texts=len(token_ids),
        tokens=sum(len(s) for s in sentences),
        seconds=time.perf_counter() - start,
    )


def _word2vec(
    sentences: list[list[str]],
    dim: int,
    cfg: PretrainingConfig,
    seed: int,
    on_epoch: Callable[[int], None] | None,
) -> KeyedVectors:
    """The word vectors gensim learns from ``sentences``; its failures become one-line errors."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _Progress(CallbackAny2Vec):
        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, model: Word2Vec) -> None:
            self.epoch += 1
            if on_epoch is not None:
                on_epoch(self.epoch)

    # What Word2Vec(sentences, ...) does, in its two steps, so that a stop after an epoch keeps
    # the model trained so far.
    w2v = Word2Vec(
        vector_size=dim,
        window=cfg.window,
        negative=cfg.negative,
        sg=int(cfg.skipgram),
        sample=cfg.sample,
        epochs=cfg.epochs,
        min_count=1,  # the tokenizer already dropped rare words
        workers=cfg.threads,
        seed=seed,
    )
    try:
        w2v.build_vocab(sentences)
        w2v.train(sentences, total_examples=w2v.corpus_count, epochs=w2v.epochs,
                  callbacks=[_Progress()])  # fmt: skip
    except EnoughEpochs:
        pass
    except (RuntimeError, ValueError, MemoryError) as exc:  # gensim's own failures, one line
        raise TrainingError(f"word2vec pretraining failed: {exc}") from None
    return w2v.wv


def load_vectors(embedding: torch.nn.Embedding, pretrained: PretrainedVectors) -> None:
    """Copy the learned rows into ``embedding``; rows the texts never showed keep their init."""
    if embedding.weight.shape != pretrained.vectors.shape:
        raise ValueError(
            f"embedding {tuple(embedding.weight.shape)} does not fit pretrained vectors "
            f"{tuple(pretrained.vectors.shape)}"
        )
    with torch.no_grad():
        rows = pretrained.learned.to(embedding.weight.device)
        embedding.weight[rows] = pretrained.vectors.to(embedding.weight)[rows]
