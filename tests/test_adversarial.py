"""Adversarial and virtual adversarial training on the embeddings, and entropy minimisation."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from rnn_sentiment.callbacks import TrainCallback
from rnn_sentiment.config import AdversarialConfig, ModelConfig
from rnn_sentiment.errors import TrainingInterrupted
from rnn_sentiment.model import build_model
from rnn_sentiment.training.adversarial import (
    adversarial_perturbation,
    embedding_rms,
    kl_divergence,
    mean_entropy,
    radii,
    regularised_loss,
    token_mask,
    unit_per_review,
    virtual_adversarial_loss,
)
from rnn_sentiment.training.loop import train, unlabelled_rows
from tests.helpers import tiny_config

CELLS = ["rnn", "lstm", "gru"]


def _model(cell: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=8, hidden_size=8, dropout=0.0, pooling="mean")
    return build_model(cfg, 40, 2).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = torch.tensor([6, 3, 5, 2])
    tokens = torch.randint(2, 40, (4, 6))
    tokens[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths, torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize("cell", CELLS)
def test_the_adversarial_move_has_the_configured_norm_and_raises_the_loss(cell: str) -> None:
    model = _model(cell)
    tokens, lengths, targets = _batch()
    embedded = model.embedding(tokens)
    loss = torch.nn.functional.cross_entropy(model.from_embeddings(embedded, lengths), targets)
    mask = token_mask(lengths, tokens.shape[1], tokens.device)
    move = adversarial_perturbation(loss, embedded, mask, radius=0.5)
    norms = move.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((4,), 0.5), atol=1e-5)
    assert torch.all(move[mask[:, :, 0] == 0] == 0)  # padding is never moved
    with torch.no_grad():

        def loss_at(x: torch.Tensor) -> float:
            return float(
                torch.nn.functional.cross_entropy(model.from_embeddings(x, lengths), targets)
            )

        torch.manual_seed(3)
        random_move = 0.5 * unit_per_review(torch.randn_like(embedded), mask)
        assert loss_at(embedded + move) > loss_at(embedded) > loss_at(embedded - move)
        assert loss_at(embedded + move) > loss_at(embedded + random_move)


def test_the_virtual_adversarial_direction_changes_the_prediction_more_than_a_random_one() -> None:
    model = _model("gru")
    tokens, lengths, _ = _batch()
    embedded = model.embedding(tokens).detach()
    logits = model.from_embeddings(embedded, lengths)
    mask = token_mask(lengths, tokens.shape[1], tokens.device)
    cfg = AdversarialConfig(vat_epsilon=2.0, vat_xi=0.01)
    torch.manual_seed(5)
    adversarial = virtual_adversarial_loss(model, embedded, lengths, logits, mask, cfg, 1.0).item()
    torch.manual_seed(6)
    random_move = 2.0 * unit_per_review(torch.randn_like(embedded), mask)
    randomly = kl_divergence(logits, model.from_embeddings(embedded + random_move, lengths)).item()
    assert adversarial > 0 and adversarial > randomly


def test_kl_and_entropy_by_hand() -> None:
    assert math.isclose(float(mean_entropy(torch.zeros(3, 2))), math.log(2), rel_tol=1e-6)
    assert float(mean_entropy(torch.tensor([[50.0, -50.0]]))) < 1e-6
    same = torch.tensor([[1.0, 2.0]])
    assert abs(float(kl_divergence(same, same))) < 1e-7
    p = torch.tensor([[0.0, 0.0]])
    q = torch.tensor([[math.log(3.0), 0.0]])  # q = (0.75, 0.25)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert math.isclose(float(kl_divergence(p, q)), expected, rel_tol=1e-5)


def test_each_term_adds_to_the_loss_only_when_configured() -> None:
    model = _model("lstm")
    tokens, lengths, targets = _batch()
    plain, _ = regularised_loss(model, tokens, lengths, targets, AdversarialConfig())
    ce = torch.nn.functional.cross_entropy(model(tokens, lengths), targets)
    assert torch.allclose(plain, ce)
    for cfg in (AdversarialConfig(epsilon=1.0), AdversarialConfig(vat_epsilon=1.0),
                AdversarialConfig(entropy_weight=1.0)):  # fmt: skip
        loss, logits = regularised_loss(model, tokens, lengths, targets, cfg)
        assert float(loss) > float(ce) and logits.shape == (4, 2)


def test_frozen_embeddings_are_still_perturbed_and_stay_unchanged() -> None:
    # Gradual unfreezing freezes the embeddings for the first steps; adversarial training then
    # still needs the loss's gradient with respect to the embedded reviews (it once raised
    # "One of the differentiated Tensors does not require grad").
    model = _model("gru")
    model.embedding.requires_grad_(False)
    tokens, lengths, targets = _batch()
    ce = torch.nn.functional.cross_entropy(model(tokens, lengths), targets)
    cfg = AdversarialConfig(epsilon=1.0, vat_epsilon=1.0)
    loss, _ = regularised_loss(model, tokens, lengths, targets, cfg)
    loss.backward()
    assert float(loss) > float(ce)
    assert model.embedding.weight.grad is None
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_unlabelled_rows_fit_the_labelled_length_and_repeat_by_step() -> None:
    lengths = [1, 2, 3, 5, 8, 13, 21, 34]
    rows = unlabelled_rows(lengths, longest=8, count=3, seed=1, epoch=2, step=7)
    assert len(rows) == 3 and all(lengths[i] <= 8 for i in rows)
    assert rows == unlabelled_rows(lengths, 8, 3, 1, 2, 7)
    assert rows != unlabelled_rows(lengths, 8, 3, 1, 2, 8) or rows != unlabelled_rows(
        lengths, 8, 3, 1, 3, 7
    )
    assert unlabelled_rows(lengths, longest=1, count=3, seed=1, epoch=1, step=1) == [0, 1, 2]
    assert len(unlabelled_rows(lengths[:2], longest=100, count=5, seed=0, epoch=1, step=1)) == 2


def test_the_radius_unit_follows_the_embeddings_scale() -> None:
    model = _model("rnn")
    before = embedding_rms(model)
    with torch.no_grad():
        model.embedding.weight.mul_(3.0)
    assert math.isclose(embedding_rms(model), 3 * before, rel_tol=1e-5)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "reviews"
    folder.mkdir()
    words = {0: ["dull", "awful", "boring"], 1: ["great", "lovely", "moving"]}
    for split, count in (("train", 80), ("unsup", 40)):
        with (folder / f"{split}.jsonl").open("w") as handle:
            for i in range(count):
                label = i % 2
                text = " ".join(["the", "film", "was", words[label][i % 3]] + ["so"] * (i % 7))
                handle.write(
                    json.dumps({"text": text, "label": -1 if split == "unsup" else label}) + "\n"
                )
    return folder


class _StopAt(TrainCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_run_with_every_term_trains_and_resumes_exactly(tmp_path: Path) -> None:
    folder = _folder(tmp_path)

    def config(name: str):  # type: ignore[no-untyped-def]
        return tiny_config(
            tmp_path, **{"data.source": str(folder), "data.unlabelled_split": "unsup",
                         "training.adversarial.epsilon": 1.0,
                         "training.adversarial.vat_epsilon": 1.0,
                         "training.adversarial.entropy_weight": 0.1,
                         "training.adversarial.unlabelled_batch_size": 8,
                         "training.epochs": 2, "output.name": name}
        )  # fmt: skip

    whole = train(config("whole"))
    with pytest.raises(TrainingInterrupted):
        train(config("stopped"), _StopAt(step=2))
    resumed = train(None, resume=tmp_path / "runs" / "stopped")
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in whole.history
    ]


def test_a_radius_per_token_moves_every_word_alike_in_short_and_long_reviews() -> None:
    model = _model("gru")
    tokens, lengths, targets = _batch()
    embedded = model.embedding(tokens)
    loss = torch.nn.functional.cross_entropy(model.from_embeddings(embedded, lengths), targets)
    mask = token_mask(lengths, tokens.shape[1], tokens.device)
    per_token = AdversarialConfig(epsilon=0.5, radius_per="token")
    radius = radii(0.5, 2.0, lengths, per_token)
    assert torch.allclose(radius.flatten(), 1.0 * lengths.float().sqrt())
    move = adversarial_perturbation(loss, embedded, mask, radius)
    per_word = move.pow(2).sum(-1).sum(1) / lengths  # mean squared move per real token
    assert torch.allclose(per_word.sqrt(), torch.full((4,), 1.0), atol=1e-5)
    assert torch.all(move[mask[:, :, 0] == 0] == 0)
    per_review = radii(0.5, 2.0, lengths, AdversarialConfig(epsilon=0.5))  # the default
    assert torch.allclose(per_review.flatten(), torch.full((4,), 1.0))
    # Through the loss: the moved reviews' loss is added, so it changes with the radius kind.
    plain, _ = regularised_loss(model, tokens, lengths, targets, AdversarialConfig(epsilon=0.5))
    scaled, _ = regularised_loss(model, tokens, lengths, targets, per_token)
    assert float(scaled) > float(plain)  # every review here is longer than one token: further


def test_a_per_token_cap_shrinks_short_reviews_radius_and_leaves_long_ones() -> None:
    lengths = torch.tensor([4, 100, 400])
    capped = AdversarialConfig(epsilon=5.0, max_per_token=0.35)
    radius = radii(5.0, 2.0, lengths, capped).flatten()
    # 0.35 * sqrt(4) = 0.7 < 5 and 0.35 * sqrt(400) = 7 > 5: the cap binds on the short review only.
    assert torch.allclose(radius, torch.tensor([0.7, 3.5, 5.0]) * 2.0)
    uncapped = radii(5.0, 2.0, lengths, AdversarialConfig(epsilon=5.0)).flatten()
    assert torch.allclose(uncapped, torch.full((3,), 10.0))
    with pytest.raises(ValueError, match="max_per_token caps a per-review radius"):
        AdversarialConfig(epsilon=0.35, radius_per="token", max_per_token=0.35)
