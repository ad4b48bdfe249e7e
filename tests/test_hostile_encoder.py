"""Encoder directories as hostile input (``train pretraining.from=DIR``, ``pretrain --resume``).

An encoder directory may come from anyone, like a run directory: every bad one is a one-line
error with exit code 2, no traceback, nothing written (no run directory claimed, the encoder
itself untouched), and memory bounded by what the config may describe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.checkpoint import save_training_state, write_manifest
from rnn_sentiment.config import AdversarialConfig, Config, LanguageModelConfig, ModelConfig
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.hardware import bf16_refused
from rnn_sentiment.model import build_model
from rnn_sentiment.runfiles import MAX_PARAMETERS, parse_config
from rnn_sentiment.tokenizer import PAD_ID, parse_tokenizer
from rnn_sentiment.training import encoder as encoder_module
from rnn_sentiment.training.encoder import (
    ENCODER_FILE,
    ENCODER_FILES,
    Encoder,
    encoder_name,
    encoder_shapes,
    load_encoder,
    read_encoder_config,
    resolve_encoder,
    start_from_encoder,
)
from rnn_sentiment.training.language_model import LanguageModel
from rnn_sentiment.training.lm_pretraining import pretrain
from rnn_sentiment.training.loop import setup_run
from tests.helpers import invoke, tiny_config, tiny_overrides

Tensors = dict[str, torch.Tensor]
# A tiny bidirectional LSTM encoder: about two seconds to pretrain.
_ENCODER = {"model.bidirectional": True, "pretraining.lm.samples": 32}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pretrained encoder for the whole module; tests tamper with copies of it."""
    root = tmp_path_factory.mktemp("pretrained")
    return pretrain(tiny_config(root, **_ENCODER, **{"output.name": "enc"})).encoder_dir


