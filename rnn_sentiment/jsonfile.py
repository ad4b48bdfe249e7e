"""JSON text from a model directory, a training state or a progress file, read strictly.

Python's ``json`` lets a later copy of a key silently replace an earlier one, so one file could
say one thing to a reader that keeps the first copy and another to one that keeps the last (the
tokenizers library, another JSON parser, a person reviewing the file). Every such file is treated
as possibly hostile, so a key given twice in one object is refused, by name of the file only
(messages never quote a file that failed its check).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnn_sentiment.errors import CheckpointError


class KeyTwice(ValueError):
    """An object of the JSON text gives ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {ascii(key[:40])} is given twice in one object")
        self.key = key


def loads_once_each(data: bytes | str) -> Any:
    """``json.loads(data)``, raising :class:`KeyTwice` when an object gives a key twice (and
    ``ValueError`` or ``RecursionError`` when it is not JSON text, as ``json.loads`` does)."""
    return json.loads(data, object_pairs_hook=_once_each)


def parse_json(data: bytes | str, where: Path | str) -> Any:
    """The value of ``data``, or ``None`` when it is not JSON text or nests too deeply for the
    parser. Raises CheckpointError when an object in it gives a key twice."""
    try:
        return loads_once_each(data)
    except KeyTwice:
        raise CheckpointError(
            f"{where} gives a key twice in one object, so readers could disagree on its value: "
            "it was altered; restore or recreate it"
        ) from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    table = dict(pairs)
    if len(table) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise KeyTwice(key)
            seen.add(key)
    return table
