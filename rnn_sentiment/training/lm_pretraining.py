"""``rnn-sentiment pretrain``: language-model pretraining of an encoder, resumable like training.

:func:`pretrain` reads top to bottom like :func:`rnn_sentiment.training.loop.train`: set up a
fresh or resumed run once, train the epochs, publish the encoder. The texts are the training
split (after the validation split is carved from it, with the same seed training uses) and the
unlabelled reviews; the validation and test reviews are never read. A small share of those texts
is held out to measure perplexity.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from rnn_sentiment.callbacks import TrainCallback, checked_callback
from rnn_sentiment.config import Config, checked_config, config_to_dict
from rnn_sentiment.data.batching import collate, inference_batches, training_batches
from rnn_sentiment.data.sources import DataSplits, load_splits
from rnn_sentiment.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from rnn_sentiment.model import count_parameters
from rnn_sentiment.runfiles import STATE_FILE, given_path
from rnn_sentiment.signals import StopSignals
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.training.encoder import (
    PROVENANCE_DEPTH,
    Encoder,
    load_encoder,
    read_encoder_config,
    read_encoder_tokenizer,
    save_encoder,
    save_encoder_files,
    shape_mismatches,
    start_from_encoder,
    vocabulary_with_encoder,
)
from rnn_sentiment.training.language_model import LanguageModel, lm_pieces, token_counts
from rnn_sentiment.training.loop import (
    autocast,
    build_optimizer,
    build_scheduler,
    check_model_size,
    check_precision,
    precision_label,
    prepare_run_dir,
    removed_unless_resumable,
    seed_and_device,
    used_precision,
)
from rnn_sentiment.training.pretrain import load_vectors, pretrain_vectors
from rnn_sentiment.training.state import LoopState, flat_keys, restore_state, save_state

# Settings that change how pretraining goes about its work, never what it learns.
_FREE_KEYS = {"training.num_threads", "training.log_every", "pretraining.lm.checkpoint_every",
              "pretraining.lm.max_minutes", "training.keep_freed_memory"}  # fmt: skip


@dataclass
class PretrainResult:
    """What a finished pretraining produced."""

    encoder_dir: Path
    metrics: dict[str, Any]


@dataclass
class LMRun:
    """Everything the pretraining epochs need, built alike for a fresh and a resumed run."""

    config: Config
    path: Path
    device: torch.device
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    pieces: list[list[int]]
    held_out: list[list[int]]
    data: dict[str, Any]  # which texts were read, for metrics.json
    loop: LoopState

    def checkpoint(self) -> None:
        save_state(self.path, self.model, self.optimizer, self.scheduler, self.loop)


def pretrain(
    config: Config | None, callback: TrainCallback | None = None, resume: str | Path | None = None
) -> PretrainResult:
    """Pretrain an encoder as ``config`` says and write an encoder directory.

    Args:
        config: the settings; None with ``resume`` takes the saved ones.
        callback: receives progress; None is silent.
        resume: an encoder directory whose pretraining was stopped, to continue exactly.
    """
    config, cb = checked_config(config), checked_callback(callback)
    if resume is not None:
        resume = given_path(resume, "resume", "give the encoder directory to continue")
        run = _setup(_resumable(resume, config), cb, resume)
    elif config is None:
        raise ConfigError(["pretrain needs a config unless it resumes"])
    else:
        run = _setup(config, cb, None)
    status = _run_epochs(run, cb)
    metrics = _metrics(run, status)
    save_encoder(run.path, run.model.body, metrics)
    cb.on_message(f"pretraining: encoder written to {run.path}")
    return PretrainResult(run.path, metrics)


# ----------------------------------------------------------------------------------------------
# Setup


def check_pretrainable(config: Config) -> None:
    """Refuse a model whose left-to-right states would see the token they must predict, and one
    over the run directory's parameter cap."""
    check_model_size(config)
    model = config.model
    if model.bidirectional and model.num_layers > 1:
        raise ConfigError([
            "pretrain cannot train a bidirectional model of several layers as a language model "
            "(its upper layers read both directions, so they see the word to predict); use "
            "model.num_layers=1 or model.bidirectional=false"
        ])  # fmt: skip


