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
every file is read through :mod:`rnn_sentiment.runfiles` (listed in the manifest, never through a
link, within its cap, sizes checked before anything is allocated; see there for what it guards
against). Every problem is a one-line :class:`~rnn_sentiment.errors.CheckpointError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from tokenizers import Tokenizer

from rnn_sentiment import atomic
from rnn_sentiment.config import Config, dump_config
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.model import SentimentRNN, build_model
from rnn_sentiment.runfiles import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    LABELS_FILE,
    MANIFEST_FILE,
    MAX_PARAMETERS,
    METRICS_FILE,
    RUN_FILES,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    RunFiles,
    at_most,
    exactly,
    float_weights,
    model_shapes,
    open_dir,
    open_file,
    parse_config,
    parse_labels,
    parse_tensors,
    read_safetensors,
    read_temperature,
)
from rnn_sentiment.signals import StopSignals
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import parse_tokenizer

_STATE_FORMAT = "rnn-sentiment-state"


@dataclass
class LoadedRun:
    """Everything rebuilt from a run directory."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    model: SentimentRNN
    label_names: list[str]
    manifest_sha256: str = ""  # identifies exactly these files (the manifest lists their hashes)
    temperature: float = 1.0  # calibration.json's; predicted probabilities are scaled by it

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


def save_calibration(run_dir: Path, calibration: dict[str, Any]) -> None:
    """Write ``calibration.json`` (its ``temperature`` and how it was fitted) into the manifest.

    A finished run is changed here, so the two writes are one change: the manifest first (a
    manifest that cannot be written leaves the run as it was), then the file (the old manifest
    is put back if it cannot be written), with Ctrl-C and SIGTERM held until both are done and
    delivered after. A run is never left holding a calibration its manifest does not vouch for.
    """
    data = _json_text(calibration).encode("utf-8")
    before = _digests(run_dir)
    with StopSignals() as stop:
        try:
            _update_manifest(run_dir, {CALIBRATION_FILE: data})
            atomic_write_bytes(run_dir / CALIBRATION_FILE, data)
        except BaseException:  # a second Ctrl-C too: it is not held
            with contextlib.suppress(OSError):  # the first error is the one to report
                _write_manifest(run_dir, before)
            raise
    if stop.requested:
        signal.raise_signal(getattr(signal, stop.requested))


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` and record it in the manifest."""
    data = _json_text(metrics).encode("utf-8")
    atomic_write_bytes(run_dir / METRICS_FILE, data)
    _update_manifest(run_dir, {METRICS_FILE: data})


def write_manifest(run_dir: Path, names: Sequence[str] = RUN_FILES) -> None:
    """Record the SHA-256 of every run file as it is on disk now (for tools that assemble a run
    directory from files, such as ``scripts/bundle_model.py``; training records what it writes).

    ``names``: the files a directory of another kind holds (an exported model's), in order.
    """
    files = {
        name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
        for name in names
        if (run_dir / name).is_file() and not (run_dir / name).is_symlink()
    }
    atomic_write_json(run_dir / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})


def _update_manifest(run_dir: Path, written: Mapping[str, bytes], fresh: bool = False) -> None:
    digests = {} if fresh else _digests(run_dir)
    digests.update({name: hashlib.sha256(data).hexdigest() for name, data in written.items()})
    _write_manifest(run_dir, digests)


def _digests(run_dir: Path) -> dict[str, str]:
    """The manifest's digests; none when it is unreadable: then the manifest lists what is
    written from now on, and loading names what is missing."""
    try:
        with RunFiles(run_dir, needed=()) as files:
            return dict(files.digests)
    except CheckpointError:
        return {}


def _write_manifest(run_dir: Path, digests: Mapping[str, str]) -> None:
    ordered = {name: digests[name] for name in RUN_FILES if name in digests}
    atomic_write_json(run_dir / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": ordered})


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


# ----------------------------------------------------------------------------------------------
# Loading a model


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild config, tokenizer, model and labels from a run directory, checking everything
    (see :mod:`rnn_sentiment.runfiles`) before the model is built."""
    path = Path(run_dir)
    with RunFiles(path, needed=(CONFIG_FILE, TOKENIZER_FILE, LABELS_FILE, WEIGHTS_FILE)) as files:
        config = parse_config(files.read(CONFIG_FILE), path / CONFIG_FILE)
        label_names = parse_labels(files.read(LABELS_FILE), path / LABELS_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)
        vocab_size = tokenizer.get_vocab_size()
        shapes = model_shapes(config, vocab_size, len(label_names), path)
        state = files.read_tensors(WEIGHTS_FILE, float_weights(shapes))
        check_weights(state, path / WEIGHTS_FILE)
        manifest_sha256 = files.manifest_sha256
        temperature = read_temperature(files, path)
    model = build_model(config.model, vocab_size, len(label_names))
    model.load_state_dict(state)  # every name and shape was checked against this very model
    model.to(device).eval()
    return LoadedRun(path, config, tokenizer, model, label_names, manifest_sha256, temperature)


def check_weights(state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Refuse weights that hold NaN or infinity: every prediction would be NaN."""
    for name, tensor in state.items():
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{where}: {name} holds NaN or infinity; the run diverged or the file is "
                "damaged: train it again (or resume from a checkpoint written before that)"
            )


def verify_run(run_dir: Path) -> None:
    """Raise :class:`CheckpointError` unless every file the manifest lists is intact."""
    with RunFiles(run_dir, needed=(WEIGHTS_FILE,)) as files:
        for name in files.digests:
            if name == WEIGHTS_FILE:
                files.read_tensors(name, at_most(MAX_PARAMETERS))
            else:
                files.read(name)


def read_config(run_dir: Path) -> Config:
    """The checked config of a run directory (resuming training)."""
    with RunFiles(run_dir, needed=(CONFIG_FILE,)) as files:
        return parse_config(files.read(CONFIG_FILE), run_dir / CONFIG_FILE)


def check_model_size(run_dir: Path, config: Config) -> None:
    """Refuse, before anything builds it, a model of ``config`` with ``run_dir``'s vocabulary and
    labels that would be over :data:`MAX_PARAMETERS` (resuming training)."""
    with RunFiles(run_dir, needed=(TOKENIZER_FILE, LABELS_FILE)) as files:
        labels = parse_labels(files.read(LABELS_FILE), run_dir / LABELS_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), run_dir / TOKENIZER_FILE)
    model_shapes(config, tokenizer.get_vocab_size(), len(labels), run_dir)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The checked ``metrics.json`` of a run directory."""
    with RunFiles(run_dir, needed=(METRICS_FILE,)) as files:
        data = files.read(METRICS_FILE)
    metrics = parse_json(data, run_dir / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{run_dir / METRICS_FILE} does not hold a JSON object")
    return metrics


def load_pipeline(run_dir: Path, config: Config) -> TextPipeline:
    """The text pipeline of a run directory whose config is already read (resuming training)."""
    with RunFiles(run_dir, needed=(TOKENIZER_FILE,)) as files:
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), run_dir / TOKENIZER_FILE)
    return TextPipeline(tokenizer, config.data.clean_html)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file the caller wrote (the best weights, at the end of
    training); read like a run directory's, without the manifest. A pickle is refused unread."""
    with open_dir(path.parent) as dir_fd, open_file(dir_fd, path) as (handle, size):
        blob, _ = read_safetensors(handle, size, path, at_most(MAX_PARAMETERS))
    return parse_tensors(blob, path)


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
    with open_dir(run_dir) as dir_fd, open_file(dir_fd, path, missing) as (handle, size):
        blob, header = read_safetensors(handle, size, path, exactly(expected, required))
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
    meta = parse_json(metadata.get("state", ""), path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has no readable training state; it cannot be resumed")
    return parse_tensors(blob, path), meta


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
