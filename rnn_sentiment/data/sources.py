"""Read labelled reviews from the built-in corpus, local files and folders, or the Hugging Face hub.

Sources, in the order they are tried:

* ``builtin``: the small generated corpus shipped with the package.
* ``long-range``: the generated long-range task (``longrange.py``), sized by ``data.long_range``.
* a local file (Parquet, CSV, TSV, JSON/JSONL, plain text): it is the split asked for.
* a local folder holding ``<split>.<ext>`` files or ``aclImdb``-style ``<split>/pos|neg/*.txt``.
* anything else is taken as a hub dataset id.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnn_sentiment.config import DataConfig
from rnn_sentiment.errors import DataError

BUILTIN_DIR = Path(__file__).parents[1] / "assets" / "builtin"
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "review", "content")
_FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "json",
    ".json": "json",
    ".txt": "text",
}
# Spellings of the two classes found in public sentiment datasets.
_LABEL_ALIASES = {
    "0": 0, "neg": 0, "negative": 0,
    "1": 1, "pos": 1, "positive": 1,
}  # fmt: skip
UNLABELLED = -1
# The hub's IMDB names its unlabelled reviews 'unsupervised'; local copies often say 'unsup'.
_SPLIT_ALIASES = {"unsupervised": ("unsup",), "unsup": ("unsupervised",)}
DEFAULT_LABEL_NAMES = ("negative", "positive")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_FASTTEXT_LABEL = re.compile(r"^__label__(\S+)\s+(.*)$", re.DOTALL)


@dataclass
class Reviews:
    """Texts with integer labels (-1 for unlabelled)."""

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class DataSplits:
    """Train, validation and optional test reviews with the label names they index."""

    train: Reviews
    validation: Reviews
    test: Reviews | None
    label_names: list[str] = field(default_factory=lambda: list(DEFAULT_LABEL_NAMES))
    # Texts without labels: the unlabelled rows of the training split (aclImdb's train/unsup)
    # and data.unlabelled_split. Only pretraining reads them.
    unlabelled: list[str] = field(default_factory=list)


def load_splits(cfg: DataConfig, seed: int, unlabelled: bool = False) -> DataSplits:
    """Read the configured splits; carve a stratified validation split when none is given.

    Unlabelled rows (label -1) are left out of every split: they can neither train nor score.
    With ``unlabelled`` they are kept as ``unlabelled`` texts, with every text of
    ``data.unlabelled_split``; without it that split is not read.
    """
    _check_single_file_splits(cfg)
    raw_train = read_split(cfg.source, cfg.train_split, cfg)
    label_names = infer_label_names(raw_train[1])
    unlabelled_texts: list[str] = []
    if unlabelled:
        unlabelled_texts = [t for t, v in zip(*raw_train, strict=True) if _label_key(v) is None]
        if cfg.unlabelled_split is not None:
            try:
                unlabelled_texts += read_split(cfg.source, cfg.unlabelled_split, cfg, False)[0]
            except DataError as error:
                raise DataError(
                    f"{error} (data.unlabelled_split; set data.unlabelled_split=null to "
                    "pretrain on the training texts alone)"
                ) from None
    train = to_reviews(raw_train, label_names, supervised=True)
    for extra in cfg.extra_train_sources:
        more = _extra_reviews(cfg, extra, label_names)
        train = Reviews(train.texts + more.texts, train.labels + more.labels)
    if cfg.validation_split is not None:
        raw = read_split(cfg.source, cfg.validation_split, cfg)
        validation = to_reviews(raw, label_names, supervised=True)
    else:
        train, validation = stratified_split(train, cfg.validation_fraction, seed)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train, _ = stratified_split(train, 1 - cfg.max_train_samples / len(train), seed)
    test = None
    if cfg.test_split is not None:
        test = to_reviews(read_split(cfg.source, cfg.test_split, cfg), label_names, True)
    for name, reviews in (("train", train), ("validation", validation), ("test", test)):
        if reviews is not None and len(reviews) == 0:
            raise DataError(
                f"the {name} split of {cfg.source} has no labelled reviews; "
                f"use a labelled split or a larger data.validation_fraction"
            )
    return DataSplits(train, validation, test, label_names, unlabelled_texts)


def _extra_reviews(cfg: DataConfig, extra: str, label_names: list[str]) -> Reviews:
    """The training split of one of ``data.extra_train_sources``, labelled like the primary's.

    Its label set must be the primary's: with 0/1 labels next to 0/1/2, "1" would mean positive
    in one source and neutral in the other, and nothing downstream could tell.
    """
    where = f"data.extra_train_sources entry {extra!r}"
    try:
        raw = read_split(extra, cfg.train_split, cfg.model_copy(update={"text_column": None}))
        own = infer_label_names(raw[1])
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    if own != label_names:
        raise DataError(
            f"{where} has the labels {own}, but {cfg.source} has {label_names}; every training "
            "source needs the same label set (relabel it, or drop it from the list)"
        )
    return to_reviews(raw, label_names, supervised=True)


def _check_single_file_splits(cfg: DataConfig) -> None:
    # A file is whichever split is asked for: naming a test split on it would test on train.
    if cfg.source != "builtin" and Path(cfg.source).expanduser().is_file():
        for key, split in (("validation_split", cfg.validation_split),
                           ("test_split", cfg.test_split),
                           ("unlabelled_split", cfg.unlabelled_split)):  # fmt: skip
            if split is not None:
                raise DataError(
                    f"data.source is a single file, so data.{key}={split} would reuse the "
                    f"training rows; use a folder with one file per split, or data.{key}=null"
                )


def read_split(
    source: str, split: str, cfg: DataConfig, labelled: bool = True
) -> tuple[list[str], list[Any]]:
    """Raw texts and raw label values of one split of a source (no labels without ``labelled``).

    Texts are returned as they are in the source: the model's text pipeline
    (:mod:`rnn_sentiment.text`) prepares them, in training and at inference alike.
    """
    if source == "long-range":
        from rnn_sentiment.data.longrange import read_split as read_long_range

        return read_long_range(cfg.long_range, split)
    location = resolve_source(source, split)
    if location is None:
        table = _read_hub(source, split)
    elif location.is_dir():
        table = _read_review_folder(location)
    else:
        table = _read_file(location)
    return _pick_columns(table, cfg, str(location or source), labelled)


def resolve_source(source: str, split: str) -> Path | None:
    """The local file or folder holding ``split`` of ``source``; None for a hub id."""
    root = BUILTIN_DIR if source == "builtin" else Path(source).expanduser()
    if root.is_file():
        return root
    if root.is_dir():
        for name in (split, *_SPLIT_ALIASES.get(split, ())):
            for suffix in _FORMATS:
                for candidate in (root / f"{name}{suffix}", root / f"{name}{suffix}.gz"):
                    if candidate.is_file():
                        return candidate
        if (root / split / "pos").is_dir() or (root / split / "neg").is_dir():
            return root / split
        if split == "train" and ((root / "pos").is_dir() or (root / "neg").is_dir()):
            return root
        found = sorted(p.name for p in root.iterdir() if _format_of(p) or p.is_dir())
        raise DataError(
            f"no split '{split}' in {root}: expected {split}.parquet/.csv/.tsv/.jsonl/.txt or "
            f"{split}/pos + {split}/neg; found {', '.join(found) or 'nothing usable'}"
        )
    if _looks_like_path(source):
        raise DataError(f"data source not found: {source} (check the path, or use data.source=...)")
    return None


def infer_label_names(values: Sequence[Any]) -> list[str]:
    """Label names for the raw label values of a training split, one per observed value.

    0/1, neg/pos and negative/positive become ``["negative", "positive"]``; other integers keep
    their numeric order (``1..5`` stars are five classes, ``{0, 4}`` two), strings sort by name.
    """
    seen = {key for key in map(_label_key, values) if key is not None}
    if len(seen) < 2:
        found = f"only {sorted(seen)}" if seen else "no labelled rows"
        raise DataError(f"the training data needs at least two classes; it has {found}")
    if seen <= set(_LABEL_ALIASES):
        return list(DEFAULT_LABEL_NAMES)
    if all(_is_integer(k) for k in seen):
        return sorted(seen, key=int)
    return sorted(seen)


def to_reviews(
    raw: tuple[list[str], list[Any]], label_names: Sequence[str], supervised: bool = False
) -> Reviews:
    """Map raw labels to ids; with ``supervised``, drop unlabelled rows (label -1)."""
    texts, values = raw
    index = {name.lower(): i for i, name in enumerate(label_names)}
    if list(label_names) == list(DEFAULT_LABEL_NAMES):
        index.update(_LABEL_ALIASES)
    labels = [_label_id(v, index, label_names) for v in values]
    if supervised:
        keep = [i for i, label in enumerate(labels) if label != UNLABELLED]
        return Reviews([texts[i] for i in keep], [labels[i] for i in keep])
    return Reviews(list(texts), labels)


def stratified_split(reviews: Reviews, fraction: float, seed: int) -> tuple[Reviews, Reviews]:
    """Split off ``fraction`` of each class, seeded, so both parts keep the class balance."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(reviews.labels):
        by_label.setdefault(label, []).append(i)
    kept: list[int] = []
    held: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        cut = round(len(indices) * fraction)
        held.extend(indices[:cut])
        kept.extend(indices[cut:])
    kept.sort()
    held.sort()
    return _subset(reviews, kept), _subset(reviews, held)


