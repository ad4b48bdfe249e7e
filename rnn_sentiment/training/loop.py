"""The training loop: backpropagation through time, clipping, early stopping, checkpoints.

:func:`train` reads top to bottom: :func:`setup_run` builds everything the epochs need and
decides, once, whether the run is fresh or resumed; :func:`run_epochs` is the loop;
:func:`finish` measures the best weights. What a resumed run restores lives in
:mod:`rnn_sentiment.training.state`.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnn_sentiment import hardware
from rnn_sentiment.callbacks import TrainCallback, checked_callback
from rnn_sentiment.checkpoint import (
    load_pipeline,
    load_weights,
    save_calibration,
    save_metrics,
    save_run_files,
    save_weights,
)
from rnn_sentiment.config import Config, TrainingConfig, checked_config
from rnn_sentiment.data.batching import collate, predict_proba_ids, training_batches
from rnn_sentiment.data.sources import DataSplits, load_splits
from rnn_sentiment.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from rnn_sentiment.metrics import fit_calibration, probability_metrics, with_temperature
from rnn_sentiment.model import SentimentRNN, build_model, count_parameters, parameter_shapes
from rnn_sentiment.runfiles import (
    CONFIG_FILE,
    LABELS_FILE,
    MAX_PARAMETERS,
    STATE_FILE,
    WEIGHTS_FILE,
    given_path,
)
from rnn_sentiment.signals import StopRequested, StopSignals
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.training import distributed
from rnn_sentiment.training.adversarial import regularised_loss
from rnn_sentiment.training.allocator import freed_memory_kept, wants_kept_memory
from rnn_sentiment.training.diagnostics import explosion_warning, gradient_flow, longest_reviews
from rnn_sentiment.training.distributed import Ranks
from rnn_sentiment.training.encoder import (
    ENCODER_FILE,
    PROVENANCE_DEPTH,
    Encoder,
    load_encoder,
    start_from_encoder,
    vector_mismatch,
    vocabulary_with_encoder,
)
from rnn_sentiment.training.pretrain import EnoughEpochs, load_vectors, pretrain_vectors
from rnn_sentiment.training.state import LoopState, restore_state, resumable_config, save_state

# Class probabilities [n, labels] of texts, from a finished run directory; it tells the callable
# it is given how many texts are scored so far, after each chunk of them.
TestScorer = Callable[[Path, Sequence[str], Callable[[int], None]], np.ndarray]


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    """Everything the epochs need, built the same way for a fresh and a resumed run."""

    config: Config
    run_dir: Path
    device: torch.device
    splits: DataSplits
    pipeline: TextPipeline
    train_ids: list[list[int]]
    val_ids: list[list[int]]
    model: SentimentRNN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loop: LoopState = field(default_factory=LoopState)
    # Unlabelled reviews' ids, shortest first, for virtual adversarial training and entropy
    # minimisation (training.adversarial); empty when neither is on.
    unlabelled_ids: list[list[int]] = field(default_factory=list)
    flow: dict[str, Any] | None = None  # gradient flow of the weights training started from
    ranks: Ranks = field(default_factory=Ranks)  # several processes under torchrun, or one
    ddp: nn.Module | None = None  # the model wrapped for them (the same parameters)

    def checkpoint(self) -> None:
        """Save the resumable state: weights, optimiser, schedule, RNG and loop counters."""
        save_state(self.run_dir, self.model, self.optimizer, self.scheduler, self.loop)

    def metrics_on(self, ids: list[list[int]], labels: list[int]) -> dict[str, Any]:
        """The model's metrics on encoded, labelled reviews."""
        return validation_metrics(self.model, ids, labels, self.splits, self.device)

    def labelled_probs(
        self, ids: list[list[int]], labels: list[int]
    ) -> tuple[np.ndarray, list[int]]:
        """The model's probabilities of the labelled reviews among ``ids``, and their labels."""
        keep = [i for i, label in enumerate(labels) if label >= 0]
        probs = predict_proba_ids(self.model, [ids[i] for i in keep], device=self.device)
        return probs, [labels[i] for i in keep]


def train(
    config: Config | None,
    callback: TrainCallback | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    score_test: TestScorer | None = None,
) -> TrainResult:
    """Train a classifier as ``config`` says and write a self-contained run directory.

    Args:
        config: the run's settings; None with ``resume`` takes the run's saved config.
        callback: receives progress; None trains silently.
        resume: a run directory to continue from its last saved training state.
        force: resume even when ``config`` differs from the run's saved config.
        score_test: scores the test reviews with the finished run directory, as ``evaluate``
            and ``predict`` do (the public :func:`rnn_sentiment.train` passes their scorer);
            None scores them with the training model's batched forward pass.
    """
    config, cb = checked_config(config), checked_callback(callback)
    if resume is not None:
        resume = given_path(resume, "resume", "give the run directory to continue")
    ranks = distributed.start(config.training.device if config else "cpu")
    scratch: Path | None = None
    if not ranks.main:  # the same training, silent, its files in a folder removed at the end
        cb = TrainCallback()
        scratch = Path(tempfile.mkdtemp(prefix=f"rnn-sentiment-rank{ranks.rank}-"))
        if resume is not None:
            resume = shutil.copytree(resume, scratch / "run")
        elif config is not None:
            config = config.model_copy(deep=True)
            config.output.dir = str(scratch)
    try:
        run = setup_run(config, resume, force, cb, ranks)
        run_epochs(run, cb)
        metrics = finish(run, cb, score_test) if ranks.main else {}
        return TrainResult(run.run_dir, metrics, run.loop.history)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        distributed.stop(ranks)


