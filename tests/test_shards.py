"""``--shard K/N``: N shard outputs, concatenated in shard order, are one unsharded run's output."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from rnn_sentiment.data import readers
from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.exported import ExportedPredictor
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor
from rnn_sentiment.inference.scoring import (
    ScoringCallback,
    ScoringInterrupted,
    ScoringOptions,
    score_file,
)

# Reviews of every length, a few bad rows among them (empty, missing, too long, invalid UTF-8).
TEXTS = [
    f"{word} film number {i}, " + "with a long and winding plot " * (i % 9)
    for i, word in enumerate(["a wonderful", "an awful", "a dull", "a moving"] * 12)
]
TEXTS[5], TEXTS[17] = "", "x" * 500


@pytest.fixture(scope="module")
def predictor() -> ExportedPredictor:
    scorer = load_predictor(BUNDLED_MODEL_DIR, threads=1)
    assert isinstance(scorer, ExportedPredictor)
    return scorer


def write_input(path: Path) -> None:
    """TEXTS with ids, in the format of ``path``'s extension; row 9 has no text, row 30 has
    bytes that are not UTF-8 (text formats) or a missing text cell (CSV: a short row)."""
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    if path.suffix == ".parquet":
        rows[9]["text"] = None
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10)
        return
    if path.suffix == ".jsonl":
        rows[9] = {"id": 9}
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    else:
        records = [(r["id"], r["text"]) if r["id"] != 9 else (9,) for r in rows]
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("id", "text"), *records])
        data = path.read_bytes()
    path.write_bytes(data.replace(b"number 30", b"number \xff30", 1))


def run_shards(predictor: ExportedPredictor, source: Path, out: str, n: int,
               **settings: object) -> list[Path]:  # fmt: skip
    parts = []
    for k in range(n):
        part = source.parent / f"shard-{k}-of-{n}-{out}"
        options = ScoringOptions(shard=f"{k}/{n}", **settings)  # type: ignore[arg-type]
        score_file(predictor, source, part, options)
        parts.append(part)
    return parts


@pytest.mark.parametrize("source", ["in.csv", "in.jsonl", "in.parquet"])
@pytest.mark.parametrize("out", ["out.csv", "out.jsonl", "out.tsv.gz"])
@pytest.mark.parametrize("n", [1, 3, 5, 20])
def test_shards_concatenate_to_the_unsharded_output_byte_for_byte(
    predictor: ExportedPredictor, tmp_path: Path, source: str, out: str, n: int
) -> None:
    path = tmp_path / source
    write_input(path)
    settings = {"chunk_size": 4, "max_review_chars": 400}
    score_file(predictor, path, tmp_path / out, ScoringOptions(**settings))  # type: ignore[arg-type]
    whole = (tmp_path / out).read_bytes()
    parts = run_shards(predictor, path, out, n, **settings)
    assert b"".join(part.read_bytes() for part in parts) == whole
    if out.endswith(".csv"):  # only the first non-empty shard holds the header row
        assert sum(p.read_bytes().startswith(b"id,text,label") for p in parts) == 1
    if n == 20:  # 12 chunks (Parquet: 14, its row groups of 10 rows end chunks too)
        chunks = 14 if source.endswith(".parquet") else 12
        assert sum(p.stat().st_size == 0 for p in parts) == n - chunks


def test_parquet_shards_hold_the_rows_of_the_unsharded_output(
    predictor: ExportedPredictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.parquet")
    options = ScoringOptions(chunk_size=4, max_review_chars=400)
    score_file(predictor, tmp_path / "in.parquet", tmp_path / "whole.parquet", options)
    parts = run_shards(predictor, tmp_path / "in.parquet", "o.parquet", 3, chunk_size=4,
                       max_review_chars=400)  # fmt: skip
    joined = pa.concat_tables([pq.read_table(part) for part in parts])
    whole = pq.read_table(tmp_path / "whole.parquet")
    assert joined.equals(whole) and whole.num_rows == len(TEXTS)
    assert whole.column("error").to_pylist()[5] == "empty text"


def test_chunks_cut_by_size_still_split_whole(
    predictor: ExportedPredictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chunk also ends once its rows hold CHUNK_CHARS characters: shards must cut where an
    # unsharded run cuts, not every chunk_size rows.
    monkeypatch.setattr(readers, "CHUNK_CHARS", 700)
    for name in ("in.csv", "in.parquet"):
        write_input(tmp_path / name)
        options = ScoringOptions(chunk_size=6)
        score_file(predictor, tmp_path / name, tmp_path / "whole.jsonl", options)
        parts = run_shards(predictor, tmp_path / name, "o.jsonl", 4, chunk_size=6)
        joined = b"".join(part.read_bytes() for part in parts)
        assert joined == (tmp_path / "whole.jsonl").read_bytes(), name


def test_a_shard_starts_where_the_one_before_ended(
    predictor: ExportedPredictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.jsonl")
    starts = []
    for k in range(3):
        options = ScoringOptions(chunk_size=5, shard=(k, 3))
        summary = score_file(predictor, tmp_path / "in.jsonl", tmp_path / f"{k}.jsonl", options)
        starts.append((summary.first_row, summary.rows_read))
    assert starts == [(0, 15), (15, 15), (30, 18)]  # 10 chunks: 3, 3, 4


def test_a_shard_resumes_on_its_own(predictor: ExportedPredictor, tmp_path: Path) -> None:
    write_input(tmp_path / "in.csv")
    options = ScoringOptions(chunk_size=4, shard=(1, 2))
    score_file(predictor, tmp_path / "in.csv", tmp_path / "whole.csv", options)

    class StopAfterOne(ScoringCallback):
        def on_chunk(self, rows_done: int, fraction: float | None) -> None:
            raise KeyboardInterrupt

    out = tmp_path / "part.csv"
    with pytest.raises(ScoringInterrupted, match="after 4 rows"):
        score_file(predictor, tmp_path / "in.csv", out, options, StopAfterOne())
    with pytest.raises(DataError, match=r"settings \(shard\)"):  # another shard's output
        score_file(predictor, tmp_path / "in.csv", out,
                   options.model_copy(update={"resume": True, "shard": (0, 2)}))  # fmt: skip
    resumed = score_file(predictor, tmp_path / "in.csv", out,
                         options.model_copy(update={"resume": True}))  # fmt: skip
    assert resumed.rows_resumed == 4 and resumed.first_row == 24
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ("4/4", "K counts from 0"),
        ("1/0", "K counts from 0"),
        ("a/4", "not K/N"),
        ("2", "not K/N"),
        ("0/10000000000000000000", "N is at most 1,000,000"),
    ],  # fmt: skip
)
def test_a_wrong_shard_names_the_field(shard: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScoringOptions(shard=shard)  # type: ignore[arg-type]


def test_a_chunk_size_past_32_bits_is_refused() -> None:
    # Found by a review: 10**19 validated, then the progress file holding it read as altered.
    with pytest.raises(ValidationError, match="chunk_size"):
        ScoringOptions(chunk_size=2**31)
    assert ScoringOptions(chunk_size=2**31 - 1, shard=(0, 1_000_000)).chunk_size == 2**31 - 1


def test_a_shard_of_stdin_is_refused(predictor: ExportedPredictor, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--shard needs a file input"):
        score_file(predictor, "-", tmp_path / "o.csv", ScoringOptions(shard=(0, 2)))


def test_gzip_shards_concatenate_to_one_valid_gzip_file(
    predictor: ExportedPredictor, tmp_path: Path
) -> None:
    write_input(tmp_path / "in.csv")
    parts = run_shards(predictor, tmp_path / "in.csv", "o.csv.gz", 3, chunk_size=7)
    text = gzip.decompress(b"".join(part.read_bytes() for part in parts)).decode()
    rows = list(csv.DictReader(text.splitlines()))
    assert [int(row["id"]) for row in rows] == list(range(len(TEXTS)))
