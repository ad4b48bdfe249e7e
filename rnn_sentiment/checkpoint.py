"""Save and load self-contained run directories, atomically, without pickle, and checked.

A run directory holds everything ``evaluate`` and ``predict`` need::

    config.yaml        the resolved config
    tokenizer.json     the trained tokenizer
    model.safetensors  weights of the best epoch
    labels.json        label names, in logit order
    metrics.json       final metrics and the per-epoch history
    manifest.json      SHA-256 of every file above
    state.safetensors  the resumable training state, its SHA-256 inside it

Every file is written to a temporary name and renamed into place (:mod:`rnn_sentiment.atomic`);
the manifest is updated with the SHA-256 of the bytes just written, never re-read from disk.
The training state is rewritten every few hundred steps, so it carries its own checksum and is
replaced in one rename: a kill at any moment leaves a state and checksum that agree.

A run directory may come from anyone, so loading trusts nothing in it before it is checked:

- a file is read only if the manifest lists it (by one of the names above, nothing else), from
  the directory itself: a symbolic link, a FIFO or a device is refused, never followed or read;
- each file is opened once and read whole, within a cap (:data:`MAX_FILE_BYTES`), and the bytes
  whose checksum was checked are the bytes that are parsed;
- sizes come before allocation: the model the config describes is measured on the meta device
  (at most :data:`MAX_PARAMETERS`), every tensor in a safetensors header (itself at most
  :data:`MAX_HEADER_BYTES`) must have the shape that model implies, and the file must be exactly
  as long as its header says, before the weights are read; the tokenizer's vocabulary ids must
  be 0, 1, 2, ... (see :func:`rnn_sentiment.tokenizer.parse_tokenizer`);
- the config is plain YAML (no tags, no aliases) and error messages never quote a file's
  content, so a planted file cannot be read back through them.

Every problem is a one-line :class:`~rnn_sentiment.errors.CheckpointError`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, TypeGuard

import torch
import yaml
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tokenizers import Tokenizer

from rnn_sentiment import atomic
from rnn_sentiment.config import Config, dump_config
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.model import SentimentRNN, build_model, parameter_shapes
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import MAX_TOKENIZER_BYTES, parse_tokenizer

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.safetensors"
FORMAT_VERSION = 1
RUN_FILES = (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, LABELS_FILE, METRICS_FILE)

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
}
# Bytes per element of the dtypes a run's tensors may have (weights float, RNG state uint8).
_DTYPE_BYTES = {"U8": 1, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_STATE_FORMAT = "rnn-sentiment-state"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class LoadedRun:
    """Everything rebuilt from a run directory."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    model: SentimentRNN
    label_names: list[str]
    manifest_sha256: str = ""  # identifies exactly these files (the manifest lists their hashes)

    @cached_property
    def pipeline(self) -> TextPipeline:
        """How this model turns a raw review into token ids (every entry point uses it)."""
        return TextPipeline(self.tokenizer, self.config.data.clean_html)


# ----------------------------------------------------------------------------------------------
# Writing


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a failure is a :class:`CheckpointError`."""
    try:
        atomic.write_bytes(path, data)
    except OSError as exc:
        # The previous version of the file, if any, is untouched: only the temp file failed.
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    """Write JSON atomically, human-readable."""
    atomic_write_text(path, _json_text(value))


def save_run_files(
    run_dir: Path, config: Config, tokenizer: Tokenizer, label_names: list[str]
) -> None:
    """Write the parts of a run directory that are fixed before training starts, and a manifest
    of them (so a run stopped in its first epoch can be resumed, checked)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {
        CONFIG_FILE: dump_config(config).encode("utf-8"),
        TOKENIZER_FILE: tokenizer.to_str().encode("utf-8"),
        LABELS_FILE: _json_text({"labels": label_names}).encode("utf-8"),
    }
    for name, data in files.items():
        atomic_write_bytes(run_dir / name, data)
    _update_manifest(run_dir, files, fresh=True)


def save_config(run_dir: Path, config: Config) -> None:
    """Replace the run's ``config.yaml`` (a resumed run with changed settings) in the manifest."""
    data = dump_config(config).encode("utf-8")
    atomic_write_bytes(run_dir / CONFIG_FILE, data)
    _update_manifest(run_dir, {CONFIG_FILE: data})


