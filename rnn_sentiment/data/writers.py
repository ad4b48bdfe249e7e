"""Output rows of batch scoring as each format holds them, and the bytes or files they become.

Values are converted for their output format (:func:`output_column`; the table of what each format
holds is in :mod:`rnn_sentiment.inference.scoring`): a value that cannot be kept as it is flags its
row. Writers turn a chunk of output rows into bytes (text formats; gzip members concatenate into
one valid gzip file) or into a Parquet part, so output can be committed chunk by chunk and resumed.

pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import gzip
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnn_sentiment.text import fix_text

# ----------------------------------------------------------------------------------------------
# Values for output: what each format holds

# Deeper values are not written (json's encoder would run out of stack): null, row flagged.
MAX_DEPTH = 64
REPAIRED = "invalid UTF-8 replaced"


class _TooDeep(Exception):
    pass


def output_column(
    values: Sequence[Any], kind: str, arrow_type: Any = None
) -> tuple[Any, list[str]]:
    """Input values as output format ``kind`` holds them, and each value's problem ('' if none).

    ``arrow_type``: the Parquet type to keep (a Parquet input's column); without it a Parquet
    column holds text, as a CSV cell does. A value that cannot be kept is None, with its problem.
    """
    if kind == "parquet" and arrow_type is not None and not _is_text_type(arrow_type):
        return _arrow_column(values, arrow_type)
    convert = json_value if kind == "jsonl" else cell_value
    pairs = [convert(value) for value in values]
    return [value for value, _ in pairs], [problem for _, problem in pairs]


def json_value(value: Any) -> tuple[Any, str]:
    """``value`` as JSON holds it, and its problem ('' if none)."""
    repaired: list[bool] = []
    try:
        converted = _json(value, repaired, 0)
    except _TooDeep:
        return None, f"nested more than {MAX_DEPTH} levels deep"
    return converted, REPAIRED if repaired else ""


def cell_value(value: Any) -> tuple[str | None, str]:
    """``value`` as a CSV cell (None: empty): a string as it is, others as their JSON text."""
    if isinstance(value, str):
        fixed, bad = fix_text(value)
        return fixed, REPAIRED if bad else ""
    converted, problem = json_value(value)
    if converted is None or isinstance(converted, str):
        return converted, problem
    return json.dumps(converted, ensure_ascii=False), problem


def _json(value: Any, repaired: list[bool], depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN and Infinity are not JSON
    if isinstance(value, str):
        return _repaired(value, repaired)
    if depth >= MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        return {
            _repaired(str(k), repaired): _json(v, repaired, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):  # a Parquet map is a list of (key, value) tuples
        return [_json(v, repaired, depth + 1) for v in value]
    return _repaired(_scalar_text(value), repaired)


def _scalar_text(value: Any) -> str:
    """The text of a value JSON has no type for."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact, unlike a float: "1.50"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()  # a datetime too: 2020-01-02T03:04:05+00:00
    if isinstance(value, datetime.timedelta):
        return _iso_duration(value)
    return str(value)


def _iso_duration(value: datetime.timedelta) -> str:
    """ISO 8601, as pandas writes one: P1DT2H3M4.5S."""
    if hasattr(value, "isoformat"):  # pandas' Timedelta (pyarrow's nanosecond durations)
        return str(value.isoformat())
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    minutes, seconds = divmod(value.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    fraction = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
    return f"{sign}P{value.days}DT{hours}H{minutes}M{seconds}{fraction}S"


def _repaired(text: str, repaired: list[bool]) -> str:
    fixed, bad = fix_text(text)
    if bad:
        repaired.append(True)
    return fixed


def _is_text_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))


def _arrow_value(value: Any, repaired: list[bool], depth: int) -> Any:
    """``value`` with its text repaired, its type kept (NaN stays NaN: Parquet holds it)."""
    if isinstance(value, str):
        return _repaired(value, repaired)
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        return {k: _arrow_value(v, repaired, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_arrow_value(v, repaired, depth + 1) for v in value)
    return value


def _arrow_column(values: Sequence[Any], arrow_type: Any) -> tuple[Any, list[str]]:
    """A pyarrow array of ``arrow_type``; a value that does not fit it is null, and flagged."""
    import pyarrow as pa

    cleaned: list[Any] = []
    problems: list[str] = []
    for value in values:
        repaired: list[bool] = []
        try:
            cleaned.append(_arrow_value(value, repaired, 0))
            problems.append(REPAIRED if repaired else "")
        except _TooDeep:
            cleaned.append(None)
            problems.append(f"nested more than {MAX_DEPTH} levels deep")
    try:
        return pa.array(cleaned, type=arrow_type), problems
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass  # find the values that do not fit, one by one (rare)
    for i, value in enumerate(cleaned):
        try:
            pa.array([value], type=arrow_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            cleaned[i] = None
            problems[i] = problems[i] or f"value not writable as Parquet {arrow_type}"
    return pa.array(cleaned, type=arrow_type), problems


# ----------------------------------------------------------------------------------------------
# Writers


def encode_rows(rows: dict[str, list[Any]], kind: str, header: bool, compress: bool) -> bytes:
    """One chunk of output rows as bytes of a text format (a gzip member when ``compress``)."""
    names = list(rows)
    n = len(next(iter(rows.values()))) if rows else 0
    if kind == "jsonl":  # values are JSON-safe (json_value): no NaN, no surrogates
        lines = (
            json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False) + "\n"
            for values in zip(*rows.values(), strict=True)
        )
        text = "".join(lines)
    else:
        records: list[Sequence[Any]] = [names] if header else []
        records += zip(*(rows[name] for name in names), strict=True) if n else []
        text = _csv_text(records, "\t" if kind == "tsv" else ",")
    data = text.encode("utf-8", "replace")  # a last guard: values come repaired
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def _csv_text(records: list[Sequence[Any]], delimiter: str) -> str:
    buffer = io.StringIO()
    plain = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    # With a "\n" line terminator the csv module leaves a lone "\r" unquoted, which every reader
    # takes for a line end; a record holding one is written with every field quoted.
    quoted = csv.writer(buffer, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_ALL)
    if any(map(_has_cr, records)):
        for record in records:
            (quoted if _has_cr(record) else plain).writerow(record)
    else:
        plain.writerows(records)
    return buffer.getvalue()


def _has_cr(record: Sequence[Any]) -> bool:
    return any(isinstance(value, str) and "\r" in value for value in record)


def parquet_table(rows: dict[str, list[Any]], schema: Any) -> Any:
    """One chunk of output rows as the pyarrow table a Parquet output holds."""
    import pyarrow as pa

    return pa.Table.from_pydict(rows, schema=schema)


def write_parquet_part(rows: dict[str, list[Any]], schema: Any, path: Path) -> None:
    """One chunk of output rows as a small Parquet file (a part merged when scoring ends)."""
    import pyarrow.parquet as pq

    pq.write_table(parquet_table(rows, schema), path)


def merge_parquet_parts(parts: Sequence[Path], schema: Any, path: Path) -> None:
    """Concatenate part files into one Parquet file, one row group per part: memory stays flat."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part, schema=schema))
