"""Multi-process training (torchrun, DistributedDataParallel on gloo): two ranks take the steps one
process takes with the same global batch, and a stopped two-rank run resumes to the same end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from rnn_sentiment.training.distributed import Ranks
from rnn_sentiment.training.loop import train
from tests.helpers import tiny_config, tiny_overrides

# No dropout: its masks are drawn per rank, so only dropout-free runs can equal one process.
SETTINGS = {"model.dropout": 0.0, "model.embedding_dropout": 0.0, "training.epochs": 2,
            "training.checkpoint_every": 10, "training.num_threads": 1,
            "data.max_train_samples": 480}  # fmt: skip


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "rnn_sentiment", "train"]  # fmt: skip


def torchrun(tmp_path: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    overrides = tiny_overrides(tmp_path, **SETTINGS, **{"output.name": name})
    command = [*TORCHRUN, *overrides, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "model.safetensors"))


def test_a_rank_takes_its_contiguous_share_of_each_batch() -> None:
    batch = list(range(10, 17))
    shares = [Ranks(rank, 3).share(batch) for rank in range(3)]
    assert sum(shares, []) == batch and [len(s) for s in shares] == [2, 3, 2]
    # A one-review batch: one rank has it, the other joins the step with no weight.
    assert sorted([Ranks(0, 2).share([5]), Ranks(1, 2).share([5])]) == [[], [5]]


def test_two_ranks_reach_the_weights_of_one_process(tmp_path: Path) -> None:
    single = train(tiny_config(tmp_path, **SETTINGS, **{"output.name": "single"}))
    done = torchrun(tmp_path, "ddp")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    assert out.count("trained") == 1  # rank 0 alone reports
    assert "2 processes (DistributedDataParallel)" in err
    ddp = tmp_path / "runs" / "ddp"
    expected, got = weights(single.run_dir), weights(ddp)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=2e-4, err_msg=name)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp", "single"]


def test_a_stopped_two_rank_run_resumes_to_the_same_end(tmp_path: Path) -> None:
    whole = torchrun(tmp_path, "whole")
    assert whole.wait(timeout=300) == 0
    stopped = torchrun(tmp_path, "stopped")
    state = tmp_path / "runs" / "stopped" / "state.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode != 0 and "continue with: rnn-sentiment train --resume" in err
    overrides = ["--resume", str(tmp_path / "runs" / "stopped")]
    command = [*TORCHRUN, *overrides]
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = weights(tmp_path / "runs" / "whole"), weights(tmp_path / "runs" / "stopped")
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-6, err_msg=name)