def save_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Write the model weights as safetensors and record them in the manifest."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "rnn-sentiment", "version": str(FORMAT_VERSION)}
    data = save_safetensors(tensors, metadata=metadata)
    atomic_write_bytes(run_dir / WEIGHTS_FILE, data)
    _update_manifest(run_dir, {WEIGHTS_FILE: data})


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` and record it in the manifest."""
    data = _json_text(metrics).encode("utf-8")
    atomic_write_bytes(run_dir / METRICS_FILE, data)
    _update_manifest(run_dir, {METRICS_FILE: data})


def write_manifest(run_dir: Path) -> None:
    """Record the SHA-256 of every run file as it is on disk now (for tools that assemble a run
    directory from files, such as ``scripts/bundle_model.py``; training records what it writes)."""
    files = {
        name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
        for name in RUN_FILES
        if (run_dir / name).is_file() and not (run_dir / name).is_symlink()
    }
    atomic_write_json(run_dir / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})


def _update_manifest(run_dir: Path, written: Mapping[str, bytes], fresh: bool = False) -> None:
    digests: dict[str, str] = {}
    if not fresh:
        try:
            with _RunFiles(run_dir, needed=()) as files:
                digests = dict(files.digests)
        except CheckpointError:
            pass  # unreadable: list what is written from now on; loading names what is missing
    digests.update({name: hashlib.sha256(data).hexdigest() for name, data in written.items()})
    ordered = {name: digests[name] for name in RUN_FILES if name in digests}
    atomic_write_json(run_dir / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": ordered})


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


# ----------------------------------------------------------------------------------------------
# Loading a model


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild config, tokenizer, model and labels from a run directory, checking everything
    (see the module docstring) before the model is built."""
    path = Path(run_dir)
    with _RunFiles(path, needed=(CONFIG_FILE, TOKENIZER_FILE, LABELS_FILE, WEIGHTS_FILE)) as files:
        config = _parse_config(files.read(CONFIG_FILE), path / CONFIG_FILE)
        label_names = _parse_labels(files.read(LABELS_FILE), path / LABELS_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)
        vocab_size = tokenizer.get_vocab_size()
        shapes = _model_shapes(config, vocab_size, len(label_names), path)
        state = files.read_tensors(WEIGHTS_FILE, _exactly(shapes))
        manifest_sha256 = files.manifest_sha256
    model = build_model(config.model, vocab_size, len(label_names))
    model.load_state_dict(state)  # every name and shape was checked against this very model
    model.to(device).eval()
    return LoadedRun(path, config, tokenizer, model, label_names, manifest_sha256)


def verify_run(run_dir: Path) -> None:
    """Raise :class:`CheckpointError` unless every file the manifest lists is intact."""
    with _RunFiles(run_dir, needed=(WEIGHTS_FILE,)) as files:
        for name in files.digests:
            if name == WEIGHTS_FILE:
                files.read_tensors(name, _at_most(MAX_PARAMETERS))
            else:
                files.read(name)


def read_config(run_dir: Path) -> Config:
    """The checked config of a run directory (resuming training)."""
    with _RunFiles(run_dir, needed=(CONFIG_FILE,)) as files:
        return _parse_config(files.read(CONFIG_FILE), run_dir / CONFIG_FILE)


def check_model_size(run_dir: Path, config: Config) -> None:
    """Refuse, before anything builds it, a model of ``config`` with ``run_dir``'s vocabulary and
    labels that would be over :data:`MAX_PARAMETERS` (resuming training)."""
    with _RunFiles(run_dir, needed=(TOKENIZER_FILE, LABELS_FILE)) as files:
        labels = _parse_labels(files.read(LABELS_FILE), run_dir / LABELS_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), run_dir / TOKENIZER_FILE)
    _model_shapes(config, tokenizer.get_vocab_size(), len(labels), run_dir)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The checked ``metrics.json`` of a run directory."""
    with _RunFiles(run_dir, needed=(METRICS_FILE,)) as files:
        data = files.read(METRICS_FILE)
    try:
        metrics = json.loads(data)
    except (ValueError, RecursionError):
        metrics = None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{run_dir / METRICS_FILE} does not hold a JSON object")
    return metrics


def load_pipeline(run_dir: Path, config: Config) -> TextPipeline:
    """The text pipeline of a run directory whose config is already read (resuming training)."""
    with _RunFiles(run_dir, needed=(TOKENIZER_FILE,)) as files:
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), run_dir / TOKENIZER_FILE)
    return TextPipeline(tokenizer, config.data.clean_html)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file the caller wrote (the best weights, at the end of
    training); read like a run directory's, without the manifest. A pickle is refused unread."""
    with _open_dir(path.parent) as dir_fd, _open_file(dir_fd, path) as (handle, size):
        blob, _ = _read_safetensors(handle, size, path, _at_most(MAX_PARAMETERS))
    return _tensors(blob, path)


# ----------------------------------------------------------------------------------------------
# The training state


def save_training_state(
    run_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write the resumable training state as one file, so it is replaced in a single rename.

    Tensors (weights, optimiser moments, RNG states) are safetensors; everything else (counters,
    history, early-stopping state) is JSON in the file's metadata, next to the SHA-256 of the
    rest of the file. Nothing is pickled.
    """
    blob = save_safetensors(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        metadata={"format": _STATE_FORMAT, "state": json.dumps(meta)},
    )
    atomic_write_bytes(run_dir / STATE_FILE, _sealed(blob))


def load_training_state(
    run_dir: Path, expected: Mapping[str, tuple[int, ...]], required: Collection[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_training_state` wrote, checked like a run directory's files.

    Args:
        run_dir: the run directory.
        expected: every tensor name the state may hold, with its shape.
        required: the names it must hold.
    """
    path = run_dir / STATE_FILE
    missing = f"{run_dir} has no training state ({STATE_FILE}) to resume from"
    with _open_dir(run_dir) as dir_fd, _open_file(dir_fd, path, missing) as (handle, size):
        blob, header = _read_safetensors(handle, size, path, _exactly(expected, required))
    metadata = header.metadata
    if metadata.get("format") != _STATE_FORMAT or "sha256" not in metadata:
        raise CheckpointError(
            f"{path} has no checksum: an older version wrote it, or it is not a training "
            "state; start a new run"
        )
    if metadata["sha256"] != _state_digest(header.table, memoryview(blob)[header.data_start :]):
        raise CheckpointError(
            f"{path} is corrupted or was modified (checksum mismatch); it cannot be resumed"
        )
    try:
        meta = json.loads(metadata["state"])
    except (KeyError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has no readable training state; it cannot be resumed")
    return _tensors(blob, path), meta


def _sealed(blob: bytes) -> bytes:
    """``blob`` with the SHA-256 of its tensor table, metadata and data added to its metadata."""
    length = int.from_bytes(blob[:8], "little")
    table = json.loads(blob[8 : 8 + length])
    data = memoryview(blob)[8 + length :]
    table["__metadata__"]["sha256"] = _state_digest(table, data)
    header = json.dumps(table, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)  # safetensors keeps the data 8-byte aligned
    return len(header).to_bytes(8, "little") + header + data


def _state_digest(table: dict[str, Any], data: memoryview) -> str:
    metadata = {k: v for k, v in table.get("__metadata__", {}).items() if k != "sha256"}
    canonical = json.dumps({**table, "__metadata__": metadata}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8"))
    digest.update(data)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Reading a run directory's files


class _RunFiles:
    """A run directory opened for reading: its manifest read once, then each file read once, from
    the directory itself, within its cap, and checked against the manifest before it is parsed."""

    def __init__(self, path: Path, needed: Iterable[str]) -> None:
        self.path = path
        self._dir_fd = _open_dir_fd(path)
        try:
            self.manifest_sha256, self.digests = self._read_manifest(set(needed))
        except BaseException:
            os.close(self._dir_fd)
            raise

    def __enter__(self) -> _RunFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._dir_fd)

    def read(self, name: str) -> bytes:
        """The whole file, checked against its manifest entry."""
        where = self.path / name
        digest = self._digest(name)
        with _open_file(self._dir_fd, where) as (handle, size):
            _check_size(where, size, MAX_FILE_BYTES[name])
            data = handle.read(size)
        _check_digest(where, data, digest)
        return data

    def read_tensors(
        self, name: str, check: Callable[[_Header, Path], None]
    ) -> dict[str, torch.Tensor]:
        """A safetensors file's tensors: its header read and ``check``-ed, and its length matched
        against the header, before the rest of it is read and checked against the manifest."""
        where = self.path / name
        digest = self._digest(name)
        with _open_file(self._dir_fd, where) as (handle, size):
            blob, _ = _read_safetensors(handle, size, where, check)
        _check_digest(where, blob, digest)
        return _tensors(blob, where)

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
        with _open_file(self._dir_fd, where, missing) as (handle, size):
            _check_size(where, size, MAX_FILE_BYTES[MANIFEST_FILE])
            data = handle.read(size)
        try:
            manifest = json.loads(data)
        except (ValueError, RecursionError):
            manifest = None
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
        if not set(files) <= set(RUN_FILES):
            raise CheckpointError(
                f"{where} lists a file that is not part of a run directory (only "
                f"{', '.join(RUN_FILES)} are); retrain or restore the run"
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
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"model directory not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None


@contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    fd = _open_dir_fd(path)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _open_file(
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
class _Header:
    table: dict[str, Any]  # the header's JSON as read, metadata included
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # dtype, shape
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0
    data_bytes: int = 0


def _not_safetensors(where: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is not a valid safetensors file ({reason}); only safetensors weights are loaded"
    )


def _read_safetensors(
    handle: IO[bytes], size: int, where: Path, check: Callable[[_Header, Path], None]
) -> tuple[bytes, _Header]:
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


def _parse_header(raw: bytes, where: Path) -> _Header:
    try:
        table = json.loads(raw)
    except (ValueError, RecursionError):
        table = None
    if not isinstance(table, dict):
        raise _not_safetensors(where, "its header is not a JSON object")
    header = _Header(table)
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


def _exactly(
    expected: Mapping[str, tuple[int, ...]], required: Collection[str] | None = None
) -> Callable[[_Header, Path], None]:
    """A header check: only ``expected`` names (all of them, or all of ``required``), each of its
    expected shape."""
    needed = set(expected if required is None else required)

    def check(header: _Header, where: Path) -> None:
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


def _at_most(parameters: int) -> Callable[[_Header, Path], None]:
    """A header check for weights read without a config: at most ``parameters`` elements."""

    def check(header: _Header, where: Path) -> None:
        count = sum(math.prod(shape) for _, shape in header.tensors.values())
        if count > parameters:
            raise CheckpointError(
                f"{where} holds {count:,} parameters, over the {parameters:,} a run directory "
                "may hold; it was not read"
            )

    return check


def _model_shapes(
    config: Config, vocab_size: int, num_labels: int, run_dir: Path
) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the model ``config`` describes; refused over the parameter cap."""
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


