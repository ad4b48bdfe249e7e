"""Micro-batching: the reviews of concurrent requests scored together, on one worker thread.

Each request puts its reviews on an asyncio queue and awaits a future. One collector task takes
the first waiting request, waits ``wait_s`` for others to arrive (32 clients answered together
send their next requests over a millisecond or two; without the wait the batches alternate between
one review and the other 31), takes every waiting request up to ``max_texts`` reviews, and scores
them in one ``predict_proba`` call on the worker thread. ``predict_proba`` sorts the batch by
length and pads each slice only to its longest review, so the reviews of many requests cost what
batch scoring costs. While the worker scores, the event loop keeps reading requests.

Everything that runs the model (``predict_proba`` and ``explain``) goes through the one worker
thread: a PyTorch model is not shared between threads, and one scoring thread leaves the other
cores to the HTTP side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from rnn_sentiment.errors import first_line

T = TypeVar("T")


@dataclass
class _Request:
    texts: Sequence[str]
    done: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    """Scores the reviews of concurrent requests in shared ``score`` calls on one thread.

    Args:
        score: texts -> probabilities [n, labels] in input order (``predict_proba``).
        wait_s: how long to wait for more requests once one has arrived (0: score at once).
        max_texts: the most reviews scored in one call; a request is never split, so one larger
            than this is scored alone.

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
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._queued = 0  # reviews waiting in the queue
        self._carried: _Request | None = None  # the request that did not fit the last batch
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="rnn-sentiment-scorer")
        self._collector: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start collecting (in the running event loop)."""
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting and let the worker finish what it runs; requests still queued fail."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().done.cancel()
        self._worker.shutdown(wait=True)

    async def score(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [len(texts), labels] for ``texts``, scored with other requests' reviews."""
        request = _Request(texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        self._queued += len(texts)
        return await request.done

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the worker thread, between batches (``explain``).

        A failure that is not an ``Exception`` (a Rust panic in the tokenizers library arrives
        as pyo3's PanicException, a BaseException) is raised as a RuntimeError, so that it
        fails one request, not the collector and every request after it.
        """
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)
        except (Exception, asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise RuntimeError(f"{type(exc).__name__}: {first_line(exc)}") from exc

    async def _collect(self) -> None:
        while True:
            batch = [self._carried or await self._take()]
            self._carried = None
            if self.wait_s > 0 and self._queued < self.max_texts:
                await asyncio.sleep(self.wait_s)
            size = len(batch[0].texts)
            while not self._queue.empty():
                request = self._take_nowait()
                if size + len(request.texts) > self.max_texts:
                    self._carried = request
                    break
                batch.append(request)
                size += len(request.texts)
            await self._score_batch(batch)

    async def _take(self) -> _Request:
        request = await self._queue.get()
        self._queued -= len(request.texts)
        return request

    def _take_nowait(self) -> _Request:
        request = self._queue.get_nowait()
        self._queued -= len(request.texts)
        return request

    async def _score_batch(self, batch: list[_Request]) -> None:
        live = [request for request in batch if not request.done.done()]  # gone: not scored
        texts = [text for request in live for text in request.texts]
        try:
            probs = await self.run(self._score, texts)
        except Exception as exc:
            for request in live:
                if not request.done.done():
                    request.done.set_exception(exc)
            return
        self.batches += 1
        self.reviews += len(texts)
        start = 0
        for request in live:
            end = start + len(request.texts)
            if not request.done.done():  # its client may have gone while it was scored
                request.done.set_result(probs[start:end])
            start = end
