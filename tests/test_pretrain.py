"""word2vec pretraining of the embeddings, and the unlabelled texts it learns from."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.config import PretrainingConfig
from rnn_sentiment.data.sources import load_splits
from rnn_sentiment.errors import ConfigError, DataError, TrainingError, TrainingInterrupted
from rnn_sentiment.tokenizer import encode, load_tokenizer, train_tokenizer
from rnn_sentiment.training.loop import train
from rnn_sentiment.training.pretrain import pretrain_vectors
from tests.helpers import tiny_config


def _corpus(n: int, seed: int = 0) -> list[str]:
    """Sentences where good/great share contexts, and bad/awful share other ones."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        if rng.random() < 0.5:
            word, verb = rng.choice(["good", "great"]), rng.choice(["loved", "enjoyed"])
        else:
            word, verb = rng.choice(["bad", "awful"]), rng.choice(["hated", "disliked"])
        film = rng.choice(["film", "movie", "show"])
        texts.append(f"i {verb} this {film} , a really {word} {film} that i {verb}")
    return texts


def _vectors(texts: list[str], **settings: Any) -> tuple[dict[str, torch.Tensor], Any]:
    cfg = tiny_config(Path("."), **{"tokenizer.min_frequency": 1}).tokenizer
    tokenizer = train_tokenizer(texts, cfg)
    # Down-sampling would drop nearly every token of so small a vocabulary.
    pcfg = PretrainingConfig(method="word2vec", epochs=10, sample=0.0, **settings)
    result = pretrain_vectors(encode(tokenizer, texts), tokenizer.get_vocab_size(), 16, pcfg, 3)
    vocab = tokenizer.get_vocab()
    return {w: result.vectors[i] for w, i in vocab.items()}, result


def test_words_used_alike_get_similar_vectors() -> None:
    vectors, result = _vectors(_corpus(600))

    def cos(a: str, b: str) -> float:
        return float(nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0))

    assert cos("good", "great") > cos("good", "awful") + 0.2
    assert cos("hated", "disliked") > cos("hated", "loved") + 0.2
    # Every word of the corpus was learned, at the embedding's N(0, 1) scale; padding was not.
    assert result.learned.sum() == len(vectors) - 2  # [PAD] and [UNK] never occur
    assert 0.8 < float(result.vectors[result.learned].std()) < 1.2
    assert result.texts == 600 and result.tokens == sum(len(t.split()) for t in _corpus(600))


def test_one_thread_gives_the_same_vectors_every_run() -> None:
    first, _ = _vectors(_corpus(200))
    again, _ = _vectors(_corpus(200))
    assert all(torch.equal(first[w], again[w]) for w in first)


