"""Micro-batching: the reviews of concurrent requests scored together, on one worker thread.

Each request joins a waiting list and awaits a future. One worker thread scores, call after call,
a micro-batch of at most ``max_texts`` reviews (the model's batch size): the oldest waiting
request, and from the next oldest requests (``WINDOW`` times ``max_texts`` of them) those whose
longest reviews are nearest its own in length, so that little is padded. It answers them as soon
as their call returns and goes straight on to the next call, so the event loop sends answers and
reads new requests while the model scores. No request waits for more than a few calls' worth of
requests that arrived before it. When fewer than ``max_texts`` reviews wait, the worker waits
until ``wait_s`` after the oldest arrived for others to join (a lone request is delayed
``wait_s``; under load there is no wait).

How the company of a call is chosen, measured with 32 clients sending single IMDB reviews to the
bundled model's export (one scoring thread, batches of 4, quiet 2-core machine, 4,000 requests):
strict arrival order gave p50 41 ms and p99 49 ms (similar lengths rarely share a call, so much
is padded); the nearest lengths among all waiting requests gave p50 31-32 ms and p99 61-63 ms
(the longest reviews wait while shorter ones overtake them); the nearest among the oldest 8, 12
or 16 requests gave p99 44-49, 44-47 and 51 ms at p50 31-33 ms. The earlier scheme, every
waiting request gathered for 1 ms and all answered after one call, gave p50 38 ms, p99 62 ms.

Everything that runs the model (scoring and ``explain``) runs on the one worker thread: a PyTorch
model is not shared between threads, and one scoring thread leaves the other cores to the HTTP
side.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from rnn_sentiment.errors import first_line

T = TypeVar("T")
# A call's company is chosen from the oldest WINDOW x max_texts waiting requests (see the module
# docstring for the measurement).
WINDOW = 3


@dataclass
class _Request:
    texts: Sequence[str]
    done: asyncio.Future[np.ndarray] = field(repr=False)
    arrived: float = field(default_factory=time.monotonic)
    longest: int = 0

    def __post_init__(self) -> None:
        self.longest = max(map(len, self.texts), default=0)


@dataclass
class _Call:
    function: Callable[..., Any]
    args: tuple[object, ...]
    done: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    """Scores the reviews of concurrent requests in shared ``score`` calls on one thread.

    Args:
        score: texts -> probabilities [n, labels] in input order (``predict_proba``).
        wait_s: how long a request waits for others to join its call while fewer than
            ``max_texts`` reviews wait (0: score at once).
        max_texts: the most reviews in one ``score`` call; a request is never split, so one
            larger than this is scored alone.

    Use inside a running event loop: ``start()``, then ``await score(texts)`` from any number of
    tasks, then ``await stop()``.
    """

    def __init__(
        self, score: Callable[[Sequence[str]], np.ndarray], wait_s: float, max_texts: int
    ) -> None:
        self._score = score
        self.wait_s = wait_s
        self.max_texts = max_texts
        self.batches = 0  # score calls made, and the reviews they held: the mean batch size
        self.reviews = 0
        self._ready = threading.Condition()  # guards everything below
        self._waiting: list[_Request] = []  # in arrival order
        self._queued = 0  # reviews waiting
        self._calls: deque[_Call] = deque()  # run() jobs, before any scoring
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (from the running event loop, which gets the answers)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="rnn-sentiment-scorer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Let the worker finish the call it runs, then stop it; requests still waiting fail."""
        with self._ready:
            self._stopping = True
            left: list[_Request | _Call] = [*self._waiting, *self._calls]
            self._waiting.clear()
            self._calls.clear()
            self._ready.notify()
        for job in left:
            job.done.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def score(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [len(texts), labels] for ``texts``, scored with other requests' reviews."""
        request = _Request(texts, asyncio.get_running_loop().create_future())
        with self._ready:
            self._waiting.append(request)
            self._queued += len(texts)
            self._ready.notify()
        return await request.done

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the worker thread, between score calls (``explain``).

        A failure that is not an ``Exception`` (a Rust panic in the tokenizers library arrives
        as pyo3's PanicException, a BaseException) is raised as a RuntimeError, so that it
        fails one request, not the worker and every request after it.
        """
        call = _Call(function, args, asyncio.get_running_loop().create_future())
        with self._ready:
            self._calls.append(call)
            self._ready.notify()
        result: T = await call.done
        return result

    def _work(self) -> None:
        """The worker thread: the next job, run, answered on the event loop; until stopped."""
        while True:
            with self._ready:
                job = self._next_job()
            if job is None:
                return
            if isinstance(job, _Call):
                answers: list[tuple[asyncio.Future[Any], int | None]] = [(job.done, None)]
                outcome = _outcome(job.function, *job.args)
            else:
                texts = [text for request in job for text in request.texts]
                answers = [(request.done, len(request.texts)) for request in job]
                outcome = _outcome(self._score, texts)
                self.batches += 1
                self.reviews += len(texts)
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_answer, answers, *outcome)
            except RuntimeError:  # the event loop has closed: nobody waits for the answer
                return

    def _next_job(self) -> _Call | list[_Request] | None:
        """(Holding the lock.) The next call to run or requests to score; None: stop."""
        while True:
            while not (self._waiting or self._calls or self._stopping):
                self._ready.wait()
            if self._stopping:
                return None
            if self._calls:
                return self._calls.popleft()
            delay = self._waiting[0].arrived + self.wait_s - time.monotonic()
            if self._queued < self.max_texts and delay > 0:
                self._ready.wait(delay)
            elif batch := self._take():
                return batch

    def _take(self) -> list[_Request]:
        """(Holding the lock.) The oldest waiting request and, of the next oldest (the window),
        those nearest its length, up to ``max_texts`` reviews, in arrival order. Requests whose
        clients went away are dropped as they are met. Only the window is looked at, so a long
        waiting list under overload costs no more per call."""
        window: list[_Request] = []
        scanned = 0
        for request in self._waiting:
            scanned += 1
            if request.done.done():
                self._queued -= len(request.texts)
            else:
                window.append(request)
                if len(window) == WINDOW * self.max_texts:
                    break
        rest = self._waiting[scanned:]
        taken: set[int] = set()
        if window:
            oldest, size = window[0], 0
            for request in sorted(window, key=lambda r: abs(r.longest - oldest.longest)):
                if request is oldest or size + len(request.texts) <= self.max_texts:
                    taken.add(id(request))
                    size += len(request.texts)
            self._queued -= size
        self._waiting = [request for request in window if id(request) not in taken] + rest
        return [request for request in window if id(request) in taken]


def _outcome(function: Callable[..., Any], *args: object) -> tuple[Any, BaseException | None]:
    """(``function(*args)``, None), or (None, the exception it raised; one that is not an
    ``Exception`` becomes a RuntimeError): whatever a call raises, the worker goes on."""
    try:
        return function(*args), None
    except Exception as exc:
        return None, exc
    except BaseException as exc:
        error = RuntimeError(f"{type(exc).__name__}: {first_line(exc)}")
        error.__cause__ = exc
        return None, error


def _answer(
    answers: list[tuple[asyncio.Future[Any], int | None]], value: Any, error: BaseException | None
) -> None:
    """On the event loop: each future its ``count`` rows of ``value`` in turn (None: all of
    it), or ``error``; futures whose clients went away are skipped."""
    start = 0
    for future, count in answers:
        part = value
        if count is not None and error is None:
            part, start = value[start : start + count], start + count
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(part)
