"""Shared fixtures: tiny configs and tiny data written to temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rnn_sentiment.config import Config, load_config

SHARED_DATA = Path(
    os.environ.get(
        "RNN_SENTIMENT_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data"
    )
)

POSITIVE = ["a wonderful film", "great acting and a great plot", "i loved it", "truly moving"]
NEGATIVE = ["a terrible film", "awful acting and a dull plot", "i hated it", "boring and long"]


def tiny_overrides(tmp_path: Path, **extra: object) -> list[str]:
    """Overrides that make a model train in about a second."""
    values: dict[str, object] = {
        "model.embedding_dim": 16,
        "model.hidden_size": 16,
        "tokenizer.min_frequency": 1,
        "training.epochs": 2,
        "training.batch_size": 16,
        "training.num_threads": 1,
        "output.dir": str(tmp_path / "runs"),
        "output.name": "tiny",
        "data.cache_dir": str(tmp_path / "token-cache"),
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def tiny_config(tmp_path: Path, **extra: object) -> Config:
    return load_config(None, tiny_overrides(tmp_path, **extra))


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