@pytest.fixture
def encoder_dir(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "encoder"
    shutil.copytree(pristine, copy)
    return copy


def _resign(path: Path) -> None:
    """Rewrite the manifest over the files as they are now: a tamperer who re-signs."""
    write_manifest(path, ENCODER_FILES)


def _retensor(path: Path, change: Callable[[Tensors], Tensors]) -> None:
    changed = change(load_file(path / ENCODER_FILE))
    save_file({k: v.contiguous() for k, v in changed.items()}, path / ENCODER_FILE)
    _resign(path)


def _edit_json(path: Path, name: str, change: Callable[[Any], Any]) -> None:
    (path / name).write_text(json.dumps(change(json.loads((path / name).read_text()))))


def _digests(path: Path) -> dict[str, str]:
    """What the directory holds, without opening anything that is not a regular file."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "not a file"
        for f in sorted(path.iterdir())
    }


def _train_from(tmp_path: Path, source: str | Path, **extra: object) -> tuple[int, str, str]:
    overrides = {
        **_ENCODER,
        "pretraining.from": str(source),
        "output.name": "clf",
        "training.epochs": 1,
        **extra,
    }
    return invoke("train", *tiny_overrides(tmp_path / "out", **overrides), "--quiet")


def _assert_one_line(code: int, err: str, expected: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]


# ----------------------------------------------------------------------------------------------
# train pretraining.from=DIR: every hostile directory is one line, exit 2, and nothing is written


def _manifest_adds(name: str) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        _edit_json(path, "manifest.json", lambda m: {**m, "files": {**m["files"], name: "0" * 64}})

    return tamper


def _manifest_drops(name: str) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        _edit_json(
            path,
            "manifest.json",
            lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != name}},
        )

    return tamper


def _weights_behind_a_link(path: Path) -> None:
    shutil.move(path / ENCODER_FILE, path.parent / "elsewhere.safetensors")
    os.symlink(path.parent / "elsewhere.safetensors", path / ENCODER_FILE)


def _metrics_is(content: str) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        (path / "metrics.json").write_text(content)
        _resign(path)

    return tamper


def _metrics_link_to_dev_zero(path: Path) -> None:
    (path / "metrics.json").unlink()
    os.symlink("/dev/zero", path / "metrics.json")


def _metrics_fifo(path: Path) -> None:
    (path / "metrics.json").unlink()
    os.mkfifo(path / "metrics.json")


def _flip_last_byte(path: Path) -> None:
    data = bytearray((path / ENCODER_FILE).read_bytes())
    data[-1] ^= 0x01
    (path / ENCODER_FILE).write_bytes(bytes(data))


def _header_length(length: int) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        data = (path / ENCODER_FILE).read_bytes()
        (path / ENCODER_FILE).write_bytes(length.to_bytes(8, "little") + data[8:])
        _resign(path)

    return tamper


def _config_says(old: str, new: str) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        text = (path / "config.yaml").read_text()
        assert old in text
        (path / "config.yaml").write_text(text.replace(old, new))
        _resign(path)

    return tamper


def _tokenizer_is(content: str) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        (path / "tokenizer.json").write_text(content)
        _resign(path)

    return tamper


def _fill(value: float) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, "embedding.weight": torch.full_like(t["embedding.weight"], value)}


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "no manifest": (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
    "manifest not JSON": (lambda p: (p / "manifest.json").write_text("{"), "malformed"),
    "weights missing": (lambda p: (p / ENCODER_FILE).unlink(), "is missing"),
    "manifest lists a run's weights": (_manifest_adds("model.safetensors"), "not part of"),
    "manifest lists a path outside": (_manifest_adds("../../etc/passwd"), "not part of"),
    "manifest lists the state": (_manifest_adds("state.safetensors"), "not part of"),
    "manifest leaves the weights out": (_manifest_drops(ENCODER_FILE), "does not list"),
    "weights behind a symlink": (_weights_behind_a_link, "symbolic link"),
    "metrics a symlink to /dev/zero": (_metrics_link_to_dev_zero, "symbolic link"),
    "metrics a FIFO": (_metrics_fifo, "not a regular file"),
    "one flipped byte": (_flip_last_byte, "checksum"),
    "header of 2**40 bytes": (_header_length(2**40), "no header of at most"),
    "header past the end": (_header_length(2**20), "runs past its end"),
    "a tensor of another shape": (
        lambda p: _retensor(p, lambda t: {**t, "embedding.weight": t["embedding.weight"][:, :8]}),
        "should have shape",
    ),
    "an extra tensor": (
        lambda p: _retensor(p, lambda t: {**t, "classifier.weight": torch.zeros(2, 32)}),
        "does not have",
    ),
    "a tensor missing": (
        lambda p: _retensor(p, lambda t: {k: v for k, v in t.items() if k != "embedding.weight"}),
        "embedding.weight is missing",
    ),
    "uint8 weights": (
        lambda p: _retensor(
            p, lambda t: {k: v.abs().mul(99).to(torch.uint8) for k, v in t.items()}
        ),
        "not floating point",
    ),
    "int32 weights": (
        lambda p: _retensor(p, lambda t: {k: v.to(torch.int32) for k, v in t.items()}),
        "unused type",
    ),
    "NaN weights": (lambda p: _retensor(p, _fill(math.nan)), "not finite"),
    "infinite weights": (lambda p: _retensor(p, _fill(math.inf)), "not finite"),
    "config of another shape": (
        _config_says("hidden_size: 16", "hidden_size: 24"),
        "does not fit its config",
    ),
    "config of a model over the cap": (
        _config_says("hidden_size: 16", "hidden_size: 65536"),
        "over the 200,000,000",
    ),
    "config with an alias": (_config_says("seed: 42", "seed: &s 42\n  other: *s"), "plain YAML"),
    "config not a mapping": (_config_says("data:", "- data:"), "plain YAML"),
    "tokenizer not ours": (_tokenizer_is("{}"), "not a tokenizer rnn-sentiment writes"),
    "tokenizer not JSON": (_tokenizer_is("\xff"), "not JSON"),
    "metrics a list": (_metrics_is("[1, 2]"), "JSON object"),
    "metrics nested 100,000 deep": (_metrics_is("[" * 100_000 + "]" * 100_000), "JSON object"),
    "metrics over its cap": (_metrics_is('{"a": "' + "x" * (17 * 2**20) + '"}'), "over the"),
    # each was an OverflowError (exit 1) after the run directory was made
    "metrics with an integer of 2**64 or more": (
        _metrics_is('{"perplexity": {"forward": 1' + "0" * 400 + "}}"),
        "a number too large",
    ),
    "metrics with a float past its range": (
        _metrics_is('{"data": {"tokens": 1e400}}'),
        "a number too large",
    ),
}


@pytest.mark.parametrize("tamper, expected", HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_encoder_is_one_line_and_nothing_is_written(
    encoder_dir: Path, tmp_path: Path, tamper: Callable[[Path], None], expected: str
) -> None:
    tamper(encoder_dir)
    before = _digests(encoder_dir)
    code, _, err = _train_from(tmp_path, encoder_dir)
    _assert_one_line(code, err, expected)
    assert not (tmp_path / "out" / "runs" / "clf").exists()
    assert _digests(encoder_dir) == before


def test_a_run_directory_is_not_an_encoder(tmp_path: Path) -> None:
    code, _, err = invoke(
        "train", *tiny_overrides(tmp_path, **{"output.name": "run", "training.epochs": 1}), "-q"
    )
    assert code == 0, err
    run_dir = tmp_path / "runs" / "run"
    before = _digests(run_dir)
    code, _, err = _train_from(tmp_path, run_dir)
    _assert_one_line(code, err, "a classifier's run directory, not an encoder")
    assert not (tmp_path / "out" / "runs" / "clf").exists()
    assert _digests(run_dir) == before


def test_a_file_is_not_an_encoder(encoder_dir: Path, tmp_path: Path) -> None:
    code, _, err = _train_from(tmp_path, encoder_dir / "config.yaml")
    _assert_one_line(code, err, "is not a directory")
    assert not (tmp_path / "out" / "runs" / "clf").exists()


def test_bundled_when_none_ships_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "BUNDLED_ENCODER_DIR", tmp_path / "no-encoder")
    code, _, err = _train_from(tmp_path, "bundled")
    _assert_one_line(code, err, "ships no encoder")
    assert not (tmp_path / "out" / "runs" / "clf").exists()


def test_a_sparse_encoder_over_the_parameter_cap_is_refused_before_it_is_read(
    encoder_dir: Path,
) -> None:
    # The header matches the config exactly and the file is exactly as long as the header says
    # (a sparse file: no disk), so only the parameter cap stands between it and a 0.5 GB read.
    _config_says("hidden_size: 16", "hidden_size: 8192")(encoder_dir)
    _config_says("bidirectional: true", "bidirectional: false")(encoder_dir)
    config = parse_config((encoder_dir / "config.yaml").read_bytes(), encoder_dir)
    vocab = parse_tokenizer((encoder_dir / "tokenizer.json").read_bytes(), "t").get_vocab_size()
    shapes = encoder_shapes(config.model, vocab)
    assert sum(math.prod(s) for s in shapes.values()) > MAX_PARAMETERS
    table, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        table[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(table).encode()
    with (encoder_dir / ENCODER_FILE).open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        handle.truncate(8 + len(header) + offset)
    with pytest.raises(CheckpointError, match="parameters, over the"):
        load_encoder(encoder_dir)
    with pytest.raises(CheckpointError, match="parameters, over the"):
        read_encoder_config(encoder_dir)  # pretrain --resume: refused before a model is built


# ----------------------------------------------------------------------------------------------
# What a valid but unusual encoder does


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_float_encoders_of_any_width_load_as_float32_with_their_values(
    encoder_dir: Path, tmp_path: Path, dtype: torch.dtype
) -> None:
    _retensor(encoder_dir, lambda t: {k: v.to(dtype) for k, v in t.items()})
    stored = load_file(encoder_dir / ENCODER_FILE)
    encoder = load_encoder(encoder_dir)
    assert all(t.dtype == torch.float32 for t in encoder.tensors.values())
    assert all(torch.equal(encoder.tensors[k], stored[k].float()) for k in stored)
    config = tiny_config(
        tmp_path, **_ENCODER, **{"pretraining.from": str(encoder_dir), "output.name": "clf"}
    )
    run = setup_run(config, None, False, TrainCallback())
    name = "layers.0.forward_rnn.weight_hh_l0"
    assert torch.equal(run.model.state_dict()[name], stored[name].float())


def test_the_nonlinearity_of_an_lstm_is_no_shape(encoder_dir: Path, tmp_path: Path) -> None:
    # LSTM and GRU ignore model.nonlinearity: it must not stop a classifier starting from one.
    config = tiny_config(
        tmp_path,
        **_ENCODER,
        **{"pretraining.from": str(encoder_dir), "model.nonlinearity": "relu", "output.name": "c"},
    )
    run = setup_run(config, None, False, TrainCallback())
    assert run.loop.pretraining is not None and run.loop.pretraining["method"] == "encoder"


def test_a_vanilla_rnn_encoder_still_checks_its_nonlinearity(tmp_path: Path) -> None:
    from rnn_sentiment.training.encoder import shape_mismatches

    tanh, relu = ModelConfig(cell="rnn"), ModelConfig(cell="rnn", nonlinearity="relu")
    assert shape_mismatches(relu, tanh) == [
        "model.nonlinearity is 'relu' but the encoder's is 'tanh'; set "
        "model.nonlinearity=tanh to start from it"
    ]
    assert (
        shape_mismatches(ModelConfig(cell="gru", nonlinearity="relu"), ModelConfig(cell="gru"))
        == []
    )


def test_a_directory_named_bundled_is_recorded_by_its_path(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pretraining.from=./bundled`` is the user's directory: the run's metrics must not say it
    started from the shipped encoder (found by a red-team pass)."""
    shutil.copytree(encoder_dir, tmp_path / "work" / "bundled")
    monkeypatch.chdir(tmp_path / "work")
    encoder = load_encoder("./bundled")
    model = build_model(encoder.config.model, encoder.tokenizer.get_vocab_size(), 2)
    summary = start_from_encoder(model, encoder.tokenizer, encoder)
    assert Path(summary["from"]) == (tmp_path / "work" / "bundled").absolute()
    assert encoder_name(resolve_encoder("bundled")) == "bundled"  # the shipped one


@pytest.mark.parametrize(
    "perplexity",
    [math.nan, math.inf, "x" * 2**20, [1.0] * 1000, {"forward": math.nan, "backward": 3.5}, True],
    ids=["NaN", "infinity", "a 1 MiB string", "a list", "one NaN direction", "a boolean"],
)
def test_an_encoders_metrics_never_reach_the_classifiers_files_unchecked(
    encoder_dir: Path, perplexity: Any
) -> None:
    # Copied verbatim, a NaN made the run's metrics.json invalid JSON, and a 16 MiB value put
    # it and the training state over their own caps: the run could be neither checked nor resumed.
    _edit_json(encoder_dir, "metrics.json", lambda m: {**m, "perplexity": perplexity})
    _resign(encoder_dir)
    encoder = load_encoder(encoder_dir)
    model = build_model(encoder.config.model, encoder.tokenizer.get_vocab_size(), 2)
    summary = start_from_encoder(model, encoder.tokenizer, encoder)
    json.dumps(summary, allow_nan=False)  # strict JSON
    assert len(json.dumps(summary)) < 1000
    found = summary["encoder_perplexity"]
    assert found is None or all(math.isfinite(v) for v in found.values())


def test_a_classifier_from_an_encoder_with_odd_metrics_writes_strict_json(
    encoder_dir: Path, tmp_path: Path
) -> None:
    _edit_json(encoder_dir, "metrics.json", lambda m: {**m, "perplexity": math.nan, "data": [1]})
    _resign(encoder_dir)
    code, out, err = invoke(
        "train",
        *tiny_overrides(
            tmp_path, **_ENCODER, **{"pretraining.from": str(encoder_dir), "training.epochs": 1}
        ),
        "--format",
        "json",
        "-q",
    )
    assert code == 0, err
    strict = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the output"))
    assert strict["pretraining"]["encoder_perplexity"] is None
    written = (tmp_path / "runs" / "tiny" / "metrics.json").read_text()
    json.loads(written, parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))


