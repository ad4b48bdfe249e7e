"""What the hardware computes natively, for the choices that depend on it (bfloat16)."""

from __future__ import annotations

import functools

import torch

# Where autocast or a bf16 model must emulate bfloat16, it is slower than fp32, not faster: on a
# 2-core CPU with AVX2 only, a bidirectional GRU's training step took 6.8 times its fp32 time in
# bf16 (python scripts/bench_precision.py, 2026-12-02; README, "Training speed").


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") has bfloat16 arithmetic: a CPU with AVX-512 BF16
    or AMX (torch.cpu's own probes), a CUDA GPU that supports it."""
    if device_type == "cuda":  # not counting emulation, which pre-Ampere GPUs would report
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def bf16_refused(cell: str, device_type: str) -> bool:
    """Whether training a ``cell`` in bf16 on ``device_type`` is refused: on a CPU without
    bfloat16 instructions oneDNN has no LSTM for emulated bf16 ("could not create a primitive
    descriptor"); the GRU and vanilla RNN run there, only slowly."""
    return cell == "lstm" and device_type == "cpu" and not native_bf16(device_type)


def no_bf16(device_type: str) -> str:
    """Why bf16 is slow on ``device_type``, for messages: "this CPU has no bfloat16 ..."."""
    if device_type == "cuda":
        return "this GPU has no bfloat16 support, so bf16 is emulated: slower than fp32"
    return (
        "this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), so bf16 is emulated: "
        "slower than fp32"
    )
