"""The stepwise scorer computes what SentimentRNN does, for every cell, direction and pooling."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from rnn_sentiment.config import ModelConfig
from rnn_sentiment.data.batching import collate
from rnn_sentiment.inference import stepwise
from rnn_sentiment.inference.stepwise import StepwiseClassifier
from rnn_sentiment.model import build_model
from tests.helpers import LENGTHS, tiny_model, token_batch


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "max", "mean", "maxmean"])
def test_fp32_equals_the_pytorch_layers(cell: str, bidirectional: bool, pooling: str) -> None:
    model = tiny_model(cell, bidirectional=bidirectional, pooling=pooling, num_layers=2)
    tokens, lengths = token_batch()
    with torch.no_grad():
        expected = model(tokens, lengths)
        torch.testing.assert_close(
            StepwiseClassifier(model, fused_below=0)(tokens, lengths), expected
        )


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_without_the_lookup_table_and_with_relu(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stepwise, "LOOKUP_BUDGET_BYTES", 0)  # a vocabulary too big for a table
    model = tiny_model(cell, bidirectional=True, nonlinearity="relu", pooling="maxmean")
    fast = StepwiseClassifier(model, fused_below=0)
    assert fast.lookup is None
    tokens, lengths = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens, lengths), model(tokens, lengths))


def test_padding_and_batch_order_change_nothing() -> None:
    model = tiny_model("lstm", bidirectional=True, pooling="max")
    fast = StepwiseClassifier(model, fused_below=0)
    tokens, lengths = token_batch()
    padded = torch.cat([tokens, torch.full((len(LENGTHS), 5), 7)], dim=1)  # garbage, not [PAD]
    reverse = torch.arange(len(LENGTHS) - 1, -1, -1)
    with torch.no_grad():
        logits = fast(tokens, lengths)
        torch.testing.assert_close(fast(padded, lengths), logits)
        torch.testing.assert_close(fast(tokens[reverse], lengths[reverse]), logits[reverse])
        for row in (1, 2):
            alone = fast(tokens[row : row + 1, : LENGTHS[row]], lengths[row : row + 1])
            torch.testing.assert_close(alone[0], logits[row])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_and_int8_stay_close(precision: str, cell: str) -> None:
    model = tiny_model(cell, bidirectional=True, pooling="maxmean", num_layers=2)
    tokens, lengths = token_batch()
    with torch.no_grad():
        exact = torch.softmax(model(tokens, lengths), dim=-1)
        fast = torch.softmax(
            StepwiseClassifier(model, precision, fused_below=0)(tokens, lengths), dim=-1
        )  # type: ignore[arg-type]
    assert 0 < (fast - exact).abs().max() < 0.03  # approximate, and not far off


def compiled_or_skip() -> None:
    """The compiled steps must build wherever a C++ compiler is; elsewhere the test is skipped."""
    from rnn_sentiment.inference import native

    if native.kernels() is None:
        # On Linux x86-64 with g++ (development and CI) the build must work; elsewhere the flags
        # may not suit the compiler, and the scorer rightly falls back to its PyTorch steps.
        if sys.platform == "linux" and platform.machine() == "x86_64" and shutil.which("g++"):
            pytest.fail(f"g++ is here but the compiled steps did not build: {native.failure()}")
        pytest.skip(f"compiled steps unavailable here ({native.failure()})")


SHAPES = [(1, False, "last"), (2, True, "maxmean"), (1, True, "max"), (2, False, "mean")]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "relu"])
@pytest.mark.parametrize("layers,bidirectional,pooling", SHAPES)
def test_compiled_steps_equal_the_pytorch_steps(
    precision: str, cell: str, layers: int, bidirectional: bool, pooling: str
) -> None:
    compiled_or_skip()
    extra = {"nonlinearity": "relu"} if cell == "relu" else {}
    model = tiny_model(
        "rnn" if cell == "relu" else cell, num_layers=layers, bidirectional=bidirectional,
        pooling=pooling, **extra,
    )  # fmt: skip
    fast = StepwiseClassifier(model, precision, fused_below=0)  # type: ignore[arg-type]
    slow = StepwiseClassifier(model, precision, fused_below=0, native=False)  # type: ignore[arg-type]
    assert fast.compiled is not None and slow.compiled is None
    tokens, lengths = token_batch()
    with torch.no_grad():
        if precision == "fp32":
            torch.testing.assert_close(fast(tokens, lengths), slow(tokens, lengths))
            torch.testing.assert_close(fast(tokens, lengths), model(tokens, lengths))
        else:  # round(127 h) may fall the other way with another exp: not bit-equal
            torch.testing.assert_close(fast(tokens, lengths), slow(tokens, lengths), atol=2e-2,
                                       rtol=0)  # fmt: skip


def test_compiled_steps_without_the_lookup_table(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_or_skip()
    monkeypatch.setattr(stepwise, "LOOKUP_BUDGET_BYTES", 0)
    monkeypatch.setattr(stepwise, "BLOCK_ROWS", 8)  # several blocks of steps per direction
    model = tiny_model("lstm", bidirectional=True, pooling="maxmean")
    fast = StepwiseClassifier(model, "int8", fused_below=0)
    assert fast.lookup is None and fast.compiled is not None
    tokens, lengths = token_batch()
    with torch.no_grad():
        expected = StepwiseClassifier(model, "int8", fused_below=0, native=False)(tokens, lengths)
        torch.testing.assert_close(fast(tokens, lengths), expected)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_compiled_steps_on_a_real_batch_split_between_threads(cell: str) -> None:
    """Enough rows for both threads (each takes rows with equal work), under inference_mode."""
    compiled_or_skip()
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=16, hidden_size=24, bidirectional=True,  # type: ignore[arg-type]
                      pooling="maxmean", num_layers=2)  # fmt: skip
    model = build_model(cfg, vocab_size=80, num_labels=2).eval()
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 60, (150,), generator=generator).tolist()
    tokens, lengths = collate([torch.randint(2, 80, (n,), generator=generator).tolist()
                               for n in sizes])  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            expected = model(tokens, lengths)
            fast = StepwiseClassifier(model, "fp32")
            torch.testing.assert_close(fast(tokens, lengths), expected)
            quantized = StepwiseClassifier(model, "int8")(tokens, lengths)
            reference = StepwiseClassifier(model, "int8", native=False)(tokens, lengths)
            torch.testing.assert_close(quantized, reference, atol=2e-2, rtol=0)
    finally:
        torch.set_num_threads(threads)


def test_bad_inputs_to_the_compiled_steps_raise_instead_of_crashing() -> None:
    compiled_or_skip()
    model = tiny_model("lstm")
    fast = StepwiseClassifier(model, "int8", fused_below=0)
    tokens, lengths = token_batch()
    with torch.no_grad(), pytest.raises((IndexError, RuntimeError)):
        fast(tokens.masked_fill(tokens == tokens[0, 0], 10**9), lengths)  # no such token
    from rnn_sentiment.inference import native

    compiled = native.kernels()
    assert compiled is not None
    cell = fast.layers[0][0]
    h = torch.zeros(4, cell.hidden)
    q = torch.zeros(4, cell.hidden, dtype=torch.int8)
    acc = torch.empty(4, cell.bias.shape[0], dtype=torch.int32)
    table = torch.zeros(5, cell.bias.shape[0])
    ids = torch.zeros(3, 4, dtype=torch.long)
    scale = cell.hh.scale
    args = (table, ids, [4, 4, 4], cell.hh.weight, scale, None, h, torch.zeros_like(h), q, acc)
    compiled.run_steps(0, *args, None, None, None, 0)  # well formed: fine
    bad = {
        "rising running rows": (table, ids, [2, 4, 4], *args[3:]),
        "more steps than ids": (table, ids, [4, 4, 4, 4], *args[3:]),
        "id outside the table": (table, ids + 7, *args[2:]),
        "no cell state": (*args[:7], None, *args[8:]),
        "no int8 copy of h": (*args[:8], None, acc),
    }
    for what, call in bad.items():
        with pytest.raises(RuntimeError):
            compiled.run_steps(0, *call, None, None, None, 0)
            pytest.fail(f"accepted: {what}")


def test_a_killed_build_neither_blocks_nor_leaves_a_library_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's lock file and a library without the 'complete' marker are from a killed build."""
    from torch.utils import cpp_extension

    from rnn_sentiment.inference import native

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = native.build_dir()
    old, recent = folder.parent / "0ld", folder.parent / "recent"
    old.mkdir()
    recent.mkdir()
    os.utime(old, (0, time.time() - 40 * 86400))  # unused for 40 days: pruned after a build
    (folder / "lock").write_text("")  # torch would wait for this file for ever
    half = folder / f"{native._name(folder)}.so"
    half.write_bytes(b"\x7fELF truncated")
    built: list[str] = []

    def fake_load(name: str, build_directory: str, **_: object) -> str:
        assert not (Path(build_directory) / "lock").exists() and not half.exists()
        built.append(name)
        half.write_bytes(b"a library")
        return "module"

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert native.build() == "module"
    assert built == [native._name(folder)] and (folder / "complete").is_file()
    assert not old.exists() and recent.is_dir()
