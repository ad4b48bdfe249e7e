"""Loading an exported model directory: no torch, the same scores, nothing trusted before checked.

A subprocess loads an exported directory and scores reviews with ``torch`` never imported; the
hostile-directory tests plant what an attacker would (usually with the manifest rebuilt to match,
so that the deeper check is the one exercised) and expect one line that does not quote the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference.export import export_model
from rnn_sentiment.inference.exported import (
    EXPORT_FILE,
    MAX_ONNX_BYTES,
    ONNX_FILE,
    ExportedPredictor,
    is_exported_dir,
)
from rnn_sentiment.inference.predictor import Predictor
from tests.helpers import untrained_run

pytest.importorskip("onnxruntime", reason="exported models need the onnx extra: '.[onnx]'")

SECRET = "SECRET-5b1e"  # planted in files that must never be echoed
REVIEWS = [
    "A dull, slow start.<br /><br />Still, the ending was great and I loved it.",
    "",
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    "bad \udcff bytes \ud83d and a literal [UNK]",
    " ".join(["a wonderful film but awful acting"] * 300),
    "a terrible film",
]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM run directory, written without training."""
    root = tmp_path_factory.mktemp("source")
    return untrained_run(root, **{"model.cell": "lstm", "tokenizer.max_length": 32})


