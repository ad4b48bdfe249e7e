"""Loading a model and scoring texts: order, windows, precision, which model is picked."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, describe_model_dir, resolve_model_dir
from rnn_sentiment.inference.predictor import Predictor
from tests.helpers import invoke

REVIEWS = [
    "The acting was not good.",
    "The story was absolutely brilliant.",
    "A joy from start to end.",
    "The plot was a total mess and the ending was awful.",
    "I loved it",
]


def test_results_come_back_in_input_order(predictor: Predictor) -> None:
    one_by_one = np.concatenate([predictor.predict_proba([t]) for t in REVIEWS])
    together = predictor.predict_proba(REVIEWS)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    reversed_ = predictor.predict_proba(REVIEWS[::-1])
    np.testing.assert_allclose(reversed_[::-1], together, atol=1e-5)
    assert np.allclose(together.sum(axis=1), 1.0)


def test_predictions_name_the_label_and_its_probability(predictor: Predictor) -> None:
    predictions = predictor.predict(REVIEWS)
    probs = predictor.predict_proba(REVIEWS)
    for prediction, row in zip(predictions, probs, strict=True):
        best = int(row.argmax())
        assert prediction.label == predictor.label_names[best]
        assert prediction.score == pytest.approx(float(row[best]))
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_nothing_to_score(predictor: Predictor) -> None:
    assert predictor.predict_proba([]).shape == (0, 2)
    assert predictor.predict([]) == []
    assert list(predictor.iter_predict(iter([]))) == []


def test_iter_predict_streams_in_chunks(predictor: Predictor) -> None:
    def texts():  # type: ignore[no-untyped-def]
        yield from REVIEWS * 3

    streamed = [p.score for p in predictor.iter_predict(texts(), chunk_size=2)]
    assert streamed == pytest.approx([p.score for p in predictor.predict(REVIEWS * 3)], abs=1e-5)


def test_long_reviews_in_windows_read_the_whole_review(predictor: Predictor) -> None:
    short = REVIEWS[:2]
    assert np.abs(predictor.score(short, "window") - predictor.score(short)).max() < 1e-6
    # the first 400 tokens are praise, the rest damning: truncation sees only the praise
    long = "The story was absolutely brilliant. " * 100 + "The acting was awful. " * 300
    truncated = predictor.score([long])[0, 1]
    windowed = predictor.score([long], "window")[0, 1]
    assert truncated > 0.5 > windowed


@pytest.mark.parametrize("exported", [False, True])
def test_a_window_stride_longer_than_a_window_is_refused_on_every_path(
    tmp_path: Path, exported: bool
) -> None:
    # Found by a red-team pass: --window-stride 100000 read only the first and last windows of
    # a long review, silently, though the windows are said to cover all of it.
    from rnn_sentiment.errors import DataError
    from rnn_sentiment.inference.models import load_predictor

    model = load_predictor(BUNDLED_MODEL_DIR, quantize=None if exported else "int8")
    size = 400  # the bundled model's trained length
    long = "The story was absolutely brilliant. " * 100 + "The acting was awful. " * 300
    for texts in ([long], []):  # refused before any review is read, even with none
        with pytest.raises(DataError, match="--window-stride 401 is longer than a window \\(400"):
            model.score(texts, "window", size + 1)
    assert model.score([long], "window", size).shape == (1, 2)
    for stride in (0, -5):
        with pytest.raises(DataError, match=f"--window-stride must be 1 or more, not {stride}"):
            model.score([long], "window", stride)
    # A stride of 1 would score the review 400 times over: at most 64 windows read each token.
    with pytest.raises(DataError, match="--window-stride 6 would read .* give at least 7"):
        model.score([long], "window", 6)
    assert model.score([long], "window", 7).shape == (1, 2)
    # A stride without windows would be ignored: refused (found by a red-team pass).
    with pytest.raises(DataError, match="--window-stride goes with --long-reviews window"):
        model.score([long], "truncate", 200)
    source = tmp_path / "in.txt"
    source.write_text("good\n" + long + "\n")
    code, _, err = invoke("predict", "--input", str(source), "-o", str(tmp_path / "out.csv"),
                          "--long-reviews", "window", "--window-stride", "401")  # fmt: skip
    assert code == 2 and "give at most 400" in err
    code, _, err = invoke("predict", "-q", "--window-stride", "200", "a fine film")
    assert code == 2 and "goes with --long-reviews window" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no partial output left


@pytest.mark.parametrize(("quantize", "dtype"), [("int8", "fp32"), (None, "bf16")])
def test_int8_and_bf16_stay_close_to_fp32(
    builtin_run: Path, predictor: Predictor, quantize: Any, dtype: Any
) -> None:
    fast = Predictor.from_dir(builtin_run, quantize=quantize, dtype=dtype)
    texts = REVIEWS * 2
    assert np.abs(fast.score(texts) - predictor.score(texts)).max() < 0.05
    assert (fast.score(texts).argmax(1) == predictor.score(texts).argmax(1)).all()


def test_an_unfinished_run_is_not_picked_as_the_latest(tmp_path: Path, builtin_run: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(builtin_run, runs / "done")
    shutil.copytree(builtin_run, runs / "still-training")
    (runs / "still-training" / "metrics.json").write_text('{"status": "training"}')
    assert resolve_model_dir("latest", runs) == runs / "done"
    assert resolve_model_dir("given", runs) == Path("given")


def test_training_never_changes_the_default_model(
    tmp_path: Path, builtin_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RNN_SENTIMENT_MODEL", raising=False)
    runs = tmp_path / "runs"
    shutil.copytree(builtin_run, runs / "demo")
    assert resolve_model_dir(None, runs) == BUNDLED_MODEL_DIR
    note = describe_model_dir(BUNDLED_MODEL_DIR)
    assert note is not None and "the bundled model" in note and "--model" in note
    monkeypatch.setenv("RNN_SENTIMENT_MODEL", str(runs / "demo"))
    assert resolve_model_dir(None, runs) == runs / "demo"
    assert describe_model_dir(runs / "demo") == f"model: {runs / 'demo'} (from RNN_SENTIMENT_MODEL)"
    assert describe_model_dir(runs / "demo", runs / "demo") is None  # named by the user


def test_latest_without_a_finished_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="newest finished run under .*there is none"):
        resolve_model_dir("latest", tmp_path / "no-runs")


def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a complete run directory"):
        Predictor.from_dir(tmp_path)


def test_a_planted_metrics_file_cannot_hang_picking_the_default(
    tmp_path: Path, builtin_run: Path
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(builtin_run, runs / "good")
    shutil.copytree(builtin_run, runs / "planted")
    (runs / "planted" / "metrics.json").unlink()
    (runs / "planted" / "metrics.json").symlink_to("/dev/zero")
    assert resolve_model_dir("latest", runs) == runs / "good"


@pytest.mark.parametrize("exported", [True, False], ids=["exported", "pytorch"])
def test_library_callers_get_a_package_error_that_says_what_to_pass(
    exported: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a red-team pass: predict("good movie") scored ten characters; None, a numpy array
    # or a generator failed deep inside; chunk_size=0 dropped every review; "" loaded the
    # current folder; long_reviews="x" was read as truncate.
    import rnn_sentiment
    from rnn_sentiment.errors import DataError
    from rnn_sentiment.inference.models import load_predictor

    model = load_predictor(BUNDLED_MODEL_DIR, quantize=None if exported else "int8")
    for method in (model.predict, model.predict_proba, model.score):
        with pytest.raises(DataError, match="texts is one str, not a list of reviews: pass"):
            method("good movie")
        with pytest.raises(DataError, match="texts must be a list of reviews, got NoneType"):
            method(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="reviews must be strings, got int"):  # and DataError
            method(["good", 5])  # type: ignore[list-item]
    with pytest.raises(DataError, match="texts is one str"):
        model.predict_proba(np.array("good movie"))  # a 0-d array: one str too
    expected = model.predict_proba(REVIEWS[:2])
    assert np.array_equal(model.predict_proba(np.array(REVIEWS[:2])), expected)
    assert [p.label for p in model.predict(t for t in REVIEWS[:2])] == [
        p.label for p in model.predict(REVIEWS[:2])
    ]
    with pytest.raises(DataError, match="long_reviews must be 'truncate' or 'window', not 'x'"):
        model.predict(REVIEWS, long_reviews="x")  # type: ignore[arg-type]
    for size in (0, -1, 1.5):
        with pytest.raises(DataError, match="chunk_size must be a whole number of 1 or more"):
            list(model.iter_predict(REVIEWS, chunk_size=size))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="texts is one str"):
        list(model.iter_predict("good movie"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="an empty model path"):
        rnn_sentiment.load_model("")
    with pytest.raises(DataError, match="an empty model path"):
        rnn_sentiment.classify(["good"], model="")
    with pytest.raises(DataError, match="not int"):
        rnn_sentiment.load_model(123)  # type: ignore[arg-type]

    class Where:  # any os.PathLike, as pytest's tmpdir is
        def __fspath__(self) -> str:
            return str(BUNDLED_MODEL_DIR)

    assert rnn_sentiment.load_model(Where()).label_names == model.label_names  # type: ignore[arg-type]
    with pytest.raises(DataError, match="an empty model path"):
        rnn_sentiment.calibrate("")
    with pytest.raises(DataError, match="not NoneType"):
        rnn_sentiment.evaluate(None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="source must be a non-empty str"):
        rnn_sentiment.evaluate(model, "")
    with pytest.raises(DataError, match="is not a split name"):
        rnn_sentiment.evaluate(model, "builtin", 5)  # type: ignore[arg-type]
    suite = rnn_sentiment.load_suite()
    with pytest.raises(DataError, match="suite is a path; load it first"):
        rnn_sentiment.run_suite(model, "my.yaml")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="the model must come from load_model"):
        rnn_sentiment.run_suite(None, suite)  # type: ignore[arg-type]
    for examples in (-1, "3"):
        with pytest.raises(DataError, match="examples must be a whole number of 0 or more"):
            rnn_sentiment.run_suite(model, suite, examples)  # type: ignore[arg-type]