def _tiny_encoder(pristine: Path, embedding_dim: int) -> tuple[Encoder, ModelConfig]:
    """An encoder that knows only [PAD] and [UNK], of ``embedding_dim``, held in memory."""
    spec = json.loads((pristine / "tokenizer.json").read_text())
    spec["model"]["vocab"] = {"[PAD]": 0, "[UNK]": 1}
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < 2]
    tokenizer = parse_tokenizer(json.dumps(spec).encode(), "tiny")
    cfg = ModelConfig(cell="gru", embedding_dim=embedding_dim, hidden_size=4)
    body = build_model(cfg, 2, 2)
    tensors = {k: v for k, v in body.state_dict().items() if not k.startswith("classifier.")}
    return Encoder(Path("tiny"), Config(model=cfg), tokenizer, tensors, {}), cfg


@pytest.mark.parametrize("embedding_dim", [1, 3])
def test_an_encoder_of_one_known_word_still_gives_new_words_finite_vectors(
    pristine: Path, embedding_dim: int, tmp_path: Path
) -> None:
    # A single vector of a single dimension has no sample spread (NaN): new words must still
    # start finite (the spread is the population's, 0 here).
    encoder, cfg = _tiny_encoder(pristine, embedding_dim)
    from rnn_sentiment.text import TextPipeline

    config = tiny_config(tmp_path)
    pipeline = TextPipeline.learn(["a good film", "a bad film"], config.tokenizer, True)
    model = build_model(cfg, pipeline.tokenizer.get_vocab_size(), 2)
    summary = start_from_encoder(model, pipeline.tokenizer, encoder)
    assert summary["words_from_encoder"] == 1  # [UNK]
    assert torch.isfinite(model.embedding.weight).all()
    assert torch.equal(model.embedding.weight[1], encoder.tensors["embedding.weight"][1])
    assert not model.embedding.weight[PAD_ID].any()


