"""The HTTP API of one loaded model (FastAPI): score, explain, describe, and a page for people.

``create_app(predictor)`` returns the application; ``server.serve`` runs it with uvicorn, and
tests drive it with FastAPI's ``TestClient``. Every review reaches the model through the
predictor's own ``predict_proba`` and ``explain`` (the model directory's text pipeline), so the
server's probabilities are exactly ``predict``'s.

* ``POST /predict`` ``{"texts": [...]}``: a label, its probability and every label's
  probability for each review, in input order. Concurrent requests are scored together
  (:mod:`rnn_sentiment.serving.batcher`).
* ``POST /explain`` ``{"text": "..."}``: ``predict --explain``'s numbers (running sentiment and
  occlusion attribution per word).
* ``GET /health``, ``GET /metadata`` (labels, metrics, model card, limits), ``GET /`` (the page),
  ``/docs`` and ``/openapi.json``.

Every error is ``{"detail": "<one line>"}``: 413 for a body or request over a limit, 422 for a
body that is not JSON or not the expected shape (never a 500 or a traceback), 404/405 for
unknown routes and methods, 503 while the scoring worker is not running, 500 only for a fault
in the server itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    model_validator,
)
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnn_sentiment import __version__
from rnn_sentiment.config import CheckedModel
from rnn_sentiment.errors import CheckpointError, DataError
from rnn_sentiment.inference.exported import ExportedPredictor
from rnn_sentiment.inference.results import prediction, words_to_explain
from rnn_sentiment.jsonfile import KeyTwice, loads_once_each
from rnn_sentiment.serving.batcher import MicroBatcher, Stopped
from rnn_sentiment.text import fix_text

if TYPE_CHECKING:
    from rnn_sentiment.inference.predictor import Predictor


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_HELD_BYTES = 16 * 2**30  # the defaults allow 3.9 GiB of bodies in progress at once


class ServeSettings(CheckedModel):
    """How much one request may ask, and how requests are batched (``ServeSettings.checked``
    builds one raising ConfigError)."""

    model_config = ConfigDict(extra="forbid")

    max_texts: int = Field(default=256, ge=1, le=100_000)
    """Reviews in one ``/predict`` request; more is a 413 (send several requests)."""
    max_chars: int = Field(default=20_000, ge=1, le=10_000_000)
    """Characters in one review; a longer one is a 413. IMDB's longest review has 13,704."""
    batch_wait_ms: float = Field(default=1.0, ge=0, le=1000)
    """How long a request waits for others to share its model call while fewer reviews than
    a call holds are waiting (under load there are always enough: no wait). It fills the
    calls when 32 clients answered together send their next requests over a millisecond or
    two, and costs a lone request 1 ms (see ``serving.batcher``)."""
    max_active: int = Field(default=128, ge=1, le=100_000)
    """Requests (POST) in progress at once, their bodies being read included; one more is a
    503 with ``Retry-After: 1``. With the limits above it bounds what requests can hold in
    memory: at most ``max_active`` bodies of ``max_body_bytes``."""
    max_explain_words: int = Field(default=1000, ge=1, le=100_000)
    """Words in one ``/explain`` review (as the model reads it, up to its ``max_length``); more
    is a 413. Explaining reads a review twice per word, so its time grows with the square of
    the length, and the worker scores nothing else meanwhile."""
    max_explaining: int = Field(default=2, ge=1, le=1000)
    """``/explain`` requests waiting or running at once; one more is a 503 with
    ``Retry-After: 1``. Explains take their turn with scoring, so a ``/predict`` never waits
    behind more than this many (one bundled-model explain of 400 words takes 1.2 s on one
    thread, a batch of 8 reviews 20 ms: 128 queued explains held ``/predict`` for minutes)."""
    max_batch: int = Field(default=256, ge=1, le=100_000)
    """The most reviews scored in one call, at most the model's batch size; a larger request
    is scored alone."""
    body_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long a request's body may take to arrive; a slower one is a 408 and frees its place
    (128 clients sending a byte at a time otherwise held every place until they gave up)."""

    @model_validator(mode="after")
    def _bounded_memory(self) -> ServeSettings:
        held = self.max_active * self.max_body_bytes
        if held > MAX_HELD_BYTES:
            raise ValueError(
                f"max_active x the largest body (6 bytes x max_texts x max_chars) is {held:,} "
                f"bytes, over {MAX_HELD_BYTES:,}: requests in progress could hold that much "
                "memory; lower one of them"
            )
        return self

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: every allowed character as a 6-byte ``\\uXXXX``
        escape, plus room for the JSON around them. A longer body is a 413 before parsing."""
        return 6 * self.max_texts * self.max_chars + 64 * 2**10