def _subset(reviews: Reviews, indices: list[int]) -> Reviews:
    return Reviews([reviews.texts[i] for i in indices], [reviews.labels[i] for i in indices])


def _label_key(value: Any) -> str | None:
    """One canonical string per label value; None for unlabelled (-1, empty, 'unsup')."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(int(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip().lower()
    if _is_integer(text):
        text = str(int(text))
    return None if text in ("", "-1", "unsup", "unlabelled", "unlabeled") else text


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _label_id(value: Any, index: dict[str, int], label_names: Sequence[str]) -> int:
    key = _label_key(value)
    if key is None:
        return UNLABELLED
    if key in index:
        return index[key]
    raise DataError(
        f"unknown label {value!r}; the model's labels are {', '.join(label_names)}"
        + (" (or 0/1, neg/pos)" if list(label_names) == list(DEFAULT_LABEL_NAMES) else "")
    )


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a bad path."""
    return not _HUB_ID.match(source) or _format_of(Path(source)) is not None


def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def _read_file(path: Path) -> dict[str, list[Any]]:
    kind = _format_of(path)
    if kind is None:
        raise DataError(
            f"cannot tell the format of {path}: use .parquet, .csv, .tsv, .jsonl or .txt"
        )
    if kind == "text":
        return _read_text_lines(path)
    import datasets  # heavy (about 1 s): only training and evaluation pay for it

    builder, options = ("csv", {"delimiter": "\t"}) if kind == "tsv" else (kind, {})
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # our DataError says it once
    try:
        table = datasets.load_dataset(
            builder,
            data_files=str(path),
            split="train",
            **options,
        )
    except Exception as exc:  # datasets raises many types for a malformed file
        raise DataError(f"cannot read {path} as {kind}: {_first_line(exc)}") from None
    return table.to_dict()


