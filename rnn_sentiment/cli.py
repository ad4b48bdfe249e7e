"""The ``rnn-sentiment`` command line: parse, call the library, render.

Heavy modules (torch, datasets, rich) are imported inside the commands, so ``--help`` is instant.
Exit codes: 0 success, 1 runtime failure, 2 bad usage or input, 130 interrupted, 141 stdout's
reader went away (`| head`).
"""

from __future__ import annotations

import errno
import gc
import importlib
import os
import select
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from rnn_sentiment import __version__

if TYPE_CHECKING:
    from rnn_sentiment.errors import RnnSentimentError

# Typer vendors click (typer._click) in recent versions and uses click itself in older ones: the
# module that defines BadParameter is the one whose exceptions the parser raises.
_click_errors: Any = importlib.import_module(typer.BadParameter.__module__)


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value, missing argument) as the one ``error:`` line
    every other error is, with a hint, instead of Typer's multi-line panel; exit code 2."""

    def main(self, args: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if not kwargs.pop("standalone_mode", True):
            return super().main(args, standalone_mode=False, **kwargs)
        argv = list(args if args is not None else sys.argv[1:])
        try:
            code = super().main(args, standalone_mode=False, **kwargs)
        except _click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.format_message(), err=True)  # the help, as for --help
            sys.exit(0)
        except _click_errors.ClickException as exc:
            from rnn_sentiment import console

            console.error(_usage_message(exc, argv))
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: Any, argv: list[str]) -> str:
    """Click's message on one line, lower-cased, with a hint that can be pasted."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "rnn-sentiment"
    if command == "rnn-sentiment" and argv and argv[0] in app_commands():
        command = f"rnn-sentiment {argv[0]}"
    if isinstance(exc, _click_errors.NoSuchOption):
        text = f"no such option {exc.option_name}"
        settings = command.split()[-1] in {"train", "compare"}
        hint = _setting_hint(exc.option_name, argv) if settings else ""
        close = [name for name in exc.possibilities or [] if name != "--help"]
        hint = hint or _choice_hint(exc.option_name, ctx)
        hint = hint or (f"did you mean {close[0]}?" if close else "")
    else:
        text = " ".join(str(exc.format_message()).replace("Value error, ", "").split())
        text = text[:1].lower() + text[1:].rstrip(".")
        hint = ""
    if text.endswith("?"):  # click's own suggestion: "... Did you mean 'predict'?"
        return text
    return f"{text}; {hint or f'see {command} --help'}"


def _choice_hint(option: str, ctx: Any) -> str:
    """``did you mean --format json?`` for ``--json``: a value of one of the command's choice
    options, typed as an option of its own."""
    value = option.lstrip("-").partition("=")[0]
    for param in getattr(getattr(ctx, "command", None), "params", []):
        # typer 0.29 keeps a parameter's choices in its type_descriptor; click (older typer)
        # in its type
        described = getattr(param, "type_descriptor", None) or getattr(param, "type", None)
        choices = getattr(described, "choices", None) or ()
        names = getattr(param, "opts", None)
        if names and value in [str(getattr(choice, "value", choice)) for choice in choices]:
            return f"did you mean {names[0]} {value}?"
    return ""


def app_commands() -> list[str]:
    """The names of the subcommands, as typed."""
    return [
        info.name or info.callback.__name__ for info in app.registered_commands if info.callback
    ]


def _setting_hint(option: str, argv: list[str]) -> str:
    """``did you mean training.epochs=3?`` for ``--epochs 3``: settings are key=value here."""
    from rnn_sentiment.config import config_keys
    from rnn_sentiment.errors import did_you_mean

    name, _, value = option.lstrip("-").partition("=")
    keys = {key.rsplit(".", 1)[-1]: key for key in config_keys()}
    match = did_you_mean(name.replace("-", "_"), keys, shown="{}")
    if not match:
        return ""
    key = keys[match.removeprefix("did you mean ").rstrip("? ")]
    given = next((arg for arg in argv if arg.startswith(f"{option}=")), None)
    if given is not None:
        value = given.partition("=")[2]
    elif option in argv and argv.index(option) + 1 < len(argv):
        value = argv[argv.index(option) + 1]
    return f"settings are key=value: did you mean {key}={value or 'VALUE'}?"


app = typer.Typer(
    name="rnn-sentiment",
    help="Train, evaluate and use recurrent (RNN, LSTM, GRU) sentiment classifiers.",
    no_args_is_help=True,
    cls=_OneLineErrors,
    rich_markup_mode=None,  # plain help: one option a line at 80 columns, not a boxed grid
    pretty_exceptions_enable=False,
)
_state = {"debug": False}
T = TypeVar("T")


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


class PredictFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rnn-sentiment {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Train, evaluate and use recurrent (RNN, LSTM, GRU) sentiment classifiers."""
    _state["debug"] = debug


def _config_and_overrides(args: list[str] | None) -> tuple[str | None, list[str]]:
    """Split ``[CONFIG] [KEY=VALUE]...``: a first argument without '=' is the YAML file."""
    items = list(args or [])
    path = _named(items.pop(0), "CONFIG") if items and "=" not in items[0] else None
    return path, items


def _named(value: str, hint: str | None = None) -> str:
    """A path typed on the command line. An empty one is a usage error (exit 2): pathlib reads
    "" as ".", so ``--model ""`` (an unset shell variable) would quietly mean this folder."""
    if value == "":
        raise typer.BadParameter(
            "an empty path; give a file or folder (an unset variable?)", param_hint=hint
        )
    return value