class PredictRequest(_Strict):
    """Reviews to score."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["This movie is not good", "A joy"]}]},
    )
    # Checked by check_texts, their count first: pydantic would check every item and make one
    # error per wrong one (a 7.5 MB body of 2.5 million [] took 3.7 GB and 26 s on the event loop).
    texts: SkipValidation[list[str]] = Field(
        description="The reviews, each a non-empty string.", json_schema_extra={"minItems": 1}
    )


class ExplainRequest(_Strict):
    """One review to explain word by word."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "This movie is not good"}]}
    )
    text: str = Field(description="The review: a non-empty string.")


class Scored(BaseModel):
    """One review's label, its probability, and every label's probability."""

    label: str
    score: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    """One entry per review, in the order of ``texts``."""

    predictions: list[Scored]


class Word(BaseModel):
    """One word of an explained review."""

    word: str
    running: dict[str, float] = Field(description="Probabilities after reading up to this word.")
    running_label: str
    attribution: float = Field(
        description="p(label | review) - p(label | review without this word)."
    )


class ExplainResponse(BaseModel):
    """``rnn-sentiment predict --explain --format json`` for one review."""

    text: str
    label: str
    probabilities: dict[str, float]
    words: list[Word]
    method: str
    words_cut: int = Field(
        0, description="Words past the model's max_length (tokenizer.max_length), not read."
    )


class ErrorResponse(BaseModel):
    """What went wrong, in one line."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The body or a review is over a limit."},
    422: {"model": ErrorResponse, "description": "Not JSON, or not the expected shape."},
}
# The page must work offline: nothing is loaded from anywhere but this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_app(
    predictor: Predictor | ExportedPredictor, settings: ServeSettings | None = None
) -> FastAPI:
    """The HTTP application serving ``predictor``.

    The micro-batcher starts and stops with the application's lifespan: drive it with
    ``with TestClient(app) as client:``, or run it with uvicorn.
    """
    settings = settings or ServeSettings()
    batcher = MicroBatcher(
        predictor.predict_proba,
        settings.batch_wait_ms / 1000,
        call_size(predictor, settings),
    )
    explaining = Places(settings.max_explaining, "explain requests")
    metadata = model_metadata(predictor, settings)
    page = (files("rnn_sentiment.serving") / "page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="rnn-sentiment",
        version=__version__,
        description=f"Sentiment of movie reviews with the model `{predictor.path.name}`.",
        lifespan=lifespan,
    )
    app.router.route_class = OnceEachKeyRoute
    app.state.batcher = batcher
    _add_error_handlers(app)
    labels = list(predictor.label_names)

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(request: PredictRequest) -> dict[str, Any]:
        """Label each review: its label, that label's probability and every label's."""
        check_texts(request.texts, settings)
        probs = await batcher.score(request.texts)
        scored = [prediction(t, row, labels) for t, row in zip(request.texts, probs, strict=True)]
        rows = [{"label": p.label, "score": p.score, "probabilities": p.probabilities}
                for p in scored]  # fmt: skip
        return {"predictions": rows}

    @app.post("/explain", response_model=ExplainResponse, responses=ERRORS)
    async def explain(request: ExplainRequest) -> dict[str, Any]:
        """Per word: the running sentiment and how much the label's probability drops without
        it (occlusion), as ``predict --explain``."""
        check_texts([request.text], settings, "text")
        check_explain_length(predictor, request.text, settings)
        with explaining.place():
            explanation = (await batcher.run(predictor.explain, request.text)).to_dict()
        explanation["text"] = fix_text(request.text)[0]  # a lone surrogate has no UTF-8
        return explanation

    _add_info_routes(app, metadata, page)
    limits = (settings.max_body_bytes, settings.max_active, settings.body_seconds)
    app.add_middleware(BodyLimit, *limits)
    return app


def call_size(predictor: Predictor | ExportedPredictor, settings: ServeSettings) -> int:
    """Reviews in one model call: ``max_batch``, at most the model's batch size."""
    return min(settings.max_batch, predictor.batch_size)


