"""The real CLI on review files: formats, stdin/stdout, errors, resume, summary, hostile files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import invoke

runner = CliRunner()


def test_csv_to_parquet_with_summary_json(builtin_run: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        'id,text\n1,"The acting was not good."\n2,\n3,The story was absolutely brilliant.\n'
    )
    code, out, err = invoke(
        "predict", "-m", str(builtin_run), "--input", str(tmp_path / "in.csv"),
        "--output", str(tmp_path / "out.parquet"), "--format", "json", "--keep-columns", "id",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_flagged"]) == (3, 2, 1)
    assert "read 3 rows, scored 2, flagged 1 (1 empty text)" in err
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert [r["label"] for r in rows] == ["negative", None, "positive"]


def test_stdin_to_stdout_and_forced_formats(builtin_run: Path, tmp_path: Path) -> None:
    code, out, err = invoke(
        "predict", "-m", str(builtin_run), "--input", "-", "--output-format", "csv",
        stdin="The acting was not good.\nnot bad at all\n",
    )  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["label"] for r in rows] == ["negative", "positive"]
    (tmp_path / "reviews.data").write_text('{"review": "A joy"}\n')
    code, out, err = invoke(
        "predict", "-m", str(builtin_run), "-i", str(tmp_path / "reviews.data"),
        "--input-format", "jsonl", "-o", str(tmp_path / "scored.out"), "--output-format", "tsv",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "scored.out").read_text().startswith("review\tlabel\tscore")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--text-column", "txt"], "did you mean --text-column text?"),
        (["--keep-columns", "idd"], "did you mean --keep-columns id?"),
        (["--input-format", "xlsx"], "unknown input format 'xlsx'"),
        (["--output", "out.xlsx"], "cannot tell the output format of out.xlsx"),
        (["--output", "-", "--resume"], "--resume needs a file input and a file output"),
        (["--output", "-", "--output-format", "parquet"], "Parquet output needs a file"),
        (["--format", "csv"], "the scored rows' format is --output-format csv"),
        (["--format", "jsonl", "-o", "-"], "the scored rows' format is --output-format jsonl"),
    ],
)
def test_bad_options_are_one_line_and_exit_code_2(
    builtin_run: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    (tmp_path / "in.csv").write_text("id,text\n1,fine\n")
    code, out, err = invoke(
        "predict", "-m", str(builtin_run), "-i", str(tmp_path / "in.csv"), *extra
    )
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


def test_missing_input_and_output_equal_to_input(builtin_run: Path, tmp_path: Path) -> None:
    code, _, err = invoke("predict", "-m", str(builtin_run), "-i", str(tmp_path / "no.csv"))
    assert code == 2 and "input file not found" in err
    (tmp_path / "in.csv").write_text("text\nfine\n")
    path = str(tmp_path / "in.csv")
    code, _, err = invoke("predict", "-m", str(builtin_run), "-i", path, "-o", path)
    assert code == 2 and "is the input file" in err
    assert (tmp_path / "in.csv").read_text() == "text\nfine\n"


@pytest.mark.parametrize(
    ("source", "output", "kind"),
    [
        ("out.csv.partial", "out.csv", "txt"),  # a text output's unfinished file
        ("out.jsonl.progress.json", "out.jsonl", "txt"),  # its progress record
        ("out.parquet.partial", "out.parquet", "folder"),  # a Parquet output's folder of parts
        ("out.parquet.partial/pos/1.txt", "out.parquet", "txt"),  # a file inside that folder
    ],
)
def test_an_output_whose_leftovers_are_the_input_is_refused_and_nothing_is_deleted(
    builtin_run: Path, tmp_path: Path, source: str, output: str, kind: str
) -> None:
    review = tmp_path / source / "pos" / "1.txt" if kind == "folder" else tmp_path / source
    review.parent.mkdir(parents=True, exist_ok=True)
    review.write_text("a fine film\n")
    before = sorted(tmp_path.rglob("*"))
    code, _, err = invoke(
        "predict", "-m", str(builtin_run), "-i", str(tmp_path / source), "--input-format", kind,
        "-o", str(tmp_path / output),
    )  # fmt: skip
    assert code == 2 and "would replace the input" in err and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before and review.read_text() == "a fine film\n"


def test_resume_without_an_interrupted_run_scores_from_the_start(
    builtin_run: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("".join(f"review number {i} was good\n" for i in range(30)))
    args = ["predict", "-m", str(builtin_run), "-i", str(tmp_path / "in.txt"), "--chunk-size", "7"]
    code, _, err = invoke(*args, "-o", str(tmp_path / "whole.jsonl"))
    assert code == 0, err
    code, _, err = invoke(*args, "--resume", "-o", str(tmp_path / "out.jsonl"))
    assert code == 0 and "nothing to resume" in err
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