def _split_name(value: str) -> str:
    if value == "":
        raise typer.BadParameter("an empty split name; give one (test, validation, ...) or drop it")
    return value


def _path(value: str) -> Path:
    """``_named`` as a Path, the parser of every Path argument and option."""
    return Path(_named(value))


def _run(action: Callable[[], T], stdout: bool = True) -> T:
    """Call ``action``; turn the package's errors into one line on stderr and an exit code.

    ``stdout``: the command writes its result to stdout, so a closed stdout (``>&-``) is refused
    before any work rather than found, or silently lost, at the end.
    """
    from rnn_sentiment.errors import DataError, OutputClosed, RnnSentimentError, cut

    try:
        if stdout and sys.stdout is None:
            raise DataError(
                "stdout is closed; redirect it instead (> FILE, or > /dev/null to discard it)"
            )
        result = action()
        if stdout:
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return result
    except OutputClosed:
        _silence_stdout()
        raise typer.Exit(OutputClosed.exit_code) from None
    except RnnSentimentError as exc:
        if _state["debug"]:
            raise
        return _fail(exc)
    except KeyboardInterrupt:
        from rnn_sentiment import console

        console.error("interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except BaseException as exc:
        # Not only Exception: a Rust panic in the tokenizers library (a regex that runs out of
        # backtracking, say) arrives as pyo3's PanicException, a BaseException.
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            _silence_stdout()
            raise typer.Exit(OutputClosed.exit_code) from None
        if isinstance(exc, OSError) and stdout and _writing_stdout(exc):
            _silence_stdout()  # what is still buffered goes nowhere, not into a second error
            return _fail(DataError(f"cannot write to stdout: {exc.strerror or exc}"))
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a name over 255 bytes
            where = cut(str(exc.filename or ""), 60)
            return _fail(DataError(f"a path is too long for this system: {where!r}; shorten it"))
        if _state["debug"] or isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        from rnn_sentiment import console

        first = (str(exc).strip().splitlines() or [""])[0]  # one line, whatever the message
        console.error(f"internal error: {type(exc).__name__}: {first} (rerun with --debug)")
        raise typer.Exit(1) from None


def _fail(exc: RnnSentimentError) -> NoReturn:
    """Say what went wrong, one line per problem, and exit with the error's code."""
    from rnn_sentiment import console

    for problem in getattr(exc, "problems", None) or [str(exc)]:
        console.error(problem)
    raise typer.Exit(exc.exit_code) from None


def _writing_stdout(exc: OSError) -> bool:
    """Whether ``exc`` (a full disk, an I/O error) came from writing the command's result: raised
    in console (the one module that writes to stdout), rich (which it calls) or _run's flush."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = Path(frames[-1].filename) if frames else Path()
    return (
        where.name in ("console.py", "cli.py")
        and where.parent == Path(__file__).parent
        or ("rich" in where.parts)
    )


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket nobody reads any more (not some other closed pipe)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # not a real file (tests), or no poll()
        return False
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _silence_stdout() -> None:
    # stdout's reader went away (| head): a normal end for a pipe, so no message (see
    # OutputClosed); stdout now leads to /dev/null, so Python's flush at exit cannot fail again.
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file: nothing flushes it at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


NoProgress = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


@app.command()
def train(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="An optional YAML config, then key.sub=value overrides.",
            metavar="CONFIG KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        TableOrJson, typer.Option("--format", help="Summary as a table or as JSON on stdout.")
    ] = TableOrJson.table,
    quiet: NoProgress = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN_DIR",
            help="Continue an interrupted run from its last saved training state.",
            parser=_path,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="With --resume: accept a config that differs from the run's."),
    ] = False,
) -> None:
    """Train a classifier and write a self-contained run directory.

    \b
    Examples:
      rnn-sentiment train
      rnn-sentiment train configs/imdb-lstm.yaml data.source=../shared/data/imdb
      rnn-sentiment train model.cell=gru training.epochs=3
      rnn-sentiment train --resume runs/lstm-20261122-101500
    """
    path, items = _config_and_overrides(args)

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.config import load_config

        # Resuming: overrides apply on top of the run's own saved config, not the defaults.
        base = path or (str(resume / "config.yaml") if resume and items else None)
        config = load_config(base, items) if base or items or not resume else None
        from rnn_sentiment.api import train as train_model  # torch: after the config

        progress = console.TrainProgress(config.training.log_every if config else 50, quiet)
        result = train_model(config, progress, resume=resume, force=force)
        if not result.metrics:  # a rank other than 0 under torchrun: rank 0 reports
            return
        if fmt is TableOrJson.json:
            console.json_out({"run_dir": str(result.run_dir), **result.metrics})
        else:
            console.train_summary(str(result.run_dir), result.metrics)

    _run(action)


@app.command()
def pretrain(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="An optional YAML config, then key.sub=value overrides.",
            metavar="CONFIG KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        TableOrJson, typer.Option("--format", help="Summary as a table or as JSON on stdout.")
    ] = TableOrJson.table,
    quiet: NoProgress = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="ENCODER_DIR",
            help="Continue a stopped pretraining from its last checkpoint.",
            parser=_path,
        ),
    ] = None,
) -> None:
    """Pretrain an encoder (embeddings + recurrent layers) as a language model on the training
    and unlabelled texts, and write an encoder directory that `train` starts from with
    pretraining.from=DIR. With pretraining.from=DIR (or bundled, the shipped one) the language
    model of that encoder goes on learning from these texts instead of starting afresh.

    \b
    Examples:
      rnn-sentiment pretrain configs/imdb-lm.yaml output.name=imdb-encoder
      rnn-sentiment train configs/imdb-lm.yaml pretraining.from=runs/imdb-encoder
      rnn-sentiment pretrain --resume runs/imdb-encoder
      rnn-sentiment pretrain configs/sst2-lm.yaml output.name=sst2-encoder   # continues bundled
    """
    path, items = _config_and_overrides(args)

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.config import load_config

        base = path or (str(resume / "config.yaml") if resume and items else None)
        config = load_config(base, items) if base or items or not resume else None
        from rnn_sentiment.training.lm_pretraining import pretrain as pretrain_encoder

        progress = console.PretrainProgress(config.training.log_every if config else 50, quiet)
        result = pretrain_encoder(config, progress, resume=resume)
        if fmt is TableOrJson.json:
            console.json_out({"encoder_dir": str(result.encoder_dir), **result.metrics})
        else:
            console.pretrain_summary(str(result.encoder_dir), result.metrics)

    _run(action)


# Options shared by evaluate and calibrate: where the labelled reviews are.
LabelledData = Annotated[
    str | None,
    typer.Option(
        "--data",
        metavar="PATH",
        help="Labelled data: a file, a folder or a hub id. Default: the run's data.",
        parser=_named,
    ),
]
Split = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Split (or file stem). Default: test, else validation.",
        parser=_split_name,
    ),
]
ReviewColumn = Annotated[
    str | None, typer.Option(metavar="NAME", help="Column with the review text.")
]
LabelColumn = Annotated[str | None, typer.Option(metavar="NAME", help="Column with the label.")]

MetricsFile = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Also write the metrics to this JSON file.",
        parser=_path,
    ),
]
PlotFile = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE.png",
        help="Also draw the reliability diagram to this file (.png, .svg or .pdf).",
        parser=_path,
    ),
]


@app.command()
def evaluate(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="A run directory written by 'train', or 'latest' (the newest under runs/). "
            "Default: $RNN_SENTIMENT_MODEL, else the bundled model.",
            parser=_path,
        ),
    ] = None,
    data: LabelledData = None,
    split: Split = None,
    text_column: ReviewColumn = None,
    label_column: LabelColumn = None,
    fmt: Annotated[TableOrJson, typer.Option("--format", help="Table or JSON.")] = (
        TableOrJson.table
    ),
    output: MetricsFile = None,
    plot: PlotFile = None,
    quiet: NoProgress = False,
) -> None:
    """Accuracy, per-class precision/recall/F1, macro-F1, confusion matrix and calibration (ECE,
    Brier score, log loss) on labelled data.

    \b
    Example:
      rnn-sentiment evaluate runs/lstm-20261122-101500 --data imdb/ --split test
    """

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.atomic import write_json
        from rnn_sentiment.inference.evaluate import evaluate as evaluate_model
        from rnn_sentiment.inference.models import describe_model_dir, resolve_model_dir

        model_dir = resolve_model_dir(run_dir)
        _check_evaluate_outputs(output, plot, data, model_dir)
        note = describe_model_dir(model_dir, run_dir, "rnn-sentiment evaluate RUN_DIR")
        if note:
            console.info(note)
        with console.scoring_progress(quiet) as progress:
            metrics = evaluate_model(
                model_dir, data, split, text_column, label_column, callback=progress
            )
        if plot is not None:  # first: drawing is what can still fail
            from rnn_sentiment.report import plot_reliability

            plot_reliability(metrics, plot)
        if output is not None:
            write_json(output, metrics)
        if fmt is TableOrJson.json:
            console.json_out(metrics)
        else:
            console.metrics_table(metrics)

    _run(action)


def _check_evaluate_outputs(
    output: Path | None, plot: Path | None, data: str | None, model_dir: Path
) -> None:
    """Refuse, before any scoring, ``-o`` / ``--plot`` files evaluate could not write or that
    would replace what it reads (``data``, else the run's own data source) or the model."""
    from rnn_sentiment.errors import DataError
    from rnn_sentiment.inference.evaluate import recorded_data

    if output is None and plot is None:
        return
    recorded = recorded_data(model_dir) if data is None else None  # read when --data is not given
    reading = data if data is not None else (recorded.source if recorded else None)
    _check_written(output, "--output", reading, model_dir, (".json",))
    _check_written(plot, "--plot", reading, model_dir, (".png", ".svg", ".pdf"))
    if output is not None and plot is not None and output.resolve() == plot.resolve():
        raise DataError("--output and --plot name the same file; give each its own")


def _check_written(
    path: Path | None, option: str, data: str | None, model_dir: Path, suffixes: tuple[str, ...]
) -> None:
    """Refuse, before any work, a file ``option`` names that could not be written (a folder, a
    missing folder, a format not among ``suffixes``) or would replace the ``data`` being read or
    a file of the model directory."""
    from rnn_sentiment.errors import DataError
    from rnn_sentiment.runfiles import replaces_model_file

    if path is None:
        return
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; name a file in it, such as "
                        f"{path / ('metrics' + suffixes[0])}")  # fmt: skip
    if not path.parent.is_dir():
        raise DataError(f"{option} {path}: the folder {path.parent} does not exist; create it")
    if path.exists() and not path.is_file():
        raise DataError(f"{option} {path} is not a regular file (a FIFO or a device); name a file")
    source = Path(data).resolve() if data is not None and Path(data).exists() else None
    target = path.resolve()
    if source is not None and (target == source or source in target.parents):
        # even a new file there could be read as a split next time
        what = "replace the data" if path.exists() else "add a file to the data folder"
        raise DataError(f"{option} {path} would {what} being evaluated; choose another")
    if replaces_model_file(path, model_dir):
        raise DataError(f"{option} {path} would replace a file of the model {model_dir}; "
                        "choose another")  # fmt: skip
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{option} {path}: name a {' or '.join(suffixes)} file")


class Quantize(str, Enum):
    int8 = "int8"


class Dtype(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class ScoringEngine(str, Enum):
    local = "local"
    ray = "ray"


class LongReviews(str, Enum):
    truncate = "truncate"
    window = "window"


# The options of `predict`, one alias each, so the command reads as a list of its options.
Texts = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="TEXT", help="Reviews to score; '-' reads one review per line from stdin."
    ),
]
ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        metavar="DIR",
        help="A run directory, or 'latest' (the newest under runs/). "
        "Default: $RNN_SENTIMENT_MODEL, else the bundled model.",
        parser=_path,
    ),
]
ReviewFile = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", metavar="FILE", help="A text file with one review per line.", parser=_path
    ),
]
Format = Annotated[
    PredictFormat,
    typer.Option("--format", help="Output format; with --input, json prints the summary."),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        min=1, metavar="N", help="Reviews per batch (256; exported: 16, 4 on one thread)."
    ),
]
Explain = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Per word: running sentiment and attribution.",
    ),
]
InputPath = Annotated[
    str | None,
    typer.Option(
        "--input",
        "-i",
        metavar="PATH",
        help="Review file or folder to score; '-': stdin.",
        parser=_named,
    ),
]
OutputPath = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="With --input: scored file; '-': stdout.",
        parser=_named,
    ),
]
InputFormat = Annotated[
    str | None,
    typer.Option(metavar="FORMAT", help="csv, tsv, jsonl, parquet, txt or folder."),
]
OutputFormat = Annotated[
    str | None,
    typer.Option(
        metavar="FORMAT", help="csv, tsv, jsonl or parquet (default: by name; '-': jsonl)."
    ),
]
TextColumn = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Column with the review (default: text, review, ...)."),
]
KeepColumns = Annotated[
    str,
    typer.Option(metavar="COLUMNS", help="Input columns copied to the output: all, none or a,b,c."),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted --input run writing to --output.")
]
LongReviewsOption = Annotated[
    LongReviews,
    typer.Option(help="truncate at the trained length, or window: overlapping, averaged."),
]
WindowStride = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Tokens between windows (default: half the length)."),
]
ChunkSize = Annotated[
    int, typer.Option(min=1, max=2**31 - 1, metavar="N", help="Rows read and sorted together.")
]
MaxReviewChars = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=2**31 - 1,
        metavar="N",
        help="With --input: longest field read (1,000,000); a longer one flags its row.",
    ),
]
MAX_THREADS = 256  # config.MAX_THREADS, spelled here so that --help imports no pydantic
MAX_WORKERS = 4096  # config.MAX_WORKERS, likewise
Threads = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_THREADS, metavar="N", help="CPU threads (per Ray worker: 1)."),
]
CheckThreads = Annotated[
    int | None,
    typer.Option(
        min=1, max=MAX_THREADS, metavar="N", help="CPU threads for scoring (default: as predict)."
    ),
]


