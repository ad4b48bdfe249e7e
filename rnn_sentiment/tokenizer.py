"""Train, save, load and apply the Hugging Face ``tokenizers`` tokenizer of a model."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from rnn_sentiment.config import TokenizerConfig
from rnn_sentiment.errors import CheckpointError

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0  # the embedding's padding_idx relies on [PAD] being the first special token
UNK_ID = 1


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Learn a word-level or BPE vocabulary from training texts."""
    specials = [PAD_TOKEN, UNK_TOKEN]
    trainer: trainers.Trainer
    if cfg.kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        trainer = trainers.WordLevelTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            show_progress=False,  # the trainer would draw its own bar around ours
        )
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=False,
        )
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    # Splitting off punctuation keeps "good." and "good" one word, and "n't" style pieces apart.
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    configure_truncation(tokenizer, cfg.max_length, cfg.truncation_side)
    return tokenizer


def configure_truncation(tokenizer: Tokenizer, max_length: int | None, side: str) -> None:
    """Truncate encodings to ``max_length`` tokens (None disables truncation)."""
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, direction=side)
    tokenizer.no_padding()  # padding is done per batch, to that batch's longest review


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids for each text, in parallel in Rust; an empty text becomes a single [UNK]."""
    encodings = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    return [enc.ids or [UNK_ID] for enc in encodings]


def encode_cached(
    tokenizer: Tokenizer, texts: Sequence[str], cache_dir: str | Path | None
) -> list[list[int]]:
    """:func:`encode`, remembered on disk under ``cache_dir`` (None: no cache).

    The key is a hash of the tokenizer and every text, so a changed vocabulary, truncation or
    review can never reuse stale ids. A cache that cannot be read or written is skipped: it only
    ever saves time.
    """
    if cache_dir is None:
        return encode(tokenizer, texts)
    path = Path(cache_dir).expanduser() / f"tokens-{_cache_key(tokenizer, texts)}.npy"
    ids = _read_cached_ids(path, len(texts))
    if ids is None:
        ids = encode(tokenizer, texts)
        _write_cached_ids(path, ids)
    return ids


def _cache_key(tokenizer: Tokenizer, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(tokenizer.to_str().encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _read_cached_ids(path: Path, count: int) -> list[list[int]] | None:
    # One int32 array: ``count`` lengths, then every review's ids back to back.
    try:
        flat = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    lengths = flat[:count]
    if flat.ndim != 1 or len(lengths) != count or int(lengths.sum()) != len(flat) - count:
        return None
    ends = np.cumsum(lengths) + count
    values = flat.tolist()
    return [values[end - n : end] for end, n in zip(ends.tolist(), lengths.tolist(), strict=True)]


def _write_cached_ids(path: Path, ids: Sequence[Sequence[int]]) -> None:
    lengths = np.fromiter((len(s) for s in ids), dtype=np.int32, count=len(ids))
    body = np.fromiter((i for s in ids for i in s), dtype=np.int32, count=int(lengths.sum()))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, np.concatenate([lengths, body]), allow_pickle=False)
        os.replace(tmp, path)  # a reader sees the whole file or none
    except OSError:
        return


def encode_arrays(
    tokenizer: Tokenizer, texts: Sequence[str], slice_size: int = 1024
) -> list[np.ndarray]:
    """Like :func:`encode`, as one small int32 array per text, a slice of texts at a time.

    A Rust ``Encoding`` (tokens, offsets, masks) and a list of Python ints cost about 20 KB per
    review; the arrays cost 4 bytes a token, which keeps batch scoring's memory flat and small.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(texts), slice_size):
        for ids in encode(tokenizer, texts[start : start + slice_size]):
            out.append(np.asarray(ids, dtype=np.int32))
    return out


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Write ``tokenizer.json`` (plain JSON, safe to load)."""
    path.write_text(tokenizer.to_str(), encoding="utf-8")


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a tokenizer saved by :func:`save_tokenizer`."""
    try:
        tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, Exception) as exc:
        raise CheckpointError(f"cannot load tokenizer {path}: {exc}") from None
    if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID:
        raise CheckpointError(f"{path} is not an rnn-sentiment tokenizer ([PAD] must be id 0)")
    return tokenizer
