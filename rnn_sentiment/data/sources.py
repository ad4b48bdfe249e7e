"""Read labelled reviews from the built-in corpus, local files and folders, or the Hugging Face hub.

Sources, in the order they are tried:

* ``builtin``: the small generated corpus shipped with the package.
* ``long-range``: the generated long-range task (``longrange.py``), sized by ``data.long_range``.
* a local file (Parquet, CSV, TSV, JSON/JSONL, plain text): it is the split asked for.
* a local folder holding ``<split>.<ext>`` files or ``aclImdb``-style ``<split>/pos|neg/*.txt``.
* anything else is taken as a hub dataset id (the only use of ``datasets``).

Local files and folders are read in chunks by the readers of :mod:`rnn_sentiment.data.readers`, the
same ones ``evaluate`` and ``predict --input`` use, so every command sees the same columns and
picks the same text column. Training is stricter than scoring about what it reads: a row the
reader flags (a CSV row with the wrong number of fields, a JSON line that is not an object) or a
text that is not valid UTF-8 stops it with the row named, where scoring keeps and marks the row.
"""

from __future__ import annotations

import math
import os
import random
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Any

from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.files import (
    EXTENSIONS,
    choose_text_column,
    format_of,
    labelled_columns,
    open_reader,
)
from rnn_sentiment.data.readers import Chunk, FolderReader, ParquetReader, Reader, TableReader
from rnn_sentiment.errors import DataError, cut, first_line, listed
from rnn_sentiment.text import fix_text

BUILTIN_DIR = Path(__file__).parents[1] / "assets" / "builtin"
# Spellings of the two classes found in public sentiment datasets.
_LABEL_ALIASES = {
    "0": 0, "neg": 0, "negative": 0, "false": 0,
    "1": 1, "pos": 1, "positive": 1, "true": 1,
}  # fmt: skip
# (false/true: a CSV cell of a boolean column, as JSON's false/true and Parquet's bool map)
UNLABELLED = -1
# More classes than this is an id or a free-text column taken for the labels (1,500 ids trained a
# 1,500-class model without a word).
MAX_CLASSES = 1000
# The hub's IMDB names its unlabelled reviews 'unsupervised'; local copies often say 'unsup'.
_SPLIT_ALIASES = {"unsupervised": ("unsup",), "unsup": ("unsupervised",)}
DEFAULT_LABEL_NAMES = ("negative", "positive")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Rows read at a time: a split ends up in memory (training needs it all), the file's other
# columns and its raw bytes do not.
_CHUNK_ROWS = 4096
_WHOLE_NUMBER = re.compile(r"^-?\d+\.0*$")


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
    # Rows of the training and validation splits left out: no label (-1, empty, unsup, NaN) or
    # no text. The data line says how many.
    left_out: int = 0


def load_splits(cfg: DataConfig, seed: int, unlabelled: bool = False) -> DataSplits:
    """Read the configured splits; carve a stratified validation split when none is given.

    Unlabelled rows (label -1) are left out of every split: they can neither train nor score.
    With ``unlabelled`` they are kept as ``unlabelled`` texts, with every text of
    ``data.unlabelled_split``; without it that split is not read.
    """
    _check_single_file_splits(cfg)
    _check_overlaps(cfg)
    raw_train = read_split(cfg.source, cfg.train_split, cfg)
    try:
        label_names = infer_label_names(raw_train[1])
    except DataError as error:
        raise DataError(f"{cfg.source}, split '{cfg.train_split}': {error}") from None
    unlabelled_texts = _unlabelled_texts(cfg, raw_train) if unlabelled else []
    train = to_reviews(raw_train, label_names, supervised=True)
    left_out = len(raw_train[0]) - len(train)
    for extra in cfg.extra_train_sources:
        more, dropped = _extra_reviews(cfg, extra, label_names)
        train = Reviews(train.texts + more.texts, train.labels + more.labels)
        left_out += dropped
    if cfg.validation_split is not None:
        raw = read_split(cfg.source, cfg.validation_split, cfg)
        validation = to_reviews(
            raw, label_names, True, f"{cfg.source}, split '{cfg.validation_split}'"
        )
        left_out += len(raw[0]) - len(validation)
    else:
        train, validation = stratified_split(train, cfg.validation_fraction, seed)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train, _ = stratified_split(train, 1 - cfg.max_train_samples / len(train), seed)
    test = None
    if cfg.test_split is not None:
        raw = read_split(cfg.source, cfg.test_split, cfg)
        test = to_reviews(raw, label_names, True, f"{cfg.source}, split '{cfg.test_split}'")
    _check_split_sizes(cfg, train, validation, test, label_names)
    return DataSplits(train, validation, test, label_names, unlabelled_texts, left_out)