# ----------------------------------------------------------------------------------------------
# Setup: fresh or resumed, decided once


def setup_run(
    config: Config | None,
    resume: str | Path | None,
    force: bool,
    cb: TrainCallback,
    ranks: Ranks | None = None,
) -> Run:
    """Build the run the epochs continue: a new one, or ``resume``'s restored bit for bit."""
    ranks = ranks or Ranks()
    if resume is not None:
        run = _resumed_run(Path(resume), config, force, cb, ranks)
    elif config is None:
        raise ConfigError(["train needs a config unless it resumes a run"])
    else:
        run = _fresh_run(config, cb, ranks)
    run.ranks = ranks
    if ranks.active:
        # Rank 0's weights (pretrained embeddings included) are broadcast to every rank here.
        run.ddp = nn.parallel.DistributedDataParallel(run.model)
    processes = f", {ranks.world} processes (DistributedDataParallel)" if ranks.active else ""
    precision = precision_label(run.device, run.config.training.precision)
    cb.on_message(
        f"model: {run.config.model.cell} with {count_parameters(run.model):,} parameters, "
        f"vocabulary {run.pipeline.tokenizer.get_vocab_size():,}, device {run.device}, "
        f"{precision}{processes}, run {run.run_dir}"
    )
    return run


def _fresh_run(config: Config, cb: TrainCallback, ranks: Ranks) -> Run:
    """A new run directory and text pipeline; the embeddings pretrained when asked."""
    check_model_size(config)
    _check_distributed(config, ranks)
    device = seed_and_device(config.training)
    check_precision(config, device, cb)
    encoder = load_encoder(config.pretraining.from_) if config.pretraining.from_ else None
    if encoder is not None:  # before any work: a bad or mismatched encoder is refused up front
        problems = vector_mismatch(config.model, encoder.config.model)
        if problems:
            raise ConfigError(problems)
    run_dir = prepare_run_dir(config)
    with removed_unless_resumable(run_dir):
        return _set_up(config, cb, ranks, run_dir, device, encoder)


@contextmanager
def removed_unless_resumable(run_dir: Path, command: str = "train") -> Iterator[None]:
    """Set up the new ``run_dir`` in the block; a stop (Ctrl-C, SIGTERM: it killed the process
    in silence) or an error before any training state is saved removes it, which could only
    block its name (``--resume`` refuses a directory without state)."""
    try:
        with StopSignals(raise_at_once=True):
            yield
    except (KeyboardInterrupt, StopRequested) as exc:
        kept = _discard_unresumable(run_dir)
        how = f"stopped by {exc.signal_name}" if isinstance(exc, StopRequested) else "interrupted"
        if kept:
            raise TrainingInterrupted(
                f"{how}; continue with {command} --resume {run_dir}"
            ) from None
        raise TrainingInterrupted(
            f"{how} while the run was set up, before any training step; nothing to resume "
            f"(the run directory {run_dir} was removed)"
        ) from None
    except BaseException:
        _discard_unresumable(run_dir)
        raise


def _discard_unresumable(run_dir: Path) -> bool:
    """Remove ``run_dir`` unless it holds a training state, and the ``output.dir`` made for it
    if nothing else is in it; True when it is kept."""
    if (run_dir / STATE_FILE).exists():
        return True
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir.parent.resolve() in _MADE_PARENTS:
        with contextlib.suppress(OSError):  # not empty: another run is there now
            run_dir.parent.rmdir()
    return False


# output.dir folders prepare_run_dir created (a run that stops before any state removes its own)
_MADE_PARENTS: set[Path] = set()


def _set_up(
    config: Config,
    cb: TrainCallback,
    ranks: Ranks,
    run_dir: Path,
    device: torch.device,
    encoder: Encoder | None,
) -> Run:
    """Read the data, learn the vocabulary, build the run and pretrain what is asked, in the
    new ``run_dir`` (:func:`_fresh_run` removes it when this stops before any state is saved)."""
    word2vec = config.pretraining.method != "none" and encoder is None
    wants_unlabelled = (
        word2vec
        or config.tokenizer.learn_from_unlabelled
        or config.training.adversarial.uses_unlabelled
    )
    splits = load_splits(config.data, config.training.seed, unlabelled=wants_unlabelled)
    cb.on_message(_data_message(config, splits))
    # The vocabulary is learned from the training split (and, if asked, the unlabelled texts),
    # never from validation or test.
    unlabelled = splits.unlabelled if config.tokenizer.learn_from_unlabelled else []
    texts = splits.train.texts + unlabelled
    pipeline = TextPipeline.learn(texts, config.tokenizer, config.data.clean_html)
    if encoder is not None and config.pretraining.vocabulary == "encoder":
        # every word the encoder knows, so each keeps its vector
        tokenizer = vocabulary_with_encoder(pipeline.tokenizer, encoder)
        pipeline = TextPipeline(tokenizer, config.data.clean_html)
    save_run_files(run_dir, config, pipeline.tokenizer, splits.label_names)
    run = _assemble(config, run_dir, device, splits, pipeline)
    run.unlabelled_ids = _unlabelled_ids(run, cb)
    if encoder is not None:
        run.loop.pretraining = start_from(run, encoder, cb)
    elif word2vec and ranks.main:  # the other ranks get rank 0's weights
        run.loop.pretraining = pretrain_embeddings(run, cb)
    # Measured on the weights training starts from, pretrained embeddings included.
    run.flow = run.loop.gradient_flow_start = _gradient_flow_start(run)
    if run.loop.pretraining is not None:  # a stop from here on resumes after pretraining
        run.checkpoint()
    return run


