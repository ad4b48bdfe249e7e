"""The one decision of which engine scores, in which precision, and what it reports."""

from __future__ import annotations

import pytest
import torch

from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.inference import native
from rnn_sentiment.inference.engine import SMALL_BATCH, choose_engine
from rnn_sentiment.inference.stepwise import StepwiseClassifier
from tests.helpers import LENGTHS, tiny_model, token_batch


def test_int8_keeps_a_relu_rnn_recurrence_in_fp32_and_says_so() -> None:
    tanh = choose_engine(tiny_model("rnn"), quantize="int8")
    relu = choose_engine(tiny_model("rnn", nonlinearity="relu"), quantize="int8")
    assert isinstance(tanh.model, StepwiseClassifier) and tanh.model.recurrent_precision == "int8"
    assert isinstance(relu.model, StepwiseClassifier) and relu.model.recurrent_precision == "fp32"
    assert any("ReLU" in note for note in relu.notes)
    old = choose_engine(tiny_model("rnn"), quantize="int8", stepwise=False)
    assert old.name == "nn" and not isinstance(old.model, StepwiseClassifier)
    assert any("nn.RNN" in note for note in old.notes)


def test_int8_and_bf16_together_are_refused() -> None:
    with pytest.raises(CheckpointError, match="cannot be combined"):
        choose_engine(tiny_model("gru"), quantize="int8", dtype="bf16")


def test_small_fp32_batches_run_the_fused_layers_exactly() -> None:
    model = tiny_model("gru", pooling="max")
    tokens, lengths = token_batch()
    engine = choose_engine(model)
    assert engine.name == "stepwise" and len(LENGTHS) < SMALL_BATCH
    with torch.no_grad():
        assert torch.equal(engine.model(tokens, lengths), model(tokens, lengths))


@pytest.mark.parametrize("precision", [{"quantize": "int8"}, {"dtype": "bf16"}])
def test_int8_and_bf16_never_depend_on_the_batch_size(precision: dict) -> None:
    # A review's probability must not change with how many reviews share its batch: small
    # batches are not handed to the fp32 layers in int8 or bf16.
    model = tiny_model("lstm", pooling="mean")
    engine = choose_engine(model, **precision)
    tokens, lengths = token_batch()
    with torch.no_grad():
        together = engine.model(tokens, lengths)
        alone = torch.cat([engine.model(tokens[i : i + 1], lengths[i : i + 1]) for i in range(7)])
        exact = model(tokens, lengths)
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=0)
    assert not torch.equal(together, exact)  # really int8 / bf16, not the fp32 layers


def test_the_compiled_steps_can_be_turned_off_or_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(verbose: bool = False) -> None:
        raise RuntimeError("error: command 'c++' failed: No such file or directory")

    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "build", no_compiler)
    missing = choose_engine(tiny_model("gru", bidirectional=True), quantize="int8")
    assert missing.native and missing.model.compiled is None
    assert "c++" in (native.failure() or "")
    monkeypatch.setenv("RNN_SENTIMENT_NATIVE", "0")
    off = choose_engine(tiny_model("gru", bidirectional=True), quantize="int8")
    assert not off.native and off.model.compiled is None
    assert any("RNN_SENTIMENT_NATIVE=0" in note for note in off.notes)
    tokens, lengths = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(off.model(tokens, lengths), missing.model(tokens, lengths))