def _shard(value: str | None) -> str | None:
    """--shard checked as ScoringOptions checks it: a wrong one is a usage error (exit 2)."""
    if value is not None:
        from pydantic import ValidationError

        from rnn_sentiment.inference.scoring import ScoringOptions

        try:
            ScoringOptions.model_validate({"shard": value})  # parsed from "K/N"
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise typer.BadParameter(message) from None
    return value


Shard = Annotated[
    str | None,
    typer.Option(callback=_shard, metavar="K/N", help="With --input: score block K (from 0) of N."),
]
EngineOption = Annotated[
    ScoringEngine,
    typer.Option("--engine", show_default=False, help="With --input: here, or on Ray workers."),
]
RayAddress = Annotated[
    str | None,
    typer.Option(metavar="ADDR", help="Ray cluster to join (default: a local Ray)."),
]
Workers = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_WORKERS, metavar="N", help="Ray workers (default: one per CPU)."),
]
QuantizeOption = Annotated[
    Quantize | None,
    typer.Option(help="int8: the recurrent matrix product in int8 (fastest on CPU)."),
]
DtypeOption = Annotated[
    Dtype, typer.Option(help="fp32, or bf16 recurrent products (fast on AVX512-BF16 CPUs).")
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress, model note or summary (flagged rows still reported)."
    ),
]


