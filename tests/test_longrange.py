"""The generated long-range task: deterministic, balanced, and the distance is exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tokenizers import pre_tokenizers

from rnn_sentiment.config import LongRangeConfig, load_config
from rnn_sentiment.data.longrange import (
    NEGATIVE_VERDICTS,
    POSITIVE_VERDICTS,
    count_tokens,
    generate,
)
from rnn_sentiment.data.sources import load_splits

PRESET = Path(__file__).parents[1] / "configs" / "long-range.yaml"
SMALL = LongRangeConfig(distances=[0, 3, 17, 40], train_size=200, validation_size=40, test_size=80)


def test_same_seed_same_reviews_and_splits_differ() -> None:
    assert generate(SMALL, "test") == generate(SMALL, "test")
    assert generate(SMALL, "test") != generate(SMALL.model_copy(update={"seed": 8}), "test")
    assert generate(SMALL, "test") != generate(SMALL, "validation")[:80]


def test_balanced_by_label_and_distance() -> None:
    reviews = generate(SMALL, "train")
    cells = Counter((r.label, r.distance) for r in reviews)
    assert set(cells.values()) == {25}  # 200 reviews / (2 labels x 4 distances)
    assert len(cells) == 8


def test_the_verdict_sits_exactly_distance_tokens_from_the_end() -> None:
    split_words = pre_tokenizers.BertPreTokenizer()
    for review in generate(SMALL, "test"):
        verdict_sentence = review.verdict + "."
        after = review.text[review.text.index(verdict_sentence) + len(verdict_sentence) :]
        assert len(split_words.pre_tokenize_str(after)) == review.distance


def test_only_word_order_separates_the_verdicts() -> None:
    def words(phrases: tuple[str, ...]) -> Counter[str]:
        return Counter(w for p in phrases for w in p.split())

    assert words(POSITIVE_VERDICTS) == words(NEGATIVE_VERDICTS)


def test_long_range_is_a_data_source() -> None:
    config = load_config(
        None,
        ["data.source=long-range", "data.validation_split=validation", "data.test_split=test",
         "data.long_range.train_size=20", "data.long_range.validation_size=10",
         "data.long_range.test_size=10"],
    )  # fmt: skip
    splits = load_splits(config.data, seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test or [])) == (20, 10, 10)
    assert splits.label_names == ["negative", "positive"]
    assert sum(splits.train.labels) == 10


def test_the_preset_never_truncates_a_review() -> None:
    """A review cut at tokenizer.max_length would lose its last filler tokens, so its distance."""
    config = load_config(PRESET)
    splits = ("train", "validation", "test")
    reviews = [r for split in splits for r in generate(config.data.long_range, split)]
    longest = max(count_tokens(r.text) for r in reviews)
    assert longest >= max(config.data.long_range.distances)
    assert config.tokenizer.max_length is not None and longest <= config.tokenizer.max_length


def test_the_preset_tests_every_label_and_distance_alike() -> None:
    config = load_config(PRESET)
    cells = Counter((r.label, r.distance) for r in generate(config.data.long_range, "test"))
    assert len(cells) == 2 * len(config.data.long_range.distances)
    assert set(cells.values()) == {100}  # 200 reviews per distance, half of each label
