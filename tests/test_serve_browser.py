"""The server's page in a real browser: headless Chromium types a review and shows the verdict.

Marked ``browser`` and skipped when no Chromium is installed (Debian: ``apt-get install chromium``;
.ci/run installs it). Chromium is driven with its DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages ending in a NUL byte, commands on the browser's file
descriptor 3 and replies on 4), so no web driver or Python package is needed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="serving needs the serve extra: pip install -e '.[serve]'")

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_ENV = "RNN_SENTIMENT_CHROMIUM"
# The server, started as `rnn-sentiment serve` starts it (the bundled model), on a free port.
LAUNCH = """
import sys
from rnn_sentiment.inference.models import load_predictor, resolve_model_dir
from rnn_sentiment.serving.server import serve
serve(load_predictor(resolve_model_dir(None), threads=1), port=0,
      on_listening=lambda url: print("listening on", url, file=sys.stderr, flush=True))
"""
REVIEW = "This movie is not good"
# Root (CI) needs --no-sandbox; containers have a small /dev/shm.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--remote-debugging-pipe")  # fmt: skip
SHIM = """
import os, sys
commands, replies = int(sys.argv[1]), int(sys.argv[2])
os.dup2(commands, 3)
os.dup2(replies, 4)
os.close(commands)
os.close(replies)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def find_browser() -> str | None:
    """``$RNN_SENTIMENT_CHROMIUM``, else the first Chromium or Chrome on PATH."""
    return os.environ.get(BROWSER_ENV) or next(
        (path for name in BROWSERS if (path := shutil.which(name))), None
    )


class Browser:
    """A headless Chromium and its DevTools connection over a pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        commands_read, self._commands = _high_pipe()
        self._replies, replies_write = _high_pipe()
        flags = [*FLAGS, f"--user-data-dir={profile}", "about:blank"]
        # A tiny Python shim puts the pipe's ends where Chromium looks for them, 3 and 4, and
        # becomes Chromium (a shell cannot name descriptors above 9).
        self.process = subprocess.Popen(
            [sys.executable, "-c", SHIM, str(commands_read), str(replies_write), binary, *flags],
            pass_fds=(commands_read, replies_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """One command; its result (events that arrive meanwhile are kept in ``events``)."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(time.monotonic() + 30)
            if reply.get("id") == self._last_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._replies], [], [], max(left, 0))
            if not readable:
                raise AssertionError("Chromium did not answer within 30 s")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise AssertionError(f"Chromium closed the pipe (exit {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._replies)
        self.process.kill()
        self.process.wait(timeout=30)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above 9, so that moving them to 3 and 4 cannot clobber either."""
    read, write = os.pipe()
    high = fcntl.fcntl(read, fcntl.F_DUPFD, 10), fcntl.fcntl(write, fcntl.F_DUPFD, 10)
    os.close(read)
    os.close(write)
    return high


class Page:
    """One tab of a :class:`Browser`."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        self.send("Network.enable")

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"never true within {seconds} s: {expression}")

    def type(self, text: str) -> None:
        """Key presses, one character at a time, into the focused element."""
        for char in text:
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": char, "key": char})
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def click(self, selector: str) -> None:
        """A left click in the middle of the element, as a mouse would."""
        x, y = self.evaluate(
            f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            event = {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            self.send("Input.dispatchMouseEvent", event)

    def requested_urls(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self.browser.events
                if event.get("method") == "Network.requestWillBeSent"]  # fmt: skip


@pytest.fixture
def server_url() -> Iterator[str]:
    """``rnn-sentiment serve`` with the bundled model, in a process of its own."""
    server = subprocess.Popen([sys.executable, "-c", LAUNCH], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stderr is not None
        for line in server.stderr:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if found:
                yield found.group(1)
                break
        else:
            raise AssertionError(f"the server did not start (exit code {server.wait()})")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = find_browser()
    if binary is None:
        pytest.skip(
            f"no Chromium to test the page in: apt-get install chromium, or set {BROWSER_ENV}"
        )
    started = Browser(binary, tmp_path / "profile")
    try:
        yield started
    finally:
        started.close()


def test_a_person_types_a_review_and_sees_negative_and_a_coloured_not(
    server_url: str, browser: Browser
) -> None:
    page = Page(browser)
    page.send("Page.navigate", {"url": f"{server_url}/"})
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('review')")
    page.evaluate("document.getElementById('review').focus()")
    page.type(REVIEW)
    assert page.evaluate("document.getElementById('review').value") == REVIEW
    page.click("#score")

    label = page.wait_for("document.getElementById('result').hidden ? '' : "
                          "document.getElementById('label').textContent")  # fmt: skip
    assert label == "negative"
    shown = page.evaluate("document.getElementById('verdict').innerText")
    assert re.fullmatch(r"negative 0\.\d{3}", shown), shown
    words = page.evaluate(
        "[...document.querySelectorAll('#words span')]"
        ".map(s => [s.textContent, getComputedStyle(s).backgroundColor])"
    )
    assert [word for word, _ in words] == REVIEW.split()
    colours = dict(words)
    red, green, blue, alpha = rgba(colours["not"])
    assert alpha > 0.5 and red > 2 * green and red > 2 * blue  # strongly negative: red
    assert max(colours, key=lambda word: rgba(colours[word])[3]) == "not"
    assert rgba(colours["movie"])[3] < 0.25  # a word that hardly matters is hardly coloured
    # Offline: the page, its script and its calls come from the server and nowhere else.
    assert all(url.startswith(f"{server_url}/") for url in page.requested_urls())
    assert f"{server_url}/explain" in page.requested_urls()


def rgba(css: str) -> tuple[float, float, float, float]:
    """``rgb(r, g, b)`` or ``rgba(r, g, b, a)`` as four numbers (alpha 1 when absent)."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)]
    return (numbers[0], numbers[1], numbers[2], numbers[3] if len(numbers) > 3 else 1.0)
