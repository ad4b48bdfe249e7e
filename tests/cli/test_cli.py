"""End to end: the real CLI on tiny data (train -> evaluate -> predict), exit codes, formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnn_sentiment.cli import app
from tests.helpers import invoke, tiny_overrides

runner = CliRunner()


def test_train_evaluate_predict_end_to_end(tmp_path: Path, jsonl_reviews: Path) -> None:
    overrides = tiny_overrides(
        tmp_path, **{"data.source": str(jsonl_reviews), "data.test_split": "test",
                     "training.epochs": 6, "training.lr": 0.01},
    )  # fmt: skip
    code, out, err = invoke("train", *overrides, "--format", "json")
    assert code == 0, err
    summary = json.loads(out)
    run_dir = summary["run_dir"]
    assert summary["test"]["accuracy"] == 1.0
    assert "epoch 1/6 step 5/5" in err  # plain progress lines when not on a terminal

    code, out, _ = invoke("evaluate", run_dir, "--format", "json", "-o", str(tmp_path / "m.json"))
    assert code == 0
    metrics = json.loads(out)
    assert metrics["accuracy"] == 1.0 and metrics["confusion_matrix"] == [[8, 0], [0, 8]]
    assert json.loads((tmp_path / "m.json").read_text())["macro_f1"] == 1.0

    code, out, _ = invoke("evaluate", run_dir)
    assert code == 0 and "macro-F1" in out and "confusion" in out
    assert f"on {jsonl_reviews} (test, 16 reviews)" in " ".join(out.split())
    code, out, _ = invoke("evaluate", run_dir, "--data", str(jsonl_reviews / "test.jsonl"))
    assert code == 0 and "test.jsonl (16 reviews)" in out  # a file is read whole: no split

    code, out, _ = invoke(
        "predict", "--model", run_dir, "i loved it", "awful acting", "--format", "jsonl"
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(abs(r["p_negative"] + r["p_positive"] - 1) < 1e-5 for r in rows)

    code, out, _ = invoke(
        "predict", "--model", run_dir, "-", "--format", "csv", stdin="i loved it\ni hated it\n"
    )
    assert code == 0
    assert [r["label"] for r in csv.DictReader(io.StringIO(out))] == ["positive", "negative"]

    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a wonderful film\nboring and long\n")
    code, out, _ = invoke("predict", "--model", run_dir, "--file", str(reviews), "--format", "json")
    assert code == 0 and [r["label"] for r in json.loads(out)] == ["positive", "negative"]


def test_predict_uses_the_bundled_model_until_told_otherwise(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNN_SENTIMENT_MODEL", raising=False)
    overrides = [
        o
        for o in tiny_overrides(tmp_path, **{"data.source": str(jsonl_reviews)})
        if not o.startswith("output.")
    ]
    code, out, _ = invoke("train", *overrides)
    assert code == 0 and "use it: rnn-sentiment predict --model runs/lstm-" in out
    code, out, err = invoke("predict", "i loved it", "--format", "json")
    assert code == 0 and "model: the bundled model" in err  # a new run does not take over
    code, out, err = invoke("predict", "--model", "latest", "i loved it", "--format", "json")
    assert code == 0 and "model: runs/lstm-" in err and "(the newest finished run" in err
    monkeypatch.setenv("RNN_SENTIMENT_MODEL", "latest")
    code, out, err = invoke(
        "evaluate", "--data", str(jsonl_reviews / "test.jsonl"), "--format", "json"
    )
    assert code == 0 and json.loads(out)["n"] == 16 and "model: runs/lstm-" in err
    monkeypatch.setattr("rnn_sentiment.inference.models.BUNDLED_MODEL_DIR", tmp_path / "no-bundle")
    monkeypatch.delenv("RNN_SENTIMENT_MODEL")
    code, _, err = invoke("predict", "anything")
    assert code == 2 and "no bundled model in this installation" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "model.hiden_size=3", "training.lr=-1"], "did you mean 'model.hidden_size'"),
        (["train", "nope.yaml"], "config file not found"),
        (["train", "data.source=./missing.csv"], "data source not found"),
        (["predict", "--model", "nowhere", "text"], "model directory not found"),
        (["predict", "--model", ".", ""], "review 1 is empty"),
        (["predict", "--model", ".", "--file", "missing.txt"], "review file not found"),
        (["evaluate", "nowhere"], "model directory not found"),
        (["train", "configs/"], "configs is a folder; give one of its YAML files"),
        (
            ["train", "--epochs", "3"],
            "no such option --epochs; settings are key=value: did you mean training.epochs=3?",
        ),  # fmt: skip
        (["compare", "--max-minutes=2"], "did you mean training.max_minutes=2?"),
        (["predict", "--fromat", "json", "x"], "no such option --fromat; did you mean --format?"),
        (["predict", "--json", "x"], "no such option --json; did you mean --format json?"),
        (["predict", "--window", "x"], "did you mean --long-reviews window?"),
        (["check", "--table"], "no such option --table; did you mean --format table?"),
        (["predict", "--format", "xml", "x"], "invalid value for '--format': 'xml' is not one of"),
        (["predikt"], "no such command 'predikt'. Did you mean 'predict'?"),
        (
            ["train", "--resume"],
            "option '--resume' requires an argument; see rnn-sentiment train --help",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert all(line.startswith("error: ") for line in err.strip().splitlines())  # one per problem


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "predict", "compare", "export", "check", "calibrate"]
)
def test_help_is_short_and_shows_no_type_placeholders(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0 and "Example" in out
    assert "<bool>" not in out and "<str>" not in out and "<int range>" not in out
    assert len(out.splitlines()) <= 60


def test_shell_completion_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    # Typer detects the user's shell from the parent processes (none under CI): name it instead.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code, out, _ = invoke("--show-completion", "bash")
    assert code == 0 and "_rnn_sentiment_completion" in out


def test_config_errors_are_all_listed(tmp_path: Path) -> None:
    code, _, err = invoke("train", "model.hiden_size=3", "training.lr=-1")
    assert code == 2
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 2


def test_invalid_utf8_on_stdin(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", "--model", ".", "-"], input=b"caf\xe9\n")
    assert result.exit_code == 2 and "not valid UTF-8" in result.stderr


def test_real_process_help_and_error_exit_codes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "rnn_sentiment"]
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "train" in helped.stdout and "predict" in helped.stdout
    for sub in ("train", "evaluate", "predict"):
        assert (
            subprocess.run([*command, sub, "--help"], capture_output=True, check=False).returncode
            == 0
        )
    failed = subprocess.run(
        [*command, "train", "model.cell=cnn"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1 and "model.cell" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_builtin_model_reads_word_order(builtin_run: Path) -> None:
    code, out, _ = invoke(
        "predict", "--model", str(builtin_run), "--format", "json",
        "This movie is not good", "This movie is not bad",
        "This movie is good", "This movie is bad",
    )  # fmt: skip
    assert code == 0
    labels = [row["label"] for row in json.loads(out)]
    assert labels == ["negative", "positive", "positive", "negative"]


def test_predict_explain_json_and_table(builtin_run: Path) -> None:
    code, out, err = invoke(
        "predict", "--model", str(builtin_run), "--explain", "This movie is not good",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    [explained] = json.loads(out)
    assert [w["word"] for w in explained["words"]] == ["This", "movie", "is", "not", "good"]
    assert explained["label"] == "negative" and "occlusion" in explained["method"]
    assert all(isinstance(w["attribution"], float) for w in explained["words"])
    code, out, _ = invoke("predict", "--model", str(builtin_run), "--explain", "A joy")
    assert code == 0 and "running sentiment" in out and "occlusion" in out
    code, _, err = invoke(
        "predict", "--model", str(builtin_run), "--explain", "x", "--format", "csv"
    )
    assert code == 2 and "not csv" in err


def test_compare_on_a_tiny_budget(tmp_path: Path) -> None:
    from tests.test_compare import LONG_RANGE

    out_dir = tmp_path / "cmp"
    overrides = tiny_overrides(tmp_path, **LONG_RANGE)
    code, out, err = invoke("compare", *overrides, "--cells", "rnn,lstm", "--out", str(out_dir))
    assert code == 0, err
    assert "RNN" in out and "LSTM" in out and "d=4" in out and "gradient flow" in out
    assert "run 2/2: LSTM" in err
    for name in ("report.md", "report.json", "learning_curves.png", "gradient_flow.png"):
        assert (out_dir / name).is_file()
    code, out, _ = invoke("predict", "--model", str(out_dir / "lstm-seed42"), "really good.")
    assert code == 0

    code, out, err = invoke("compare", *overrides, "--cells", "rnn,cnn", "--out", str(out_dir))
    assert code == 2 and "comma list" in err
    code, _, err = invoke("compare", *overrides, "--cells", "rnn", "--out", str(out_dir))
    assert code == 2 and "is not a new or empty folder" in err


def test_progress_after_resume_starts_from_the_first_step_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rnn_sentiment.console import TrainProgress

    progress = TrainProgress(log_every=1)
    progress.on_epoch_start(2, 3, 100)
    progress.on_step(57, 0.05, 0.98, 1.0)  # resumed at step 57: no climb from 0
    assert "step 57/100 loss 0.050 acc 0.980" in capsys.readouterr().err


CHECK_SUITE = """\
name: tiny
fill: {adj: [great, wonderful, excellent]}
tests:
  - {name: right, capability: plain, type: mft, template: "The film was {adj}.", expect: positive}
  - {name: mislabelled, capability: plain, type: mft, template: "The film was {adj}.",
     expect: negative}
