"""Temperature scaling: fitted on validation at the end of training, stored in the run directory,
applied on every path that gives probabilities, refitted by `calibrate`, reported by `evaluate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnn_sentiment.checkpoint import load_run, read_metrics, save_calibration
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.evaluate import evaluate
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.exported import ExportedPredictor
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.inference.scoring import score_file
from rnn_sentiment.metrics import with_temperature
from rnn_sentiment.runfiles import CALIBRATION_FILE
from tests.helpers import NEGATIVE, POSITIVE, invoke

TEXTS = [*POSITIVE[:3], *NEGATIVE[:3], "This movie is not good", "not bad at all"]
TEMPERATURE = 3.0


@pytest.fixture(scope="module")
def hot_run(builtin_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's run with a strong temperature, so a path that skips it cannot pass."""
    run_dir = tmp_path_factory.mktemp("calibrated") / "run"
    shutil.copytree(builtin_run, run_dir)
    save_calibration(run_dir, {"temperature": TEMPERATURE, "fitted_on": "test fixture"})
    return run_dir


@pytest.fixture(scope="module")
def raw(builtin_run: Path) -> np.ndarray:
    """The network's own probabilities (temperature 1)."""
    from dataclasses import replace

    run = load_run(builtin_run)
    return Predictor(replace(run, temperature=1.0)).predict_proba(TEXTS)


def test_training_fits_a_temperature_on_validation(builtin_run: Path) -> None:
    metrics = read_metrics(builtin_run)
    calibration = metrics["calibration"]
    assert calibration["fitted_on"] == "validation"
    assert calibration["reviews"] == metrics["validation"]["n"]
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"] + 1e-9
    stored = json.loads((builtin_run / CALIBRATION_FILE).read_text())
    assert stored["temperature"] == calibration["temperature"] == load_run(builtin_run).temperature


def test_every_path_applies_the_temperature(hot_run: Path, raw: np.ndarray, tmp_path: Path) -> None:
    expected = with_temperature(raw, TEMPERATURE)
    assert (expected.argmax(1) == raw.argmax(1)).all()  # labels never change
    assert np.abs(expected - raw).max() > 0.01  # and the probabilities do
    predictor = Predictor.from_dir(hot_run)
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-5)
    windows = predictor.score(TEXTS, "window")  # short reviews: one window each
    np.testing.assert_allclose(windows, expected, atol=1e-5)
    explained = predictor.explain(TEXTS[6]).probabilities
    assert explained["positive"] == pytest.approx(expected[6, 1], abs=1e-5)
    exported = export_model(hot_run, tmp_path / "exported")
    onnx = ExportedPredictor.from_dir(exported)
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), expected, atol=1e-4)
    assert onnx.explain(TEXTS[6]).probabilities["positive"] == pytest.approx(
        expected[6, 1], abs=1e-4
    )
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    score_file(predictor, tmp_path / "in.txt", tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["p_positive"] for r in rows], expected[:, 1], atol=1e-5)
    for model in (hot_run, exported):
        code, out, err = invoke("predict", "-m", str(model), "--format", "json", *TEXTS)
        assert code == 0, err
        got = [row["p_positive"] for row in json.loads(out)]
        np.testing.assert_allclose(got, expected[:, 1], atol=1e-4)