def check_model_size(config: Config) -> None:
    """Refuse a model that could train but never load (over the run directory's cap), before any
    work: measured without allocating, at the largest vocabulary the tokenizer may learn."""
    shapes = parameter_shapes(config.model, config.tokenizer.vocab_size, 2)
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_PARAMETERS:
        raise ConfigError([
            f"the model would have {count:,} parameters, over the {MAX_PARAMETERS:,} a run "
            "directory may hold; lower model.hidden_size, model.num_layers or tokenizer.vocab_size"
        ])  # fmt: skip


def _check_distributed(config: Config, ranks: Ranks) -> None:
    """Refuse what several training processes cannot do yet (a fresh run or a resumed one)."""
    if ranks.active and config.training.unfreeze_steps:
        raise ConfigError(["training.unfreeze_steps is not supported under torchrun yet"])
    if ranks.active and config.training.adversarial.active:
        raise ConfigError(["training.adversarial is not supported under torchrun yet"])


def _resumed_run(
    run_dir: Path, config: Config | None, force: bool, cb: TrainCallback, ranks: Ranks
) -> Run:
    """``run_dir``'s saved tokenizer, and its model, optimiser, schedule and RNG as last saved."""
    if (run_dir / ENCODER_FILE).exists() and not (run_dir / LABELS_FILE).exists():
        raise CheckpointError(
            f"{run_dir} is an encoder, not a classifier's run directory; continue its "
            f"pretraining with: pretrain --resume {run_dir}, or start a classifier from it with: "
            f"train CONFIG pretraining.from={run_dir}"
        )
    config = resumable_config(run_dir, config, force)
    _check_distributed(config, ranks)
    device = seed_and_device(config.training)
    check_precision(config, device, cb, resuming=True)
    # The vocabulary was learned and the embeddings pretrained before: unlabelled texts only
    # for the losses that train on them.
    wants_unlabelled = config.training.adversarial.uses_unlabelled
    splits = load_splits(config.data, config.training.seed, unlabelled=wants_unlabelled)
    cb.on_message(_data_message(config, splits))
    pipeline = load_pipeline(run_dir, config)
    run = _assemble(config, run_dir, device, splits, pipeline)
    run.unlabelled_ids = _unlabelled_ids(run, cb)
    # States saved before the start measure was kept fall back to this fresh model's.
    flow = _gradient_flow_start(run)
    run.loop = restore_state(
        run_dir, run.model, run.optimizer, run.scheduler, RECORD_KEYS, keeps_best=True
    )
    run.flow = run.loop.gradient_flow_start or flow
    cb.on_message(f"resuming {run_dir} at epoch {run.loop.epoch}, step {run.loop.step}")
    return run


def seed_and_device(tcfg: TrainingConfig) -> torch.device:
    seed_everything(tcfg.seed)
    # Several training processes on one machine share its cores.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(tcfg.num_threads or max(1, available_cpus() // local_processes))
    return resolve_device(tcfg.device)


def _data_message(config: Config, splits: DataSplits) -> str:
    return (
        f"data: {len(splits.train)} train, {len(splits.validation)} validation"
        + (f", {len(splits.test)} test" if splits.test else "")
        + f" reviews from {config.data.source}"
        + (
            f" ({splits.left_out:,} rows without a label or text left out of supervised training)"
            if splits.left_out
            else ""
        )
    )


def _assemble(
    config: Config, run_dir: Path, device: torch.device, splits: DataSplits, pipeline: TextPipeline
) -> Run:
    """Encode the reviews; build model, optimiser and schedule, as a fresh run starts them."""
    tcfg = config.training
    train_ids = pipeline.encode_lists(splits.train.texts, config.data.cache_dir)
    val_ids = pipeline.encode_lists(splits.validation.texts, config.data.cache_dir)
    model = build_model(config.model, pipeline.tokenizer.get_vocab_size(), len(splits.label_names))
    model.to(device)
    steps_per_epoch = math.ceil(len(train_ids) / tcfg.batch_size)
    optimizer = build_optimizer(model, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, steps_per_epoch * tcfg.epochs)
    return Run(
        config, run_dir, device, splits, pipeline, train_ids, val_ids, model, optimizer, scheduler
    )


def _unlabelled_ids(run: Run, cb: TrainCallback) -> list[list[int]]:
    """The unlabelled reviews' ids, shortest first, when training.adversarial trains on them."""
    if not run.config.training.adversarial.uses_unlabelled:
        return []
    if not run.splits.unlabelled:
        cb.on_warning(
            "virtual adversarial training and entropy minimisation see only the labelled "
            "reviews: the data has no unlabelled ones (set data.unlabelled_split)"
        )
        return []
    ids = run.pipeline.encode_lists(run.splits.unlabelled, run.config.data.cache_dir)
    return sorted(ids, key=len)


