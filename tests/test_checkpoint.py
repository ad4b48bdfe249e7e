from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from rnn_sentiment.checkpoint import load_run, verify_run
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.runfiles import MANIFEST_FILE, WEIGHTS_FILE
from rnn_sentiment.training.loop import train
from tests.helpers import tiny_config


@pytest.fixture
def tiny_run(tmp_path: Path, jsonl_reviews: Path) -> Path:
    return train(tiny_config(tmp_path, **{"data.source": str(jsonl_reviews)})).run_dir


def test_run_directory_is_self_contained_and_pickle_free(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert names == {
        "config.yaml", "tokenizer.json", "model.safetensors", "labels.json",
        "metrics.json", "manifest.json", "state.safetensors", "calibration.json",
    }  # fmt: skip
    for path in tiny_run.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"


def test_loaded_run_predicts_like_the_trained_model(tiny_run: Path) -> None:
    first = Predictor.from_dir(tiny_run).predict_proba(["a wonderful film", "i hated it"])
    second = Predictor.from_dir(tiny_run).predict_proba(["a wonderful film", "i hated it"])
    assert first.shape == (2, 2)
    assert (first == second).all()


def test_corrupted_weights_are_detected(tiny_run: Path) -> None:
    weights = tiny_run / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_run(tiny_run)


def test_truncated_weights_are_detected(tiny_run: Path) -> None:
    weights = tiny_run / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted"):
        verify_run(tiny_run)


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path("/tmp/rnn-sentiment-pwned").write_text, ("owned",))  # type: ignore[return-value]


def test_a_pickle_planted_as_weights_is_refused_without_running(tiny_run: Path) -> None:
    marker = Path("/tmp/rnn-sentiment-pwned")
    marker.unlink(missing_ok=True)
    (tiny_run / WEIGHTS_FILE).write_bytes(pickle.dumps(_Exploit()))
    (tiny_run / MANIFEST_FILE).unlink()  # even with the manifest gone and rebuilt...
    from rnn_sentiment.checkpoint import write_manifest

    write_manifest(tiny_run)  # ...as an attacker would, the pickle is never unpickled
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_run(tiny_run)
    assert not marker.exists()


def test_missing_manifest_means_an_incomplete_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="not a complete run directory"):
        load_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="not found"):
        load_run(tmp_path / "nowhere")


def test_weights_do_not_fit_another_config(tiny_run: Path) -> None:
    config = tiny_run / "config.yaml"
    config.write_text(config.read_text().replace("hidden_size: 16", "hidden_size: 17"))
    from rnn_sentiment.checkpoint import write_manifest

    write_manifest(tiny_run)
    with pytest.raises(CheckpointError, match="does not fit its config"):
        load_run(tiny_run)
    assert torch.get_num_threads() >= 1


def test_unwritable_output_fails_before_any_work(tmp_path: Path, jsonl_reviews: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tiny_config(tmp_path, **{"data.source": "./does-not-exist.csv", "output.dir": blocker})
    # the output problem is reported, not the (later) data problem: nothing was attempted
    with pytest.raises(CheckpointError, match="cannot write to .*a-file"):
        train(config)


def test_a_full_disk_keeps_the_previous_checkpoint(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from rnn_sentiment.checkpoint import save_weights

    before = (tiny_run / WEIGHTS_FILE).read_bytes()
    real_fdopen = os.fdopen

    def full_disk(fd: int, *args: object, **kwargs: object) -> object:
        handle = real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

        def write(data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = write
        return handle

    monkeypatch.setattr("rnn_sentiment.atomic.os.fdopen", full_disk)
    model = load_run(tiny_run).model
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_weights(tiny_run, model)
    monkeypatch.undo()
    assert (tiny_run / WEIGHTS_FILE).read_bytes() == before
    verify_run(tiny_run)  # still complete and intact
    assert not [p for p in tiny_run.iterdir() if p.name.endswith(".tmp")]