@app.command()
def predict(
    texts: Texts = None,
    model: ModelDir = None,
    file: ReviewFile = None,
    fmt: Format = PredictFormat.table,
    batch_size: BatchSize = None,
    explain: Explain = False,
    input_path: InputPath = None,
    output: OutputPath = "-",
    input_format: InputFormat = None,
    output_format: OutputFormat = None,
    text_column: TextColumn = None,
    keep_columns: KeepColumns = "all",
    resume: Resume = False,
    long_reviews: LongReviewsOption = LongReviews.truncate,
    window_stride: WindowStride = None,
    chunk_size: ChunkSize = 4096,
    max_review_chars: MaxReviewChars = None,
    shard: Shard = None,
    engine: EngineOption = ScoringEngine.local,
    address: RayAddress = None,
    workers: Workers = None,
    threads: Threads = None,
    quantize: QuantizeOption = None,
    dtype: DtypeOption = Dtype.fp32,
    quiet: Quiet = False,
) -> None:
    """Label reviews and show per-class probabilities.

    \b
    Examples:
      rnn-sentiment predict "This movie is not good" "A joy from start to end"
      cat reviews.txt | rnn-sentiment predict - --format jsonl
      rnn-sentiment predict --explain "This movie is not good"
      rnn-sentiment predict -m RUN_DIR --input reviews.csv --output scored.csv
      rnn-sentiment predict -i reviews/ -o scored/ --engine ray
    """

    def action() -> None:
        _check_predict_options(input_path, bool(texts or file), explain, fmt)
        _check_engine(engine, input_path, output, address, workers)
        reviews = _texts_to_score(texts or [], file, explain) if input_path is None else []
        q = quantize.value if quantize else None
        options = dict(
            input_format=input_format, output_format=output_format, text_column=text_column,
            keep_columns=keep_columns, chunk_size=chunk_size, long_reviews=long_reviews.value,
            window_stride=window_stride, resume=resume, max_review_chars=max_review_chars,
            shard=shard)  # fmt: skip
        if engine is ScoringEngine.ray and input_path is not None:
            ray = dict(address=address, workers=workers, threads=threads or 1,
                       batch_size=batch_size, quantize=q, dtype=dtype.value)  # fmt: skip
            return _score_with_ray(model, input_path, output, options, ray, quiet, fmt)
        predictor = _load_predictor(model, quiet, threads, batch_size, q, dtype.value)
        if explain:
            return _explain(predictor, reviews, fmt.value)
        if input_path is None:
            return _print_predictions(predictor, reviews, fmt.value, long_reviews, window_stride)
        _score_input(predictor, input_path, output, options, quiet, fmt is PredictFormat.json)

    _run(action, stdout=input_path is None or output == "-" or fmt is PredictFormat.json)


