"""The model server: ``predict``'s probabilities, micro-batching, limits, errors and shutdown.

The application is driven in-process with FastAPI's TestClient over the bundled model, both its
exported copy (onnxruntime) and its run directory (PyTorch); graceful shutdown is tested on a real
server process sent SIGTERM with a request in flight.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="serving needs the serve extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from rnn_sentiment.errors import DataError, RnnSentimentError  # noqa: E402
from rnn_sentiment.inference.exported import ExportedPredictor  # noqa: E402
from rnn_sentiment.inference.models import BUNDLED_MODEL_DIR, load_predictor  # noqa: E402
from rnn_sentiment.serving import require_serve_extra  # noqa: E402
from rnn_sentiment.serving.app import ServeSettings, create_app  # noqa: E402
from rnn_sentiment.serving.batcher import MicroBatcher, Stopped  # noqa: E402
from rnn_sentiment.serving.server import listen  # noqa: E402
from tests.helpers import invoke  # noqa: E402

REVIEWS = [
    "This movie is not good",
    "A joy from start to end",
    "A dull, slow start.<br /><br />Still, the ending was great and I loved it.",
    "i hated it 😡🎬 but the music 🎵 was wonderful 😍",
    " ".join(["the plot was dull but the acting was great"] * 80),
    "!!!",
]
# The server, started as `rnn-sentiment serve` starts it: resolve, load, serve on a free port.
LAUNCH = """
import sys
from rnn_sentiment.inference.models import load_predictor, resolve_model_dir
from rnn_sentiment.serving.app import ServeSettings
from rnn_sentiment.serving.server import serve
predictor = load_predictor(resolve_model_dir(None), threads=1)
serve(predictor, port=0, settings=ServeSettings(batch_wait_ms=float(sys.argv[1])),
      on_listening=lambda url: print("listening on", url, file=sys.stderr, flush=True))
