"""Everything the user sees: progress, tables, machine output and errors (the only rich import).

Human chatter goes to stderr; results go to stdout, so ``rnn-sentiment predict ... | jq`` works.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnn_sentiment.callbacks import CompareCallback, ScoringCallback, TrainCallback

if TYPE_CHECKING:  # imported where a progress bar is drawn: predict starts without it
    from rich.progress import Progress

# No emoji codes: a review or label ":thumbs_up:" is printed as typed.
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)

# What a terminal would act on instead of print: C0 and C1 control characters (ESC starts ANSI and
# OSC sequences that recolour, retitle or hide text) and DEL; lone surrogates cannot be encoded.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Unicode's format characters that reorder or hide text: bidi embeddings, overrides and isolates,
# zero-width characters, the byte-order mark.
_FORMAT = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def shown(text: object, layout: bool = False) -> str:
    """``text`` as rich markup that prints literally, on one line unless ``layout``.

    Markup is escaped (a label ``[pos]`` stays visible, ``[/]`` cannot end a style) and control
    characters become visible ``\\x1b`` escapes; ``layout`` keeps tabs and newlines, for a review
    in a table cell. Machine output (json, jsonl, csv) never goes through this: it stays exact.
    """
    control = _CONTROL_BUT_LAYOUT if layout else _CONTROL
    visible = control.sub(lambda m: f"\\x{ord(m[0]):02x}", str(text))
    # Bidi overrides and other invisible format characters (U+202E can reverse what follows).
    visible = _FORMAT.sub(lambda m: f"\\u{ord(m[0]):04x}", visible)
    return escape(_SURROGATE.sub("\ufffd", visible))


def error(message: str) -> None:
    """One red line on stderr."""
    err.print(f"[bold red]error:[/] {shown(message)}")


def info(message: str) -> None:
    """One dim status line on stderr."""
    err.print(f"[dim]{shown(message)}[/]")


class TrainProgress(TrainCallback):
    """A live progress bar on a terminal; plain periodic log lines otherwise (CI, pipes, files)."""

    def __init__(self, log_every: int = 50, quiet: bool = False) -> None:
        self.live = err.is_terminal and not quiet
        self.quiet = quiet
        self.log_every = log_every
        self.progress: Progress | None = None
        self.task: Any = None
        self.epoch_label = ""
        self.steps = 0
        self.loss = self.accuracy = 0.0
        self.first_step = True
        self.started = time.perf_counter()

    def on_message(self, text: str) -> None:
        if not self.quiet:
            info(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch_label = f"epoch {epoch}/{epochs}"
        self.steps = steps
        self.loss = self.accuracy = 0.0
        self.first_step = True
        self.started = time.perf_counter()
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.epoch_label, total=steps, stats="")

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        # Exponential moving averages: a readable trend instead of per-batch noise. They start
        # at the first step shown, which after --resume is not step 1 (from 0 they would climb
        # for dozens of steps and look like a regression).
        weight = 1.0 if self.first_step else 0.05
        self.first_step = False
        self.loss += weight * (loss - self.loss)
        self.accuracy += weight * (accuracy - self.accuracy)
        stats = f"loss {self.loss:.3f} acc {self.accuracy:.3f} |g| {grad_norm:.2f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, stats=stats)
        elif not self.quiet and (step % self.log_every == 0 or step == self.steps):
            rate = step / max(time.perf_counter() - self.started, 1e-9)
            info(f"{self.epoch_label} step {step}/{self.steps} {stats} ({rate:.1f} steps/s)")

    def on_warning(self, text: str) -> None:
        err.print(f"[bold yellow]warning:[/] {shown(text)}")  # shown even with --quiet

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if not self.quiet:
            mark = " [green]*best[/]" if record["best"] else ""
            err.print(
                f"{self.epoch_label}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_accuracy']:.4f} | val loss {record['val_loss']:.4f} "
                f"acc {record['val_accuracy']:.4f} f1 {record['val_macro_f1']:.4f} | "
                f"|g| mean {record['grad_norm_mean']:.2f} max {record['grad_norm_max']:.2f} "
                f"clipped {record['clipped_fraction']:.0%} | {record['seconds']:.1f}s{mark}"
            )


class PretrainProgress(TrainProgress):
    """Language-model pretraining: the loss and the held-out perplexity of each direction."""

    def on_step(self, step: int, loss: float, accuracy: float, grad_norm: float) -> None:
        weight = 1.0 if self.first_step else 0.05
        self.first_step = False
        self.loss += weight * (loss - self.loss)
        stats = f"loss {self.loss:.3f} |g| {grad_norm:.2f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, stats=stats)
        elif not self.quiet and (step % self.log_every == 0 or step == self.steps):
            rate = step / max(time.perf_counter() - self.started, 1e-9)
            info(f"{self.epoch_label} step {step}/{self.steps} {stats} ({rate:.1f} steps/s)")

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if not self.quiet:
            perplexity = ", ".join(
                f"{key.removeprefix('perplexity_')} {value:.1f}"
                for key, value in record.items()
                if key.startswith("perplexity_")
            )
            err.print(
                f"{self.epoch_label}: train loss {record['train_loss']:.4f} | held-out "
                f"perplexity {perplexity} | {record['seconds']:.1f}s"
            )


def pretrain_summary(encoder_dir: str, metrics: dict[str, Any]) -> None:
    """The final table of a pretraining, on stdout."""
    table = Table(title=f"pretrained {shown(encoder_dir)} ({metrics['status']})", show_header=True)
    table.add_column("direction")
    table.add_column("held-out perplexity", justify="right")
    for direction, value in metrics["perplexity"].items():
        table.add_row(direction, f"{value:.1f}")
    out.print(table)
    data = metrics["data"]
    out.print(
        f"{metrics['real_tokens_trained']:,} tokens trained on ({data['tokens']:,} per epoch) in "
        f"{metrics['pretraining_seconds'] / 60:.1f} min; start a classifier from it with "
        f"pretraining.from={shown(encoder_dir)}"
    )


def train_summary(run_dir: str, metrics: dict[str, Any]) -> None:
    """The final table of a training run, on stdout."""
    table = Table(title=f"trained {shown(run_dir)}", show_header=True)
    table.add_column("split")
    for column in ("accuracy", "macro-F1", "loss", "reviews"):
        table.add_column(column, justify="right")
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]
            table.add_row(
                split,
                f"{m['accuracy']:.4f}",
                f"{m['macro_f1']:.4f}",
                f"{m['loss']:.4f}",
                str(m["n"]),
            )
    out.print(table)
    out.print(
        f"best epoch {metrics['best_epoch']} of {len(metrics['history'])}, "
        f"{metrics['parameters']:,} parameters, {metrics['train_seconds']:.1f}s training, "
        f"{metrics['real_tokens_per_second']:,.0f} tokens/s"
    )
    # Training never changes which model `predict` uses by default: say how to use this one.
    out.print(f'use it: rnn-sentiment predict --model {shown(run_dir)} "A review"', soft_wrap=True)


def metrics_table(metrics: dict[str, Any]) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix, on stdout."""
    out.print(
        f"[bold]{shown(metrics['model'])}[/] on {shown(metrics['source'])} "
        f"({metrics['split'] + ', ' if metrics['split'] else ''}{metrics['n']} reviews)"
    )
    if metrics.get("unscored"):
        out.print(
            f"[yellow]{metrics['unscored']:,} rows left out[/] (unscored): labelled with no "
            "text, or too long to read"
        )
    out.print(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}")
    if "calibration" in metrics:
        c = metrics["calibration"]
        out.print(
            f"calibration: ECE {c['ece']:.4f} ({c['ece_bins']} bins)   Brier {c['brier']:.4f}   "
            f"log loss {c['log_loss']:.4f}   temperature {c.get('temperature', 1.0):.3f}"
        )
    if "uncalibrated" in metrics:
        u = metrics["uncalibrated"]
        out.print(
            f"  without it:  ECE {u['ece']:.4f}   Brier {u['brier']:.4f}   "
            f"log loss {u['log_loss']:.4f}"
        )
    per_class = Table(show_header=True)
    for column in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name, m in metrics["per_class"].items():
        per_class.add_row(
            shown(name),
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['f1']:.4f}",
            str(m["support"]),
        )
    out.print(per_class)
    confusion = Table(title="confusion (rows: true, columns: predicted)", show_header=True)
    confusion.add_column("")
    for name in metrics["labels"]:
        confusion.add_column(shown(name), justify="right")
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"], strict=True):
        confusion.add_row(shown(name), *(str(v) for v in row))
    out.print(confusion)


