"""Batch scoring on Ray Data: rows in = rows out with ids, the rows ``predict --input`` writes, and
a worker killed in the middle of a run loses and duplicates nothing.

Marked ``ray`` (each test starts a local Ray: seconds); skipped unless the ray extra is installed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor
from rnn_sentiment.inference.ray_scoring import score_with_ray
from rnn_sentiment.inference.scoring import ScoringOptions, score_file

SOURCE = ["source_file", "source_row"]
# Short reviews and long ones, so that chunks take different times and finish out of order.
TEXTS = [
    f"{word} film number {i}, " + "with a long and winding plot " * (i % 13)
    for i, word in enumerate(["a wonderful", "an awful", "a dull", "a moving", "a fine"] * 40)
]


def test_without_ray_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when not installed
    with pytest.raises(DataError, match=r"pip install 'rnn-sentiment\[ray\]'"):
        score_with_ray(None, tmp_path / "in.csv", tmp_path / "out")


ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A small local Ray for the module (two CPUs, as the development machine has)."""
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20)
    yield
    ray.shutdown()


def write_inputs(folder: Path) -> list[Path]:
    """TEXTS split over three formats, each with ids and a few bad rows."""
    folder.mkdir()
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)]
    with (folder / "a.csv").open("w", newline="", encoding="utf-8") as handle:
        records = [(r["id"], r["text"]) for r in rows[:70]]
        records[3] = ("r3",)  # a short row: flagged
        records[4] = ("r4", "")  # empty text: flagged
        csv.writer(handle).writerows([("id", "text"), *records])
    jsonl = [json.dumps(r) for r in rows[70:140]]
    jsonl[5] = json.dumps({"id": "r75", "text": ["not", "a", "string"]})
    jsonl[6] = '{"id": "r76", "text": broken'
    (folder / "b.jsonl").write_text("\n".join(jsonl) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows[140:]), folder / "c.parquet", row_group_size=16)
    (folder / "notes.md").write_text("not an input")
    return [folder / name for name in ("a.csv", "b.jsonl", "c.parquet")]


def by_file(output: Path) -> dict[str, pa.Table]:
    """The output parts, each input file's rows in input order."""
    table = pq.read_table(output).sort_by([("source_file", "ascending"),
                                           ("source_row", "ascending")])  # fmt: skip
    names = table.column("source_file").to_pylist()
    return {name: table.filter(pc.equal(table["source_file"], name))
            for name in dict.fromkeys(names)}  # fmt: skip


def test_a_local_run_scores_every_row_once_as_predict_input_does(
    local_ray: None, tmp_path: Path
) -> None:
    files = write_inputs(tmp_path / "in")
    options = ScoringOptions(chunk_size=16)
    summary = score_with_ray(None, tmp_path / "in", tmp_path / "out", options, workers=2)
    assert summary.rows_read == len(TEXTS) and summary.rows_flagged == 4
    assert summary.problems == {"wrong number of fields": 1, "empty text": 1,
                                "text is not a string (list)": 1, "invalid JSON": 1}  # fmt: skip
    parts = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert parts[0] == "part-00000-000000.parquet" and len(parts) == 5 + 5 + 4
    scored = by_file(tmp_path / "out")
    assert list(scored) == [str(f) for f in files]
    predictor = load_predictor(BUNDLED_MODEL_DIR)
    for file in files:  # the same rows, values, flags and probabilities, to the last digit
        single = tmp_path / f"{file.name}.parquet"
        score_file(predictor, file, single, options)
        rows = scored[str(file)]
        assert rows.column("source_row").to_pylist() == list(range(rows.num_rows))
        assert rows.drop_columns(SOURCE).to_pylist() == pq.read_table(single).to_pylist()


def test_an_output_folder_with_files_in_it_is_refused(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="must be a new or empty folder"):
        score_with_ray(None, tmp_path / "in", tmp_path / "out")
    with pytest.raises(DataError, match="no column 'body'"):
        score_with_ray(None, tmp_path / "in", tmp_path / "new", ScoringOptions(text_column="body"))
    wide = ScoringOptions(long_reviews="window", window_stride=401)  # the bundled model reads 400
    with pytest.raises(DataError, match="--window-stride 401 is longer than a window"):
        score_with_ray(None, tmp_path / "in", tmp_path / "new", wide)
    assert not (tmp_path / "new").exists()  # refused before Ray starts or any part is written


def map_workers() -> list[int]:
    """The process ids of Ray Data's scoring actors (their process title names them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::MapWorker(MapBatches(_ChunkWorker))"):
            found.append(int(pid))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    local_ray: None, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": range(len(TEXTS) * 2), "text": TEXTS * 2}), source)
    output = tmp_path / "out"
    killed: list[tuple[int, int]] = []  # (pid, parts written when it was killed)

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 300
        while not list(output.glob("part-*")) and time.monotonic() < deadline:
            time.sleep(0.005)
        pid = map_workers()[0]
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, len(list(output.glob("part-*")))))

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    options = ScoringOptions(chunk_size=8)  # 50 chunks
    summary = score_with_ray(None, source, output, options, workers=2)
    killer.join()
    assert killed and killed[0][1] < 50, "the worker must die while chunks are left"
    assert not Path(f"/proc/{killed[0][0]}").exists()
    rows = pq.read_table(output)
    assert summary.rows_read == rows.num_rows == len(TEXTS) * 2
    assert sorted(rows.column("source_row").to_pylist()) == list(range(len(TEXTS) * 2))
    assert sorted(rows.column("id").to_pylist()) == list(range(len(TEXTS) * 2))
    assert not [p for p in output.iterdir() if not p.name.startswith("part-")]  # no temporary
    single = tmp_path / "single.parquet"
    score_file(load_predictor(BUNDLED_MODEL_DIR), source, single, options)
    ordered = rows.sort_by("source_row").drop_columns(SOURCE)
    assert ordered.to_pylist() == pq.read_table(single).to_pylist()


def test_without_an_address_it_starts_a_local_ray_and_stops_it(tmp_path: Path) -> None:
    ray.shutdown()
    (tmp_path / "in.txt").write_text("a wonderful film\n\nan awful film\n", encoding="utf-8")
    summary = score_with_ray(None, tmp_path / "in.txt", tmp_path / "out", workers=1)
    assert (summary.rows_read, summary.rows_scored, summary.problems) == (3, 2, {"empty text": 1})
    assert not ray.is_initialized()
