"""The text pipeline: the one place a raw review becomes token ids."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_sentiment.config import TokenizerConfig
from rnn_sentiment.text import TextPipeline, clean_html, fix_text, prepare_text, window_starts
from rnn_sentiment.tokenizer import UNK_ID, encode

TEXTS = [
    "A great film, truly great.",
    "A dull film.<br /><br />Not great at all.",
    "Great acting but a dull, dull plot",
]


@pytest.fixture(scope="module")
def pipeline() -> TextPipeline:
    cfg = TokenizerConfig(vocab_size=100, min_frequency=1, max_length=6)
    return TextPipeline.learn(TEXTS * 3, cfg, html=True)


def test_html_line_breaks_are_cleaned() -> None:
    assert clean_html("Great.<br /><br />Loved it<BR>") == "Great.  Loved it "
    assert prepare_text("a<br/>b", html=False) == "a<br/>b"
    assert prepare_text("a<br/>b", html=True) == "a b"


def test_undecodable_bytes_become_replacement_characters() -> None:
    broken = b"caf\xe9 good".decode("utf-8", "surrogateescape")
    assert fix_text(broken) == ("caf\ufffd good", True)
    assert fix_text("caf\u00e9") == ("caf\u00e9", False)
    assert prepare_text(broken, html=True) == "caf\ufffd good"


def test_lone_surrogates_and_byte_order_marks() -> None:
    # "\ud83d": half an emoji from a JSON escape; not a byte the reader escaped, still no text.
    assert fix_text("cut \ud83d emoji") == ("cut \ufffd emoji", True)
    assert fix_text("\udce9\ud800") == ("\ufffd\ufffd", True)
    assert prepare_text("\ufeffgreat", html=True) == "great"


def test_reviews_must_be_strings() -> None:
    with pytest.raises(TypeError, match="strings"):
        prepare_text(3, html=True)  # type: ignore[arg-type]


def test_the_tokenizer_never_sees_html_breaks(pipeline: TextPipeline) -> None:
    assert "<" not in pipeline.tokenizer.get_vocab()
    raw = pipeline.encode(["not great<br /><br />dull"])[0].tolist()
    assert raw == pipeline.encode(["not great  dull"])[0].tolist()
    assert raw == pipeline.encode_lists(["not great  dull"])[0]


def test_truncation_and_empty_reviews(pipeline: TextPipeline) -> None:
    long = " ".join(["great"] * 50)
    assert len(pipeline.encode([long])[0]) == 6
    assert pipeline.encode([""])[0].tolist() == [UNK_ID]
    assert pipeline.lengths([long]) == [50]
    assert len(pipeline.encode([long])[0]) == 6  # lengths() did not change the pipeline


def test_windows_cover_the_whole_review(pipeline: TextPipeline) -> None:
    windows = pipeline.encode_windows(["great " * 10, "dull"], size=6, stride=3)
    assert windows.count == 2
    assert windows.owner.tolist() == [0, 0, 0, 1]
    assert [len(w) for w in windows.ids] == [6, 6, 6, 1]
    assert window_starts(10, 400, 200) == [0]
    assert window_starts(1000, 400, 200) == [0, 200, 400, 600]


def test_words_are_the_prepared_reviews_pretokens(pipeline: TextPipeline) -> None:
    ids, words, spans = pipeline.words("Not great.<br />Dull")
    assert words == ["not", "great", ".", "dull"] or words == ["Not", "great", ".", "Dull"]
    assert len(spans) == 4 and spans[-1][1] == len(ids)
    assert ids == pipeline.encode(["Not great.<br />Dull"])[0].tolist()


def test_encode_equals_the_tokenizer_on_prepared_texts(pipeline: TextPipeline) -> None:
    prepared = pipeline.prepare(TEXTS)
    expected = encode(pipeline.tokenizer, prepared)
    got = [ids.tolist() for ids in pipeline.encode(TEXTS)]
    assert got == expected
    assert all(
        isinstance(ids, np.ndarray) and ids.dtype == np.int32 for ids in pipeline.encode(TEXTS)
    )
