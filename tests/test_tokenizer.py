from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, pre_tokenizers

from rnn_sentiment.config import TokenizerConfig
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.tokenizer import (
    PAD_ID,
    UNK_ID,
    AsciiWordLevel,
    configure_truncation,
    encode,
    encode_cached,
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


def test_a_second_encoding_of_the_same_texts_comes_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1))
    first = encode_cached(tokenizer, TEXTS, tmp_path)
    assert first == encode(tokenizer, TEXTS)
    assert len(list(tmp_path.glob("tokens-*.npy"))) == 1

    def no_tokenizing(*args: object) -> None:
        raise AssertionError("tokenized again")

    monkeypatch.setattr("rnn_sentiment.tokenizer.encode", no_tokenizing)
    assert encode_cached(tokenizer, TEXTS, tmp_path) == first


def test_changed_texts_or_tokenizer_miss_the_cache(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1))
    encode_cached(tokenizer, TEXTS, tmp_path)
    encode_cached(tokenizer, [*TEXTS[:-1], "Another review."], tmp_path)
    shorter = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1, max_length=2))
    assert all(len(ids) <= 2 for ids in encode_cached(shorter, TEXTS, tmp_path))
    assert len(list(tmp_path.glob("tokens-*.npy"))) == 3


def test_a_damaged_or_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(min_frequency=1))
    expected = encode(tokenizer, TEXTS)
    encode_cached(tokenizer, TEXTS, tmp_path)
    (cached,) = tmp_path.glob("tokens-*.npy")
    cached.write_bytes(cached.read_bytes()[:-7])
    assert encode_cached(tokenizer, TEXTS, tmp_path) == expected
    import numpy as np

    flat = np.load(cached)  # its own ids again, written by encode_cached just now
    for bad in (10**6, -3):  # an id past the vocabulary failed in the embedding (IndexError)
        changed = flat.copy()
        changed[-1] = bad
        np.save(cached, changed)
        assert encode_cached(tokenizer, TEXTS, tmp_path) == expected
    lengths = flat.copy()
    lengths[0], lengths[1] = lengths[0] + lengths[1] + 1, -1  # the same sum, one negative
    np.save(cached, lengths)
    assert encode_cached(tokenizer, TEXTS, tmp_path) == expected
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert encode_cached(tokenizer, TEXTS, blocker / "cache") == expected
    assert encode_cached(tokenizer, TEXTS, None) == expected


# The ASCII fast path must give exactly the Rust tokenizer's ids; anything it cannot vouch for
# (non-ASCII text, added tokens like "[UNK]" in the text, other pipelines) goes to Rust.
ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=80)
FAST_CORPUS = TEXTS + ["The plot: a mess (really)... 10/10?!", "It's 'fine' -- I guess; $5 & #1"]


def rust_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [enc.ids or [UNK_ID] for enc in encodings]


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("side", ["left", "right", None])
@settings(max_examples=60, deadline=None)
@given(texts=st.lists(ASCII, min_size=1, max_size=8))
def test_ascii_fast_path_gives_the_rust_ids(
    lowercase: bool, side: str | None, texts: list[str]
) -> None:
    cfg = TokenizerConfig(
        lowercase=lowercase, vocab_size=60, min_frequency=1, max_length=6,
        truncation_side=side or "left",
    )  # fmt: skip
    tokenizer = train_tokenizer(FAST_CORPUS, cfg)
    if side is None:
        configure_truncation(tokenizer, None, "left")
    assert AsciiWordLevel.of(tokenizer) is not None
    assert encode(tokenizer, texts) == rust_ids(tokenizer, texts)


def test_texts_the_fast_path_cannot_vouch_for_go_to_rust() -> None:
    tokenizer = train_tokenizer(FAST_CORPUS, TokenizerConfig(vocab_size=60, min_frequency=1))
    fast = AsciiWordLevel.of(tokenizer)
    assert fast is not None
    unusual = ["Café ﬁne", "a [UNK] b", "[PAD]", "x [unk]", "plain words"]
    assert [fast.accepts(t) for t in unusual] == [False, False, False, True, True]
    assert encode(tokenizer, unusual) == rust_ids(tokenizer, unusual)


def test_other_pipelines_have_no_fast_path() -> None:
    bpe = train_tokenizer(FAST_CORPUS, TokenizerConfig(kind="bpe", vocab_size=60, min_frequency=1))
    assert AsciiWordLevel.of(bpe) is None
    word = train_tokenizer(FAST_CORPUS, TokenizerConfig(vocab_size=60, min_frequency=1))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    assert AsciiWordLevel.of(word) is None
    sample = ["it's a mess...", "fine"]
    assert encode(word, sample) == rust_ids(word, sample)


def test_a_tokenizer_changed_after_use_is_encoded_as_it_is_now() -> None:
    tokenizer = train_tokenizer(FAST_CORPUS, TokenizerConfig(vocab_size=60, max_length=3))
    text = ["this movie is not good at all"]
    assert len(encode(tokenizer, text)[0]) == 3
    configure_truncation(tokenizer, None, "right")
    assert encode(tokenizer, text) == rust_ids(tokenizer, text)
    assert len(encode(tokenizer, text)[0]) == 7


def test_normalized_added_tokens_and_odd_inputs_are_left_to_rust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tokenizers import AddedToken

    from rnn_sentiment import tokenizer as module

    tokenizer = train_tokenizer(FAST_CORPUS, TokenizerConfig(vocab_size=60, min_frequency=1))
    tokenizer.add_tokens([AddedToken("Hello", normalized=True)])
    assert AsciiWordLevel.of(tokenizer) is None
    sample = ["hello world", "xhellox"]
    assert encode(tokenizer, sample) == rust_ids(tokenizer, sample)

    plain = train_tokenizer(FAST_CORPUS, TokenizerConfig(vocab_size=60, min_frequency=1))
    with pytest.raises(TypeError, match="strings"):
        encode(plain, ["fine", None])  # type: ignore[list-item]

    def broken(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
        raise ValueError("the Rust side failed")

    monkeypatch.setattr(module, "_rust_ids", broken)
    with pytest.raises(ValueError, match="Rust side"):
        encode(plain, ["plain", "café"])  # the non-ASCII text goes to the (broken) Rust thread


@pytest.mark.parametrize("kind", ["word", "bpe"])
@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_loaded_tokenizer_holds_exactly_the_file_its_fast_path_was_built_from(
    tmp_path: Path, kind: str, lowercase: bool, side: str
) -> None:
    # load_tokenizer builds the fast path from the file's JSON instead of to_str(): the two must
    # be the same for every tokenizer rnn-sentiment writes.
    cfg = TokenizerConfig(
        kind=kind, lowercase=lowercase, vocab_size=60, min_frequency=1, max_length=5,
        truncation_side=side,
    )  # fmt: skip
    save_tokenizer(train_tokenizer(FAST_CORPUS, cfg), tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    written = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert json.loads(loaded.to_str()) == written
    sample = ["this MOVIE is not good at all, really", "zebra"]
    assert encode(loaded, sample) == rust_ids(loaded, sample)
