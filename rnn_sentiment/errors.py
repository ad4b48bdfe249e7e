"""The one exception family of rnn-sentiment.

The CLI turns every :class:`RnnSentimentError` into a one-line message and the exit code it
carries; anything else is an internal error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class RnnSentimentError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code = 1


class ConfigError(RnnSentimentError):
    """The configuration is invalid: unknown key, wrong type, out of range."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class DataError(RnnSentimentError):
    """Input data cannot be read or does not have the expected shape."""

    exit_code = 2


class CheckpointError(RnnSentimentError):
    """A run directory is missing, incomplete, corrupted or unsafe to load."""

    exit_code = 2


class TrainingError(RnnSentimentError):
    """Training failed at run time (for example the loss became NaN)."""

    exit_code = 1


class OutputClosed(RnnSentimentError):
    """Stdout's reader went away (``| head``): a normal end for a pipe, so the CLI says nothing.

    ``exit_code`` 141 is 128 + SIGPIPE, what a shell reports for ``cat big | head``'s cat.
    """

    exit_code = 141


class TrainingInterrupted(RnnSentimentError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a resumable state."""

    exit_code = 130


def did_you_mean(name: str, choices: Iterable[str], shown: str = "{}") -> str:
    """``'did you mean X? '`` for the choice closest to ``name``, or ``''`` when none is close.

    ``shown`` formats the suggestion the way the user would type it (``"data.text_column={}"``,
    ``"--text-column {}"``), so the hint can be pasted as is.
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {shown.replace('{}', close[0])}? " if close else ""


def cut(text: str, width: int) -> str:
    """``text`` for an error line: at most ``width`` characters, ``...`` ending a cut one."""
    return text if len(text) <= width else text[: width - 3] + "..."


def listed(names: Sequence[str], most: int = 20, width: int = 40) -> str:
    """``names`` joined for an error line, at most ``most`` of them, each cut to ``width``
    characters: a 200,000-column header (or a file linked in from elsewhere) made a 1.7 MB line."""
    shown = [cut(name, width) for name in names[:most]]
    more = f" (and {len(names) - most:,} more)" if len(names) > most else ""
    return ", ".join(shown) + more


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for a
    one-line error that quotes a third-party exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
