"""The engine-neutral BatchScorer: the rows ``predict --input`` writes, for in-memory batches."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnn_sentiment.errors import DataError
from rnn_sentiment.inference import batch
from rnn_sentiment.inference.batch import BatchScorer
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
from rnn_sentiment.training.loop import train
from tests.helpers import NEGATIVE, POSITIVE, invoke, tiny_config

# Bad rows among good ones: missing, empty and blank text, one over the review cap, HTML breaks,
# emoji, a byte-order mark, a number for a text.
MIXED = [
    "A dull, slow start.<br /><br />Still, the ending was great and I loved it.",
    None,
    "",
    "   \t ",
    "x" * 300,
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    "\ufeffa terrible film",
    "not bad at all",
]
CAP = 200  # max_review_chars: MIXED[4] is over it


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tiny")
    data = tmp / "data"
    data.mkdir()
    for split, repeat in (("train", 10), ("test", 2)):
        rows = [{"text": t, "label": "positive"} for t in POSITIVE * repeat]
        rows += [{"text": t, "label": "negative"} for t in NEGATIVE * repeat]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train(tiny_config(tmp, **{"data.source": str(data)})).run_dir


@pytest.fixture(params=["bundled-onnx", "run"])
def model(request: pytest.FixtureRequest) -> Path:
    """The bundled model (onnxruntime) and a tiny run directory (PyTorch)."""
    if request.param == "run":
        return request.getfixturevalue("tiny_run")
    return BUNDLED_MODEL_DIR


def mixed_table() -> pa.Table:
    ids = pa.array(range(len(MIXED)), pa.int64())
    stars = pa.array([4.5, None, 1.0, float("nan"), 3.0, 2.0, 1.5, 4.0])
    return pa.table({"id": ids, "text": MIXED, "stars": stars, "label": ["x"] * len(MIXED)})


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal types and values, NaN equal to NaN (and not to null)."""
    return a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist())


def test_a_batch_is_scored_as_predict_input_scores_the_file(model: Path, tmp_path: Path) -> None:
    # The CLI in this process on the same rows as a Parquet file, read as one chunk.
    table = mixed_table()
    pq.write_table(table, tmp_path / "mixed.parquet")
    code, _, err = invoke("predict", "-m", str(model), "--input", str(tmp_path / "mixed.parquet"),
                          "--output", str(tmp_path / "out.parquet"), "--max-review-chars",
                          str(CAP), "-q")  # fmt: skip
    assert code == 0, err
    from_cli = pq.read_table(tmp_path / "out.parquet")
    scored = BatchScorer(model, max_review_chars=CAP)(table)
    assert same(scored, from_cli)  # every value, the rounding and the types included
    errors = scored.column("error").to_pylist()
    assert errors[1:5] == ["missing text", "empty text", "empty text",
                           f"field 'text' longer than {CAP:,} characters"]  # fmt: skip
    assert scored.column("input_label").to_pylist() == ["x"] * len(MIXED)  # "label" is added
    assert scored.column("label").null_count == 4


def test_a_dataframe_comes_back_as_a_dataframe_with_the_same_scores(model: Path) -> None:
    scorer = BatchScorer(model, max_review_chars=CAP)
    frame = mixed_table().to_pandas()
    frame.index = range(100, 100 + len(frame))  # an index is not a column: left out
    scored = scorer(frame)
    assert isinstance(scored, pd.DataFrame)
    expected = scorer(mixed_table()).to_pandas()
    pd.testing.assert_frame_equal(scored, expected)
    with_nan = pd.DataFrame({"review": ["a wonderful film", np.nan, None]})
    assert list(scorer(with_nan)["error"].fillna("")) == ["", "missing text", "missing text"]


def test_columns_kept_chosen_and_named(model: Path) -> None:
    table = mixed_table().rename_columns(["id", "comment", "stars", "label"])
    scored = BatchScorer(model, text_column="comment", keep_columns="id")(table)
    names = BatchScorer(model).label_names
    assert scored.column_names == ["id", "label", "score", *(f"p_{n}" for n in names), "error"]
    assert scored.column("id").to_pylist() == list(range(len(MIXED)))
    with pytest.raises(DataError, match="no column 'coment'.*did you mean --text-column comment"):
        BatchScorer(model, text_column="coment")(table)
    with pytest.raises(DataError, match="no text column"):
        BatchScorer(model)(table)


def test_an_empty_batch_has_the_scored_schema(model: Path) -> None:
    scorer = BatchScorer(model)
    empty = mixed_table().slice(0, 0)
    scored = scorer(empty)
    assert scored.num_rows == 0 and scored.schema == scorer.output_schema(empty.schema)


def test_the_scorer_ships_without_its_model_and_loads_it_once_per_process(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "_LOADED", {})
    scorer = BatchScorer(model, threads=1)
    shipped = pickle.dumps(scorer)
    assert len(shipped) < 2_000 and not batch._LOADED  # settings only: nothing loaded yet
    first, second = pickle.loads(shipped), pickle.loads(shipped)
    first(mixed_table())
    assert len(pickle.dumps(first)) == len(shipped)  # the loaded model never travels
    assert second.predictor is first.predictor and len(batch._LOADED) == 1


def test_what_is_not_a_batch_is_one_data_error() -> None:
    with pytest.raises(DataError, match="pyarrow Table or RecordBatch or a pandas DataFrame"):
        BatchScorer()([{"text": "a list of dicts"}])
    mixed = pd.DataFrame({"text": ["fine", 3, ["a", "list"]]})
    with pytest.raises(DataError, match="cannot convert the DataFrame to Arrow"):
        BatchScorer()(mixed)