def check_out(result: dict[str, Any]) -> None:
    """Behavioural test results (``SuiteResult.to_dict()``) on stdout: one table of every test by
    capability with its failure rate, then the most confidently wrong examples of each failing
    test."""
    tests = result["tests"]
    out.print(
        f"[bold]{shown(result['suite'])}[/]: {len(tests)} tests, {result['texts']:,} texts "
        f"scored in {result['seconds']:.1f}s"
    )
    table = Table(show_header=True)
    for column in ("capability", "test", "type", "cases", "fail rate"):
        table.add_column(column, justify="right" if column in ("cases", "fail rate") else "left")
    capabilities = [t["capability"] for t in tests]
    for i, test in enumerate(tests):
        first = i == 0 or capabilities[i - 1] != test["capability"]
        last = i == len(tests) - 1 or capabilities[i + 1] != test["capability"]
        table.add_row(
            shown(test["capability"]) if first else "",
            shown(test["name"]),
            test["type"],
            f"{test['cases']:,}",
            _rate(test["failure_rate"]),
            end_section=last,
        )
    out.print(table)
    failing = [t for t in tests if t["examples"]]
    if failing:
        out.print("failing examples, the most confidently wrong first:")
    for test in failing:
        out.print(f"[bold]{shown(test['name'])}[/] ({test['type']}, {test['failure_rate']:.1%})")
        for example in test["examples"]:
            out.print(f"  {_check_example(test['type'], example)}", soft_wrap=True)
    if any(t["type"] == "dir" for t in tests):
        out.print(f"[dim]dir: p(positive) may move {result['tolerance']:g} the wrong way[/]")


