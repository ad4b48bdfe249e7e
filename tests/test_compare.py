"""compare: every cell on the same data and budget, measured side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnn_sentiment.compare import compare, matched_hidden_size, parse_cells
from rnn_sentiment.config import ModelConfig, load_config
from rnn_sentiment.errors import ConfigError
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.model import build_model, count_parameters
from rnn_sentiment.report import write_report
from tests.helpers import tiny_overrides

LONG_RANGE = {
    "data.source": "long-range",
    "data.validation_split": "validation",
    "data.test_split": "test",
    "data.long_range.distances": "[0,4]",
    "data.long_range.train_size": 48,
    "data.long_range.validation_size": 16,
    "data.long_range.test_size": 16,
    "training.epochs": 1,
}


def test_matched_hidden_sizes_give_the_closest_parameter_count() -> None:
    model = ModelConfig(embedding_dim=16, hidden_size=32)

    def params(cell: str, hidden: int) -> int:
        cfg = model.model_copy(update={"cell": cell, "hidden_size": hidden})
        return count_parameters(build_model(cfg, 2, 2))

    target = params("lstm", 32)
    assert matched_hidden_size(model, "lstm") == 32
    for cell in ("rnn", "gru"):
        hidden = matched_hidden_size(model, cell)
        gap = abs(params(cell, hidden) - target)
        assert gap <= abs(params(cell, hidden - 1) - target)
        assert gap <= abs(params(cell, hidden + 1) - target)
    assert matched_hidden_size(model, "rnn") > matched_hidden_size(model, "gru") > 32


def test_parse_cells() -> None:
    assert parse_cells("lstm, GRU") == ["lstm", "gru"]
    with pytest.raises(ConfigError, match=r"names lstm more than once; .*--seeds N"):
        parse_cells("lstm, GRU,LSTM")  # once each: several runs of a cell are --seeds
    with pytest.raises(ConfigError, match="comma list"):
        parse_cells("lstm,cnn")


def test_compare_writes_ordinary_runs_and_a_report(tmp_path: Path) -> None:
    config = load_config(None, tiny_overrides(tmp_path, **LONG_RANGE))
    result = compare(config, ["rnn", "gru"], seeds=2, out_dir=tmp_path / "cmp", match_params=True)
    assert [(r.cell, r.seed) for r in result.runs] == [
        ("rnn", 42), ("gru", 42), ("rnn", 43), ("gru", 43)
    ]  # fmt: skip
    rows = {row["cell"]: row for row in result.summary()}
    assert rows["rnn"]["seeds"] == 2 and rows["rnn"]["hidden_size"] > rows["gru"]["hidden_size"]
    assert set(rows["gru"]["by_distance"]) == {"0", "4"}
    assert sum(b["n"] for b in rows["gru"]["by_distance"].values()) == 16
    assert sum(b["n"] for b in rows["gru"]["by_length"].values()) == 16
    flow = rows["rnn"]["gradient_flow"]
    assert len(flow["init"]) == len(flow["trained"]) > 4
    Predictor.from_dir(result.runs[0].run_dir).predict(["it was really good."])

    files = write_report(result)
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert files["accuracy"].name == "accuracy_by_distance.png"
    report = files["report"].read_text()
    assert "| RNN |" in report and "gradient_flow.png" in report
    saved = json.loads(files["json"].read_text())
    assert len(saved["runs"]) == 4 and saved["summary"][0]["cell"] == "rnn"


def test_seeds_past_the_largest_are_refused_before_training(tmp_path: Path) -> None:
    from rnn_sentiment.config import MAX_SEED, load_config
    from rnn_sentiment.errors import ConfigError

    config = load_config(None, tiny_overrides(tmp_path, **{"training.seed": MAX_SEED}))
    with pytest.raises(ConfigError, match="over the largest seed"):
        compare(config, ["rnn"], seeds=2, out_dir=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_an_output_folder_that_holds_anything_is_refused_before_training(tmp_path: Path) -> None:
    # Found by a red-team pass: compare --out replaced a report.md, report.json and charts of the
    # same names in a folder the user already had, and trained into a model directory.
    from rnn_sentiment.config import load_config
    from rnn_sentiment.errors import DataError

    config = load_config(None, tiny_overrides(tmp_path))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "report.md").write_text("my notes")
    (tmp_path / "file").write_text("a file")
    (tmp_path / "link").symlink_to(tmp_path / "empty", target_is_directory=True)
    (tmp_path / "empty").mkdir()
    for out in ("project", "file", "link"):
        with pytest.raises(DataError, match="is not a new or empty folder"):
            compare(config, ["rnn"], out_dir=tmp_path / out)
    assert (tmp_path / "project" / "report.md").read_text() == "my notes"
    assert not list((tmp_path / "empty").iterdir()) and not (tmp_path / "runs").exists()


def test_bad_data_leaves_no_output_folder_behind(tmp_path: Path) -> None:
    # Found by a red-team pass: the --out folder stayed, empty, after a data error.
    from rnn_sentiment.errors import DataError

    config = load_config(
        None, tiny_overrides(tmp_path, **{"data.source": str(tmp_path / "no.csv")})
    )
    with pytest.raises(DataError, match="not found"):
        compare(config, ["rnn"], out_dir=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_a_stop_says_the_comparison_does_not_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a red-team pass: the hint resumed one run, which does not finish the comparison.
    from rnn_sentiment import compare as compare_module
    from rnn_sentiment.errors import TrainingInterrupted

    def stopped(config: object, callback: object) -> None:
        raise TrainingInterrupted(
            "stopped by SIGINT at epoch 2, step 3; continue with: rnn-sentiment train --resume x"
        )

    monkeypatch.setattr(compare_module, "train", stopped)
    config = load_config(None, tiny_overrides(tmp_path))
    with pytest.raises(TrainingInterrupted) as info:
        compare(config, ["rnn", "gru"], out_dir=tmp_path / "cmp")
    message = str(info.value)
    assert message.startswith("stopped by SIGINT at epoch 2, step 3 in run 1 of 2 (rnn, seed ")
    assert "compare does not resume" in message and "train --resume" not in message


def test_each_run_keeps_every_setting_of_the_shared_config(tmp_path: Path) -> None:
    # pretraining.from is spelled by its alias; a round trip by field name would refuse it.
    from rnn_sentiment.compare import _run_config

    config = load_config(None, ["pretraining.from=/encoders/imdb", "training.lr=0.004"])
    run = _run_config(config, "gru", 7, None, tmp_path)
    assert run.pretraining.from_ == "/encoders/imdb" and run.training.lr == 0.004
    assert (run.model.cell, run.training.seed) == ("gru", 7)