# ----------------------------------------------------------------------------------------------
# pretrain --resume on what is not a stopped pretraining


def _reseal_state(**loop: object) -> Callable[[Path], None]:
    """A tamperer who knows the format: the state's loop counters changed, and sealed anew."""

    def tamper(path: Path) -> None:
        state = path / "state.safetensors"
        with safe_open(state, "pt") as handle:
            meta = json.loads(handle.metadata()["state"])
        meta["loop"].update(loop)
        save_training_state(path, load_file(state), meta)

    return tamper


def _resume(path: Path, *overrides: str) -> tuple[int, str, str]:
    return invoke("pretrain", "--resume", str(path), *overrides, "--quiet")


def test_resuming_a_run_directory_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    code, _, err = invoke(
        "train", *tiny_overrides(tmp_path, **{"output.name": "run", "training.epochs": 1}), "-q"
    )
    assert code == 0, err
    run_dir = tmp_path / "runs" / "run"
    before = _digests(run_dir)
    _assert_one_line(*_resume(run_dir)[::2], "a classifier's run directory, not an encoder")
    assert _digests(run_dir) == before


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (lambda p: (p / "state.safetensors").unlink(), "no training state"),
        (lambda p: _flip_state(p), "checksum"),
        (_config_says("hidden_size: 16", "hidden_size: 65536"), "over the 200,000,000"),
        (lambda p: _flip(p / "config.yaml"), "checksum"),
        (_manifest_adds("labels.json"), "not part of"),
        (lambda p: (p / "tokenizer.json").unlink(), "is missing"),
        (_reseal_state(history=[5]), "loop counters no run could reach"),
        (_reseal_state(epoch=10**6), "loop counters no run could reach"),
        (_reseal_state(pretraining={"method": "encoder", "read": {"tokens": 10**400}}),
         "a number too large"),
    ],
    ids=["no state", "state tampered", "config over the cap", "config tampered",
         "manifest lists a run file", "tokenizer missing", "history of a number",
         "epoch past the history", "tokens past 2**64"],
)  # fmt: skip
def test_resuming_a_broken_encoder_is_one_line_and_changes_nothing(
    encoder_dir: Path, tamper: Callable[[Path], None], expected: str
) -> None:
    tamper(encoder_dir)
    before = _digests(encoder_dir)
    _assert_one_line(*_resume(encoder_dir)[::2], expected)
    assert _digests(encoder_dir) == before


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_state(path: Path) -> None:
    _flip(path / "state.safetensors")