def _check_predict_options(
    input_path: str | None, texts: bool, explain: bool, fmt: PredictFormat
) -> None:
    from rnn_sentiment.errors import DataError

    if input_path is not None and (texts or explain):
        raise DataError("--input scores a file; do not combine it with texts, --file or --explain")
    if explain and fmt is PredictFormat.csv:
        raise DataError("--explain prints a table, json or jsonl, not csv")
    if input_path is not None and fmt in (PredictFormat.csv, PredictFormat.jsonl):
        raise DataError(
            f"with --input, --format is the summary's (table or json); the scored rows' format "
            f"is --output-format {fmt.value}"
        )
    if input_path == "-":
        _check_stdin()


def _check_engine(
    engine: ScoringEngine, input_path: str | None, output: str, address: str | None,
    workers: int | None,
) -> None:  # fmt: skip
    from rnn_sentiment.errors import DataError

    if engine is ScoringEngine.ray and (input_path is None or output == "-"):
        raise DataError("--engine ray scores --input files into an --output folder (Parquet parts)")
    if engine is not ScoringEngine.ray and (address is not None or workers is not None):
        raise DataError("--address and --workers go with --engine ray")


def _load_predictor(
    model: Path | None,
    quiet: bool,
    threads: int | None,
    batch_size: int | None,
    quantize: str | None,
    dtype: str,
    yours: str = "--model RUN_DIR",
) -> Any:
    """The model to score with (named on stderr when it was not given), its notes on stderr;
    ``yours``: how the command is given another model."""
    from rnn_sentiment import console
    from rnn_sentiment.inference.models import describe_model_dir, load_predictor, resolve_model_dir

    model_dir = resolve_model_dir(model)
    note = describe_model_dir(model_dir, model, yours)
    if note and not quiet:
        console.info(note)
    predictor = load_predictor(model_dir, batch_size, quantize, dtype, threads)
    for note in predictor.notes:
        console.info(note)
    return predictor


def _print_predictions(
    predictor: Any, reviews: list[str], fmt: str, long_reviews: LongReviews, stride: int | None
) -> None:
    from rnn_sentiment import console

    predictions = predictor.predict(reviews, long_reviews.value, stride)
    console.predictions_out(console.prediction_rows(predictions, predictor.label_names), fmt)


def _score_input(
    predictor: Any, source: str, output: str, options: dict[str, Any], quiet: bool, summary: bool
) -> None:
    from rnn_sentiment import console
    from rnn_sentiment.inference.scoring import ScoringOptions, score_file

    given = {key: value for key, value in options.items() if value is not None}  # else defaults
    with console.scoring_progress(quiet) as progress:
        result = score_file(predictor, source, output, ScoringOptions(**given), progress)
    if not quiet or result.rows_flagged:  # flagged rows are reported even with --quiet
        console.scoring_summary(result.to_dict())
    if summary and output != "-":
        console.json_out(result.to_dict())


