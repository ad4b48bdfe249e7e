"""The bundled default model: shipped in the package, small, and right on clear examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open

from rnn_sentiment.checkpoint import load_run
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, resolve_model_dir
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.runfiles import CONFIG_FILE, WEIGHTS_FILE
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parent.parent
CLEAR = [
    ("This movie is not good", "negative"),
    ("This movie is not bad", "positive"),
    ("A wonderful, moving film with brilliant performances.", "positive"),
    ("The worst film I have seen in years: boring, stupid and far too long.", "negative"),
    ("it 's a charming and often affecting journey .", "positive"),
    ("unfunny and lifeless .", "negative"),
]


def test_the_bundled_model_is_a_small_verified_run() -> None:
    run = load_run(BUNDLED_MODEL_DIR)  # checks every file against the manifest
    weights = BUNDLED_MODEL_DIR / WEIGHTS_FILE
    assert weights.stat().st_size <= 10 * 1024 * 1024
    with safe_open(str(weights), "pt") as handle:
        dtypes = {str(handle.get_tensor(name).dtype) for name in handle.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float16"}
    config = yaml.safe_load((BUNDLED_MODEL_DIR / CONFIG_FILE).read_text())
    committed = yaml.safe_load((ROOT / "configs" / "bundled.yaml").read_text())
    assert config["model"] == {**config["model"], **committed["model"]}
    assert run.label_names == ["negative", "positive"]


@pytest.mark.parametrize(("text", "label"), CLEAR)
def test_the_bundled_model_gets_clear_examples_right(text: str, label: str) -> None:
    predictor = Predictor.from_dir(BUNDLED_MODEL_DIR)
    [prediction] = predictor.predict([text])
    assert prediction.label == label
    assert prediction.score > 0.6


def test_predict_falls_back_to_the_bundled_model_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ here
    assert resolve_model_dir(None) == BUNDLED_MODEL_DIR
    code, out, err = invoke("predict", "This movie is not good", "--format", "json")
    assert code == 0 and '"label": "negative"' in out
    assert "model: the bundled model" in err


def test_classify_uses_the_bundled_model_loads_it_once_and_names_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import rnn_sentiment
    import rnn_sentiment.inference.predictor  # the submodule must not shadow the function

    monkeypatch.chdir(tmp_path)  # no runs/ here
    monkeypatch.setattr(rnn_sentiment, "_NAMED", set())
    monkeypatch.setattr(rnn_sentiment, "_LAST", [])
    from rnn_sentiment.inference.exported import ExportedPredictor
    from rnn_sentiment.inference.models import BUNDLED_EXPORT_DIR

    loads: list[Path] = []
    real = ExportedPredictor.from_dir
    monkeypatch.setattr(  # the bundled model runs from its exported copy
        ExportedPredictor,
        "from_dir",
        staticmethod(lambda d, *a, **k: loads.append(Path(d)) or real(d, *a, **k)),
    )
    first = rnn_sentiment.classify(["This movie is not good"])
    second = rnn_sentiment.classify(["This movie is not bad"])
    assert [first[0].label, second[0].label] == ["negative", "positive"]
    assert loads == [BUNDLED_EXPORT_DIR]
    assert capsys.readouterr().err.count("model: the bundled model") == 1


def test_the_exported_copy_is_the_bundled_model() -> None:
    # predict's default runs the exported copy: it must score as the run directory does.
    from rnn_sentiment.inference.exported import ExportedPredictor
    from rnn_sentiment.inference.models import BUNDLED_EXPORT_DIR, load_predictor

    texts = ["This movie is not good", "A joy from start to end<br /><br />truly", "", "ok " * 900]
    exported = ExportedPredictor.from_dir(BUNDLED_EXPORT_DIR)
    run = Predictor.from_dir(BUNDLED_MODEL_DIR)
    np.testing.assert_allclose(exported.predict_proba(texts), run.predict_proba(texts), atol=1e-4)
    assert isinstance(load_predictor(BUNDLED_MODEL_DIR), ExportedPredictor)
    assert isinstance(load_predictor(BUNDLED_MODEL_DIR, quantize="int8"), Predictor)


def test_predict_with_the_default_model_never_imports_torch(tmp_path: Path) -> None:
    # Nor what else one review does not need (they cost its start-up time): YAML, progress bars.
    env = {k: v for k, v in os.environ.items() if k != "RNN_SENTIMENT_MODEL"}
    cli = ("import runpy, sys; sys.argv[0] = 'rnn-sentiment'\n"
           "try: runpy.run_module('rnn_sentiment', run_name='__main__')\n"
           "finally: print(any(m in sys.modules for m in ('torch', 'yaml', 'rich.progress')),"
           " file=sys.stderr)")  # fmt: skip
    for extra in (["This movie is not good"], ["--explain", "not good"]):
        command = [sys.executable, "-c", cli, "predict", "--format", "json", *extra]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=tmp_path, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[-1] == "False", done.stderr