def _resumable(path: Path, requested: Config | None) -> Config:
    """The config to go on with, refused (before any data is read) when it changes one that
    matters, or when the encoder has no state to resume from."""
    saved = read_encoder_config(path)
    if not (path / STATE_FILE).exists() and not (path / STATE_FILE).is_symlink():
        raise CheckpointError(
            f"{path} has no training state ({STATE_FILE}) to resume from: it was shared "
            "without one, or its pretraining stopped before its first checkpoint; start a new "
            f"pretraining (from it, if it holds an encoder: pretraining.from={path})"
        )
    if requested is None:
        return saved
    before, after = flat_keys(config_to_dict(saved)), flat_keys(config_to_dict(requested))
    changed = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
        and not key.startswith("output.")
        and key not in _FREE_KEYS
    ]
    if changed:
        raise ConfigError([
            f"cannot resume {path} with a changed config ({'; '.join(changed)}); drop the "
            "changes, or start a new pretraining"
        ])  # fmt: skip
    return requested.model_copy(update={"output": saved.output})


def _base_encoder(config: Config) -> Encoder | None:
    """The encoder a fresh pretraining continues from (``pretraining.from``), checked before any
    work: its language model goes on, so every shape key must equal the config's."""
    if config.pretraining.from_ is None:
        return None
    encoder = load_encoder(config.pretraining.from_)
    problems = shape_mismatches(config.model, encoder.config.model)
    if problems:
        raise ConfigError(problems)
    return encoder


def _setup(config: Config, cb: TrainCallback, resume: Path | None) -> LMRun:
    """Read and encode the texts, build the model; restore the saved state when resuming."""
    check_pretrainable(config)
    encoder = _base_encoder(config) if resume is None else None  # resumed: its state has all
    device = seed_and_device(config.training)
    check_precision(config, device, cb, resuming=resume is not None)
    if resume is not None:
        return _build(config, cb, resume, resume, device, None)
    path = prepare_run_dir(config)
    # a stop or an error before any state is saved leaves no encoder directory behind
    with removed_unless_resumable(path, "pretrain"):
        return _build(config, cb, None, path, device, encoder)


def _build(
    config: Config,
    cb: TrainCallback,
    resume: Path | None,
    path: Path,
    device: torch.device,
    encoder: Encoder | None,
) -> LMRun:
    """:func:`_setup` in the encoder directory ``path``: read and encode the texts, build the
    model, restore or start its state."""
    lm, seed = config.pretraining.lm, config.training.seed
    splits = load_splits(config.data, seed, unlabelled=True)
    texts = splits.train.texts + splits.unlabelled
    cb.on_message(
        f"pretraining texts: {len(splits.train):,} training and {len(splits.unlabelled):,} "
        f"unlabelled reviews from {config.data.source} ({len(splits.validation):,} validation "
        "and every test review left out)"
    )
    if resume is None:
        vocab_texts = texts if config.tokenizer.learn_from_unlabelled else splits.train.texts
        pipeline = _new_pipeline(config, vocab_texts, encoder)
        save_encoder_files(path, config, pipeline.tokenizer)
    else:
        pipeline = _saved_pipeline(path, config)
    ids = pipeline.untruncated.encode_lists(texts, config.data.cache_dir)
    pieces, held_out, cut = _split_pieces(ids, config)
    vocab = pipeline.tokenizer.get_vocab_size()
    model = LanguageModel(config.model, token_counts(pieces, vocab), lm).to(device)
    tcfg = config.training.model_copy(
        update={"lr": lm.lr, "warmup_steps": lm.warmup_steps, "schedule": "cosine"}
    )
    optimizer = build_optimizer(model, tcfg)
    steps = math.ceil(len(pieces) / lm.batch_size) * lm.epochs
    scheduler = build_scheduler(optimizer, tcfg, steps)
    data = _provenance(config, splits, cut, pieces)
    run = LMRun(
        config, path, device, model, optimizer, scheduler, pieces, held_out, data, LoopState()
    )
    if resume is not None:
        run.loop = restore_state(path, model, optimizer, scheduler, RECORD_KEYS)
        start = run.loop.pretraining or {}
        if start.get("method") == "encoder":  # saved with the state: what that encoder read
            run.data["from"] = _carried_provenance(start.get("read"))
        cb.on_message(f"resuming {path} at epoch {run.loop.epoch}, step {run.loop.step}")
    elif encoder is not None:
        run.loop.pretraining = _continue_from(run, pipeline.tokenizer, encoder, cb)
        run.checkpoint()
    elif config.pretraining.method == "word2vec":
        run.loop.pretraining = _word2vec(run, ids, cb)
        run.checkpoint()
    encoder_size = count_parameters(model.body) - count_parameters(model.body.classifier)
    cb.on_message(
        f"language model: {config.model.cell}, {encoder_size:,} "
        f"encoder parameters, {lm.softmax} softmax, {data['tokens']:,} tokens in "
        f"{len(pieces):,} pieces, device {device}, "
        f"{precision_label(device, config.training.precision)}, encoder {path}"
    )
    return run