def _rate(rate: float) -> str:
    # The colours only guide the eye; --fail-above is the threshold that counts.
    colour = "green" if rate == 0 else "yellow" if rate <= 0.1 else "red"
    return f"[{colour}]{rate:.1%}[/]"


def _check_example(kind: str, e: dict[str, Any]) -> str:
    text = f'"{shown(e["text"])}"'
    got = f"[{_label_colour(e['predicted'])}]{shown(e['predicted'])}[/]"
    if kind == "mft":
        return f"{text}  expected {shown(e['expected'])}, got {got} ({e['p']:.3f})"
    if kind == "inv":
        return (
            f'{text}  {got} ({e["p"]:.3f}); unchanged "{shown(e["base"])}": '
            f"{shown(e['expected'])} ({e['base_p']:.3f})"
        )
    return f"{text}  {e['base_p']:.3f} -> {e['p']:.3f}, expected {shown(e['expected'])}"


def calibration_line(run_dir: str, result: dict[str, Any]) -> None:
    """What ``calibrate`` fitted, on stdout."""
    before, after = result["before"], result["after"]
    out.print(
        f"{shown(run_dir)}: temperature {result['temperature']:.3f} fitted on "
        f"{shown(result['fitted_on'])} ({result['reviews']:,} reviews): ECE "
        f"{before['ece']:.4f} -> {after['ece']:.4f}, log loss {before['log_loss']:.4f} -> "
        f"{after['log_loss']:.4f}, Brier {before['brier']:.4f} -> {after['brier']:.4f}",
        soft_wrap=True,
    )
    if "warning" in result:
        err.print(f"[bold yellow]warning:[/] {shown(result['warning'])}")


def json_out(value: Any) -> None:
    """Pretty JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def prediction_rows(predictions: Iterable[Any], label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Flat rows: text, label, score and one ``p_<label>`` column per class."""
    return [
        {
            "text": p.text,
            "label": p.label,
            "score": round(p.score, 6),
            **{f"p_{name}": round(p.probabilities[name], 6) for name in label_names},
        }
        for p in predictions
    ]


def predictions_out(rows: list[dict[str, Any]], fmt: str) -> None:
    """Render prediction rows as a table (human) or json / jsonl / csv (machines) on stdout."""
    if fmt == "json":
        json_out(rows)
    elif fmt == "jsonl":
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["text"])
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table(show_header=True)
        table.add_column("review", overflow="fold", ratio=3)
        table.add_column("label")
        for column in list(rows[0])[2:] if rows else []:
            table.add_column(shown(column), justify="right")
        for row in rows:
            colour = "green" if row["label"] == "positive" else "red"
            values = [f"{v:.4f}" for v in list(row.values())[2:]]
            table.add_row(shown(row["text"], layout=True), f"[{colour}]{shown(row['label'])}[/]",
                          *values)  # fmt: skip
        out.print(table)


# --- compare and explain ---------------------------------------------------------------------

