from __future__ import annotations

from pathlib import Path

import pytest

from rnn_sentiment.config import TokenizerConfig
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.tokenizer import (
    PAD_ID,
    UNK_ID,
    encode,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TEXTS = ["This movie is not good.", "This movie is not bad!", "Great acting, great plot."] * 3


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_round_trip_gives_identical_ids(tmp_path: Path, kind: str) -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(kind=kind, vocab_size=60, min_frequency=1))
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    sample = ["this MOVIE is not good", "an unseen word: zebra", ""]
    assert encode(loaded, sample) == encode(tokenizer, sample)


def test_word_level_lowercases_splits_punctuation_and_maps_unknowns() -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1))
    [ids] = encode(tokenizer, ["THIS movie, zebra!"])
    tokens = [tokenizer.id_to_token(i) for i in ids]
    assert tokens == ["this", "movie", ",", "[UNK]", "!"]
    assert tokenizer.token_to_id("[PAD]") == PAD_ID


def test_min_frequency_and_case_are_respected() -> None:
    tokenizer = train_tokenizer(
        ["Good good GOOD rare"], TokenizerConfig(min_frequency=2, lowercase=False)
    )
    vocab = tokenizer.get_vocab()
    assert "Good" not in vocab and "rare" not in vocab


@pytest.mark.parametrize(("side", "kept"), [("right", ["a", "b"]), ("left", ["d", "e"])])
def test_truncation_keeps_the_configured_side(side: str, kept: list[str]) -> None:
    cfg = TokenizerConfig(min_frequency=1, max_length=2, truncation_side=side)  # type: ignore[arg-type]
    tokenizer = train_tokenizer(["a b c d e"], cfg)
    [ids] = encode(tokenizer, ["a b c d e"])
    assert [tokenizer.id_to_token(i) for i in ids] == kept


def test_empty_text_encodes_to_one_unknown_token() -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1))
    assert encode(tokenizer, ["", "   "]) == [[UNK_ID], [UNK_ID]]


def test_foreign_tokenizer_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "tokenizer.json")