def _score_with_ray(
    model: Path | None,
    source: str,
    output: str,
    options: dict[str, Any],
    ray: dict[str, Any],
    quiet: bool,
    fmt: PredictFormat,
) -> None:
    from rnn_sentiment import console
    from rnn_sentiment.inference.models import describe_model_dir, resolve_model_dir
    from rnn_sentiment.inference.ray_scoring import score_with_ray
    from rnn_sentiment.inference.scoring import ScoringOptions

    note = describe_model_dir(resolve_model_dir(model), model)
    if note and not quiet:
        console.info(note)
    given = {key: value for key, value in options.items() if value is not None}  # else defaults
    result = score_with_ray(model, source, output, ScoringOptions(**given), **ray, quiet=quiet)
    if not quiet or result.rows_flagged:  # flagged rows are reported even with --quiet
        console.scoring_summary(result.to_dict())
    if fmt is PredictFormat.json:
        console.json_out(result.to_dict())


def _explain(predictor: Any, reviews: list[str], fmt: str) -> None:
    from rnn_sentiment import console

    console.explanations_out([predictor.explain(text) for text in reviews], fmt)


@app.command()
def export(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="The run directory to export.", parser=_path)
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="The folder to create (new, or empty).",
            parser=_path,
        ),
    ],
    quantize: Annotated[
        Quantize | None,
        typer.Option(
            help="int8: onnxruntime's dynamic quantization (LSTM layers, embedding, classifier; "
            "GRU and RNN layers stay fp32)."
        ),
    ] = None,
) -> None:
    """Write a run as a portable model directory (ONNX) that predicts without PyTorch.

    \b
    Example:
      rnn-sentiment export runs/gru-20261122-101500 --output models/gru --quantize int8
    """

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.inference.export import export_model
        from rnn_sentiment.inference.exported import ExportedPredictor

        path = export_model(run_dir, output, quantize.value if quantize else None)
        for note in ExportedPredictor.from_dir(path).info.onnx.notes:
            console.info(note)
        console.info(f'exported to {path}; try: rnn-sentiment predict --model {path} "..."')

    _run(action, stdout=False)


# compare's options.
CompareCells = Annotated[
    str, typer.Option(metavar="CELLS", help="Comma list of cells to train, in order.")
]
CompareSeeds = Annotated[
    int, typer.Option(min=1, metavar="N", help="Runs per cell (seeds seed, seed+1, ...).")
]
CompareOut = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="A new or empty folder for the runs and the report. "
        "Default: <output.dir>/compare-<date>-<time>.",
        parser=_path,
    ),
]
MatchParams = Annotated[
    bool,
    typer.Option(
        "--match-params",
        help="Size each cell's hidden layer to the LSTM's parameter count, not its width.",
    ),
]


@app.command()
def compare(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="An optional YAML config, then key.sub=value overrides shared by every cell.",
            metavar="CONFIG KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    cells: CompareCells = "rnn,lstm,gru",
    seeds: CompareSeeds = 1,
    out: CompareOut = None,
    match_params: MatchParams = False,
    fmt: Annotated[
        TableOrJson, typer.Option("--format", help="Table and charts, or every number as JSON.")
    ] = TableOrJson.table,
    quiet: NoProgress = False,
) -> None:
    """Train RNN, LSTM and GRU on the same data, budget and seeds; compare them in one table.

    Accuracy (mean ± std over seeds), macro-F1, parameters, training time, tokens/s, accuracy by
    review length (or by distance on the long-range task) and gradient flow; writes report.md,
    report.json and PNG plots next to the run directories.

    \b
    Examples:
      rnn-sentiment compare configs/long-range.yaml
      rnn-sentiment compare configs/imdb-compare.yaml --seeds 3 --match-params
    """
    path, items = _config_and_overrides(args)

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.config import load_config

        config = load_config(path, items)
        from rnn_sentiment.compare import compare as compare_cells  # torch: after the config
        from rnn_sentiment.compare import parse_cells
        from rnn_sentiment.report import write_report

        progress = console.CompareProgress(config.training.log_every, quiet)
        result = compare_cells(config, parse_cells(cells), seeds, out, match_params, progress)
        files = write_report(result)
        if fmt is TableOrJson.json:
            console.json_out(result.to_dict())
        else:
            console.compare_out(result.summary(), files)

    _run(action)


