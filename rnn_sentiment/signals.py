"""Ctrl-C and SIGTERM as a request to stop: the one signal guard of training and scoring.

Training must stop between steps, never inside ``optimizer.step``, or its saved state would not be
consistent: it checks a flag. Scoring must stop at once, even while blocked reading stdin, and
keeps what it committed: the handler raises. Either way a second signal of the same kind gets
the handler that was there before (Python's KeyboardInterrupt for Ctrl-C, death for SIGTERM), so
a stuck process can still be stopped.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """Raised by a raising :class:`StopSignals`; a BaseException like KeyboardInterrupt, so
    ``except Exception`` cannot swallow it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopSignals:
    """While in a ``with`` block, turn Ctrl-C and SIGTERM into a request to stop.

    Args:
        raise_at_once: raise :class:`StopRequested` where the main thread is; otherwise only set
            :attr:`requested` for the code to check at a safe point.

    Handlers are installed in the main thread only (Python allows no other) and the previous ones
    are restored when the block ends.
    """

    def __init__(self, raise_at_once: bool = False) -> None:
        self.raise_at_once = raise_at_once
        self.requested: str | None = None  # the name of the first signal received
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # A handler that fired put the previous one back itself; restoring it again would
            # bring back an outer block's handler after that one fired too (nested blocks).
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, _installable(handler))
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        signal.signal(signum, _installable(self._previous.get(signum)))
        if self.raise_at_once:
            raise StopRequested(self.requested)


def _installable(handler: Any) -> Any:
    # signal.signal returns None for a handler installed outside Python; SIG_DFL is what it was.
    return signal.SIG_DFL if handler is None else handler
