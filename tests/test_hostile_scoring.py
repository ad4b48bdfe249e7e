"""Batch scoring against hostile files (issue 18): every value reaches every output format, one
bad value flags its row (never the run), memory stays flat for any input, and the edges of
output and resume.

Uses the bundled model (it loads in a tenth of a second); the memory and closed-pipe checks run
the real CLI in a subprocess.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import gzip
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnn_sentiment.data import readers
from rnn_sentiment.data.files import detect_format, open_reader
from rnn_sentiment.errors import DataError, OutputClosed
from rnn_sentiment.inference import sinks
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.inference.scoring import (
    ScoringCallback,
    ScoringInterrupted,
    ScoringOptions,
    score_file,
)
from rnn_sentiment.inference.sinks import partial_path
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


def read_rows(path: Path, max_chars: int = readers.MAX_FIELD_CHARS) -> list[dict[str, Any]]:
    """Every row of an output file, read back by the package's own reader for its format."""
    reader = open_reader(str(path), detect_format(str(path), None), max_chars)
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
# 1. Every value of every input type reaches every output format


def typed_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    utc = datetime.timezone.utc
    table = pa.table({
        "id": pa.array([7, 8], pa.int64()),
        "text": ["The story was absolutely brilliant.", "The acting was not good."],
        "day": pa.array([datetime.date(2020, 1, 2), None]),
        "at": pa.array([datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=utc), None],
                       pa.timestamp("us", tz="UTC")),
        "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
        "blob": pa.array([b"\x00\xff", None]),
        "tags": pa.array([["a", "b"], None]),
        "meta": pa.array([{"stars": 5, "by": "x"}, None]),
        "ratio": pa.array([float("nan"), float("inf")]),
        "took": pa.array([datetime.timedelta(seconds=5), None]),
        "nothing": pa.nulls(2),
    })  # fmt: skip
    pq.write_table(table, path)


# What the first row's kept values become in JSON Lines (the module docstring's table).
JSON_FIRST_ROW = {
    "id": 7, "text": "The story was absolutely brilliant.", "day": "2020-01-02",
    "at": "2020-01-02T03:04:05+00:00", "price": "1.50", "blob": "AP8=", "tags": ["a", "b"],
    "meta": {"stars": 5, "by": "x"}, "ratio": None, "took": "P0DT0H0M5S", "nothing": None,
}  # fmt: skip


@pytest.mark.parametrize("name", [*OUTPUTS, "out.csv.gz"])
def test_every_parquet_type_reaches_every_output_format(
    model: Predictor, tmp_path: Path, name: str
) -> None:
    typed_parquet(tmp_path / "in.parquet")
    summary = score_file(model, tmp_path / "in.parquet", tmp_path / name)
    assert summary.rows_scored == 2 and summary.rows_flagged == 0
    rows = read_rows(tmp_path / name)
    assert [r["label"] for r in rows] == ["positive", "negative"]
    first, second = rows
    if name == "out.jsonl":
        assert {k: first[k] for k in JSON_FIRST_ROW} == JSON_FIRST_ROW
        assert second["ratio"] is None  # Infinity is no more JSON than NaN
        assert strict_json_lines(tmp_path / name)
    elif name == "out.parquet":  # types kept: the id stays an integer, NaN stays NaN
        assert first["id"] == 7 and first["price"] == decimal.Decimal("1.50")
        assert first["day"] == datetime.date(2020, 1, 2) and first["blob"] == b"\x00\xff"
        assert first["meta"] == {"stars": 5, "by": "x"} and first["ratio"] != first["ratio"]
        assert second["ratio"] == float("inf") and second["day"] is None
    else:  # a cell: the JSON Lines value, as JSON text unless it is a string; null is empty
        expected = {k: v if isinstance(v, str) else json.dumps(v) for k, v in
                    JSON_FIRST_ROW.items() if v is not None}  # fmt: skip
        assert {k: first[k] for k in expected} == expected
        assert first["ratio"] == first["nothing"] == second["day"] == ""