ServedModel = Annotated[
    Path | None,
    typer.Argument(
        help="A run directory, an exported model, or 'latest' (the newest under runs/). "
        "Default: $RNN_SENTIMENT_MODEL, else the bundled model.",
        metavar="MODEL",
        show_default=False,
        parser=_path,
    ),
]
Host = Annotated[
    str, typer.Option(metavar="ADDRESS", help="Address to listen on; 0.0.0.0: every interface.")
]
Port = Annotated[int, typer.Option(min=0, max=65535, metavar="N", help="Port; 0: a free one.")]
ServeThreads = Annotated[
    int,
    typer.Option(
        min=1,
        max=MAX_THREADS,
        metavar="N",
        help="CPU threads scoring reviews (the HTTP side has its own).",
    ),
]
MaxTexts = Annotated[
    int | None,
    typer.Option(min=1, max=100_000, metavar="N", help="Reviews per request (default 256)."),
]
MaxChars = Annotated[
    int | None,
    typer.Option(
        min=1, max=10_000_000, metavar="N", help="Characters per review (default 20,000)."
    ),
]
MaxExplainWords = Annotated[
    int | None,
    typer.Option(
        min=1, max=100_000, metavar="N",
        help="Words per /explain review, as the model reads it; explaining's time grows with "
        "the square (default 1,000).",
    ),
]  # fmt: skip
MaxExplaining = Annotated[
    int | None,
    typer.Option(
        min=1, max=1000, metavar="N",
        help="/explain requests waiting or running at once; more get 503 and Retry-After "
        "(default 2). /predict never waits behind more than this many explains.",
    ),
]  # fmt: skip
BatchWait = Annotated[
    float | None,
    typer.Option(
        min=0, max=1000, metavar="MS",
        help="How long a request waits for others to share its model call (default 1).",
    ),
]  # fmt: skip
MaxActive = Annotated[
    int | None,
    typer.Option(
        min=1, max=100_000, metavar="N",
        help="Requests in progress at once; more get 503 and Retry-After (default 128).",
    ),
]  # fmt: skip
BodySeconds = Annotated[
    float | None,
    typer.Option(
        min=0.001, max=3600, metavar="S",
        help="Seconds a request's body may take to arrive; a slower one gets 408 (default 30).",
    ),
]  # fmt: skip


@app.command()
def serve(
    model: ServedModel = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    threads: ServeThreads = 1,
    batch_size: BatchSize = None,
    max_texts: MaxTexts = None,
    max_chars: MaxChars = None,
    max_explain_words: MaxExplainWords = None,
    max_explaining: MaxExplaining = None,
    batch_wait_ms: BatchWait = None,
    max_active: MaxActive = None,
    body_seconds: BodySeconds = None,
) -> None:
    """Serve a model over HTTP until Ctrl-C or SIGTERM (requests in flight are finished).

    POST /predict {"texts": [...]} and POST /explain {"text": "..."}; GET /health and
    /metadata; a page to try reviews at /, the API's docs at /docs. Needs the serve extra:
    pip install 'rnn-sentiment[serve]'.

    \b
    Examples:
      rnn-sentiment serve
      rnn-sentiment serve runs/gru-20261122-101500 --port 8080
      curl -s localhost:8000/predict -H 'Content-Type: application/json' \\
           -d '{"texts": ["This movie is not good"]}'
    """

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.serving import require_serve_extra

        require_serve_extra()  # before a model loads: the install command at once
        from rnn_sentiment.serving.app import ServeSettings
        from rnn_sentiment.serving.server import serve as serve_model

        given = {"max_texts": max_texts, "max_chars": max_chars, "batch_wait_ms": batch_wait_ms,
                 "max_active": max_active, "max_explain_words": max_explain_words,
                 "max_explaining": max_explaining, "body_seconds": body_seconds}  # fmt: skip
        settings = ServeSettings.checked({k: v for k, v in given.items() if v is not None})
        yours = "rnn-sentiment serve MODEL"
        predictor = _load_predictor(model, False, threads, batch_size, None, "fp32", yours)

        def listening(url: str) -> None:
            console.info(f"serving at {url}: try a review at {url}/, the API docs at {url}/docs")

        served = serve_model(predictor, host, port, settings, listening)
        console.info(f"stopped after scoring {served.reviews:,} reviews in {served.batches:,} "
                     "batches")  # fmt: skip

    _run(action, stdout=False)


SuiteFile = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="A suite YAML file. Default: the shipped movie-review suite.",
        parser=_path,
    ),
]


@app.command()
def check(
    model: Annotated[
        Path | None,
        typer.Argument(
            metavar="MODEL",
            help="A run (or exported model) directory, or 'latest' (the newest under runs/). "
            "Default: $RNN_SENTIMENT_MODEL, else the bundled model.",
            parser=_path,
        ),
    ] = None,
    suite: SuiteFile = None,
    fmt: Annotated[
        TableOrJson, typer.Option("--format", help="Tables and examples, or every number as JSON.")
    ] = TableOrJson.table,
    fail_above: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="RATE",
            help="Exit 1 when a test fails more than this share of its cases (0 to 1; 0: any).",
        ),
    ] = None,
    examples: Annotated[
        int, typer.Option(min=0, max=100, metavar="N", help="Failing examples shown per test.")
    ] = 3,
    threads: CheckThreads = None,
) -> None:
    """Behavioural tests (CheckList): the failure rate of each test, by capability.

    Negation, contrast, intensity, questions, the reviewer's opinion, typos, names, numbers, ...
    with the most confidently wrong examples; --fail-above RATE makes it a CI gate.

    \b
    Examples:
      rnn-sentiment check
      rnn-sentiment check runs/gru-20261122-101500 --fail-above 0.2
      rnn-sentiment check --suite my-suite.yaml --format json
    """

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.inference.check import load_suite, run_suite

        checks = load_suite(suite)  # a broken suite is reported before the model loads
        yours = "rnn-sentiment check RUN_DIR"
        predictor = _load_predictor(model, False, threads, None, None, "fp32", yours)
        result = run_suite(predictor, checks, examples)
        if fmt is TableOrJson.json:
            console.json_out({"model": str(predictor.path), **result.to_dict()})
        else:
            console.check_out(result.to_dict())
        if fail_above is not None:
            _fail_above(result, fail_above)

    _run(action)


