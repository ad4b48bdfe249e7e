"""evaluate: metrics on labelled files, folders and generated data, read as training reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.sources import read_split
from rnn_sentiment.errors import DataError
from rnn_sentiment.inference.evaluate import evaluate
from rnn_sentiment.inference.predictor import Predictor

# Raw reviews: HTML breaks and all, as a file holds them; the model's pipeline prepares them.
LABELLED = [
    ("The acting was not good.", "negative"),
    ("The story was absolutely brilliant<br /><br />and the acting was wonderful.", "positive"),
    ("not bad at all", "positive"),
    ("awful, boring and long", "negative"),
    ("The acting was wonderful but the plot was a total mess.", "negative"),
    ("A joy", "positive"),
    ("i loved it", "negative"),  # mislabelled on purpose: accuracy is not 1
]
TEXTS = [text for text, _ in LABELLED]
LABELS = [label for _, label in LABELLED]


def expected_accuracy(predictor: Predictor, texts: list[str], labels: list[str]) -> float:
    guess = predictor.score(texts).argmax(1)
    truth = [predictor.label_names.index(label) for label in labels]
    return float(np.mean(guess == np.array(truth)))


def write_labelled(folder: Path, kind: str, texts: list[str], labels: list[str]) -> Path:
    """The reviews in one format, with columns ``review`` and ``label`` where it has columns."""
    rows = [{"review": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    if kind == "csv":
        import csv

        path = folder / "test.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["review", "label"])
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "test.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    elif kind == "jsonl":
        path = folder / "test.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path = folder / "test.json"
        path.write_text(json.dumps(rows, indent=1))
    elif kind == "fasttext":
        path = folder / "test.txt"
        path.write_text(
            "".join(f"__label__{lab} {t}\n" for t, lab in zip(texts, labels, strict=True))
        )
    else:
        path = folder / "aclImdb" / "test"
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            (path / label[:3]).mkdir(parents=True, exist_ok=True)
            (path / label[:3] / f"{i}_5.txt").write_text(text)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl", "json", "fasttext", "folder"])
def test_metrics_of_every_format_match_the_model(
    predictor: Predictor, tmp_path: Path, kind: str
) -> None:
    path = write_labelled(tmp_path, kind, TEXTS, LABELS)
    metrics = evaluate(predictor, str(path))
    assert metrics["n"] == len(TEXTS) and metrics["unscored"] == 0
    assert metrics["split"] is None  # a file, or one pos/neg folder, is read whole
    assert metrics["accuracy"] == pytest.approx(expected_accuracy(predictor, TEXTS, LABELS))
    assert 0 < metrics["accuracy"] < 1
    assert sum(map(sum, metrics["confusion_matrix"])) == len(TEXTS)


def test_evaluate_and_calibrate_report_progress(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # IMDB's 25,000 test reviews took 2 min 21 s with the bundled model and printed nothing.
    from contextlib import contextmanager

    from rnn_sentiment import console
    from rnn_sentiment.callbacks import ScoringCallback
    from rnn_sentiment.inference.evaluate import calibrate
    from tests.helpers import invoke

    class Seen(ScoringCallback):
        def __init__(self) -> None:
            self.calls: list[tuple[str, int | None]] = []

        def on_start(self, total_rows: int | None) -> None:
            self.calls.append(("start", total_rows))

        def on_chunk(self, rows_done: int, fraction: float | None) -> None:
            self.calls.append(("chunk", rows_done))

    path = write_labelled(tmp_path, "parquet", TEXTS * 3, LABELS * 3)  # 7 row groups of 3
    seen = Seen()
    assert evaluate(predictor, str(path), callback=seen)["n"] == len(TEXTS) * 3
    assert seen.calls == [("start", 21)] + [("chunk", rows) for rows in range(3, 22, 3)]
    from rnn_sentiment.data.readers import TableReader
    from rnn_sentiment.inference.scoring import total_rows

    assert total_rows(TableReader({"text": ["a", "b"]}, "a hub split")) == 2  # a bar with an ETA
    with pytest.raises(DataError, match="callback must be a ScoringCallback instance"):
        evaluate(predictor, str(path), callback=print)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="callback must be a ScoringCallback instance"):
        calibrate(predictor.path, str(path), callback=Seen)  # type: ignore[arg-type]

    @contextmanager
    def every_chunk(quiet: bool = False) -> Any:  # the line the CLI prints every 10 s
        yield console.ScoringProgress(quiet, every_seconds=0.0)

    monkeypatch.setattr(console, "scoring_progress", every_chunk)
    code, out, err = invoke("evaluate", str(predictor.path), "--data", str(path))
    assert code == 0 and f"scored {len(TEXTS) * 3} rows (100%)" in err, err
    assert "accuracy" in out and "scored" not in out  # stdout holds the metrics alone


def test_csv_and_parquet_copies_give_the_same_metrics(predictor: Predictor, tmp_path: Path) -> None:
    texts, labels = TEXTS * 3, LABELS * 3
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from_csv = evaluate(predictor, str(write_labelled(tmp_path / "a", "csv", texts, labels)))
    from_parquet = evaluate(
        predictor, str(write_labelled(tmp_path / "b", "parquet", texts, labels))
    )
    drop = ("source",)
    assert {k: v for k, v in from_csv.items() if k not in drop} == {
        k: v for k, v in from_parquet.items() if k not in drop
    }


def test_training_and_evaluate_read_the_same_text_column(
    predictor: Predictor, tmp_path: Path
) -> None:
    # 'sentence' holds the opposite of the review: reading it would flip the accuracy.
    opposite = ["I hated it" if lab == "positive" else "I loved it" for lab in LABELS]
    rows = [
        {"sentence": s, "review": t, "label": lab}
        for s, t, lab in zip(opposite, TEXTS, LABELS, strict=True)
    ]
    path = tmp_path / "both.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trained_on, _ = read_split(str(path), "train", DataConfig(source=str(path)))
    assert trained_on == TEXTS
    accuracy = evaluate(predictor, str(path))["accuracy"]
    assert accuracy == pytest.approx(expected_accuracy(predictor, TEXTS, LABELS))
    assert accuracy != pytest.approx(expected_accuracy(predictor, opposite, LABELS))


def test_unscored_and_unlabelled_rows(predictor: Predictor, tmp_path: Path) -> None:
    rows: list[Any] = [{"review": t, "stars": lab} for t, lab in zip(TEXTS, LABELS, strict=True)]
    rows += [
        {"review": "", "stars": "positive"},  # labelled, no text: unscored
        {"review": None, "stars": "negative"},  # labelled, missing text: unscored
        {"stars": "negative"},  # labelled, no text key: unscored
        {"review": "a fine film", "stars": -1},  # unlabelled: skipped
        {"review": "a fine film", "stars": ""},  # unlabelled: skipped
    ]
    # unreadable: unscored too (their labels, if any, are lost with them), never dropped silently
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2]"]
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    metrics = evaluate(predictor, str(path), label_column="stars")
    assert metrics["n"] == len(TEXTS) and metrics["unscored"] == 5
    assert metrics["accuracy"] == pytest.approx(expected_accuracy(predictor, TEXTS, LABELS))
    path.write_text("\n".join(lines[len(TEXTS) :]) + "\n")  # only the unscored and unlabelled
    with pytest.raises(DataError, match="has no labelled reviews with text \\(5 labelled rows"):
        evaluate(predictor, str(path), label_column="stars")


def test_a_row_too_long_to_read_is_unscored_not_dropped(
    predictor: Predictor, tmp_path: Path
) -> None:
    # Found by a red-team pass: the reader blanks a row over its cap, label included, and
    # evaluate skipped it as unlabelled: "n" shrank with nothing on stderr.
    from rnn_sentiment.data.readers import MAX_FIELD_CHARS
    from tests.helpers import invoke

    path = write_labelled(tmp_path, "csv", TEXTS, LABELS)
    with path.open("a") as handle:
        handle.write('"' + "great " * (MAX_FIELD_CHARS // 5) + '",positive\n')
    metrics = evaluate(predictor, str(path))
    assert metrics["n"] == len(TEXTS) and metrics["unscored"] == 1
    code, out, err = invoke("evaluate", str(predictor.path), "--data", str(path))
    assert code == 0 and "1 rows left out (unscored)" in out, out + err


def test_a_fifo_as_data_and_a_file_as_model_say_what_they_are(
    predictor: Predictor, tmp_path: Path
) -> None:
    # Found by a red-team pass: both said "not found", though the path exists.
    from rnn_sentiment.errors import CheckpointError

    os.mkfifo(tmp_path / "reviews.csv")
    with pytest.raises(DataError, match="is not a regular file or a folder"):
        evaluate(predictor, str(tmp_path / "reviews.csv"))
    path = write_labelled(tmp_path, "csv", TEXTS, LABELS)
    with pytest.raises(CheckpointError, match="config.yaml is a file, not a model directory"):
        evaluate(predictor.path / "config.yaml", str(path))


def test_column_errors_name_the_command_line_option(predictor: Predictor, tmp_path: Path) -> None:
    path = write_labelled(tmp_path, "csv", TEXTS, LABELS)
    # Found by a red-team pass: a split of a single file read all of it, named as that split.
    with pytest.raises(DataError, match="--split bogus: .* is a single file, .* drop --split"):
        evaluate(predictor, str(path), split="bogus")
    # Found by a red-team pass: the labels were scored as the reviews, exit 0.
    with pytest.raises(DataError, match="both be read from the column 'label'; pass --text-col"):
        evaluate(predictor, str(path), text_column="label")
    cfg = DataConfig(source=str(path), text_column="label")
    with pytest.raises(DataError, match="both be read from .* pass data.text_column=NAME"):
        read_split(str(path), "train", cfg)
    with pytest.raises(DataError, match="did you mean --label-column label"):
        evaluate(predictor, str(path), label_column="lable")
    with pytest.raises(DataError, match="did you mean --text-column review"):
        evaluate(predictor, str(path), text_column="reveiw")
    (tmp_path / "plain.txt").write_text("no labels here\n")
    with pytest.raises(DataError, match="no column 'label' in .*plain.txt; columns are: text"):
        evaluate(predictor, str(tmp_path / "plain.txt"))
    (tmp_path / "unlabelled.csv").write_text("review,label\ngood,-1\n")
    with pytest.raises(DataError, match="has no labelled reviews"):
        evaluate(predictor, str(tmp_path / "unlabelled.csv"))


def test_the_runs_own_test_split_and_generated_data(predictor: Predictor) -> None:
    builtin = evaluate(predictor, split="test")  # the built-in corpus, read from its JSONL file
    assert builtin["n"] == 500 and builtin["source"] == "builtin" and builtin["split"] == "test"
    texts, labels = read_split("builtin", "test", predictor.run.config.data)
    assert builtin["accuracy"] == pytest.approx(expected_accuracy(predictor, texts, labels))
    generated = evaluate(predictor, "long-range", "validation")  # built in memory, then chunked
    texts, labels = read_split("long-range", "validation", predictor.run.config.data)
    assert generated["n"] == len(texts) > 0
    assert generated["accuracy"] == pytest.approx(expected_accuracy(predictor, texts, labels))


def test_calibration_comes_from_the_models_probabilities_and_plots(
    predictor: Predictor, tmp_path: Path
) -> None:
    from rnn_sentiment.metrics import calibration_metrics
    from tests.helpers import invoke

    path = write_labelled(tmp_path, "csv", TEXTS, LABELS)
    metrics = evaluate(predictor, str(path))
    truth = [predictor.label_names.index(label) for label in LABELS]
    expected = calibration_metrics(predictor.score(TEXTS), truth)
    assert metrics["calibration"]["ece"] == pytest.approx(expected["ece"], abs=1e-6)
    assert metrics["calibration"]["brier"] == pytest.approx(expected["brier"], abs=1e-6)
    assert sum(b["count"] for b in metrics["calibration"]["reliability"]) == len(TEXTS)
    code, out, _ = invoke("evaluate", str(predictor.path), "--data", str(path),
                          "--plot", str(tmp_path / "reliability.png"))  # fmt: skip
    assert code == 0 and "calibration: ECE" in out
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_the_plot_replaces_a_link_and_refuses_a_fifo(predictor: Predictor, tmp_path: Path) -> None:
    # Found by a red-team pass: --plot wrote through a link into the file it pointed at, and a
    # FIFO or /dev/full failed with an internal error after -o had been written.
    from tests.helpers import invoke

    path = write_labelled(tmp_path, "csv", TEXTS, LABELS)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "link.svg").symlink_to(victim)
    code, _, err = invoke("evaluate", str(predictor.path), "--data", str(path),
                          "--plot", str(tmp_path / "link.svg"))  # fmt: skip
    assert code == 0, err
    assert victim.read_text() == "keep me" and not (tmp_path / "link.svg").is_symlink()
    assert (tmp_path / "link.svg").read_text().lstrip().startswith("<?xml")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "full.png").symlink_to("/dev/full")
    for target in ("fifo.png", "full.png"):
        outputs = ["-o", str(tmp_path / "m.json"), "--plot", str(tmp_path / target)]
        code, _, err = invoke("evaluate", str(predictor.path), "--data", str(path), *outputs)
        assert code == 2 and "is not a regular file" in err and err.count("\n") == 1, err
        assert not (tmp_path / "m.json").exists()


@pytest.fixture(scope="module")
def calibrated_run(builtin_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of :func:`builtin_run` with a temperature (its own validation split is too small
    to fit one), so that its exported copy carries ``calibration.json``."""
    import shutil

    from rnn_sentiment.checkpoint import save_calibration

    run_dir = Path(shutil.copytree(builtin_run, tmp_path_factory.mktemp("calibrated") / "run"))
    save_calibration(run_dir, {"temperature": 1.7, "from": "a test"})
    return run_dir


