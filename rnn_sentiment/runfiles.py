"""A run directory's files: their names and caps, and reading them from an untrusted directory.

A run directory may come from anyone (a download, a shared drive), so nothing in it is trusted
before it is checked. This module guards against:

- files that are not the run's: a file is read only if the manifest lists it (by one of the
  names of :data:`RUN_FILES`, nothing else), from the directory itself: a symbolic link, a FIFO
  or a device is refused, never followed or read (no planted link to ``/dev/zero`` or a secret);
- a swap between check and use: each file is opened once and read whole, and the bytes whose
  checksum was checked are the bytes that are parsed;
- files made to exhaust memory: each is read within a cap (:data:`MAX_FILE_BYTES`), and sizes
  come before allocation: the model a config describes is measured on the meta device (at most
  :data:`MAX_PARAMETERS`), every tensor in a safetensors header (itself at most
  :data:`MAX_HEADER_BYTES`) must have the shape that model implies, and the file must be exactly
  as long as its header says, before the weights are read; the tokenizer's vocabulary ids must be
  0, 1, 2, ... (see :func:`rnn_sentiment.tokenizer.parse_tokenizer`); labels are capped in number
  and length (:data:`MAX_LABELS`, :data:`MAX_LABEL_CHARS`);
- code and bombs in data: weights are safetensors only (a pickle is refused unread), and the
  config is plain YAML (no tags, no aliases);
- leaks through errors: error messages never quote a file's content, so a planted file cannot be
  read back through them.

Every problem is a one-line :class:`~rnn_sentiment.errors.CheckpointError`.
:mod:`rnn_sentiment.checkpoint` writes run directories and loads them through this module; an
exported model directory (:mod:`rnn_sentiment.inference.exported`) is read through it too, with
its own file names and caps. Reading a file does not import torch (only tensors need it), so an
exported model loads without it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

from pydantic import BaseModel, ValidationError

from rnn_sentiment.config import Config
from rnn_sentiment.errors import CheckpointError, DataError
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.text import fix_text
from rnn_sentiment.tokenizer import MAX_TOKENIZER_BYTES

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.safetensors"
CALIBRATION_FILE = "calibration.json"  # optional: the temperature the probabilities are scaled by
FORMAT_VERSION = 1
RUN_FILES = (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, LABELS_FILE, METRICS_FILE, CALIBRATION_FILE)
# The names of a model directory's own files (a run's, its training state's, an exported
# model's: exported.EXPORTED_FILES); an output may be written beside them, never over one.
MODEL_DIR_NAMES = frozenset(
    {*RUN_FILES, MANIFEST_FILE, STATE_FILE, "model.onnx", "export.json", "model_card.md"}
)

# What a run directory may hold. Each cap is far above what this package trains (its largest
# shipped config has 6.5 million parameters, the bundled tokenizer.json is 383 KiB) and far below
# what would exhaust a machine; a directory over one is refused before anything is allocated.
MAX_PARAMETERS = 200_000_000  # 800 MB as float32
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors header: the tensor table and the state's JSON
MAX_LABELS = 1_000
MAX_LABEL_CHARS = 1_000
MAX_FILE_BYTES = {
    MANIFEST_FILE: 64 * 2**10,
    CONFIG_FILE: 64 * 2**10,  # a resolved config is about 1.5 KiB
    TOKENIZER_FILE: MAX_TOKENIZER_BYTES,  # 32 MiB
    LABELS_FILE: 2**20,
    METRICS_FILE: 16 * 2**20,
    CALIBRATION_FILE: 64 * 2**10,
}
# A temperature outside this range is no calibration but a broken or planted file.
TEMPERATURE_RANGE = (0.01, 100.0)
# Bytes per element of the dtypes a run's tensors may have (weights float, RNG state uint8).
_DTYPE_BYTES = {"U8": 1, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------------------------------
# Reading a run directory's files


class RunFiles:
    """A run directory opened for reading: its manifest read once, then each file read once, from
    the directory itself, within its cap, and checked against the manifest before it is parsed.

    ``names`` and ``caps``: the files the directory may hold and the byte cap of each one read
    with :meth:`read` (the manifest's included); a run directory's by default.
    """

    def __init__(
        self,
        path: Path,
        needed: Iterable[str],
        names: Collection[str] = RUN_FILES,
        caps: Mapping[str, int] = MAX_FILE_BYTES,
    ) -> None:
        self.path = path
        self.names, self.caps = names, caps
        self._dir_fd = _open_dir_fd(path)
        try:
            self.manifest_sha256, self.digests = self._read_manifest(set(needed))
        except BaseException:
            os.close(self._dir_fd)
            raise

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._dir_fd)

    def read(self, name: str) -> bytes:
        """The whole file, checked against its manifest entry."""
        where = self.path / name
        digest = self._digest(name)
        with open_file(self._dir_fd, where) as (handle, size):
            _check_size(where, size, self.caps[name])
            data = handle.read(size)
        _check_digest(where, data, digest)
        return data

    def read_tensors(
        self, name: str, check: Callable[[Header, Path], None]
    ) -> dict[str, torch.Tensor]:
        """A safetensors file's tensors: its header read and ``check``-ed, and its length matched
        against the header, before the rest of it is read and checked against the manifest."""
        where = self.path / name
        digest = self._digest(name)
        with open_file(self._dir_fd, where) as (handle, size):
            blob, _ = read_safetensors(handle, size, where, check)
        _check_digest(where, blob, digest)
        return parse_tensors(blob, where)

    def _digest(self, name: str) -> str:
        digest = self.digests.get(name)
        if digest is None:
            raise CheckpointError(
                f"{self.path / name} is not in {MANIFEST_FILE}, so it cannot be checked; "
                "retrain or restore the run"
            )
        return digest

    def _read_manifest(self, needed: set[str]) -> tuple[str, dict[str, str]]:
        where = self.path / MANIFEST_FILE
        missing = (
            f"{self.path} is not a complete run directory (no {MANIFEST_FILE}): not a run, or "
            "one stopped before its files were written"
        )
        with open_file(self._dir_fd, where, missing) as (handle, size):
            _check_size(where, size, self.caps[MANIFEST_FILE])
            data = handle.read(size)
        manifest = parse_json(data, where)
        if not isinstance(manifest, dict):
            manifest = {}
        files, version = manifest.get("files"), manifest.get("format_version")
        if (
            not isinstance(files, dict)
            or type(version) is not int
            or version != FORMAT_VERSION
            or not all(isinstance(d, str) and _SHA256.fullmatch(d) for d in files.values())
        ):
            raise CheckpointError(f"{where} is malformed; retrain or restore the run")
        if not set(files) <= set(self.names):
            raise CheckpointError(
                f"{where} lists a file that is not part of a run directory (only "
                f"{', '.join(self.names)} are); retrain or restore the run"
            )
        if WEIGHTS_FILE in needed - set(files):
            raise CheckpointError(
                f"{self.path} has no weights yet ({WEIGHTS_FILE} is not in its manifest): was "
                "training stopped in its first epoch? Resume it with train --resume"
            )
        absent = sorted(needed - set(files))
        if absent:
            raise CheckpointError(
                f"{where} does not list {', '.join(absent)}; retrain or restore the run"
            )
        return hashlib.sha256(data).hexdigest(), files


def _open_dir_fd(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CheckpointError(f"model directory not found: {path}") from None
    except NotADirectoryError:
        raise CheckpointError(
            f"{path} is a file, not a model directory; give the directory that holds it"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None


def given_path(value: object, what: str, hint: str) -> Path:
    """A path a caller passed (str or os.PathLike): not "" (which pathlib reads as the current
    folder) and without NUL (which the OS cannot take); anything else is a DataError that
    says what to pass (``hint``)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise DataError(f"{what} is a path (str or Path), not {type(value).__name__}")
    if not value:
        raise DataError(f"an empty {what} path; {hint}")
    if "\0" in value:
        raise DataError(f"{what} path {value!r} holds a NUL character; {hint}")
    return Path(value)


def replaces_model_file(path: Path, model_dir: Path) -> bool:
    """Whether writing ``path`` would replace, or add, one of the files a model directory is
    made of (:data:`MODEL_DIR_NAMES`) in ``model_dir``: no command's output may do that (a
    scored CSV named model.onnx, absent before, made a run directory look exported)."""
    model = Path(os.path.realpath(model_dir))
    written = (  # a link is judged both as itself and by where it leads (savefig follows it)
        Path(os.path.realpath(path.parent)) / path.name,
        Path(os.path.realpath(path)),
    )
    return any(w.parent == model and w.name in MODEL_DIR_NAMES for w in written)


@contextmanager
def open_dir(path: Path) -> Iterator[int]:
    fd = _open_dir_fd(path)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def open_file(
    dir_fd: int, where: Path, missing: str | None = None
) -> Iterator[tuple[IO[bytes], int]]:
    """``where.name`` in the directory ``dir_fd``, open for reading, and its size: only a regular
    file (a symbolic link is not followed, and a FIFO's open does not wait for a writer)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(where.name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CheckpointError(missing or f"{where} is missing from the run directory") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symbolic link
            raise CheckpointError(
                f"{where} is a symbolic link; a run directory's files are read from the "
                "directory itself, never through a link"
            ) from None
        raise CheckpointError(f"cannot read {where}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(f"{where} is not a regular file; it was not read")
        yield handle, status.st_size


def _check_size(where: Path, size: int, cap: int) -> None:
    if size > cap:
        raise CheckpointError(
            f"{where} is {size:,} bytes, over the {cap:,} a run directory's {where.name} may hold"
        )


def _check_digest(where: Path, data: bytes, digest: str) -> None:
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
            f"{where} is corrupted or was modified (checksum mismatch); retrain or restore it"
        )


# ----------------------------------------------------------------------------------------------
# Safetensors, header first


@dataclass
class Header:
    table: dict[str, Any]  # the header's JSON as read, metadata included
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # dtype, shape
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0
    data_bytes: int = 0


def _not_safetensors(where: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is not a valid safetensors file ({reason}); only safetensors weights are loaded"
    )


def read_safetensors(
    handle: IO[bytes], size: int, where: Path, check: Callable[[Header, Path], None]
) -> tuple[bytes, Header]:
    """The whole file, read only once its header (at most :data:`MAX_HEADER_BYTES`) is valid,
    passes ``check`` and accounts for every byte of the file."""
    prefix = handle.read(8)
    length = int.from_bytes(prefix, "little")
    if len(prefix) < 8 or length > MAX_HEADER_BYTES:
        raise _not_safetensors(where, f"no header of at most {MAX_HEADER_BYTES:,} bytes")
    if 8 + length > size:
        raise _not_safetensors(where, "truncated or corrupted: its header runs past its end")
    raw = handle.read(length)
    header = _parse_header(raw, where)
    header.data_start = 8 + length
    check(header, where)
    if size != header.data_start + header.data_bytes:
        raise _not_safetensors(
            where,
            f"corrupted or not what it claims: {size:,} bytes where its header describes "
            f"{header.data_start + header.data_bytes:,}",
        )
    handle.seek(0)
    blob = handle.read(size)  # one copy in memory: the checked header is compared, not re-read
    if len(blob) != size or blob[: header.data_start] != prefix + raw:
        raise CheckpointError(f"{where} changed while it was read; try again")
    return blob, header


def _parse_header(raw: bytes, where: Path) -> Header:
    table = parse_json(raw, where)
    if not isinstance(table, dict):
        raise _not_safetensors(where, "its header is not a JSON object")
    header = Header(table)
    metadata = table.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _not_safetensors(where, "malformed metadata")
    header.metadata = metadata
    spans = []
    for name, entry in table.items():
        if name == "__metadata__":
            continue
        dtype, shape, span = _tensor_entry(entry)
        if dtype not in _DTYPE_BYTES or span[1] - span[0] != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise _not_safetensors(where, "a tensor entry that is malformed or of an unused type")
        header.tensors[name] = (dtype, shape)
        spans.append(span)
    for start, end in sorted(spans):
        if start != header.data_bytes:
            raise _not_safetensors(where, "tensors that overlap or leave gaps")
        header.data_bytes = end
    return header


def _tensor_entry(entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """dtype, shape and byte span of a header entry; ``("", (), (0, -1))`` when malformed."""
    if isinstance(entry, dict):
        dtype, shape, span = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if isinstance(dtype, str) and _naturals(shape) and _naturals(span) and len(span) == 2:
            return dtype, tuple(shape), (span[0], span[1])
    return "", (), (0, -1)


def _naturals(value: Any) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def exactly(
    expected: Mapping[str, tuple[int, ...]], required: Collection[str] | None = None
) -> Callable[[Header, Path], None]:
    """A header check: only ``expected`` names (all of them, or all of ``required``), each of its
    expected shape."""
    needed = set(expected if required is None else required)

    def check(header: Header, where: Path) -> None:
        unknown = header.tensors.keys() - expected.keys()
        if unknown:
            raise CheckpointError(
                f"{where} does not fit its config: it holds {len(unknown)} tensor(s) the model "
                "does not have"
            )
        for name, (_, shape) in header.tensors.items():
            if shape != tuple(expected[name]):
                raise CheckpointError(
                    f"{where} does not fit its config: {name} should have shape "
                    f"{list(expected[name])}"
                )
        missing = sorted(needed - header.tensors.keys())
        if missing:
            raise CheckpointError(f"{where} does not fit its config: {missing[0]} is missing")

    return check


FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors' names


def float_weights(shapes: Mapping[str, tuple[int, ...]]) -> Callable[[Header, Path], None]:
    """A header check: :func:`exactly` ``shapes``, every tensor a float (an integer or bool one
    would be cast into the model without a word)."""
    check_shapes = exactly(shapes)

    def check(header: Header, where: Path) -> None:
        check_shapes(header, where)
        if any(dtype not in FLOAT_DTYPES for dtype, _ in header.tensors.values()):
            raise CheckpointError(
                f"{where} holds a tensor that is not floating point; weights are float32, "
                "bfloat16 or float16"
            )

    return check


def at_most(parameters: int) -> Callable[[Header, Path], None]:
    """A header check for weights read without a config: at most ``parameters`` elements."""

    def check(header: Header, where: Path) -> None:
        count = sum(math.prod(shape) for _, shape in header.tensors.values())
        if count > parameters:
            raise CheckpointError(
                f"{where} holds {count:,} parameters, over the {parameters:,} a run directory "
                "may hold; it was not read"
            )

    return check


def model_shapes(
    config: Config, vocab_size: int, num_labels: int, run_dir: Path
) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the model ``config`` describes; refused over the parameter cap."""
    from rnn_sentiment.model import parameter_shapes  # torch: only a run's weights need it

    shapes = {
        k: tuple(v) for k, v in parameter_shapes(config.model, vocab_size, num_labels).items()
    }
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{run_dir} describes a model of {count:,} parameters, over the {MAX_PARAMETERS:,} "
            "a run directory may hold; it was not built"
        )
    return shapes