def test_resuming_a_file_is_one_line(encoder_dir: Path) -> None:
    _assert_one_line(*_resume(encoder_dir / "config.yaml")[::2], "not a directory")


def test_resuming_with_another_config_is_refused_and_changes_nothing(encoder_dir: Path) -> None:
    before = _digests(encoder_dir)
    code, _, err = _resume(encoder_dir, "model.hidden_size=24", "pretraining.lm.softmax=full")
    _assert_one_line(code, err, "model.hidden_size: 16 -> 24")
    assert "pretraining.lm.softmax: 'sampled' -> 'full'" in err
    assert _digests(encoder_dir) == before


def test_resuming_a_finished_encoder_changes_nothing(encoder_dir: Path) -> None:
    before = _digests(encoder_dir)
    code, _, err = _resume(encoder_dir)
    assert code == 0, err
    assert _digests(encoder_dir) == before


# ----------------------------------------------------------------------------------------------
# Bugs outside training/encoder.py, documented (patches in the reviewer's report)


def test_a_pretraining_that_fails_to_read_its_data_leaves_no_directory(tmp_path: Path) -> None:
    overrides = tiny_overrides(tmp_path, **_ENCODER, **{"data.source": str(tmp_path / "none")})
    code, _, err = invoke("pretrain", *overrides, "--quiet")
    _assert_one_line(code, err, "not found")
    assert not (tmp_path / "runs" / "tiny").exists()