def unlabelled_rows(
    lengths: Sequence[int], longest: int, count: int, seed: int, epoch: int, step: int
) -> list[int]:
    """``count`` unlabelled reviews for one step, none longer than the step's longest labelled
    review when there are enough such (so they add no padding), chosen by (seed, epoch, step)
    alone: a resumed run draws the same ones. ``lengths`` is sorted, shortest first."""
    fitting = max(bisect.bisect_right(lengths, longest), min(count, len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch * 100_003 + step)
    return sorted(rng.sample(range(fitting), min(count, fitting)))


def _gradient_flow_start(run: Run) -> dict[str, Any] | None:
    """Gradient flow of the model as it is now, when ``diagnostics.gradient_flow`` is on."""
    diagnostics = run.config.diagnostics
    if not diagnostics.gradient_flow:
        return None
    batch = longest_reviews(run.val_ids, run.splits.validation.labels, diagnostics.reviews)
    return {
        "measure": "mean ||d loss / d h_t|| by distance from the end (top layer, left-to-right)",
        "reviews": len(batch[0]),
        "init": gradient_flow(run.model, *batch, run.device),
    }


def pretrain_embeddings(run: Run, cb: TrainCallback) -> dict[str, Any]:
    """Start the model's embeddings from word2vec vectors of the training and unlabelled texts.

    The validation and test texts are never read. Returns what was done, for metrics.json. A
    stop (Ctrl-C, SIGTERM) ends it after the current word2vec epoch and removes the run
    directory, which holds nothing to resume yet.
    """
    config, splits, tokenizer = run.config, run.splits, run.pipeline.tokenizer
    pcfg = config.pretraining
    cb.on_message(
        f"pretraining: {pcfg.method} on {len(splits.train):,} training and "
        f"{len(splits.unlabelled):,} unlabelled texts, {pcfg.epochs} epochs"
    )
    unlabelled_ids = run.pipeline.encode_lists(splits.unlabelled, config.data.cache_dir)
    # The budget covers pretraining and the training epochs together (LoopState.total_seconds).
    budget, start = config.training.max_minutes, time.perf_counter()

    def on_epoch(n: int) -> None:
        if stop.requested:
            raise TrainingInterrupted(
                f"stopped by {stop.requested} during pretraining, before any training step; "
                f"nothing to resume (the run directory {run.run_dir} was removed)"
            )
        cb.on_message(f"pretraining: epoch {n}/{pcfg.epochs} done")
        spent = time.perf_counter() - start
        if budget is not None and spent > budget * 60 and n < pcfg.epochs:
            cb.on_message(
                f"pretraining: stopping after epoch {n}: the {budget}-minute budget "
                "(training.max_minutes) is spent; one training epoch follows"
            )
            raise EnoughEpochs

    with StopSignals() as stop:  # removed_unless_resumable removes the run directory
        pretrained = pretrain_vectors(
            run.train_ids + unlabelled_ids,
            tokenizer.get_vocab_size(),
            config.model.embedding_dim,
            pcfg,
            config.training.seed,
            on_epoch=on_epoch,
        )
    load_vectors(run.model.embedding, pretrained)
    summary = {"method": pcfg.method, **pretrained.summary()}
    cb.on_message(
        f"pretraining: vectors for {summary['words']:,} of {tokenizer.get_vocab_size():,} "
        f"words from {summary['tokens']:,} tokens in {summary['seconds']:.0f} s"
    )
    return summary


def start_from(run: Run, encoder: Encoder, cb: TrainCallback) -> dict[str, Any]:
    """Start the model from a pretrained encoder; warn when its texts may include validation's."""
    summary = start_from_encoder(run.model, run.pipeline.tokenizer, encoder)
    cb.on_message(
        f"pretraining: from the encoder {encoder.path} ({summary['words_from_encoder']:,} words "
        f"keep its vectors, {summary['new_words']:,} new ones start random); "
        "pretraining.method and pretraining.lm are not run again"
    )
    if summary["recurrent_layers"] != "from encoder":
        cb.on_message(
            "pretraining: only the encoder's word vectors are taken, and this model's recurrent "
            f"layers start random: {summary['recurrent_layers'].removeprefix('random: ')}"
        )
    if _may_have_read_validation(encoder.metrics.get("data"), run.config):
        cb.on_warning(
            "the encoder (or one it continued) was pretrained on this data with another "
            "validation split (data.validation_split, data.validation_fraction, "
            "data.extra_train_sources or training.seed differ), so its language model may have "
            "read this run's validation reviews: validation accuracy may be optimistic"
        )
    return {"method": "encoder", "seconds": 0.0, **summary}


def _may_have_read_validation(data: object, config: Config) -> bool:
    """Whether pretraining that read ``data`` (an encoder's record of its texts; ``from``: the
    encoder it continued, and so on) may have read this run's validation reviews. A data set is
    known by its last name, so the hub's ``stanfordnlp/imdb`` is the folder ``.../imdb``."""
    mine = config.data
    ours = {dataset_name(mine.source)} | {dataset_name(s) for s in mine.extra_train_sources}
    # What decides which reviews the validation split is carved from (encoders written before
    # extra_train_sources was recorded had none).
    carve = {
        "validation_split": mine.validation_split,
        "validation_fraction": mine.validation_fraction,
        "seed": config.training.seed,
        "extra_train_sources": [dataset_name(s) for s in mine.extra_train_sources],
    }
    for _ in range(PROVENANCE_DEPTH):  # encoders continuing encoders; bounded: not our file
        if not isinstance(data, dict):
            return False
        extra = data.get("extra_train_sources")
        extra = extra if isinstance(extra, list) else []
        theirs = {dataset_name(data.get("source"))} | {dataset_name(s) for s in extra}
        if mine.validation_split is not None:  # a split of its own: read only if named so
            named = (data.get("train_split"), data.get("unlabelled_split"))
            if dataset_name(mine.source) in theirs and mine.validation_split in named:
                return True
        elif ours & theirs:
            recorded = {**data, "extra_train_sources": [dataset_name(s) for s in extra]}
            same_source = dataset_name(data.get("source")) == dataset_name(mine.source)
            if not same_source or any(recorded.get(k) != v for k, v in carve.items()):
                return True
        data = data.get("from")
    return False


def dataset_name(source: object) -> str:
    """A data source by its last name, lower-cased: ``stanfordnlp/imdb`` and ``../data/imdb/``
    are both ``imdb``."""
    return str(source).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()


# ----------------------------------------------------------------------------------------------
# The loop


def run_epochs(run: Run, cb: TrainCallback) -> None:
    """Train from where ``run.loop`` stands until the epochs, the patience or the budget run out.

    Ctrl-C or SIGTERM stops at the next step boundary, after saving a state to resume from.
    """
    config, loop, tcfg = run.config, run.loop, run.config.training
    lengths = [len(ids) for ids in run.train_ids]
    labels = torch.tensor(run.splits.train.labels)
    keep = run.device.type == "cpu" and wants_kept_memory(tcfg.keep_freed_memory, config.model.cell)
    cb.on_train_start(run.model)
    clock = time.perf_counter() - loop.elapsed
    # Freed memory is kept only while the epochs run: not during data loading, whose many
    # short-lived blocks it would keep too, and not after training in this process.
    with StopSignals() as stop, freed_memory_kept(keep) as kept:
        if keep:
            cb.on_message(
                "memory: freed memory is kept between steps (training.keep_freed_memory): "
                + ("faster, more memory" if kept else "not available with this C library")
            )
        while not loop.done and loop.epoch <= tcfg.epochs:
            # 1. Train the epoch's batches, from the first one a resumed run has not trained.
            epoch = loop.epoch
            run.model.train()
            batches = training_batches(lengths, tcfg.batch_size, tcfg.seed, epoch)
            cb.on_epoch_start(epoch, tcfg.epochs, len(batches))
            epoch_start = time.perf_counter()
            for step in range(loop.step + 1, len(batches) + 1):
                batch = batches[step - 1]
                if run.ranks.active:  # dropout masks that a resume repeats exactly
                    distributed.step_seed(tcfg.seed, epoch, step, run.ranks.rank)
                unfreeze(run.model, (epoch - 1) * len(batches) + step, tcfg)
                loss, correct, grad_norm = _train_batch(run, batch, labels, step)
                loop.elapsed = time.perf_counter() - clock
                cb.on_step(step, loss, correct / len(batch), grad_norm)
                # Only between steps, the saved state is consistent; every rank stops together.
                if run.ranks.any(bool(stop.requested)):
                    run.checkpoint()
                    raise TrainingInterrupted(
                        f"stopped by {stop.requested or 'another rank'} at epoch {epoch}, step "
                        f"{step}; continue with: rnn-sentiment train --resume {run.run_dir}"
                    )
                if step % tcfg.checkpoint_every == 0 and step < len(batches):
                    run.checkpoint()
            # 2. Validate, keep the best weights, warn when the gradient exploded.
            cb.on_epoch_end(_end_epoch(run, len(batches), epoch_start))
            warning = explosion_warning(
                loop.norms, config.diagnostics.explode_ratio, tcfg.grad_clip
            )
            if warning:
                cb.on_warning(f"epoch {epoch}: {warning}")
            # 3. Stop when patience or the time budget runs out; checkpoint either way.
            loop.start_epoch(epoch + 1)
            reason = _stop_reason(loop, tcfg)
            if reason is not None:
                cb.on_message(reason)
            # Rank 0 decides (a time budget could run out on one rank and not on another).
            loop.done = run.ranks.from_main(reason is not None)
            run.checkpoint()


def _train_batch(
    run: Run, batch: list[int], labels: torch.Tensor, step: int
) -> tuple[float, int, float]:
    """Train one batch, step the schedule and count it; a non-finite loss stops training."""
    tcfg, loop = run.config.training, run.loop
    share = run.ranks.share(batch) if run.ranks.active else batch
    rows = share or batch[:1]  # an empty share still takes part in the step, with no weight
    reviews = [run.train_ids[i] for i in rows]
    real = sum(len(ids) for ids in reviews)
    if run.unlabelled_ids:  # after the labelled rows: training.adversarial's unlabelled share
        acfg = tcfg.adversarial
        picked = unlabelled_rows(
            [len(ids) for ids in run.unlabelled_ids], max(len(ids) for ids in reviews),
            acfg.unlabelled_batch_size or tcfg.batch_size, tcfg.seed, loop.epoch, step,
        )  # fmt: skip
        reviews += [run.unlabelled_ids[i] for i in picked]
    tokens, lengths = collate(reviews)
    targets = labels[rows].to(run.device)
    loss, correct, grad_norm = train_step(
        run.ddp or run.model, run.optimizer, tokens.to(run.device), lengths, targets, tcfg,
        ranks=run.ranks, batch_size=len(batch), weight=1.0 if share else 0.0,
    )  # fmt: skip
    if not math.isfinite(loss):
        raise TrainingError(
            f"the loss became {loss} at epoch {loop.epoch}, step {step}: exploding "
            "gradients; lower training.lr or set training.grad_clip (now "
            f"{tcfg.grad_clip}); the last good checkpoint is in {run.run_dir}"
        )
    run.scheduler.step()
    loop.step = step
    loop.loss_sum += loss * len(batch)
    loop.correct += correct
    loop.seen += len(batch)
    loop.clipped += int(tcfg.grad_clip is not None and grad_norm > tcfg.grad_clip)
    loop.real_tokens += real if share else 0
    loop.norms.append(grad_norm)
    return loss, correct, grad_norm


# What choosing the best epoch (_better) reads from each epoch's record.
RECORD_KEYS = ("epoch", "val_loss", "val_accuracy", "val_macro_f1", "best")


def _end_epoch(run: Run, steps: int, epoch_start: float) -> dict[str, Any]:
    """Validate and record the epoch; save the weights when they are the best so far."""
    loop, tcfg = run.loop, run.config.training
    val = run.metrics_on(run.val_ids, run.splits.validation.labels)
    record = {
        "epoch": loop.epoch,
        "train_loss": loop.loss_sum / loop.seen,
        "train_accuracy": loop.correct / loop.seen,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_macro_f1": val["macro_f1"],
        "grad_norm_mean": float(np.mean(loop.norms)),
        "grad_norm_max": float(np.max(loop.norms)),
        "clipped_fraction": loop.clipped / steps,
        "lr": run.scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - epoch_start,
    }
    record["best"] = loop.best is None or _better(record, loop.best, tcfg.metric)
    loop.history.append(record)
    if record["best"]:
        loop.best, loop.stale_epochs = record, 0
        save_weights(run.run_dir, run.model)
    else:
        loop.stale_epochs += 1
    save_metrics(run.run_dir, {"history": loop.history, "status": "training"})
    return record


def _stop_reason(loop: LoopState, tcfg: TrainingConfig) -> str | None:
    """Why training ends after this epoch, if it does: patience or the time budget ran out."""
    if loop.stale_epochs >= tcfg.patience:
        return f"early stopping: no better val {tcfg.metric} for {tcfg.patience} epochs"
    if tcfg.max_minutes is not None and loop.total_seconds() > tcfg.max_minutes * 60:
        return f"stopping: the {tcfg.max_minutes}-minute budget is spent"
    return None


# ----------------------------------------------------------------------------------------------
# The end: metrics of the best weights


def finish(
    run: Run, cb: TrainCallback | None = None, score_test: TestScorer | None = None
) -> dict[str, Any]:
    """Final metrics of the best weights, on the test split too when there is one; saved."""
    config, loop, splits = run.config, run.loop, run.splits
    run.model.load_state_dict(load_weights(run.run_dir / WEIGHTS_FILE))
    assert loop.best is not None
    # Temperature scaling (Guo et al. 2017) on the validation split, never test: saved before
    # the test pass, so that pass, and every later prediction, is calibrated.
    val_probs, val_labels = run.labelled_probs(run.val_ids, splits.validation.labels)
    calibration = fit_calibration(val_probs, val_labels, "validation")
    save_calibration(run.run_dir, calibration)
    if cb is not None:
        before, after = calibration["before"]["ece"], calibration["after"]["ece"]
        cb.on_message(
            f"calibration: {calibration['not_fitted']}; temperature 1"
            if "not_fitted" in calibration
            else f"calibration: temperature {calibration['temperature']:.3f} fitted on "
            f"{calibration['reviews']:,} validation reviews (ECE {before:.4f} -> {after:.4f})"
        )
        if "warning" in calibration:
            cb.on_warning(f"calibration: {calibration['warning']}")
    metrics: dict[str, Any] = {
        "status": "complete",
        "best_epoch": loop.best["epoch"],
        # As the run directory will score them from now on: calibrated (the per-epoch history
        # has the network's own loss).
        "validation": probability_metrics(
            with_temperature(val_probs, calibration["temperature"]), val_labels, splits.label_names
        ),
        "calibration": calibration,
        "parameters": sum(p.numel() for p in run.model.parameters()),  # frozen ones too
        "train_seconds": loop.total_seconds(),  # pretraining included
        "real_tokens_per_second": loop.real_tokens / max(loop.elapsed, 1e-9),
        # what this machine computed in (training.precision=auto decides per machine)
        "training_precision": used_precision(run.device, config.training.precision),
        "history": loop.history,
    }
    if loop.pretraining is not None:
        metrics["pretraining"] = loop.pretraining
    if splits.test is not None:
        temperature = calibration["temperature"]
        metrics["test"] = _test_metrics(run, cb or TrainCallback(), score_test, temperature)
    if run.flow is not None:
        reviews = longest_reviews(run.val_ids, splits.validation.labels, config.diagnostics.reviews)
        metrics["gradient_flow"] = {
            **run.flow,
            "trained": gradient_flow(run.model, *reviews, run.device),
        }
    save_metrics(run.run_dir, metrics)
    return metrics


def _test_metrics(
    run: Run, cb: TrainCallback, score_test: TestScorer | None, temperature: float
) -> dict[str, Any]:
    """The best weights' metrics on the test split, calibrated, with progress: it can take
    minutes. ``score_test`` reads the run directory, calibration included."""
    assert run.splits.test is not None
    texts, labels = run.splits.test.texts, run.splits.test.labels
    cb.on_message(f"test: scoring {len(texts):,} reviews with the best epoch's weights")
    start = time.perf_counter()
    if score_test is None:
        ids = run.pipeline.encode_lists(texts, run.config.data.cache_dir)
        probs, kept = run.labelled_probs(ids, labels)
        probs = with_temperature(probs, temperature)
        metrics = probability_metrics(probs, kept, run.splits.label_names)
    else:
        keep = [i for i, label in enumerate(labels) if label >= 0]

        def scored(done: int) -> None:  # a line per chunk: IMDB's 25,000 take minutes
            cb.on_message(
                f"test: {done:,} of {len(keep):,} reviews scored "
                f"({time.perf_counter() - start:.0f} s)"
            )

        probs = score_test(run.run_dir, [texts[i] for i in keep], scored)
        metrics = probability_metrics(probs, [labels[i] for i in keep], run.splits.label_names)
    cb.on_message(
        f"test: accuracy {metrics['accuracy']:.4f} in {time.perf_counter() - start:.0f} s"
    )
    return metrics


# ----------------------------------------------------------------------------------------------
# Steps and building blocks


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    tcfg: TrainingConfig,
    ranks: Ranks | None = None,
    batch_size: int = 0,
    weight: float = 1.0,
) -> tuple[float, int, float]:
    """One step of backpropagation through time: (loss, correct predictions, gradient norm).

    The norm is measured before clipping. A non-finite loss returns before any update, so the
    weights stay those of the last good step. Under several ``ranks`` (``model`` wrapped in
    DistributedDataParallel) this rank holds part of a global batch of ``batch_size``
    reviews (``weight`` 0: none, a stand-in row); loss and correct count are the whole batch's.
    """
    if tcfg.adversarial.active and isinstance(model, SentimentRNN):  # one process only
        with autocast(tokens.device, tcfg.precision):
            loss, logits = regularised_loss(model, tokens, lengths, targets, tcfg.adversarial)
        if not torch.isfinite(loss):
            return loss.item(), 0, math.nan
        correct, grad_norm = _update(model, optimizer, loss, tcfg, logits, targets)
        return loss.item(), correct, grad_norm
    with autocast(tokens.device, tcfg.precision):
        logits = model(tokens, lengths)
    if ranks is None or not ranks.active:
        loss = nn.functional.cross_entropy(logits.float(), targets)
        if not torch.isfinite(loss):
            return loss.item(), 0, math.nan
        correct, grad_norm = _update(model, optimizer, loss, tcfg, logits, targets)
        return loss.item(), correct, grad_norm
    summed = nn.functional.cross_entropy(logits.float(), targets, reduction="sum") * weight
    if ranks.any(not bool(torch.isfinite(summed))):
        return math.nan, 0, math.nan
    # DDP averages the ranks' gradients: scaled so, that average is the global batch's mean.
    scaled = summed * (ranks.world / batch_size)
    correct, grad_norm = _update(model, optimizer, scaled, tcfg, logits, targets)
    total, right = ranks.sums(float(summed.item()), float(correct * int(weight)))
    return total / batch_size, int(right), grad_norm


