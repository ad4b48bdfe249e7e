"""Adversarial and virtual adversarial training on the embeddings, and entropy minimisation.

Each smooths the classifier around the reviews it reads (Miyato, Dai and Goodfellow 2017;
Sachan, Zaheer and Salakhutdinov 2019):

- adversarial (AT): each labelled review's embeddings moved, within a small L2 ball, in the
  direction that raises its loss most (the loss gradient's), and the loss there added;
- virtual adversarial (VAT): for labelled and unlabelled reviews alike, the direction that
  changes the prediction most (one power iteration from a random direction), and the KL
  divergence between the prediction there and the clean one added; no label needed;
- entropy minimisation (EM): the mean entropy of the predictions added, pushing the decision
  boundary away from the reviews, unlabelled ones included.

The ball's radius is per review, over all its tokens (``radius_per: review``, as Miyato et al.),
or grows with the square root of the review's length so that the move's root mean square per
token is the same in every review (``radius_per: token``: at a fixed radius a 3-word phrase's
words move 9 times as far as a 230-word review's), or per review with a cap per token
(``max_per_token``: long reviews move as Miyato's, short ones no further per word), in units of
the embedding table's root mean square: the model can grow its embeddings to make a fixed radius
negligible (Miyato et al. normalise the embeddings for that reason); scaling the radius with them
does the same without changing the model. Padding is never perturbed.
"""

from __future__ import annotations

import torch
from torch import nn

from rnn_sentiment.config import AdversarialConfig
from rnn_sentiment.model import SentimentRNN
from rnn_sentiment.tokenizer import PAD_ID


def token_mask(lengths: torch.Tensor, time: int, device: torch.device) -> torch.Tensor:
    """[batch, time, 1]: 1.0 on each review's real steps, 0.0 on padding."""
    steps = torch.arange(time, device=device)[None, :]
    return (steps < lengths.to(device)[:, None]).float()[:, :, None]


def unit_per_review(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` [batch, time, dim] with padding zeroed and each review scaled to L2 norm 1."""
    x = x.float() * mask
    norm = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x / norm[:, None, None]


def embedding_rms(model: SentimentRNN) -> float:
    """Root mean square of the embedding table, padding row left out: the radii's unit."""
    return float(model.embedding.weight[PAD_ID + 1 :].detach().float().pow(2).mean().sqrt())


def radii(
    epsilon: float, unit: float, lengths: torch.Tensor, cfg: AdversarialConfig
) -> torch.Tensor:
    """[batch, 1, 1]: each review's radius, ``epsilon`` embedding RMS units per review, or per
    token's root mean square (``radius_per: token``: times the square root of its length);
    per review, at most ``max_per_token`` times that square root when it is set."""
    root = lengths.float().clamp_min(1).sqrt()
    if cfg.radius_per == "token":
        per_review = epsilon * root
    else:
        per_review = torch.full_like(root, epsilon)
        if cfg.max_per_token is not None:
            per_review = torch.minimum(per_review, cfg.max_per_token * root)
    return (unit * per_review)[:, None, None]


def adversarial_perturbation(
    loss: torch.Tensor, embedded: torch.Tensor, mask: torch.Tensor, radius: float | torch.Tensor
) -> torch.Tensor:
    """The move of ``embedded`` of L2 norm ``radius`` per review (a number, or [batch, 1, 1])
    that raises ``loss`` most, to first order: along the loss's gradient (detached)."""
    (gradient,) = torch.autograd.grad(loss, embedded, retain_graph=True)
    return radius * unit_per_review(gradient.detach(), mask)


def kl_divergence(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_clean || p) over the batch; ``clean_logits`` are treated as constants."""
    p_log = nn.functional.log_softmax(clean_logits.detach().float(), dim=-1)
    q_log = nn.functional.log_softmax(logits.float(), dim=-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1).mean()


def virtual_adversarial_loss(
    model: SentimentRNN,
    embedded: torch.Tensor,
    lengths: torch.Tensor,
    clean_logits: torch.Tensor,
    mask: torch.Tensor,
    cfg: AdversarialConfig,
    unit: float,
) -> torch.Tensor:
    """KL between the clean predictions and those at the most sensitive nearby embeddings."""
    direction = unit_per_review(torch.randn_like(embedded, dtype=torch.float32), mask)
    direction.requires_grad_()
    # The probe moves a review by vat_xi of one embedding's RMS, far below bfloat16's resolution:
    # under autocast its logits round to the clean ones and the direction is lost (measured: half
    # the reviews got none). The power iteration runs in float32, its clean side included.
    with torch.autocast(embedded.device.type, enabled=False):
        start = embedded.detach().float()
        clean = model.from_embeddings(start, lengths)
        probe = start + cfg.vat_xi * unit * direction
        divergence = kl_divergence(clean, model.from_embeddings(probe, lengths))
    (gradient,) = torch.autograd.grad(divergence, direction)
    radius = radii(cfg.vat_epsilon, unit, lengths, cfg).to(embedded.device)
    move = radius * unit_per_review(gradient.detach(), mask)
    return kl_divergence(clean_logits, model.from_embeddings(embedded + move, lengths))


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the predicted label distributions."""
    log_p = nn.functional.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def regularised_loss(
    model: SentimentRNN,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    cfg: AdversarialConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss, logits of the labelled reviews) of a batch whose first ``len(targets)``
    rows are labelled and whose other rows are unlabelled reviews.

    The loss is the labelled reviews' cross-entropy plus each configured term.
    """
    labelled = len(targets)
    embedded = model.embedding(tokens)
    if not embedded.requires_grad:  # embeddings frozen (gradual unfreezing): perturb them anyway
        embedded = embedded.detach().requires_grad_()
    logits = model.from_embeddings(embedded, lengths)
    loss = nn.functional.cross_entropy(logits[:labelled].float(), targets)
    total = loss
    mask = token_mask(lengths, tokens.shape[1], tokens.device)
    unit = embedding_rms(model)
    if cfg.epsilon > 0:
        radius = radii(cfg.epsilon, unit, lengths, cfg).to(embedded.device)
        move = adversarial_perturbation(loss, embedded, mask, radius)
        moved = (embedded + move.to(embedded.dtype))[:labelled]
        total = total + nn.functional.cross_entropy(
            model.from_embeddings(moved, lengths[:labelled]).float(), targets
        )
    if cfg.vat_epsilon > 0:
        total = total + virtual_adversarial_loss(model, embedded, lengths, logits, mask, cfg, unit)
    if cfg.entropy_weight > 0:
        total = total + cfg.entropy_weight * mean_entropy(logits)
    return total, logits[:labelled]
