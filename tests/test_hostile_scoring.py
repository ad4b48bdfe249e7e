"""Batch scoring against hostile files (issue 18): the edges of output and resume.

Uses the bundled model (it loads in a tenth of a second); the closed-pipe check runs the real CLI
in a subprocess.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rnn_sentiment.data.files import detect_format, open_reader
from rnn_sentiment.errors import DataError, OutputClosed
from rnn_sentiment.inference import scoring
from rnn_sentiment.inference.predictor import BUNDLED_MODEL_DIR, Predictor
from rnn_sentiment.inference.scoring import (
    ScoringCallback,
    ScoringInterrupted,
    ScoringOptions,
    partial_path,
    score_file,
)
from rnn_sentiment.text import fix_text
from tests.helpers import invoke

OUTPUTS = ["out.jsonl", "out.csv", "out.tsv", "out.parquet"]
BUNDLED = str(BUNDLED_MODEL_DIR)


@pytest.fixture(scope="module")
def model() -> Iterator[Predictor]:
    """The bundled model on one thread: these tests score a few rows at a time, where a second
    thread only waits (measured: 25 ms a tiny file on one thread, 90-290 ms on two while other
    tests run on the machine's two cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Predictor.from_dir(BUNDLED_MODEL_DIR)
    torch.set_num_threads(threads)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an output file, read back by the package's own reader for its format."""
    reader = open_reader(str(path), detect_format(str(path), None))
    try:
        rows: list[dict[str, Any]] = []
        for chunk in reader.chunks(1000):
            assert chunk.problems == [""] * chunk.rows, chunk.problems  # valid output
            names = list(chunk.columns)
            rows.extend(dict(zip(names, values, strict=True)) for values in
                        zip(*chunk.columns.values(), strict=True))  # fmt: skip
        return rows
    finally:
        reader.close()


def strict_json_lines(path: Path) -> list[dict[str, Any]]:
    """JSON Lines parsed as strictly as other tools do: NaN or Infinity is an error."""

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    text = path.read_bytes().decode("utf-8")  # strict: no invalid UTF-8 either
    return [json.loads(line, parse_constant=refuse) for line in text.split("\n") if line]


# ----------------------------------------------------------------------------------------------
# 4. and 5. The output: a directory, a closed pipe


def test_output_naming_a_directory_fails_before_reading(model: Predictor, tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", "csv", ["A joy"] * 3)
    (tmp_path / "out").mkdir()

    class Watch(ScoringCallback):
        started = False

        def on_start(self, total_rows: int | None) -> None:
            self.started = True

    watch = Watch()
    with pytest.raises(DataError, match="is a directory; name a file"):
        score_file(model, tmp_path / "in.csv", tmp_path / "out", callback=watch)
    assert not watch.started and list((tmp_path / "out").iterdir()) == []
    code, _, err = invoke("predict", "-m", BUNDLED, "-i", str(tmp_path / "in.csv"),
                          "-o", str(tmp_path / "out"), "--output-format", "csv")  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_a_closed_stdout_ends_scoring_with_output_closed(model: Predictor, tmp_path: Path) -> None:
    class ClosedPipe(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    write_input(tmp_path / "in.txt", "txt", ["A joy"] * 5)
    options = ScoringOptions(chunk_size=2)
    with pytest.raises(OutputClosed, match="stdout was closed after 0 rows") as info:
        score_file(model, tmp_path / "in.txt", "-", options, stdout=ClosedPipe())
    assert info.value.exit_code == 141


def test_predict_piped_into_head_ends_quietly_with_141(tmp_path: Path) -> None:
    # 500 rows of JSON are 80 KB, more than a pipe holds: the second write meets the closed end.
    write_input(tmp_path / "big.txt", "txt", ["The acting was not good."] * 5000)
    command = [sys.executable, "-m", "rnn_sentiment", "predict", "-m", BUNDLED, "-q", "--threads",
               "1", "--input", str(tmp_path / "big.txt"), "--chunk-size", "500"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # what `head -1` reads, then it goes away
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, err
    assert json.loads(first)["label"] == "negative"
    assert err == ""  # quietly, like other Unix tools: no message, no traceback


# ----------------------------------------------------------------------------------------------
# 7. Resume edge cases


class StopAfterFirstChunk(ScoringCallback):
    def on_chunk(self, rows_done: int, fraction: float | None) -> None:
        raise KeyboardInterrupt


def test_resume_with_another_chunk_size_is_refused(model: Predictor, tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", "csv", [f"review {i} was good" for i in range(9)])
    out = tmp_path / "out.csv"
    with pytest.raises(ScoringInterrupted):
        score_file(model, tmp_path / "in.csv", out, ScoringOptions(chunk_size=2),
                   StopAfterFirstChunk())  # fmt: skip
    other = ScoringOptions(chunk_size=3, resume=True)
    with pytest.raises(DataError, match=r"the settings \(chunk_size\) changed"):
        score_file(model, tmp_path / "in.csv", out, other)
    same = ScoringOptions(chunk_size=2, resume=True)
    assert score_file(model, tmp_path / "in.csv", out, same).rows_resumed == 2
    whole = tmp_path / "whole.csv"
    score_file(model, tmp_path / "in.csv", whole, ScoringOptions(chunk_size=2))
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("name", ["out.csv.gz", "out.parquet"])
def test_resume_after_a_kill_between_publish_and_cleanup_says_complete(
    model: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    write_input(tmp_path / "in.csv", "csv", [f"review {i} was good" for i in range(5)])
    out = tmp_path / name
    with monkeypatch.context() as patch:  # the kill: the progress file outlives the rename
        patch.setattr(scoring.Progress, "remove", lambda self: None)
        score_file(model, tmp_path / "in.csv", out, ScoringOptions(chunk_size=2))
    progress = out.with_name(out.name + ".progress.json")
    assert progress.exists() and not partial_path(out).exists()
    published, state = out.read_bytes(), json.loads(progress.read_text())

    messages: list[str] = []

    class Listen(ScoringCallback):
        def on_message(self, text: str) -> None:
            messages.append(text)

    resume = ScoringOptions(chunk_size=2, resume=True)
    summary = score_file(model, tmp_path / "in.csv", out, resume, Listen())
    assert messages == [f"{out} is already complete (5 rows); nothing left to resume"]
    assert summary.rows_read == summary.rows_resumed == 5
    assert out.read_bytes() == published and not progress.exists()
    # A progress file that does not match the output (another run wrote it) is a clear error.
    state["offset"], state["rows"] = 1, 4
    progress.write_text(json.dumps(state))
    with pytest.raises(DataError, match=r"the unfinished output .* is gone; run without --resume"):
        score_file(model, tmp_path / "in.csv", out, resume)


def test_resume_whose_partial_output_is_gone_says_so(model: Predictor, tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv", "csv", [f"review {i} was good" for i in range(5)])
    out = tmp_path / "out.jsonl"
    with pytest.raises(ScoringInterrupted):
        score_file(model, tmp_path / "in.csv", out, ScoringOptions(chunk_size=2),
                   StopAfterFirstChunk())  # fmt: skip
    partial_path(out).unlink()
    with pytest.raises(DataError, match=r"the unfinished output .*out.jsonl.partial is gone"):
        score_file(model, tmp_path / "in.csv", out, ScoringOptions(chunk_size=2, resume=True))


# ----------------------------------------------------------------------------------------------
# Inputs


def write_input(path: Path, kind: str, texts: list[str], extra: list[Any] | None = None) -> None:
    """``texts`` (with ids, and ``extra`` values) as input format ``kind`` (.gz when named so).

    A lone surrogate is written as the bytes that are not UTF-8 it stands for (JSON escapes it).
    """
    kind = kind.removesuffix(".gz")
    extra = extra if extra is not None else [None] * len(texts)
    ids = [f"r{i}" for i in range(len(texts))]
    if kind == "folder":
        path.mkdir()
        for i, text in enumerate(texts):
            (path / f"{i:04d}.txt").write_bytes(text.encode("utf-8", "surrogatepass"))
        return
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        repaired = [fix_text(t)[0] for t in texts]
        pq.write_table(pa.table({"id": ids, "text": repaired, "extra": extra}), path,
                       row_group_size=3)  # fmt: skip
        return
    if kind == "jsonl":
        data = "".join(line + "\n" for line in json_lines(texts, extra))
    elif kind == "txt":
        data = "".join(t + "\n" for t in texts)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if kind == "tsv" else ",")
        writer.writerow(["id", "text", "extra"])
        writer.writerows(zip(ids, texts, [json.dumps(e, default=str) for e in extra], strict=True))
        data = buffer.getvalue()
    raw = data.encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def json_lines(texts: list[str], extra: list[Any]) -> list[str]:
    ids = [f"r{i}" for i in range(len(texts))]
    rows = [{"id": i, "text": t, "extra": e} for i, t, e in zip(ids, texts, extra, strict=False)]
    return [json.dumps(row, default=str) for row in rows]
