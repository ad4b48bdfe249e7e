"""Language-model pretraining (`rnn-sentiment pretrain`), encoder directories, and fine-tuning
from them: discriminative learning rates and gradual unfreezing."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.config import LanguageModelConfig, ModelConfig
from rnn_sentiment.errors import CheckpointError, ConfigError, TrainingInterrupted
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import PAD_ID
from rnn_sentiment.training import encoder as encoder_module
from rnn_sentiment.training.encoder import (
    BUNDLED_ENCODER_DIR,
    ENCODER_FILE,
    load_encoder,
    read_encoder_tokenizer,
)
from rnn_sentiment.training.language_model import (
    LanguageModel,
    lm_pieces,
    next_and_previous_targets,
)
from rnn_sentiment.training.lm_pretraining import pretrain
from rnn_sentiment.training.loop import build_optimizer, layer_groups, train, unfreeze
from tests.helpers import invoke, tiny_config, tiny_overrides

CELLS = ["rnn", "lstm", "gru"]


def _lm_config(tmp_path: Path, name: str = "encoder", **extra: object) -> Any:
    values: dict[str, object] = {
        "model.bidirectional": True,
        "pretraining.lm.epochs": 2,
        "pretraining.lm.batch_size": 32,
        "pretraining.lm.samples": 64,
        "pretraining.lm.checkpoint_every": 20,
        "output.name": name,
    }
    values.update(extra)
    return tiny_config(tmp_path, **values)


class _StopAt(TrainCallback):
    """Sends the process a SIGINT, as Ctrl-C would, at one step of one epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at, self.epoch = (epoch, step), 0
        self.messages: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        if (self.epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


# ----------------------------------------------------------------------------------------------
# The language model


def test_targets_are_the_next_and_the_previous_token_with_padding_ignored() -> None:
    tokens = torch.tensor([[5, 6, 7, 8], [9, 10, PAD_ID, PAD_ID]])
    following, preceding = next_and_previous_targets(tokens, torch.tensor([4, 2]))
    assert following.tolist() == [[6, 7, 8, PAD_ID], [10, PAD_ID, PAD_ID, PAD_ID]]
    assert preceding.tolist() == [[PAD_ID, 5, 6, 7], [PAD_ID, 9, PAD_ID, PAD_ID]]


def test_pieces_cut_long_reviews_and_drop_what_predicts_nothing() -> None:
    assert lm_pieces([[1, 2, 3, 4, 5], [7], [8, 9]], 2) == [[1, 2], [3, 4], [8, 9]]


@pytest.mark.parametrize("cell", CELLS)
def test_the_left_to_right_loss_never_sees_the_word_it_predicts(cell: str) -> None:
    # Changing token t+1 must not change the left-to-right state that predicts it.
    cfg = ModelConfig(cell=cell, embedding_dim=8, hidden_size=8, bidirectional=True, dropout=0.0)
    model = LanguageModel(cfg, np.ones(20), LanguageModelConfig(softmax="full")).eval()
    a = torch.tensor([[3, 4, 5, 6, 7]])
    b = torch.tensor([[3, 4, 5, 9, 7]])
    lengths = torch.tensor([5])
    states_a = model.body.hidden_states(a, lengths)
    states_b = model.body.hidden_states(b, lengths)
    hidden = cfg.hidden_size
    # left to right: positions 0..2 have not read token 3; right to left: 4 has not either.
    assert torch.equal(states_a[0, :3, :hidden], states_b[0, :3, :hidden])
    assert torch.equal(states_a[0, 4:, hidden:], states_b[0, 4:, hidden:])


@pytest.mark.parametrize("softmax", ["sampled", "adaptive", "full"])
def test_each_output_layer_learns_a_language(softmax: str) -> None:
    # A language where each word is followed by the next one: after training, the exact
    # perplexity is far below the uniform guess (the vocabulary size).
    torch.manual_seed(0)
    vocab = 30
    counts = np.ones(vocab)
    cfg = ModelConfig(cell="gru", embedding_dim=16, hidden_size=16, dropout=0.0)
    lm = LanguageModelConfig(softmax=softmax, samples=10)
    model = LanguageModel(cfg, counts, lm)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    starts = torch.randint(2, vocab - 8, (32,))
    tokens = starts[:, None] + torch.arange(8)[None, :]
    lengths = torch.full((32,), 8)
    for _ in range(150):
        loss = model(tokens, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    [(total, count)] = model.nll_sums(tokens, lengths)
    assert count == 32 * 7
    assert math.exp(total / count) < 3.0


@pytest.mark.parametrize("softmax", ["adaptive", "full"])
def test_the_exact_likelihood_is_scored_in_slices_alike(
    softmax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bounded memory: a batch's positions are scored a slice at a time, with the same result.
    from rnn_sentiment.training import language_model

    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", embedding_dim=8, hidden_size=8)
    head = LanguageModel(cfg, np.arange(1, 31, dtype=float), LanguageModelConfig(softmax=softmax))
    states, targets = torch.randn(10, 8), torch.randint(2, 30, (10,))
    whole = head.heads[0].nll(states, targets)
    monkeypatch.setattr(language_model, "_NLL_ROWS", 3)
    assert torch.allclose(head.heads[0].nll(states, targets), whole)


# ----------------------------------------------------------------------------------------------
# pretrain: the command's library function


def test_pretraining_writes_a_checked_encoder_directory(tmp_path: Path) -> None:
    result = pretrain(_lm_config(tmp_path))
    encoder = load_encoder(result.encoder_dir)
    assert set(encoder.metrics["perplexity"]) == {"forward", "backward"}
    assert encoder.metrics["status"] == "complete"
    assert not any(name.startswith("classifier.") for name in encoder.tensors)
    assert len(encoder.metrics["history"]) == 2
    first, last = encoder.metrics["history"]
    assert last["perplexity_forward"] < first["perplexity_forward"]


def test_a_stop_while_pretraining_is_set_up_leaves_no_encoder_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a red-team pass: Ctrl-C after the vocabulary was saved left a directory that
    # --resume refused ("no training state") and that blocked the name.
    from rnn_sentiment.training import lm_pretraining

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_pretraining, "_split_pieces", stopped)
    config = _lm_config(tmp_path)
    with pytest.raises(TrainingInterrupted, match="nothing to resume"):
        pretrain(config)
    assert not (Path(config.output.dir) / "encoder").exists()


def test_pretraining_never_reads_validation_or_test_reviews(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    rows = {"train": 60, "test": 20, "unsup": 30}
    for split, n in rows.items():
        with (folder / f"{split}.jsonl").open("w") as handle:
            for i in range(n):
                label = -1 if split == "unsup" else i % 2
                text = f"{split}word{i} a {'good' if i % 2 else 'bad'} film"
                handle.write(json.dumps({"text": text, "label": label}) + "\n")
    seen: list[str] = []
    original = TextPipeline.encode_lists

    def spy(self: TextPipeline, texts: Any, cache_dir: Any = None) -> Any:
        seen.extend(texts)
        return original(self, texts, cache_dir)

    monkeypatch.setattr(TextPipeline, "encode_lists", spy)
    config = _lm_config(
        tmp_path, **{"data.source": str(folder), "data.test_split": "test",
                     "data.unlabelled_split": "unsup", "data.validation_fraction": 0.25}
    )  # fmt: skip
    result = pretrain(config)
    from rnn_sentiment.data.sources import load_splits

    splits = load_splits(config.data, config.training.seed)
    assert seen and not set(seen) & set(splits.validation.texts)
    assert not [t for t in seen if t.startswith("test")]
    assert sum(t.startswith("unsup") for t in seen) == 30
    assert result.metrics["data"]["validation_reviews_left_out"] == len(splits.validation)


def test_a_stopped_pretraining_resumes_to_the_same_encoder(tmp_path: Path) -> None:
    whole = pretrain(_lm_config(tmp_path, "whole"))
    with pytest.raises(TrainingInterrupted, match="pretrain --resume"):
        pretrain(_lm_config(tmp_path, "stopped"), _StopAt(epoch=1, step=3))
    resumed = pretrain(None, resume=tmp_path / "runs" / "stopped")
    a = load_file(whole.encoder_dir / ENCODER_FILE)
    b = load_file(resumed.encoder_dir / ENCODER_FILE)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["perplexity"] == whole.metrics["perplexity"]


def test_resuming_with_a_changed_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        pretrain(_lm_config(tmp_path, "stopped"), _StopAt(epoch=1, step=2))
    changed = _lm_config(tmp_path, "stopped", **{"pretraining.lm.lr": 0.5})
    with pytest.raises(ConfigError, match="pretraining.lm.lr"):
        pretrain(changed, resume=tmp_path / "runs" / "stopped")


def _own_reviews(tmp_path: Path) -> Path:
    """40 reviews of four words, "zorblax" new to an encoder of the built-in corpus."""
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    with (folder / "train.jsonl").open("w") as handle:
        for i in range(40):
            text = f"zorblax {'splendid' if i % 2 else 'dreadful'} movie"
            handle.write(json.dumps({"text": text, "label": i % 2}) + "\n")
    return folder


def test_pretraining_continues_from_an_encoder_on_new_texts(tmp_path: Path) -> None:
    # ULMFiT's second stage: the language model goes on from an encoder, on another corpus.
    from rnn_sentiment.training.lm_pretraining import _setup

    base_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    base = load_encoder(base_dir)
    config = _lm_config(
        tmp_path, "continued",
        **{"pretraining.from": str(base_dir), "data.source": str(_own_reviews(tmp_path))},
    )  # fmt: skip
    run = _setup(config, TrainCallback(), None)
    vocab, theirs = read_encoder_tokenizer(run.path).get_vocab(), base.tokenizer.get_vocab()
    assert {w: vocab[w] for w in theirs} == theirs and "zorblax" in vocab
    state = run.model.body.state_dict()
    for name, tensor in base.tensors.items():
        if name != "embedding.weight":
            assert torch.equal(state[name], tensor), name
    vectors = run.model.body.embedding.weight
    for word in [w for w in theirs if theirs[w] != PAD_ID]:
        assert torch.equal(vectors[vocab[word]], base.tensors["embedding.weight"][theirs[word]])
    assert vectors[vocab["zorblax"]].abs().sum() > 0
    shutil.rmtree(run.path)  # set up only: pretrain below writes it for real
    result = pretrain(config)
    continued = load_encoder(result.encoder_dir)
    assert result.metrics["from_encoder"]["words_from_encoder"] == len(theirs) - 1
    assert result.metrics["word2vec"] is None
    assert result.metrics["data"]["from"] == {**base.metrics["data"], "from": None}
    name = "layers.0.forward_rnn.weight_hh_l0"
    assert not torch.equal(continued.tensors[name], base.tensors[name])  # it learned from them


def test_continuing_an_encoder_of_another_shape_is_refused(tmp_path: Path) -> None:
    base_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    config = _lm_config(
        tmp_path, "other", **{"pretraining.from": str(base_dir), "model.hidden_size": 24}
    )
    with pytest.raises(ConfigError, match="model.hidden_size"):
        pretrain(config)
    assert not (tmp_path / "runs" / "other").exists()


def _carve_of(config: Any) -> dict[str, Any]:
    """The record an encoder pretrained on ``config``'s own data and split would carry."""
    return {
        "source": config.data.source,
        "validation_split": config.data.validation_split,
        "validation_fraction": config.data.validation_fraction,
        "seed": config.training.seed,
        "extra_train_sources": [],
    }


def test_the_leak_warning_follows_a_chain_of_encoders(tmp_path: Path) -> None:
    from rnn_sentiment.training.loop import _may_have_read_validation

    config = tiny_config(tmp_path)
    mine = _carve_of(config)
    other = {**mine, "source": "elsewhere"}
    assert not _may_have_read_validation(mine, config)  # same split: it left validation out
    assert _may_have_read_validation({**mine, "seed": 7}, config)
    chain = {**other, "from": {**other, "from": {**mine, "seed": 7}}}
    assert _may_have_read_validation(chain, config)
    assert not _may_have_read_validation({**other, "from": {**other, "from": "junk"}}, config)
    deep: dict[str, Any] = {**other}
    for _ in range(1000):  # a hostile metrics.json nests without end: bounded, no recursion
        deep = {**other, "from": deep}
    assert not _may_have_read_validation(deep, config)


def test_the_leak_warning_knows_a_data_set_by_hub_id_or_folder(tmp_path: Path) -> None:
    # The shipped encoder records stanfordnlp/imdb; a run reads ../shared/data/imdb.
    from rnn_sentiment.training.loop import _may_have_read_validation, dataset_name

    assert dataset_name("stanfordnlp/imdb") == dataset_name("../shared/data/imdb/") == "imdb"
    local = tiny_config(tmp_path, **{"data.source": "../shared/data/imdb"})
    hub = {**_carve_of(local), "source": "stanfordnlp/imdb"}
    assert not _may_have_read_validation(hub, local)
    assert _may_have_read_validation({**hub, "validation_fraction": 0.5}, local)
    assert not _may_have_read_validation({**hub, "extra_train_sources": 5}, local)  # hostile
    # An encoder that read the run's data as an extra source read all of its training split.
    extra = {**_carve_of(local), "source": "sst2", "extra_train_sources": ["stanfordnlp/imdb"]}
    assert _may_have_read_validation(extra, local)
    # A named validation split is read only by an encoder that trained or pretrained on it.
    named = tiny_config(tmp_path, **{"data.validation_split": "test"})
    record = {**_carve_of(named), "seed": 7, "train_split": "train", "unlabelled_split": None}
    assert not _may_have_read_validation(record, named)
    assert _may_have_read_validation({**record, "unlabelled_split": "test"}, named)


def test_a_carried_record_keeps_short_strings_and_finite_numbers(tmp_path: Path) -> None:
    from rnn_sentiment.training.lm_pretraining import _carried_provenance

    mine = _carve_of(tiny_config(tmp_path))
    hostile = {**mine, "seed": math.nan, "source": "x" * 10**6, "tokens": math.inf,
               "junk": "y", "extra_train_sources": [{}], "validation_fraction": True}  # fmt: skip
    carried = _carried_provenance({**mine, "from": hostile})
    assert carried is not None and carried["from"] is not None
    assert set(carried["from"]) == {"validation_split", "from"}  # the rest was not plain
    json.dumps(carried, allow_nan=False)  # strict JSON, as metrics.json must be
    deep: dict[str, Any] = {**mine}
    for _ in range(1000):
        deep = {**mine, "from": deep}
    carried = _carried_provenance(deep)
    for _ in range(8):
        assert isinstance(carried, dict)
        carried = carried["from"]
    assert carried is None  # eight encoders back at most


def test_a_stopped_continued_pretraining_resumes_with_what_it_read(tmp_path: Path) -> None:
    base_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    base = load_encoder(base_dir)

    def config(name: str) -> Any:
        return _lm_config(tmp_path, name, **{"pretraining.from": str(base_dir)})

    whole = pretrain(config("whole"))
    with pytest.raises(TrainingInterrupted):
        pretrain(config("stopped"), _StopAt(epoch=1, step=3))
    resumed = pretrain(None, resume=tmp_path / "runs" / "stopped")
    assert resumed.metrics["data"]["from"] == whole.metrics["data"]["from"]
    assert resumed.metrics["data"]["from"]["source"] == base.metrics["data"]["source"]
    a = load_file(whole.encoder_dir / ENCODER_FILE)
    b = load_file(resumed.encoder_dir / ENCODER_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_bidirectional_stack_cannot_be_a_language_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_layers=1"):
        pretrain(_lm_config(tmp_path, **{"model.num_layers": 2}))
    assert not (tmp_path / "runs" / "encoder").exists()


def test_a_tampered_encoder_is_refused(tmp_path: Path) -> None:
    result = pretrain(_lm_config(tmp_path))
    weights = result.encoder_dir / ENCODER_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum|modified"):
        load_encoder(result.encoder_dir)
    config = tiny_config(
        tmp_path, **{"pretraining.from": str(result.encoder_dir), "model.bidirectional": True,
                     "output.name": "clf"}
    )  # fmt: skip
    with pytest.raises(CheckpointError):
        train(config)
    assert not (tmp_path / "runs" / "clf").exists()


# ----------------------------------------------------------------------------------------------
# train from an encoder


def test_training_starts_from_the_encoders_weights_and_vectors(tmp_path: Path) -> None:
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    encoder = load_encoder(encoder_dir)
    config = tiny_config(
        tmp_path, **{"pretraining.from": str(encoder_dir), "model.bidirectional": True,
                     "output.name": "clf", "training.epochs": 1}
    )  # fmt: skip
    from rnn_sentiment.training.loop import setup_run

    run = setup_run(config, None, False, TrainCallback())
    state = run.model.state_dict()
    for name, tensor in encoder.tensors.items():
        if name != "embedding.weight":
            assert torch.equal(state[name], tensor), name
    mine, theirs = run.pipeline.tokenizer.get_vocab(), encoder.tokenizer.get_vocab()
    shared = [w for w in mine if w in theirs and mine[w] != PAD_ID]
    assert shared
    for word in shared:
        assert torch.equal(
            state["embedding.weight"][mine[word]], encoder.tensors["embedding.weight"][theirs[word]]
        )
    assert run.loop.pretraining is not None
    assert run.loop.pretraining["words_from_encoder"] == len(shared)


def _run_on_own_reviews(tmp_path: Path, encoder_dir: Path, **overrides: Any) -> Any:
    """A run set up from ``encoder_dir`` on 40 reviews of four words, "zorblax" new to it."""
    from rnn_sentiment.training.loop import setup_run

    folder = tmp_path / "mine"
    folder.mkdir()
    with (folder / "train.jsonl").open("w") as handle:
        for i in range(40):
            text = f"zorblax {'splendid' if i % 2 else 'dreadful'} movie"
            handle.write(json.dumps({"text": text, "label": i % 2}) + "\n")
    config = tiny_config(
        tmp_path, **{"pretraining.from": str(encoder_dir), "model.bidirectional": True,
                     "data.source": str(folder), "output.name": "mine", **overrides}
    )  # fmt: skip
    return setup_run(config, None, False, TrainCallback())


def test_new_words_get_fresh_vectors(tmp_path: Path) -> None:
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    run = _run_on_own_reviews(tmp_path, encoder_dir)
    vocab = run.pipeline.tokenizer.get_vocab()
    row = run.model.embedding.weight[vocab["zorblax"]]
    assert row.abs().sum() > 0 and torch.isfinite(row).all()
    assert "zorblax" not in load_encoder(encoder_dir).tokenizer.get_vocab()
    assert run.loop.pretraining is not None and run.loop.pretraining["new_words"] >= 1


def test_every_word_the_encoder_knows_joins_the_vocabulary_at_its_id(tmp_path: Path) -> None:
    # A small training set lacks most of the encoder's words; a review met later may use them,
    # so the classifier's vocabulary is the encoder's (same ids, same vectors) plus its own.
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    encoder = load_encoder(encoder_dir)
    run = _run_on_own_reviews(tmp_path, encoder_dir)
    mine, theirs = run.pipeline.tokenizer.get_vocab(), encoder.tokenizer.get_vocab()
    assert {w: mine[w] for w in theirs} == theirs  # every encoder word, at its own id
    assert mine["zorblax"] >= len(theirs)  # new words after them
    weights = run.model.embedding.weight
    unseen = [w for w in theirs if w not in ("zorblax", "splendid", "dreadful", "movie")]
    for word in unseen[2:50]:
        assert torch.equal(weights[mine[word]], encoder.tensors["embedding.weight"][theirs[word]])
    # Text rules still the run's: truncation at its own max_length.
    assert run.pipeline.tokenizer.truncation["max_length"] == run.config.tokenizer.max_length


def test_vocabulary_own_keeps_the_runs_words_with_the_encoders_vectors(tmp_path: Path) -> None:
    # pretraining.vocabulary=own: a model as small as its own vocabulary (the bundled model's
    # 10 MB), each of its words the encoder knows still starting from the encoder's vector.
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    encoder = load_encoder(encoder_dir)
    run = _run_on_own_reviews(tmp_path, encoder_dir, **{"pretraining.vocabulary": "own"})
    own = TextPipeline.learn(run.splits.train.texts, run.config.tokenizer, True).tokenizer
    mine, theirs = run.pipeline.tokenizer.get_vocab(), encoder.tokenizer.get_vocab()
    assert mine == own.get_vocab() and len(mine) < len(theirs)
    shared = [w for w in mine if w in theirs and mine[w] != PAD_ID]
    assert "movie" in shared and "zorblax" not in shared
    weights = run.model.embedding.weight
    for word in shared:
        assert torch.equal(weights[mine[word]], encoder.tensors["embedding.weight"][theirs[word]])
    assert run.loop.pretraining is not None
    assert run.loop.pretraining["words_from_encoder"] == len(shared)


def test_an_encoder_with_other_text_rules_keeps_the_runs_own_vocabulary(tmp_path: Path) -> None:
    encoder_dir = pretrain(_lm_config(tmp_path, **{"tokenizer.lowercase": False})).encoder_dir
    config = tiny_config(
        tmp_path, **{"pretraining.from": str(encoder_dir), "model.bidirectional": True,
                     "output.name": "clf"}
    )  # fmt: skip
    from rnn_sentiment.training.loop import setup_run

    run = setup_run(config, None, False, TrainCallback())
    own = TextPipeline.learn(run.splits.train.texts, config.tokenizer, True).tokenizer
    assert run.pipeline.tokenizer.get_vocab() == own.get_vocab()


def test_an_encoder_of_other_vector_width_is_refused_naming_the_key(tmp_path: Path) -> None:
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    config = tiny_config(tmp_path, **{"pretraining.from": str(encoder_dir),
                                      "model.bidirectional": True, "model.embedding_dim": 12,
                                      "output.name": "clf"})  # fmt: skip
    with pytest.raises(ConfigError, match="model.embedding_dim=16"):
        train(config)
    assert not (tmp_path / "runs" / "clf").exists()


OTHER_SHAPES = [
    {"model.hidden_size": 24},
    {"model.cell": "gru"},
    {"model.bidirectional": False, "model.num_layers": 2},
]


@pytest.mark.parametrize("other", OTHER_SHAPES)
def test_any_preset_of_the_same_vector_width_takes_the_vectors_alone(
    tmp_path: Path, other: dict[str, object]
) -> None:
    encoder_dir = pretrain(_lm_config(tmp_path)).encoder_dir
    config = tiny_config(tmp_path, **{"pretraining.from": str(encoder_dir),
                                      "model.bidirectional": True, **other})  # fmt: skip
    from rnn_sentiment.training.loop import setup_run

    encoder = load_encoder(encoder_dir)
    messages: list[str] = []

    class Listen(TrainCallback):
        def on_message(self, message: str) -> None:
            messages.append(message)

    run = setup_run(config, None, False, Listen())
    summary = run.loop.pretraining
    assert summary is not None and summary["recurrent_layers"].startswith("random: model.")
    assert any("only the encoder's word vectors" in m for m in messages)
    vocab, known = run.pipeline.tokenizer.get_vocab(), encoder.tokenizer.get_vocab()
    shared = [w for w in known if w in vocab and known[w] != 0]
    assert shared
    vectors = run.model.embedding.weight.detach()
    source = encoder.tensors["embedding.weight"]
    for word in shared:
        assert torch.equal(vectors[vocab[word]], source[known[word]])


def test_discriminative_rates_divide_down_the_layers(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, **{"training.layer_lr_decay": 2.0, "training.lr": 0.008})
    from rnn_sentiment.model import build_model

    model = build_model(config.model, 50, 2)
    optimizer = build_optimizer(model, config.training)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.004, 0.008]
    ordered = [p for g in optimizer.param_groups for p in g["params"]]
    assert [id(p) for p in ordered] == [id(p) for p in model.parameters()]  # the saved order
    groups = layer_groups(model)
    assert groups[0] is model.classifier and groups[-1] is model.embedding


def test_gradual_unfreezing_really_freezes_until_its_step(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, **{"training.unfreeze_steps": 3, "training.weight_decay": 0.1})
    from rnn_sentiment.model import build_model

    torch.manual_seed(0)
    model = build_model(config.model, 50, 2)
    optimizer = build_optimizer(model, config.training)
    tokens, lengths = torch.randint(2, 50, (4, 6)), torch.full((4,), 6)
    targets = torch.tensor([0, 1, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    changed_at: dict[str, int] = {}
    for step in range(1, 8):
        unfreeze(model, step, config.training)
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step < 4:
            assert all(p.grad is None for p in model.embedding.parameters())
        optimizer.step()
        for name, tensor in model.state_dict().items():
            if name not in changed_at and not torch.equal(tensor, before[name]):
                changed_at[name] = step
    assert changed_at["classifier.weight"] == 1
    assert changed_at["layers.0.forward_rnn.weight_hh_l0"] == 4
    assert changed_at["embedding.weight"] == 7


def test_cli_pretrain_then_train_from_it(tmp_path: Path) -> None:
    code, out, err = invoke(
        "pretrain", *tiny_overrides(tmp_path, **{"output.name": "enc", "model.bidirectional": True,
                                                 "pretraining.lm.samples": 32}),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["perplexity"]["forward"] > 1
    code, out, err = invoke(
        "train", *tiny_overrides(tmp_path, **{"output.name": "clf", "model.bidirectional": True,
                                              "pretraining.from": summary["encoder_dir"]}),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["pretraining"]["method"] == "encoder"
    assert "keep its vectors" in err


def test_cli_pretrain_bad_usage_is_one_line(tmp_path: Path) -> None:
    code, _, err = invoke("pretrain", *tiny_overrides(tmp_path), "pretraining.lm.softmax=huge")
    assert code == 2 and "pretraining.lm.softmax" in err and "Traceback" not in err
    code, _, err = invoke("pretrain", "--resume", str(tmp_path / "nothing"))
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, _ = invoke("pretrain", "--help")
    assert code == 0 and "pretraining.from" in out


def test_a_missing_encoder_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = invoke(
        "train", *tiny_overrides(tmp_path, **{"pretraining.from": str(tmp_path / "none")})
    )
    assert code != 0 and "not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_run_directory_given_as_an_encoder_is_named_so(tmp_path: Path) -> None:
    # The shipped classifier is the run directory a user is most likely to pass by mistake.
    from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR

    for command in ("train", "pretrain"):
        overrides = {"pretraining.from": str(BUNDLED_MODEL_DIR), "model.bidirectional": True}
        code, _, err = invoke(command, *tiny_overrides(tmp_path, **overrides))
        assert code != 0 and len(err.strip().splitlines()) == 1
        assert "a classifier's run directory, not an encoder" in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------------
# The encoder that ships with the package (pretraining.from=bundled)

_SHIPPED = BUNDLED_ENCODER_DIR / "manifest.json"


def test_bundled_without_a_shipped_encoder_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "BUNDLED_ENCODER_DIR", tmp_path / "none")
    with pytest.raises(CheckpointError, match="ships no encoder"):
        load_encoder("bundled")


@pytest.mark.skipif(not _SHIPPED.is_file(), reason="no encoder ships in this checkout")
def test_the_shipped_encoder_is_checked_and_never_modified(tmp_path: Path) -> None:
    import hashlib

    def digests() -> dict[str, str]:
        return {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(BUNDLED_ENCODER_DIR.iterdir())
        }

    before = digests()
    encoder = load_encoder("bundled")
    assert encoder.metrics["status"] == "complete"
    assert all(t.dtype == torch.float32 for t in encoder.tensors.values())
    shape = {f"model.{k}": getattr(encoder.config.model, k) for k in
             ("cell", "embedding_dim", "hidden_size", "num_layers", "bidirectional")}  # fmt: skip
    config = tiny_config(
        tmp_path, **{"pretraining.from": "bundled", **shape, "training.epochs": 1,
                     "output.name": "from-bundled"}
    )  # fmt: skip
    from rnn_sentiment.training.loop import setup_run

    run = setup_run(config, None, False, TrainCallback())
    mine, theirs = run.pipeline.tokenizer.get_vocab(), encoder.tokenizer.get_vocab()
    shared = [w for w in mine if w in theirs and mine[w] != PAD_ID]
    assert len(shared) > 100
    weights = run.model.embedding.weight
    for word in shared[:200]:
        assert torch.equal(weights[mine[word]], encoder.tensors["embedding.weight"][theirs[word]])
    train(config.model_copy(update={"output": config.output.model_copy(update={"name": "t2"})}))
    assert digests() == before
