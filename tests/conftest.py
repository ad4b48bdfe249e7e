"""Shared fixtures: tiny data written to temporary folders, a model trained once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnn_sentiment.config import load_config
from rnn_sentiment.inference.predictor import Predictor
from tests.helpers import NEGATIVE, POSITIVE


@pytest.fixture
def jsonl_reviews(tmp_path: Path) -> Path:
    """A tiny labelled JSONL file with string labels (train and test)."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    for split, repeat in (("train", 10), ("test", 2)):
        rows = [{"text": t, "label": "positive"} for t in POSITIVE * repeat]
        rows += [{"text": t, "label": "negative"} for t in NEGATIVE * repeat]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="session")
def builtin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LSTM trained once on the built-in corpus, shared by the tests that need a model."""
    from rnn_sentiment.training.loop import train

    tmp_path = tmp_path_factory.mktemp("builtin")
    config = load_config(
        Path(__file__).parents[1] / "configs" / "default.yaml",
        [f"output.dir={tmp_path}", "output.name=builtin", f"data.cache_dir={tmp_path / 'cache'}"],
    )
    return train(config).run_dir


@pytest.fixture(scope="session")
def predictor(builtin_run: Path) -> Predictor:
    """The :func:`builtin_run` model, loaded once, as the tests that score texts use it."""
    return Predictor.from_dir(builtin_run)