"""


def test_check_prints_failure_rates_and_fail_above_sets_the_exit_code(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(CHECK_SUITE)  # a test any model passes, and one it fails on purpose
    code, out, _ = invoke("check", "--suite", str(suite))
    assert code == 0 and "mislabelled" in out and "100.0%" in out
    code, out, _ = invoke("check", "--suite", str(suite), "--format", "json")
    rates = {t["name"]: t["failure_rate"] for t in json.loads(out)["tests"]}
    assert code == 0 and rates == {"right": 0.0, "mislabelled": 1.0}
    code, _, err = invoke("check", "--suite", str(suite), "--fail-above", "0.5")
    assert code == 1 and err.count("error:") == 1
    assert "1 of 2 tests fail more than 50.0% of their cases: mislabelled (100.0%)" in err
    assert invoke("check", "--suite", str(suite), "--fail-above", "1")[0] == 0


def test_check_reports_a_broken_suite_on_one_line_before_loading_a_model(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(CHECK_SUITE.replace("template:", "templat:", 1))
    code, out, err = invoke("check", "--suite", str(suite))
    assert code == 2 and out == ""
    assert f"error: {suite}, line 4: test 'right': unknown field 'templat'" in err
    assert "model:" not in err  # refused before the model was named, let alone loaded


def test_overlong_paths_and_values_are_one_short_line() -> None:
    # Found by a red-team pass: a name over 255 bytes was "internal error: OSError" (exit 1),
    # and a 5,000-character value was echoed whole.
    long_name = "x" * 300
    code, _, err = invoke("evaluate", "--data", long_name)
    line = err.splitlines()[-1]
    assert code == 2 and "a path is too long for this system" in line and len(line) < 150, err
    code, _, err = invoke("train", "training.lr=" + "x" * 5000)
    assert code == 2 and err.count("\n") == 1 and len(err) < 300, err
