"""The report of a comparison: ``report.json`` (every number), PNG plots and ``report.md``.

matplotlib is imported here only, inside the plotting functions, with the headless Agg backend.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from rnn_sentiment.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from rnn_sentiment.compare import Comparison
from rnn_sentiment.errors import CheckpointError

COLOURS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c"}
REPORT_FILE = "report.md"
JSON_FILE = "report.json"
FIGURES = {
    "curves": "learning_curves.png",
    "accuracy": "accuracy_by_length.png",
    "flow": "gradient_flow.png",
}


def write_report(comparison: Comparison) -> dict[str, Path]:
    """Write the JSON, the plots and the markdown report into the comparison's folder."""
    root = comparison.out_dir
    paths = {name: root / file for name, file in FIGURES.items()}
    summary = comparison.summary()
    if any(row["by_distance"] for row in summary):
        paths["accuracy"] = root / "accuracy_by_distance.png"
    try:
        atomic_write_json(root / JSON_FILE, comparison.to_dict())
        plot_learning_curves(comparison, paths["curves"])
        plot_accuracy(summary, paths["accuracy"])
        plot_gradient_flow(summary, paths["flow"])
        atomic_write_text(root / REPORT_FILE, markdown(comparison, paths))
    except OSError as exc:
        raise CheckpointError(f"cannot write the report in {root}: {exc.strerror}") from None
    return {"report": root / REPORT_FILE, "json": root / JSON_FILE, **paths}


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The comparison table as GitHub markdown."""
    distance = summary[0]["by_distance"] is not None
    buckets = summary[0]["by_distance" if distance else "by_length"]
    head = ["cell", "hidden", "parameters", "accuracy", "macro-F1", "train time", "tokens/s"]
    head += [f"d={key}" if distance else key for key in buckets]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in summary:
        table = row["by_distance" if distance else "by_length"]
        cells = [
            row["cell"].upper(),
            str(row["hidden_size"]),
            f"{row['parameters']:,}",
            format_accuracy(row),
            f"{row['macro_f1']:.3f}",
            f"{row['train_seconds']:.0f} s",
            f"{row['tokens_per_second']:,.0f}",
        ]
        cells += [_pct(table[key]["accuracy"]) for key in buckets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_accuracy(row: dict[str, Any]) -> str:
    """``0.912 ± 0.004`` (the ± only with more than one seed)."""
    text = f"{row['accuracy_mean']:.3f}"
    return text + (f" ± {row['accuracy_std']:.3f}" if row["seeds"] > 1 else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(comparison: Comparison, paths: dict[str, Path]) -> str:
    """``report.md``: what was compared, the table and the plots."""
    summary = comparison.summary()
    seeds = summary[0]["seeds"]
    distance = summary[0]["by_distance"] is not None
    by = "distance of the verdict from the end (tokens)" if distance else "review length (tokens)"
    return "\n".join(
        [
            f"# {' vs '.join(cell.upper() for cell in comparison.cells())} on {comparison.source}",
            "",
            f"Accuracy and macro-F1 on the {comparison.split} split, mean over {seeds} seed(s); "
            f"the last columns are accuracy by {by}. Run directories are under "
            f"`{comparison.out_dir}`; every number is in `{JSON_FILE}`.",
            "",
            markdown_table(summary),
            "",
            f"![learning curves]({paths['curves'].name})",
            "",
            f"![accuracy by {'distance' if distance else 'length'}]({paths['accuracy'].name})",
            "",
            "Gradient flow: mean ||d loss / d h_t|| over the longest validation reviews, by "
            "distance from the end of the review, at initialisation (dashed) and after training.",
            "",
            f"![gradient flow]({paths['flow'].name})",
            "",
        ]
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(comparison: Comparison, path: Path) -> None:
    """Training loss, validation accuracy and gradient norm (before clipping) per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for run in comparison.runs:
        epochs = [r["epoch"] for r in run.history]
        style = {"color": COLOURS.get(run.cell), "alpha": 0.9, "marker": "o", "markersize": 3}
        label = f"{run.cell.upper()} seed {run.seed}"
        axes[0].plot(epochs, [r["train_loss"] for r in run.history], label=label, **style)
        axes[1].plot(epochs, [r["val_accuracy"] for r in run.history], **style)
        axes[2].plot(epochs, [r["grad_norm_mean"] for r in run.history], **style)
    titles = ("training loss", "validation accuracy", "mean gradient norm before clipping")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    _save(fig, path)


def plot_accuracy(summary: list[dict[str, Any]], path: Path) -> None:
    """Accuracy by verdict distance (long-range task) or by review length bucket, per cell."""
    plt = _pyplot()
    distance = summary[0]["by_distance"] is not None
    key = "by_distance" if distance else "by_length"
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = list(summary[0][key])
    for row in summary:
        values = [row[key][k]["accuracy"] for k in labels]
        ys = [math.nan if v is None else v for v in values]
        ax.plot(labels, ys, marker="o", color=COLOURS.get(row["cell"]), label=row["cell"].upper())
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (two classes)")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("tokens after the verdict" if distance else "review length (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_title(
        "accuracy by " + ("distance of the verdict from the end" if distance else "length")
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_gradient_flow(summary: list[dict[str, Any]], path: Path) -> None:
    """||d loss / d h_t|| by distance from the end, log scale; dashed at init, solid trained."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for row in summary:
        colour = COLOURS.get(row["cell"])
        for when, style in (("init", "--"), ("trained", "-")):
            curve = row["gradient_flow"][when]
            ys = [v if v > 0 else math.nan for v in curve]
            label = f"{row['cell'].upper()} {'at init' if when == 'init' else 'trained'}"
            ax.plot(range(len(ys)), ys, style, color=colour, label=label, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("distance from the end of the review (tokens)")
    ax.set_ylabel("||d loss / d h_t||")
    ax.set_title("gradient flow through time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_reliability(metrics: dict[str, Any], path: Path) -> None:
    """A reliability diagram of ``evaluate``'s metrics: accuracy against confidence per bin
    (the diagonal is perfect calibration), with each bin's count."""
    plt = _pyplot()
    calibration = metrics["calibration"]
    bins = calibration["reliability"]
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5.2, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = 1.0 / calibration["ece_bins"]
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, color="#4c72b0",
           alpha=0.8, label="accuracy")  # fmt: skip
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#dd8452",
            markersize=4, label="mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(
        f"ECE {calibration['ece']:.3f} ({calibration['ece_bins']} bins), "
        f"Brier {calibration['brier']:.3f}, {metrics['n']:,} reviews",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    counts.bar(centres, [b["count"] for b in bins], width=width * 0.9, color="grey")
    counts.set_yscale("log")
    counts.set_xlabel("confidence of the predicted label")
    counts.set_ylabel("reviews")
    counts.grid(alpha=0.3)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Write the figure in the format ``path``'s suffix names (PNG otherwise), atomically: a
    link at ``path`` is replaced, never written through, and a failed write leaves no file."""
    fig.tight_layout()
    image = io.BytesIO()
    kind = path.suffix.lower().lstrip(".")
    fig.savefig(image, dpi=90, format=kind if kind in ("png", "svg", "pdf") else "png")
    _pyplot().close(fig)
    atomic_write_bytes(path, image.getvalue())
