"""A pretrained encoder directory: what ``rnn-sentiment pretrain`` writes and ``train`` starts from.

An encoder is a classifier's body, the embeddings and recurrent layers, without a classifier::

    config.yaml          the resolved config it was pretrained with
    tokenizer.json       its vocabulary
    encoder.safetensors  the embedding and recurrent weights, named as in SentimentRNN
    metrics.json         perplexities, tokens, time, and which texts it read
    manifest.json        SHA-256 of every file above
    state.safetensors    the resumable pretraining state (its SHA-256 inside it)

It is read like a run directory (:mod:`rnn_sentiment.runfiles`): nothing is trusted before it is
checked, every tensor must have the shape the config implies, nothing is pickled. One encoder
serves many classifiers: a classifier's vocabulary is its own, and each of its words the encoder
knows starts from the encoder's vector (the others start random, at the encoder's scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from tokenizers import Tokenizer

from rnn_sentiment.checkpoint import atomic_write_bytes, atomic_write_json, write_manifest
from rnn_sentiment.config import Config, ModelConfig, dump_config
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.jsonfile import parse_json
from rnn_sentiment.model import SentimentRNN, parameter_shapes
from rnn_sentiment.runfiles import (
    CONFIG_FILE,
    MANIFEST_FILE,
    MAX_FILE_BYTES,
    MAX_PARAMETERS,
    METRICS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    RunFiles,
    float_weights,
    parse_config,
)
from rnn_sentiment.tokenizer import PAD_ID, parse_tokenizer, with_known_words

# The encoder that ships with the package (scripts/bundle_encoder.py): pretraining.from=bundled.
BUNDLED_ENCODER_DIR = Path(__file__).parents[1] / "assets" / "encoder"
ENCODER_FILE = "encoder.safetensors"
ENCODER_FILES = (CONFIG_FILE, TOKENIZER_FILE, ENCODER_FILE, METRICS_FILE)
_CAPS = {name: MAX_FILE_BYTES[name] for name in (MANIFEST_FILE, CONFIG_FILE, TOKENIZER_FILE)}
_CAPS[METRICS_FILE] = MAX_FILE_BYTES[METRICS_FILE]
# The model settings that give the encoder's tensors their shapes and meaning (nonlinearity only
# for the vanilla RNN cell: LSTM and GRU ignore it).
SHAPE_KEYS = ("cell", "nonlinearity", "embedding_dim", "hidden_size", "num_layers", "bidirectional")
# How many encoders back a continued encoder's record of what it read goes (each one continuing
# the last with rnn-sentiment pretrain), and how far the leak check follows it.
PROVENANCE_DEPTH = 8


@dataclass
class Encoder:
    """A checked encoder directory, loaded."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    tensors: dict[str, torch.Tensor]
    metrics: dict[str, Any]


def save_encoder_files(path: Path, config: Config, tokenizer: Tokenizer) -> None:
    """Write what is fixed before pretraining starts (config, tokenizer) and their manifest."""
    atomic_write_bytes(path / CONFIG_FILE, dump_config(config).encode("utf-8"))
    atomic_write_bytes(path / TOKENIZER_FILE, tokenizer.to_str().encode("utf-8"))
    write_manifest(path, ENCODER_FILES)


def save_encoder(path: Path, body: SentimentRNN, metrics: dict[str, Any]) -> None:
    """Write the body's embedding and recurrent weights and ``metrics``, then the manifest."""
    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in body.state_dict().items()
        if not name.startswith("classifier.")
    }
    data = save_safetensors(tensors, metadata={"format": "rnn-sentiment-encoder"})
    atomic_write_bytes(path / ENCODER_FILE, data)
    atomic_write_json(path / METRICS_FILE, metrics)
    write_manifest(path, ENCODER_FILES)