@pytest.fixture(scope="module")
def exported_run(calibrated_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`calibrated_run` exported to ONNX."""
    pytest.importorskip("onnxruntime", reason="exported models need the onnx extra: '.[onnx]'")
    from rnn_sentiment.inference.export import export_model

    return export_model(calibrated_run, tmp_path_factory.mktemp("exported") / "model")


def test_an_exported_model_evaluates_as_its_run(
    calibrated_run: Path, exported_run: Path, tmp_path: Path
) -> None:
    from rnn_sentiment.data.files import open_reader
    from rnn_sentiment.inference.evaluate import evaluate_reader
    from rnn_sentiment.inference.exported import ExportedPredictor
    from tests.helpers import invoke

    # The run by name, as export.json gives it: never a path on the machine that exported it.
    assert json.loads((exported_run / "calibration.json").read_text()) == {
        "temperature": 1.7,
        "from": calibrated_run.name,
    }
    path = write_labelled(tmp_path, "csv", TEXTS * 5, LABELS * 5)
    from_run = evaluate(calibrated_run, str(path))
    from_export = evaluate(exported_run, str(path))
    for key in ("accuracy", "n", "confusion_matrix", "unscored", "source", "split"):
        assert from_export[key] == from_run[key]
    assert from_export["model"] == str(exported_run)
    for block in ("calibration", "uncalibrated"):  # the run's temperature travelled with it
        for key in ("temperature", "ece", "brier", "log_loss"):
            assert from_export[block].get(key) == pytest.approx(from_run[block].get(key), abs=1e-4)
    cfg = DataConfig.model_validate({"source": str(path)})
    scored = []
    for model in (Predictor.from_dir(calibrated_run), ExportedPredictor.from_dir(exported_run)):
        reader = open_reader(str(path), "csv")
        try:
            scored.append(evaluate_reader(model, reader, cfg))
        finally:
            reader.close()
    (run_labels, run_probs, _), (export_labels, export_probs, _) = scored
    assert run_labels == export_labels
    np.testing.assert_allclose(export_probs, run_probs, atol=1e-4)
    code, out, err = invoke("evaluate", str(exported_run), "--data", str(path), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == from_run["accuracy"]


def test_an_exported_model_needs_the_data_to_evaluate_on(exported_run: Path) -> None:
    # export.json does not record the run's data (its paths mean nothing where the model goes)
    with pytest.raises(DataError, match="is an exported model, which does not record the data"):
        evaluate(exported_run)
    from tests.helpers import invoke

    code, _, err = invoke("evaluate", str(exported_run))
    assert code == 2 and "pass --data" in err


TORCH_FREE_EVALUATE = """
import json, sys
from rnn_sentiment.inference.evaluate import evaluate
metrics = evaluate(sys.argv[1], sys.argv[2])
print(json.dumps({"accuracy": metrics["accuracy"], "torch": "torch" in sys.modules}))
"""


def test_evaluating_an_exported_model_never_imports_torch(
    calibrated_run: Path, exported_run: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    path = write_labelled(tmp_path, "jsonl", TEXTS, LABELS)
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_EVALUATE, str(exported_run), str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["torch"] is False
    assert out["accuracy"] == evaluate(calibrated_run, str(path))["accuracy"]
