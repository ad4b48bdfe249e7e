"""How a raw review becomes token ids: the one definition every entry point goes through.

A model directory owns its text preparation: its config's ``data.clean_html`` and its tokenizer.
Training and validation, ``evaluate``, every form of ``predict``, batch scoring, ``--explain``
and ``compare`` all call :class:`TextPipeline`, so a review gets the same ids, and so the same
probabilities, however it reaches the model (a review scored 0.55 negative from ``predict TEXT``
and 0.96 positive from ``predict --input`` while two paths each did their own cleaning).

The steps, in order:

1. :meth:`TextPipeline.prepare`: bytes that were not valid UTF-8 (kept as surrogate escapes by
   the file readers and by Python's decoding of argv) and lone surrogates become U+FFFD; a
   byte-order mark (U+FEFF) is dropped; with ``clean_html``, HTML line breaks (IMDB's
   ``<br /><br />``) become spaces.
2. The tokenizer: normalization, pre-tokenization, the vocabulary and truncation to the trained
   length; an empty review becomes a single ``[UNK]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from rnn_sentiment.config import TokenizerConfig, is_whole
from rnn_sentiment.errors import DataError
from rnn_sentiment.tokenizer import (
    configure_truncation,
    encode,
    encode_arrays,
    encode_cached,
    train_tokenizer,
)

# How a review longer than the trained length is scored: truncated as in training, or as
# overlapping windows of that length whose probabilities are averaged (Windows.mean).
LongReviews = Literal["truncate", "window"]

_BR_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SURROGATES = re.compile("[\ud800-\udfff]")


def fix_text(value: str) -> tuple[str, bool]:
    """``value`` with every lone surrogate replaced by U+FFFD; True if there was one.

    Surrogates are what the readers keep of bytes that are not UTF-8 (surrogate escapes), and what
    a JSON escape such as ``"\\ud83d"`` (half of a cut emoji) gives; UTF-8 cannot hold either.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value), True
    return value, False


def clean_html(text: str) -> str:
    """Turn HTML line breaks into spaces (IMDB reviews are full of ``<br /><br />``)."""
    return _BR_TAG.sub(" ", text)


class NotAReview(DataError, TypeError):
    """A review that is not a str (a DataError, and a TypeError as Python would raise)."""


def prepare_text(text: str, html: bool) -> str:
    """Step 1 of the pipeline for one review (see the module docstring)."""
    if not isinstance(text, str):
        raise NotAReview(f"reviews must be strings, got {type(text).__name__}")
    # U+FEFF: a byte-order mark that an editor left at the start of a file or line; invisible,
    # it would otherwise glue itself to the first word and make it unknown.
    text = fix_text(text)[0].replace("\ufeff", "")
    return clean_html(text) if html else text


@dataclass(frozen=True)
class Windows:
    """Token id windows of several reviews; ``owner[i]`` is the review window ``i`` belongs to."""

    ids: list[np.ndarray]
    owner: np.ndarray
    count: int

    def mean(self, probs: np.ndarray) -> np.ndarray:
        """Each review's probabilities [count, labels]: the mean of its windows' ``probs``."""
        sums = np.zeros((self.count, probs.shape[1]), dtype=np.float64)
        np.add.at(sums, self.owner, probs)
        counts = np.bincount(self.owner, minlength=self.count)[:, None]
        return (sums / counts).astype(np.float32)


