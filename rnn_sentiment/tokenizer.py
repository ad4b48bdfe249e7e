"""Train, save, load and apply the Hugging Face ``tokenizers`` tokenizer of a model."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from rnn_sentiment.atomic import atomic_open
from rnn_sentiment.config import TokenizerConfig
from rnn_sentiment.errors import CheckpointError
from rnn_sentiment.jsonfile import parse_json

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0  # the embedding's padding_idx relies on [PAD] being the first special token
UNK_ID = 1
# A 2-million-word vocabulary fits; the bundled model's 25,000 words take 383 KiB.
MAX_TOKENIZER_BYTES = 32 * 2**20
MAX_TRUNCATION = 1_000_000  # the largest tokenizer.max_length a config accepts


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


def with_known_words(tokenizer: Tokenizer, known: Tokenizer) -> Tokenizer | None:
    """``known``'s word-level vocabulary, each word at its id there, then the words of
    ``tokenizer`` it lacks (in ``tokenizer``'s order), with ``tokenizer``'s text rules and
    truncation. None when the two do not split and normalise text alike, or are not word-level
    (their words would not mean the same)."""
    mine, theirs = json.loads(tokenizer.to_str()), json.loads(known.to_str())
    same_rules = all(mine.get(key) == theirs.get(key) for key in ("normalizer", "pre_tokenizer"))
    word_level = mine["model"].get("type") == theirs["model"].get("type") == "WordLevel"
    if not (same_rules and word_level):
        return None
    vocab = dict(known.get_vocab())
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    mine["model"]["vocab"] = vocab
    return Tokenizer.from_str(json.dumps(mine))


def configure_truncation(tokenizer: Tokenizer, max_length: int | None, side: str) -> None:
    """Truncate encodings to ``max_length`` tokens (None disables truncation)."""
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, direction=side)
    tokenizer.no_padding()  # padding is done per batch, to that batch's longest review


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids for each text; an empty text becomes a single [UNK].

    A word-level tokenizer as :func:`train_tokenizer` builds it encodes plain-ASCII texts with
    :class:`AsciiWordLevel` (the same ids, about 3x faster than the Rust tokenizer on 2 cores)
    while the Rust tokenizer encodes the other texts on a second thread; every other tokenizer
    goes through the Rust tokenizer alone.
    """
    fast = AsciiWordLevel.of(tokenizer)
    if fast is None:
        return _rust_ids(tokenizer, texts)
    ours: list[int] = []
    rest: list[int] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        (ours if fast.accepts(text) else rest).append(i)
    out: list[list[int]] = [[]] * len(texts)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the Rust tokenizer releases the GIL
        rust = pool.submit(_rust_ids, tokenizer, [texts[i] for i in rest]) if rest else None
        for i in ours:
            out[i] = fast.encode(texts[i]) or [UNK_ID]
        for i, ids in zip(rest, rust.result() if rust else [], strict=True):
            out[i] = ids  # result() raises here whatever the Rust side raised
    return out


def _rust_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    encodings = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    return [enc.ids or [UNK_ID] for enc in encodings]


# BertPreTokenizer on ASCII: whitespace (Rust's char::is_whitespace) separates words, and every
# ASCII punctuation character (char::is_ascii_punctuation) is a token of its own.
_ASCII_WORDS = re.compile(r"[^ \t\n\x0b\x0c\r!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


def _fingerprint(tokenizer: Tokenizer) -> tuple[object, ...]:
    """Cheap (about a microsecond) state of everything the fast path copies from a tokenizer."""
    parts = (tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.post_processor)
    return (
        str(tokenizer.truncation),
        str(tokenizer.padding),
        tokenizer.get_vocab_size(with_added_tokens=True),
        type(tokenizer.model).__name__,
        *(None if part is None else part.__getstate__() for part in parts),
    )


def _plain_truncation(truncation: dict) -> bool:
    return (
        truncation.get("stride") == 0
        and truncation.get("strategy") in ("LongestFirst", "OnlyFirst")
        and isinstance(truncation.get("max_length"), int)
        and truncation["max_length"] >= 1
    )


class AsciiWordLevel:
    """The Rust pipeline NFKC -> Lowercase -> BertPreTokenizer -> WordLevel -> truncation, in
    Python, for ASCII texts: NFKC leaves ASCII unchanged, so a regular expression and a dict
    lookup give the same ids. It does not :meth:`accept` texts that are not ASCII or that contain
    an added token such as ``[UNK]`` (matched before normalization by the Rust tokenizer).
    """

    _cache: dict[int, tuple[Tokenizer, tuple[object, ...], AsciiWordLevel | None]] = {}

    def __init__(self, spec: dict) -> None:
        model = spec["model"]
        self.vocab: dict[str, int] = model["vocab"]
        self.unk = self.vocab[model["unk_token"]]
        steps = spec["normalizer"]["normalizers"]
        self.lowercase = {"type": "Lowercase"} in steps
        self.added = [t["content"] for t in spec.get("added_tokens") or []]
        truncation = spec.get("truncation")
        self.max_length: int | None = None
        self.keep_end = False
        if truncation:
            self.max_length = truncation["max_length"]
            self.keep_end = truncation["direction"] == "Left"

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> AsciiWordLevel | None:
        """The fast path for ``tokenizer``, or ``None`` when its pipeline is not the one above."""
        state = _fingerprint(tokenizer)  # a tokenizer can be changed after it was first used
        hit = cls._cache.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer and hit[1] == state:
            return hit[2]
        return cls.remember(tokenizer, json.loads(tokenizer.to_str()), state)

    @classmethod
    def remember(
        cls, tokenizer: Tokenizer, spec: dict, state: tuple[object, ...] | None = None
    ) -> AsciiWordLevel | None:
        """The fast path for ``tokenizer`` from ``spec``, its ``to_str()`` already parsed (by
        :func:`parse_tokenizer`, which saves serialising and parsing it again), kept for
        :meth:`of`."""
        fast = cls(spec) if cls._supported(spec) else None
        if len(cls._cache) >= 8:
            cls._cache.clear()
        state = _fingerprint(tokenizer) if state is None else state
        cls._cache[id(tokenizer)] = (tokenizer, state, fast)  # holds it: its id stays unique
        return fast

    @staticmethod
    def _supported(spec: dict) -> bool:
        normalizer = spec.get("normalizer") or {}
        steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else None
        truncation = spec.get("truncation")
        return (
            spec.get("model", {}).get("type") == "WordLevel"
            and spec.get("pre_tokenizer") == {"type": "BertPreTokenizer"}
            and steps in ([{"type": "NFKC"}], [{"type": "NFKC"}, {"type": "Lowercase"}])
            and spec.get("post_processor") is None
            and spec.get("padding") is None
            and (truncation is None or _plain_truncation(truncation))
            and spec["model"].get("unk_token") in spec["model"].get("vocab", {})
            # Rust matches a normalized added token in the normalized text; keep it simple.
            and not any(t.get("normalized") for t in spec.get("added_tokens") or [])
        )

    def accepts(self, text: str) -> bool:
        """Whether :meth:`encode` gives the Rust tokenizer's ids for ``text``."""
        if not text.isascii() or any(token in text for token in self.added):
            return False
        return not self.lowercase or not any(token in text.lower() for token in self.added)

    def encode(self, text: str) -> list[int]:
        """Token ids of a text that :meth:`accepts` (before the empty -> [UNK] rule)."""
        if self.lowercase:
            text = text.lower()
        vocab, unk = self.vocab, self.unk
        ids = [vocab.get(word, unk) for word in _ASCII_WORDS.findall(text)]
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[-self.max_length :] if self.keep_end else ids[: self.max_length]
        return ids


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
    ids = _read_cached_ids(path, len(texts), tokenizer.get_vocab_size())
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


def _read_cached_ids(path: Path, count: int, vocab_size: int) -> list[list[int]] | None:
    # One int32 array: ``count`` lengths, then every review's ids back to back. Anything else,
    # or an id outside the vocabulary (it failed deep in the embedding), is no cache.
    try:
        flat = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if flat.ndim != 1 or flat.dtype != np.int32 or len(flat) < count:
        return None
    lengths, body = flat[:count], flat[count:]
    if (lengths < 0).any() or int(lengths.sum(dtype=np.int64)) != len(body):
        return None
    if len(body) and (int(body.min()) < 0 or int(body.max()) >= vocab_size):
        return None
    ends = np.cumsum(lengths) + count
    values = flat.tolist()
    return [values[end - n : end] for end, n in zip(ends.tolist(), lengths.tolist(), strict=True)]


def _write_cached_ids(path: Path, ids: Sequence[Sequence[int]]) -> None:
    lengths = np.fromiter((len(s) for s in ids), dtype=np.int32, count=len(ids))
    body = np.fromiter((i for s in ids for i in s), dtype=np.int32, count=int(lengths.sum()))
    try:
        with atomic_open(path) as handle:  # a reader sees the whole file or none
            np.save(handle, np.concatenate([lengths, body]), allow_pickle=False)
    except OSError:
        return  # an unwritable cache only costs the next run a re-encoding


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
    """Read a tokenizer saved by :func:`save_tokenizer`, checked as :func:`parse_tokenizer` does."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKENIZER_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot load tokenizer {path}: {exc.strerror}") from None
    if len(data) > MAX_TOKENIZER_BYTES:
        raise CheckpointError(
            f"cannot load tokenizer {path}: over the {MAX_TOKENIZER_BYTES:,}-byte limit"
        )
    return parse_tokenizer(data, path)


def parse_tokenizer(data: bytes, where: Path | str) -> Tokenizer:
    """A tokenizer from the bytes of a ``tokenizer.json``, checked before the library sees them.

    Only what :func:`train_tokenizer` writes is accepted: a word-level or BPE vocabulary whose ids
    are 0, 1, 2, ... without gaps, ``[PAD]`` at id 0, the NFKC (+ lowercase) normalizer, the BERT
    pre-tokenizer, plain truncation and no padding. The tokenizers library allocates a table as
    long as the largest id (an id of 2**31 - 1 took 8 GiB and aborted the process), pads every
    review to a fixed length when told to, and panics on a bad regular expression; none of that
    can reach it. Messages never quote the file.
    """
    spec = parse_json(data, where)
    if spec is None:
        raise CheckpointError(f"cannot load tokenizer {where}: it is not JSON text")
    try:
        problem = _spec_problem(spec)
    except (TypeError, ValueError, KeyError, AttributeError):  # a value of an unexpected type
        problem = "a value of an unexpected type"
    if problem is not None:
        raise CheckpointError(f"{where} is not a tokenizer rnn-sentiment writes: {problem}")
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception:
        raise CheckpointError(
            f"cannot load tokenizer {where}: the tokenizers library refused it"
        ) from None
    except BaseException as exc:  # a Rust panic is a pyo3 PanicException, a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise CheckpointError(
            f"cannot load tokenizer {where}: the tokenizers library refused it"
        ) from None
    if tokenizer.get_vocab_size() != len(spec["model"]["vocab"]):
        raise CheckpointError(f"{where} is not a tokenizer rnn-sentiment writes: its added tokens")
    AsciiWordLevel.remember(tokenizer, spec)  # what the library holds is what it was given
    return tokenizer


_NORMALIZERS = (
    {"type": "Sequence", "normalizers": [{"type": "NFKC"}]},
    {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
)


def _spec_problem(spec: object) -> str | None:
    """What makes ``spec`` other than a tokenizer :func:`train_tokenizer` writes, if anything."""
    if not isinstance(spec, dict):
        return "not a JSON object"
    model = spec.get("model")
    if not isinstance(model, dict) or model.get("type") not in ("WordLevel", "BPE"):
        return "its model is neither word-level nor BPE"
    problem = _vocab_problem(model.get("vocab"), spec.get("added_tokens"))
    if problem is not None:
        return problem
    # An empty review is one [UNK] (UNK_ID), like a review of unknown words only.
    if model.get("unk_token") != UNK_TOKEN or model["vocab"].get(UNK_TOKEN) != UNK_ID:
        return f"its unknown-word token is not {UNK_TOKEN} at id {UNK_ID}"
    if model["type"] == "BPE" and not _plain_merges(model.get("merges"), len(model["vocab"])):
        return "its merges are not pairs of tokens"
    if spec.get("normalizer") not in _NORMALIZERS:
        return "its normalizer is not NFKC (and lower-casing)"
    if spec.get("pre_tokenizer") != {"type": "BertPreTokenizer"}:
        return "its pre-tokenizer is not the BERT one"
    if spec.get("post_processor") is not None or spec.get("decoder") is not None:
        return "it has a post-processor or a decoder"
    if spec.get("padding") is not None:
        return "it pads (batches are padded to their longest review instead)"
    truncation = spec.get("truncation")
    if truncation is not None and not (
        isinstance(truncation, dict)
        and _plain_truncation(truncation)
        and truncation["max_length"] <= MAX_TRUNCATION
        and truncation.get("direction") in ("Left", "Right")
    ):
        return f"its truncation is not to 1 to {MAX_TRUNCATION:,} tokens from one side"
    return None


def _vocab_problem(vocab: object, added: object) -> str | None:
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        return "its vocabulary is not a map of tokens to ids"
    if len(vocab) < 2 or set(vocab.values()) != set(range(len(vocab))):
        return "its vocabulary ids are not 0, 1, 2, ... without gaps"
    if vocab.get(PAD_TOKEN) != PAD_ID:
        return f"{PAD_TOKEN} must be id {PAD_ID}"
    tokens = added if isinstance(added, list) else [] if added is None else None
    if tokens is None or not all(
        isinstance(t, dict) and isinstance(t.get("content"), str) and type(t.get("id")) is int
        and vocab.get(t["content"]) == t["id"]
        for t in tokens
    ):  # fmt: skip
        return "its added tokens are not tokens of its vocabulary"
    return None


def _plain_merges(merges: object, vocab_size: int) -> bool:
    return (
        isinstance(merges, list)
        and len(merges) <= vocab_size
        and all(
            isinstance(m, str)
            or (isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m))
            for m in merges
        )
    )
