"""Train RNN, LSTM and GRU under one config and measure them side by side.

Every cell sees the same data split, tokenizer settings, sizes, budget and seeds; each run is an
ordinary run directory (``predict`` and ``evaluate`` accept it). Gradient flow is always measured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from rnn_sentiment.api import train
from rnn_sentiment.callbacks import CompareCallback
from rnn_sentiment.config import MAX_SEED, Config, ModelConfig
from rnn_sentiment.data.sources import load_splits
from rnn_sentiment.errors import ConfigError, DataError, TrainingInterrupted
from rnn_sentiment.inference.predictor import Predictor
from rnn_sentiment.model import build_model, count_parameters
from rnn_sentiment.training.loop import check_precision, resolve_device

CELLS = ("rnn", "lstm", "gru")
# Review length buckets in tokens (before truncation): (label, first, last); None is open-ended.
LENGTH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1-25", 1, 25),
    ("26-50", 26, 50),
    ("51-100", 51, 100),
    ("101-200", 101, 200),
    ("201-400", 201, 400),
    (">400", 401, None),
)


@dataclass
class RunOutcome:
    """One trained cell and seed, measured on the evaluation split."""

    cell: str
    seed: int
    run_dir: str
    hidden_size: int
    parameters: int
    accuracy: float
    macro_f1: float
    train_seconds: float
    tokens_per_second: float
    by_length: dict[str, dict[str, float | int | None]]
    by_distance: dict[str, dict[str, float | int | None]] | None
    history: list[dict[str, Any]]
    gradient_flow: dict[str, Any]


@dataclass
class Comparison:
    """All runs of a comparison and where they were written."""

    out_dir: Path
    split: str
    source: str
    config: dict[str, Any]
    runs: list[RunOutcome] = field(default_factory=list)

    def cells(self) -> list[str]:
        """Cells in the order they were trained."""
        return list(dict.fromkeys(run.cell for run in self.runs))

    def summary(self) -> list[dict[str, Any]]:
        """One row per cell: means (and accuracy std) over seeds."""
        return [summarize([r for r in self.runs if r.cell == cell]) for cell in self.cells()]

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready."""
        return {
            "out_dir": str(self.out_dir),
            "split": self.split,
            "source": self.source,
            "summary": self.summary(),
            "runs": [asdict(run) for run in self.runs],
            "config": self.config,
        }


def parse_cells(text: str) -> list[str]:
    """``"rnn,lstm,gru"`` -> the cells, checked; an unknown one is a :class:`ConfigError`."""
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise ConfigError([f"--cells takes a comma list of {', '.join(CELLS)}; got '{text}'"])
    twice = sorted({c for c in cells if cells.count(c) > 1})
    if twice:
        raise ConfigError(
            [f"--cells names {', '.join(twice)} more than once; several runs of a cell: --seeds N"]
        )
    return cells


def matched_hidden_size(model: ModelConfig, cell: str, reference: str = "lstm") -> int:
    """The hidden size that gives ``cell`` the parameter count closest to ``reference``'s.

    The embedding is the same for every cell, so a two-word vocabulary is enough to compare.
    """
    target = _parameters(model, reference, model.hidden_size)
    # A one-gate RNN needs about twice the LSTM's width (h^2 vs 4 h^2), so 4x bounds the search.
    low, high = 1, 4 * model.hidden_size + 8
    while low < high:  # the smallest size whose count reaches the target
        mid = (low + high) // 2
        if _parameters(model, cell, mid) < target:
            low = mid + 1
        else:
            high = mid
    candidates = [h for h in (low - 1, low) if h >= 1]
    return min(candidates, key=lambda h: abs(_parameters(model, cell, h) - target))


def _parameters(model: ModelConfig, cell: str, hidden_size: int) -> int:
    cfg = model.model_copy(update={"cell": cell, "hidden_size": hidden_size})
    return count_parameters(build_model(cfg, vocab_size=2, num_labels=2))


def compare(
    config: Config,
    cells: Sequence[str] = CELLS,
    seeds: int = 1,
    out_dir: str | Path | None = None,
    match_params: bool = False,
    callback: CompareCallback | None = None,
) -> Comparison:
    """Train each cell for each seed under ``config`` and measure them on the same held-out split.

    Args:
        config: the shared settings; ``model.cell``, ``training.seed`` and ``output`` are set here.
        cells: which of rnn, lstm, gru to train, in this order.
        seeds: runs per cell, with seeds ``training.seed``, ``training.seed + 1``, ...
        out_dir: where run directories and the report go, a new or empty folder; default
            ``<output.dir>/compare-<date>-<time>``.
        match_params: give each cell the hidden size whose parameter count is closest to the
            LSTM's at ``model.hidden_size``, instead of the same hidden size.
        callback: receives progress.
    """
    if seeds < 1:
        raise ConfigError([f"--seeds must be at least 1, not {seeds}"])
    last = config.training.seed + seeds - 1
    if last > MAX_SEED:  # checked now, not after the first runs have trained
        raise ConfigError([f"--seeds {seeds} from training.seed={config.training.seed} reaches "
                           f"{last}, over the largest seed {MAX_SEED}; start lower"])  # fmt: skip
    cb = callback or CompareCallback()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(out_dir) if out_dir is not None else Path(config.output.dir) / f"compare-{stamp}"
    if os.path.lexists(root) and (not root.is_dir() or root.is_symlink() or any(root.iterdir())):
        raise DataError(  # its report and charts would replace files of the same names there
            f"--out {root} is not a new or empty folder; name one for the runs and the report"
        )
    split = "test" if config.data.test_split is not None else "validation"
    result = Comparison(
        root, split, config.data.source, config.model_dump(mode="json", by_alias=True)
    )
    plan = [(cell, config.training.seed + k) for k in range(seeds) for cell in cells]
    device = resolve_device(config.training.device)
    for cell in cells:  # a cell train would refuse, refused before any cell trains
        check_precision(_run_config(config, cell, config.training.seed, None, root), device, cb)
    made_root = not os.path.lexists(root)
    try:
        for index, (cell, seed) in enumerate(plan, start=1):
            hidden = matched_hidden_size(config.model, cell) if match_params else None
            run_config = _run_config(config, cell, seed, hidden, root)
            cb.on_run_start(index, len(plan), cell, seed, run_config.model.hidden_size)
            trained = train(run_config, cb)
            result.runs.append(measure(run_config, trained.run_dir, trained.metrics))
    except TrainingInterrupted as exc:  # its hint would finish one run, not the comparison
        raise TrainingInterrupted(
            f"{str(exc).split(';')[0]} in run {index} of {len(plan)} ({cell}, seed {seed}); "
            f"compare does not resume: run it again with another --out (or remove {root})"
        ) from None
    except BaseException:
        if made_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # bad data must not leave an empty folder behind
        raise
    return result