def _read_text_lines(path: Path) -> dict[str, list[Any]]:
    """One review per line; fastText-style ``__label__pos text`` lines carry a label."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    texts: list[str] = []
    labels: list[Any] = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                match = _FASTTEXT_LABEL.match(line)
                texts.append(match.group(2) if match else line)
                labels.append(match.group(1) if match else None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return {"text": texts, "label": labels}


def _read_review_folder(folder: Path) -> dict[str, list[Any]]:
    texts: list[str] = []
    labels: list[Any] = []
    for label in ("neg", "pos", "unsup"):
        for file in sorted((folder / label).glob("*.txt")):
            try:
                texts.append(file.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{file} is not valid UTF-8") from None
            labels.append(None if label == "unsup" else label)
    if not texts:
        raise DataError(f"no .txt reviews under {folder}/pos or {folder}/neg")
    return {"text": texts, "label": labels}


def _pick_columns(
    table: dict[str, list[Any]], cfg: DataConfig, where: str, labelled: bool = True
) -> tuple[list[str], list[Any]]:
    text_column = cfg.text_column or next((c for c in TEXT_COLUMN_CANDIDATES if c in table), None)
    if text_column is None or text_column not in table:
        raise DataError(_missing_column("text", text_column, table, where, "text_column"))
    texts = ["" if t is None else str(t) for t in table[text_column]]
    if not labelled:
        return texts, []
    if cfg.label_column not in table:
        raise DataError(_missing_column("label", cfg.label_column, table, where, "label_column"))
    return texts, list(table[cfg.label_column])


def _missing_column(
    role: str, name: str | None, table: dict[str, list[Any]], where: str, key: str
) -> str:
    import difflib

    columns = list(table)
    close = difflib.get_close_matches(name or "text", columns, n=1)
    hint = f"did you mean data.{key}={close[0]}? " if close else ""
    wanted = f"'{name}'" if name else f"({', '.join(TEXT_COLUMN_CANDIDATES)})"
    return f"no {role} column {wanted} in {where}; {hint}columns are: {', '.join(columns)}"


def _read_hub(dataset_id: str, split: str) -> dict[str, list[Any]]:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise DataError(
            f"cannot reach the Hugging Face hub to download '{dataset_id}'; "
            "pass a local file or folder of split files instead (train: data.source=PATH, "
            "evaluate: --data PATH)"
        )
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:
        raise DataError(f"cannot load '{dataset_id}' split '{split}': {_first_line(exc)}") from None
    return table.to_dict()


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Connect to the hub in a thread so that a hanging DNS lookup cannot stall us either."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
