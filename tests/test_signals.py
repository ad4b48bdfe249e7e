"""The one signal guard: a flag for training's step boundaries, an exception for scoring."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from rnn_sentiment.signals import StopRequested, StopSignals

# Reads a line from stdin under the guard, reporting what happened on stdout.
READ_STDIN = """
import sys
from rnn_sentiment.signals import StopRequested, StopSignals

with StopSignals(raise_at_once=sys.argv[1] == "raise") as stop:
    try:
        print("ready", flush=True)
        line = sys.stdin.readline().strip()
    except StopRequested as exc:
        print(f"raised {exc.signal_name}", flush=True)
        sys.exit(3)
    print(f"read {line}, requested {stop.requested}", flush=True)
"""

# Waits for a first signal under a flag-mode guard, then waits for whatever comes next.
TWO_SIGNALS = """
import time
from rnn_sentiment.signals import StopSignals

with StopSignals() as stop:
    print("ready", flush=True)
    while stop.requested is None:
        time.sleep(0.01)
    try:
        print(f"flagged {stop.requested}", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
"""


# A shell starts a background job (CI under nohup, `make test &`) with SIGINT ignored, and Python
# then installs no KeyboardInterrupt handler: give the child the usual one, as a terminal would.
_USUAL_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _USUAL_SIGINT + script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_raising_mode_stops_a_read_blocked_on_stdin_at_once() -> None:
    process = _start(READ_STDIN, "raise")
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)  # stdin stays open: only the signal can end the read
    assert process.returncode == 3 and out == "raised SIGTERM\n"


def test_flag_mode_lets_the_current_work_finish_and_says_which_signal() -> None:
    process = _start(READ_STDIN, "flag")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # still reading: the signal only set the flag
    out, _ = process.communicate("a review\n", timeout=30)
    assert process.returncode == 0 and out == "read a review, requested SIGTERM\n"


@pytest.mark.parametrize(
    ("sig", "returncode", "rest"),
    [(signal.SIGTERM, -signal.SIGTERM, ""), (signal.SIGINT, 0, "KeyboardInterrupt\n")],
)
def test_a_second_signal_gets_the_handler_that_was_there_before(
    sig: signal.Signals, returncode: int, rest: str
) -> None:
    process = _start(TWO_SIGNALS)
    assert process.stdout is not None
    process.send_signal(sig)
    assert process.stdout.readline() == f"flagged {sig.name}\n"
    process.send_signal(sig)  # SIGTERM's default kills; Ctrl-C's raises KeyboardInterrupt
    out, _ = process.communicate(timeout=30)
    assert process.returncode == returncode and out == rest


def test_raising_mode_names_ctrl_c_and_restores_the_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(StopRequested) as raised, StopSignals(raise_at_once=True) as stop:
        signal.raise_signal(signal.SIGINT)
    assert raised.value.signal_name == "SIGINT" and stop.requested == "SIGINT"
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_flag_mode_raises_nothing_and_restores_the_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def worker() -> None:
        with StopSignals(raise_at_once=True):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


def test_nested_guards_that_both_fire_leave_the_first_handler() -> None:
    # A run's set-up (raising) around word2vec (flag): the inner guard put the outer handler
    # back on leaving although the outer one had fired, so a signal during the clean-up that
    # follows raised again instead of getting the handler that was there before.
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals(raise_at_once=True) as outer:
        try:
            with StopSignals() as inner:
                signal.raise_signal(signal.SIGTERM)  # the inner guard's flag
                assert inner.requested == "SIGTERM" and outer.requested is None
                signal.raise_signal(signal.SIGTERM)  # the second one stops at once
        except StopRequested:
            pass
        assert outer.requested == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # in the clean-up
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with StopSignals(raise_at_once=True), StopSignals():  # none fires: restored in order
        pass
    assert {sig: signal.getsignal(sig) for sig in before} == before