_SPARKS = "▁▂▃▄▅▆▇█"
_CELL_COLOURS = {"rnn": "red", "lstm": "blue", "gru": "green"}


def sparkline(values: Sequence[float | None], low: float, high: float, log: bool = False) -> str:
    """One character per value between ``low`` and ``high`` (on a log scale with ``log``)."""

    def level(v: float) -> float:
        return math.log10(max(v, 1e-30)) if log else v

    bottom, top = level(low), level(high)
    chars = []
    for v in values:
        if v is None or (log and v <= 0):
            chars.append(" ")
            continue
        share = (level(v) - bottom) / max(top - bottom, 1e-12)
        chars.append(_SPARKS[min(len(_SPARKS) - 1, max(0, int(share * len(_SPARKS))))])
    return "".join(chars)


def _sample(curve: Sequence[float], width: int) -> list[float]:
    """At most ``width`` points of ``curve``, evenly spaced in distance."""
    if len(curve) <= width:
        return list(curve)
    return [curve[round(i * (len(curve) - 1) / (width - 1))] for i in range(width)]


class CompareProgress(TrainProgress, CompareCallback):
    """Training progress of each run, with a header line as each run starts."""

    def on_run_start(self, index: int, total: int, cell: str, seed: int, hidden_size: int) -> None:
        if not self.quiet:
            colour = _CELL_COLOURS.get(cell, "white")
            err.print(
                f"[bold {colour}]run {index}/{total}: {cell.upper()}[/] "
                f"seed {seed}, hidden size {hidden_size}"
            )


