"""What scoring returns, built from probabilities alone: predictions and word-level explanations.

Shared by every engine, the PyTorch :class:`~rnn_sentiment.inference.predictor.Predictor` and the
exported (ONNX) :class:`~rnn_sentiment.inference.exported.ExportedPredictor`, so this module never
imports torch: an engine hands in a function from token ids to probabilities.

* Running sentiment: the model's prediction after reading each prefix of the review, so one can
  watch "not" turn "good" negative. A many-to-one recurrent model reads left to right, so the
  prefix prediction is exactly what it would say if the review stopped there.
* Attribution by occlusion (leave one word out): how much the probability of the final label
  drops when the word is removed and the rest is read again. It needs no gradients or linearity,
  so it is correct for recurrent models, where a word's effect depends on what came before it,
  and it runs on any engine that scores token ids, an ONNX session included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rnn_sentiment.config import is_whole
from rnn_sentiment.errors import DataError
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import UNK_ID

METHOD = "occlusion (leave one word out): drop in p(label) when the word is removed"

# Token id sequences in, probabilities [n, labels] out, in input order.
ScoreIds = Callable[[Sequence[Sequence[int]]], np.ndarray]


@dataclass
class Prediction:
    """One scored review."""

    text: str
    label: str
    score: float
    probabilities: dict[str, float]


def prediction(text: str, row: np.ndarray, label_names: Sequence[str]) -> Prediction:
    """The :class:`Prediction` of one review from its row of probabilities."""
    best = int(row.argmax())
    probabilities = {name: float(p) for name, p in zip(label_names, row, strict=True)}
    return Prediction(text, label_names[best], float(row[best]), probabilities)


@dataclass
class Explanation:
    """One review explained word by word."""

    text: str
    label: str
    probabilities: dict[str, float]
    words: list[str]
    running: list[dict[str, float]]  # class probabilities after reading words[: i + 1]
    running_labels: list[str]
    attributions: list[float]  # p(label | review) - p(label | review without words[i])
    method: str = METHOD
    words_cut: int = 0  # words past the model's max_length, not read (nor in ``words``)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, one entry per word."""
        data = asdict(self)
        words = [
            {"word": w, "running": r, "running_label": rl, "attribution": a}
            for w, r, rl, a in zip(
                self.words, self.running, self.running_labels, self.attributions, strict=True
            )
        ]
        data.update(words=words)
        for key in ("running", "running_labels", "attributions"):
            del data[key]
        return data


class TooLongToExplain(DataError):
    """A review with more words than the caller allows to explain (a server's limit): its cost
    grows with the square of its length."""

    def __init__(self, words: int, limit: int) -> None:
        self.words, self.limit = words, limit
        super().__init__(
            f"the review has {words:,} words as the model reads it (punctuation marks count; "
            f"cut to its max_length); explaining reads it {2 * words + 1:,} times, so at most "
            f"{limit:,} words are explained here"
        )


def explain_with(
    pipeline: TextPipeline,
    label_names: Sequence[str],
    score_ids: ScoreIds,
    text: str,
    max_words: int | None = None,
) -> Explanation:
    """Running sentiment and occlusion attribution for each word of ``text``.

    The review goes through the model's :class:`~rnn_sentiment.text.TextPipeline`, like every
    other entry point. Words are the tokenizer's pre-tokens of the prepared review (punctuation
    marks count as words); a word made of several subword pieces (BPE) is removed and scored as
    a whole. All prefixes and occlusions are scored in one call of ``score_ids``.

    A review with no words (blank, or only HTML line breaks) is scored as every other path scores
    it, as one unknown token, and has no words to attribute. Words past the model's max_length
    (on the side it truncates) are not read, as on every path; ``words_cut`` counts them.

    Raises:
        TooLongToExplain: it has more than ``max_words`` words (as read: up to the model's
            ``max_length``), checked before anything is scored.
    """
    if max_words is not None and not is_whole(max_words, 1):
        raise DataError(
            f"max_words must be a whole number of 1 or more (or None), not {max_words!r}"
        )
    ids, words, spans = pipeline.words(text)
    if max_words is not None and len(spans) > max_words:
        raise TooLongToExplain(len(spans), max_words)
    prefixes = [ids[:end] for _, end in spans]
    occluded = [ids[:start] + ids[end:] or [UNK_ID] for start, end in spans]
    probs = score_ids([ids or [UNK_ID], *prefixes, *occluded])  # no words: scored as predict does
    full, running, without = probs[0], probs[1 : len(spans) + 1], probs[len(spans) + 1 :]
    best = int(full.argmax())
    names = list(label_names)
    return Explanation(
        text=text,
        label=names[best],
        probabilities=_named(names, full),
        words=words,
        running=[_named(names, row) for row in running],
        running_labels=[names[int(row.argmax())] for row in running],
        attributions=[float(full[best] - row[best]) for row in without],
        words_cut=len(pipeline.untruncated.words(text)[2]) - len(spans),
    )


def words_to_explain(pipeline: TextPipeline, text: str) -> int:
    """How many words :func:`explain_with` would explain in ``text`` (what its cost grows with:
    the words as the model reads them, cut to its ``max_length``)."""
    return len(pipeline.words(text)[2])


def _named(names: list[str], row: np.ndarray) -> dict[str, float]:
    return {name: float(p) for name, p in zip(names, row, strict=True)}