_PROVENANCE_KEYS = {"source", "train_split", "unlabelled_split", "train_reviews",
                    "unlabelled_reviews", "held_out_reviews", "validation_reviews_left_out",
                    "validation_fraction", "validation_split", "seed", "tokens"}  # fmt: skip
# The longest string a carried record keeps (a data source's name or path).
_MAX_NAME = 1000


def _provenance(
    config: Config, splits: DataSplits, held_out: int, pieces: list[list[int]]
) -> dict[str, Any]:
    """Which texts pretraining read (metrics.json): what a classifier's leak check compares."""
    return {
        "source": config.data.source,
        "train_split": config.data.train_split,
        "unlabelled_split": config.data.unlabelled_split,
        "train_reviews": len(splits.train),
        "unlabelled_reviews": len(splits.unlabelled),
        "held_out_reviews": held_out,
        "validation_reviews_left_out": len(splits.validation),
        "validation_fraction": config.data.validation_fraction,
        "validation_split": config.data.validation_split,
        "extra_train_sources": config.data.extra_train_sources,
        "seed": config.training.seed,
        "tokens": sum(len(p) for p in pieces),
    }


def _carried_provenance(data: object, depth: int = PROVENANCE_DEPTH) -> dict[str, Any] | None:
    """The record of texts an encoder read, as a continued encoder carries it: only the keys
    :func:`_provenance` writes, with short strings and finite numbers (the file is not ours, and
    this lands in the new encoder's capped, strict-JSON metrics.json), ``depth`` encoders back
    at most."""
    if not isinstance(data, dict) or depth <= 0:
        return None
    kept = {key: value for key, value in data.items() if key in _PROVENANCE_KEYS and _plain(value)}
    sources = data.get("extra_train_sources")
    if isinstance(sources, list) and len(sources) <= 64 and all(map(_plain, sources)):
        kept["extra_train_sources"] = sources
    kept["from"] = _carried_provenance(data.get("from"), depth - 1)
    return kept


def _plain(value: object) -> bool:
    """None, a string of at most :data:`_MAX_NAME` characters, or a finite number."""
    if isinstance(value, str):
        return len(value) <= _MAX_NAME
    if isinstance(value, bool):
        return False
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


def _split_pieces(
    ids: list[list[int]], config: Config
) -> tuple[list[list[int]], list[list[int]], int]:
    """(training pieces, held-out pieces, held-out texts): a seeded share of the texts held out
    whole, to measure perplexity on text the model never trained on."""
    lm = config.pretraining.lm
    order = list(range(len(ids)))
    random.Random(config.training.seed).shuffle(order)
    cut = max(1, round(len(ids) * lm.validation_fraction))
    held_out = lm_pieces([ids[i] for i in order[:cut]], lm.seq_length)
    pieces = lm_pieces([ids[i] for i in order[cut:]], lm.seq_length)
    if not pieces or not held_out:
        raise TrainingError("too little text to pretrain on: every review is one token long")
    return pieces, held_out, cut


