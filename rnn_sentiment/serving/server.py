"""Run a model's HTTP application with uvicorn until SIGTERM or Ctrl-C, then drain and return.

uvicorn's graceful shutdown stops accepting connections, lets the requests in flight finish (the
micro-batcher keeps scoring until the application's lifespan ends) and then re-raises the signal it
stopped for, which would kill the process with it. Here that signal lands in a handler that only
notes it, so :func:`serve` returns normally and ``rnn-sentiment serve`` exits 0.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rnn_sentiment.errors import DataError, RnnSentimentError
from rnn_sentiment.serving import require_serve_extra
from rnn_sentiment.signals import StopSignals

if TYPE_CHECKING:
    from rnn_sentiment.inference.exported import ExportedPredictor
    from rnn_sentiment.inference.predictor import Predictor
    from rnn_sentiment.serving.app import ServeSettings

# How long requests in flight may take to finish after SIGTERM before they are dropped.
DRAIN_SECONDS = 30


@dataclass(frozen=True)
class Served:
    """What a server did before it stopped."""

    reviews: int
    """Reviews scored by ``/predict``."""
    batches: int
    """Model calls they took: ``reviews / batches`` is the mean micro-batch."""


def serve(
    predictor: Predictor | ExportedPredictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    on_listening: Callable[[str], None] | None = None,
    log_level: str = "info",
) -> Served:
    """Serve ``predictor`` on ``host``:``port`` (0: a free port) until SIGTERM or Ctrl-C, let
    the requests in flight finish, and say how many reviews were scored in how many batches.

    ``on_listening`` gets the server's URL once its socket listens (before the first request is
    accepted). uvicorn logs to stderr at ``log_level``; requests are not logged one by one.

    Raises:
        RnnSentimentError: FastAPI or uvicorn is not installed (the message says how to), or
            the application did not start.
        DataError: ``host``:``port`` cannot be listened on (in use, no such address).
    """
    require_serve_extra()
    import uvicorn

    from rnn_sentiment.serving.app import create_app

    sock = listen(host, port)
    port = sock.getsockname()[1]
    app = create_app(predictor, settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        access_log=False, timeout_graceful_shutdown=DRAIN_SECONDS, lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    if on_listening is not None:
        on_listening(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    with StopSignals(), sock:
        server.run(sockets=[sock])
    if not server.started:
        raise RnnSentimentError("the server did not start; its log above says why")
    return Served(app.state.batcher.reviews, app.state.batcher.batches)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, bound here so that a busy port is a one-line
    error (uvicorn would exit the process) and port 0 gets a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        reason = exc.strerror or type(exc).__name__
        raise DataError(
            f"cannot listen on {host}:{port}: {reason}; try another --host/--port"
        ) from None
    return sock