def _run_config(config: Config, cell: str, seed: int, hidden: int | None, root: Path) -> Config:
    update = config.model_dump(by_alias=True)  # pretraining.from, as validation reads it
    update["model"]["cell"] = cell
    if hidden is not None:
        update["model"]["hidden_size"] = hidden
    update["training"]["seed"] = seed
    update["diagnostics"]["gradient_flow"] = True
    update["output"] = {"dir": str(root), "name": f"{cell}-seed{seed}"}
    return Config.model_validate(update)


def measure(config: Config, run_dir: Path, metrics: dict[str, Any]) -> RunOutcome:
    """Accuracy overall, by review length and (long-range task) by distance, for one run."""
    predictor = Predictor.from_dir(run_dir)
    splits = load_splits(config.data, config.training.seed)
    reviews = splits.test if splits.test is not None else splits.validation
    guess = predictor.predict_proba(reviews.texts).argmax(axis=1)
    correct = (guess == np.asarray(reviews.labels)).astype(float)
    lengths = predictor.run.pipeline.lengths(reviews.texts)  # bucket by the full length
    by_length = {
        label: _bucket([c for c, n in zip(correct, lengths, strict=True) if _within(n, lo, hi)])
        for label, lo, hi in LENGTH_BUCKETS
    }
    split_metrics = metrics["test"] if splits.test is not None else metrics["validation"]
    return RunOutcome(
        cell=config.model.cell,
        seed=config.training.seed,
        run_dir=str(run_dir),
        hidden_size=config.model.hidden_size,
        parameters=int(metrics["parameters"]),
        accuracy=float(split_metrics["accuracy"]),
        macro_f1=float(split_metrics["macro_f1"]),
        train_seconds=float(metrics["train_seconds"]),
        tokens_per_second=float(metrics["real_tokens_per_second"]),
        by_length=by_length,
        by_distance=_by_distance(config, splits.test is not None, correct.tolist()),
        history=metrics["history"],
        gradient_flow=metrics.get("gradient_flow", {}),
    )


def _by_distance(
    config: Config, on_test: bool, correct: list[float]
) -> dict[str, dict[str, float | int | None]] | None:
    """Accuracy by verdict distance, when the data is the generated long-range task."""
    from rnn_sentiment.data import longrange

    split = config.data.test_split if on_test else config.data.validation_split
    if config.data.source != longrange.SOURCE or split is None:
        return None  # a validation split carved from train no longer lines up with the generator
    reviews = longrange.generate(config.data.long_range, split)
    return {
        str(d): _bucket([c for c, r in zip(correct, reviews, strict=True) if r.distance == d])
        for d in sorted(set(config.data.long_range.distances))
    }


def _within(n: int, low: int, high: int | None) -> bool:
    return n >= low and (high is None or n <= high)


def _bucket(correct: list[float]) -> dict[str, float | int | None]:
    return {"accuracy": float(np.mean(correct)) if correct else None, "n": len(correct)}


def summarize(runs: list[RunOutcome]) -> dict[str, Any]:
    """Means over the seeds of one cell; accuracy also with its standard deviation."""
    accuracy = [r.accuracy for r in runs]
    return {
        "cell": runs[0].cell,
        "seeds": len(runs),
        "hidden_size": runs[0].hidden_size,
        "parameters": runs[0].parameters,
        "accuracy_mean": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy, ddof=1)) if len(runs) > 1 else 0.0,
        "macro_f1": float(np.mean([r.macro_f1 for r in runs])),
        "train_seconds": float(np.mean([r.train_seconds for r in runs])),
        "tokens_per_second": float(np.mean([r.tokens_per_second for r in runs])),
        "by_length": _mean_buckets([r.by_length for r in runs]),
        "by_distance": (
            _mean_buckets([cast(dict[str, Any], r.by_distance) for r in runs])
            if runs[0].by_distance is not None
            else None
        ),
        "gradient_flow": {
            when: _mean_curves([r.gradient_flow[when] for r in runs])
            for when in ("init", "trained")
        },
    }


def _mean_buckets(tables: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for key in tables[0]:
        values = [t[key]["accuracy"] for t in tables if t[key]["accuracy"] is not None]
        merged[key] = {
            "accuracy": float(np.mean(values)) if values else None,
            "n": int(tables[0][key]["n"]),
        }
    return merged


def _mean_curves(curves: list[list[float]]) -> list[float]:
    shortest = min(len(c) for c in curves)
    return [float(v) for v in np.mean([c[:shortest] for c in curves], axis=0)]