def _new_pipeline(config: Config, texts: list[str], encoder: Encoder | None) -> TextPipeline:
    """The vocabulary of ``texts`` and, continuing an encoder that way, every word it knows."""
    pipeline = TextPipeline.learn(texts, config.tokenizer, config.data.clean_html)
    if encoder is None or config.pretraining.vocabulary != "encoder":
        return pipeline
    tokenizer = vocabulary_with_encoder(pipeline.tokenizer, encoder)
    return TextPipeline(tokenizer, config.data.clean_html)


def _saved_pipeline(path: Path, config: Config) -> TextPipeline:
    return TextPipeline(read_encoder_tokenizer(path), config.data.clean_html)


def _continue_from(
    run: LMRun, tokenizer: Tokenizer, encoder: Encoder, cb: TrainCallback
) -> dict[str, Any]:
    """Start the language model from ``encoder`` (its recurrent layers, and its vector for every
    word it knows; new words fresh, output layers new), to go on learning from these texts."""
    summary = start_from_encoder(run.model.body, tokenizer, encoder)
    # What the encoder read, for the classifier's leak check; kept with the state for a resume.
    run.data["from"] = _carried_provenance(encoder.metrics.get("data"))
    cb.on_message(
        f"pretraining: continuing the encoder {encoder.path} ({summary['words_from_encoder']:,} "
        f"words keep its vectors, {summary['new_words']:,} new ones start random); "
        "pretraining.method is not run"
    )
    return {"method": "encoder", **summary, "read": run.data["from"]}


def _word2vec(run: LMRun, ids: list[list[int]], cb: TrainCallback) -> dict[str, Any]:
    """Start the embeddings from word2vec vectors of the pretraining texts (held-out ones too:
    they are pretraining texts, never a classifier's validation or test reviews)."""
    pcfg = run.config.pretraining
    cb.on_message(f"pretraining: word2vec, {pcfg.epochs} epochs, before the language model")
    vectors = pretrain_vectors(
        ids,
        run.model.body.embedding.num_embeddings,
        run.config.model.embedding_dim,
        pcfg,
        run.config.training.seed,
        on_epoch=lambda n: cb.on_message(f"pretraining: word2vec epoch {n}/{pcfg.epochs} done"),
    )
    load_vectors(run.model.body.embedding, vectors)
    return {"method": "word2vec", **vectors.summary()}


# ----------------------------------------------------------------------------------------------
# The epochs


def _run_epochs(run: LMRun, cb: TrainCallback) -> str:
    """Train from where ``run.loop`` stands: "complete", or "budget spent" (resumable); Ctrl-C
    and SIGTERM stop at a checkpoint."""
    lm, tcfg, loop = run.config.pretraining.lm, run.config.training, run.loop
    lengths = [len(p) for p in run.pieces]
    cb.on_train_start(run.model)
    clock = time.perf_counter() - loop.elapsed
    with StopSignals() as stop:
        while not loop.done and loop.epoch <= lm.epochs:
            epoch, epoch_start = loop.epoch, time.perf_counter()
            run.model.train()
            batches = training_batches(lengths, lm.batch_size, tcfg.seed, epoch)
            cb.on_epoch_start(epoch, lm.epochs, len(batches))
            for step in range(loop.step + 1, len(batches) + 1):
                tokens, sizes = collate([run.pieces[i] for i in batches[step - 1]])
                loss, grad_norm = _lm_step(run, tokens.to(run.device), sizes)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the language model's loss became {loss} at epoch {epoch}, step "
                        f"{step}; lower pretraining.lm.lr (the last checkpoint is in {run.path})"
                    )
                run.scheduler.step()
                loop.step, loop.elapsed = step, time.perf_counter() - clock
                loop.loss_sum += loss
                loop.seen += 1
                loop.real_tokens += int(sizes.sum())
                loop.norms.append(grad_norm)
                cb.on_step(step, loss, math.nan, grad_norm)
                if stop.requested:
                    run.checkpoint()
                    raise TrainingInterrupted(
                        f"stopped by {stop.requested} at epoch {epoch}, step {step}; continue "
                        f"with: rnn-sentiment pretrain --resume {run.path}"
                    )
                if step % lm.checkpoint_every == 0 and step < len(batches):
                    run.checkpoint()
                    if lm.max_minutes is not None and loop.elapsed > lm.max_minutes * 60:
                        cb.on_message(
                            f"pretraining: the {lm.max_minutes}-minute budget is spent at "
                            f"epoch {epoch}, step {step}; the encoder is written as it is now, "
                            f"and more pretraining continues with: rnn-sentiment pretrain "
                            f"--resume {run.path} pretraining.lm.max_minutes=null"
                        )
                        return "budget spent"
            cb.on_epoch_end(_end_epoch(run, len(batches), epoch_start))
            loop.start_epoch(epoch + 1)
            loop.done = loop.epoch > lm.epochs
            run.checkpoint()
    return "complete"


