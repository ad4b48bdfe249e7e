"""The training loop: backpropagation through time, clipping, early stopping, checkpoints."""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnn_sentiment.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_write_text,
    load_training_state,
    load_weights,
    save_metrics,
    save_run_files,
    save_training_state,
    save_weights,
)
from rnn_sentiment.config import Config, TrainingConfig
from rnn_sentiment.data.batching import collate, predict_proba_ids, training_batches
from rnn_sentiment.data.sources import DataSplits, load_splits
from rnn_sentiment.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from rnn_sentiment.metrics import probability_metrics
from rnn_sentiment.model import SentimentRNN, build_model, count_parameters
from rnn_sentiment.text import TextPipeline
from rnn_sentiment.tokenizer import load_tokenizer
from rnn_sentiment.training.allocator import freed_memory_kept, wants_kept_memory
from rnn_sentiment.training.diagnostics import explosion_warning, gradient_flow, longest_reviews


class TrainCallback:
    """Receives progress; the CLI renders it, library users may subclass it. No-ops by default."""

    def on_message(self, text: str) -> None:
        """A one-line status message (data loaded, tokenizer trained, ...)."""

    def on_train_start(self, model: nn.Module) -> None:
        """The model is built (and restored when resuming), on its device, about to train."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch of ``steps`` batches begins (``epoch`` counts from 1)."""

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        """A batch was trained; ``grad_norm`` is the gradient norm before clipping."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch ended; ``record`` holds its training and validation metrics."""

    def on_warning(self, text: str) -> None:
        """Something looks wrong but training goes on (for example the gradient exploded)."""
        self.on_message(f"warning: {text}")


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopState:
    """Everything about the loop's progress that a resumed run must restore exactly."""

    epoch: int = 1
    step: int = 0  # batches of ``epoch`` already trained
    done: bool = False  # epochs are over; only the final evaluation remains
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stale_epochs: int = 0
    real_tokens: int = 0
    elapsed: float = 0.0  # seconds of epochs, pretraining not included
    pretraining: dict[str, Any] | None = None  # what pretrain_embeddings did, seconds included
    gradient_flow_start: dict[str, Any] | None = None  # diagnostics.gradient_flow before step 1
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    clipped: int = 0
    norms: list[float] = field(default_factory=list)

    def total_seconds(self) -> float:
        """Training time so far, pretraining included."""
        return self.elapsed + (self.pretraining or {}).get("seconds", 0.0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0
        self.loss_sum, self.correct, self.seen, self.clipped, self.norms = 0.0, 0, 0, 0, []


def train(
    config: Config | None,
    callback: TrainCallback | None = None,
    resume: str | Path | None = None,
    force: bool = False,
) -> TrainResult:
    """Train a classifier as ``config`` says and write a self-contained run directory.

    Args:
        config: the run's settings; None with ``resume`` takes the run's saved config.
        callback: receives progress; None trains silently.
        resume: a run directory to continue from its last saved training state.
        force: resume even when ``config`` differs from the run's saved config.
    """
    cb = callback or TrainCallback()
    if resume is not None:
        run_dir = Path(resume)
        config = resumable_config(run_dir, config, force)
    elif config is None:
        raise ConfigError(["train needs a config unless it resumes a run"])
    tcfg = config.training
    seed_everything(tcfg.seed)
    torch.set_num_threads(tcfg.num_threads or available_cpus())
    device = resolve_device(tcfg.device)
    if resume is None:
        run_dir = prepare_run_dir(config)

    # 1. Data and text pipeline: the vocabulary is learned from the training split (and, if
    # asked, the unlabelled texts), never from validation or test.
    try:
        wants_unlabelled = resume is None and (  # a resumed run has done both already
            config.pretraining.method != "none" or config.tokenizer.learn_from_unlabelled
        )
        splits = load_splits(config.data, tcfg.seed, unlabelled=wants_unlabelled)
    except BaseException:
        if resume is None and not any(run_dir.iterdir()):
            run_dir.rmdir()  # bad data must not leave an empty run directory behind
        raise
    cb.on_message(
        f"data: {len(splits.train)} train, {len(splits.validation)} validation"
        + (f", {len(splits.test)} test" if splits.test else "")
        + f" reviews from {config.data.source}"
    )
    if resume is None:
        unlabelled = splits.unlabelled if config.tokenizer.learn_from_unlabelled else []
        texts = splits.train.texts + unlabelled
        pipeline = TextPipeline.learn(texts, config.tokenizer, config.data.clean_html)
        save_run_files(run_dir, config, pipeline.tokenizer, splits.label_names)
    else:
        pipeline = TextPipeline(load_tokenizer(run_dir / TOKENIZER_FILE), config.data.clean_html)
    tokenizer = pipeline.tokenizer
    train_ids = pipeline.encode_lists(splits.train.texts, config.data.cache_dir)
    val_ids = pipeline.encode_lists(splits.validation.texts, config.data.cache_dir)
    lengths = [len(ids) for ids in train_ids]

    # 2. Model, optimiser and schedule; a resumed run restores them and the RNG bit for bit.
    model = build_model(config.model, tokenizer.get_vocab_size(), len(splits.label_names))
    model.to(device)
    steps_per_epoch = math.ceil(len(train_ids) / tcfg.batch_size)
    optimizer = build_optimizer(model, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, steps_per_epoch * tcfg.epochs)
    loop = LoopState()
    if resume is not None:
        # States saved before the start measure was kept fall back to this fresh model's.
        flow = _gradient_flow_start(config, model, val_ids, splits.validation.labels, device)
        loop = restore_state(run_dir, model, optimizer, scheduler)
        flow = loop.gradient_flow_start or flow
        cb.on_message(f"resuming {run_dir} at epoch {loop.epoch}, step {loop.step}")
    else:
        if config.pretraining.method != "none":
            loop.pretraining = pretrain_embeddings(
                config, model, pipeline, train_ids, splits, run_dir, cb
            )
        # Measured on the weights training starts from, pretrained embeddings included.
        flow = _gradient_flow_start(config, model, val_ids, splits.validation.labels, device)
        loop.gradient_flow_start = flow
        if loop.pretraining is not None:  # a stop from here on resumes after pretraining
            save_state(run_dir, model, optimizer, scheduler, loop)
    train_labels = torch.tensor(splits.train.labels)
    cb.on_message(
        f"model: {config.model.cell} with {count_parameters(model):,} parameters, "
        f"vocabulary {tokenizer.get_vocab_size():,}, device {device}, run {run_dir}"
    )

    def checkpoint() -> None:
        save_state(run_dir, model, optimizer, scheduler, loop)

    # 3. Epochs: train, validate, keep the best weights, stop when patience runs out.
    keep = device.type == "cpu" and wants_kept_memory(tcfg.keep_freed_memory, config.model.cell)
    cb.on_train_start(model)
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
            epoch = loop.epoch
            model.train()
            batches = training_batches(lengths, tcfg.batch_size, tcfg.seed, epoch)
            cb.on_epoch_start(epoch, tcfg.epochs, len(batches))
            epoch_start = time.perf_counter()
            for step in range(loop.step + 1, len(batches) + 1):
                batch = batches[step - 1]
                tokens, batch_lengths = collate([train_ids[i] for i in batch])
                targets = train_labels[batch].to(device)
                loss, batch_correct, grad_norm = train_step(
                    model, optimizer, tokens.to(device), batch_lengths, targets, tcfg
                )
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at epoch {epoch}, step {step}: exploding "
                        "gradients; lower training.lr or set training.grad_clip (now "
                        f"{tcfg.grad_clip}); the last good checkpoint is in {run_dir}"
                    )
                scheduler.step()
                loop.step = step
                loop.loss_sum += loss * len(batch)
                loop.correct += batch_correct
                loop.seen += len(batch)
                loop.clipped += int(tcfg.grad_clip is not None and grad_norm > tcfg.grad_clip)
                loop.real_tokens += int(batch_lengths.sum())
                loop.norms.append(grad_norm)
                loop.elapsed = time.perf_counter() - clock
                cb.on_step(step, loss, batch_correct / len(batch), grad_norm)
                if stop.requested:
                    checkpoint()
                    raise TrainingInterrupted(
                        f"stopped by {stop.requested} at epoch {epoch}, step {step}; continue "
                        f"with: rnn-sentiment train --resume {run_dir}"
                    )
                if step % tcfg.checkpoint_every == 0 and step < len(batches):
                    checkpoint()

            val = validation_metrics(model, val_ids, splits.validation.labels, splits, device)
            record = {
                "epoch": epoch,
                "train_loss": loop.loss_sum / loop.seen,
                "train_accuracy": loop.correct / loop.seen,
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_macro_f1": val["macro_f1"],
                "grad_norm_mean": float(np.mean(loop.norms)),
                "grad_norm_max": float(np.max(loop.norms)),
                "clipped_fraction": loop.clipped / len(batches),
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.perf_counter() - epoch_start,
            }
            record["best"] = loop.best is None or _better(record, loop.best, tcfg.metric)
            loop.history.append(record)
            if record["best"]:
                loop.best, loop.stale_epochs = record, 0
                save_weights(run_dir, model)
            else:
                loop.stale_epochs += 1
            save_metrics(run_dir, {"history": loop.history, "status": "training"})
            cb.on_epoch_end(record)
            warning = explosion_warning(
                loop.norms, config.diagnostics.explode_ratio, tcfg.grad_clip
            )
            if warning:
                cb.on_warning(f"epoch {epoch}: {warning}")
            loop.start_epoch(epoch + 1)
            if loop.stale_epochs >= tcfg.patience:
                cb.on_message(
                    f"early stopping: no better val {tcfg.metric} for {tcfg.patience} epochs"
                )
                loop.done = True
            elif tcfg.max_minutes is not None and loop.total_seconds() > tcfg.max_minutes * 60:
                cb.on_message(f"stopping: the {tcfg.max_minutes}-minute budget is spent")
                loop.done = True
            checkpoint()

    # 4. Final metrics of the best weights, on the test split when there is one.
    model.load_state_dict(load_weights(run_dir / WEIGHTS_FILE))
    assert loop.best is not None
    metrics: dict[str, Any] = {
        "status": "complete",
        "best_epoch": loop.best["epoch"],
        "validation": validation_metrics(model, val_ids, splits.validation.labels, splits, device),
        "parameters": count_parameters(model),
        "train_seconds": loop.total_seconds(),  # pretraining included
        "real_tokens_per_second": loop.real_tokens / max(loop.elapsed, 1e-9),
        "history": loop.history,
    }
    if loop.pretraining is not None:
        metrics["pretraining"] = loop.pretraining
    if splits.test is not None:
        test_ids = pipeline.encode_lists(splits.test.texts, config.data.cache_dir)
        metrics["test"] = validation_metrics(model, test_ids, splits.test.labels, splits, device)
    if flow is not None:
        longest = longest_reviews(val_ids, splits.validation.labels, config.diagnostics.reviews)
        metrics["gradient_flow"] = {**flow, "trained": gradient_flow(model, *longest, device)}
    save_metrics(run_dir, metrics)
    return TrainResult(run_dir, metrics, loop.history)


def pretrain_embeddings(
    config: Config,
    model: SentimentRNN,
    pipeline: TextPipeline,
    train_ids: list[list[int]],
    splits: DataSplits,
    run_dir: Path,
    cb: TrainCallback,
) -> dict[str, Any]:
    """Start ``model``'s embeddings from word2vec vectors of the training and unlabelled texts.

    The validation and test texts are never read. Returns what was done, for metrics.json. A
    stop (Ctrl-C, SIGTERM) ends it after the current word2vec epoch and removes the run
    directory, which holds nothing to resume yet.
    """
    from rnn_sentiment.training.pretrain import load_vectors, pretrain_vectors

    pcfg = config.pretraining
    cb.on_message(
        f"pretraining: {pcfg.method} on {len(splits.train):,} training and "
        f"{len(splits.unlabelled):,} unlabelled texts, {pcfg.epochs} epochs"
    )
    token_ids = train_ids + pipeline.encode_lists(splits.unlabelled, config.data.cache_dir)
    tokenizer = pipeline.tokenizer

    def on_epoch(n: int) -> None:
        if stop.requested:
            raise TrainingInterrupted(
                f"stopped by {stop.requested} during pretraining, before any training step; "
                f"nothing to resume (the run directory {run_dir} was removed)"
            )
        cb.on_message(f"pretraining: epoch {n}/{pcfg.epochs} done")

    try:
        with StopSignals() as stop:
            pretrained = pretrain_vectors(
                token_ids,
                tokenizer.get_vocab_size(),
                config.model.embedding_dim,
                pcfg,
                config.training.seed,
                on_epoch=on_epoch,
            )
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    load_vectors(model.embedding, pretrained)
    summary = {"method": pcfg.method, **pretrained.summary()}
    cb.on_message(
        f"pretraining: vectors for {summary['words']:,} of {tokenizer.get_vocab_size():,} "
        f"words from {summary['tokens']:,} tokens in {summary['seconds']:.0f} s"
    )
    return summary


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    tcfg: TrainingConfig,
) -> tuple[float, int, float]:
    """One step of backpropagation through time: (loss, correct predictions, gradient norm).

    The norm is measured before clipping. A non-finite loss returns before any update, so the
    weights stay those of the last good step.
    """
    with autocast(tokens.device, tcfg.precision):
        logits = model(tokens, lengths)
    loss = nn.functional.cross_entropy(logits.float(), targets)
    if not torch.isfinite(loss):
        return loss.item(), 0, math.nan
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or math.inf))
    optimizer.step()
    correct = int((logits.argmax(dim=-1) == targets).sum())
    return loss.item(), correct, grad_norm


