"""JSON text from a model directory, a training state or a progress file, read strictly.

Python's ``json`` lets a later copy of a key silently replace an earlier one, so one file could
say one thing to a reader that keeps the first copy and another to one that keeps the last (the
tokenizers library, another JSON parser, a person reviewing the file). Every such file is treated
as possibly hostile, so a key given twice in one object is refused, by name of the file only
(messages never quote a file that failed its check). So is a number no file of ours holds: an
integer of 2**64 or more in magnitude (larger than any count, size, seed or file time of ours;
past 1.8e308, ``math.isfinite`` even raises on it), or a float literal that overflows to
infinity (``1e400``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rnn_sentiment.errors import CheckpointError

# Counters, sizes, seeds and nanosecond file times that files of ours hold are all smaller in
# magnitude (a file dated in the year 2300 has an st_mtime_ns past 2**63, not past 2**64).
_INT_LIMIT = 2**64


class KeyTwice(ValueError):
    """An object of the JSON text gives ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {ascii(key[:40])} is given twice in one object")
        self.key = key


def loads_once_each(data: bytes | str) -> Any:
    """``json.loads(data)``, raising :class:`KeyTwice` when an object gives a key twice (and
    ``ValueError`` or ``RecursionError`` when it is not JSON text, as ``json.loads`` does)."""
    return json.loads(data, object_pairs_hook=_once_each)


class OutOfRange(ValueError):
    """A number of the JSON text is an integer of 2**64 or more in magnitude, or a float literal
    past a float's range."""


def parse_json(data: bytes | str, where: Path | str) -> Any:
    """The value of ``data``, or ``None`` when it is not JSON text or nests too deeply for the
    parser. Raises CheckpointError when an object in it gives a key twice, or a number in it is
    out of range (see the module's docstring)."""
    try:
        return json.loads(
            data, object_pairs_hook=_once_each, parse_int=_int64, parse_float=_finite_float
        )
    except KeyTwice:
        raise CheckpointError(
            f"{where} gives a key twice in one object, so readers could disagree on its value: "
            "it was altered; restore or recreate it"
        ) from None
    except OutOfRange:
        raise CheckpointError(
            f"{where} holds a number too large for a file of this kind (an integer of 2**64 "
            "or more, or a float past 1.8e308): it was altered; restore or recreate it"
        ) from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _int64(literal: str) -> int:
    value = int(literal)  # Python's own limit on digits applies first (ValueError)
    if abs(value) >= _INT_LIMIT:
        raise OutOfRange(literal[:40])
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # json writes infinity as Infinity, never as a literal like 1e400
        raise OutOfRange(literal[:40])
    return value


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    table = dict(pairs)
    if len(table) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise KeyTwice(key)
            seen.add(key)
    return table
