"""Every entry point scores a review the same way: one text pipeline, owned by the model directory.

The same awkward reviews (HTML breaks, non-ASCII, very long, odd whitespace, emoji, a literal
special token) go through training's validation, the Python API, ``evaluate``, ``--explain``,
``compare``, every form of ``predict`` (argv in a real process, stdin, ``--file``, ``--input``
in each file format, ``--shard``, ``--engine ray``; the engines' ``BatchScorer``), an exported
model (``evaluate`` included), and the server (``POST /predict`` alone and
micro-batched with other requests, ``POST /explain``), and every path must give the same
probabilities up to float rounding (file outputs round to 6 decimals). When you add an entry
point, add it here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnn_sentiment import classify, evaluate, load_model
from rnn_sentiment.compare import measure
from rnn_sentiment.config import load_config
from rnn_sentiment.inference.batch import BatchScorer
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.training.loop import train
from tests.helpers import NEGATIVE, POSITIVE, invoke, tiny_overrides

AWKWARD = [
    "A dull, slow start and far too long.<br /><br />Still, the ending was great and I loved it.",
    "great acting<BR>but a dull plot<br/>",
    "Ein großartiger Film: très émouvant, naïve, ça déchire. Ｆｕｌｌｗｉｄｔｈ ＧＯＯＤ",
    " ".join(["the plot was dull but the acting was great and i loved it"] * 120),
    "   i   loved\tit   ",
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    "a terrible film [UNK] [PAD] <b>bold</b> &amp; <br >",
    "!!!",
]
LABELS = [1, 1, 1, 1, 1, 0, 0, 1]
TOLERANCE = 2e-5  # fp32 rounding between engines, and 6-decimal file outputs


@pytest.fixture(scope="module")
def awkward_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny model with ``data.clean_html`` on, whose validation and test splits are AWKWARD."""
    tmp = tmp_path_factory.mktemp("awkward")
    data = tmp / "data"
    data.mkdir()
    rows = [(t, 1) for t in POSITIVE * 8] + [(t, 0) for t in NEGATIVE * 8]
    rows += [(t.replace(" ", "<br />", 1), y) for t, y in rows[:16]]
    write_jsonl(data / "train.jsonl", rows)
    for split in ("validation", "test"):
        write_jsonl(data / f"{split}.jsonl", list(zip(AWKWARD, LABELS, strict=True)))
    overrides = tiny_overrides(
        tmp, **{"data.source": str(data), "data.validation_split": "validation",
                "data.test_split": "test", "data.clean_html": "true", "training.epochs": 3,
                "tokenizer.max_length": 64},
    )  # fmt: skip
    result = train(load_config(None, overrides))
    return result.run_dir, result.metrics


@pytest.fixture(scope="module", params=["run", "exported"])
def model_dir(request: pytest.FixtureRequest, awkward_run: tuple[Path, dict]) -> Path:
    """The awkward run, and the same run exported to ONNX (scored by onnxruntime, no torch):
    every command-line path must score both as the run's Predictor does."""
    if request.param == "run":
        return awkward_run[0]
    folder = request.getfixturevalue("tmp_path_factory").mktemp("exported")
    return export_model(awkward_run[0], folder / "model")


def write_jsonl(path: Path, rows: list[tuple[str, int]]) -> None:
    lines = (json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows)
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def reference(awkward_run: tuple[Path, dict]) -> np.ndarray:
    probs = Predictor.from_dir(awkward_run[0]).predict_proba(AWKWARD)
    assert probs.shape == (len(AWKWARD), 2)
    return probs


def positive(rows: list[dict]) -> np.ndarray:
    return np.asarray([float(row["p_positive"]) for row in rows])


def test_html_breaks_matter_to_this_model(awkward_run: tuple[Path, dict]) -> None:
    # Otherwise the test could not fail: a path that skipped cleaning would score the same.
    predictor = Predictor.from_dir(awkward_run[0])
    cleaned = AWKWARD[0].replace("<br /><br />", "  ")
    raw = predictor.run.pipeline.untruncated.tokenizer.encode(AWKWARD[0]).ids
    assert predictor.run.pipeline.encode([AWKWARD[0]])[0].tolist() != raw[:64]
    np.testing.assert_allclose(
        predictor.predict_proba([AWKWARD[0]]), predictor.predict_proba([cleaned]), atol=1e-6
    )


