"""training.precision: auto takes bf16 only where the hardware has it; bf16 where it would be
emulated warns, and an LSTM, which oneDNN cannot run there at all, is refused before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rnn_sentiment import hardware
from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.compare import compare
from rnn_sentiment.errors import ConfigError
from rnn_sentiment.inference import engine
from rnn_sentiment.training import loop
from rnn_sentiment.training.lm_pretraining import pretrain
from rnn_sentiment.training.loop import train, uses_bf16
from tests.helpers import tiny_config, tiny_model
from tests.test_lm_pretraining import _lm_config

CPU = torch.device("cpu")


class _Messages(TrainCallback):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_warning(self, text: str) -> None:
        self.warnings.append(text)


def _without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_native_and_the_others_are_what_they_say(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: native)
    assert uses_bf16(CPU, "auto") is native
    assert uses_bf16(CPU, "bf16") and not uses_bf16(CPU, "fp32")
    with loop.autocast(CPU, "auto"):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)


def _trained(tmp_path: Path, reviews: Path, cell: str, precision: str) -> tuple[Any, _Messages]:
    """A tiny run trained with ``precision``, and what it said."""
    seen = _Messages()
    config = tiny_config(tmp_path, **{"data.source": str(reviews), "model.cell": cell,
                                      "training.precision": precision})  # fmt: skip
    return train(config, seen), seen


def test_auto_trains_in_fp32_without_bf16_and_says_so(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_bf16(monkeypatch)
    result, seen = _trained(tmp_path, jsonl_reviews, "lstm", "auto")
    assert result.metrics["training_precision"] == "fp32" and not seen.warnings
    assert any("device cpu, fp32 (precision auto)," in m for m in seen.messages)


def test_bf16_where_it_is_emulated_warns_and_still_trains(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_bf16(monkeypatch)
    result, seen = _trained(tmp_path, jsonl_reviews, "gru", "bf16")
    assert result.metrics["training_precision"] == "bf16"
    assert seen.warnings == [
        "training.precision=bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), "
        "so bf16 is emulated: slower than fp32; set training.precision=auto (bf16 only where it "
        "is native) or fp32"
    ]


def test_an_lstm_in_emulated_bf16_is_refused_before_any_work(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_bf16(monkeypatch)
    config = tiny_config(tmp_path, **{"data.source": str(jsonl_reviews), "model.cell": "lstm",
                                      "training.precision": "bf16"})  # fmt: skip
    with pytest.raises(ConfigError, match="an LSTM cannot train in emulated bf16"):
        train(config)
    lm = _lm_config(tmp_path, **{"model.cell": "lstm", "training.precision": "bf16"})
    with pytest.raises(ConfigError, match="an LSTM cannot train in emulated bf16"):
        pretrain(lm)
    for runs in (Path(config.output.dir), Path(lm.output.dir)):  # no run directory made
        assert not runs.exists() or not any(runs.iterdir())


def test_scoring_in_emulated_bf16_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("gru")
    assert not any("bf16" in n for n in engine.choose_engine(model, dtype="fp32").notes)
    _without_bf16(monkeypatch)
    notes = engine.choose_engine(model, dtype="bf16").notes
    assert any(n.startswith("bf16: this CPU has no bfloat16 instructions") for n in notes)
    assert not any("bf16" in n for n in engine.choose_engine(model, dtype="fp32").notes)


def test_the_cpu_probe_is_torchs_own_and_still_there() -> None:
    probes = [
        getattr(torch.cpu, n) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    hardware.native_bf16.cache_clear()
    assert hardware.native_bf16("cpu") == any(probe() for probe in probes)


@pytest.mark.parametrize("native", [True, False])
def test_only_an_lstm_on_a_cpu_without_bf16_is_refused(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: native)
    refused = {
        (cell, device): hardware.bf16_refused(cell, device)
        for cell in ("rnn", "lstm", "gru")
        for device in ("cpu", "cuda")
    }
    assert refused == {key: key == ("lstm", "cpu") and not native for key in refused}


def test_a_gpu_that_would_emulate_bf16_counts_as_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[dict[str, object]] = []

    def supported(**kwargs: object) -> bool:
        asked.append(kwargs)
        return kwargs.get("including_emulation", True) is True  # a pre-Ampere GPU's answers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    hardware.native_bf16.cache_clear()
    try:
        assert hardware.native_bf16("cuda") is False and asked == [{"including_emulation": False}]
    finally:
        hardware.native_bf16.cache_clear()


def test_compare_refuses_an_lstm_in_emulated_bf16_before_any_cell_trains(
    tmp_path: Path, jsonl_reviews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_bf16(monkeypatch)
    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "training.precision": "bf16"}
    )
    with pytest.raises(ConfigError, match="an LSTM cannot train in emulated bf16"):
        compare(config, ["rnn", "lstm"], out_dir=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())


def test_a_resumed_lstm_is_told_how_to_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_bf16(monkeypatch)
    config = tiny_config(Path("unused"), **{"model.cell": "lstm", "training.precision": "bf16"})
    with pytest.raises(ConfigError, match="resume with training.precision=fp32 --force"):
        loop.check_precision(config, CPU, TrainCallback(), resuming=True)


def test_pretraining_records_what_it_computed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_bf16(monkeypatch)
    seen = _Messages()
    result = pretrain(_lm_config(tmp_path, **{"training.precision": "auto"}), seen)
    assert result.metrics["training_precision"] == "fp32" and not seen.warnings
    assert any(", fp32 (precision auto), encoder " in m for m in seen.messages)