def encoder_shapes(model: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor an encoder of ``model`` holds (measured without allocating)."""
    shapes = parameter_shapes(model, vocab_size, 2)
    return {k: tuple(v) for k, v in shapes.items() if not k.startswith("classifier.")}


def _checked_shapes(model: ModelConfig, vocab_size: int, path: Path) -> dict[str, tuple[int, ...]]:
    """:func:`encoder_shapes`, refused over :data:`MAX_PARAMETERS` before anything is read or
    built: the file must be as long as its header says, but a sparse file costs nothing."""
    shapes = encoder_shapes(model, vocab_size)
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path} describes an encoder of {count:,} parameters, over the {MAX_PARAMETERS:,} "
            "an encoder directory may hold; it was not read"
        )
    return shapes


def read_encoder_config(path: Path) -> Config:
    """The checked config of an encoder directory (resuming its pretraining); a model it
    describes over :data:`MAX_PARAMETERS` is refused before anything builds it."""
    _as_directory(path)
    needed = (CONFIG_FILE, TOKENIZER_FILE)
    with RunFiles(path, needed=needed, names=ENCODER_FILES, caps=_CAPS) as files:
        config = parse_config(files.read(CONFIG_FILE), path / CONFIG_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)
    _checked_shapes(config.model, tokenizer.get_vocab_size(), path)
    return config


def read_encoder_tokenizer(path: Path) -> Tokenizer:
    """The checked tokenizer of an encoder directory (resuming its pretraining)."""
    with RunFiles(path, needed=(TOKENIZER_FILE,), names=ENCODER_FILES, caps=_CAPS) as files:
        return parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)


def resolve_encoder(value: str | Path) -> Path:
    """``bundled`` is the encoder shipped with the package; anything else is a directory."""
    if str(value) != "bundled":
        return _as_directory(Path(value))
    if not (BUNDLED_ENCODER_DIR / MANIFEST_FILE).is_file():
        raise CheckpointError(
            "this installation ships no encoder (pretraining.from=bundled); give the path of "
            "one written by rnn-sentiment pretrain"
        )
    return BUNDLED_ENCODER_DIR


def encoder_name(path: Path) -> str:
    """How a run's metrics name the encoder it started from: ``bundled`` for the shipped one,
    the absolute path of any other (so a directory of the user's named ``bundled`` is never
    read as the shipped one, and the name does not depend on where training ran from)."""
    return "bundled" if path == BUNDLED_ENCODER_DIR else str(path.absolute())


def _as_directory(path: Path) -> Path:
    """``path``, unless it is there but no directory (the one-line error would say "not found"),
    or is a classifier's run directory (it would say a file is not part of an encoder)."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(
            f"{path} is not a directory; give the encoder directory rnn-sentiment pretrain "
            "wrote (its output.dir/output.name)"
        )
    if (path / WEIGHTS_FILE).is_file() and not (path / ENCODER_FILE).exists():
        raise CheckpointError(
            f"{path} is a classifier's run directory, not an encoder; give the encoder directory "
            "rnn-sentiment pretrain wrote (its output.dir/output.name)"
        )
    return path


def load_encoder(path: str | Path) -> Encoder:
    """Read and check an encoder directory (``bundled``: the shipped one); every problem is a
    one-line CheckpointError. Its tensors are returned as float32, whatever they are stored as."""
    path = resolve_encoder(path)
    with RunFiles(path, needed=ENCODER_FILES, names=ENCODER_FILES, caps=_CAPS) as files:
        config = parse_config(files.read(CONFIG_FILE), path / CONFIG_FILE)
        tokenizer = parse_tokenizer(files.read(TOKENIZER_FILE), path / TOKENIZER_FILE)
        shapes = _checked_shapes(config.model, tokenizer.get_vocab_size(), path)
        tensors = files.read_tensors(ENCODER_FILE, float_weights(shapes))
        metrics = parse_json(files.read(METRICS_FILE), path / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path / METRICS_FILE} does not hold a JSON object")
    tensors = {name: tensor.float() for name, tensor in tensors.items()}  # fp16 when shipped
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors.values()):
        raise CheckpointError(
            f"{path / ENCODER_FILE} holds weights that are not finite (NaN or infinity); "
            "pretrain it again, or restore it"
        )
    return Encoder(path, config, tokenizer, tensors, metrics)