def test_python_api_paths(awkward_run: tuple[Path, dict], reference: np.ndarray) -> None:
    run_dir = awkward_run[0]
    predictor = Predictor.from_dir(run_dir)
    by_predict = [p.probabilities["positive"] for p in predictor.predict(AWKWARD)]
    by_stream = [p.probabilities["positive"] for p in predictor.iter_predict(iter(AWKWARD), 3)]
    by_classify = [p.probabilities["positive"] for p in classify(AWKWARD, str(run_dir))]
    by_load = [p.probabilities["positive"] for p in load_model(str(run_dir)).predict(AWKWARD)]
    one_by_one = [predictor.predict_proba([text])[0, 1] for text in AWKWARD]
    in_a_crowd = predictor.predict_proba(AWKWARD * 10)[: len(AWKWARD), 1]  # stepwise engine
    explained = [predictor.explain(text).probabilities["positive"] for text in AWKWARD]
    for got in (by_predict, by_stream, by_classify, by_load, one_by_one, in_a_crowd, explained):
        np.testing.assert_allclose(got, reference[:, 1], atol=TOLERANCE)


def test_training_validation_and_evaluate(
    awkward_run: tuple[Path, dict], reference: np.ndarray
) -> None:
    run_dir, metrics = awkward_run
    truth = np.asarray(LABELS)
    loss = float(-np.log(reference[np.arange(len(LABELS)), truth]).mean())
    accuracy = float((reference.argmax(axis=1) == truth).mean())
    assert metrics["validation"]["loss"] == pytest.approx(loss, abs=1e-4)
    assert metrics["validation"]["accuracy"] == pytest.approx(accuracy)
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy)
    assert evaluate(run_dir, split="test")["accuracy"] == pytest.approx(accuracy)
    code, out, err = invoke("evaluate", str(run_dir), "--split", "validation", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(accuracy)


def test_compare_measures_with_the_same_pipeline(
    awkward_run: tuple[Path, dict], reference: np.ndarray
) -> None:
    run_dir, metrics = awkward_run
    config = load_config(run_dir / "config.yaml")
    outcome = measure(config, run_dir, metrics)
    correct = sum(b["accuracy"] * b["n"] for b in outcome.by_length.values() if b["n"])
    assert sum(b["n"] for b in outcome.by_length.values()) == len(AWKWARD)
    assert correct / len(AWKWARD) == pytest.approx(
        float((reference.argmax(axis=1) == np.asarray(LABELS)).mean())
    )


def test_cli_texts_stdin_file_and_explain(
    model_dir: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    run = str(model_dir)
    single_line = [t for t in AWKWARD if "\n" not in t]
    expected = reference[[AWKWARD.index(t) for t in single_line], 1]
    code, out, err = invoke("predict", "-m", run, "--format", "json", *single_line)
    assert code == 0, err
    np.testing.assert_allclose(positive(json.loads(out)), expected, atol=TOLERANCE)
    code, out, err = invoke("predict", "-m", run, "--format", "jsonl", "-",
                            stdin="\n".join(single_line) + "\n")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    np.testing.assert_allclose(positive(rows), expected, atol=TOLERANCE)
    (tmp_path / "reviews.txt").write_text("\n".join(single_line) + "\n", encoding="utf-8")
    code, out, err = invoke("predict", "-m", run, "--format", "csv", "--file",
                            str(tmp_path / "reviews.txt"))  # fmt: skip
    assert code == 0, err
    np.testing.assert_allclose(positive(list(csv.DictReader(out.splitlines()))), expected,
                               atol=TOLERANCE)  # fmt: skip
    code, out, err = invoke("predict", "-m", run, "--explain", "--format", "json", *single_line)
    assert code == 0, err
    explained = [e["probabilities"]["positive"] for e in json.loads(out)]
    np.testing.assert_allclose(explained, expected, atol=TOLERANCE)


def test_cli_argv_in_a_real_process(model_dir: Path, reference: np.ndarray) -> None:
    # argv as a shell passes it: bytes decoded by Python itself, not by a test runner. With an
    # exported model the process must never import torch.
    env = {**os.environ, "PYTHONUTF8": "1"}
    cli = ("import runpy, sys; sys.argv[0] = 'rnn-sentiment'\n"
           "try: runpy.run_module('rnn_sentiment', run_name='__main__')\n"
           "finally: print('torch' in sys.modules, file=sys.stderr)")  # fmt: skip
    command = [sys.executable, "-c", cli, "predict", "-m", str(model_dir), "--format", "json",
               *AWKWARD]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(positive(json.loads(done.stdout)), reference[:, 1], atol=TOLERANCE)
    assert done.stderr.splitlines()[-1] == str(awkward_run_dir(model_dir))


def write_inputs(folder: Path) -> list[Path]:
    """AWKWARD in every input format batch scoring reads."""
    ids = list(range(len(AWKWARD)))
    with (folder / "in.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "review"), *zip(ids, AWKWARD, strict=True)])
    with gzip.open(folder / "in.tsv.gz", "wt", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t").writerows(
            [("id", "text"), *zip(ids, AWKWARD, strict=True)]
        )
    rows = [{"id": i, "text": t} for i, t in zip(ids, AWKWARD, strict=True)]
    (folder / "in.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    pq.write_table(pa.table({"id": ids, "text": AWKWARD}), folder / "in.parquet")
    (folder / "in.txt").write_text("\n".join(AWKWARD) + "\n", encoding="utf-8")
    texts = folder / "texts"
    texts.mkdir()
    for i, text in enumerate(AWKWARD):
        (texts / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    return [folder / n for n in ("in.csv", "in.tsv.gz", "in.jsonl", "in.parquet", "in.txt")] + [
        texts
    ]


@pytest.mark.parametrize("output", ["out.csv", "out.jsonl", "out.parquet"])
def test_batch_scoring_every_format(
    model_dir: Path, reference: np.ndarray, tmp_path: Path, output: str
) -> None:
    for source in write_inputs(tmp_path):
        target = tmp_path / f"{source.name}-{output}"
        code, _, err = invoke("predict", "-m", str(model_dir), "--input", str(source),
                              "--output", str(target), "-q")  # fmt: skip
        assert code == 0, err
        if output.endswith(".parquet"):
            rows = pq.read_table(target).to_pylist()
        elif output.endswith(".csv"):
            rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
        else:
            rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        np.testing.assert_allclose(
            positive(rows), reference[:, 1], atol=TOLERANCE, err_msg=str(source)
        )


def test_undecodable_bytes_score_alike_from_a_file_and_from_python(
    awkward_run: tuple[Path, dict], tmp_path: Path
) -> None:
    raw = b"caf\xe9 was a terrible film<br />i hated it"
    (tmp_path / "bad.csv").write_bytes(b"text\n" + raw + b"\n")
    out = tmp_path / "o.jsonl"
    code, _, err = invoke("predict", "-m", str(awkward_run[0]), "--input",
                          str(tmp_path / "bad.csv"), "--output", str(out))  # fmt: skip
    assert code == 0, err
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["error"] == "invalid UTF-8 replaced"
    escaped = raw.decode("utf-8", "surrogateescape")  # what Python's argv decoding gives
    probs = Predictor.from_dir(awkward_run[0]).predict_proba([escaped])
    assert row["p_positive"] == pytest.approx(float(probs[0, 1]), abs=TOLERANCE)


def test_the_bundled_model_scores_the_reported_review_alike(tmp_path: Path) -> None:
    # The defect this file guards against: 0.554 negative from `predict TEXT`, 0.956 positive
    # from `predict --input` for this review with the bundled model.
    review = AWKWARD[0]
    code, out, err = invoke("predict", "-m", str(BUNDLED_MODEL_DIR), "--format", "json", review)
    assert code == 0, err
    from_argv = json.loads(out)[0]
    (tmp_path / "one.csv").write_text(f'text\n"{review}"\n', encoding="utf-8")
    out = tmp_path / "o.jsonl"
    code, _, err = invoke("predict", "-m", str(BUNDLED_MODEL_DIR), "--input",
                          str(tmp_path / "one.csv"), "--output", str(out))  # fmt: skip
    assert code == 0, err
    from_file = json.loads(out.read_text(encoding="utf-8"))
    assert from_argv["label"] == from_file["label"] == "positive"
    assert from_argv["p_positive"] == pytest.approx(from_file["p_positive"], abs=TOLERANCE)


LINES = (
    b"\xef\xbb\xbfgreat film\n__label__pos this movie was not good\ngreat film\x0cawful plot\r\n"
)
SAME_LINES = ["great film", "this movie was not good", "great film\x0cawful plot"]


def test_line_inputs_read_alike(awkward_run: tuple[Path, dict], tmp_path: Path) -> None:
    # A byte-order mark, a fastText prefix, a form feed and a CRLF ending: --file, stdin and
    # --input read each line the same way, and the Python API agrees on the texts they read.
    run = str(awkward_run[0])
    (tmp_path / "lines.txt").write_bytes(LINES)
    expected = Predictor.from_dir(run).predict_proba(["\ufeff" + SAME_LINES[0], *SAME_LINES[1:]])
    code, out, err = invoke("predict", "-m", run, "--format", "json", "--file",
                            str(tmp_path / "lines.txt"))  # fmt: skip
    assert code == 0, err
    from_file = json.loads(out)
    assert [row["text"] for row in from_file] == ["great film", *SAME_LINES[1:]]
    code, out, err = invoke("predict", "-m", run, "--format", "json", "-", stdin=LINES)
    assert code == 0, err
    from_stdin = json.loads(out)
    target = tmp_path / "out.jsonl"
    code, _, err = invoke("predict", "-m", run, "--input", str(tmp_path / "lines.txt"),
                          "--output", str(target), "-q")  # fmt: skip
    assert code == 0, err
    from_input = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [row["input_label"] for row in from_input] == [None, "pos", None]
    for rows in (from_file, from_stdin, from_input):
        np.testing.assert_allclose(positive(rows), expected[:, 1], atol=TOLERANCE)


def test_a_lone_surrogate_from_a_json_escape_is_replaced_everywhere(
    awkward_run: tuple[Path, dict], tmp_path: Path
) -> None:
    # "\ud83d" is half of a cut emoji: valid JSON, valid UTF-8 file, not a valid character.
    (tmp_path / "cut.jsonl").write_text('{"text": "a wonderful film \\ud83d"}\n', encoding="utf-8")
    target = tmp_path / "out.jsonl"
    code, _, err = invoke("predict", "-m", str(awkward_run[0]), "--input",
                          str(tmp_path / "cut.jsonl"), "--output", str(target))  # fmt: skip
    assert code == 0, err
    row = json.loads(target.read_text(encoding="utf-8"))
    predictor = Predictor.from_dir(awkward_run[0])
    probs = predictor.predict_proba(["a wonderful film \ud83d", "a wonderful film \ufffd"])
    assert probs[0, 1] == pytest.approx(probs[1, 1], abs=1e-6)
    assert row["p_positive"] == pytest.approx(float(probs[0, 1]), abs=TOLERANCE)
    assert row["error"] == "invalid UTF-8 replaced"


def test_window_mode_is_honoured_for_texts_too(
    awkward_run: tuple[Path, dict], model_dir: Path
) -> None:
    run = str(model_dir)
    long = AWKWARD[3]
    predictor = Predictor.from_dir(awkward_run[0])
    expected = predictor.score([long], "window")[0, 1]
    assert abs(expected - predictor.score([long])[0, 1]) > 1e-4  # windows read more of it
    code, out, err = invoke("predict", "-m", run, "--format", "json", "--long-reviews",
                            "window", long)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)[0]["p_positive"] == pytest.approx(float(expected), abs=TOLERANCE)


def awkward_run_dir(model_dir: Path) -> bool:
    """Whether ``model_dir`` is a run directory (else an exported one)."""
    return not (model_dir / "model.onnx").exists()


def test_an_exported_model_scores_alike_from_python(model_dir: Path, reference: np.ndarray) -> None:
    predictor = load_model(str(model_dir))
    by_predict = [p.probabilities["positive"] for p in predictor.predict(AWKWARD)]
    by_stream = [p.probabilities["positive"] for p in predictor.iter_predict(iter(AWKWARD), 3)]
    by_classify = [p.probabilities["positive"] for p in classify(AWKWARD, str(model_dir))]
    one_by_one = [predictor.predict_proba([text])[0, 1] for text in AWKWARD]
    in_a_crowd = predictor.predict_proba(AWKWARD * 10)[: len(AWKWARD), 1]
    explained = [predictor.explain(text).probabilities["positive"] for text in AWKWARD]
    for got in (by_predict, by_stream, by_classify, one_by_one, in_a_crowd, explained):
        np.testing.assert_allclose(got, reference[:, 1], atol=TOLERANCE)


def test_evaluate_scores_alike(
    awkward_run: tuple[Path, dict], model_dir: Path, reference: np.ndarray
) -> None:
    # evaluate of the run and of its exported copy (onnxruntime), from Python and the CLI, on
    # the run's own test file (an exported model does not record its data: it is given).
    data = load_config(awkward_run[0] / "config.yaml").data.source
    truth = np.asarray(LABELS)
    accuracy = float((reference.argmax(axis=1) == truth).mean())
    loss = float(-np.log(reference[np.arange(len(LABELS)), truth]).mean())
    metrics = evaluate(model_dir, data, "test")
    assert metrics["accuracy"] == pytest.approx(accuracy) and metrics["n"] == len(AWKWARD)
    assert metrics["calibration"]["log_loss"] == pytest.approx(loss, abs=TOLERANCE)
    code, out, err = invoke("evaluate", str(model_dir), "--data", data, "--split", "validation",
                            "--format", "json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["calibration"]["log_loss"] == pytest.approx(loss, abs=TOLERANCE)


def test_the_server_scores_alike(model_dir: Path, reference: np.ndarray) -> None:
    # rnn-sentiment serve: POST /predict with all reviews at once and one review per request,
    # sent together so that the micro-batcher scores several requests in one call; POST /explain.
    pytest.importorskip("fastapi", reason="the server needs the serve extra: '.[serve]'")
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from rnn_sentiment.inference.models import load_predictor
    from rnn_sentiment.serving.app import ServeSettings, create_app

    app = create_app(load_predictor(model_dir), ServeSettings(batch_wait_ms=20))
    with TestClient(app) as client, ThreadPoolExecutor(len(AWKWARD)) as pool:
        together = client.post("/predict", json={"texts": AWKWARD}).json()["predictions"]
        singles = pool.map(lambda t: client.post("/predict", json={"texts": [t]}), AWKWARD)
        alone = [response.json()["predictions"][0] for response in singles]
        explained = [client.post("/explain", json={"text": t}).json() for t in AWKWARD]
        assert app.state.batcher.batches < 1 + len(AWKWARD)  # some requests shared a call
    for rows in (together, alone, explained):
        got = [row["probabilities"]["positive"] for row in rows]
        np.testing.assert_allclose(got, reference[:, 1], atol=TOLERANCE)


def test_the_batch_scorer_and_a_sharded_run_score_alike(
    model_dir: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    # BatchScorer, what Spark and Ray workers run, on an Arrow table and a pandas DataFrame; and
    # --shard: three shards of the CSV, concatenated, are one run's rows.
    table = pa.table({"id": list(range(len(AWKWARD))), "text": AWKWARD})
    scorer = BatchScorer(model_dir)
    np.testing.assert_allclose(positive(scorer(table).to_pylist()), reference[:, 1],
                               atol=TOLERANCE)  # fmt: skip
    from_pandas = scorer(table.to_pandas())["p_positive"].to_numpy()
    np.testing.assert_allclose(from_pandas, reference[:, 1], atol=TOLERANCE)
    source = write_inputs(tmp_path)[0]  # in.csv
    shards = []
    for k in range(3):
        part = tmp_path / f"shard-{k}.csv"
        code, _, err = invoke("predict", "-m", str(model_dir), "--input", str(source),
                              "--output", str(part), "--shard", f"{k}/3", "--chunk-size", "3",
                              "-q")  # fmt: skip
        assert code == 0, err
        shards.append(part.read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO("".join(shards))))
    np.testing.assert_allclose(positive(rows), reference[:, 1], atol=TOLERANCE)


@pytest.mark.ray
def test_the_ray_engine_scores_alike(
    model_dir: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    source = write_inputs(tmp_path)[2]  # in.jsonl
    code, _, err = invoke("predict", "-m", str(model_dir), "--input", str(source), "--output",
                          str(tmp_path / "scored"), "--engine", "ray", "--workers", "1",
                          "-q")  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(tmp_path / "scored").sort_by("source_row").to_pylist()
    np.testing.assert_allclose(positive(rows), reference[:, 1], atol=TOLERANCE)