def parse_tensors(blob: bytes, where: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError):
        raise _not_safetensors(where, "the safetensors library refused it") from None


# ----------------------------------------------------------------------------------------------
# Config and labels


@cache
def plain_yaml() -> type:
    """The YAML loader of run files and check suites (built on first use: predict reads no
    YAML)."""
    import yaml

    class PlainYaml(yaml.SafeLoader):
        """YAML as :func:`~rnn_sentiment.config.dump_config` writes it: no tags (safe tags such as
        ``!!binary`` included), no aliases (a few lines of them can stand for gigabytes) and no key
        twice in a mapping (the last one would silently win)."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "tag", None) is not None:
                raise yaml.composer.ComposerError(None, None, "a tag or an alias", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
            if len(keys) != len(set(keys)):
                raise yaml.constructor.ConstructorError(None, None, "a key twice", node.start_mark)
            return super().construct_mapping(node, deep)

    return PlainYaml


def parse_config(data: bytes, where: Path) -> Config:
    """The config in ``data``; a problem is named by line or by key, the file never quoted."""
    import yaml

    try:
        tree = yaml.load(data.decode("utf-8"), Loader=plain_yaml())  # a SafeLoader, stricter
    except UnicodeDecodeError:
        raise CheckpointError(f"{where} is not UTF-8 text") from None
    except ValueError:  # a 5,000-digit number: Python refuses to convert it
        raise CheckpointError(f"{where} holds a number too long to read") from None
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise CheckpointError(
            f"{where} is not plain YAML{at}: a syntax error, a tag, an alias or a key twice, none "
            "of which rnn-sentiment writes"
        ) from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{where} does not hold a mapping of config sections")
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = [_schema_problem(err["loc"], err["type"]) for err in exc.errors()]
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{where} is not a config this version can use: {'; '.join(problems[:3])}{more}"
        ) from None


def _schema_problem(loc: tuple[Any, ...], kind: str) -> str:
    """``unknown key in 'model'`` or ``invalid value of 'model.hidden_size'``: only the names this
    version knows are shown, never a key or a value the file made up."""
    known: list[str] = []
    section: Any = Config
    for part in loc:
        named = section.model_fields.items() if _is_section(section) else []
        fields = {field.alias or name: field for name, field in named}  # 'from', not 'from_'
        if part not in fields:
            break
        known.append(str(part))
        section = fields[part].annotation
    place = f"'{'.'.join(known)}'" if known else "the top level"
    if kind == "extra_forbidden":
        return f"unknown key in {place}"
    return f"invalid value of {place}"


def _is_section(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def parse_labels(data: bytes, where: Path) -> list[str]:
    labels = parse_json(data, where)
    names = labels.get("labels") if isinstance(labels, dict) else None
    if (
        not isinstance(names, list)
        or not 2 <= len(names) <= MAX_LABELS
        or not all(isinstance(n, str) and 0 < len(n) <= MAX_LABEL_CHARS for n in names)
        or len(set(names)) != len(names)
    ):
        raise CheckpointError(
            f"{where} must list 2 to {MAX_LABELS:,} distinct label names of 1 to "
            f"{MAX_LABEL_CHARS:,} characters"
        )
    if any(fix_text(name)[1] for name in names):  # a lone surrogate: no output could hold it
        raise CheckpointError(f"{where} has a label name that is not valid Unicode text")
    return names


def parse_temperature(data: bytes, where: Path) -> float:
    """The temperature of a ``calibration.json``: a JSON object whose ``temperature`` is a
    number within :data:`TEMPERATURE_RANGE`."""
    info = parse_json(data, where)
    value = info.get("temperature") if isinstance(info, dict) else None
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise CheckpointError(
            f"{where} must hold a temperature between {low} and {high:g}; recalibrate with "
            "'rnn-sentiment calibrate'"
        )
    return float(value)


def read_temperature(files: RunFiles, path: Path) -> float:
    """The temperature of an opened run or exported directory: 1.0 when it has no
    ``calibration.json`` in its manifest (trained before calibration existed)."""
    if CALIBRATION_FILE not in files.digests:
        return 1.0
    return parse_temperature(files.read(CALIBRATION_FILE), path / CALIBRATION_FILE)