@pytest.fixture(scope="module")
def base_export(source_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(source_run, tmp_path_factory.mktemp("exported") / "model")


@pytest.fixture
def exported(base_export: Path, tmp_path: Path) -> Path:
    """A fresh copy of :func:`base_export` to plant things in."""
    return Path(shutil.copytree(base_export, tmp_path / "model"))


def rewrite_manifest(folder: Path, **planted: bytes) -> None:
    """List ``planted`` (name -> the bytes its digest is taken of) as an attacker would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, data in planted.items():
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def refused(folder: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as caught:
        ExportedPredictor.from_dir(folder)
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    return message


TORCH_FREE = """
import json, sys
from rnn_sentiment.inference.exported import ExportedPredictor, is_exported_dir
assert is_exported_dir(sys.argv[1])
predictor = ExportedPredictor.from_dir(sys.argv[1], threads=1)
texts = json.loads(sys.stdin.read())
print(json.dumps({
    "probs": predictor.predict_proba(texts).tolist(),
    "window": predictor.score(texts, "window").tolist(),
    "labels": [p.label for p in predictor.predict(texts)],
    "attributions": predictor.explain(texts[0]).attributions,
    "torch": "torch" in sys.modules,
}))
"""


def test_scoring_never_imports_torch_and_matches_the_run(
    base_export: Path, source_run: Path
) -> None:
    texts = json.dumps(REVIEWS)  # lone surrogates travel as JSON escapes
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(base_export)],
        input=texts,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # onnxruntime's own log lines stay quiet
    out = json.loads(done.stdout)
    assert out["torch"] is False
    reference = Predictor.from_dir(source_run)
    np.testing.assert_allclose(out["probs"], reference.predict_proba(REVIEWS), atol=1e-4)
    np.testing.assert_allclose(out["window"], reference.score(REVIEWS, "window"), atol=1e-4)
    assert out["labels"] == [p.label for p in reference.predict(REVIEWS)]
    np.testing.assert_allclose(
        out["attributions"], reference.explain(REVIEWS[0]).attributions, atol=1e-4
    )


def test_metadata_and_the_public_surface(base_export: Path) -> None:
    predictor = ExportedPredictor.from_dir(base_export)
    assert predictor.path == base_export and predictor.label_names == ["negative", "positive"]
    assert predictor.quantize is None and predictor.notes == []
    assert predictor.predict_proba([]).shape == (0, 2)
    meta = predictor.metadata()
    assert meta["labels"] == ["negative", "positive"]
    assert meta["metrics"]["status"] == "complete"
    assert "LSTM" in meta["model_card"] and meta["export"]["model"]["cell"] == "lstm"


def test_a_run_directory_is_not_an_exported_one(source_run: Path, tmp_path: Path) -> None:
    assert not is_exported_dir(source_run) and not is_exported_dir(tmp_path / "nothing")
    refused(source_run, "not an exported model")


def test_a_modified_file_is_refused(exported: Path) -> None:
    network = bytearray((exported / ONNX_FILE).read_bytes())
    network[len(network) // 2] ^= 1
    (exported / ONNX_FILE).write_bytes(bytes(network))
    refused(exported, "model.onnx is corrupted or was modified")


def test_a_symbolic_link_is_never_followed(exported: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"labels": [SECRET, "b"]}))
    (exported / "labels.json").unlink()
    (exported / "labels.json").symlink_to(secret)
    rewrite_manifest(exported, **{"labels.json": secret.read_bytes()})
    refused(exported, "labels.json is a symbolic link")


def test_an_oversized_network_is_refused_before_it_is_read(exported: Path) -> None:
    with open(exported / ONNX_FILE, "r+b") as handle:
        handle.truncate(MAX_ONNX_BYTES + 1)  # sparse: no disk, and never read
    refused(exported, "model.onnx is 8.*bytes, over the")


def test_only_the_files_of_an_exported_directory_are_listed(exported: Path) -> None:
    (exported / "config.yaml").write_text(SECRET)
    rewrite_manifest(exported, **{"config.yaml": SECRET.encode()})
    refused(exported, "lists a file that is not part of")
    manifest = json.loads((exported / "manifest.json").read_text())
    del manifest["files"]["config.yaml"], manifest["files"]["labels.json"]
    (exported / "manifest.json").write_text(json.dumps(manifest))
    refused(exported, "does not list labels.json")


def test_export_settings_are_checked(exported: Path) -> None:
    info = json.loads((exported / EXPORT_FILE).read_text())
    info["text"][SECRET] = True
    data = json.dumps(info).encode()
    (exported / EXPORT_FILE).write_bytes(data)
    rewrite_manifest(exported, **{EXPORT_FILE: data})
    refused(exported, r"export.json is not an export description .*\(1 problem")
    del info["text"][SECRET]
    info["text"]["tokenizer"]["max_length"] = 31  # the tokenizer truncates at 32
    data = json.dumps(info).encode()
    (exported / EXPORT_FILE).write_bytes(data)
    rewrite_manifest(exported, **{EXPORT_FILE: data})
    refused(exported, "tokenizer.json does not truncate as export.json says")


def test_an_export_description_that_gives_a_key_twice_is_refused(exported: Path) -> None:
    text = (exported / EXPORT_FILE).read_text()
    first = next(iter(json.loads(text)))
    data = ("{" + json.dumps(first) + ": null, " + text.lstrip()[1:]).encode()  # the last copy wins
    (exported / EXPORT_FILE).write_bytes(data)
    rewrite_manifest(exported, **{EXPORT_FILE: data})
    refused(exported, "export.json gives a key twice in one object")


def test_labels_that_do_not_fit_the_network_are_refused(exported: Path) -> None:
    data = json.dumps({"labels": ["negative", "neutral", "positive"]}).encode()
    (exported / "labels.json").write_bytes(data)
    rewrite_manifest(exported, **{"labels.json": data})
    refused(exported, "model.onnx failed on a probe review")


def plant_network(folder: Path, network: bytes) -> None:
    (folder / ONNX_FILE).write_bytes(network)
    rewrite_manifest(folder, **{ONNX_FILE: network})


def test_a_network_of_another_shape_is_refused(exported: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plant_network(exported, onnx.ModelProto.SerializeToString(model))
    refused(exported, "does not take ids and lengths")
    plant_network(exported, b"\x08" + SECRET.encode() * 10)
    refused(exported, "is not a model onnxruntime can run")


def test_external_data_is_never_read(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A network may name a file that holds its weights; loaded from checked bytes, it has no
    # folder to find one in, and onnxruntime refuses it instead of reading the working directory.
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weights = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plant_network(exported, onnx.ModelProto.SerializeToString(model))
    for folder in (tmp_path, exported):
        monkeypatch.chdir(folder)
        refused(exported, "is not a model onnxruntime can run")