def _update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    tcfg: TrainingConfig,
    logits: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[int, float]:
    """Backpropagate ``loss``, clip and step: (right predictions, gradient norm before clipping)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or math.inf))
    optimizer.step()
    return int((logits.argmax(dim=-1) == targets).sum()), grad_norm


def validation_metrics(
    model: nn.Module,
    ids: list[list[int]],
    labels: list[int],
    splits: Any,
    device: torch.device,
) -> dict[str, Any]:
    """Metrics plus mean cross-entropy of ``model`` on encoded reviews (unlabelled ones skipped)."""
    keep = [i for i, label in enumerate(labels) if label >= 0]
    probs = predict_proba_ids(model, [ids[i] for i in keep], device=device)
    return probability_metrics(probs, [labels[i] for i in keep], splits.label_names)


def _better(record: dict[str, Any], best: dict[str, Any], metric: str) -> bool:
    if metric == "loss":
        return bool(record["val_loss"] < best["val_loss"])
    key = "val_accuracy" if metric == "accuracy" else "val_macro_f1"
    return bool(record[key] > best[key])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a CPU run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether ``training.precision`` computes in bfloat16 on ``device``: ``bf16`` always,
    ``auto`` where the hardware does it natively (elsewhere it is slower than fp32)."""
    return precision == "bf16" or (precision == "auto" and hardware.native_bf16(device.type))


