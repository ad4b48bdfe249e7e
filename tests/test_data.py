from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnn_sentiment.config import DataConfig
from rnn_sentiment.data.sources import (
    Reviews,
    _hub_reachable,
    infer_label_names,
    load_splits,
    read_split,
    stratified_split,
    to_reviews,
)
from rnn_sentiment.errors import DataError


def write_table(folder: Path, name: str, rows: list[dict[str, object]]) -> Path:
    path = folder / name
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in r.values()) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


ROWS = [{"review": f"review number {i}", "sentiment": "pos" if i % 2 else "neg"} for i in range(20)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_every_table_format_reads_with_named_columns(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path, f"train{suffix}", ROWS)
    cfg = DataConfig(source=str(path), text_column="review", label_column="sentiment")
    texts, labels = read_split(cfg.source, "train", cfg)
    assert texts[:2] == ["review number 0", "review number 1"]
    assert to_reviews((texts, labels), ["negative", "positive"]).labels[:4] == [0, 1, 0, 1]


def test_the_same_rows_from_every_format(tmp_path: Path) -> None:
    # One reader stack: CSV cells are strings, Parquet keeps numbers; the labels still agree.
    rows = [{"text": f"review {i}", "label": float(i % 2)} for i in range(6)]
    read = {}
    for suffix in (".csv", ".parquet", ".jsonl"):
        path = write_table(tmp_path, f"train{suffix}", rows)
        read[suffix] = read_split(str(path), "train", DataConfig(source=str(path)))
    assert read[".csv"][1][:2] == ["0.0", "1.0"] and read[".parquet"][1][:2] == [0.0, 1.0]
    reviews = {k: to_reviews(v, infer_label_names(v[1])) for k, v in read.items()}
    assert reviews[".csv"] == reviews[".parquet"] == reviews[".jsonl"]
    assert reviews[".csv"].labels == [0, 1, 0, 1, 0, 1]


def test_review_is_chosen_before_sentence(tmp_path: Path) -> None:
    # The order every command uses (data/files.py): text, review, sentence, content, body.
    rows = [{"sentence": "short", "review": "the long review", "label": 1}]
    path = write_table(tmp_path, "train.jsonl", rows)
    assert read_split(str(path), "train", DataConfig(source=str(path)))[0] == ["the long review"]


def test_local_files_never_import_datasets(tmp_path: Path) -> None:
    path = write_table(tmp_path, "train.csv", ROWS)
    probe = (
        "import sys\n"
        "from rnn_sentiment.config import DataConfig\n"
        "from rnn_sentiment.data.sources import read_split\n"
        "cfg = DataConfig(source=sys.argv[1], text_column='review', label_column='sentiment')\n"
        "assert len(read_split(cfg.source, 'train', cfg)[0]) == 20\n"
        "assert 'datasets' not in sys.modules, 'datasets was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gzip_tsv_and_json_array_files(tmp_path: Path) -> None:
    lines = "text\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(4))
    (tmp_path / "train.tsv.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "test.json").write_text(json.dumps([{"text": "a", "label": "neg"}]))
    cfg = DataConfig(source=str(tmp_path))
    assert read_split(str(tmp_path), "train", cfg) == (
        ["t0", "t1", "t2", "t3"],
        ["0", "1", "0", "1"],
    )
    assert read_split(str(tmp_path), "test", cfg) == (["a"], ["neg"])


def test_plain_text_with_fasttext_labels(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("__label__pos loved it\n__label__neg hated it\n")
    cfg = DataConfig(source=str(path))
    texts, labels = read_split(cfg.source, "train", cfg)
    assert texts == ["loved it", "hated it"]
    assert to_reviews((texts, labels), ["negative", "positive"]).labels == [1, 0]


def test_aclimdb_style_folder(tmp_path: Path) -> None:
    for label, text in (("pos", "great<br />fun"), ("neg", "dull"), ("unsup", "meh")):
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "0_7.txt").write_text(text)
    cfg = DataConfig(source=str(tmp_path))
    texts, labels = read_split(cfg.source, "train", cfg)
    assert texts == ["dull", "great<br />fun", "meh"]  # raw: the text pipeline cleans
    reviews = to_reviews((texts, labels), ["negative", "positive"], supervised=True)
    assert reviews.labels == [0, 1]  # the unlabelled review is excluded from training


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ([0, 1, 1], ["negative", "positive"]),
        (["pos", "neg"], ["negative", "positive"]),
        (["Positive", "NEGATIVE"], ["negative", "positive"]),
        (["0", "1", -1], ["negative", "positive"]),
        (["true", "False", True], ["negative", "positive"]),  # a CSV boolean, as JSON's
        (["joy", "anger", "fear"], ["anger", "fear", "joy"]),
        ([0, 4, 4.0], ["0", "4"]),
        (["1", "2", "5", "3", "4", 10], ["1", "2", "3", "4", "5", "10"]),
    ],
)
def test_label_names_are_inferred(values: list[object], names: list[str]) -> None:
    assert infer_label_names(values) == names


def test_unknown_label_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="unknown label 'maybe'"):
        to_reviews((["x"], ["maybe"]), ["negative", "positive"])