def shape_mismatches(model: ModelConfig, encoder: ModelConfig) -> list[str]:
    """``model.<key>`` settings that differ from the encoder's, as config problems."""
    keys = [k for k in SHAPE_KEYS if k != "nonlinearity" or "rnn" in (model.cell, encoder.cell)]
    return [
        f"model.{key} is {getattr(model, key)!r} but the encoder's is {getattr(encoder, key)!r}; "
        f"set model.{key}={getattr(encoder, key)} to start from it"
        for key in keys
        if getattr(model, key) != getattr(encoder, key)
    ]


def vector_mismatch(model: ModelConfig, encoder: ModelConfig) -> list[str]:
    """The one shape a classifier must share with an encoder to start from anything of it: the
    width of its word vectors. (Other shape keys differing, only the vectors are taken.)"""
    if model.embedding_dim == encoder.embedding_dim:
        return []
    return [
        f"model.embedding_dim is {model.embedding_dim} but the encoder's is "
        f"{encoder.embedding_dim}; set model.embedding_dim={encoder.embedding_dim} to start from "
        "its word vectors (and its cell, hidden_size, num_layers and bidirectional for its "
        "recurrent layers too)"
    ]


def vocabulary_with_encoder(tokenizer: Tokenizer, encoder: Encoder) -> Tokenizer:
    """This run's vocabulary grown to hold every word the encoder knows, at the encoder's ids,
    then the run's own new words: a word absent from a small training set but met at prediction
    time still has its pretrained vector. Unchanged when the two tokenizers differ in kind or
    text rules (lower-casing, splitting)."""
    return with_known_words(tokenizer, encoder.tokenizer) or tokenizer


@torch.no_grad()
def start_from_encoder(
    model: SentimentRNN, tokenizer: Tokenizer, encoder: Encoder
) -> dict[str, Any]:
    """Copy the encoder's recurrent layers into ``model`` when their shapes agree and, for every
    word of ``tokenizer`` the encoder knows, its vector; other words get fresh vectors at the
    encoder's scale. A model whose recurrent layers differ from the encoder's (another cell, size
    or depth) keeps its own random ones and takes the vectors alone.

    Returns what was done, for metrics.json. Raises ConfigError when the vector widths differ.
    """
    problems = vector_mismatch(model.cfg, encoder.config.model)
    if problems:
        raise ConfigError(problems)
    different = shape_mismatches(model.cfg, encoder.config.model)
    state = model.state_dict()
    for name, tensor in encoder.tensors.items():
        if name != "embedding.weight" and not different:
            state[name].copy_(tensor)
    known = encoder.tokenizer.get_vocab()
    source = encoder.tensors["embedding.weight"]
    rows, from_rows = [], []
    for token, index in tokenizer.get_vocab().items():
        found = known.get(token)
        if found is not None and index != PAD_ID:
            rows.append(index)
            from_rows.append(found)
    embedding = model.embedding.weight
    # Population spread in float64: one vector of one dimension has a spread (0), and large
    # finite weights do not overflow while squared.
    words = source[PAD_ID + 1 :].double()
    scale = float(words.std(correction=0)) if words.numel() else 0.0
    embedding.normal_(0.0, scale)  # new words: fresh vectors, as spread as the encoder's
    # On the model's device (a CUDA model refuses CPU values), long even when empty.
    into = torch.tensor(rows, dtype=torch.long, device=embedding.device)
    embedding[into] = source[torch.tensor(from_rows, dtype=torch.long)].to(embedding)
    embedding[PAD_ID] = 0.0
    return {
        "from": encoder_name(encoder.path),
        "words_from_encoder": len(rows),
        "new_words": tokenizer.get_vocab_size() - len(rows) - 1,
        "recurrent_layers": "random: " + "; ".join(different) if different else "from encoder",
        "encoder_perplexity": encoder_perplexity(encoder.metrics),
    }


def encoder_perplexity(metrics: dict[str, Any]) -> dict[str, float] | None:
    """The held-out perplexity of each direction an encoder's metrics.json reports, or None.

    Only finite numbers under the two known names are taken: the file is untrusted, and what is
    taken lands in the classifier's metrics.json and training state, which have caps of their own
    and must stay strict JSON (no NaN)."""
    found = metrics.get("perplexity")
    if not isinstance(found, dict):
        return None
    return {
        name: float(value)
        for name in ("forward", "backward")
        if isinstance(value := found.get(name), int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }
