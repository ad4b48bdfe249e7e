"""A run's resumable state: loop counters, optimiser, schedule and RNG, saved in one file.

:func:`save_state` writes everything a resumed run needs to continue bit for bit where the
checkpoint was taken; :func:`restore_state` loads it into freshly built objects, and
:func:`resumable_config` decides whether a run may resume under the config it is given.

A run directory to resume is checked as one to load (:mod:`rnn_sentiment.checkpoint`): its
config and tokenizer against the manifest, the model's size before it is built. The state file,
rewritten every few hundred steps, is not in the manifest (a kill between the two renames would
leave them disagreeing); it carries its own SHA-256, and every tensor in it must have the name
and shape the freshly built model and optimiser give it, every setting the type they give it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnn_sentiment.checkpoint import (
    check_model_size,
    load_training_state,
    read_config,
    save_config,
    save_training_state,
)
from rnn_sentiment.config import Config, config_to_dict
from rnn_sentiment.errors import CheckpointError, ConfigError
from rnn_sentiment.runfiles import STATE_FILE


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
    record_keys: Collection[str] = ("epoch", "best"),
    keeps_best: bool = False,
) -> LoopState:
    """Load what :func:`save_state` wrote into fresh objects; return the loop counters.

    ``record_keys``: what each epoch's record in the history has (numbers; ``best`` a bool),
    and the best epoch's record too, as the loop that saved the state writes them.
    ``keeps_best``: the loop keeps the best epoch's record from the first epoch on.
    """
    expected = _state_shapes(model)
    required = [name for name in expected if name.startswith(("model.", "rng."))]
    tensors, meta = load_training_state(run_dir, expected, required)
    try:
        _check_settings(meta, optimizer, scheduler)
        _check_counters(meta["loop"], record_keys, keeps_best)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for index, scalars in meta["optimizer"]["scalars"].items():
            state[int(index)] = dict(scalars)
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, slot = key.split(".", 2)
                state.setdefault(int(index), {})[slot] = value
        param_groups = meta["optimizer"]["param_groups"]
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        random.setstate(_tupled(meta["rng"]["python"]))
        return LoopState(**meta["loop"])
    except Unreachable:
        raise CheckpointError(
            f"{run_dir / STATE_FILE} holds loop counters no run could reach (it was altered); "
            "it cannot be resumed"
        ) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            RuntimeError):  # fmt: skip
        raise CheckpointError(
            f"{run_dir / STATE_FILE} does not hold a training state this version can resume "
            "with this config"
        ) from None


# Optimiser slots that hold a tensor per parameter (AdamW, SGD with momentum) or a step count.
_PER_PARAMETER_SLOTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every tensor name :func:`save_state` may write for ``model``, with its shape."""
    shapes = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    for index, param in enumerate(model.parameters()):
        for slot in _PER_PARAMETER_SLOTS:
            shapes[f"optim.{index}.{slot}"] = tuple(param.shape)
        shapes[f"optim.{index}.step"] = ()
    shapes["rng.torch"] = tuple(torch.get_rng_state().shape)
    return shapes


def _check_settings(
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Raise ``ValueError`` unless the saved settings have the layout fresh objects give them."""
    fresh_loop = asdict(LoopState())
    loop = meta["loop"]
    if not isinstance(loop, dict) or loop.keys() != {f.name for f in fields(LoopState)}:
        raise ValueError("loop counters")
    for key, value in loop.items():
        if fresh_loop[key] is not None and type(value) is not type(fresh_loop[key]):
            raise ValueError(key)
        if fresh_loop[key] is None and not isinstance(value, dict | None):
            raise ValueError(key)
    groups = meta["optimizer"]["param_groups"]
    if not _same_layout(groups, optimizer.state_dict()["param_groups"]):
        raise ValueError("optimizer")
    if not _same_layout(meta["scheduler"], scheduler.state_dict()):
        raise ValueError("scheduler")


class Unreachable(ValueError):
    """Loop counters of the right types that no run could have saved."""


def _check_counters(loop: dict[str, Any], record_keys: Collection[str], keeps_best: bool) -> None:
    """Raise :class:`Unreachable` unless the loop counters (of the right types already)
    describe a point a run can reach: one record per finished epoch, one gradient norm per step
    of this one, counts that are not negative, finite times. A resealed state must not crash a
    resumed run an epoch later, nor write a NaN into metrics.json."""
    history, best, step, seen = loop["history"], loop["best"], loop["step"], loop["seen"]
    if loop["epoch"] < 1 or len(history) != loop["epoch"] - 1:
        raise Unreachable("epoch")
    for number, record in enumerate(history, 1):
        if not _is_record(record, record_keys) or record["epoch"] != number:
            raise Unreachable("history")
    if best is not None and not (
        _is_record(best, record_keys)
        and 1 <= best["epoch"] <= len(history)
        and history[best["epoch"] - 1]["best"] is True
    ):
        raise Unreachable("best")
    if keeps_best and (best is None) != (not history):
        raise Unreachable("best")
    if not (0 <= step <= seen and (seen == 0) == (step == 0) and len(loop["norms"]) == step):
        raise Unreachable("step")
    if not all(isinstance(norm, float) for norm in loop["norms"]):
        raise Unreachable("norms")
    if not (0 <= loop["correct"] <= seen and 0 <= loop["clipped"] <= step):
        raise Unreachable("correct")
    if not (0 <= loop["stale_epochs"] <= len(history) and loop["real_tokens"] >= 0):
        raise Unreachable("stale_epochs")
    seconds = (loop["pretraining"] or {}).get("seconds", 0.0)
    if not all(_seconds(value) for value in (loop["elapsed"], seconds)):
        raise Unreachable("elapsed")
    if not math.isfinite(loop["loss_sum"]):
        raise Unreachable("loss_sum")


def _is_record(record: Any, keys: Collection[str]) -> bool:
    """Whether ``record`` is a dict with an int ``epoch`` and numbers under ``keys`` (a bool
    under ``best``)."""
    return (
        isinstance(record, dict)
        and type(record.get("epoch")) is int
        and all(
            isinstance(record.get(key), bool) if key == "best" else _is_number(record.get(key))
            for key in keys
        )
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


def _same_layout(saved: Any, fresh: Any) -> bool:
    """Whether ``saved`` has ``fresh``'s keys, lengths and scalar types, all the way down."""
    if isinstance(fresh, dict):
        return (
            isinstance(saved, dict)
            and saved.keys() == fresh.keys()
            and all(_same_layout(saved[k], fresh[k]) for k in fresh)
        )
    if isinstance(fresh, list | tuple):
        return (
            isinstance(saved, list)
            and len(saved) == len(fresh)
            and all(_same_layout(s, f) for s, f in zip(saved, fresh, strict=True))
        )
    return type(saved) is type(fresh) or (type(fresh) is float and type(saved) is int)


# Settings that change how a run goes about its work, never its results: free to change on resume.
_RESULT_FREE_KEYS = {
    "training.keep_freed_memory",
    "training.log_every",
    "training.checkpoint_every",
}


def resumable_config(run_dir: Path, requested: Config | None, force: bool) -> Config:
    """The saved config of ``run_dir``; a different ``requested`` one is refused with a diff.

    The run directory is checked first: its config against the manifest, and the size of the
    model it describes before anything builds it.
    """
    saved = read_config(run_dir)
    check_model_size(run_dir, saved)
    if requested is None:
        return saved
    before, after = flat_keys(config_to_dict(saved)), flat_keys(config_to_dict(requested))
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
    save_config(run_dir, config)  # the run directory describes itself
    return config


def flat_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