def _unlabelled_texts(cfg: DataConfig, raw_train: tuple[list[str], list[Any]]) -> list[str]:
    """The texts pretraining may read besides the labelled ones: the training split's
    unlabelled rows and every text of ``data.unlabelled_split``."""
    texts = [t for t, v in zip(*raw_train, strict=True) if _label_key(v) is None]
    if cfg.unlabelled_split is not None:
        try:
            texts += read_split(cfg.source, cfg.unlabelled_split, cfg, False)[0]
        except DataError as error:
            raise DataError(
                f"{error} (data.unlabelled_split; set data.unlabelled_split=null to "
                "pretrain on the training texts alone)"
            ) from None
    return texts


def _check_split_sizes(
    cfg: DataConfig,
    train: Reviews,
    validation: Reviews,
    test: Reviews | None,
    label_names: list[str],
) -> None:
    """Refuse a split left without labelled reviews, or training without a class."""
    fixes = {
        "train": "give labelled reviews (a label column with two classes or more)",
        "validation": "use a labelled split, or a larger data.validation_fraction",
        "test": "label its reviews, or set data.test_split=null",
    }
    for name, reviews in (("train", train), ("validation", validation), ("test", test)):
        if reviews is not None and len(reviews) == 0:
            raise DataError(
                f"the {name} split of {cfg.source} has no labelled reviews; {fixes[name]}"
            )
    trained = set(train.labels)
    missing = [name for i, name in enumerate(label_names) if i not in trained]
    if missing:  # carved into validation, left out by max_train_samples, or every text blank
        carved = cfg.validation_split is None or cfg.max_train_samples is not None
        raise DataError(
            f"no training review is labelled {listed([repr(m) for m in missing])}"
            + (
                " once the validation reviews are carved out (and data.max_train_samples applied)"
                if carved
                else " with a text"
            )  # fmt: skip
            + f" ({len(train):,} training reviews); give more reviews of it"
            + (", or a smaller data.validation_fraction" if carved else "")
        )


def _check_overlaps(cfg: DataConfig) -> None:
    """Refuse data that would train on what validates or tests the run, however it is named:
    an extra training source or the unlabelled split that is the validation or test split's
    file or folder, an extra source that repeats the training split, and a validation split
    that is the test split (early stopping and the temperature would be fitted on test)."""
    held = {
        role: split_location(cfg.source, split)
        for role, split in (("validation", cfg.validation_split), ("test", cfg.test_split))
        if split is not None
    }
    if "validation" in held and held["validation"] == held.get("test"):
        raise DataError(
            f"data.validation_split ({cfg.validation_split}) and data.test_split "
            f"({cfg.test_split}) are the same reviews: the epoch and the temperature would be "
            "chosen on the test figures; set data.validation_split=null to carve it from training"
        )
    training = split_location(cfg.source, cfg.train_split)
    for role, place in held.items():
        if place == training:
            raise DataError(
                f"data.{role}_split ({getattr(cfg, f'{role}_split')}) is the training split of "
                f"{cfg.source} under another name: it would "
                f"{'validate' if role == 'validation' else 'test'} on the training reviews; "
                f"name a split of other reviews, or set data.{role}_split=null"
            )
    named = [(f"data.extra_train_sources entry {extra!r}", split_location(extra, cfg.train_split))
             for extra in cfg.extra_train_sources]  # fmt: skip
    if cfg.unlabelled_split is not None:
        named.append(("data.unlabelled_split", split_location(cfg.source, cfg.unlabelled_split)))
    for what, location in named:
        leak = next((role for role, place in held.items() if place == location), None)
        if leak is not None:
            fix = "set it to null" if what == "data.unlabelled_split" else "drop it"
            raise DataError(
                f"{what} is the {leak} split of {cfg.source}: training on it would leak into "
                f"the {leak} figures; {fix}"
            )
        if location == training and what == "data.unlabelled_split":
            raise DataError(
                f"data.unlabelled_split is the training split of {cfg.source} under another "
                "name: pretraining would read the carved validation reviews too (it reads the "
                "training texts anyway); set it to null"
            )
        if location == training:
            raise DataError(
                f"{what} is the training split of {cfg.source} itself: every review would "
                "train twice, and a carved validation review would be a training one too; drop it"
            )


