"""Review files (data/files.py, readers.py, writers.py): formats, columns, flagged rows, writers."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from rnn_sentiment.data import readers
from rnn_sentiment.data.files import (
    choose_text_column,
    detect_format,
    format_of,
    missing_column,
    open_reader,
)
from rnn_sentiment.data.readers import MISSING, FolderReader, ParquetReader, TableReader
from rnn_sentiment.data.writers import encode_rows, merge_parquet_parts, write_parquet_part
from rnn_sentiment.errors import DataError


def read_all(path: Path | str, kind: str | None = None, chunk_size: int = 2) -> dict[str, Any]:
    """Every row of a file, column-wise, with its problems and the sizes of its chunks."""
    reader = open_reader(str(path), kind or detect_format(str(path), None))
    try:
        columns: dict[str, list[Any]] = {name: [] for name in reader.columns}
        problems: list[str] = []
        sizes: list[int] = []
        for chunk in reader.chunks(chunk_size):
            for name in reader.columns:
                columns[name].extend(chunk.columns[name])
            problems.extend(chunk.problems)
            sizes.append(chunk.rows)
    finally:
        reader.close()
    return {"columns": columns, "problems": problems, "sizes": sizes}


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.csv", "csv"), ("a.TSV", "tsv"), ("a.jsonl.gz", "jsonl"), ("a.ndjson", "jsonl"),
     ("a.json", "jsonl"), ("a.parquet", "parquet"), ("a.txt.gz", "txt"), ("a.data", None)],
)  # fmt: skip
def test_format_of_reads_the_extension_through_gz(name: str, kind: str | None) -> None:
    assert format_of(name) == kind


def test_detect_format_forced_stdin_and_unknown(tmp_path: Path) -> None:
    assert detect_format("-", None) == "txt" and detect_format("-", None, output=True) == "jsonl"
    assert detect_format(str(tmp_path), None) == "folder"
    assert detect_format("export.data", "jsonl") == "jsonl"
    with pytest.raises(DataError, match="cannot tell the input format of x.data.*--input-format"):
        detect_format("x.data", None)
    with pytest.raises(DataError, match="unknown output format 'txt'"):
        detect_format("out.csv", "txt", output=True)


def test_text_column_order_and_did_you_mean() -> None:
    # One order for every command: 'review' before 'sentence'.
    assert choose_text_column(["id", "sentence", "review"], None, "f") == "review"
    assert choose_text_column(["body", "content"], None, "f") == "content"
    assert choose_text_column(["whatever"], None, "f") == "whatever"  # the only column
    with pytest.raises(DataError, match="did you mean --text-column review"):
        choose_text_column(["review", "stars"], "reveiw", "f.csv")
    with pytest.raises(DataError, match=r"did you mean data.text_column=review\? columns are"):
        choose_text_column(["review", "stars"], "reveiw", "f.csv", "data.text_column=")
    with pytest.raises(DataError, match="pass data.text_column=NAME; columns are: a, b"):
        choose_text_column(["a", "b"], None, "f.csv", "data.text_column=")
    error = missing_column("zzz", ["review"], "f.csv")
    assert str(error) == "no column 'zzz' in f.csv; columns are: review"  # nothing close


def test_csv_chunks_keep_ragged_rows_flagged(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"a, quoted\nline"\n2\n3,c,extra\n4,d\n')
    got = read_all(path)
    assert got["columns"] == {
        "id": ["1", "2", "3", "4"],
        "text": ["a, quoted\nline", MISSING, "c", "d"],
    }
    assert got["problems"] == ["", "1 fields, expected 2", "3 fields, expected 2", ""]
    assert got["sizes"] == [2, 2]


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbftext,label\nfine,1\n")
    assert list(read_all(tmp_path / "excel.csv")["columns"]) == ["text", "label"]
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "fine"}\n')
    assert read_all(tmp_path / "bom.jsonl")["columns"] == {"text": ["fine"]}
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf__label__pos fine\n")
    assert read_all(tmp_path / "bom.txt")["columns"] == {"text": ["fine"], "label": ["pos"]}


def test_empty_csv_and_duplicate_columns_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv is empty: a header row"):
        open_reader(str(tmp_path / "empty.csv"), "csv")
    (tmp_path / "dup.csv").write_text("text,text\na,b\n")
    with pytest.raises(DataError, match="duplicate column name"):
        open_reader(str(tmp_path / "dup.csv"), "csv")


def test_jsonl_rows_blank_lines_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    lines = ['{"text": "a", "label": 1}', "", "[1, 2]", "{broken", '{"label": 0, "extra": 5}']
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    got = read_all(path)
    assert got["columns"] == {
        "text": ["a", MISSING, MISSING, MISSING],
        "label": [1, MISSING, MISSING, 0],
    }
    assert got["problems"] == ["", "not a JSON object", "invalid JSON", ""]


def test_jsonl_columns_come_from_the_first_object_after_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('\n\n"just a string"\n{"review": "x"}\n')
    got = read_all(tmp_path / "in.jsonl")
    assert got["columns"] == {"review": [MISSING, "x"]}
    assert got["problems"] == ["not a JSON object", ""]


def test_json_array_of_objects_is_read_like_json_lines(tmp_path: Path) -> None:
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(5)]
    (tmp_path / "export.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    array, lines = read_all(tmp_path / "export.json"), read_all(tmp_path / "export.jsonl")
    assert array["columns"] == lines["columns"]
    assert array["columns"]["text"] == [f"review {i}" for i in range(5)]
    assert array["sizes"] == [2, 2, 1]  # handed out in chunks like any file
    (tmp_path / "mixed.json").write_text('  \n [{"text": "a"}, 3]')
    assert read_all(tmp_path / "mixed.json")["problems"] == ["", "not a JSON object"]


def test_json_array_above_the_cap_or_broken_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"text": "x" * 50}] * 10
    (tmp_path / "big.json").write_text(json.dumps(rows))
    monkeypatch.setattr(readers, "JSON_ARRAY_LIMIT", 300)
    with pytest.raises(DataError, match="big.json is a JSON array of more than .*JSON Lines"):
        open_reader(str(tmp_path / "big.json"), "jsonl")
    monkeypatch.setattr(readers, "JSON_ARRAY_LIMIT", 1000)
    assert read_all(tmp_path / "big.json")["columns"]["text"] == ["x" * 50] * 10
    (tmp_path / "cut.json").write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(DataError, match="cut.json starts with '\\[' but is not a valid JSON array"):
        open_reader(str(tmp_path / "cut.json"), "jsonl")


def test_text_lines_keep_every_line_and_raw_bytes(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"one\r\n\ncaf\xe9 <br />two\nlast")
    got = read_all(tmp_path / "in.txt")
    assert got["columns"] == {
        "text": ["one", "", "caf\udce9 <br />two", "last"]
    }  # raw: no cleaning
    assert got["sizes"] == [2, 2]


def test_fasttext_labels_are_detected_from_the_first_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.txt.gz"
    path.write_bytes(gzip.compress(b"__label__pos loved it\n__label__neg hated\tit\nno prefix\n"))
    got = read_all(path)
    assert got["columns"] == {
        "text": ["loved it", "hated\tit", "no prefix"],
        "label": ["pos", "neg", MISSING],
    }
    (tmp_path / "mixed.txt").write_text("no prefix\n__label__pos on the second line\n")
    assert read_all(tmp_path / "mixed.txt")["columns"] == {
        "text": ["no prefix", "on the second line"],
        "label": [MISSING, "pos"],
    }
    late = "".join(f"line {i}\n" for i in range(readers.FASTTEXT_PEEK)) + "__label__pos late\n"
    (tmp_path / "late.txt").write_text(late)
    got = read_all(tmp_path / "late.txt")["columns"]
    assert list(got) == ["text"] and got["text"][-1] == "__label__pos late"  # past the peek


def test_folder_reader_aclimdb_layout_and_plain_folder(tmp_path: Path) -> None:
    for label, name, text in (("pos", "1_9.txt", "good"), ("neg", "0_2.txt", "bad"),
                              ("unsup", "5_0.txt", "meh"), ("pos", "0_8.txt", "fine")):  # fmt: skip
        (tmp_path / "acl" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "acl" / label / name).write_text(text)
    got = read_all(tmp_path / "acl")
    assert got["columns"] == {
        "id": ["neg/0_2.txt", "pos/0_8.txt", "pos/1_9.txt", "unsup/5_0.txt"],
        "text": ["bad", "fine", "good", "meh"],
        "label": ["neg", "pos", "pos", None],
    }
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("alpha")
    assert read_all(tmp_path / "plain")["columns"]["label"] == [None]
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no .txt reviews in"):
        FolderReader(tmp_path / "none")


def test_parquet_reads_only_the_wanted_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, "text": f"t{i}", "label": i % 2} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=3)
    reader = ParquetReader(tmp_path / "in.parquet")
    reader.wanted = ["text", "label"]
    chunks = list(reader.chunks(2))
    reader.close()
    assert [c.rows for c in chunks] == [2, 1, 2, 1, 1]  # never across a row group
    assert all(list(c.columns) == ["text", "label"] for c in chunks)
    assert sum((c.columns["text"] for c in chunks), []) == [f"t{i}" for i in range(7)]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read .*bad.parquet as Parquet"):
        ParquetReader(tmp_path / "bad.parquet")


def test_missing_inputs_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="input file not found"):
        open_reader(str(tmp_path / "nope.csv"), "csv")
    with pytest.raises(DataError, match="is a directory"):
        open_reader(str(tmp_path), "csv")
    with pytest.raises(DataError, match="Parquet input must be an uncompressed file"):
        open_reader(str(tmp_path / "x.parquet.gz"), "parquet")


def test_table_reader_hands_out_chunks_in_order() -> None:
    reader = TableReader({"text": ["a", "b", "c"], "label": [1, 0, 1]}, "table")
    chunks = list(reader.chunks(2))
    assert [c.rows for c in chunks] == [2, 1]
    assert chunks[1].columns == {"text": ["c"], "label": [1]} and chunks[1].problems == [""]


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_encoded_chunks_concatenate_into_one_valid_file(kind: str) -> None:
    first = {"id": [1, 2], "text": ['a, "quoted"', "caf\u00e9\nnew line"]}
    second = {"id": [3], "text": ["plain"]}
    data = encode_rows(first, kind, header=True, compress=True)
    data += encode_rows(second, kind, header=False, compress=True)
    text = gzip.decompress(data).decode("utf-8")  # gzip members concatenate
    if kind == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        delimiter = "\t" if kind == "tsv" else ","
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        rows = [{"id": int(r["id"]), "text": r["text"]} for r in rows]
    assert rows == [
        {"id": 1, "text": 'a, "quoted"'},
        {"id": 2, "text": "caf\u00e9\nnew line"},
        {"id": 3, "text": "plain"},
    ]


def test_parquet_parts_merge_into_one_file_one_row_group_each(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string()), ("score", pa.float64())])
    parts = [tmp_path / "p0.parquet", tmp_path / "p1.parquet"]
    write_parquet_part({"text": ["a", "b"], "score": [0.5, 0.25]}, schema, parts[0])
    write_parquet_part({"text": ["c"], "score": [None]}, schema, parts[1])
    merge_parquet_parts(parts, schema, tmp_path / "out.parquet")
    merged = pq.ParquetFile(tmp_path / "out.parquet")
    assert merged.metadata.num_row_groups == 2
    assert merged.read().to_pylist() == [
        {"text": "a", "score": 0.5},
        {"text": "b", "score": 0.25},
        {"text": "c", "score": None},
    ]


def test_parquet_reading_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": os.urandom(1000).hex()} for _ in range(300)]  # 600 KB per row group
    with pq.ParquetWriter(tmp_path / "big.parquet", pa.schema([("text", pa.string())])) as writer:
        for _ in range(40):
            writer.write_table(pa.Table.from_pylist(rows))
    reader = ParquetReader(tmp_path / "big.parquet")
    start, peak, seen = pa.total_allocated_bytes(), 0, 0
    for chunk in reader.chunks(100):
        seen += chunk.rows
        peak = max(peak, pa.total_allocated_bytes() - start)
    reader.close()
    assert seen == 40 * 300
    assert peak < 5 * 2**20  # a few row groups at most, not the 24 MB file


def test_blank_csv_lines_are_not_rows(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("text,label\ngood movie,1\n\nbad movie,0\n\n")
    got = read_all(tmp_path / "in.csv")
    assert got["columns"] == {"text": ["good movie", "bad movie"], "label": ["1", "0"]}
    assert got["problems"] == ["", ""]


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.txt", "in.csv.gz"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_one_error_that_says_how_to_re_encode_it(
    tmp_path: Path, name: str, encoding: str
) -> None:
    text = {"jsonl": '{"text": "good"}\n', "txt": "good\n"}.get(name.split(".")[1], "text\ngood\n")
    path = tmp_path / name

    def write(data: bytes) -> None:
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)

    write(("\ufeff" + text).encode(encoding) if encoding == "utf-16-be" else text.encode(encoding))
    with pytest.raises(DataError, match=r"is UTF-16 .*save it as UTF-8, for example: iconv"):
        open_reader(str(path), detect_format(str(path), None))
    write(b"\xef\xbb\xbf" + text.encode())  # UTF-8 with a byte-order mark: read, the mark dropped
    reader = open_reader(str(path), detect_format(str(path), None))
    assert next(reader.chunks(10)).columns["text"] == ["good"]
    reader.close()


def test_empty_cells_count_against_a_chunks_size(tmp_path: Path) -> None:
    # Found by a red-team pass: 8,000 "{}" lines after an object of 20,000 keys (273 KB) held
    # 1.6 GB of empty cells in one chunk; a wide CSV header over short rows did the same.
    from rnn_sentiment.data.readers import CELL_CHARS, CHUNK_CHARS

    keys = 20_000
    wide = tmp_path / "wide.jsonl"
    first = {"text": "x", "label": 1, **{f"k{i}": 0 for i in range(keys)}}
    wide.write_text(json.dumps(first) + "\n" + "{}\n" * 1000)
    flat = tmp_path / "wide.csv"
    flat.write_text(",".join(f"c{i}" for i in range(keys)) + "\n" + "x\n" * 1000)
    most = CHUNK_CHARS // (CELL_CHARS * keys) + 1
    for path, kind in ((wide, "jsonl"), (flat, "csv")):
        reader = open_reader(str(path), kind)
        sizes = [chunk.rows for chunk in reader.chunks(4096)]
        reader.close()
        assert sum(sizes) == 1001 - (kind == "csv") and max(sizes) <= most, (kind, sizes)