def _tensors(blob: bytes, where: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError):
        raise _not_safetensors(where, "the safetensors library refused it") from None


# ----------------------------------------------------------------------------------------------
# Config and labels


class _PlainYaml(yaml.SafeLoader):
    """YAML as :func:`~rnn_sentiment.config.dump_config` writes it: no tags (safe tags such as
    ``!!binary`` included) and no aliases (a few lines of them can stand for gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "tag", None) is not None:
            raise yaml.composer.ComposerError(None, None, "a tag or an alias", event.start_mark)
        return super().compose_node(parent, index)


def _parse_config(data: bytes, where: Path) -> Config:
    """The config in ``data``; a problem is named by line or by key, the file never quoted."""
    try:
        tree = yaml.load(data.decode("utf-8"), Loader=_PlainYaml)  # a SafeLoader, stricter
    except UnicodeDecodeError:
        raise CheckpointError(f"{where} is not UTF-8 text") from None
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise CheckpointError(
            f"{where} is not plain YAML{at}: a syntax error, a tag or an alias, none of which "
            "rnn-sentiment writes"
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
        fields = section.model_fields if _is_section(section) else {}
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


def _parse_labels(data: bytes, where: Path) -> list[str]:
    try:
        labels = json.loads(data)
    except (ValueError, RecursionError):
        labels = None
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
    return names