def test_jsonl_values_reach_csv_as_text_and_parquet_typed(model: Predictor, tmp_path: Path) -> None:
    rows = [{"id": 1, "text": "A joy", "ok": True, "n": 1.5, "deep": {"a": [1, None]}}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = {"out.csv": ("1", "true", "1.5"), "out.parquet": (1, True, 1.5)}
    for name, scalars in expected.items():
        score_file(model, tmp_path / "in.jsonl", tmp_path / name)
        [row] = read_rows(tmp_path / name)
        assert (row["id"], row["ok"], row["n"]) == scalars
        assert row["deep"] == '{"a": [1, null]}'  # JSON text in both


def test_a_value_that_cannot_be_kept_flags_its_row_not_the_run(
    model: Predictor, tmp_path: Path
) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A string column holding bytes that are not UTF-8, and a date past Python's year 9999.
    offsets = pa.py_buffer(np.array([0, 4, 8], dtype=np.int32).tobytes())
    bad_utf8 = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ok\xff!fine")])
    days = pa.array([3_000_000, 0], pa.int32()).cast(pa.date32())
    table = pa.table({"text": ["The acting was not good.", "A joy"], "note": bad_utf8, "day": days})
    pq.write_table(table, tmp_path / "in.parquet")
    deep: Any = "bottom"
    for _ in range(100):
        deep = [deep]
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "A joy", "deep": deep}) + "\n")
    for source, name in (("in.parquet", "out.jsonl"), ("in.parquet", "out.parquet"),
                         ("in.jsonl", "out.csv")):  # fmt: skip
        summary = score_file(model, tmp_path / source, tmp_path / name)
        assert summary.rows_scored == summary.rows_read  # flagged, still scored
        rows = read_rows(tmp_path / name)
        errors = [r["error"] for r in rows]
        if source == "in.jsonl":
            assert errors == ["nested more than 64 levels deep in column 'deep'"]
            assert rows[0]["deep"] in ("", None)
            continue
        assert errors[0].startswith("field 'day' cannot be read") and errors[1] in ("", None)
        assert rows[0]["note"] == "ok\ufffd!"  # replaced, kept: its row was already flagged
        assert rows[0]["day"] is None and str(rows[1]["day"]) == "1970-01-01"


# ----------------------------------------------------------------------------------------------
# 2. A lone surrogate never ends the run