def _forbid(monkeypatch: pytest.MonkeyPatch, name: str, what: str) -> None:
    """Make ``lm_pretraining.<name>`` fail the test with ``what`` if pretraining calls it."""
    from rnn_sentiment.training import lm_pretraining

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError(what)

    monkeypatch.setattr(lm_pretraining, name, never)


def test_pretrain_refuses_a_model_over_the_cap_before_building_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid(monkeypatch, "LanguageModel", "a model over the cap was built")
    config = tiny_config(tmp_path, **_ENCODER, **{"model.hidden_size": 65536})
    with pytest.raises(ConfigError, match="parameters"):
        pretrain(config)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_pretrain_checks_the_encoder_it_continues_before_any_work(
    encoder_dir: Path, tmp_path: Path
) -> None:
    _flip_last_byte(encoder_dir)
    config = tiny_config(tmp_path, **_ENCODER, **{"pretraining.from": str(encoder_dir)})
    with pytest.raises(CheckpointError, match="checksum"):
        pretrain(config)
    assert not (tmp_path / "runs").exists()


def test_pretrain_from_an_encoder_with_a_number_past_64_bits_is_one_line(
    encoder_dir: Path, tmp_path: Path
) -> None:
    _metrics_is('{"data": {"tokens": 1' + "0" * 400 + "}}")(encoder_dir)
    overrides = tiny_overrides(tmp_path, **_ENCODER, **{"pretraining.from": str(encoder_dir)})
    _assert_one_line(*invoke("pretrain", *overrides, "--quiet")[::2], "a number too large")
    assert not (tmp_path / "runs").exists()


def test_an_existing_output_name_points_at_what_would_continue_it(
    encoder_dir: Path, tmp_path: Path
) -> None:
    """The hint names the command that resumes what the directory holds (a red-team pass found
    ``pretrain`` into a classifier's run suggesting ``pretrain --resume`` on it)."""
    runs = tmp_path / "runs"
    shutil.copytree(encoder_dir, runs / "encoder")
    code, _, err = invoke(
        "train", *tiny_overrides(tmp_path, **{"output.name": "clf", "training.epochs": 1}), "-q"
    )
    assert code == 0, err
    (runs / "empty").mkdir()
    for name, hint in (("encoder", "pretrain --resume"), ("clf", "train --resume"), ("empty", "")):
        for command in ("pretrain", "train"):
            overrides = tiny_overrides(tmp_path, **_ENCODER, **{"output.name": name})
            code, _, err = invoke(command, *overrides, "--quiet")
            _assert_one_line(code, err, "already exists; choose another output.name")
            assert (hint in err) if hint else ("--resume" not in err), err


def test_train_resume_of_an_encoder_says_what_it_is(encoder_dir: Path) -> None:
    code, _, err = invoke("train", "--resume", str(encoder_dir), "--quiet")
    _assert_one_line(code, err, "is an encoder, not a classifier's run directory")
    assert f"pretraining.from={encoder_dir}" in err