def _add_info_routes(app: FastAPI, metadata: dict[str, Any], page: str) -> None:
    """``/health``, ``/metadata`` and the page at ``/``: what does not score."""

    @app.get("/health", responses={503: {"description": "The scoring worker is not running."}})
    async def health() -> JSONResponse:
        """``{"status": "ok"}`` while the server takes requests; 503 ``{"status":
        "unavailable"}`` when its scoring worker is not running (stopping, or failed)."""
        if app.state.batcher.alive():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, 503)

    @app.get("/metadata")
    async def describe() -> dict[str, Any]:
        """The model: labels, metrics, model card and engine; and this server's limits."""
        return metadata

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        headers = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(page, headers=headers)


class OnceEachKeyRequest(Request):
    """A request whose JSON body may not give a key twice in one object: ``{"text": "a",
    "text": "b"}`` could mean one review to a proxy or filter in front of the server that keeps
    the first copy and another to the server (Python keeps the last)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_once_each(await self.body())
            except KeyTwice as exc:
                detail = f"the body is ambiguous: {exc}; give each key once"
                raise HTTPException(422, detail) from None
        return self._json


class OnceEachKeyRoute(APIRoute):
    """A route whose handler reads the body as :class:`OnceEachKeyRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def once_each_key(request: Request) -> Response:
            return await handler(OnceEachKeyRequest(request.scope, request.receive))

        return once_each_key


class Refused(Exception):
    """A request the server answers with ``status``, a one-line ``detail`` and ``headers``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class Places:
    """At most ``limit`` requests of one kind in progress at once (on the event loop's thread);
    one more is refused with a 503 and ``Retry-After: 1``."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit, self.kind, self.taken = limit, kind, 0

    @contextmanager
    def place(self) -> Iterator[None]:
        if self.taken >= self.limit:
            detail = (f"the server is busy ({self.taken:,} {self.kind} in progress, its "
                      "limit); retry shortly")  # fmt: skip
            raise Refused(503, detail, {"Retry-After": "1"})
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1


def check_texts(texts: Sequence[Any], settings: ServeSettings, name: str = "texts") -> None:
    """Refuse a request over the limits (413), or with a review that is not a string or is
    empty (422): the count first, so that a long list costs no more than a short one."""
    if not isinstance(texts, list):
        raise Refused(422, f"{name}: Input should be a valid list")
    if not texts:
        raise Refused(422, f"{name}: List should have at least 1 item; send one review or more")
    if len(texts) > settings.max_texts:
        raise Refused(413, f"{len(texts):,} reviews in one request; at most "
                           f"{settings.max_texts:,} (send several requests)")  # fmt: skip
    wrong = [index for index, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        shown = "; ".join(f"{name}[{index}]: Input should be a valid string" for index in wrong[:3])
        raise Refused(422, shown + (f" (and {len(wrong) - 3:,} more)" if len(wrong) > 3 else ""))
    for index, text in enumerate(texts):
        where = f"{name}[{index}]" if name == "texts" else name
        if len(text) > settings.max_chars:
            raise Refused(413, f"{where} has {len(text):,} characters; at most "
                               f"{settings.max_chars:,}")  # fmt: skip
        if not text.strip():
            raise Refused(422, f"{where} is empty; every review needs some text")


def check_explain_length(
    predictor: Predictor | ExportedPredictor, text: str, settings: ServeSettings
) -> None:
    """Refuse (413) a review with more words to explain than the server allows: counted here,
    not after waiting for the worker."""
    words, limit = words_to_explain(predictor.pipeline, text), settings.max_explain_words
    if words > limit:
        raise Refused(413, f"text has {words:,} words as the model reads it (punctuation marks "
                           f"count); this server explains at most {limit:,} (its "
                           "--max-explain-words)")  # fmt: skip


def model_metadata(
    predictor: Predictor | ExportedPredictor, settings: ServeSettings
) -> dict[str, Any]:
    """What ``GET /metadata`` answers: read once, when the server starts."""
    if isinstance(predictor, ExportedPredictor):
        found = predictor.metadata()
        engine = "onnxruntime"
    else:
        from rnn_sentiment.checkpoint import read_metrics  # a run directory: torch is loaded

        try:
            metrics: dict[str, Any] | None = read_metrics(predictor.path)
        except CheckpointError:
            metrics = None
        config = predictor.run.config.model_dump(mode="json", by_alias=True)
        found = {"labels": predictor.label_names, "model_card": None, "metrics": metrics,
                 "config": config}  # fmt: skip
        engine = "pytorch"
    limits = settings.model_dump() | {
        "max_body_bytes": settings.max_body_bytes,
        "max_batch": call_size(predictor, settings),  # what a call holds, the model's batch
    }
    return _finite({"model": predictor.path.name, "engine": engine, **found, "limits": limits})


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": "<one line>"}`` (see the module docstring)."""

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Refused)
        return JSONResponse({"detail": exc.detail}, exc.status, exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_message(request, exc.errors())}, 422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI's "error parsing the body": not UTF-8, too deep
            detail = "the body is not valid JSON (not UTF-8, or nested too deeply)"
            return JSONResponse({"detail": detail}, 422)
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, exc.headers)

    async def stopped(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 503)

    async def bad_review(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)  # "the review has 900 words as ..."

    async def fault(_: Request, exc: Exception) -> JSONResponse:
        detail = f"internal error ({type(exc).__name__}); the server's log has the details"
        return JSONResponse({"detail": detail}, 500)

    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(DataError, bad_review)
    app.add_exception_handler(Stopped, stopped)
    app.add_exception_handler(Exception, fault)


def validation_message(request: Request, errors: Sequence[Any], shown: int = 3) -> str:
    """Pydantic's errors as one line: where and what, never the value sent (it may be huge)."""
    kind = request.headers.get("content-type", "")
    if "json" not in kind:
        return f"send the body as JSON with Content-Type: application/json (got '{kind[:40]}')"
    problems = []
    for error in errors[:shown]:
        place = _place(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            where = error.get("loc", (0, 0))[-1]
            problems.append(f"the body is not valid JSON: {reason} at character {where}")
        elif not place and error.get("type") == "missing":
            problems.append("the body is empty; send a JSON object")
        else:
            problems.append(f"{place or 'body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "; ".join(problems) + more


def _place(loc: Sequence[str | int]) -> str:
    """``texts[3]`` for pydantic's ``("body", "texts", 3)``."""
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:]]
    return "".join(parts).lstrip(".")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413, answered before it is all
    read or parsed (uvicorn itself reads bodies of any size); a request beyond ``max_active``
    in progress is a 503 with ``Retry-After: 1``, answered before its body is read; a body that
    has not all arrived within ``body_seconds`` is a 408."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, max_active: int, body_seconds: float = 30.0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_active = max_active
        self.body_seconds = body_seconds
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_active:
            detail = f"the server is busy ({self.active:,} requests in progress); retry shortly"
            await JSONResponse({"detail": detail}, 503, {"Retry-After": "1"})(scope, receive, send)
            return
        self.active += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.active -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(
                    receive(), deadline - asyncio.get_running_loop().time()
                )
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                detail = f"the request body did not all arrive within {self.body_seconds:g} s"
                await JSONResponse({"detail": detail}, 408, {"Connection": "close"})(
                    scope, receive, send
                )
                return
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is over {self.max_bytes:,} bytes"
        await JSONResponse({"detail": detail}, 413)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then what the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