def _lm_step(run: LMRun, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[float, float]:
    tcfg = run.config.training
    with autocast(tokens.device, tcfg.precision):
        loss = run.model(tokens, lengths)
    if not torch.isfinite(loss):
        return loss.item(), math.nan
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip or math.inf)
    run.optimizer.step()
    return loss.item(), float(grad_norm)


# What each epoch's record holds at least (the directions' perplexities vary).
RECORD_KEYS = ("epoch", "train_loss", "best")


def _end_epoch(run: LMRun, steps: int, epoch_start: float) -> dict[str, Any]:
    """Measure held-out perplexity, record the epoch and publish the encoder as it is now."""
    loop = run.loop
    perplexity = held_out_perplexity(run)
    record = {
        "epoch": loop.epoch,
        "train_loss": loop.loss_sum / max(1, loop.seen),
        **{f"perplexity_{name}": value for name, value in perplexity.items()},
        "grad_norm_mean": sum(loop.norms) / max(1, len(loop.norms)),
        "lr": run.scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - epoch_start,
        "best": True,
    }
    loop.history.append(record)
    save_encoder(run.path, run.model.body, _metrics(run, "pretraining"))
    return record


@torch.no_grad()
def held_out_perplexity(run: LMRun) -> dict[str, float]:
    """Exact perplexity of each direction on the held-out pieces (up to ``validation_tokens``)."""
    lm = run.config.pretraining.lm
    run.model.eval()
    pieces, budget = [], lm.validation_tokens
    for piece in run.held_out:
        if budget <= 0:
            break
        pieces.append(piece)
        budget -= len(piece)
    names = ("forward", "backward")
    sums = [0.0, 0.0]
    counts = [0, 0]
    for batch in inference_batches([len(p) for p in pieces], lm.batch_size):
        tokens, lengths = collate([pieces[i] for i in batch])
        with autocast(run.device, run.config.training.precision):
            found = run.model.nll_sums(tokens.to(run.device), lengths)
        for d, (total, count) in enumerate(found):
            sums[d] += total
            counts[d] += count
    run.model.train()
    return {
        names[d]: math.exp(sums[d] / counts[d]) for d in range(len(run.model.heads)) if counts[d]
    }


def _metrics(run: LMRun, status: str) -> dict[str, Any]:
    loop = run.loop
    start = loop.pretraining or {}
    last = loop.history[-1] if loop.history else {}
    perplexity = {
        k.removeprefix("perplexity_"): v for k, v in last.items() if k.startswith("perplexity_")
    }
    return {
        "status": status,
        "perplexity": perplexity,
        "history": loop.history,
        "data": run.data,
        "softmax": run.config.pretraining.lm.softmax,
        "pretraining_seconds": loop.elapsed,
        "word2vec": start if start.get("method") == "word2vec" else None,
        "from_encoder": start if start.get("method") == "encoder" else None,
        "real_tokens_trained": loop.real_tokens,
        # what this machine computed in (training.precision=auto decides per machine)
        "training_precision": used_precision(run.device, run.config.training.precision),
    }