def split_location(source: str, split: str) -> tuple[str, ...]:
    """What ``split`` of ``source`` reads, to compare however it is named: the file or folder
    (its device and inode), or the hub id and split name (a source that is not there: its own
    name)."""
    try:
        location = resolve_source(source, split)
    except (DataError, OSError):  # reading it will say what is wrong
        return ("missing", source, split)
    if location is None:
        return ("hub", source, split)
    try:
        found = location.stat()  # the same file under any name: links, hard links included
    except OSError:
        return ("missing", source, split)
    return ("path", str(found.st_dev), str(found.st_ino))


def _extra_reviews(cfg: DataConfig, extra: str, label_names: list[str]) -> tuple[Reviews, int]:
    """The training split of one of ``data.extra_train_sources``, labelled like the primary's,
    and how many of its rows were left out (no label or no text).

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
            f"{where} has the labels {listed(own)}, but {cfg.source} has {listed(label_names)}; "
            "every training source needs the same label set (relabel it, or drop it from the list)"
        )
    reviews = to_reviews(raw, label_names, True, where)
    return reviews, len(raw[0]) - len(reviews)  # and the rows it left out


def _check_single_file_splits(cfg: DataConfig) -> None:
    # A file is whichever split is asked for: naming a test split on it would test on train.
    single = single_source(cfg.source)
    if single is not None:
        for key, split in (("validation_split", cfg.validation_split),
                           ("test_split", cfg.test_split),
                           ("unlabelled_split", cfg.unlabelled_split)):  # fmt: skip
            if split is not None:
                raise DataError(
                    f"data.source is a single {single}, so data.{key}={split} would reuse the "
                    f"training rows; use a folder with one file per split, or data.{key}=null"
                )


def single_source(source: str) -> str | None:
    """'file' or 'pos/neg folder' when ``source`` holds one split only (whichever is asked for),
    else None."""
    if source in ("builtin", "long-range"):
        return None
    root = Path(source).expanduser()
    if root.is_file():
        return "file"
    return "pos/neg folder" if _is_review_folder(root) else None


def _is_review_folder(folder: Path) -> bool:
    return (folder / "pos").is_dir() or (folder / "neg").is_dir()


def read_split(
    source: str, split: str, cfg: DataConfig, labelled: bool = True
) -> tuple[list[str], list[Any]]:
    """Raw texts and raw label values of one split of a source (no labels without ``labelled``).

    Texts are returned as they are in the source: the model's text pipeline
    (:mod:`rnn_sentiment.text`) prepares them, in training and at inference alike.
    """
    reader = open_split(source, split, cfg)
    try:
        return _collect(reader, cfg, labelled)
    finally:
        reader.close()


def open_split(source: str, split: str, cfg: DataConfig) -> Reader:
    """A reader over one split: local files and folders stream from disk; a hub split and the
    generated long-range task are built in memory and handed out in chunks the same way."""
    if source == "long-range":
        from rnn_sentiment.data.longrange import read_split as read_long_range

        texts, labels = read_long_range(cfg.long_range, split)
        return TableReader({"text": texts, "label": labels}, f"long-range split '{split}'")
    location = resolve_source(source, split)
    if location is None:
        return TableReader(_read_hub(source, split), source)
    kind = "folder" if location.is_dir() else format_of(location)
    if kind is None:
        raise DataError(f"cannot tell the format of {location}: use {_suffixes()} (optionally .gz)")
    return open_reader(str(location), kind)


def _collect(reader: Reader, cfg: DataConfig, labelled: bool) -> tuple[list[str], list[Any]]:
    """The text (and label) column of every row, read chunk by chunk; refuses flagged rows."""
    where = reader.where
    if not reader.columns:
        raise DataError(f"{where} names no columns: it is empty, or has no header or JSON object")
    if labelled:
        options = ("data.text_column=", "data.label_column=")
        text_column = labelled_columns(
            reader.columns, cfg.text_column, cfg.label_column, where, options
        )
        wanted = [text_column, cfg.label_column]
    else:
        text_column = choose_text_column(
            reader.columns, cfg.text_column, where, "data.text_column="
        )
        wanted = [text_column]
    if isinstance(reader, ParquetReader):
        reader.wanted = list(dict.fromkeys(wanted))
    texts: list[str] = []
    labels: list[Any] = []
    for chunk in reader.chunks(_CHUNK_ROWS):
        texts.extend(_checked_texts(reader, chunk, text_column, len(texts)))
        if labelled:
            labels.extend(chunk.columns[cfg.label_column])
    return texts, labels


def _checked_texts(reader: Reader, chunk: Chunk, column: str, before: int) -> list[str]:
    """The chunk's texts ('' for a missing one); a flagged row or a bad text is an error."""
    texts: list[str] = []
    for i, (value, problem) in enumerate(zip(chunk.columns[column], chunk.problems, strict=True)):
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problem = f"the text is a {type(value).__name__}, not a string"
            value = str(value)
        elif value is not None and fix_text(value)[1]:  # undecodable bytes kept as escapes
            problem = "not valid UTF-8; re-encode the file as UTF-8"
        if problem:
            raise DataError(f"{_row_name(reader, chunk, i, before)}: {problem}")
        texts.append(value or "")
    return texts