def used_precision(device: torch.device, precision: str) -> str:
    """ "bf16" or "fp32": what ``training.precision`` computes in on ``device``."""
    return "bf16" if uses_bf16(device, precision) else "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for the forward pass: bfloat16 matmuls, fp32 weights and reductions."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


_PRECISION_FIX = "set training.precision=auto (bf16 only where it is native) or fp32"


def check_precision(
    config: Config, device: torch.device, cb: TrainCallback, resuming: bool = False
) -> None:
    """Refuse bf16 where training would crash, before any work, and warn where it would be slow.

    A CPU without bfloat16 instructions emulates bf16 (several times slower than fp32), and
    oneDNN has no LSTM for it there at all ("could not create a primitive descriptor").
    """
    if config.training.precision != "bf16" or hardware.native_bf16(device.type):
        return
    if hardware.bf16_refused(config.model.cell, device.type):
        fix = (
            "resume it on a machine with bfloat16 instructions (train: or resume with "
            "training.precision=fp32 --force)"
            if resuming
            else _PRECISION_FIX
        )
        raise ConfigError([
            f"training.precision=bf16: {hardware.no_bf16(device.type)}, and an LSTM cannot "
            f"train in emulated bf16; {fix}"
        ])  # fmt: skip
    cb.on_warning(f"training.precision=bf16: {hardware.no_bf16(device.type)}; {_PRECISION_FIX}")