def test_unlabelled_rows_are_excluded_from_supervised_training() -> None:
    reviews = to_reviews((["a", "b", "c"], [1, -1, 0]), ["negative", "positive"], supervised=True)
    assert reviews.texts == ["a", "c"]


def test_stratified_split_is_seeded_and_keeps_balance() -> None:
    reviews = Reviews([str(i) for i in range(100)], [i % 2 for i in range(100)])
    kept, held = stratified_split(reviews, 0.2, seed=1)
    assert sorted(held.labels) == [0] * 10 + [1] * 10
    assert set(kept.texts).isdisjoint(held.texts)
    assert stratified_split(reviews, 0.2, seed=1)[1].texts == held.texts
    assert stratified_split(reviews, 0.2, seed=2)[1].texts != held.texts


def test_read_split_returns_texts_as_they_are_in_the_source(tmp_path: Path) -> None:
    # Preparing a review (HTML breaks, bad bytes) is the model's text pipeline's job, not the
    # reader's: reading it twice would let training and inference drift apart.
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "Great.<br /><br />Loved it", "label": 1}\n', encoding="utf-8")
    texts, _ = read_split(str(path), "train", DataConfig(source=str(path), clean_html=True))
    assert texts == ["Great.<br /><br />Loved it"]


def test_builtin_corpus_loads_balanced() -> None:
    splits = load_splits(DataConfig(test_split="test", validation_split="validation"), seed=0)
    assert splits.label_names == ["negative", "positive"]
    assert len(splits.train) >= 2000
    assert sum(splits.train.labels) * 2 == len(splits.train)
    assert splits.test is not None and set(splits.test.texts).isdisjoint(splits.train.texts)


def test_missing_column_suggests_the_real_ones(tmp_path: Path) -> None:
    path = write_table(tmp_path, "train.csv", ROWS)
    cfg = DataConfig(source=str(path), text_column="reveiw", label_column="sentiment")
    with pytest.raises(DataError, match="did you mean data.text_column=review"):
        read_split(cfg.source, "train", cfg)
    cfg = DataConfig(source=str(path), label_column="sentimant")
    with pytest.raises(DataError, match="did you mean data.label_column=sentiment"):
        read_split(cfg.source, "train", cfg)
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no text column .* pass data.text_column=NAME"):
        read_split(str(tmp_path / "two.csv"), "train", DataConfig())


def test_missing_path_and_missing_split_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data source not found"):
        read_split("./nowhere/train.csv", "train", DataConfig())
    (tmp_path / "train.csv").write_text("text,label\nok,1\n")
    with pytest.raises(DataError, match="no split 'test'"):
        read_split(str(tmp_path), "test", DataConfig())