def _gradient_flow_start(
    config: Config, model: SentimentRNN, ids: list[list[int]], labels: list[int], device: Any
) -> dict[str, Any] | None:
    """Gradient flow of the freshly initialised model, when ``diagnostics.gradient_flow`` is on."""
    if not config.diagnostics.gradient_flow:
        return None
    batch = longest_reviews(ids, labels, config.diagnostics.reviews)
    return {
        "measure": "mean ||d loss / d h_t|| by distance from the end (top layer, left-to-right)",
        "reviews": len(batch[0]),
        "init": gradient_flow(model, *batch, device),
    }


class StopSignals:
    """Turn Ctrl-C and SIGTERM into a request to stop at the next step boundary.

    Stopping between steps (never inside ``optimizer.step``) is what makes the saved state
    consistent. A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))


def save_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop: LoopState,
) -> None:
    """Checkpoint weights, optimiser moments, schedule, RNG and loop counters in one file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    optim_meta: dict[str, dict[str, Any]] = {}
    for index, slots in optim["state"].items():
        optim_meta[str(index)] = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                optim_meta[str(index)][key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "loop": asdict(loop),
        "optimizer": {"param_groups": optim["param_groups"], "scalars": optim_meta},
        "scheduler": scheduler.state_dict(),
        "rng": {"python": _jsonable(random.getstate())},
    }
    save_training_state(run_dir, tensors, meta)