def test_pretrain_resume_of_an_encoder_without_state_reads_no_data(
    encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid(monkeypatch, "load_splits", "the data was read")
    (encoder_dir / "state.safetensors").unlink()  # as the shipped encoder is
    with pytest.raises(CheckpointError, match="no training state .* pretraining.from="):
        pretrain(None, resume=encoder_dir)


def test_the_sampled_softmax_loss_is_float32() -> None:
    cfg = ModelConfig(cell="gru", embedding_dim=8, hidden_size=8)
    model = LanguageModel(cfg, np.ones(40), LanguageModelConfig(softmax="sampled", samples=8))
    tokens = torch.randint(2, 40, (3, 6))
    assert model(tokens, torch.full((3,), 6)).dtype == torch.float32


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_virtual_adversarial_loss_under_bf16_matches_fp32(cell: str) -> None:
    from rnn_sentiment.training import adversarial

    if bf16_refused(cell, "cpu"):  # refused there: tests/test_precision.py
        pytest.skip("oneDNN has no LSTM in emulated bf16 (this CPU has no bfloat16 instructions)")

    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=32, hidden_size=32, dropout=0.0)
    model = build_model(cfg, 100, 2).eval()
    tokens, lengths = torch.randint(2, 100, (8, 30)), torch.full((8,), 30)
    found = []
    for bf16 in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embedded = model.embedding(tokens)
            logits = model.from_embeddings(embedded, lengths)
            mask = adversarial.token_mask(lengths, 30, tokens.device)
            loss = adversarial.virtual_adversarial_loss(
                model, embedded, lengths, logits, mask, AdversarialConfig(vat_epsilon=1.0),
                adversarial.embedding_rms(model),
            )  # fmt: skip
        found.append(loss.item())
    assert found[1] == pytest.approx(found[0], rel=0.2)


def test_gradual_unfreezing_under_torchrun_is_refused_without_an_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnn_sentiment.training import loop
    from rnn_sentiment.training.distributed import Ranks

    def claimed(config: object) -> Path:
        raise AssertionError("the run directory was claimed")

    monkeypatch.setattr(loop, "prepare_run_dir", claimed)
    config = tiny_config(tmp_path, **{"training.unfreeze_steps": 5})
    with pytest.raises(ConfigError, match="unfreeze_steps"):
        loop._fresh_run(config, TrainCallback(), Ranks(rank=0, world=2))


def test_the_parameter_count_does_not_depend_on_unfreezing(tmp_path: Path) -> None:
    from rnn_sentiment.training.loop import train

    config = tiny_config(tmp_path, **{"training.unfreeze_steps": 10**6, "training.epochs": 1})
    result = train(config)
    model = build_model(config.model, 320, 2)  # the builtin data's vocabulary
    assert result.metrics["parameters"] == sum(p.numel() for p in model.parameters())


class _Warnings(TrainCallback):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def on_warning(self, text: str) -> None:
        self.warnings.append(text)


def test_an_encoder_from_another_validation_carve_is_warned_about(
    pristine: Path, tmp_path: Path
) -> None:
    cb = _Warnings()
    config = tiny_config(
        tmp_path, **_ENCODER, **{"pretraining.from": str(pristine), "training.seed": 7}
    )
    setup_run(config, None, False, cb)
    assert any("validation accuracy may be optimistic" in w for w in cb.warnings)
    same = _Warnings()
    config = tiny_config(tmp_path, **_ENCODER, **{"pretraining.from": str(pristine),
                                                  "output.name": "same"})  # fmt: skip
    setup_run(config, None, False, same)
    assert not same.warnings


def test_extra_training_sources_that_change_the_carve_are_warned_about(
    pristine: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    with (extra / "train.jsonl").open("w") as handle:
        for i in range(40):
            label = "positive" if i % 2 else "negative"
            handle.write(json.dumps({"text": f"extra review {i} {label}", "label": label}) + "\n")
    cb = _Warnings()
    config = tiny_config(
        tmp_path,
        **_ENCODER,
        **{"pretraining.from": str(pristine), "data.extra_train_sources": f"[{extra}]"},
    )
    setup_run(config, None, False, cb)
    assert any("validation accuracy may be optimistic" in w for w in cb.warnings)


def test_a_bad_pretraining_from_in_a_saved_config_is_named() -> None:
    with pytest.raises(CheckpointError, match="'pretraining.from'"):
        parse_config(b"pretraining:\n  from: [1]\n", Path("enc/config.yaml"))