def compare_out(summary: list[dict[str, Any]], files: dict[str, Any]) -> None:
    """The comparison tables (the cells, then accuracy by bucket: each fits 80 columns), compact
    accuracy and gradient-flow charts, and the report files."""
    distance = summary[0]["by_distance"] is not None
    key = "by_distance" if distance else "by_length"
    title = " vs ".join(row["cell"].upper() for row in summary)
    table = Table(title=title, show_header=True)
    for column in ("cell", "hidden", "params", "accuracy", "macro-F1", "train", "tokens/s"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    buckets = list(summary[0][key])
    by_bucket = Table(title=f"accuracy by {'distance (tokens)' if distance else 'length'}")
    by_bucket.add_column("cell")
    for bucket in buckets:
        by_bucket.add_column(f"d={bucket}" if distance else bucket, justify="right")
    for row in summary:
        accuracy = f"{row['accuracy_mean']:.3f}"
        if row["seeds"] > 1:
            accuracy += f" ± {row['accuracy_std']:.3f}"
        cell = f"[{_CELL_COLOURS.get(row['cell'], 'white')}]{row['cell'].upper()}[/]"
        table.add_row(
            cell,
            str(row["hidden_size"]),
            f"{row['parameters']:,}",
            accuracy,
            f"{row['macro_f1']:.3f}",
            f"{row['train_seconds']:.0f}s",
            f"{row['tokens_per_second']:,.0f}",
        )
        values = [row[key][b]["accuracy"] for b in buckets]
        by_bucket.add_row(cell, *("-" if v is None else f"{v:.1%}" for v in values))
    out.print(table)
    out.print(by_bucket)
    out.print(f"accuracy by {'distance' if distance else 'length'} (0.5 to 1.0):")
    for row in summary:
        values = [row[key][b]["accuracy"] for b in buckets]
        out.print(f"  {row['cell'].upper():5} {sparkline(values, 0.5, 1.0)}")
    curves = [row["gradient_flow"][w] for row in summary for w in ("init", "trained")]
    positive = [v for c in curves for v in c if v > 0]
    if positive:
        low, high = min(positive), max(positive)
        longest = max(len(c) for c in curves)
        out.print(
            f"gradient flow ||d loss/d h_t||, log scale {low:.1e} to {high:.1e}, "
            f"distance 0 to {longest - 1} from the end:"
        )
        for row in summary:
            for when in ("init", "trained"):
                curve = row["gradient_flow"][when]
                line = sparkline(_sample(curve, 60), low, high, log=True)
                name = row["cell"].upper()
                out.print(f"  {name:5} {when:8} {line}  at the far end {curve[-1]:.1e}")
    for name, path in files.items():
        err.print(f"[dim]{name}: {shown(path)}[/]")


def explanations_out(explanations: Sequence[Any], fmt: str) -> None:
    """Per-word running sentiment and attribution: coloured tables, or json / jsonl."""
    if fmt == "json":
        json_out([e.to_dict() for e in explanations])
        return
    if fmt == "jsonl":
        sys.stdout.write("".join(json.dumps(e.to_dict()) + "\n" for e in explanations))
        return
    for e in explanations:
        words = " ".join(_attributed(w, a) for w, a in zip(e.words, e.attributions, strict=True))
        colour = _label_colour(e.label)
        label = shown(e.label)
        words = words or "[dim](no words: read as one unknown word)[/]"
        out.print(f"{words}  ->  [bold {colour}]{label}[/] ({e.probabilities[e.label]:.3f})")
        if e.words_cut:
            out.print(
                f"[yellow]{e.words_cut:,} more words were not read[/]: the model reads a review "
                "up to its max_length (tokenizer.max_length), as predict does"
            )
        if not e.words:
            continue
        table = Table(show_header=True, caption=f"attribution: {shown(e.method)}")
        table.add_column("word")
        table.add_column("running sentiment")
        table.add_column(f"attribution to {label}", justify="right")
        for word, running, label, score in zip(
            e.words, e.running, e.running_labels, e.attributions, strict=True
        ):
            bar = "█" * round(abs(score) * 20)
            table.add_row(
                shown(word),
                f"[{_label_colour(label)}]{shown(label)} {running[label]:.3f}[/]",
                f"[{'green' if score >= 0 else 'red'}]{score:+.3f} {bar}[/]",
            )
        out.print(table)


def _label_colour(label: str) -> str:
    return {"positive": "green", "negative": "red"}.get(label, "cyan")


def _attributed(word: str, score: float) -> str:
    colour = "green" if score >= 0 else "red"
    style = f"bold {colour}" if abs(score) >= 0.2 else colour if abs(score) >= 0.05 else "dim"
    return f"[{style}]{shown(word)}[/]"


class ScoringProgress(ScoringCallback):
    """Rows done, rows/s and time left: a live bar on a terminal, a plain line every
    ``every_seconds`` otherwise."""

    def __init__(self, quiet: bool = False, every_seconds: float = 10.0) -> None:
        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self.every = every_seconds
        self.progress: Progress | None = None
        self.task: Any = None
        self.total: int | None = None
        self.started = self.last = time.perf_counter()

    def on_message(self, text: str) -> None:
        if not self.quiet:
            info(text)

    def on_start(self, total_rows: int | None) -> None:
        self.total = total_rows
        self.started = self.last = time.perf_counter()
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("scoring"),
                BarColumn(),
                TextColumn("{task.fields[rows]} rows"),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("scoring", total=1.0, rows="0", rate="-")

    def on_chunk(self, rows_done: int, fraction: float | None) -> None:
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        if self.total:
            fraction = rows_done / self.total
        rate = rows_done / elapsed
        if self.progress is not None:
            self.progress.update(
                self.task, completed=fraction or 0.0, rows=f"{rows_done:,}", rate=f"{rate:,.0f}"
            )
        elif not self.quiet and now - self.last >= self.every:
            self.last = now
            left = f", {elapsed * (1 - fraction) / fraction:.0f}s left" if fraction else ""
            done = f" ({fraction:.0%})" if fraction else ""
            info(f"scored {rows_done:,} rows{done}, {rate:,.0f} rows/s{left}")

    def close(self) -> None:
        """Remove the live bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def scoring_progress(quiet: bool = False) -> Iterator[ScoringProgress]:
    """A :class:`ScoringProgress` for the scoring in the block, its live bar removed after."""
    progress = ScoringProgress(quiet)
    try:
        yield progress
    finally:
        progress.close()


def scoring_summary(summary: dict[str, Any]) -> None:
    """One line on stderr: rows read, scored and flagged (and why), rate, output."""
    reasons = ", ".join(f"{n} {why}" for why, n in summary["problems"].items())
    resumed = (
        f" ({summary['rows_resumed']:,} from the interrupted run)"
        if summary["rows_resumed"]
        else ""
    )
    err.print(
        f"read {summary['rows_read']:,} rows{resumed}, scored {summary['rows_scored']:,}, "
        f"flagged {summary['rows_flagged']:,}{f' ({shown(reasons)})' if reasons else ''} "
        f"in {summary['seconds']:.1f}s ({summary['rows_per_second']:,.0f} rows/s) "
        f"-> {shown(summary['output'])}"
    )