@pytest.mark.parametrize("name", OUTPUTS)
def test_a_lone_surrogate_in_any_column_flags_its_row_in_every_format(
    model: Predictor, tmp_path: Path, name: str
) -> None:
    lines = [
        r'{"id": "a\ud83d", "text": "A joy", "meta": {"k\udc00": ["v\ud800"]}}',
        r'{"id": "b", "text": "The acting was not good \ud83d", "meta": null}',
        r'{"id": "c", "text": "The story was absolutely brilliant.", "meta": null}',
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    summary = score_file(model, tmp_path / "in.jsonl", tmp_path / name)
    assert summary.rows_read == summary.rows_scored == 3 and summary.rows_flagged == 2
    if not name.endswith(".parquet"):
        (tmp_path / name).read_bytes().decode("utf-8")  # strictly valid UTF-8
    rows = read_rows(tmp_path / name)
    assert [r["id"] for r in rows] == ["a\ufffd", "b", "c"]
    assert [r["error"] or None for r in rows] == [
        "invalid UTF-8 replaced in column 'id'", "invalid UTF-8 replaced", None
    ]  # fmt: skip
    assert rows[1]["text"] == "The acting was not good \ufffd"
    assert "k\ufffd" in str(rows[0]["meta"]) and "v\ufffd" in str(rows[0]["meta"])


def test_a_lone_surrogate_no_longer_blocks_the_cli_run(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "cut emoji \\ud83d"}\n{"text": "fine"}\n')
    out = tmp_path / "out.jsonl"
    code, _, err = invoke("predict", "-m", BUNDLED, "-q", "-i", str(tmp_path / "in.jsonl"),
                          "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert [r["label"] is not None for r in strict_json_lines(out)] == [True, True]


# ----------------------------------------------------------------------------------------------
# 3. Memory per row is bounded: a maximum review length, flagged rows, flat memory


CAP = 40
LONG = "The acting was not good, " * 4  # 100 characters: over CAP, under a CSV row's 8 x CAP


@pytest.mark.parametrize(
    ("name", "problem"),
    [("in.csv", "a field longer than 40 characters"), ("in.tsv.gz", "a field longer"),
     ("in.jsonl", "field 'text' longer than 40"), ("in.txt", "field 'text' longer than 40"),
     ("in.parquet", "field 'text' longer than 40"), ("folder", "field 'text' longer than 40")],
)  # fmt: skip
def test_a_review_longer_than_the_cap_is_flagged_not_scored(
    model: Predictor, tmp_path: Path, name: str, problem: str
) -> None:
    texts = ["A joy", LONG, "The acting was not good.", LONG + "\nwith a second line", "fine"]
    if name.startswith("in.txt"):
        texts[3] = LONG * 2
    write_input(tmp_path / name, name.removeprefix("in."), texts)
    out = tmp_path / "out.jsonl"
    options = ScoringOptions(max_review_chars=CAP, chunk_size=2)
    summary = score_file(model, tmp_path / name, out, options)
    rows = strict_json_lines(out)
    assert summary.rows_read == len(rows) == 5 and summary.rows_scored == 3
    assert [r["label"] is None for r in rows] == [False, True, False, True, False]
    for row in (rows[1], rows[3]):
        assert row["error"].startswith(problem) and row["text"] is None
    assert [r["text"] for r in rows[::2]] == ["A joy", "The acting was not good.", "fine"]


def test_csv_finds_the_next_row_after_an_overlong_quoted_field(
    model: Predictor, tmp_path: Path
) -> None:
    # Quotes, delimiters and line breaks inside the long field; a row longer than 8 x CAP too.
    long_field = '"' + 'a ""quoted"", field\nspanning, lines ' * 20 + '"'
    data = f'id,text\n1,A joy\n2,{long_field}\n3,fine\n4,"{"x" * 500}"\n5,"{"y" * 39}"\n'
    (tmp_path / "in.csv").write_text(data)
    out = tmp_path / "out.jsonl"
    score_file(model, tmp_path / "in.csv", out, ScoringOptions(max_review_chars=CAP))
    rows = strict_json_lines(out)
    assert [r["id"] for r in rows] == ["1", None, "3", None, "5"]
    assert [r["error"] for r in rows] == [
        None, "a field longer than 40 characters", None, "row longer than 320 characters", None
    ]  # fmt: skip


def test_a_huge_review_under_a_raised_cap_is_scored(model: Predictor, tmp_path: Path) -> None:
    huge = "The acting was not good. " * 200_000  # five megabytes in one cell
    (tmp_path / "in.csv").write_text(f'text\n"{huge}"\nThe story was absolutely brilliant.\n')
    options = ScoringOptions(keep_columns="none", max_review_chars=len(huge))
    score_file(model, tmp_path / "in.csv", tmp_path / "o.csv", options)
    assert [r["label"] for r in read_rows(tmp_path / "o.csv")] == ["negative", "positive"]
    score_file(model, tmp_path / "in.csv", tmp_path / "o.csv", ScoringOptions())  # default cap
    rows = read_rows(tmp_path / "o.csv")
    assert [r["error"] for r in rows] == ["a field longer than 1,000,000 characters", ""]


def test_a_chunk_of_long_rows_ends_before_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "CHUNK_CHARS", 250)
    texts = ["x" * 100] * 7
    for kind in ("csv", "jsonl", "txt", "folder"):
        write_input(tmp_path / f"in.{kind}", kind, texts)
        reader = open_reader(str(tmp_path / f"in.{kind}"), kind)
        sizes = [chunk.rows for chunk in reader.chunks(1000)]
        reader.close()
        assert sum(sizes) == 7 and max(sizes) <= 3, (kind, sizes)  # 250 characters: a chunk ends


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, zlib
    from pathlib import Path
    folder, size, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a regression ends in MemoryError

    def sparse(name, head, tail):  # `size` NUL bytes between head and tail, no disk used
        with open(folder / name, "wb") as handle:
            handle.write(head); handle.seek(len(head) + size); handle.write(tail)

    sparse("line.jsonl", b'{"id": 1, "text": "', b'"}\\n{"id": 2, "text": "fine"}\\n')
    sparse("line.txt", b"start ", b"\\nfine\\n")
    sparse("field.tsv", b"id\\ttext\\n1\\t", b"\\n2\\tfine\\n")
    (folder / "reviews").mkdir()
    sparse("reviews/a.txt", b"", b"end")
    (folder / "reviews" / "b.txt").write_text("fine")
    packer, zeros = zlib.compressobj(1, zlib.DEFLATED, 31), bytes(2**20)  # a small .csv.gz
    with open(folder / "nul.csv.gz", "wb") as handle:
        handle.write(packer.compress(b'id,text\\n1,"'))
        for _ in range(size >> 20):
            handle.write(packer.compress(zeros))
        handle.write(packer.compress(b'"\\n2,fine\\n') + packer.flush())

    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR

    from rnn_sentiment.inference.predictor import Predictor, set_threads
    from rnn_sentiment.inference.scoring import score_file
    set_threads(1)
    model = Predictor.from_dir(BUNDLED_MODEL_DIR)
    score_file(model, folder / "reviews" / "b.txt", folder / "warm.jsonl")  # warm up allocations
    report = {}
    for name in ("line.jsonl", "line.txt", "field.tsv", "reviews", "nul.csv.gz"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = folder / (name + ".out.jsonl")
        summary = score_file(model, folder / name, out)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        report[name] = [grown >> 10, out.stat().st_size, summary.rows_read, summary.rows_scored]
    print(json.dumps(report))
""")


def test_memory_stays_flat_on_huge_fields_lines_and_files(tmp_path: Path) -> None:
    # Measured: a normal run (torch, the model, a small file) needs 0.86 GB of address space and
    # grows by under 50 MB here; the unbounded readers took 9 GB for a 500 MB field.
    size, limit = 128 * 2**20, 2 * 2**30
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(size), str(limit)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for name, (grown_mb, output_bytes, rows, scored) in report.items():
        assert grown_mb < 100, (name, grown_mb)  # old readers: +282 to +1408 MB, or MemoryError
        assert output_bytes < 2000 and rows == 2 and scored == 1, (name, report[name])


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


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(
    "args",
    [["--format", "jsonl", "good"], ["good"], ["--input", "-"]],
    ids=["jsonl", "table", "input"],
)
def test_a_full_disk_under_stdout_is_one_line_and_exit_code_2(args: list[str]) -> None:
    command = [sys.executable, "-m", "rnn_sentiment", "predict", "-m", BUNDLED, "-q",
               "--threads", "1", *args]  # fmt: skip
    with open("/dev/full", "wb") as full:
        done = subprocess.run(command, input=b"good\n", stdout=full, capture_output=False,
                              stderr=subprocess.PIPE, timeout=60, check=False)  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err == "error: cannot write to stdout: No space left on device\n"


# ----------------------------------------------------------------------------------------------
# 6. Output other tools accept


def test_jsonl_output_never_holds_nan_or_infinity(
    model: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.jsonl").write_text(
        '{"text": "A joy", "x": NaN, "y": [Infinity, -Infinity, 1.5]}\n'
        '{"text": "The acting was not good.", "x": 1e400, "y": null}\n'
    )
    score_file(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    rows = strict_json_lines(tmp_path / "out.jsonl")
    assert [(r["x"], r["y"]) for r in rows] == [(None, [None, None, 1.5]), (None, None)]
    # A broken model's NaN is no probability: the row is flagged, the output still JSON.
    real = model.score

    def nan_first(texts: Any, *args: Any) -> Any:
        probs = real(texts, *args)
        probs[:1] = float("nan")  # none when score_file checks its options with no texts
        return probs

    monkeypatch.setattr(model, "score", nan_first)
    summary = score_file(model, tmp_path / "in.jsonl", tmp_path / "nan.jsonl")
    rows = strict_json_lines(tmp_path / "nan.jsonl")
    assert [r["label"] for r in rows] == [None, "negative"] and summary.rows_scored == 1
    assert rows[0]["error"] == "the model gave no probability (NaN)"


def test_later_jsonl_keys_the_first_object_lacks_are_flagged(
    model: Predictor, tmp_path: Path
) -> None:
    lines = ['{"id": 1, "text": "A joy"}', '{"id": 2, "text": "awful", "stars": 1, "by": "x"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    score_file(model, tmp_path / "in.jsonl", tmp_path / "all.csv")
    rows = read_rows(tmp_path / "all.csv")
    assert list(rows[0]) == ["id", "text", "label", "score", "p_negative", "p_positive", "error"]
    assert [r["error"] for r in rows] == ["", "keys not in the first object: stars, by"]
    assert all(r["label"] for r in rows)  # flagged, still scored
    score_file(model, tmp_path / "in.jsonl", tmp_path / "id.csv",
               ScoringOptions(keep_columns="id"))  # fmt: skip
    assert [r["error"] for r in read_rows(tmp_path / "id.csv")] == ["", ""]  # nothing dropped


def test_invalid_utf8_in_a_kept_non_text_column_flags_its_row(
    model: Predictor, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_bytes(b"id,text\nr\xff1,A joy\nr2,fine\n")
    summary = score_file(model, tmp_path / "in.csv", tmp_path / "out.jsonl")
    rows = strict_json_lines(tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == ["r\ufffd1", "r2"]
    assert [r["error"] for r in rows] == ["invalid UTF-8 replaced in column 'id'", None]
    assert summary.rows_flagged == 1 and summary.rows_scored == 2


def test_a_byte_order_mark_does_not_hide_the_text_column(model: Predictor, tmp_path: Path) -> None:
    # Excel's "CSV UTF-8": a BOM before the header; the text column is found by its name.
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbftext,id\r\nA joy,1\r\n")
    score_file(model, tmp_path / "excel.csv", tmp_path / "out.csv")
    [row] = read_rows(tmp_path / "out.csv")
    assert list(row)[:2] == ["text", "id"] and row["label"] == "positive"


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
        patch.setattr(sinks.Progress, "remove", lambda self: None)
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
# 8. Properties: any bytes in any input format; every input type to every output format

hostile_cells = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
) | st.sampled_from(['"', '""', "\n", "\r", ",", "\t", "\x00", "{", "}", "\\"])


@settings(max_examples=20, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(hostile_cells, max_size=12).map(lambda c: ("text,id\n" + ",".join(c)).encode()),
    ),
    kind=st.sampled_from(["csv", "jsonl", "txt", "tsv", "parquet", "csv.gz"]),
)
def test_any_bytes_in_any_format_score_every_record_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, kind: str
) -> None:
    # Moved from tests/cli/test_cli_scoring.py; records are now counted as the readers document
    # them: a blank CSV line is no row, JSON Lines end at "\r" too, "[" opens one JSON array.
    path = tmp_path_factory.mktemp("bytes") / f"in.{kind}"
    path.write_bytes(data)
    out = path.with_name("out.jsonl")
    code, _, err = invoke("predict", "-m", BUNDLED, "-i", str(path), "-o", str(out), "-q")
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert not out.exists()
        return
    rows = strict_json_lines(out)
    text = data.decode("utf-8-sig", "surrogateescape")
    if kind in ("parquet", "csv.gz"):  # arbitrary bytes are neither; text rows were scored
        assert all(row["label"] is not None or row["error"] for row in rows)
        return
    if kind == "txt":
        expected = len(data.splitlines()) if b"\r" not in data else len(rows)
    elif kind == "jsonl" and text.lstrip().startswith("["):
        expected = len(json.loads(text))
    elif kind == "jsonl":
        expected = len([line for line in io.StringIO(text, newline="") if line.strip()])
    else:
        delimiter = "," if kind == "csv" else "\t"
        records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
        expected = len(records) - 1  # every record after the header, exactly once
    assert len(rows) == expected
    for row in rows:
        assert (row["label"] is None) == (row["score"] is None)
        assert row["label"] is not None or row["error"]


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


INPUTS = ["csv", "csv.gz", "tsv", "tsv.gz", "jsonl", "jsonl.gz", "parquet", "txt", "txt.gz",
          "folder"]  # fmt: skip
OUTPUT_NAMES = ["csv", "csv.gz", "tsv", "tsv.gz", "jsonl", "jsonl.gz", "parquet"]
# Any UTF-8 character, and the ones that break readers: lone surrogates (a cut emoji, a byte
# that is not UTF-8), NUL, a byte-order mark, line breaks, delimiters, quotes, Unicode's own
# line separators. A "\r\n" arises from "\r" then "\n".
BREAKERS = '\ud83d\udcff\x00\ufeff\n\r,\t"\u2028\x85'
hostile_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(BREAKERS), max_size=30
)


def column_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.none() | values, min_size=6, max_size=6)


# One type per extra column, as Parquet needs; JSON Lines and CSV get its JSON text.
extra_columns = st.one_of(
    column_of(st.integers(-(2**63), 2**63 - 1)), column_of(st.floats()),
    column_of(st.text(max_size=5)), column_of(st.booleans()), column_of(st.dates()),
    column_of(st.binary(max_size=4)),
)  # fmt: skip
PROPERTY = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def expected_text(text: str, kind: str) -> str:
    """What a reader makes of ``text`` written by :func:`write_input`, repaired."""
    if kind.startswith(("jsonl", "parquet")):
        return fix_text(text)[0]
    return fix_text(text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape"))[0]


@pytest.mark.parametrize("out_name", OUTPUT_NAMES)
@pytest.mark.parametrize("in_kind", INPUTS)
@PROPERTY
@given(
    texts=st.lists(hostile_text, min_size=1, max_size=6),
    extra=extra_columns,
    cap=st.sampled_from([readers.MAX_FIELD_CHARS, 12]),
)
def test_every_input_format_to_every_output_format_keeps_every_row(
    model: Predictor,
    tmp_path_factory: pytest.TempPathFactory,
    in_kind: str,
    out_name: str,
    texts: list[str],
    extra: list[Any],
    cap: int,
) -> None:
    folder = tmp_path_factory.mktemp("property")
    if in_kind.startswith("txt"):  # one review a line: a line break would start another
        texts = [t.replace("\n", " ").replace("\r", " ") for t in texts]
    source = folder / ("in" if in_kind == "folder" else f"in.{in_kind}")
    write_input(source, in_kind, texts, extra[: len(texts)])
    out = folder / f"out.{out_name}"
    options = ScoringOptions(chunk_size=4, max_review_chars=cap)
    too_long = [len(line) > 8 * cap for line in json_lines(texts, extra)]
    if in_kind.startswith("jsonl") and all(too_long):
        with pytest.raises(DataError, match="names no columns"):  # no object to name them
            score_file(model, source, out, options)
        return
    summary = score_file(model, source, out, options)
    rows = read_rows(out)  # the matching reader reads it back, every row without a problem
    assert summary.rows_read == len(rows) == len(texts)
    for i, (text, row) in enumerate(zip(texts, rows, strict=True)):
        assert (row["label"] in (None, "")) == (row["score"] in (None, ""))
        assert row["label"] or row["error"]
        if "longer than" in (row["error"] or ""):
            continue
        wanted = expected_text(text, in_kind)
        if in_kind.startswith("txt") and i == 0:
            wanted = wanted.removeprefix("\ufeff")  # a BOM opening the file is not text
        assert row["text"] == wanted
        if not in_kind.startswith("txt"):
            assert row["id"] == (f"{i:04d}.txt" if in_kind == "folder" else f"r{i}")


# ----------------------------------------------------------------------------------------------
# Red-team review of batch scoring: links, FIFOs, stdin, caps and nested JSON


def test_output_that_is_a_fifo_or_a_link_is_refused_not_replaced(
    model: Predictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", "csv", ["A joy"])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    fifo, link = tmp_path / "fifo.csv", tmp_path / "link.csv"
    os.mkfifo(fifo)
    link.symlink_to(victim)
    for target in (fifo, link):
        with pytest.raises(DataError, match="not a regular file.*--output -"):
            score_file(model, tmp_path / "in.csv", target)
        code, _, err = invoke("predict", "-m", BUNDLED, "-i", str(tmp_path / "in.csv"),
                              "-o", str(target))  # fmt: skip
        assert code == 2 and err.count("\n") == 1, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_a_link_planted_at_the_partial_output_is_never_written_through(
    model: Predictor, tmp_path: Path, name: str
) -> None:
    write_input(tmp_path / "in.csv", "csv", ["A joy", "A bore"])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    output = tmp_path / name
    for resume in (True, False):  # nothing to resume: both start a fresh partial output
        partial_path(output).symlink_to(victim)
        summary = score_file(model, tmp_path / "in.csv", output, ScoringOptions(resume=resume))
        assert summary.rows_read == 2 and len(read_rows(output)) == 2
        assert victim.read_text() == "keep me" and not os.path.lexists(partial_path(output))
    if name.endswith(".parquet"):  # a link to a folder: removed, the folder's files kept
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "keep.txt").write_text("keep me")
        partial_path(output).symlink_to(folder)
        score_file(model, tmp_path / "in.csv", output)
        assert (folder / "keep.txt").read_text() == "keep me"


def test_a_link_planted_at_the_progress_file_is_never_read_or_written(
    model: Predictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", "csv", ["A joy", "A bore"])
    victim = tmp_path / "victim.json"
    victim.write_text('{"version": 2, "rows": 1}')
    output = tmp_path / "out.csv"
    progress = tmp_path / "out.csv.progress.json"
    progress.symlink_to(victim)
    with pytest.raises(DataError, match="unreadable"):
        score_file(model, tmp_path / "in.csv", output, ScoringOptions(resume=True))
    assert score_file(model, tmp_path / "in.csv", output).rows_read == 2
    assert victim.read_text() == '{"version": 2, "rows": 1}' and not os.path.lexists(progress)


def test_a_folder_input_never_reads_through_a_link_out_of_it(
    model: Predictor, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    (secret / "pos").mkdir(parents=True)
    (secret / "pos" / "key.txt").write_text("the secret itself")
    (secret / "key.txt").write_text("the secret itself")
    folder = tmp_path / "reviews"
    (folder / "neg").mkdir(parents=True)
    (folder / "neg" / "1.txt").write_text("A bore")
    (folder / "neg" / "2.txt").symlink_to(secret / "key.txt")  # a file out of the folder
    (folder / "neg" / "3.txt").symlink_to(folder / "neg" / "1.txt")  # one inside it: followed
    os.mkfifo(folder / "neg" / "4.txt")  # never opened for reading (it would wait for a writer)
    (folder / "pos").symlink_to(secret / "pos")  # a whole labelled folder out of it
    score_file(model, folder, tmp_path / "out.jsonl")
    rows = {row["id"]: row for row in map(json.loads, (tmp_path / "out.jsonl").open())}
    outside = "cannot read file: a link out of the input folder (not followed)"
    assert {name: (row["text"], row["error"]) for name, row in rows.items()} == {
        "neg/1.txt": ("A bore", None),
        "neg/2.txt": (None, outside),
        "neg/3.txt": ("A bore", None),
        "neg/4.txt": (None, "cannot read file: not a regular file"),
        "pos/key.txt": (None, outside),
    }
    assert "secret" not in (tmp_path / "out.jsonl").read_text()


@pytest.mark.parametrize(
    "first", [b'{"text": "good movie", "id": 1}', b'{"text":\r"good movie", "id": 1}']
)
def test_a_lone_carriage_return_inside_a_json_line_is_white_space_not_a_line_end(
    model: Predictor, tmp_path: Path, first: bytes
) -> None:
    lines = [first, b'{"text": "awful film",\r "id": 2}', b'{"text": "fine", "id": 3}\r']
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\r\n")
    score_file(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").open()]
    assert [(row["id"], row["text"], row["error"]) for row in rows] == [
        (1, "good movie", None),
        (2, "awful film", None),
        (3, "fine", None),
    ]


def test_the_fix_for_an_over_long_line_of_a_file_works(tmp_path: Path) -> None:
    path = tmp_path / "reviews.txt"
    path.write_text("good\n" + "fine " * (readers.MAX_FIELD_CHARS // 5 + 1) + "\n")
    code, _, err = invoke("predict", "-m", BUNDLED, "--file", str(path))
    assert code == 2 and "line 2:" in err and "with --input and a larger --max-review-chars" in err
    code, out, err = invoke("predict", "-m", BUNDLED, "-q", "--input", str(path),
                            "--max-review-chars", str(2 * readers.MAX_FIELD_CHARS))  # fmt: skip
    assert code == 0, err
    assert [json.loads(line)["error"] for line in out.splitlines()] == [None, None]


def test_stdin_input_to_a_file_output_scores_every_line(tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    code, _, err = invoke("predict", "-m", BUNDLED, "--input", "-", "--input-format", "txt",
                          "--output", str(output), stdin="good\nbad\n")  # fmt: skip
    assert code == 0, err
    assert [row["text"] for row in read_rows(output)] == ["good", "bad"]


def test_max_review_chars_beyond_a_c_long_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="max_review_chars"):
        ScoringOptions(max_review_chars=2**63)
    assert ScoringOptions(max_review_chars=2**31 - 1).max_review_chars == 2**31 - 1


def test_a_tiny_review_cap_does_not_cap_the_csv_header(model: Predictor, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,text\n1,a\n2,a long review\n")
    summary = score_file(model, tmp_path / "in.csv", tmp_path / "out.csv",
                         ScoringOptions(max_review_chars=1))  # fmt: skip
    assert summary.rows_read == 2 and summary.rows_scored == 1


def test_duplicate_csv_columns_are_named_once(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("text,text,\nA,B,C\n")
    with pytest.raises(DataError, match=r"duplicate column name\(s\): text$"):
        open_reader(str(tmp_path / "in.csv"), "csv")


def test_a_jsonl_row_of_many_arrays_and_objects_is_flagged_and_ends_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "JSON_ROW_CONTAINERS", 10)
    monkeypatch.setattr(readers, "JSON_CHUNK_CONTAINERS", 20)
    lines = [{"text": "ok", "x": [{}] * 11}] + [{"text": "ok", "x": [{}] * 8}] * 6
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    reader = open_reader(str(tmp_path / "in.jsonl"), "jsonl")
    chunks = list(reader.chunks(1000))
    reader.close()
    assert chunks[0].problems[0] == "row holds more than 10 JSON arrays/objects"
    assert chunks[0].columns["text"][0] is None
    sizes = [chunk.rows for chunk in chunks]
    assert sizes == [4, 3], sizes  # the flagged row holds none; 3 rows of 9 pass 20: a chunk ends


def test_a_json_array_of_millions_of_objects_is_refused_not_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "JSON_ARRAY_CONTAINERS", 1_000)
    rows = [{"text": "fine", "x": [{}]} for _ in range(600)]  # 1,200 objects and arrays
    (tmp_path / "in.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match="more than 1,000 arrays and objects"):
        open_reader(str(tmp_path / "in.json"), "jsonl")


def test_an_over_long_first_json_row_names_no_columns(model: Predictor, tmp_path: Path) -> None:
    # Found by the property test above: a 97-character row (JSON escapes make it longer than its
    # text) over a 96-character limit was flagged as too long, yet named the columns.
    texts = ["000\x1f\x1f\x1f\x1f\x1f\U00010000\U00010000"]
    write_input(tmp_path / "in.jsonl", "jsonl", texts, [False])
    assert len(json_lines(texts, [False])[0]) == 97
    with pytest.raises(DataError, match="names no columns"):
        score_file(model, tmp_path / "in.jsonl", tmp_path / "out.tsv",
                   ScoringOptions(chunk_size=4, max_review_chars=12))  # fmt: skip


def test_a_progress_file_that_gives_a_key_twice_is_unreadable(
    model: Predictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", "csv", ["A joy", "A bore"])
    output = tmp_path / "out.csv"
    progress = tmp_path / "out.csv.progress.json"
    for planted in ('{"version": 2, "rows": 0, "rows": 1}', "[]", "null"):
        progress.write_text(planted)
        with pytest.raises(DataError, match="unreadable; delete it to start over"):
            score_file(model, tmp_path / "in.csv", output, ScoringOptions(resume=True))
        assert progress.read_text() == planted


@pytest.mark.parametrize("exported", [False, True])
def test_predict_never_writes_over_a_file_of_the_model(tmp_path: Path, exported: bool) -> None:
    # Found by a red-team pass: `predict -o MODEL/labels.json` replaced the model's labels with
    # predictions, and the model could no longer be loaded.
    import shutil

    source = BUNDLED_MODEL_DIR.with_name("bundled-onnx") if exported else BUNDLED_MODEL_DIR
    run = Path(shutil.copytree(source, tmp_path / "model"))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    write_input(tmp_path / "in.txt", "txt", ["A joy", "A bore"])
    for name in ("labels.json", "metrics.json", "config.yaml", "manifest.json"):
        if not (run / name).exists():
            continue
        code, out, err = invoke("predict", "-m", str(run), "--input", str(tmp_path / "in.txt"),
                                "-o", str(run / name))  # fmt: skip
        assert code == 2 and "would replace a file of the model" in err and not out, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    for _ in range(2):  # an output of one's own beside the model's files, and again over it
        code, _, err = invoke("predict", "-m", str(run), "-q", "--input",
                              str(tmp_path / "in.txt"), "-o", str(run / "scores.csv"))  # fmt: skip
        assert code == 0 and len((run / "scores.csv").read_text().splitlines()) == 3, err
    from rnn_sentiment.inference.exported import EXPORTED_FILES
    from rnn_sentiment.runfiles import MODEL_DIR_NAMES

    assert set(EXPORTED_FILES) <= MODEL_DIR_NAMES