def test_evaluate_reports_calibration_with_and_without_the_temperature(
    hot_run: Path, tmp_path: Path
) -> None:
    data = tmp_path / "labelled.jsonl"
    rows = [{"text": t, "label": "positive"} for t in POSITIVE] + [
        {"text": t, "label": "negative"} for t in NEGATIVE
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = evaluate(hot_run, str(data))
    assert metrics["calibration"]["temperature"] == TEMPERATURE
    assert metrics["uncalibrated"]["log_loss"] != pytest.approx(
        metrics["calibration"]["log_loss"], abs=1e-4
    )
    code, out, _ = invoke("evaluate", str(hot_run), "--data", str(data))
    assert code == 0 and "temperature 3.000" in out and "without it:" in out


def test_calibrate_refits_on_held_out_data_and_predictions_follow(
    hot_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(hot_run, run_dir)
    data = tmp_path / "heldout.jsonl"
    rows = [{"text": t, "label": "positive"} for t in POSITIVE] + [
        {"text": t, "label": "negative"} for t in NEGATIVE
    ]
    rows += [{"text": r["text"] + " !", "label": "negative" if r["label"] == "positive"
              else "positive"} for r in rows]  # half mislabelled: enough errors to fit  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(data), "--format", "json")
    assert code == 0, err
    fitted = json.loads(out)
    assert fitted["fitted_on"] == str(data) and fitted["reviews"] == len(rows)
    assert "not_fitted" not in fitted and fitted["temperature"] != TEMPERATURE
    assert fitted["after"]["log_loss"] <= fitted["before"]["log_loss"] + 1e-9
    assert load_run(run_dir).temperature == pytest.approx(fitted["temperature"])
    # Each review under both labels: no temperature makes it right, the fit stops at 10.
    assert fitted["temperature"] == pytest.approx(10.0, rel=1e-3) and "warning" in fitted
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(data))
    assert code == 0 and out.count("\n") == 1 and "temperature 10.000" in out, out
    assert err.startswith("warning: the temperature stopped at the end of its range"), err
    code, _, err = invoke("calibrate", str(tmp_path / "nowhere"), "--data", str(data))
    assert code == 2 and err.startswith("error: ")


def test_a_refit_with_too_little_evidence_keeps_the_temperature(
    hot_run: Path, tmp_path: Path
) -> None:
    # Found by a red-team pass: one labelled row "fitted" temperature 1, replacing the one fitted
    # on the validation split, and predictions changed with no warning.
    run_dir = Path(shutil.copytree(hot_run, tmp_path / "run"))
    before = (run_dir / CALIBRATION_FILE).read_bytes()
    data = tmp_path / "one.csv"
    data.write_text(f"text,label\n{POSITIVE[0]},positive\n")
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(data))
    assert code == 2 and not out and err.count("\n") == 1, err
    assert "misclassified, and a temperature needs at least 5" in err and "is unchanged" in err
    assert (run_dir / CALIBRATION_FILE).read_bytes() == before
    assert load_run(run_dir).temperature == TEMPERATURE
    for split, role in (("train", "training"), ("test", "test")):  # of the run's own data
        code, out, err = invoke("calibrate", str(run_dir), "--split", split)
        assert code == 2 and f"is the run's {role} split" in err and not out, err
    assert (run_dir / CALIBRATION_FILE).read_bytes() == before


def test_a_run_validated_on_a_split_named_test_calibrates_there(tmp_path: Path) -> None:
    # The rule against fitting on the test split must not refuse a run's own validation split.
    from tests.helpers import untrained_run

    run_dir = untrained_run(tmp_path, **{"data.validation_split": "test"})
    code, out, err = invoke("calibrate", str(run_dir), "--format", "json")
    assert code == 0 and json.loads(out)["fitted_on"] == "builtin:test", err
    code, _, err = invoke("calibrate", str(run_dir), "--split", "train")
    assert code == 2 and "is the run's training split" in err


@pytest.mark.parametrize("content", ['{"temperature": 1000}', '{"temperature": "hot"}', "[]"])
def test_a_planted_temperature_is_refused(hot_run: Path, tmp_path: Path, content: str) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(hot_run, run_dir)
    save_calibration(run_dir, json.loads(content) if content != "[]" else {"t": 1})
    with pytest.raises(CheckpointError, match="must hold a temperature between"):
        Predictor.from_dir(run_dir)


def test_a_run_without_calibration_scores_as_before(builtin_run: Path, tmp_path: Path) -> None:
    # Runs trained before calibration existed have no calibration.json: temperature 1.
    run_dir = tmp_path / "old"
    shutil.copytree(builtin_run, run_dir)
    (run_dir / CALIBRATION_FILE).unlink()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["files"][CALIBRATION_FILE]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert load_run(run_dir).temperature == 1.0


