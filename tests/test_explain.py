"""predict --explain: running sentiment and occlusion attribution, word by word."""

from __future__ import annotations

import pytest

from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.explain import METHOD
from rnn_sentiment.inference.predictor import Predictor


def test_one_score_per_word(predictor: Predictor) -> None:
    explained = predictor.explain("This movie is not good")
    assert explained.words == ["This", "movie", "is", "not", "good"]
    assert len(explained.attributions) == len(explained.running) == 5
    assert explained.method == METHOD and "occlusion" in explained.method
    # The last running prediction is the prediction of the whole review.
    last, full = explained.running[-1], explained.probabilities
    assert last["positive"] == pytest.approx(full["positive"], abs=1e-5)


def test_negation_turns_the_running_sentiment(predictor: Predictor) -> None:
    good = predictor.explain("This movie is good")
    not_good = predictor.explain("This movie is not good")
    assert good.running_labels[-1] == "positive" and good.label == "positive"
    assert not_good.running_labels[-1] == "negative" and not_good.label == "negative"

    # Same prefix, same running sentiment; the two part ways at "not" or "good".
    def p_positive(steps: list[dict[str, float]]) -> list[float]:
        return [step["positive"] for step in steps]

    assert p_positive(not_good.running[:3]) == pytest.approx(p_positive(good.running[:3]))
    assert not_good.running[4]["positive"] < 0.5 < good.running[3]["positive"]
    # Removing "not" makes the review positive: "not" is what makes it negative.
    assert not_good.attributions[3] > 0.5


def test_punctuation_and_unknown_words_are_words(predictor: Predictor) -> None:
    explained = predictor.explain("Zyzzyva was not good.")
    assert explained.words == ["Zyzzyva", "was", "not", "good", "."]


@pytest.mark.parametrize("text", ["   ", "<br /><br />", "\ufeff"])
def test_a_review_with_no_words_is_scored_as_predict_scores_it(
    predictor: Predictor, text: str
) -> None:
    explained = predictor.explain(text)
    (predicted,) = predictor.predict([text])
    assert explained.words == [] and explained.attributions == [] and explained.running == []
    assert explained.label == predicted.label
    assert explained.probabilities == pytest.approx(predicted.probabilities, abs=1e-6)


def test_a_review_over_max_words_is_refused_before_it_is_scored(predictor: Predictor) -> None:
    from rnn_sentiment.inference.results import TooLongToExplain, explain_with

    calls: list[int] = []

    def never(ids: object) -> None:
        calls.append(1)
        raise AssertionError("scored a review over the limit")

    with pytest.raises(TooLongToExplain, match="has 5 words as the model reads it"):
        explain_with(predictor.run.pipeline, ["negative", "positive"], never, "a b c d e", 4)
    assert not calls
    assert predictor.explain("This movie is not good", max_words=5).words[-1] == "good"
    with pytest.raises(DataError, match="at most 4 words"):  # a DataError: exit code 2
        predictor.explain("This movie is not good", max_words=4)


def test_words_past_max_length_are_counted_as_cut() -> None:
    # Found by a red-team pass: the JSON had the whole text but only the words read, unsaid.
    import json

    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
    from tests.helpers import invoke

    bundled = Predictor.from_dir(BUNDLED_MODEL_DIR)  # reads the last 400 tokens
    review = "awful " * 20 + "movie " * 400
    explained = bundled.explain(review)
    assert explained.words_cut == 20 and set(explained.words) == {"movie"}
    assert bundled.explain("This movie is not good").words_cut == 0
    code, out, err = invoke("predict", "-q", "--explain", "--format", "json", review)
    assert code == 0 and json.loads(out)[0]["words_cut"] == 20, err
    code, out, _ = invoke("predict", "-q", "--explain", review)
    assert "20 more words were not read" in out
