"""Helpers shared by the tests (fixtures are in conftest.py): tiny configs, models and the CLI.

Test modules import shared helpers from here, never from one another.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from typer.testing import CliRunner

from rnn_sentiment.cli import app
from rnn_sentiment.config import Config, ModelConfig, load_config
from rnn_sentiment.data.batching import collate
from rnn_sentiment.model import SentimentRNN, build_model

SHARED_DATA = Path(
    os.environ.get(
        "RNN_SENTIMENT_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data"
    )
)
CONFIGS = Path(__file__).parents[1] / "configs"

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


_runner = CliRunner()


def invoke(*args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    result = _runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


# A batch of right-padded token ids of these lengths, for the model-level tests.
LENGTHS = [5, 1, 9, 3, 9, 7, 2]


def tiny_model(cell: str, **extra: object) -> SentimentRNN:
    """A 3-class model with large recurrent weights, so every gate matters."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=12, hidden_size=10, **extra)  # type: ignore[arg-type]
    model = build_model(cfg, vocab_size=60, num_labels=3).eval()
    with torch.no_grad():
        for layer in model.layers:
            for name, param in layer.named_parameters():
                if "weight_hh" in name:
                    param.mul_(3)
    return model


def token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids of :data:`LENGTHS`: (tokens [batch, time], lengths)."""
    generator = torch.Generator().manual_seed(1)
    return collate([torch.randint(2, 60, (n,), generator=generator).tolist() for n in LENGTHS])


def untrained_run(root: Path, **extra: object) -> Path:
    """A valid run directory of :func:`tiny_config` (with ``extra`` overrides) under ``root``,
    its weights random, written without training (milliseconds, not seconds)."""
    from rnn_sentiment.checkpoint import save_metrics, save_run_files, save_weights
    from rnn_sentiment.tokenizer import train_tokenizer

    config = tiny_config(root, **extra)
    tokenizer = train_tokenizer(POSITIVE + NEGATIVE, config.tokenizer)
    run_dir = root / "run"
    save_run_files(run_dir, config, tokenizer, ["negative", "positive"])
    torch.manual_seed(0)
    save_weights(run_dir, build_model(config.model, tokenizer.get_vocab_size(), 2))
    save_metrics(run_dir, {"status": "complete", "history": []})
    return run_dir
