"""The library as a careless or hostile caller uses it: every wrong argument is one of the
package's errors (RnnSentimentError), raised before any file is written, never an internal
exception from deep inside or a silently wrong result. Found by a red-team pass of the API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import rnn_sentiment as rs
from rnn_sentiment.errors import CheckpointError, ConfigError, DataError
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor
from tests.helpers import invoke, tiny_overrides


def test_scoring_output_may_not_add_a_model_file_to_the_model(
    builtin_run: Path, tmp_path: Path
) -> None:
    # A scored CSV named model.onnx, absent before, made the run directory look exported.
    run_dir = Path(shutil.copytree(builtin_run, tmp_path / "run"))
    reviews = tmp_path / "in.csv"
    reviews.write_text("text\na fine film\n")
    model = rs.load_model(str(run_dir))
    for name in ("model.onnx", "export.json"):  # absent from a run directory, until now
        options = rs.ScoringOptions(output_format="csv")
        with pytest.raises(DataError, match="would replace a file of the model"):
            rs.score_file(model, str(reviews), str(run_dir / name), options)
        assert not (run_dir / name).exists()
    code, _, err = invoke("predict", "-m", str(run_dir), "-i", str(reviews), "-o",
                          str(run_dir / "model.onnx"), "--output-format", "csv")  # fmt: skip
    assert code == 2 and "would replace a file of the model" in err
    assert rs.load_model(str(run_dir)).predict(["a fine film"])  # still loads
    with pytest.raises(CheckpointError, match="would add a model file to the run"):
        rs.export_model(run_dir, run_dir / "model.onnx")


def test_export_refuses_a_bad_target_before_it_exports(builtin_run: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="cannot create .*afile/out"):
        rs.export_model(builtin_run, tmp_path / "afile" / "out")  # was FileExistsError, after
    with pytest.raises(ConfigError, match="quantize must be 'int8' or None, not 'int4'"):
        rs.export_model(builtin_run, tmp_path / "q", quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="an empty output path"):
        rs.export_model(builtin_run, "")
    with pytest.raises(DataError, match="holds a NUL character"):
        rs.export_model(builtin_run, str(tmp_path / "a\0b"))
    with pytest.raises(DataError, match="run directory is a path .* not NoneType"):
        rs.export_model(None, tmp_path / "n")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ('data.source=""', "data.source"),
        ('data.cache_dir=""', "data.cache_dir"),
        ('output.dir="a\\0b"', "output.dir"),
        ('pretraining.from="a\\0b"', "pretraining.from"),
        ('data.extra_train_sources=[""]', "data.extra_train_sources"),
        ("training.lr=.inf", "training.lr"),
        ("training.max_minutes=.nan", "training.max_minutes"),
    ],
)
def test_config_paths_and_numbers_a_run_cannot_use_are_refused(override: str, key: str) -> None:
    # "" read the current folder; NUL failed halfway with ValueError; lr=inf gave a NaN loss.
    with pytest.raises(ConfigError, match=f"^{key}: "):
        rs.load_config(None, [override])


def test_train_checks_its_arguments_before_it_claims_a_run_directory(tmp_path: Path) -> None:
    config = rs.load_config(None, tiny_overrides(tmp_path, **{"output.name": "claimed"}))
    config.data.test_split = "train"  # load_config refuses this; assigning did not
    with pytest.raises(ConfigError, match="data.test_split must differ from data.train_split"):
        rs.train(config)
    config.data.test_split = None
    for callback in ("x", rs.TrainCallback):  # a str, and the class instead of an instance
        with pytest.raises(ConfigError, match="callback must be a TrainCallback instance"):
            rs.train(config, callback=callback)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config must be a Config .* not dict"):
        rs.train({"model": {"cell": "gru"}})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="an empty resume path"):
        rs.train(None, resume="")
    with pytest.raises(ConfigError, match="config must be a Config .* not str"):
        rs.pretrain("configs/imdb-lm.yaml")  # type: ignore[arg-type]
    assert not (tmp_path / "runs" / "claimed").exists()  # the name is still free


@pytest.mark.parametrize("exported", [True, False], ids=["exported", "pytorch"])
def test_how_a_model_scores_is_checked_not_ignored(exported: bool) -> None:
    # batch_size=-1 gave an exported model's zero-filled array as probabilities of 0.5.
    engine = {} if exported else {"quantize": "int8"}
    for bad, message in (({"batch_size": -1}, "batch_size must be 1 or more, not -1"),
                         ({"batch_size": "8"}, "batch_size must be a whole number"),
                         ({"threads": 0}, "threads must be 1 to")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            load_predictor(BUNDLED_MODEL_DIR, **engine, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="quantize must be 'int8' or None, not 'int4'"):
        load_predictor(BUNDLED_MODEL_DIR, quantize="int4")
    with pytest.raises(ConfigError, match="dtype must be 'fp32' or 'bf16', not 'fp16'"):
        load_predictor(BUNDLED_MODEL_DIR, dtype="fp16")
    with pytest.raises(ConfigError, match="threads must be a whole number"):
        rs.BatchScorer(None, threads="2")  # type: ignore[arg-type]  # at once, not per batch
    model = load_predictor(BUNDLED_MODEL_DIR, **engine)  # type: ignore[arg-type]
    for max_words in ("5", -1, 0, float("nan"), True):
        with pytest.raises(DataError, match="max_words must be a whole number of 1 or more"):
            model.explain("a fine film", max_words=max_words)  # type: ignore[arg-type]
    assert model.explain("a fine film", max_words=3).words


def test_score_file_checks_its_arguments_before_any_file(tmp_path: Path) -> None:
    reviews = tmp_path / "in.csv"
    reviews.write_text("text\na fine film\n")
    model = load_predictor(BUNDLED_MODEL_DIR)
    out = str(tmp_path / "out.csv")
    with pytest.raises(DataError, match="the model must come from load_model"):
        rs.score_file(str(BUNDLED_MODEL_DIR), str(reviews), out)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="options must be ScoringOptions"):
        rs.score_file(model, str(reviews), out, {"keep_columns": "none"})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="callback must be a ScoringCallback instance"):
        rs.score_file(model, str(reviews), out, None, "x")  # type: ignore[arg-type]
    for source, target in (("", out), (str(reviews), ""), (str(reviews), out + "\0")):
        with pytest.raises(DataError, match="an empty (input|output) path|holds a NUL"):
            rs.score_file(model, source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no .partial left


def test_arguments_are_checked_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnn_sentiment import cli, config

    assert (cli.MAX_THREADS, cli.MAX_WORKERS) == (config.MAX_THREADS, config.MAX_WORKERS)
    # Found by a red-team pass: workers=-1, address=123, threads=0 and a dict of options all
    # reached ray.init, and an input of None or "" failed inside (or read the current folder).
    from rnn_sentiment.inference import ray_scoring
    from rnn_sentiment.inference.ray_scoring import score_with_ray

    class NoRay:  # whatever reaches Ray fails the test
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"ray.{name} was reached")

    monkeypatch.setattr(ray_scoring, "_import_ray", NoRay)
    source = tmp_path / "in.csv"
    source.write_text("text\na fine film\n")
    out = tmp_path / "out"
    for bad, message in (({"workers": 0}, "workers must be a whole number from 1 to 4,096"),
                         ({"workers": 10**9}, "workers must be a whole number from 1 to 4,096"),
                         ({"address": 123}, "address must be a Ray address"),
                         ({"options": {"chunk_size": 3}}, "options must be ScoringOptions"),
                         ({"threads": 0}, "threads must be 1 to"),
                         ({"batch_size": -1}, "batch_size must be 1 or more")):  # fmt: skip
        with pytest.raises((DataError, ConfigError), match=message):
            score_with_ray(None, source, out, **bad)
    for inputs, message in (
        (None, "inputs must be a file, a folder or a list"),
        ("", "an empty input path"),
        ([source, ""], "an empty input path"),
    ):
        with pytest.raises(DataError, match=message):
            score_with_ray(None, inputs, out)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="an empty output path"):
        score_with_ray(None, source, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_load_config_checks_its_arguments_and_the_file(tmp_path: Path) -> None:
    # load_config(None, "model.cell=gru") read each character as an override; [1] and None
    # raised AttributeError; a FIFO was "not found"; a file of any size was read whole.
    import os

    from rnn_sentiment.config import MAX_CONFIG_BYTES

    for overrides in ("model.cell=gru", [1], [None], 5):
        with pytest.raises(ConfigError, match="overrides must be a list of 'key.sub=value'"):
            rs.load_config(None, overrides)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="path must be a YAML file's path"):
        rs.load_config(123)  # type: ignore[arg-type]
    assert rs.load_config(None, ("model.cell=gru",)).model.cell == "gru"  # a tuple is a list
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="is not a regular file"):
        rs.load_config(tmp_path / "fifo.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("model:\n  cell: gru\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="byte limit of a config file"):
        rs.load_config(big)


def test_a_setting_changed_by_hand_raises_a_config_error() -> None:
    # It raised pydantic's ValidationError; load_config's one-line problem now. (Built by hand,
    # Config(...) still raises ValidationError: run files are read through model_validate, which
    # calls a custom __init__ too, and must keep pydantic's error to word it safely.)
    config = rs.Config()
    with pytest.raises(ConfigError, match="hidden_size: Input should be greater than or equal"):
        config.model.hidden_size = -1
    with pytest.raises(ConfigError, match="lr: Input should be a finite number"):
        config.training.lr = float("inf")
    assert config.model.hidden_size > 0 and config.training.lr > 0


def test_settings_built_with_checked_raise_config_errors() -> None:
    # Config(...), ScoringOptions(...) raise pydantic's ValidationError (see above); .checked()
    # is the constructor that words problems as load_config does, suggestions included.
    from rnn_sentiment.config import ModelConfig
    from rnn_sentiment.serving.app import ServeSettings

    with pytest.raises(ConfigError, match=r"^chunk_size: Input should be greater .* \(got 0\)$"):
        rs.ScoringOptions.checked(chunk_size=0)
    with pytest.raises(ConfigError, match="unknown key 'chunk_sise'; did you mean 'chunk_size'"):
        rs.ScoringOptions.checked({"chunk_sise": 3})
    with pytest.raises(ConfigError, match="'model.hiden_size'; did you mean 'model.hidden_size'"):
        rs.Config.checked({"model": {"hiden_size": 3}})
    with pytest.raises(ConfigError, match="'hiden_size'; did you mean 'hidden_size'"):
        ModelConfig.checked(hiden_size=3)  # a section: its own keys
    with pytest.raises(ConfigError, match="unknown key 'max_textz'; did you mean 'max_texts'"):
        ServeSettings.checked({"max_textz": 1})
    with pytest.raises(ConfigError, match="values must be a dict of settings, not list"):
        rs.Config.checked([("model", {})])  # type: ignore[arg-type]
    built = rs.Config.checked({"model": {"cell": "lstm"}}, training={"epochs": 2})
    assert (built.model.cell, built.training.epochs) == ("lstm", 2)
    assert rs.ScoringOptions.checked(shard="1/4").shard == (1, 4)


def test_a_batch_with_two_columns_of_one_name_is_refused() -> None:
    import pyarrow as pa

    scorer = rs.BatchScorer()
    twice = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    with pytest.raises(DataError, match="more than one column named text; rename them"):
        scorer(twice)  # was a KeyError
    with pytest.raises(DataError, match="schema must be a pyarrow Schema"):
        scorer.output_schema(None)  # type: ignore[arg-type]
    assert "positive" in " ".join(scorer(pa.table({"text": ["good"]})).column_names)