def precision_label(device: torch.device, precision: str) -> str:
    """What a run computes in, for its start message: "bf16", "fp32 (precision auto)", ..."""
    used = used_precision(device, precision)
    return f"{used} (precision auto)" if precision == "auto" else used


def available_cpus() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity API
        return os.cpu_count() or 1


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device=cuda but no CUDA GPU is visible; use auto or cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prepare_run_dir(config: Config) -> Path:
    """Claim a new run directory up front, so an unwritable location fails before any work.

    The directory is created exclusively: of two trainings given the same ``output.name`` at the
    same moment, exactly one gets it and the other is refused, instead of both writing into it
    (an LSTM's config next to a GRU's weights). An existing directory, even an empty one, is
    never reused; an interrupted run is continued with ``train --resume``. Without a name, runs
    started in the same second get ``-2``, ``-3``, ... appended.
    """
    parent = Path(config.output.dir)
    try:
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            _MADE_PARENTS.add(parent.resolve())
    except OSError as exc:
        raise CheckpointError(f"cannot write to {parent}: {exc.strerror}") from None
    if config.output.name is not None:
        try:
            return _claim(parent / config.output.name)
        except FileExistsError:
            run_dir = parent / config.output.name
            raise CheckpointError(
                f"{run_dir} already exists; choose another output.name or remove it"
                + _resume_hint(run_dir)
            ) from None
    stamp = f"{config.model.cell}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for suffix in ["", *(f"-{n}" for n in range(2, 100))]:
        try:
            return _claim(parent / f"{stamp}{suffix}")
        except FileExistsError:
            continue
    raise CheckpointError(f"{parent} already holds {stamp} and 98 more; set output.name")