"""


@pytest.fixture(scope="module", params=["exported", "run"])
def predictor(request: pytest.FixtureRequest) -> Any:
    """The bundled model on onnxruntime (what ``serve`` runs by default), and on PyTorch."""
    if request.param == "exported":
        return load_predictor(BUNDLED_MODEL_DIR, threads=1)
    from rnn_sentiment.inference.predictor import Predictor  # torch

    return Predictor.from_dir(BUNDLED_MODEL_DIR)


@pytest.fixture(scope="module")
def exported() -> ExportedPredictor:
    found = load_predictor(BUNDLED_MODEL_DIR, threads=1)
    assert isinstance(found, ExportedPredictor)
    return found


@pytest.fixture
def client(exported: ExportedPredictor) -> Iterator[TestClient]:
    with TestClient(create_app(exported)) as test_client:
        yield test_client


def test_predict_gives_predicts_probabilities_in_input_order(predictor: Any) -> None:
    expected = predictor.predict(REVIEWS)
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", json={"texts": REVIEWS})
        reversed_response = client.post("/predict", json={"texts": REVIEWS[::-1]})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["label"] for row in rows] == [p.label for p in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row["score"] == pytest.approx(want.score, abs=1e-6)
        assert row["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    backwards = reversed_response.json()["predictions"][::-1]
    np.testing.assert_allclose([r["score"] for r in backwards], [r["score"] for r in rows],
                               atol=1e-6)  # fmt: skip
    assert rows[0]["label"] == "negative" and rows[1]["label"] == "positive"


def test_explain_gives_the_explain_numbers(predictor: Any) -> None:
    text = "This movie is not good"
    expected = predictor.explain(text).to_dict()
    with TestClient(create_app(predictor)) as client:
        response = client.post("/explain", json={"text": text})
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["label"] == expected["label"] == "negative"
    assert [w["word"] for w in got["words"]] == ["This", "movie", "is", "not", "good"]
    for word, want in zip(got["words"], expected["words"], strict=True):
        assert word["attribution"] == pytest.approx(want["attribution"], abs=1e-6)
        assert word["running"] == pytest.approx(want["running"], abs=1e-6)
    strongest = max(got["words"], key=lambda w: w["attribution"])
    assert strongest["word"] == "not"  # the word that turns "good" negative


def test_health_and_metadata(predictor: Any) -> None:
    with TestClient(create_app(predictor, ServeSettings(max_texts=7, max_batch=3))) as client:
        health = client.get("/health")
        metadata = client.get("/metadata").json()
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert metadata["labels"] == ["negative", "positive"]
    assert metadata["metrics"]["test"]["accuracy"] > 0.9
    assert metadata["limits"]["max_texts"] == 7
    assert metadata["limits"]["max_batch"] == 3 < predictor.batch_size  # what a call holds
    if isinstance(predictor, ExportedPredictor):
        assert metadata["engine"] == "onnxruntime"
        assert "bidirectional GRU" in metadata["model_card"]
    else:
        assert metadata["engine"] == "pytorch"
        assert metadata["config"]["model"]["cell"] == "gru"


def test_openapi_docs_and_unknown_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/health", "/metadata"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    assert client.get("/predict").status_code == 405


def test_the_reviews_are_counted_before_any_is_checked(exported: ExportedPredictor) -> None:
    # Found by a red-team pass: pydantic checked every item of a long list of wrong types first,
    # one error each: a 7.5 MB body of 2.5 million [] took 3.7 GB and 26 s on the event loop.
    with TestClient(create_app(exported, ServeSettings(max_texts=100))) as client:
        many = client.post("/predict", content=b'{"texts": [' + b"[]," * 500_000 + b"[]]}",
                           headers={"content-type": "application/json"})  # fmt: skip
        wrong = client.post("/predict", json={"texts": ["fine", *[[]] * 99]})
        schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    assert many.status_code == 413, many.text
    assert many.json() == {"detail": "500,001 reviews in one request; at most 100 (send several "
                                     "requests)"}  # fmt: skip
    assert wrong.status_code == 422
    assert wrong.json()["detail"] == (
        "texts[1]: Input should be a valid string; texts[2]: Input should be a valid string; "
        "texts[3]: Input should be a valid string (and 96 more)"
    )
    texts = schema["properties"]["texts"]
    assert texts["type"] == "array" and texts["items"] == {"type": "string"}
    assert texts["minItems"] == 1 and schema["required"] == ["texts"]


def test_the_page_is_self_contained(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    # Nothing from elsewhere: no external script, style, font or image, and the policy says so.
    assert not re.search(r"https?://|//[a-z]|src=|<link|@import|url\(", page)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert 'fetch("explain"' in page and len(page) < 10_000


LIMITED = [
    (ServeSettings(max_texts=3), {"texts": ["a fine film"] * 4}, 413,
     "4 reviews in one request; at most 3"),
    (ServeSettings(max_chars=10), {"texts": ["ok", "x" * 11]}, 413,
     "texts[1] has 11 characters; at most 10"),
    (ServeSettings(max_chars=10), {"text": "x" * 11}, 413, "text has 11 characters; at most 10"),
    (ServeSettings(max_explain_words=3), {"text": "not good at all"}, 413,
     "text has 4 words as the model reads it (punctuation marks count); this server explains "
     "at most 3 (its --max-explain-words)"),
    (ServeSettings(), {"texts": []}, 422, "texts: List should have at least 1 item"),
    (ServeSettings(), {"texts": ["good", " \n\t"]}, 422,
     "texts[1] is empty; every review needs some text"),
    (ServeSettings(), {"text": ""}, 422, "text is empty"),
]  # fmt: skip
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("settings", "body", "status", "detail"), LIMITED)
def test_limits_and_empty_reviews(
    exported: ExportedPredictor, settings: ServeSettings, body: dict, status: int, detail: str
) -> None:
    with TestClient(create_app(exported, settings)) as client:
        response = client.post("/explain" if "text" in body else "/predict", json=body)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(exported: ExportedPredictor) -> None:
    settings = ServeSettings(max_texts=2, max_chars=10)
    body = b'{"texts": ["' + b"x" * settings.max_body_bytes + b'"]}'
    with TestClient(create_app(exported, settings)) as client:
        response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"the request body is over {settings.max_body_bytes:,} bytes"
    }


BAD_BODIES = [
    (b"{", "the body is not valid JSON"),
    (b'{"texts": ["a", }', "the body is not valid JSON"),
    (b"\xff\xfe\x00", "the body is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON"),
    (b"null", "Input should be a valid dictionary"),
    (b"NaN", "Input should be a valid dictionary"),
    (b'{"texts": "a single string"}', "texts: Input should be a valid list"),
    (b'{"texts": ["fine", 3, null]}', "texts[1]: Input should be a valid string; texts[2]"),
    (b'{"reviews": ["a"]}', "texts: Field required"),
    (b'{"texts": ["a"], "extra": 1}', "extra: Extra inputs are not permitted"),
    (b"", "the body is empty; send a JSON object"),
    # a key twice could mean one thing to a proxy that keeps the first copy, another to us
    (b'{"texts": ["loved it"], "texts": ["hated it"]}', "the key 'texts' is given twice"),
    (b'{"texts": [{"a": 1, "a": 2}]}', "the key 'a' is given twice"),
    (b'{"texts": ["a"], "' + b"k" * 5000 + b'": 1, "' + b"k" * 5000 + b'": 2}', "is given twice"),
]


def test_requests_beyond_max_active_get_503_until_one_ends(
    exported: ExportedPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = threading.Event(), threading.Event()
    real = exported.predict_proba

    def held(texts: Sequence[str]) -> np.ndarray:
        if "hold" in texts:
            inside.set()
            assert release.wait(10)
        return real(texts)

    monkeypatch.setattr(exported, "predict_proba", held)
    with TestClient(create_app(exported, ServeSettings(max_active=1))) as client:
        first: list[Any] = []
        worker = threading.Thread(
            target=lambda: first.append(client.post("/predict", json={"texts": ["hold"]}))
        )
        worker.start()
        assert inside.wait(10)
        busy = client.post("/predict", json={"texts": ["This movie is not good"]})
        health = client.get("/health")  # GET is never refused
        release.set()
        worker.join(10)
        after = client.post("/predict", json={"texts": ["This movie is not good"]})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json() == {"detail": "the server is busy (1 requests in progress); retry shortly"}
    assert health.status_code == 200 and first[0].status_code == 200
    assert after.status_code == 200


def test_explain_requests_beyond_max_explaining_get_503_until_one_ends(
    exported: ExportedPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = threading.Event(), threading.Event()
    real = exported.explain

    def held(text: str, max_words: int | None = None) -> Any:
        inside.set()
        assert release.wait(10)
        return real(text, max_words)

    monkeypatch.setattr(exported, "explain", held)
    with TestClient(create_app(exported, ServeSettings(max_explaining=1))) as client:
        first: list[Any] = []
        worker = threading.Thread(
            target=lambda: first.append(client.post("/explain", json={"text": "not good"}))
        )
        worker.start()
        assert inside.wait(10)
        busy = client.post("/explain", json={"text": "A joy"})
        release.set()
        worker.join(10)
        scored = client.post("/predict", json={"texts": ["This movie is not good"]})
        after = client.post("/explain", json={"text": "A joy"})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json() == {
        "detail": "the server is busy (1 explain requests in progress, its limit); retry shortly"
    }
    assert first[0].status_code == 200 and first[0].json()["label"] == "negative"
    assert scored.status_code == 200 and after.status_code == 200


@pytest.mark.parametrize("endpoint", ["/predict", "/explain"])
def test_a_key_given_twice_is_refused_on_every_endpoint(client: TestClient, endpoint: str) -> None:
    response = client.post(endpoint, content=b'{"text": "good", "text": "bad"}', headers=JSON)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "the body is ambiguous: the key 'text' is given twice in one object; "
        "give each key once"
    }


@pytest.mark.parametrize(("body", "detail"), BAD_BODIES)
def test_malformed_json_is_a_422_with_one_line(
    client: TestClient, body: bytes, detail: str
) -> None:
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    message = response.json()["detail"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message
    assert detail in message
    assert len(message) < 300  # the value sent is never echoed


def test_a_body_that_is_not_declared_json_says_how_to_send_it(client: TestClient) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = client.post("/predict", content=b'{"texts": ["good"]}', headers=form)
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["detail"]


def test_a_lone_surrogate_is_scored_as_u_fffd(client: TestClient) -> None:
    # "\ud83d" is half of a cut emoji: valid JSON, not a character; predict replaces it.
    body = b'{"texts": ["a wonderful film \\ud83d", "a wonderful film \\ufffd"]}'
    response = client.post("/predict", content=body, headers=JSON)
    first, second = response.json()["predictions"]
    assert first == second
    explained = client.post("/explain", content=b'{"text": "great \\ud83d"}',
                            headers=JSON)  # fmt: skip
    assert explained.status_code == 200 and explained.json()["text"] == "great \ufffd"


def test_concurrent_requests_share_batches_and_keep_their_own_answers(
    exported: ExportedPredictor,
) -> None:
    texts = [f"{review} {i}" for i, review in enumerate(REVIEWS * 4)]
    expected = exported.predict_proba(texts)
    app = create_app(exported, ServeSettings(batch_wait_ms=50))
    answers: dict[int, list[float]] = {}
    with TestClient(app) as client:
        start = threading.Barrier(len(texts))

        def ask(index: int) -> None:
            start.wait()
            response = client.post("/predict", json={"texts": [texts[index]]})
            answers[index] = response.json()["predictions"][0]["probabilities"]["positive"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batcher = app.state.batcher
        assert batcher.reviews == len(texts)
        assert batcher.batches < len(texts) / 2  # most requests shared a model call
    got = [answers[i] for i in range(len(texts))]
    np.testing.assert_allclose(got, expected[:, 1], atol=1e-6)


def fake_scorer(calls: list[list[str]]) -> Any:
    def score(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.asarray([[len(t), -len(t)] for t in texts], dtype=np.float32)

    return score


def test_the_batcher_gathers_waiting_requests_without_splitting_them() -> None:
    calls: list[list[str]] = []

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(fake_scorer(calls), wait_s=0.01, max_texts=4)
        batcher.start()
        requests = [["a"], ["bb", "ccc"], ["dddd"], ["eeeee", "f"], ["g" * 7] * 5]
        answers = await asyncio.gather(*(batcher.score(texts) for texts in requests))
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    # Within the 4-review cap, in arrival order; a request larger than the cap goes alone.
    assert calls == [["a", "bb", "ccc", "dddd"], ["eeeee", "f"], ["g" * 7] * 5]
    assert [a[:, 0].tolist() for a in answers] == [[1], [2, 3], [4], [5, 1], [7] * 5]


class Gate:
    """A scorer whose first call, on ["gate"], holds the worker until ``release``: requests
    sent meanwhile all wait together, whatever the timing of the machine."""

    def __init__(self, score: Any) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        self.score = score

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if list(texts) == ["gate"]:
            self.inside.set()
            assert self.release.wait(10)
            return np.zeros((1, 2), dtype=np.float32)
        return self.score(texts)

    async def hold(self, batcher: MicroBatcher) -> asyncio.Future[np.ndarray]:
        """Send the gate request and return once the worker is inside it."""
        gate = asyncio.ensure_future(batcher.score(["gate"]))
        assert await asyncio.to_thread(self.inside.wait, 10)
        return gate


def calls_for(texts: list[str], max_texts: int) -> list[list[int]]:
    """The lengths of the reviews of each score call, for single-review requests all waiting
    when the worker looks."""
    calls: list[list[str]] = []
    gate = Gate(fake_scorer(calls))

    async def scenario() -> None:
        batcher = MicroBatcher(gate, wait_s=0.01, max_texts=max_texts)
        batcher.start()
        held = await gate.hold(batcher)
        tasks = [asyncio.ensure_future(batcher.score([text])) for text in texts]
        await asyncio.sleep(0)  # every request is waiting
        gate.release.set()
        await asyncio.gather(held, *tasks)
        await batcher.stop()

    asyncio.run(scenario())
    return [[len(text) for text in call] for call in calls]


def test_similar_lengths_share_a_call_and_the_oldest_request_is_never_passed_over() -> None:
    # The oldest request goes first, with the nearest length.
    assert calls_for(["a", "x" * 50, "bb", "y" * 49], 2) == [[1, 2], [50, 49]]
    # The window is the oldest 3 x 2 requests: the 2 nearest the oldest 1 arrived 8th, so it
    # does not overtake the six before it.
    lengths = [1, 90, 80, 70, 60, 50, 40, 2]
    assert calls_for(["z" * n for n in lengths], 2) == [[1, 50], [90, 80], [70, 60], [40, 2]]


def test_the_worker_goes_from_call_to_call_without_the_event_loop() -> None:
    second_started, release = threading.Event(), threading.Event()

    def score(texts: Sequence[str]) -> np.ndarray:
        if texts == ["second"]:
            second_started.set()
            assert release.wait(10)
        return np.zeros((len(texts), 2), dtype=np.float32)

    async def scenario() -> tuple[bool, bool]:
        batcher = MicroBatcher(score, wait_s=0, max_texts=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.score(["first"]))
        second = asyncio.ensure_future(batcher.score(["second"]))
        await asyncio.sleep(0)  # both waiting
        # The event loop is blocked here: the worker must start the second call by itself.
        went_on = second_started.wait(10)
        await first  # answered while the second call runs (it cannot end until released)
        answered_early = not second.done()
        release.set()
        await second
        await batcher.stop()
        return went_on, answered_early

    assert asyncio.run(scenario()) == (True, True)


def test_requests_whose_clients_left_are_not_scored_and_the_rest_all_are() -> None:
    calls: list[list[str]] = []
    gate = Gate(fake_scorer(calls))

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(gate, wait_s=0, max_texts=4)
        batcher.start()
        held = await gate.hold(batcher)
        tasks = [asyncio.ensure_future(batcher.score([f"r{i}"])) for i in range(300)]
        await asyncio.sleep(0)
        for task in tasks[::3]:  # a third of the clients go away while waiting
            task.cancel()
        gate.release.set()
        answers = [await held]
        answers += [await task for task in tasks[1::3] + tasks[2::3]]
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    scored = [text for call in calls for text in call]
    gone = {f"r{i}" for i in range(0, 300, 3)}
    assert len(answers) == 201 and not gone & set(scored)
    assert sorted(scored) == sorted({f"r{i}" for i in range(300)} - gone)
    assert all(len(call) <= 4 for call in calls)


def test_explain_calls_and_scoring_take_turns_by_arrival() -> None:
    order: list[str] = []
    gate = Gate(lambda texts: order.append("score") or np.zeros((len(texts), 2), np.float32))

    def explain(name: str) -> str:
        order.append(name)
        return name

    async def scenario() -> None:
        batcher = MicroBatcher(gate, wait_s=0, max_texts=4)
        batcher.start()
        held = await gate.hold(batcher)
        first = asyncio.ensure_future(batcher.run(explain, "explain 1"))
        await asyncio.sleep(0.01)
        scored = asyncio.ensure_future(batcher.score(["a review"]))
        await asyncio.sleep(0.01)
        later = [asyncio.ensure_future(batcher.run(explain, f"explain {i}")) for i in (2, 3)]
        await asyncio.sleep(0)
        gate.release.set()
        await asyncio.gather(held, first, scored, *later)
        await batcher.stop()

    asyncio.run(scenario())
    # A flood of explain calls arriving after a review does not hold it back.
    assert order == ["explain 1", "score", "explain 2", "explain 3"]


def test_stop_fails_waiting_requests_refuses_new_ones_and_the_batcher_restarts() -> None:
    gate = Gate(fake_scorer([]))

    async def scenario() -> tuple[Any, ...]:
        batcher = MicroBatcher(gate, wait_s=0, max_texts=1)
        batcher.start()
        held = await gate.hold(batcher)
        waiting = asyncio.ensure_future(batcher.score(["never scored"]))
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        gate.release.set()  # the call in progress ends; the worker stops after it
        await stopping
        results = await asyncio.gather(held, waiting, return_exceptions=True)
        alive_after_stop = batcher.alive()
        with pytest.raises(Stopped):
            await batcher.score(["too late"])
        batcher.start()
        again = await batcher.score(["again"])
        alive_again = batcher.alive()
        await batcher.stop()
        return (*results, alive_after_stop, again, alive_again)

    held, waiting, alive_after_stop, again, alive_again = asyncio.run(scenario())
    assert held.shape == (1, 2)  # the call in progress finished
    assert isinstance(waiting, Stopped) and not alive_after_stop
    assert again.tolist() == [[5.0, -5.0]] and alive_again


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its log
def test_if_the_worker_fails_every_request_fails_and_health_says_so(
    exported: ExportedPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(exported)) as client:
        assert client.get("/health").status_code == 200
        batcher = client.app.state.batcher  # type: ignore[attr-defined]

        def broken(self: MicroBatcher) -> None:
            raise MemoryError  # outside the model call: nothing catches it but the worker's end

        monkeypatch.setattr(MicroBatcher, "_take", broken)
        failed = client.post("/predict", json={"texts": ["This movie is not good"]})
        batcher._thread.join(5)
        health = client.get("/health")
        after = client.post("/predict", json={"texts": ["fine"]})
    assert failed.status_code == 503 and "stopped" in failed.json()["detail"]
    assert health.status_code == 503 and health.json() == {"status": "unavailable"}
    assert after.status_code == 503 and "not running" in after.json()["detail"]


def test_a_model_that_gives_the_wrong_number_of_rows_fails_its_requests() -> None:
    async def scenario() -> Any:
        batcher = MicroBatcher(lambda texts: np.zeros((1, 2), np.float32), 0, max_texts=4)
        batcher.start()
        result = await asyncio.gather(batcher.score(["a", "b"]), return_exceptions=True)
        await batcher.stop()
        return result[0]

    error = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and "1 rows for 2 reviews" in str(error)


class Panic(BaseException):
    """What a Rust panic in the tokenizers library raises: not an Exception."""


@pytest.mark.parametrize("failure", [ValueError("boom"), Panic("boom"), SystemExit("boom")])
def test_a_scoring_failure_reaches_each_request_of_its_batch_and_no_other(
    failure: BaseException,
) -> None:
    def score(texts: Sequence[str]) -> np.ndarray:
        if "boom" in texts:
            raise failure
        return np.zeros((len(texts), 2), dtype=np.float32)

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(score, wait_s=0.01, max_texts=2)
        batcher.start()
        results = await asyncio.gather(
            batcher.score(["boom"]), batcher.score(["ok"]), batcher.score(["fine", "too"]),
            return_exceptions=True,
        )  # fmt: skip
        results.append(await batcher.score(["after"]))
        await batcher.stop()
        return results

    failed, same_batch, later, after = asyncio.run(scenario())
    expected = ValueError if isinstance(failure, Exception) else RuntimeError
    assert isinstance(failed, expected) and isinstance(same_batch, expected)
    assert "boom" in str(failed)
    assert later.shape == (2, 2) and after.shape == (1, 2)


def test_a_busy_port_is_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DataError, match=rf"cannot listen on 127.0.0.1:{port}: .*in use"):
            listen("127.0.0.1", port)


def test_without_the_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rnn_sentiment.serving.find_spec", lambda name: None)
    with pytest.raises(RnnSentimentError) as caught:
        require_serve_extra()
    assert str(caught.value) == (
        "serving needs fastapi and uvicorn, which are not installed: "
        "pip install 'rnn-sentiment[serve]'"
    )


def start_server(command: list[str]) -> tuple[subprocess.Popen[str], int]:
    """The server in a process of its own, and its port once it says where it listens."""
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert server.stderr is not None
    for line in server.stderr:  # ends when the process does
        found = re.search(r"(?:listening on|serving at) http://127\.0\.0\.1:(\d+)", line)
        if found:
            return server, int(found.group(1))
    server.wait()
    raise AssertionError(f"the server did not start (exit code {server.returncode})")


def test_sigterm_drains_the_requests_in_flight_and_exits_0() -> None:
    # A 1 s batch window holds the request inside the server when SIGTERM arrives.
    server, port = start_server([sys.executable, "-c", LAUNCH, "1000"])
    answer: dict[str, Any] = {}

    def ask() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/predict", json.dumps({"texts": REVIEWS[:2]}),
                           {"Content-Type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        answer.update(status=response.status, body=json.loads(response.read()))

    try:
        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.4)
        server.send_signal(signal.SIGTERM)
        asking.join(timeout=60)
        code = server.wait(timeout=60)
    finally:
        server.kill()
    log = server.stderr.read() if server.stderr else ""
    assert answer["status"] == 200
    assert [p["label"] for p in answer["body"]["predictions"]] == ["negative", "positive"]
    assert code == 0, log
    assert "Traceback" not in log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def cli_has_serve() -> bool:
    from rnn_sentiment.cli import app_commands

    return "serve" in app_commands()


@pytest.mark.skipif(not cli_has_serve(), reason="cli.py has no serve command yet")
def test_cli_serve_without_the_extra_is_one_line() -> None:
    code = ("import sys; sys.modules['fastapi'] = None; sys.argv[0] = 'rnn-sentiment'\n"
            "from rnn_sentiment.cli import main; main()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, "serve"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: serving needs fastapi, which is not installed: pip install 'rnn-sentiment[serve]'"
    ]


@pytest.mark.skipif(not cli_has_serve(), reason="cli.py has no serve command yet")
def test_cli_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rnn_sentiment", "serve", "--port", str(port)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not cli_has_serve(), reason="cli.py has no serve command yet")
def test_cli_serve_says_where_it_listens_and_exits_0_on_sigterm() -> None:
    server, port = start_server([sys.executable, "-m", "rnn_sentiment", "serve", "--port", "0"])
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/predict", json.dumps({"texts": ["not good"]}), JSON)
        assert connection.getresponse().status == 200
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        server.kill()
    log = server.stderr.read() if server.stderr else ""
    assert code == 0, log
    assert "stopped after scoring 1 reviews in 1 batches" in log


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_frees_its_place() -> None:
    # Found by a red-team pass: 128 clients sending headers and one byte of body held every
    # place, and every POST got 503, for as long as they liked.
    from rnn_sentiment.serving.app import BodyLimit

    async def scenario() -> tuple[list[dict[str, Any]], int, bool]:
        sent: list[dict[str, Any]] = []
        called = False

        async def app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal called
            called = True

        async def trickle() -> dict[str, Any]:
            await asyncio.sleep(0.02)
            return {"type": "http.request", "body": b" ", "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        limit = BodyLimit(app, max_bytes=10_000, max_active=1, body_seconds=0.2)
        scope = {"type": "http", "method": "POST", "headers": []}
        await limit(scope, trickle, send)
        return sent, limit.active, called

    sent, active, called = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and active == 0 and not called
    assert json.loads(sent[1]["body"]) == {
        "detail": "the request body did not all arrive within 0.2 s"
    }


def test_limits_that_would_let_requests_hold_too_much_memory_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="requests in progress could hold that much memory"):
        ServeSettings(max_texts=100_000, max_chars=10_000_000)
    assert ServeSettings().max_active * ServeSettings().max_body_bytes < 4 * 2**30
    code, _, err = invoke("serve", "--max-texts", "100000", "--max-chars", "10000000")
    assert code == 2 and err.count("\n") == 1 and "lower one of them" in err, err
    with pytest.raises(RnnSentimentError, match="^max_texts: Input should be greater than"):
        ServeSettings.checked({"max_texts": 0})
