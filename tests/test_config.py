from __future__ import annotations

from pathlib import Path

import pytest

from rnn_sentiment.config import Config, config_to_dict, dump_config, load_config
from rnn_sentiment.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def problems_of(path: Path | None = None, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.problems


def test_overrides_set_nested_values_with_yaml_types() -> None:
    config = load_config(None, ["model.cell=gru", "training.lr=1e-3", "model.bidirectional=true"])
    assert config.model.cell == "gru"
    assert config.training.lr == pytest.approx(1e-3)
    assert config.model.bidirectional is True


def test_unknown_key_gets_did_you_mean() -> None:
    assert problems_of(overrides=["model.hiden_size=8"]) == [
        "unknown key 'model.hiden_size'; did you mean 'model.hidden_size'?"
    ]


def test_unknown_section_lists_valid_keys() -> None:
    [problem] = problems_of(overrides=["modle.cell=gru"])
    assert "did you mean 'model'" in problem


def test_all_problems_are_reported_at_once_and_name_their_key() -> None:
    problems = problems_of(
        overrides=["model.hidden_size=-3", "training.lr=abc", "model.pooling=avg", "foo=1"]
    )
    assert len(problems) == 4
    joined = "\n".join(problems)
    for key in ("model.hidden_size", "training.lr", "model.pooling", "'foo'"):
        assert key in joined


def test_integers_that_reach_a_json_file_are_bounded() -> None:
    # Found by a review: min_frequency=10**19 trained a 2-word vocabulary whose export.json
    # (holding the tokenizer config) the export then refused to read back as altered.
    problems = problems_of(overrides=["tokenizer.min_frequency=10000000000000000000"])
    assert any(p.startswith("tokenizer.min_frequency") for p in problems), problems


def test_cross_field_problem_is_reported() -> None:
    [problem] = problems_of(overrides=["data.test_split=train"])
    assert "data.test_split must differ from data.train_split" in problem


def test_malformed_override_is_rejected() -> None:
    [problem] = problems_of(overrides=["model.cell"])
    assert "key.sub=value" in problem


def test_yaml_file_errors(tmp_path: Path) -> None:
    assert "not found" in problems_of(tmp_path / "missing.yaml")[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "not valid YAML" in problems_of(bad)[0]
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert "mapping" in problems_of(scalar)[0]
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("model:\n  hidden_size: lots\n")
    assert problems_of(wrong_type)[0].startswith("model.hidden_size:")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_documents_its_command(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)
    header = path.read_text().splitlines()[:12]
    assert any(f"rnn-sentiment train configs/{path.name}" in line for line in header)


def test_default_yaml_matches_the_built_in_defaults() -> None:
    """`rnn-sentiment train` with no config must do exactly what configs/default.yaml says."""
    shipped = load_config(Path(__file__).parents[1] / "configs" / "default.yaml")
    assert config_to_dict(shipped) == config_to_dict(Config())


def test_dumped_config_loads_back_identically(tmp_path: Path) -> None:
    config = load_config(None, ["model.cell=rnn", "model.nonlinearity=relu"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert load_config(saved) == config
