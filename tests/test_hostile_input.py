"""Property-based tests: hostile input gives a correct result or a one-line error, no crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rnn_sentiment.cli import app
from rnn_sentiment.config import load_config
from rnn_sentiment.errors import ConfigError, DataError
from rnn_sentiment.inference.predictor import Predictor

runner = CliRunner()
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_any_unicode_gets_a_valid_probability(predictor: Predictor, texts: list[str]) -> None:
    predictions = predictor.predict(texts)
    assert len(predictions) == len(texts)
    for text, p in zip(texts, predictions, strict=True):
        assert p.text == text
        assert abs(sum(p.probabilities.values()) - 1) < 1e-5
        assert p.label in ("negative", "positive")


def test_control_characters_whitespace_and_a_megabyte(predictor: Predictor) -> None:
    sentence = "The acting was not good but the ending was great. "
    megabyte = sentence * (1_000_000 // len(sentence))
    texts = ["\x00\x01\x1b[31m not good \x7f", " \t\n ", megabyte, "\u202enot bad\u202c"]
    probs = predictor.predict_proba(texts)
    assert probs.shape == (4, 2)
    # a megabyte review is truncated to max_length tokens, exactly like its own beginning
    max_length = predictor.run.config.tokenizer.max_length
    beginning = predictor.predict_proba([sentence * (max_length // 10 + 1)])[0]
    assert abs(probs[2] - beginning).max() < 1e-5


@SETTINGS
@given(
    # "-" alone is the documented stdin marker, not a review
    text=st.text(min_size=1, max_size=200).filter(
        lambda t: t.strip() and "\x00" not in t and t != "-"
    )
)
def test_cli_predict_any_text_is_json(builtin_run: Path, text: str) -> None:
    result = runner.invoke(
        app, ["predict", "--model", str(builtin_run), "--format", "json", "--", text]
    )
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["text"] == text


@SETTINGS
@given(data=st.binary(max_size=200))
def test_cli_predict_arbitrary_bytes_on_stdin(builtin_run: Path, data: bytes) -> None:
    result = runner.invoke(
        app, ["predict", "--model", str(builtin_run), "-", "--format", "jsonl"], input=data
    )
    assert result.exit_code in (0, 2)
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@SETTINGS
@given(
    tree=st.dictionaries(
        st.sampled_from(["data", "model", "training", "tokenizer", "output", "x"]),
        yaml_values,
        max_size=4,
    )
)
def test_any_yaml_config_loads_or_lists_problems(tmp_path: Path, tree: dict[str, object]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@SETTINGS
@given(overrides=st.lists(st.text(max_size=30), max_size=4))
def test_any_override_strings_load_or_list_problems(overrides: list[str]) -> None:
    try:
        load_config(None, overrides)
    except ConfigError as exc:
        assert exc.problems


@pytest.mark.parametrize(
    "override",
    ["model.hidden_size=100000000000000000000", "model.embedding_dim=-5", "training.batch_size=0",
     "tokenizer.max_length=1e400", "training.lr=.nan", "model.num_layers=[1, 2]", "model=3"],
)  # fmt: skip
def test_huge_negative_and_wrong_type_values_name_their_key(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    key = override.split("=")[0]
    assert any(p.startswith(key) for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("train.csv", 'text,label\n"unterminated,1\nok,0\n'),
        ("train.jsonl", '{"text": "ok", "label": 1}\n{not json}\n'),
        ("train.csv", "only_one_column\nvalue\n"),
        ("train.parquet", "this is not parquet"),
    ],
)
def test_malformed_files_give_a_data_error(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    result = runner.invoke(
        app, ["train", f"data.source={tmp_path / name}", f"output.dir={tmp_path}"]
    )
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_directories_where_files_are_expected(tmp_path: Path, builtin_run: Path) -> None:
    for args in (
        ["predict", "--model", str(builtin_run), "--file", str(tmp_path)],
        ["train", str(tmp_path)],
        ["predict", "--model", str(tmp_path), "text"],
        ["evaluate", str(builtin_run), "--data", str(tmp_path)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ")


def test_empty_training_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError):
        from rnn_sentiment.config import DataConfig
        from rnn_sentiment.data.sources import load_splits

        load_splits(DataConfig(source=str(tmp_path / "train.jsonl")), seed=0)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_cli_predict_any_review_file_scores_every_line_or_fails_cleanly(
    builtin_run: Path, tmp_path: Path, data: bytes
) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes(data)
    args = ["predict", "--model", str(builtin_run), "--file", str(reviews), "--format", "jsonl"]
    result = runner.invoke(app, args)
    assert "Traceback" not in result.stderr
    if result.exit_code == 0:
        # Reviews are separated by \n only (\r\n too), as every line reader of the package does;
        # str.splitlines would also split at \x0b, \x1c-\x1e, \x85 and \u2028.
        lines = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")
        rows = [row for row in result.stdout.split("\n") if row]
        assert len(rows) == len(lines)  # one output row per review
    else:
        assert result.exit_code == 2 and result.stderr.startswith("error: ")