@dataclass(frozen=True)
class TextPipeline:
    """A model's text preparation and tokenizer: raw review in, token ids out."""

    tokenizer: Tokenizer
    clean_html: bool

    @classmethod
    def learn(cls, texts: Iterable[str], cfg: TokenizerConfig, html: bool) -> TextPipeline:
        """Train the tokenizer on ``texts`` as this pipeline prepares them (training data only)."""
        return cls(train_tokenizer((prepare_text(t, html) for t in texts), cfg), html)

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Step 1 for each review: what the tokenizer reads."""
        return [prepare_text(text, self.clean_html) for text in texts]

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each review as a small int32 array (batch scoring's memory stays flat)."""
        return encode_arrays(self.tokenizer, self.prepare(texts))

    def encode_lists(self, texts: Sequence[str], cache_dir: str | None = None) -> list[list[int]]:
        """Token ids as lists, cached on disk under ``cache_dir`` when given (training data)."""
        return encode_cached(self.tokenizer, self.prepare(texts), cache_dir)

    def encode_windows(self, texts: Sequence[str], size: int, stride: int) -> Windows:
        """Each whole review (not truncated) as windows of ``size`` tokens, ``stride`` apart
        (as :func:`window_stride_of` decides and checks it)."""
        windows: list[np.ndarray] = []
        owner: list[int] = []
        for i, sequence in enumerate(self.untruncated.encode(texts)):
            for start in window_starts(len(sequence), size, stride):
                windows.append(sequence[start : start + size])
                owner.append(i)
        return Windows(windows, np.asarray(owner, dtype=np.int64), len(texts))

    def words(self, text: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
        """Token ids of one review, its words, and each word's (first, last + 1) token index.

        Words are the tokenizer's pre-tokens of the prepared review (punctuation marks count
        as words); a word the tokenizer splits into pieces (BPE) spans several tokens.
        """
        prepared = prepare_text(text, self.clean_html)
        encoding = self.tokenizer.encode(prepared, add_special_tokens=False)
        spans = _word_spans(encoding.word_ids)
        offsets = encoding.offsets
        words = [prepared[offsets[a][0] : offsets[b - 1][1]] for a, b in spans]
        return list(encoding.ids), words, spans

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Each review's length in tokens before truncation."""
        return [len(ids) for ids in encode(self.untruncated.tokenizer, self.prepare(texts))]

    @cached_property
    def untruncated(self) -> TextPipeline:
        """The same pipeline without truncation (a copy: this one is unchanged)."""
        tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        configure_truncation(tokenizer, None, "right")
        return TextPipeline(tokenizer, self.clean_html)


# The most windows that may read each token: a stride of 1 on 400-token windows would score a
# review 400 times over (a 1 MiB review for hours), for no measurable gain over 1/64 of it.
MAX_WINDOW_OVERLAP = 64


def review_list(texts: Iterable[str]) -> Sequence[str]:
    """``texts`` as the scoring methods take them: a list (or another sequence) of reviews, a
    generator or a numpy array read into a list. One string would be scored a character at a
    time, and None would fail far from the call: both are refused (NotAReview)."""
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()  # a 0-d array gives back its one str: refused next
    if isinstance(texts, (str, bytes)):
        raise NotAReview(f"texts is one {type(texts).__name__}, not a list of reviews: pass [text]")
    if isinstance(texts, Sequence):
        return texts
    if not isinstance(texts, Iterable):
        raise NotAReview(f"texts must be a list of reviews, got {type(texts).__name__}")
    return list(texts)


def review_stream(texts: Iterable[str], chunk_size: int) -> Iterable[str]:
    """``texts`` for ``iter_predict``, read lazily: refused as :func:`review_list` refuses, and
    a ``chunk_size`` under 1 (which would read nothing, or fail inside islice) too."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        review_list(texts)  # raises: the same message
    if not is_whole(chunk_size, 1):
        raise DataError(f"chunk_size must be a whole number of 1 or more, not {chunk_size!r}")
    return texts


def window_stride_of(size: int, stride: int | None, long_reviews: str = "window") -> int | None:
    """``stride`` (default: half of ``size``), refused (DataError) when over ``size`` (the
    tokens between windows would never be read) or under 1/:data:`MAX_WINDOW_OVERLAP` of it;
    None when ``long_reviews`` is not 'window' (a stride given then is refused: it would be
    ignored)."""
    if long_reviews not in ("truncate", "window"):  # anything else was read as truncate
        raise DataError(f"long_reviews must be 'truncate' or 'window', not {long_reviews!r}")
    if long_reviews != "window":
        if stride is not None:
            raise DataError("--window-stride goes with --long-reviews window; add that, or drop it")
        return None
    if stride is not None and stride < 1:
        raise DataError(f"--window-stride must be 1 or more, not {stride}")
    stride = stride or max(size // 2, 1)
    if stride > size:
        raise DataError(
            f"--window-stride {stride:,} is longer than a window ({size:,} tokens, the length "
            f"the model was trained on): the words between windows would not be read; give at "
            f"most {size:,}"
        )
    shortest = -(-size // MAX_WINDOW_OVERLAP)
    if stride < shortest:
        raise DataError(
            f"--window-stride {stride:,} would read each token in up to {-(-size // stride):,} "
            f"windows of {size:,} tokens (at most {MAX_WINDOW_OVERLAP}): give at least {shortest:,}"
        )
    return stride


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` tokens, ``stride`` apart, the last one ending at the
    end of the review; a review that fits is one window."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def _word_spans(word_ids: list[int | None]) -> list[tuple[int, int]]:
    """(first, last + 1) token index of each word, in order."""
    spans: list[tuple[int, int]] = []
    previous: int | None = None
    for index, word in enumerate(word_ids):
        if word is not None and word == previous:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
        previous = word
    return spans
