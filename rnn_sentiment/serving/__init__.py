"""Serve a model over HTTP (``rnn-sentiment serve``): FastAPI and uvicorn, the ``serve`` extra.

* ``app.py``: :func:`~rnn_sentiment.serving.app.create_app`, the application of one loaded model.
* ``batcher.py``: concurrent requests scored together on one worker thread.
* ``server.py``: :func:`~rnn_sentiment.serving.server.serve` runs it with uvicorn and drains the
  requests in flight on SIGTERM.

This module imports neither FastAPI nor uvicorn, so the command line can say how to install them.
"""

from __future__ import annotations

from importlib.util import find_spec

from rnn_sentiment.errors import RnnSentimentError

INSTALL = "pip install 'rnn-sentiment[serve]'"


def require_serve_extra() -> None:
    """Raise a one-line error naming the install command when FastAPI or uvicorn is missing."""
    missing = [name for name in ("fastapi", "uvicorn") if find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise RnnSentimentError(
            f"serving needs {' and '.join(missing)}, which {verb} not installed: {INSTALL}"
        )