@pytest.mark.parametrize("failing", ["manifest", "calibration"])
def test_a_refit_that_cannot_be_written_leaves_the_run_as_it_was(
    hot_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # Found by a red-team pass: calibration.json was replaced before the manifest, so a manifest
    # that could not be written (or a Ctrl-C between the two) left a run nothing could load.
    from rnn_sentiment import checkpoint

    run_dir = Path(shutil.copytree(hot_run, tmp_path / "run"))
    write = checkpoint.atomic_write_json if failing == "manifest" else checkpoint.atomic_write_bytes

    def refuse(path: Path, *args: object) -> None:
        if path.name == ("manifest.json" if failing == "manifest" else CALIBRATION_FILE):
            raise PermissionError(13, "Operation not permitted", str(path))
        write(path, *args)

    name = "atomic_write_json" if failing == "manifest" else "atomic_write_bytes"
    monkeypatch.setattr(checkpoint, name, refuse)
    with pytest.raises(PermissionError):
        save_calibration(run_dir, {"temperature": 1.5, "fitted_on": "refused"})
    monkeypatch.undo()
    assert load_run(run_dir).temperature == TEMPERATURE  # loads, checksums and all


def test_ctrl_c_while_a_refit_is_written_waits_for_both_files(
    hot_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from rnn_sentiment import checkpoint

    run_dir = Path(shutil.copytree(hot_run, tmp_path / "run"))
    write = checkpoint.atomic_write_bytes

    def interrupted(path: Path, *args: object) -> None:
        if path.name == CALIBRATION_FILE:  # after the manifest, before calibration.json
            signal.raise_signal(signal.SIGINT)
        write(path, *args)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", interrupted)
    # Python's own Ctrl-C handler, whatever this process inherited: a shell's background job
    # (nohup make test &) starts with SIGINT ignored, and then it stays ignored here too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # delivered once both are written
            save_calibration(run_dir, {"temperature": 1.5, "fitted_on": "interrupted"})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert load_run(run_dir).temperature == 1.5


def test_the_runs_own_training_or_test_reviews_are_refused_however_named(
    hot_run: Path, tmp_path: Path
) -> None:
    # Found by a red-team pass: `--split ./test`, `--split ../builtin/train` and
    # `--data builtin --split test` fitted on the reviews `--split test` is refused for.
    from rnn_sentiment.data.sources import BUILTIN_DIR

    run_dir = Path(shutil.copytree(hot_run, tmp_path / "run"))
    before = (run_dir / CALIBRATION_FILE).read_bytes()
    for args in (["--split", "./test"], ["--split", "../builtin/train"], ["--split", ".."],
                 ["--split", str(BUILTIN_DIR / "train")]):  # fmt: skip
        code, out, err = invoke("calibrate", str(run_dir), *args)
        assert code == 2 and not out and "is not a split name" in err, (args, err)
    for data, split, role in (("builtin", "test", "test"), (str(BUILTIN_DIR), "train", "training")):
        code, out, err = invoke("calibrate", str(run_dir), "--data", data, "--split", split)
        assert code == 2 and f"is the run's {role} split" in err and not out, err
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(BUILTIN_DIR / "train.jsonl"))
    assert code == 2 and "train.jsonl is the run's training split" in err, err  # the file itself
    code, _, err = invoke("calibrate", str(run_dir), "--split", "")
    assert code == 2 and "an empty split name" in err
    assert (run_dir / CALIBRATION_FILE).read_bytes() == before
    code, _, err = invoke("evaluate", str(run_dir), "--split", "../builtin/test")
    assert code == 2 and "is not a split name" in err  # evaluate reads nothing outside either


def test_a_run_trained_on_one_file_is_not_calibrated_on_that_file(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    # Found by a fresh-eyes review: its validation reviews were carved from the file, so the
    # file given back as --data is its training reviews, under the default split name.
    from rnn_sentiment.training.loop import train
    from tests.helpers import tiny_config

    source = jsonl_reviews / "train.jsonl"
    run_dir = train(tiny_config(tmp_path, **{"data.source": str(source)})).run_dir
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(source))
    assert code == 2 and not out and f"{source} is the run's training split" in err, err
    code, _, err = invoke("calibrate", str(run_dir), "--data", str(jsonl_reviews / "test.jsonl"))
    assert (
        "is the run's" not in err
    )  # another file is held out: refused, if at all, for other reasons
    extra = tmp_path / "extra.jsonl"  # an extra training source is training data too
    extra.write_text((jsonl_reviews / "train.jsonl").read_text())
    settings = {"data.source": str(source), "data.extra_train_sources": [str(extra)],
                "output.name": "extra"}  # fmt: skip
    run_dir = train(tiny_config(tmp_path, **settings)).run_dir
    code, out, err = invoke("calibrate", str(run_dir), "--data", str(extra))
    assert code == 2 and not out and "is the run's training split" in err, err
