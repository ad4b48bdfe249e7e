"""Batch scoring: every format in and out, bad rows, order, atomic output and resume."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.inference.scoring import (
    ScoringCallback,
    ScoringInterrupted,
    ScoringOptions,
    score_file,
)
from rnn_sentiment.inference.sinks import partial_path

REVIEWS = [
    "The acting was not good.",
    "The story was absolutely brilliant and the acting was wonderful.",
    "not bad at all",
    "The plot was a total mess but the acting was wonderful, and the music was good too.",
    "awful",
    "The acting was wonderful but the plot was a total mess.",
    "A joy",
]


def write_input(path: Path, texts: list[str]) -> None:
    """``texts`` with ids in the format named by ``path``'s extension."""
    name = path.name.removesuffix(".gz")
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
        return
    if name.endswith(".jsonl"):
        data = "".join(json.dumps(r) + "\n" for r in rows)
    elif name.endswith(".txt"):
        data = "".join(t + "\n" for t in texts)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ["id", "text"], delimiter="\t" if ".tsv" in name else ",")
        writer.writeheader()
        writer.writerows(rows)
        data = buffer.getvalue()
    raw = data.encode("utf-8")
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def read_output(path: Path) -> list[dict[str, Any]]:
    """Rows of a scored file, values as written (CSV/TSV cells are strings)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines()]
    delimiter = "\t" if name.endswith(".tsv") else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def positive(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([float(r["p_positive"]) for r in rows])


@pytest.mark.parametrize(
    "name",
    ["in.csv", "in.tsv", "in.jsonl", "in.parquet", "in.txt", "in.csv.gz", "in.jsonl.gz",
     "in.txt.gz"],
)  # fmt: skip
def test_every_input_format_scores_every_row_in_order(
    predictor: Predictor, tmp_path: Path, name: str
) -> None:
    texts = REVIEWS * 3
    write_input(tmp_path / name, texts)
    options = ScoringOptions(chunk_size=4)  # several chunks, each sorted by length internally
    summary = score_file(predictor, tmp_path / name, tmp_path / "out.jsonl", options)
    rows = read_output(tmp_path / "out.jsonl")
    assert summary.rows_read == summary.rows_scored == len(rows) == len(texts)
    assert [r["text"] for r in rows] == texts
    expected = predictor.predict_proba(texts)[:, 1]
    assert np.abs(positive(rows) - expected).max() < 1e-5
    if name != "in.txt" and not name.startswith("in.txt"):
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(texts))]


@pytest.mark.parametrize("name", ["out.csv", "out.tsv", "out.jsonl", "out.parquet", "out.csv.gz"])
def test_every_output_format_round_trips(predictor: Predictor, tmp_path: Path, name: str) -> None:
    write_input(tmp_path / "in.jsonl", REVIEWS)
    score_file(predictor, tmp_path / "in.jsonl", tmp_path / name, ScoringOptions(chunk_size=3))
    rows = read_output(tmp_path / name)
    assert list(rows[0]) == ["id", "text", "label", "score", "p_negative", "p_positive", "error"]
    assert [r["text"] for r in rows] == REVIEWS
    assert np.abs(positive(rows) - predictor.predict_proba(REVIEWS)[:, 1]).max() < 1e-5
    assert [r["label"] for r in rows][:3] == ["negative", "positive", "positive"]
    assert not list(tmp_path.glob("*.partial*")) and not list(tmp_path.glob("*.progress.json"))


def test_aclimdb_folder(predictor: Predictor, tmp_path: Path) -> None:
    for label, texts in (("pos", REVIEWS[1:3]), ("neg", REVIEWS[:1])):
        (tmp_path / "test" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "test" / label / f"{i}_7.txt").write_text(text)
    score_file(predictor, tmp_path / "test", tmp_path / "out.csv")
    rows = read_output(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == ["neg/0_7.txt", "pos/0_7.txt", "pos/1_7.txt"]
    assert [r["input_label"] for r in rows] == ["neg", "pos", "pos"]  # no clash with 'label'
    assert [r["label"] for r in rows] == ["negative", "positive", "positive"]


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv", "out.parquet"])
def test_an_input_column_named_like_a_renamed_one_is_kept_too(
    predictor: Predictor, tmp_path: Path, name: str
) -> None:
    (tmp_path / "in.csv").write_text("text,label,input_label,score\ngood movie,L1,IL1,5\n")
    score_file(predictor, tmp_path / "in.csv", tmp_path / name)
    (row,) = read_output(tmp_path / name)
    kept = {k: str(v) for k, v in row.items() if k.startswith("input_")}
    assert kept == {"input_input_label": "L1", "input_label": "IL1", "input_score": "5"}
    assert row["label"] in ("negative", "positive") and not row["error"]


def test_column_choices_and_errors(predictor: Predictor, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("key,body,stars\n7,The acting was not good.,1\n")
    with pytest.raises(DataError, match="did you mean --text-column body"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv",
                   ScoringOptions(text_column="bdy"))  # fmt: skip
    with pytest.raises(DataError, match="did you mean --keep-columns key.*columns are: key"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv",
                   ScoringOptions(keep_columns="kye"))  # fmt: skip
    only_key = ScoringOptions(keep_columns="key")
    score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv", only_key)
    [row] = read_output(tmp_path / "o.csv")
    assert list(row) == ["key", "label", "score", "p_negative", "p_positive", "error"]
    assert row["key"] == "7" and row["label"] == "negative"
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="pass --text-column NAME; columns are: a, b"):
        score_file(predictor, tmp_path / "two.csv", tmp_path / "o.csv")


def test_bad_rows_are_flagged_never_dropped(predictor: Predictor, tmp_path: Path) -> None:
    lines = [
        b'{"text": "The acting was not good."}',
        b'{"text": ""}',
        b'{"text": null}',
        b'{"other": "no text key"}',
        b'{"text": "caf\xe9 was not bad at all"}',
        b"{not json",
        b'["a list"]',
        b'{"text": 12345}',
        b'{"text": {"nested": 1}}',
        b'{"text": "A joy"}',
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
    summary = score_file(predictor, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    rows = read_output(tmp_path / "out.jsonl")
    assert len(rows) == summary.rows_read == len(lines)  # a blank line is not a record
    errors = [r["error"] for r in rows]
    assert errors == [
        None, "empty text", "missing text", "missing text", "invalid UTF-8 replaced",
        "invalid JSON", "not a JSON object", None, "text is not a string (dict)", None,
    ]  # fmt: skip
    scored = [r["label"] is not None for r in rows]
    assert scored == [True, False, False, False, True, False, False, True, False, True]
    assert rows[4]["text"] == "caf\ufffd was not bad at all"
    assert summary.rows_scored == 4 and summary.rows_flagged == 7
    assert summary.problems["missing text"] == 2


def test_ragged_and_broken_csv_rows(predictor: Predictor, tmp_path: Path) -> None:
    data = b'id,text\n1,fine\n2\n3,too,many\n4,"bad \xff byte"\n5,\n'
    (tmp_path / "in.csv").write_bytes(data)
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv")
    rows = read_output(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["error"] for r in rows] == [
        "", "1 fields, expected 2", "3 fields, expected 2", "invalid UTF-8 replaced", "empty text"
    ]  # fmt: skip
    assert [bool(r["label"]) for r in rows] == [True, False, True, True, False]
    assert summary.rows_read == 5 and summary.rows_scored == 3


def test_output_is_atomic_and_resume_equals_an_uninterrupted_run(
    predictor: Predictor, tmp_path: Path
) -> None:
    texts = [f"{t} ({i})" for i, t in enumerate(REVIEWS * 6)]
    write_input(tmp_path / "in.csv", texts)
    options = ScoringOptions(chunk_size=5)
    for name in ("whole.csv.gz", "whole.parquet"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / name, options)

    class StopAfter(ScoringCallback):
        def __init__(self, chunks: int) -> None:
            self.left = chunks

        def on_chunk(self, rows_done: int, fraction: float | None) -> None:
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt

    for name in ("part.csv.gz", "part.parquet"):
        out = tmp_path / name
        with pytest.raises(ScoringInterrupted, match="after 15 rows.*--resume"):
            score_file(predictor, tmp_path / "in.csv", out, options, StopAfter(3))
        assert not out.exists() and partial_path(out).exists()  # nothing looks finished
        if name.endswith(".gz"):  # a torn write after the last commit is cut off on resume
            with partial_path(out).open("ab") as handle:
                handle.write(b"\x1f\x8b garbage of an unfinished chunk")
        resumed = score_file(
            predictor, tmp_path / "in.csv", out, options.model_copy(update={"resume": True})
        )
        assert resumed.rows_resumed == 15 and resumed.rows_read == len(texts)
        whole = "whole" + name.removeprefix("part")
        assert read_output(out) == read_output(tmp_path / whole)
        assert not partial_path(out).exists()
    assert (tmp_path / "part.csv.gz").read_bytes() == (tmp_path / "whole.csv.gz").read_bytes()


def test_sigterm_exits_130_in_one_line_and_resume_is_byte_identical(
    builtin_run: Path, tmp_path: Path
) -> None:
    texts = [f"{t} ({i})" for i, t in enumerate(REVIEWS * 3000)]
    write_input(tmp_path / "in.csv", texts)
    command = [sys.executable, "-m", "rnn_sentiment", "predict", "-m", str(builtin_run), "-q",
               "-i", str(tmp_path / "in.csv"), "--chunk-size", "50", "--threads", "1"]  # fmt: skip
    whole = subprocess.run([*command, "-o", str(tmp_path / "whole.csv")], check=False)
    assert whole.returncode == 0

    out = tmp_path / "part.csv"
    process = subprocess.Popen(
        [*command, "-o", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    progress = out.with_name(out.name + ".progress.json")
    deadline = time.monotonic() + 120
    while not progress.exists() and time.monotonic() < deadline:  # a first chunk is committed
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "stopped by SIGTERM after" in err and "--resume" in err
    assert not out.exists() and partial_path(out).exists()
    rows_kept = json.loads(progress.read_text())["rows"]
    assert 0 < rows_kept < len(texts)

    resumed = subprocess.run([*command, "-o", str(out), "--resume"], check=False)
    assert resumed.returncode == 0
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert not progress.exists() and not partial_path(out).exists()


def test_a_read_error_in_a_later_chunk_is_a_data_error_and_keeps_the_committed_rows(
    predictor: Predictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv.gz", [f"{t} ({i})" for i, t in enumerate(REVIEWS * 200)])
    data = (tmp_path / "in.csv.gz").read_bytes()
    (tmp_path / "in.csv.gz").write_bytes(data[: len(data) * 2 // 3])  # a truncated download
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match="cannot read"):
        score_file(predictor, tmp_path / "in.csv.gz", out, ScoringOptions(chunk_size=100))
    committed = json.loads(out.with_name("out.csv.progress.json").read_text())["rows"]
    assert committed >= 100 and not out.exists()


def test_resume_refuses_a_changed_input_and_restarts_without_resume(
    predictor: Predictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv", REVIEWS)

    class Stop(ScoringCallback):
        def on_chunk(self, rows_done: int, fraction: float | None) -> None:
            raise KeyboardInterrupt

    options = ScoringOptions(chunk_size=2)
    with pytest.raises(ScoringInterrupted):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv", options, Stop())
    write_input(tmp_path / "in.csv", REVIEWS[::-1])
    with pytest.raises(DataError, match="cannot resume: the input changed"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv",
                   options.model_copy(update={"resume": True}))  # fmt: skip
    score_file(predictor, tmp_path / "in.csv", tmp_path / "o.csv", options)
    assert [r["text"] for r in read_output(tmp_path / "o.csv")] == REVIEWS[::-1]


def test_parquet_output_keeps_the_json_types_of_the_first_object(
    tmp_path: Path, predictor: Predictor
) -> None:
    import pyarrow.parquet as pq

    source = tmp_path / "ids.jsonl"
    rows = [{"id": 1, "text": "a wonderful film", "stars": 4.5, "seen": True},
            {"id": "x7", "text": "a dull film", "stars": 2, "seen": False}]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    score_file(predictor, str(source), str(tmp_path / "out.parquet"))
    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("id").type) == "int64"
    assert str(table.schema.field("stars").type) == "double"
    assert str(table.schema.field("seen").type) == "bool"
    got = table.to_pylist()
    assert [row["id"] for row in got] == [1, None] and [row["seen"] for row in got] == [True, False]
    assert got[0]["error"] is None and "int64 in column 'id'" in got[1]["error"]