def test_invalid_utf8_text_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(b"__label__pos fine\n__label__pos caf\xe9\n")
    with pytest.raises(DataError, match=r"train.txt, row 2: not valid UTF-8"):
        read_split(str(path), "train", DataConfig())
    (tmp_path / "acl" / "train" / "pos").mkdir(parents=True)
    (tmp_path / "acl" / "train" / "pos" / "0_9.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"train/pos/0_9.txt: not valid UTF-8"):  # names the file
        read_split(str(tmp_path / "acl"), "train", DataConfig())


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.csv", "text,label\nok,1\nbad,1,extra\n", "train.csv, row 2: 3 fields, expected 2"),
        (
            "train.jsonl",
            '{"text": "ok", "label": 1}\n\n{nope\n',
            "train.jsonl, row 2: invalid JSON",
        ),
        ("train.jsonl", '{"text": ["a"], "label": 1}\n', "row 1: the text is a list, not a string"),
        ("train.jsonl", "\n", "train.jsonl names no columns: it is empty"),
        ("train.csv", "", "train.csv is empty"),
    ],
)
def test_rows_training_cannot_use_are_named(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_split(str(tmp_path / name), "train", DataConfig())


def test_missing_text_is_an_empty_review_and_numbers_are_text(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": null, "label": 1}\n{"label": 0}\n{"text": 42, "label": 1}\n')
    assert read_split(str(path), "train", DataConfig()) == (["", "", "42"], [1, 0, 1])


@pytest.mark.skipif(_hub_reachable(), reason="the hub is reachable from here")
def test_hub_id_fails_fast_without_network() -> None:
    started = time.perf_counter()
    with pytest.raises(DataError, match="cannot reach the Hugging Face hub.*data.source="):
        read_split("stanfordnlp/imdb", "train", DataConfig())
    assert time.perf_counter() - started < 10


def test_star_ratings_map_by_name_not_by_position() -> None:
    raw = (["a", "b", "c", "d"], ["__x", "1", "5", 3])
    names = infer_label_names(["1", "3", "5"])
    assert names == ["1", "3", "5"]
    assert to_reviews((raw[0][1:], raw[1][1:]), names).labels == [0, 2, 1]


def test_a_single_class_is_refused() -> None:
    with pytest.raises(DataError, match="at least two classes; it has only"):
        infer_label_names(["good", "good", -1])


def test_a_single_file_cannot_also_be_the_test_split(tmp_path: Path) -> None:
    path = write_table(tmp_path, "reviews.csv", ROWS)
    cfg = DataConfig(source=str(path), text_column="review", label_column="sentiment",
                     test_split="test")  # fmt: skip
    with pytest.raises(DataError, match="single file.*test_split=test"):
        load_splits(cfg, seed=0)


def test_a_pos_neg_folder_is_one_split_like_a_file(tmp_path: Path) -> None:
    for label in ("pos", "neg"):
        (tmp_path / label).mkdir()
        for i in range(3):
            (tmp_path / label / f"{i}_1.txt").write_text(f"{label} {i}")
    texts, labels = read_split(str(tmp_path), "test", DataConfig())  # any split: the folder
    assert texts[:2] == ["neg 0", "neg 1"] and labels.count("pos") == 3
    with pytest.raises(DataError, match="single pos/neg folder.*test_split=test"):
        load_splits(DataConfig(source=str(tmp_path), test_split="test"), seed=0)


def test_an_unlabelled_test_split_is_refused(tmp_path: Path) -> None:
    write_table(tmp_path, "train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(40)])
    write_table(tmp_path, "test.jsonl", [{"text": "t", "label": -1}] * 3)
    with pytest.raises(DataError, match="test split .* has no labelled reviews"):
        load_splits(DataConfig(source=str(tmp_path), test_split="test"), seed=0)


def test_extra_train_sources_add_training_reviews(tmp_path: Path) -> None:
    long_dir, short_dir = tmp_path / "long", tmp_path / "short"
    long_dir.mkdir()
    short_dir.mkdir()
    write_table(long_dir, "train.jsonl", [{"text": f"long {i}", "label": i % 2} for i in range(40)])
    write_table(long_dir, "test.jsonl", [{"text": "t", "label": 1}, {"text": "u", "label": 0}])
    # A different text column and label spelling: found and mapped automatically.
    write_table(
        short_dir,
        "train.csv",
        [{"sentence": f"short {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)],
    )
    cfg = DataConfig(
        source=str(long_dir),
        test_split="test",
        extra_train_sources=[str(short_dir)],
        validation_fraction=0.5,
    )
    splits = load_splits(cfg, seed=0)
    texts = splits.train.texts + splits.validation.texts
    assert len(texts) == 60
    assert sum(t.startswith("short") for t in texts) == 20
    assert any(t.startswith("short") for t in splits.validation.texts)  # carved from both
    for text, label in zip(splits.train.texts, splits.train.labels, strict=True):
        assert label == int(text.split()[1]) % 2
    assert splits.test is not None and len(splits.test) == 2


def test_a_missing_extra_source_is_a_clear_error(tmp_path: Path) -> None:
    write_table(tmp_path, "train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(10)])
    cfg = DataConfig(source=str(tmp_path), extra_train_sources=[str(tmp_path / "nope")])
    with pytest.raises(DataError, match="not found"):
        load_splits(cfg, seed=0)


def test_an_extra_source_with_another_label_set_is_refused_by_name(tmp_path: Path) -> None:
    three, two = tmp_path / "three", tmp_path / "two"
    three.mkdir()
    two.mkdir()
    write_table(three, "train.jsonl", [{"text": f"t{i}", "label": i % 3} for i in range(30)])
    write_table(two, "train.jsonl", [{"text": f"u{i}", "label": i % 2} for i in range(10)])
    cfg = DataConfig(source=str(three), extra_train_sources=[str(two)])
    with pytest.raises(DataError, match=r"extra_train_sources entry '.*two' has the labels"):
        load_splits(cfg, seed=0)
    write_table(two, "train.jsonl", [{"text": "u", "label": 1}] * 4)  # one class only
    with pytest.raises(DataError, match=r"extra_train_sources entry '.*two': .*two classes"):
        load_splits(cfg, seed=0)


def test_blank_reviews_do_not_train_or_validate(tmp_path: Path) -> None:
    # evaluate and batch scoring leave an empty review unscored; training leaves it out alike.
    rows = [("good", 1), ("", 1), ("   ", 0), ("bad", 0)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    reviews = to_reviews(
        read_split(str(path), "train", DataConfig()), ["negative", "positive"], True
    )
    assert (reviews.texts, reviews.labels) == (["good", "bad"], [1, 0])
    with_blanks = to_reviews(read_split(str(path), "train", DataConfig()), ["negative", "positive"])
    assert len(with_blanks) == 4  # not supervised: every row is kept


def test_a_trailing_blank_line_in_a_training_csv(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label\ngood movie,1\nbad movie,0\n\n")
    assert read_split(str(tmp_path / "t.csv"), "train", DataConfig()) == (
        ["good movie", "bad movie"],
        ["1", "0"],
    )


# Found by a red-team pass of the data readers (helper-36): each trained in silence before.


def test_training_never_reads_what_validates_or_tests_the_run(tmp_path: Path) -> None:
    rows = [{"text": f"r{i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(20)]
    data = tmp_path / "f"
    data.mkdir()
    write_table(data, "train.csv", rows)
    test = write_table(data, "test.csv", rows[:6])
    (data / "heldout.csv").symlink_to("test.csv")
    (data / "same.csv").symlink_to("train.csv")
    os.link(data / "train.csv", data / "hard.csv")
    leaks = [
        ({"extra_train_sources": [str(test)]}, "entry '.*test.csv' is the test split of"),
        ({"test_split": "same"}, r"data.test_split \(same\) is the training split of"),
        ({"validation_split": "hard"}, r"data.validation_split \(hard\) is the training split"),
        ({"unlabelled_split": "same"}, "data.unlabelled_split is the training split of"),
        ({"validation_split": "test"}, "data.validation_split .* are the same reviews"),
        ({"extra_train_sources": [str(data)]}, "is the training split of .* itself"),
        ({"unlabelled_split": "heldout"}, "data.unlabelled_split is the test split of"),
    ]
    for settings, message in leaks:
        cfg = DataConfig(source=str(data), **{"test_split": "test", **settings})  # type: ignore[arg-type]
        with pytest.raises(DataError, match=message):
            load_splits(cfg, seed=0, unlabelled=True)
    assert len(load_splits(DataConfig(source=str(data), test_split="test"), seed=0).train) == 18


def test_labels_that_are_no_class(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = [float(i % 2) for i in range(20)]
    labels[5] = float("nan")  # what pandas writes for a missing label: an unlabelled row
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": [f"r{i}" for i in range(20)], "label": labels}), path)
    splits = load_splits(DataConfig(source=str(path)), seed=0)
    assert splits.label_names == ["negative", "positive"] and splits.left_out == 1
    for bad, shown in ((float("inf"), "inf"), ([1], "a list"), ({"a": 1}, "a dict")):
        with pytest.raises(DataError, match=f"a label is {shown}; a label is a class name"):
            infer_label_names([0, 1, bad])
    assert infer_label_names(["0", "1", "²"]) == ["0", "1", "²"]  # int("²") failed inside
    with pytest.raises(DataError, match=r"only '1' \(2 unlabelled rows: -1, empty"):
        infer_label_names([1, -1, -1])
    with pytest.raises(DataError, match="has 1,500 different values, .* is it an id"):
        infer_label_names(list(range(1500)))
    with pytest.raises(DataError, match=r"two classes; it has only '1', 'pos', 'positive'"):
        infer_label_names(["1", "positive", "pos"])  # one class, three spellings
    with pytest.raises(DataError, match=r"unknown label '[x]{20,}\.\.\.; the labels are "):
        to_reviews((["t"], ["x" * 1000]), ["negative", "positive"])


def test_every_class_keeps_training_reviews(tmp_path: Path) -> None:
    rows = [{"text": f"good {i}", "label": 1} for i in range(20)] + [{"text": "bad", "label": 0}]
    path = write_table(tmp_path, "train.jsonl", rows)
    cfg = DataConfig(source=str(path), validation_fraction=0.6)  # the one 0 is carved out
    with pytest.raises(DataError, match="no training review is labelled 'negative'"):
        load_splits(cfg, seed=0)


def test_split_files_linked_from_elsewhere_are_read_and_listings_capped(tmp_path: Path) -> None:
    # A folder of links into a dataset store (git-annex, DVC, the hub's cache) is a data folder.
    rows = [{"text": f"r{i}", "label": i % 2} for i in range(20)]
    store = tmp_path / "store"
    store.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").symlink_to(write_table(store, f"{split}.jsonl", rows))
    splits = load_splits(DataConfig(source=str(data), test_split="test"), seed=0)
    assert len(splits.train) + len(splits.validation) == 20 and splits.test is not None
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(5000)) + "\n" + "x," * 4999 + "x\n")
    with pytest.raises(DataError, match=r"columns are: c0, c1, .* \(and 4,980 more\)$") as caught:
        load_splits(DataConfig(source=str(wide), text_column="nope"), seed=0)
    assert len(str(caught.value)) < 400


def test_folder_entries_that_are_no_review_file_are_flagged(tmp_path: Path) -> None:
    from rnn_sentiment.data.files import open_reader

    for label in ("pos", "neg"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.txt").write_text(f"a {label} review")
    (tmp_path / "pos" / "dir.txt").mkdir()  # IsADirectoryError, an internal error, before
    (tmp_path / "pos" / "loop.txt").symlink_to("loop.txt")  # RuntimeError before
    reader = open_reader(str(tmp_path), "folder")
    problems = {}
    for chunk in reader.chunks(10):
        problems.update(zip(chunk.columns["id"], chunk.problems, strict=True))
    assert problems["pos/dir.txt"] == "cannot read file: not a regular file"
    assert problems["pos/loop.txt"] == "cannot read file: a loop of links"
    assert problems["pos/1.txt"] == problems["neg/1.txt"] == ""


def test_an_unknown_label_names_its_split(tmp_path: Path) -> None:
    write_table(tmp_path, "train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(10)])
    write_table(tmp_path, "test.jsonl", [{"text": "u", "label": "neutral"}])
    cfg = DataConfig(source=str(tmp_path), test_split="test")
    with pytest.raises(DataError, match=r"split 'test': unknown label 'neutral'; the labels are"):
        load_splits(cfg, seed=0)


def test_the_hub_probe_goes_where_a_download_would(monkeypatch: pytest.MonkeyPatch) -> None:
    # It always dialled huggingface.co:443: behind a proxy, or with a mirror, the hub was
    # "unreachable" although a download would work.
    from rnn_sentiment.data.sources import _hub_address

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy", "HF_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert _hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert _hub_address() == ("hf-mirror.example", 443)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert _hub_address() == ("proxy.example", 3128)
    monkeypatch.setenv("no_proxy", ".example")  # the mirror is exempt from the proxy
    assert _hub_address() == ("hf-mirror.example", 443)
    monkeypatch.delenv("no_proxy")
    monkeypatch.setenv("https_proxy", "http://[malformed")
    assert _hub_address() == ("huggingface.co", 443)
