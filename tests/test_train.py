from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rnn_sentiment.errors import CheckpointError, DataError, TrainingError
from rnn_sentiment.train import TrainCallback, train
from tests.conftest import tiny_config


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_a_separable_task(tmp_path: Path, jsonl_reviews: Path, cell: str) -> None:
    config = tiny_config(
        tmp_path,
        **{"data.source": str(jsonl_reviews), "data.test_split": "test",
           "model.cell": cell, "training.epochs": 6, "training.lr": 0.01},
    )  # fmt: skip
    result = train(config)
    assert result.metrics["test"]["accuracy"] == 1.0
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_in_bfloat16(tmp_path: Path, jsonl_reviews: Path, cell: str) -> None:
    config = tiny_config(
        tmp_path,
        **{"data.source": str(jsonl_reviews), "data.test_split": "test", "model.cell": cell,
           "model.bidirectional": True, "training.precision": "bf16", "training.epochs": 6,
           "training.lr": 0.01},
    )  # fmt: skip
    result = train(config)
    assert result.metrics["test"]["accuracy"] == 1.0
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


def test_same_seed_gives_the_same_run(tmp_path: Path, jsonl_reviews: Path) -> None:
    def run(name: str, seed: int) -> list[dict[str, object]]:
        config = tiny_config(
            tmp_path, **{"data.source": str(jsonl_reviews), "output.name": name,
                         "training.seed": seed, "model.dropout": 0.5},
        )  # fmt: skip
        return [{k: v for k, v in r.items() if k != "seconds"} for r in train(config).history]

    first = run("a", 1)
    assert run("b", 1) == first
    assert run("c", 2) != first


def test_run_directory_records_per_epoch_metrics(tmp_path: Path, jsonl_reviews: Path) -> None:
    result = train(tiny_config(tmp_path, **{"data.source": str(jsonl_reviews)}))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    for key in ("grad_norm_mean", "grad_norm_max", "clipped_fraction", "val_accuracy"):
        assert key in metrics["history"][0]


def test_early_stopping_respects_patience(tmp_path: Path, jsonl_reviews: Path) -> None:
    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "training.epochs": 30,
                     "training.patience": 1, "training.metric": "accuracy", "training.lr": 0.05},
    )  # fmt: skip
    history = train(config).history
    assert len(history) < 30
    assert history[-1]["best"] is False


def test_exploding_loss_stops_with_advice(tmp_path: Path, jsonl_reviews: Path) -> None:
    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "training.optimizer": "sgd",
                     "training.lr": 1e30, "training.grad_clip": "null", "training.epochs": 3,
                     "model.cell": "rnn", "model.nonlinearity": "relu"},
    )  # fmt: skip
    with pytest.raises(TrainingError, match="exploding gradients.*grad_clip"):
        train(config)


def test_callback_sees_every_step(tmp_path: Path, jsonl_reviews: Path) -> None:
    class Recorder(TrainCallback):
        def __init__(self) -> None:
            self.steps: list[int] = []
            self.norms: list[float] = []

        def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
            self.steps.append(step)
            self.norms.append(grad_norm)

    recorder = Recorder()
    train(tiny_config(tmp_path, **{"data.source": str(jsonl_reviews)}), recorder)
    assert recorder.steps == [1, 2, 3, 4, 5] * 2  # 72 train reviews / batch 16, two epochs
    assert all(n > 0 for n in recorder.norms)


def test_existing_run_directory_is_not_overwritten(tmp_path: Path, jsonl_reviews: Path) -> None:
    config = tiny_config(tmp_path, **{"data.source": str(jsonl_reviews)})
    train(config)
    with pytest.raises(CheckpointError, match="already exists"):
        train(config)


def test_gradient_flow_diagnostics_are_recorded_and_change_nothing(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    def run(name: str, on: bool) -> dict[str, Any]:
        config = tiny_config(
            tmp_path, **{"data.source": str(jsonl_reviews), "output.name": name,
                         "diagnostics.gradient_flow": on, "model.cell": "rnn"},
        )  # fmt: skip
        return train(config).metrics

    with_flow, without = run("flow-on", True), run("flow-off", False)
    assert "gradient_flow" not in without
    flow = with_flow["gradient_flow"]
    assert len(flow["init"]) == len(flow["trained"]) > 1
    assert all(value > 0 for value in flow["init"])
    strip = ("seconds", "lr")
    same = [{k: v for k, v in r.items() if k not in strip} for r in with_flow["history"]]
    assert same == [{k: v for k, v in r.items() if k not in strip} for r in without["history"]]


def test_bad_data_leaves_no_empty_run_directory(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, **{"data.source": str(tmp_path / "missing.csv")})
    with pytest.raises(DataError, match="not found"):
        train(config)
    runs = Path(config.output.dir)
    assert not runs.exists() or not any(runs.iterdir())