def _fail_above(result: Any, rate: float) -> None:
    """Exit 1, naming the worst, when a check test fails more than ``rate`` of its cases."""
    from rnn_sentiment import console

    failing = result.failing(rate)
    if failing:
        worst = ", ".join(f"{t.name} ({t.failure_rate:.1%})" for t in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        console.error(
            f"{len(failing)} of {len(result.tests)} tests fail more than {rate:.1%} of their "
            f"cases: {worst}{more}"
        )
        raise typer.Exit(1)


@app.command()
def calibrate(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="A run directory written by 'train'.", parser=_path),
    ],
    data: LabelledData = None,
    split: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Split (or file stem). Default: the run's validation.",
            parser=_split_name,
        ),
    ] = None,
    text_column: ReviewColumn = None,
    label_column: LabelColumn = None,
    fmt: Annotated[TableOrJson, typer.Option("--format", help="A line or JSON.")] = (
        TableOrJson.table
    ),
    quiet: NoProgress = False,
) -> None:
    """Refit the temperature that calibrates a run's probabilities, on held-out labelled data.

    Training fits it on the validation split; predict, batch scoring, --explain, exported
    models and the server apply it. Never fit it on the data you report test figures on.

    \b
    Example:
      rnn-sentiment calibrate runs/gru-20261122-101500 --data heldout.csv
    """

    def action() -> None:
        from rnn_sentiment import console
        from rnn_sentiment.inference.evaluate import calibrate as calibrate_run

        with console.scoring_progress(quiet) as progress:
            result = calibrate_run(
                run_dir, data, split, text_column, label_column, callback=progress
            )
        if fmt is TableOrJson.json:
            console.json_out(result)
        else:
            console.calibration_line(str(run_dir), result)

    _run(action)


def _texts_to_score(texts: list[str], file: Path | None, explain: bool = False) -> list[str]:
    from rnn_sentiment.errors import DataError

    reviews = _gather_texts(texts, file)
    if not reviews and explain:
        raise DataError("--explain needs non-empty reviews: pass texts, '-' or --file FILE")
    if not reviews:
        raise DataError("no reviews given: pass texts, '-' for stdin, --file FILE or --input FILE")
    empty = [i + 1 for i, text in enumerate(reviews) if not text.strip()]
    if empty:
        raise DataError(f"review {empty[0]} is empty; every review needs some text")
    return reviews


def _gather_texts(texts: list[str], file: Path | None) -> list[str]:
    """The reviews of the arguments, of stdin for ``-`` and of ``--file``, one per line.

    stdin and ``--file`` are read by the same line reader as ``--input`` (``\\n`` or ``\\r\\n``
    endings, a byte-order mark skipped, fastText ``__label__`` prefixes taken off), so a line
    gets the same review, and the same probabilities, whichever way it comes in.
    """
    from rnn_sentiment.errors import DataError

    if file is not None and file.is_dir():
        raise DataError(f"{file} is a directory; --file takes a text file, one review a line")
    if file is not None and not file.is_file():
        raise DataError(f"review file not found: {file}")
    reviews: list[str] = []
    for text in texts:
        if text == "-":
            _check_stdin()
        reviews.extend(_read_lines("-", "stdin") if text == "-" else [text])
    if file is not None:
        reviews.extend(_read_lines(str(file), str(file)))
    return reviews


def _check_stdin() -> None:
    from rnn_sentiment.errors import DataError

    if sys.stdin is None:  # started with stdin closed (<&-), not merely empty
        raise DataError("'-' reads stdin, but stdin is closed; pipe reviews in or pass them as "
                        "arguments")  # fmt: skip


def _read_lines(path: str, where: str) -> list[str]:
    from rnn_sentiment.data.files import open_reader
    from rnn_sentiment.errors import DataError
    from rnn_sentiment.text import fix_text

    reader = open_reader(path, "txt")
    lines: list[str] = []
    try:
        for chunk in reader.chunks(4096):
            problem = next((p for p in chunk.problems if p), None)
            if problem is not None:  # a line over the longest review the readers hold
                line = len(lines) + chunk.problems.index(problem) + 1
                raise DataError(
                    f"{where}, line {line}: {problem}; score such a file with --input and a "
                    "larger --max-review-chars"
                )
            lines.extend(chunk.columns["text"])
    finally:
        reader.close()
    bad = next((i for i, text in enumerate(lines) if fix_text(text)[1]), None)
    if bad is not None:
        raise DataError(
            f"{where} is not valid UTF-8 (line {bad + 1}); re-encode it, or score it with "
            "--input, which replaces and flags such lines"
        )
    return lines


def main() -> Any:
    """Console-script entry point."""
    bad = next((arg for arg in sys.argv[1:] if _undecodable(arg)), None)
    if bad is not None:
        from rnn_sentiment import console

        # Python hands undecodable bytes over as lone surrogates, which would reach file names,
        # configs and UTF-8 output; refused here, once, for every command and argument.
        shown = bad.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        console.error(
            f"argument '{shown[:80]}' is not valid UTF-8; pass texts, paths and values as UTF-8 "
            "(rename such a file, or score reviews in another encoding with --input, which "
            "replaces and flags invalid bytes)"
        )
        raise SystemExit(2)
    try:
        return app()
    finally:
        # The objects of this run go with the process: left out of the collections Python runs
        # as it exits, which took about 35 of the 330 ms of a one-review predict.
        gc.freeze()


def _undecodable(arg: str) -> bool:
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