def restore_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> LoopState:
    """Load what :func:`save_state` wrote into fresh objects; return the loop counters."""
    tensors, meta = load_training_state(run_dir)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"the training state in {run_dir} does not fit: {first}") from None
    state: dict[int, dict[str, Any]] = {}
    for index, scalars in meta["optimizer"]["scalars"].items():
        state[int(index)] = dict(scalars)
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate(_tupled(meta["rng"]["python"]))
    return LoopState(**meta["loop"])


# Settings that change how a run goes about its work, never its results: free to change on resume.
_RESULT_FREE_KEYS = {
    "training.keep_freed_memory",
    "training.log_every",
    "training.checkpoint_every",
}


def resumable_config(run_dir: Path, requested: Config | None, force: bool) -> Config:
    """The saved config of ``run_dir``; a different ``requested`` one is refused with a diff."""
    import yaml

    from rnn_sentiment.config import config_from_dict, config_to_dict

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    saved = config_from_dict(yaml.safe_load(path.read_text("utf-8")) or {})
    if requested is None:
        return saved
    before, after = _flatten(config_to_dict(saved)), _flatten(config_to_dict(requested))
    changed = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key) and not key.startswith("output.")
    ]
    if not changed:
        return saved
    fixed = [c for c in changed if c.startswith(("model.", "tokenizer.", "data.", "pretraining."))]
    if fixed:
        raise ConfigError(
            [f"cannot resume {run_dir}: the saved weights, tokenizer and data split depend on "
             f"{'; '.join(fixed)}; start a new run instead"]
        )  # fmt: skip
    unforced = [c for c in changed if c.split(":")[0] not in _RESULT_FREE_KEYS]
    if unforced and not force:
        raise ConfigError(
            [f"cannot resume {run_dir} with a changed config ({'; '.join(unforced)}); "
             "drop the changes or pass --force"]
        )  # fmt: skip
    config = requested.model_copy(update={"output": saved.output})
    from rnn_sentiment.checkpoint import write_manifest
    from rnn_sentiment.config import dump_config

    atomic_write_text(path, dump_config(config))  # the run directory describes itself
    write_manifest(run_dir)
    return config


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


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


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for the forward pass: bfloat16 matmuls, fp32 weights and reductions."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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
    """Create the run directory up front, so an unwritable location fails before any work."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.output.name or f"{config.model.cell}-{stamp}"
    run_dir = Path(config.output.dir) / name
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise CheckpointError(
                f"{run_dir} already exists and is not an empty folder; "
                "choose another output.name or remove it"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"cannot write to {run_dir}: {exc.strerror}") from None
    return run_dir


def build_optimizer(model: nn.Module, tcfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum, as configured."""
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay
        )
    # The fused kernel updates every tensor in one pass: on CPU it is several times faster than
    # the default for the large, dense embedding gradient, and bit-identical run to run.
    return torch.optim.AdamW(
        model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True
    )


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
