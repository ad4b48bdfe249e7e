"""Exporting a run directory to ONNX: the exported model scores every review as the run does.

Tiny runs are written without training (random weights with large recurrent weights, so every
gate matters) for every cell, direction and pooling; int8 is checked on tiny trained models,
where "clear reviews" exist. Loading an exported directory is ``test_exported.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rnn_sentiment.checkpoint import save_metrics, save_run_files, save_weights
from rnn_sentiment.config import load_config
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.exported import (
    CARD_FILE,
    EXPORT_FILE,
    ExportedPredictor,
    is_exported_dir,
)
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.model import build_model
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.training.loop import train
from tests.helpers import NEGATIVE, POSITIVE, tiny_config, tiny_overrides

pytest.importorskip("onnxruntime", reason="exported models need the onnx extra: '.[onnx]'")

# The awkward reviews of test_one_pipeline.py, plus what only the Python API can be handed.
AWKWARD = [
    "A dull, slow start and far too long.<br /><br />Still, the ending was great and I loved it.",
    "great acting<BR>but a dull plot<br/>",
    "Ein großartiger Film: très émouvant, naïve, ça déchire. Ｆｕｌｌｗｉｄｔｈ ＧＯＯＤ",
    " ".join(["the plot was dull but the acting was great and i loved it"] * 120),  # 1,440 words
    "   i   loved\tit   ",
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    "a terrible film [UNK] [PAD] <b>bold</b> &amp; <br >",
    "!!!",
    "",
    "undecodable \udcff\udcfe bytes and half an emoji \ud83d",
    "\ufeffa byte-order mark, then i loved it",
]
TOLERANCE = 1e-4  # the bar for fp32; measured differences are about 1e-7
POOLINGS = ["last", "mean", "max", "maxmean"]
CELLS = ["rnn", "lstm", "gru"]


def write_run(root: Path, cell: str, bidirectional: bool, pooling: str, **extra: object) -> Path:
    """A run directory of a tiny random model (milliseconds: no training)."""
    config = tiny_config(
        root,
        **{"model.cell": cell, "model.bidirectional": bidirectional, "model.pooling": pooling,
           "model.num_layers": 2 if bidirectional else 1, "data.clean_html": True,
           "tokenizer.max_length": 24, "tokenizer.truncation_side": "left", **extra},
    )  # fmt: skip
    pipeline = TextPipeline.learn(POSITIVE + NEGATIVE + AWKWARD[:3], config.tokenizer, True)
    run_dir = root / "run"
    save_run_files(run_dir, config, pipeline.tokenizer, ["negative", "neutral", "positive"])
    torch.manual_seed(0)
    model = build_model(config.model, pipeline.tokenizer.get_vocab_size(), 3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "weight_hh" in name:
                param.mul_(3)
    save_weights(run_dir, model)
    save_metrics(
        run_dir, {"status": "complete", "test": {"n": 8, "accuracy": 0.5, "macro_f1": 0.4}}
    )
    return run_dir


def mixed_batch() -> list[str]:
    """Every awkward review among reviews of 1 to 40 words, shuffled: many batch shapes."""
    rng = np.random.default_rng(3)
    words = " ".join(POSITIVE + NEGATIVE).split()
    texts = [" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 40, size=60)]
    texts += AWKWARD
    return [texts[i] for i in rng.permutation(len(texts))]


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_fp32_export_scores_as_the_run_does(
    tmp_path: Path, cell: str, bidirectional: bool, pooling: str
) -> None:
    run_dir = write_run(tmp_path, cell, bidirectional, pooling)
    exported = export_model(run_dir, tmp_path / "exported")
    reference = Predictor.from_dir(run_dir)
    onnx = ExportedPredictor.from_dir(exported, batch_size=7)  # several batches of mixed lengths
    texts = mixed_batch()
    expected = reference.predict_proba(texts)
    np.testing.assert_allclose(onnx.predict_proba(texts), expected, atol=TOLERANCE, rtol=0)
    one_by_one = np.concatenate([onnx.predict_proba([text]) for text in AWKWARD])
    np.testing.assert_allclose(one_by_one, reference.predict_proba(AWKWARD), atol=TOLERANCE)
    assert [p.label for p in onnx.predict(texts)] == [p.label for p in reference.predict(texts)]


@pytest.mark.parametrize("cell", CELLS)
def test_windows_explanations_and_streams_match_the_run(tmp_path: Path, cell: str) -> None:
    run_dir = write_run(tmp_path, cell, True, "maxmean")
    reference = Predictor.from_dir(run_dir)
    onnx = ExportedPredictor.from_dir(export_model(run_dir, tmp_path / "exported"))
    windowed = onnx.score(AWKWARD, "window", 5)
    np.testing.assert_allclose(windowed, reference.score(AWKWARD, "window", 5), atol=TOLERANCE)
    assert np.abs(windowed[3] - onnx.score(AWKWARD[3:4])[0]).max() > 1e-3  # windows mattered
    streamed = [p.probabilities for p in onnx.iter_predict(iter(AWKWARD), chunk_size=4)]
    assert streamed == [p.probabilities for p in onnx.predict(AWKWARD)]
    for text in AWKWARD[:8]:
        got, want = onnx.explain(text), reference.explain(text)
        assert (got.words, got.label, got.running_labels) == (
            want.words,
            want.label,
            want.running_labels,
        )
        np.testing.assert_allclose(got.attributions, want.attributions, atol=TOLERANCE)


def test_relu_rnn_and_a_single_label_step(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "rnn", False, "last", **{"model.nonlinearity": "relu"})
    reference = Predictor.from_dir(run_dir)
    onnx = ExportedPredictor.from_dir(export_model(run_dir, tmp_path / "exported"))
    np.testing.assert_allclose(
        onnx.predict_proba(mixed_batch()), reference.predict_proba(mixed_batch()), atol=TOLERANCE
    )


def test_the_directory_is_complete_and_described(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "gru", True, "maxmean")
    exported = export_model(run_dir, tmp_path / "exported")
    assert is_exported_dir(exported) and not is_exported_dir(run_dir)
    names = set(os.listdir(exported))
    assert names == {"model.onnx", "tokenizer.json", "labels.json", "export.json", "metrics.json",
                     "model_card.md", "manifest.json"}  # fmt: skip
    assert set(json.loads((exported / "manifest.json").read_text())["files"]) == names - {
        "manifest.json"
    }
    assert not any(n.endswith((".pt", ".pkl", ".pickle", ".bin")) for n in names)
    info = json.loads((exported / EXPORT_FILE).read_text())
    assert info["text"]["clean_html"] is True
    assert info["text"]["tokenizer"]["max_length"] == 24
    assert info["text"]["tokenizer"]["truncation_side"] == "left"
    assert info["onnx"]["precision"] == "fp32" and info["onnx"]["max_abs_diff"] < TOLERANCE
    card = (exported / CARD_FILE).read_text()
    assert "bidirectional GRU" in card and "accuracy 0.5000" in card
    assert json.loads((exported / "labels.json").read_text()) == {
        "labels": ["negative", "neutral", "positive"]
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported")]  # no staging


def test_an_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "lstm", False, "mean")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists"):
        export_model(run_dir, taken)
    assert (taken / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_exported_dir(export_model(run_dir, empty))  # an empty folder is taken over
    # Found by a red-team pass: the message said to retrain or restore "the run".
    with pytest.raises(CheckpointError, match="is an exported model already; export takes the run"):
        export_model(empty, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_a_broken_run_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "gru", False, "last")
    (run_dir / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="model.safetensors is not a valid safetensors"):
        export_model(run_dir, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model of each cell trained on clear reviews (about a second each)."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    rows = [{"text": t, "label": 1} for t in POSITIVE * 8]
    rows += [{"text": t, "label": 0} for t in NEGATIVE * 8]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {}
    for cell in CELLS:
        overrides = tiny_overrides(
            root / cell,
            **{"data.source": str(data), "model.cell": cell, "model.bidirectional": True,
               "training.epochs": 8, "training.lr": 0.01, "training.metric": "loss",
               "model.dropout": 0, "model.embedding_dropout": 0, "model.pooling": "maxmean"},
        )  # fmt: skip
        runs[cell] = train(load_config(None, overrides)).run_dir
    return runs


@pytest.mark.parametrize("cell", CELLS)
def test_int8_is_close_and_labels_clear_reviews_alike(
    trained_runs: dict[str, Path], tmp_path: Path, cell: str
) -> None:
    run_dir = trained_runs[cell]
    int8 = ExportedPredictor.from_dir(export_model(run_dir, tmp_path / "int8", "int8"))
    reference = Predictor.from_dir(run_dir)
    clear = POSITIVE + NEGATIVE + ["i loved it , truly moving", "awful and boring"]
    expected = reference.predict_proba(clear)
    assert (expected.max(axis=1) > 0.75).all()  # the reviews are clear to this model
    got = int8.predict_proba(clear)
    assert np.abs(got - expected).max() < 0.05
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert int8.quantize == "int8"
    info = int8.info.onnx
    assert info.precision == "int8" and "classifier" in info.int8_parts
    if cell == "lstm":
        assert "LSTM layers" in info.int8_parts and not any("stay fp32" in n for n in info.notes)
    else:
        assert "LSTM layers" not in info.int8_parts
        assert any(f"no int8 {cell.upper()} kernel" in note for note in info.notes)


def test_the_bundled_model_exports_and_scores_alike(tmp_path: Path) -> None:
    exported = ExportedPredictor.from_dir(export_model(BUNDLED_MODEL_DIR, tmp_path / "bundled"))
    reference = Predictor.from_dir(BUNDLED_MODEL_DIR)
    np.testing.assert_allclose(
        exported.predict_proba(AWKWARD), reference.predict_proba(AWKWARD), atol=TOLERANCE
    )
    assert [p.label for p in exported.predict(["This movie is not good", "A joy to watch"])] == [
        "negative",
        "positive",
    ]
    assert exported.info.source.run == "bundled"
    assert exported.info.model.cell == "gru" and exported.info.text.clean_html


def test_the_bundled_model_in_int8_is_smaller_and_labels_alike(tmp_path: Path) -> None:
    exported = export_model(BUNDLED_MODEL_DIR, tmp_path / "int8", "int8")
    int8 = ExportedPredictor.from_dir(exported)
    assert int8.info.onnx.int8_parts == ["embedding table", "classifier"]  # a GRU: no int8 kernel
    weights = (BUNDLED_MODEL_DIR / "model.safetensors").stat().st_size
    assert (exported / "model.onnx").stat().st_size < 0.65 * weights
    reference = Predictor.from_dir(BUNDLED_MODEL_DIR).predict_proba(AWKWARD)
    got = int8.predict_proba(AWKWARD)
    clear = reference.max(axis=1) > 0.8
    assert clear.sum() >= 5
    assert (got.argmax(axis=1)[clear] == reference.argmax(axis=1)[clear]).all()
    assert np.abs(got - reference).max() < 0.05
