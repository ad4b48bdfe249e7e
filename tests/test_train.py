from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.errors import CheckpointError, DataError, TrainingError
from rnn_sentiment.hardware import bf16_refused
from rnn_sentiment.training.loop import train
from tests.helpers import tiny_config


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
    if bf16_refused(cell, "cpu"):  # refused there: tests/test_precision.py
        pytest.skip("oneDNN has no LSTM in emulated bf16 (this CPU has no bfloat16 instructions)")
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


def test_the_time_budget_ends_training_after_the_epoch_that_spends_it(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    class Messages(TrainCallback):
        def __init__(self) -> None:
            self.messages: list[str] = []

        def on_message(self, text: str) -> None:
            self.messages.append(text)

    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "training.epochs": 5,
                     "training.max_minutes": 1e-9},
    )  # fmt: skip
    messages = Messages()
    result = train(config, messages)
    assert [r["epoch"] for r in result.history] == [1]
    assert "stopping: the 1e-09-minute budget is spent" in messages.messages
    assert result.metrics["status"] == "complete" and result.metrics["best_epoch"] == 1
    assert train(None, resume=result.run_dir).history == result.history  # nothing left to do


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
    assert not Path(config.output.dir).exists()  # made for the run: removed with it


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError, "SIGTERM"])
def test_a_stop_while_the_run_is_set_up_leaves_nothing_behind(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch, stop: Any
) -> None:
    # Found by a red-team pass: Ctrl-C while the vocabulary was learned, or an error after it
    # was saved, left a run directory without state that --resume refused and that held its name.
    from rnn_sentiment.errors import TrainingInterrupted
    from rnn_sentiment.training import loop

    def stopped(*args: object, **kwargs: object) -> None:
        if stop == "SIGTERM":  # it killed the process with no message, the directory left
            import signal
            import time

            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        raise stop()

    monkeypatch.setattr(loop, "_assemble", stopped)  # after the run files are written
    config = tiny_config(tmp_path, **{"data.source": str(jsonl_reviews), "output.name": "x"})
    expected = RuntimeError if stop is RuntimeError else TrainingInterrupted
    with pytest.raises(expected) as caught:
        train(config)
    assert not (Path(config.output.dir) / "x").exists()
    if stop is not RuntimeError:
        how = "stopped by SIGTERM" if stop == "SIGTERM" else "interrupted"
        assert f"{how} while the run was set up" in str(caught.value)
        assert "nothing to resume (the run directory" in str(caught.value)
        assert caught.value.exit_code == 130
    monkeypatch.undo()
    assert train(config).run_dir.name == "x"  # the name is free again


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

_ALLOCATION_PROBE = """
import ctypes, resource, sys, torch
from rnn_sentiment.training.allocator import keep_freed_memory
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KiB pages, not huge ones
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def step():
    x = torch.empty(8 * 2**20)  # 32 MiB: as large as glibc ever serves from the heap by default
    x.fill_(1.0)
    del x
for _ in range(10):  # the heap settles over the first steps (it grew for 6 in one layout)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# Blocks of several MiB (a 64 x 120 x 256 LSTM), so the setting changes where they come from; the
# C library fills every freed block with junk (MALLOC_PERTURB_), so a kernel that read memory it
# had not written would give other numbers when blocks are reused.
_TRAINING_PROBE = """
import sys, torch
from rnn_sentiment.config import ModelConfig, TrainingConfig
from rnn_sentiment.model import build_model
from rnn_sentiment.training.allocator import keep_freed_memory
from rnn_sentiment.training.loop import build_optimizer, train_step
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    assert keep_freed_memory()
torch.manual_seed(0)
model = build_model(ModelConfig(cell="lstm", embedding_dim=64, hidden_size=256), 500, 2).train()
tcfg = TrainingConfig(batch_size=64, precision="auto")  # bf16 where native, as the presets
optimizer = build_optimizer(model, tcfg)
for width in (120, 80, 120, 100):
    tokens = torch.randint(1, 500, (64, width))
    train_step(model, optimizer, tokens, torch.full((64,), width), torch.randint(0, 2, (64,)), tcfg)
print(repr([p.double().sum().item() for p in model.parameters()]))
"""


def _probe(code: str, mode: str, **env: str) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "THP_MEM_ALLOC"))
    }
    done = subprocess.run(
        [sys.executable, "-c", code, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    return done.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="the allocator setting exists for glibc only")
def test_kept_freed_memory_is_reused_without_page_faults() -> None:
    default = int(_probe(_ALLOCATION_PROBE, "default"))
    assert default > 5 * 8192 * 0.9  # each 32 MiB block is faulted in again: 8,192 pages
    # At most one block faulted in again in five steps; usually none. The best of two processes:
    # right after another job frees gigabytes, the kernel has faulted a second block in once
    # (16,384), which the setting does not decide.
    kept = min(int(_probe(_ALLOCATION_PROBE, "kept")) for _ in range(2))
    assert kept <= 8192


@pytest.mark.skipif(not GLIBC, reason="the allocator setting exists for glibc only")
def test_kept_freed_memory_trains_bit_for_bit_the_same() -> None:
    default = _probe(_TRAINING_PROBE, "default", MALLOC_PERTURB_="165")
    assert default == _probe(_TRAINING_PROBE, "kept", MALLOC_PERTURB_="165")


def test_kept_memory_setting_follows_the_config_cell_and_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rnn_sentiment.training import allocator

    assert allocator.wants_kept_memory(True, "gru")
    assert not allocator.wants_kept_memory(False, "lstm")
    limit = {"bytes": 8 * 2**30}
    monkeypatch.setattr(allocator, "_memory_limit", lambda: limit["bytes"])
    assert not allocator.wants_kept_memory(None, "lstm")  # 8 GiB: memory is worth more
    limit["bytes"] = 32 * 2**30
    assert allocator.wants_kept_memory(None, "lstm")
    assert not allocator.wants_kept_memory(None, "gru")  # no faster: not worth the memory


@pytest.mark.skipif(not GLIBC, reason="the allocator setting exists for glibc only")
def test_training_keeps_freed_memory_only_while_it_runs(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnn_sentiment.training import allocator

    calls: list[str] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(allocator, "release_freed_memory", lambda: calls.append("release"))
    messages: list[str] = []

    class Recorder(TrainCallback):
        def on_message(self, message: str) -> None:
            messages.append(message)

    config = tiny_config(
        tmp_path,
        **{"data.source": str(jsonl_reviews), "training.keep_freed_memory": True},
    )
    train(config, callback=Recorder())
    assert calls == ["keep", "release"]
    assert any("freed memory is kept" in m for m in messages)


def test_a_model_too_big_to_load_is_refused_before_any_work(tmp_path: Path) -> None:
    from rnn_sentiment.errors import ConfigError

    config = tiny_config(tmp_path, **{"model.hidden_size": 8000, "model.num_layers": 2})
    with pytest.raises(ConfigError, match="parameters, over the"):
        train(config)
    assert not (tmp_path / "runs").exists()  # no run directory was made
