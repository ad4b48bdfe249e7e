"""Atomic writes: a reader sees the old file or the whole new one, and no temporary file stays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_sentiment.atomic import atomic_open, write_bytes, write_json, write_text
from rnn_sentiment.data.corpus import write_jsonl_atomic

WRITE_FOREVER = """
import sys, time
from pathlib import Path
from rnn_sentiment.atomic import atomic_open
from rnn_sentiment.signals import StopSignals

with StopSignals(raise_at_once=True), atomic_open(Path(sys.argv[1])) as handle:
    handle.write(b"half of the new content")
    handle.flush()
    print("writing", flush=True)
    while True:
        handle.write(b"x" * 1024)
        time.sleep(0.001)
"""


def test_sigterm_in_the_middle_of_a_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    process = subprocess.Popen(
        [sys.executable, "-c", WRITE_FOREVER, str(target)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == "writing\n"
    assert len(list(tmp_path.iterdir())) == 2  # the target and the growing temporary file
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "StopRequested: SIGTERM" in err
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_an_interrupted_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("rnn_sentiment.atomic.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "cache.npy"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="half way"), atomic_open(target) as handle:
        handle.write(b"new")
        raise ValueError("half way")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_a_missing_folder_is_created_and_the_content_is_exact(tmp_path: Path) -> None:
    write_text(tmp_path / "a" / "b" / "note.txt", "één\r\ntwo\n")
    assert (tmp_path / "a" / "b" / "note.txt").read_bytes() == "één\r\ntwo\n".encode()
    write_json(tmp_path / "value.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "value.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "value.json").read_text().endswith("}\n")


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    # In a fresh process: the umask is read once, when the module is imported.
    script = (
        f"import os, sys; os.umask({umask}); from pathlib import Path; "
        "from rnn_sentiment.atomic import write_bytes; write_bytes(Path(sys.argv[1]), b'x')"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "shared.bin")], check=True)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == expected


def test_the_shipped_corpus_is_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_jsonl_atomic(tmp_path / "train.jsonl", [("a fine film", 1), ("dull", 0)])
    finally:
        os.umask(previous)
    path = tmp_path / "train.jsonl"
    assert path.stat().st_mode & 0o777 == 0o644
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"text": "a fine film", "label": "positive"},
        {"text": "dull", "label": "negative"},
    ]