def _row_name(reader: Reader, chunk: Chunk, index: int, before: int) -> str:
    """How an error names row ``index`` of a chunk: its file in a folder, else its row number."""
    if isinstance(reader, FolderReader):
        return str(Path(reader.where) / chunk.columns["id"][index])
    return f"{reader.where}, row {before + index + 1}"


def resolve_source(source: str, split: str) -> Path | None:
    """The local file or folder holding ``split`` of ``source``; None for a hub id (and for the
    generated ``long-range`` task)."""
    if source == "long-range":
        return None
    root = BUILTIN_DIR if source == "builtin" else Path(source).expanduser()
    if root.is_file():
        return root
    if root.is_dir():
        if not isinstance(split, str) or split in ("", ".", "..") or "/" in split or "\\" in split:
            raise DataError(
                f"split '{split}' is not a split name: a split is a file stem or folder name in "
                f"{root} (train, test, ...); a file elsewhere is --data FILE (data.source)"
            )
        for name in (split, *_SPLIT_ALIASES.get(split, ())):
            for suffix in EXTENSIONS:
                for candidate in (root / f"{name}{suffix}", root / f"{name}{suffix}.gz"):
                    if candidate.is_file():
                        return candidate
        if _is_review_folder(root / split):
            return root / split
        if _is_review_folder(root):  # aclImdb/test itself: like a file, the split asked for
            return root
        found = sorted(p.name for p in root.iterdir() if format_of(p) or p.is_dir())
        raise DataError(
            f"no split '{split}' in {root}: expected {split}{'/'.join(EXTENSIONS)} or "
            f"{split}/pos + {split}/neg; found {listed(found) or 'nothing usable'}"
        )
    if root.exists():  # a FIFO, a device, a socket
        raise DataError(f"data source {source} is not a regular file or a folder; give a file")
    if _looks_like_path(source):
        raise DataError(f"data source not found: {source} (check the path, or use data.source=...)")
    return None


def infer_label_names(values: Sequence[Any]) -> list[str]:
    """Label names for the raw label values of a training split, one per observed value.

    0/1, neg/pos and negative/positive become ``["negative", "positive"]``; other integers keep
    their numeric order (``1..5`` stars are five classes, ``{0, 4}`` two), strings sort by name.
    """
    keys = [_label_key(value) for value in values]
    seen = {key for key in keys if key is not None}
    classes = {_LABEL_ALIASES[k] for k in seen} if seen <= set(_LABEL_ALIASES) else seen
    if len(classes) < 2:  # "1" and "positive" are one class
        found = f"only {listed([repr(k) for k in sorted(seen)])}" if seen else "no labelled rows"
        unlabelled = keys.count(None)
        note = f" ({unlabelled:,} unlabelled rows: -1, empty, unsup or NaN)" if unlabelled else ""
        raise DataError(f"the training data needs at least two classes; it has {found}{note}")
    if len(seen) > MAX_CLASSES:
        raise DataError(
            f"the label column has {len(seen):,} different values, and each would be a class "
            f"(at most {MAX_CLASSES:,}): is it an id or a score? name the label column with "
            "data.label_column="
        )
    if seen <= set(_LABEL_ALIASES):
        return list(DEFAULT_LABEL_NAMES)
    if all(_is_integer(k) for k in seen):
        return sorted(seen, key=int)
    return sorted(seen)


