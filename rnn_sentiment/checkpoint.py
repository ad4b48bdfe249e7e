"""Save and load self-contained run directories, atomically and without pickle.

A run directory holds everything ``evaluate`` and ``predict`` need::

    config.yaml        the resolved config
    tokenizer.json     the trained tokenizer
    model.safetensors  weights of the best epoch
    labels.json        label names, in logit order
    metrics.json       final metrics and the per-epoch history
    manifest.json      SHA-256 of every file above, written last

Every file is written to a temporary name and renamed into place (:mod:`rnn_sentiment.atomic`),
so an interrupted write never leaves a file that looks complete; the manifest detects corrupted or
tampered files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tokenizers import Tokenizer

from rnn_sentiment import atomic
from rnn_sentiment.config import Config, config_from_dict, dump_config
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.model import SentimentRNN, build_model
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import load_tokenizer

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class LoadedRun:
    """Everything rebuilt from a run directory."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    model: SentimentRNN
    label_names: list[str]

    @cached_property
    def pipeline(self) -> TextPipeline:
        """How this model turns a raw review into token ids (every entry point uses it)."""
        return TextPipeline(self.tokenizer, self.config.data.clean_html)


def load_pipeline(run_dir: Path, config: Config) -> TextPipeline:
    """The text pipeline of a run directory whose config is already read (resuming training)."""
    return TextPipeline(load_tokenizer(run_dir / TOKENIZER_FILE), config.data.clean_html)


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
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def save_run_files(
    run_dir: Path, config: Config, tokenizer: Tokenizer, label_names: list[str]
) -> None:
    """Write the parts of a run directory that are fixed before training starts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))
    atomic_write_text(run_dir / TOKENIZER_FILE, tokenizer.to_str())
    atomic_write_json(run_dir / LABELS_FILE, {"labels": label_names})


def save_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Write the model weights as safetensors and refresh the manifest."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "rnn-sentiment", "version": str(FORMAT_VERSION)}
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save_safetensors(tensors, metadata=metadata))
    write_manifest(run_dir)


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` and refresh the manifest."""
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    write_manifest(run_dir)


def write_manifest(run_dir: Path) -> None:
    """Record the SHA-256 of every run file, so corruption and tampering are detected."""
    files = {
        name: _sha256(run_dir / name)
        for name in (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, LABELS_FILE, METRICS_FILE)
        if (run_dir / name).is_file()
    }
    atomic_write_json(run_dir / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})


def verify_run(run_dir: Path) -> None:
    """Raise :class:`CheckpointError` unless the run directory is complete and intact."""
    if not run_dir.is_dir():
        raise CheckpointError(f"model directory not found: {run_dir}")
    manifest_path = run_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a complete run directory (no {MANIFEST_FILE}); "
            "was training interrupted before the first epoch ended?"
        )
    manifest = _read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise CheckpointError(f"{manifest_path} is malformed; retrain or restore the run")
    for name, digest in files.items():
        path = run_dir / str(name)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing from the run directory")
        if _sha256(path) != digest:
            raise CheckpointError(
                f"{path} is corrupted or was modified (checksum mismatch); retrain or restore it"
            )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild config, tokenizer, model and labels from a run directory, checking integrity."""
    path = Path(run_dir)
    verify_run(path)
    try:
        import yaml

        config = config_from_dict(yaml.safe_load((path / CONFIG_FILE).read_text("utf-8")) or {})
    except ConfigError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is invalid: {exc}") from None
    tokenizer = load_tokenizer(path / TOKENIZER_FILE)
    labels = _read_json(path / LABELS_FILE)
    label_names = labels.get("labels") if isinstance(labels, dict) else None
    if not isinstance(label_names, list) or len(label_names) < 2:
        raise CheckpointError(f"{path / LABELS_FILE} must list at least two label names")
    state = load_weights(path / WEIGHTS_FILE)
    model = build_model(config.model, tokenizer.get_vocab_size(), len(label_names))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path / WEIGHTS_FILE} does not fit its config: {first}") from None
    model.to(device).eval()
    return LoadedRun(path, config, tokenizer, model, [str(n) for n in label_names])


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file; anything else (a pickle, garbage) is refused unread."""
    try:
        return load_safetensors(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({exc}); only safetensors weights are loaded"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STATE_FILE = "state.safetensors"


def save_training_state(
    run_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write the resumable training state as one file, so it is replaced in a single rename.

    Tensors (weights, optimiser moments, RNG states) are safetensors; everything else (counters,
    history, early-stopping state) is JSON in the file's metadata. Nothing is pickled.
    """
    blob = save_safetensors(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        metadata={"format": "rnn-sentiment-state", "state": json.dumps(meta)},
    )
    atomic_write_bytes(run_dir / STATE_FILE, blob)


def load_training_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_training_state` wrote."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no training state ({STATE_FILE}) to resume from")
    tensors = load_weights(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        meta = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no readable training state; it cannot resume") from None
    return tensors, meta
