"""Interrupted training resumes to exactly the result of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnn_sentiment.errors import ConfigError
from rnn_sentiment.training.loop import train
from tests.helpers import tiny_config, tiny_overrides

KILL_SCRIPT = """
import os, signal, sys
from rnn_sentiment.config import load_config
from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.training.loop import train

class KillAt(TrainCallback):
    def __init__(self, at):
        self.at, self.seen = at, 0
    def on_step(self, step, loss, accuracy, grad_norm):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config(None, sys.argv[2:]), KillAt(int(sys.argv[1])))
"""


def settings(jsonl_reviews: Path, name: str) -> dict[str, object]:
    return {
        "data.source": str(jsonl_reviews),
        "data.test_split": "test",
        "model.dropout": 0.5,  # dropout draws from the RNG, which must be restored too
        "training.epochs": 3,
        "training.patience": 5,
        "training.checkpoint_every": 2,
        "output.name": name,
    }


def comparable(history: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    reference = train(tiny_config(tmp_path, **settings(jsonl_reviews, "reference")))

    overrides = tiny_overrides(tmp_path, **settings(jsonl_reviews, "killed"))
    # 5 steps per epoch: step 8 is epoch 2, step 3, one step after the last checkpoint.
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, "8", *overrides], capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "runs" / "killed"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "training"

    resumed = train(None, resume=run_dir)
    assert comparable(resumed.history) == comparable(reference.history)
    for split in ("validation", "test"):
        assert resumed.metrics[split] == reference.metrics[split]


def test_resume_refuses_a_changed_config_unless_forced(tmp_path: Path, jsonl_reviews: Path) -> None:
    first = train(tiny_config(tmp_path, **settings(jsonl_reviews, "run")))
    changed = tiny_config(tmp_path, **{**settings(jsonl_reviews, "run"), "training.lr": 0.5})
    with pytest.raises(ConfigError, match=r"training.lr: 0.003 -> 0.5.*--force"):
        train(changed, resume=first.run_dir)
    assert train(changed, resume=first.run_dir, force=True).run_dir == first.run_dir


def test_resume_accepts_settings_that_never_change_results(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    first = train(tiny_config(tmp_path, **settings(jsonl_reviews, "run")))
    machine = {"training.keep_freed_memory": False, "training.log_every": 7}
    changed = tiny_config(tmp_path, **{**settings(jsonl_reviews, "run"), **machine})
    assert train(changed, resume=first.run_dir).run_dir == first.run_dir  # no --force needed
    saved = (first.run_dir / "config.yaml").read_text()
    assert "keep_freed_memory: false" in saved and "log_every: 7" in saved


def test_sigterm_saves_state_and_exits_130(tmp_path: Path) -> None:
    overrides = tiny_overrides(
        tmp_path, **{"training.epochs": 200, "training.patience": 200, "model.hidden_size": 32}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "rnn_sentiment", "train", *overrides],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 60
    while not (run_dir / "state.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "stopped by SIGTERM" in err and f"--resume {run_dir}" in err
    assert "Traceback" not in err


def test_cli_resume_overrides_apply_to_the_runs_own_config(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    from typer.testing import CliRunner

    from rnn_sentiment.cli import app

    run_dir = train(tiny_config(tmp_path, **settings(jsonl_reviews, "run"))).run_dir
    runner = CliRunner()
    refused = runner.invoke(app, ["train", "--resume", str(run_dir), "training.epochs=4"])
    assert refused.exit_code == 2
    assert "(training.epochs: 3 -> 4)" in refused.stderr  # only the override, nothing else
    model_change = ["train", "--resume", str(run_dir), "model.hidden_size=32", "--force"]
    refused = runner.invoke(app, model_change)
    assert refused.exit_code == 2 and "start a new run" in refused.stderr
    forced = runner.invoke(
        app, ["train", "--resume", str(run_dir), "training.epochs=4", "--force", "-q"]
    )
    assert forced.exit_code == 0, forced.stderr
    assert "epochs: 4" in (run_dir / "config.yaml").read_text()
    from rnn_sentiment.checkpoint import verify_run

    verify_run(run_dir)