def to_reviews(
    raw: tuple[list[str], list[Any]],
    label_names: Sequence[str],
    supervised: bool = False,
    where: str = "",
) -> Reviews:
    """Map raw labels to ids; with ``supervised``, drop unlabelled rows (label -1) and rows
    whose text is empty or blank, which ``evaluate`` and batch scoring leave unscored too.
    ``where`` (a split, a file) starts the error of a label that is no class."""
    texts, values = raw
    index = {name.lower(): i for i, name in enumerate(label_names)}
    if list(label_names) == list(DEFAULT_LABEL_NAMES):
        index.update(_LABEL_ALIASES)
    try:
        labels = [_label_id(v, index, label_names) for v in values]
    except DataError as error:
        raise DataError(f"{where}: {error}" if where else str(error)) from None
    if supervised:
        keep = [i for i, label in enumerate(labels) if label != UNLABELLED and texts[i].strip()]
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
    """One canonical string per label value; None for unlabelled (-1, empty, 'unsup', and the
    NaN that pandas writes for a missing value). A label that can be no class (infinite, a list
    or an object) is refused: it became a class of its own."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(int(value))
    number = isinstance(value, Number) and not isinstance(value, int)  # float, Decimal
    if number and math.isnan(value):
        return None
    if number and math.isinf(value) or isinstance(value, (list, tuple, dict, set, bytes)):
        shown = repr(value) if number else f"a {type(value).__name__}"
        raise DataError(
            f"a label is {shown}; a label is a class name or a whole number (empty, -1 or "
            "unsup for an unlabelled row)"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip().lower()
    if _is_integer(text):
        text = str(int(text))
    elif _WHOLE_NUMBER.match(text):  # "4.0": a CSV cell of the float 4.0 a Parquet file holds
        text = str(int(float(text)))
    return None if text in ("", "-1", "unsup", "unlabelled", "unlabeled") else text


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()  # "²" is a digit to str.isdigit, not to int()


def _label_id(value: Any, index: dict[str, int], label_names: Sequence[str]) -> int:
    key = _label_key(value)
    if key is None:
        return UNLABELLED
    if key in index:
        return index[key]
    raise DataError(
        f"unknown label {cut(repr(value), 60)}; the labels are {listed(list(label_names))}"
        + (" (or 0/1, neg/pos)" if list(label_names) == list(DEFAULT_LABEL_NAMES) else "")
    )


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a bad path."""
    return not _HUB_ID.match(source) or format_of(source) is not None


def _suffixes() -> str:
    return ", ".join(EXTENSIONS)


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
        raise DataError(f"cannot load '{dataset_id}' split '{split}': {first_line(exc)}") from None
    return table.to_dict()


def _hub_address() -> tuple[str, int]:
    """Where a download of the hub connects first: the proxy the environment gives for the
    hub's endpoint (``HF_ENDPOINT`` for a mirror, else huggingface.co), unless ``NO_PROXY``
    exempts it, as urllib and requests decide it; else the endpoint itself."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        target = urlsplit(endpoint)
        host = target.hostname or "huggingface.co"
        url = endpoint
        proxies = getproxies()
        proxy = proxies.get(target.scheme) or proxies.get("all")
        if proxy and not proxy_bypass(host):
            url = proxy if "://" in proxy else f"http://{proxy}"
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname or "huggingface.co", port
    except ValueError:  # a malformed variable: the download will say so
        return "huggingface.co", 443


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Connect to the hub (or the proxy or mirror in front of it) in a thread, so that a
    hanging DNS lookup cannot stall us either."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(_hub_address(), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])
