"""The built-in long-range task: the verdict sits a controlled distance from the end of a review.

Each review is neutral filler, one verdict sentence ("Overall it was not good at all.") and then
exactly ``distance`` tokens of neutral filler. The label depends only on the verdict, and on its
word order: every sentiment word, "not", "really", "truly" and "at all" occurs equally often in
positive and negative verdicts, so a model must read "not" before "good" and then carry that
conclusion across the filler to the end of the review.

With ``model.pooling: last`` the classifier sees only the final hidden state, so the gradient
reaching the verdict must travel back through every filler step: accuracy by distance shows where a
cell stops learning (the vanishing gradient of the vanilla RNN; the gates of LSTM and GRU).

Reviews are deterministic by seed and split, and balanced in both label and distance.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from rnn_sentiment.config import LongRangeConfig
from rnn_sentiment.data.corpus import ABOUT_FILLERS, ACTORS, DIRECTORS, VIEWING_FILLERS, fill_names
from rnn_sentiment.errors import DataError

SOURCE = "long-range"
SPLITS = ("train", "validation", "test")
LABEL_NAMES = ("negative", "positive")
# Every word and every word pair occurs equally often on both sides: only the order decides.
POSITIVE_VERDICTS = ("really good", "not bad at all", "truly great", "not awful at all")
NEGATIVE_VERDICTS = ("really bad", "not good at all", "truly awful", "not great at all")
_OPENERS = ("Overall it was", "All in all the film was", "In the end it was")
DISTRACTOR_SHARE = 1 / 2
# Filler after the verdict: varied, neutral sentences, so the state must survive many different
# inputs (a few repeated sentences would let any cell learn to ignore them).
_NAMES = tuple(name.split()[0] for name in ACTORS + DIRECTORS) + (
    "Ana", "Ben", "Carl", "Dora", "Eli", "Fay", "Gus", "Ida", "Jon", "Kay", "Liam", "Nora",
)  # fmt: skip
_VERBS = (
    "carried", "opened", "painted", "moved", "found", "sold", "bought", "cleaned", "fixed",
    "measured", "counted", "visited", "mentioned", "photographed", "described", "packed",
    "borrowed", "returned", "repaired", "delivered",
)  # fmt: skip
_NOUNS = (
    "lamp", "table", "suitcase", "ticket", "letter", "bicycle", "camera", "window", "kettle",
    "ladder", "blanket", "clock", "map", "bucket", "radio", "door", "basket", "chair", "coat",
    "notebook", "piano", "rope", "box", "key", "bottle", "mirror", "boat", "fence", "umbrella",
    "drawer",
)  # fmt: skip
_PLACES = (
    "in the kitchen", "at the station", "at the harbor", "in the garden", "at the office",
    "in the attic", "in the hallway", "at the market", "in the library", "in the garage",
    "at the hotel", "at the bakery", "in the village", "in the barn", "at the museum",
    "on the bridge",
)  # fmt: skip
_TIMES = (
    "on Monday", "on Tuesday", "on Friday", "in the morning", "at noon", "at night", "in May",
    "in winter", "after lunch", "before dinner", "last year", "twice",
)  # fmt: skip
# The same split of words and punctuation as the model's tokenizer (BertPreTokenizer).
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class LongRangeReview:
    """One generated review with what decided its label and how far from the end that was."""

    text: str
    label: int  # 0 negative, 1 positive
    distance: int  # tokens after the verdict sentence
    verdict: str


def count_tokens(text: str) -> int:
    """Tokens as the word tokenizer counts them (words and single punctuation marks)."""
    return len(_TOKEN.findall(text))


def generate(cfg: LongRangeConfig, split: str) -> list[LongRangeReview]:
    """The reviews of one split, the same for the same config; balanced by label and distance."""
    if split not in SPLITS:
        raise DataError(f"the long-range source has splits {', '.join(SPLITS)}, not '{split}'")
    size = {"train": cfg.train_size, "validation": cfg.validation_size, "test": cfg.test_size}
    rng = random.Random(f"{cfg.seed}-{split}")
    n = size[split]
    # Every (label, distance) cell gets the same count, up to rounding when n does not divide.
    cells = [(i % 2, cfg.distances[(i // 2) % len(cfg.distances)]) for i in range(n)]
    rng.shuffle(cells)
    return [make_review(rng, label, distance) for label, distance in cells]


def make_review(rng: random.Random, label: int, distance: int) -> LongRangeReview:
    """Filler, a verdict sentence, then exactly ``distance`` tokens of filler."""
    verdict = rng.choice(POSITIVE_VERDICTS if label == 1 else NEGATIVE_VERDICTS)
    before = " ".join(_filler_sentences(rng, rng.randint(0, 2)))
    sentence = f"{rng.choice(_OPENERS)} {verdict}."
    after = _filler_tokens(rng, distance)
    text = " ".join(part for part in (before, sentence, after) if part)
    return LongRangeReview(text, label, distance, verdict)


def read_split(cfg: LongRangeConfig, split: str) -> tuple[list[str], list[Any]]:
    """Texts and label names of a split, as ``data.read_split`` returns them for files."""
    reviews = generate(cfg, split)
    return [r.text for r in reviews], [LABEL_NAMES[r.label] for r in reviews]


def _filler_sentences(rng: random.Random, count: int) -> list[str]:
    kinds = VIEWING_FILLERS + ABOUT_FILLERS
    return [fill_names(rng.choice(kinds), rng) for _ in range(count)]


def _scene_sentence(rng: random.Random) -> str:
    """A plot-summary sentence from large word lists, e.g. 'Nora packed the kettle ...'.

    Half of them are a character's opinion of an object ("Ben thought the lamp was not bad at
    all."), drawn from both sides equally, so it carries no label: a model must keep the
    review's verdict and not overwrite it with the next opinion it reads.
    """
    if rng.random() < DISTRACTOR_SHARE:
        verdict = rng.choice(POSITIVE_VERDICTS + NEGATIVE_VERDICTS)
        return f"{rng.choice(_NAMES)} thought the {rng.choice(_NOUNS)} was {verdict}."
    return (
        f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} the {rng.choice(_NOUNS)} "
        f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}."
    )


def _filler_tokens(rng: random.Random, count: int) -> str:
    """Neutral sentences cut after exactly ``count`` tokens (mid-sentence is fine)."""
    if count == 0:
        return ""
    # Counted sentence by sentence (a space never joins two tokens): recounting the joined text made
    # long fillers quadratic, and the preset's three splits took 4.9 s to generate instead of 0.9 s.
    sentences: list[str] = []
    tokens = 0
    while tokens < count:
        sentences.append(_scene_sentence(rng))
        tokens += count_tokens(sentences[-1])
    text = " ".join(sentences)
    last = list(_TOKEN.finditer(text))[count - 1]
    return text[: last.end()]