def _resume_hint(run_dir: Path) -> str:
    """How what ``run_dir`` holds would continue, if it is a classifier's run or an encoder."""
    if (run_dir / LABELS_FILE).is_file():
        return f" (an interrupted training continues with: train --resume {run_dir})"
    if (run_dir / CONFIG_FILE).is_file():  # an encoder: its config, no labels
        return f" (an interrupted pretraining continues with: pretrain --resume {run_dir})"
    return ""


def _claim(run_dir: Path) -> Path:
    """Create ``run_dir`` (``mkdir`` is atomic: FileExistsError when it exists) and probe it."""
    try:
        try:
            run_dir.mkdir()
        except FileNotFoundError:  # output.dir removed meanwhile by a run that stopped early
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
    except FileExistsError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror}") from None
    try:
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror}") from None
    return run_dir


def build_optimizer(model: nn.Module, tcfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum, as configured, over :func:`layer_groups`."""
    # Bottom up, so the parameters come in model.parameters()'s order (the saved state's).
    tops = layer_groups(model) if tcfg.layer_lr_decay != 1.0 else [model]
    groups = [
        {"params": list(group.parameters()), "lr": tcfg.lr / tcfg.layer_lr_decay**depth}
        for depth, group in reversed(list(enumerate(tops)))
    ]
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay
        )
    # The fused kernel updates every tensor in one pass: on CPU it is several times faster than
    # the default for the large, dense embedding gradient, and bit-identical run to run.
    return torch.optim.AdamW(groups, lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True)


def layer_groups(model: nn.Module) -> list[nn.Module]:
    """A classifier's parameters from the top down (classifier, each recurrent layer from the
    last, embedding), the order discriminative rates and gradual unfreezing go in; any other
    model is one group."""
    if not isinstance(model, SentimentRNN):
        return [model]
    return [model.classifier, *reversed(list(model.layers)), model.embedding]


def unfreeze(model: nn.Module, step: int, tcfg: TrainingConfig) -> None:
    """Gradual unfreezing (ULMFiT): before global ``step`` (from 1), group ``k`` of
    :func:`layer_groups` trains only once ``(step - 1) >= k * training.unfreeze_steps``. A frozen
    group gets no gradient, so the optimiser leaves it exactly as it is (no weight decay)."""
    if tcfg.unfreeze_steps == 0:
        return
    for depth, group in enumerate(layer_groups(model)):
        group.requires_grad_(step - 1 >= depth * tcfg.unfreeze_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, tcfg: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant, linear or cosine decay to zero at ``total_steps``."""
    warmup = tcfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if tcfg.schedule == "linear":
            return 1.0 - progress
        if tcfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