def _folder(tmp_path: Path) -> Path:
    """train.jsonl with a few unlabelled rows, test.jsonl, and unsup.jsonl without labels."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    texts = _corpus(200, seed=1)
    rows = [{"text": t, "label": int("loved" in t or "enjoyed" in t)} for t in texts]
    rows += [{"text": "an unlabelled train row", "label": -1}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = [{"text": "a test review never read by pretraining", "label": 1}] * 4
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    unsup = [{"text": t} for t in _corpus(300, seed=2)]
    (folder / "unsup.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unsup))
    return folder


def test_unlabelled_texts_come_from_the_split_and_unlabelled_train_rows(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    # 'unsupervised' (the hub's name) finds a local unsup.* file.
    config = tiny_config(tmp_path, **{"data.source": str(folder), "data.test_split": "test",
                                      "data.unlabelled_split": "unsupervised"})  # fmt: skip
    splits = load_splits(config.data, config.training.seed, unlabelled=True)
    assert len(splits.unlabelled) == 301
    assert splits.unlabelled[0] == "an unlabelled train row"
    assert splits.unlabelled[1:] == _corpus(300, seed=2)
    assert len(splits.train) + len(splits.validation) == 200  # the unlabelled row trains nothing


def test_a_missing_unlabelled_split_says_how_to_do_without(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "data.unlabelled_split": "unsupervised"}
    )
    with pytest.raises(DataError, match="no split 'unsupervised'.*data.unlabelled_split=null"):
        load_splits(config.data, config.training.seed, unlabelled=True)


def test_the_unlabelled_split_is_read_only_when_asked_for(
    tmp_path: Path, jsonl_reviews: Path
) -> None:
    config = tiny_config(
        tmp_path, **{"data.source": str(jsonl_reviews), "data.unlabelled_split": "absent"}
    )
    assert load_splits(config.data, config.training.seed).unlabelled == []
    single = tiny_config(
        tmp_path,
        **{"data.source": str(jsonl_reviews / "train.jsonl"), "data.unlabelled_split": "unsup"},
    )
    # One file is every split: its carved validation rows would be pretrained on.
    with pytest.raises(DataError, match="single file.*unlabelled_split=null"):
        load_splits(single.data, single.training.seed, unlabelled=True)


def test_texts_without_two_known_words_cannot_be_pretrained_on() -> None:
    cfg = PretrainingConfig(method="word2vec")
    with pytest.raises(TrainingError, match="at least two different known words"):
        pretrain_vectors([[1, 1], [1]], 10, 8, cfg, seed=0)
    with pytest.raises(TrainingError, match="at least two"):
        pretrain_vectors([], 10, 8, cfg, seed=0)


def test_unlabelled_split_may_not_be_a_scored_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unlabelled_split"):
        tiny_config(tmp_path, **{"data.test_split": "test", "data.unlabelled_split": "test"})


def test_training_starts_from_the_pretrained_vectors(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    config = tiny_config(
        tmp_path,
        **{"data.source": str(folder), "data.test_split": "test",
           "data.unlabelled_split": "unsup", "pretraining.method": "word2vec",
           "pretraining.epochs": 3, "training.epochs": 1},
    )  # fmt: skip

    class Recorder(TrainCallback):
        messages: list[str] = []
        start: torch.Tensor

        def on_message(self, text: str) -> None:
            self.messages.append(text)

        def on_train_start(self, model: nn.Module) -> None:
            self.start = model.embedding.weight.detach().clone()  # type: ignore[union-attr]

    recorder = Recorder()
    result = train(config, recorder)
    splits = load_splits(config.data, config.training.seed, unlabelled=True)
    tokenizer = load_tokenizer(result.run_dir / "tokenizer.json")
    expected = pretrain_vectors(
        encode(tokenizer, splits.train.texts + splits.unlabelled),
        tokenizer.get_vocab_size(),
        config.model.embedding_dim,
        config.pretraining,
        config.training.seed,
    )
    assert torch.equal(recorder.start[expected.learned], expected.vectors[expected.learned])
    summary = result.metrics["pretraining"]
    assert summary["method"] == "word2vec"
    assert summary["texts"] == len(splits.train) + 301  # validation and test never read
    assert summary["words"] == int(expected.learned.sum()) > 10
    assert 0 < summary["seconds"] < result.metrics["train_seconds"]  # counted in training time
    assert any(m.startswith("pretraining: epoch 3/3") for m in recorder.messages)


def test_pretraining_settings_cannot_change_on_resume(tmp_path: Path, jsonl_reviews: Path) -> None:
    config = tiny_config(tmp_path, **{"data.source": str(jsonl_reviews)})
    result = train(config)
    changed = config.model_copy(deep=True)
    changed.pretraining.method = "word2vec"
    with pytest.raises(ConfigError, match="pretraining.method"):
        train(changed, resume=result.run_dir)


def test_vocabulary_may_learn_from_the_unlabelled_texts(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "unsup.jsonl").write_text(json.dumps({"text": "zyzzyva zyzzyva"}) + "\n")

    def vocabulary(learn: bool) -> dict[str, int]:
        config = tiny_config(
            tmp_path, **{"data.source": str(folder), "data.unlabelled_split": "unsup",
                         "tokenizer.learn_from_unlabelled": learn, "training.epochs": 1,
                         "output.name": f"learn-{learn}"},
        )  # fmt: skip
        return load_tokenizer(train(config).run_dir / "tokenizer.json").get_vocab()

    assert "zyzzyva" in vocabulary(True)
    assert "zyzzyva" not in vocabulary(False)


def _pretraining_config(tmp_path: Path, name: str, **extra: object) -> Any:
    folder = tmp_path / "reviews"
    if not folder.exists():
        _folder(tmp_path)
    return tiny_config(
        tmp_path,
        **{"data.source": str(folder), "data.unlabelled_split": "unsup",
           "pretraining.method": "word2vec", "pretraining.epochs": 3, "training.epochs": 2,
           "output.name": name, **extra},
    )  # fmt: skip


class _Messages(TrainCallback):
    def __init__(self, stop_at: str | None = None) -> None:
        self.messages: list[str] = []
        self.stop_at = stop_at

    def on_message(self, text: str) -> None:
        self.messages.append(text)
        if self.stop_at and text.startswith(self.stop_at):
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.stop_at == "epoch":
            os.kill(os.getpid(), signal.SIGINT)  # stops after the first step


def test_a_stop_after_pretraining_resumes_without_pretraining_again(tmp_path: Path) -> None:
    whole = train(_pretraining_config(tmp_path, "whole"))
    stopped = _Messages(stop_at="epoch")
    with pytest.raises(TrainingInterrupted):
        train(_pretraining_config(tmp_path, "stopped"), stopped)
    resumed = _Messages()
    result = train(None, resumed, resume=tmp_path / "runs" / "stopped")
    assert not any(m.startswith("pretraining") for m in resumed.messages)
    assert result.metrics["pretraining"] == {
        **whole.metrics["pretraining"],
        "seconds": result.metrics["pretraining"]["seconds"],
    }
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in result.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in whole.history
    ]


def test_a_stop_during_pretraining_leaves_no_run_directory(tmp_path: Path) -> None:
    callback = _Messages(stop_at="pretraining: epoch 1/3")
    with pytest.raises(TrainingInterrupted, match="during pretraining.*nothing to resume"):
        train(_pretraining_config(tmp_path, "early"), callback)
    assert not (tmp_path / "runs" / "early").exists()
    assert not any(m.startswith("pretraining: epoch 2") for m in callback.messages)


def test_the_time_budget_covers_pretraining(tmp_path: Path) -> None:
    # A budget already spent after the first word2vec epoch: pretraining stops there, keeps its
    # vectors, and training runs the one epoch a budget always allows.
    config = _pretraining_config(
        tmp_path, "budget", **{"pretraining.epochs": 5, "training.epochs": 3,
                               "training.max_minutes": 1e-6}
    )  # fmt: skip
    callback = _Messages()
    result = train(config, callback)
    assert "pretraining: epoch 1/5 done" in callback.messages
    assert not any(m.startswith("pretraining: epoch 2") for m in callback.messages)
    assert any("the 1e-06-minute budget (training.max_minutes) is spent" in m
               for m in callback.messages)  # fmt: skip
    assert result.metrics["pretraining"]["words"] > 0
    assert len(result.history) == 1


def test_the_public_train_scores_the_test_split_as_evaluate_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnn_sentiment import evaluate
    from rnn_sentiment import train as public_train
    from rnn_sentiment.inference import evaluate as evaluate_module

    source = str(_folder(tmp_path))  # with a test split
    callback = _Messages()
    data = {"data.source": source, "data.test_split": "test"}
    monkeypatch.setattr(evaluate_module, "TEST_CHUNK", 3)  # a line per chunk (IMDB: 4,096)
    result = public_train(tiny_config(tmp_path, **data, **{"output.name": "a"}), callback)
    direct = train(tiny_config(tmp_path, **data, **{"output.name": "b"}))
    assert any(m.startswith("test: scoring") for m in callback.messages)
    assert any(m.startswith("test: accuracy") for m in callback.messages)
    scored = [m.split(" reviews scored")[0] for m in callback.messages if "reviews scored" in m]
    total = result.metrics["test"]["n"]
    assert scored == [f"test: {min(n, total)} of {total}" for n in range(3, total + 3, 3)]
    evaluated = evaluate(result.run_dir, split="test")
    assert result.metrics["test"]["accuracy"] == evaluated["accuracy"]
    assert result.metrics["test"]["n"] == evaluated["n"]
    assert abs(result.metrics["test"]["loss"] - direct.metrics["test"]["loss"]) < 1e-5
