"""Micro-batching: the reviews of concurrent requests scored together, on one worker thread.

Each request joins a waiting list and awaits a future. One worker thread scores, call after call,
a micro-batch of at most ``max_texts`` reviews (the model's batch size): the oldest waiting
request and, among the oldest ``WINDOW`` x ``max_texts`` waiting requests (it included), those
whose longest reviews are nearest its own in length, so that little is padded. It answers them
as soon as their call returns and goes straight on to the next call, so the event loop sends
answers and reads new requests while the model scores. No request waits for more than a few
calls' worth of requests that arrived before it; ``explain`` calls take their turn with the
scoring by arrival. When fewer than ``max_texts`` reviews wait, the worker waits until
``wait_s`` after the oldest arrived for others to join (a lone request is delayed ``wait_s``;
under load there is no wait). If the worker stops (``stop()``, or a failure outside the model
call), every waiting request fails with :class:`Stopped`, and so does every new one.

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
from contextlib import suppress
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
    longest: int = field(
        init=False
    )  # characters of its longest review: the length it is matched by

    def __post_init__(self) -> None:
        self.longest = max(map(len, self.texts), default=0)


@dataclass
class _Call:
    function: Callable[..., Any]
    args: tuple[object, ...]
    done: asyncio.Future[Any] = field(repr=False)
    arrived: float = field(default_factory=time.monotonic)


class Stopped(RuntimeError):
    """The batcher is not running (not started, stopping, or its worker failed)."""


class MicroBatcher:
    """Scores the reviews of concurrent requests in shared ``score`` calls on one thread.

    Args:
        score: texts -> probabilities [n, labels] in input order (``predict_proba``).
        wait_s: how long a request waits for others to join its call while fewer than
            ``max_texts`` reviews wait (0: score at once).
        max_texts: the most reviews in one ``score`` call; a request is never split, so one
            larger than this is scored alone.

    Use inside a running event loop: ``start()``, then ``await score(texts)`` from any number of
    tasks, then ``await stop()``; it can be started again after that. ``score`` and ``run``
    raise :class:`Stopped` while it is not running.
    """

    def __init__(
        self, score: Callable[[Sequence[str]], np.ndarray], wait_s: float, max_texts: int
    ) -> None:
        self._score = score
        self.wait_s = wait_s
        self.max_texts = max_texts
        self.batches = 0  # score calls that succeeded, and their reviews: the mean batch size
        self.reviews = 0
        self._ready = threading.Condition()  # guards everything below
        self._waiting: deque[_Request] = deque()  # in arrival order
        self._queued = 0  # reviews waiting
        self._calls: deque[_Call] = deque()  # run() jobs, in arrival order
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (from the running event loop, which gets the answers)."""
        with self._ready:
            if self._running:
                raise RuntimeError("the batcher is already running")
            self._running = True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="rnn-sentiment-scorer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Let the worker finish the call it runs, then stop it; requests still waiting fail."""
        self._halt()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def alive(self) -> bool:
        """Whether the worker is running and takes requests (``/health``)."""
        return self._running and self._thread is not None and self._thread.is_alive()

    async def score(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [len(texts), labels] for ``texts``, scored with other requests' reviews."""
        request = _Request(texts, asyncio.get_running_loop().create_future())
        with self._ready:
            self._refuse_unless_running()
            self._waiting.append(request)
            self._queued += len(texts)
            self._ready.notify()
        return await request.done

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the worker thread, between score calls (``explain``), in
        turn with them by arrival.

        A failure that is not an ``Exception`` (a Rust panic in the tokenizers library arrives
        as pyo3's PanicException, a BaseException) is raised as a RuntimeError, so that it
        fails one request, not the worker and every request after it.
        """
        call = _Call(function, args, asyncio.get_running_loop().create_future())
        with self._ready:
            self._refuse_unless_running()
            self._calls.append(call)
            self._ready.notify()
        result: T = await call.done
        return result

    def _refuse_unless_running(self) -> None:
        if not self._running:
            raise Stopped("the model server is not running (stopping, or its worker failed)")

    def _halt(self) -> None:
        """Stop taking requests and fail those waiting (from any thread)."""
        with self._ready:
            self._running = False
            left: list[_Request | _Call] = [*self._waiting, *self._calls]
            self._waiting.clear()
            self._calls.clear()
            self._queued = 0
            self._ready.notify()
        if left and self._loop is not None:
            with suppress(RuntimeError):  # the event loop has closed: nobody waits for them
                self._loop.call_soon_threadsafe(_cancel, [job.done for job in left])

    def _work(self) -> None:
        """The worker thread: the next job, run, answered on the event loop; until stopped. If
        anything outside the model call fails, the batcher stops and every waiting request
        fails with it, instead of waiting for ever."""
        try:
            while (job := self._next_job()) is not None and self._do(job):
                pass
        finally:
            self._halt()

    def _do(self, job: _Call | list[_Request]) -> bool:
        """Run ``job`` and hand its answers to the event loop; False: the loop has closed."""
        if isinstance(job, _Call):
            answers: list[tuple[asyncio.Future[Any], int | None]] = [(job.done, None)]
            value, error = _outcome(job.function, *job.args)
        else:
            texts = [text for request in job for text in request.texts]
            answers = [(request.done, len(request.texts)) for request in job]
            value, error = _outcome(self._score, texts)
            if error is None and len(value) != len(texts):
                error = RuntimeError(f"the model gave {len(value)} rows for {len(texts)} reviews")
            if error is None:
                self.batches += 1
                self.reviews += len(texts)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_answer, answers, value, error)
        except RuntimeError:  # the event loop has closed: nobody waits for the answers
            return False
        return True

    def _next_job(self) -> _Call | list[_Request] | None:
        """The next call to run or requests to score, whichever arrived first; None: stop."""
        with self._ready:
            while True:
                while self._running and not (self._waiting or self._calls):
                    self._ready.wait()
                if not self._running:
                    return None
                while self._calls and self._calls[0].done.done():  # its client went away
                    self._calls.popleft()
                while self._waiting and self._waiting[0].done.done():
                    self._queued -= len(self._waiting.popleft().texts)
                if self._calls and not (
                    self._waiting and self._waiting[0].arrived < self._calls[0].arrived
                ):
                    return self._calls.popleft()
                if not self._waiting:
                    continue
                delay = self._waiting[0].arrived + self.wait_s - time.monotonic()
                if self._queued < self.max_texts and delay > 0:
                    self._ready.wait(delay)
                else:
                    return self._take()

    def _take(self) -> list[_Request]:
        """(Holding the lock; the oldest waiting request is live.) The oldest waiting request
        and, of it and the next oldest (the window, ``WINDOW`` x ``max_texts`` live requests),
        those nearest its length, up to ``max_texts`` reviews, in arrival order. Requests
        cancelled while waiting (a handler task cancelled, as uvicorn does to requests still
        running when its shutdown times out) are dropped as they are met. Only the window is
        taken out of the waiting list and put back, so a long list costs no more per call."""
        window: list[_Request] = []
        while self._waiting and len(window) < WINDOW * self.max_texts:
            request = self._waiting.popleft()
            if request.done.done():
                self._queued -= len(request.texts)
            else:
                window.append(request)
        oldest, size = window[0], 0
        taken: set[int] = set()
        for request in sorted(window, key=lambda r: abs(r.longest - oldest.longest)):
            if request is oldest or size + len(request.texts) <= self.max_texts:
                taken.add(id(request))
                size += len(request.texts)
        self._queued -= size
        self._waiting.extendleft(reversed([r for r in window if id(r) not in taken]))
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


def _cancel(futures: list[asyncio.Future[Any]]) -> None:
    """On the event loop: fail the requests that will not be scored."""
    for future in futures:
        if not future.done():
            future.set_exception(Stopped("the model server stopped before scoring this request"))


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
