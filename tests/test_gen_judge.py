"""The OpenAI-compatible LLM judge against a stub HTTP server on localhost: scores, raw replies, the on-disk cache,
bounded retries with backoff, timeouts, junk, refused connections, and the rating parser."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soi.errors import SoiError
from soi.gen.scorers import (
    DEFAULT_RUBRIC,
    OpenAIJudge,
    chat_endpoint,
    check_rubric,
    fill_rubric,
    parse_rating,
    request_key,
)

ROWS = [{"prompt": "¿Cuánto es 2+2?", "response": "#### 4", "answer": "4", "language": "es"},
        {"prompt": "Combien font 3+3 ?", "response": "#### 6", "answer": "6", "language": "fr"},
        {"prompt": "What is 5+5?", "response": None, "answer": "10", "language": "en"}]
PREDS = ["#### 4", "six", "#### 11"]


def completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


class Stub:
    """A chat-completions server; ``behave(n, body)`` returns ``(status, payload bytes, delay seconds)`` for the
    n-th request (0-based). Records every request body and its headers."""

    def __init__(self, behave: Callable[[int, dict[str, Any]], tuple[int, bytes, float]]) -> None:
        self.behave = behave
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    n = len(stub.bodies)
                    stub.bodies.append(body)
                    stub.headers.append(dict(self.headers))
                    stub.paths.append(self.path)
                status, payload, delay = stub.behave(n, body)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        return len(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[..., Stub]]:
    made: list[Stub] = []

    def make(behave: Callable[[int, dict[str, Any]], tuple[int, bytes, float]]) -> Stub:
        made.append(Stub(behave))
        return made[-1]

    yield make
    for s in made:
        s.close()


def rating_of(body: dict[str, Any]) -> int:
    """The stub judge's deterministic rating: 5 when the response block holds the reference answer, else 2."""
    text = body["messages"][0]["content"]
    ref = text.split("[Reference answer]\n")[1].split("\n")[0]
    resp = text.split("[Response]\n")[1].split("\n\n")[0]
    return 5 if ref.replace("#### ", "") in resp else 2


def good(n: int, body: dict[str, Any]) -> tuple[int, bytes, float]:
    return 200, completion(f"Looks {'right' if rating_of(body) == 5 else 'wrong'}.\nRating: [[{rating_of(body)}]]"), 0


def judge(url: str, tmp_path: Path | None, **kw: Any) -> tuple[OpenAIJudge, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("workers", 1)
    j = OpenAIJudge(url, "stub-model", cache_dir=None if tmp_path is None else tmp_path / "cache",
                    sleep=sleeps.append, **kw)
    return j, sleeps


def test_scores_raw_replies_and_request_shape(stub: Callable[..., Stub], tmp_path: Path) -> None:
    s = stub(good)
    j, sleeps = judge(s.url, tmp_path)
    out = j.evaluate(ROWS, PREDS)
    np.testing.assert_allclose(out.values, [1.0, 0.25, 0.25])  # ratings 5, 2, 2 -> (N - 1) / 4
    assert out.raw is not None and out.raw[0] == "Looks right.\nRating: [[5]]" and out.raw[1].endswith("[[2]]")
    assert s.count == 3 and s.paths == ["/v1/chat/completions"] * 3 and sleeps == []
    body = s.bodies[0]
    assert body["model"] == "stub-model" and body["temperature"] == 0.0 and body["max_tokens"] == 256
    assert body["messages"] == [{"role": "user", "content": fill_rubric(DEFAULT_RUBRIC, ROWS[0], PREDS[0])}]
    assert "¿Cuánto es 2+2?" in body["messages"][0]["content"]
    assert "[Reference answer]\n10\n" in s.bodies[2]["messages"][0]["content"]  # no response: the answer
    np.testing.assert_array_equal(j.score(ROWS, PREDS), out.values)  # score() = evaluate().values


def test_cache_rerun_makes_no_requests(stub: Callable[..., Stub], tmp_path: Path) -> None:
    s = stub(good)
    first, _ = judge(s.url, tmp_path)
    a = first.evaluate(ROWS, PREDS)
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 3 and first.requests == 3 and first.cache_hits == 0
    entry = json.loads(files[0].read_text(encoding="utf-8"))
    assert entry["key"] == files[0].stem == request_key(entry["request"]) and files[0].parent.name == entry["key"][:2]
    assert entry["reply"] in a.raw and entry["endpoint"] == f"{s.url}/v1/chat/completions"
    again, _ = judge(s.url + "/v1", tmp_path)  # another URL spelling, the same requests: all cached
    b = again.evaluate(ROWS, PREDS)
    assert s.count == 3 and again.requests == 0 and again.cache_hits == 3
    np.testing.assert_array_equal(a.values, b.values) and a.raw == b.raw
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # atomic writes leave nothing behind
    other, _ = judge(s.url, tmp_path, max_tokens=64)  # a different request body: asked again
    other.evaluate(ROWS[:1], PREDS[:1])
    assert s.count == 4


def test_corrupt_cache_entry_is_asked_again(stub: Callable[..., Stub], tmp_path: Path) -> None:
    s = stub(good)
    j, _ = judge(s.url, tmp_path)
    j.evaluate(ROWS[:1], PREDS[:1])
    (path,) = (tmp_path / "cache").rglob("*.json")
    path.write_text("{not json", encoding="utf-8")
    again, _ = judge(s.url, tmp_path)
    assert again.evaluate(ROWS[:1], PREDS[:1]).values[0] == 1.0 and s.count == 2
    assert json.loads(path.read_text(encoding="utf-8"))["score"] == 1.0


def test_fails_twice_then_succeeds_with_backoff(stub: Callable[..., Stub], tmp_path: Path) -> None:
    s = stub(lambda n, body: (503, b'{"error": "loading"}', 0) if n < 2 else good(n, body))
    j, sleeps = judge(s.url, tmp_path, retries=3, backoff_s=0.5)
    out = j.evaluate(ROWS[:1], PREDS[:1])
    assert out.values[0] == 1.0 and s.count == 3 and j.requests == 3
    assert sleeps == [0.5, 1.0]  # backoff_s * 2**attempt before each retry


def test_rate_limit_is_retried(stub: Callable[..., Stub]) -> None:
    s = stub(lambda n, body: (429, b"{}", 0) if n == 0 else good(n, body))
    j, sleeps = judge(s.url, None, retries=1)
    assert j.evaluate(ROWS[:1], PREDS[:1]).values[0] == 1.0 and s.count == 2 and sleeps == [0.01]


def test_always_down_gives_one_error_after_the_retries(stub: Callable[..., Stub], tmp_path: Path) -> None:
    s = stub(lambda n, body: (500, b"oops", 0))
    j, sleeps = judge(s.url, tmp_path, retries=2)
    with pytest.raises(SoiError) as err:
        j.evaluate(ROWS, PREDS)
    msg = str(err.value)
    assert msg == f"judge endpoint {s.url}/v1/chat/completions: HTTP 500 Internal Server Error after 3 attempt(s)"
    assert s.count == 3 and len(sleeps) == 2 and "\n" not in msg
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))


@pytest.mark.parametrize(("payload", "reason"), [
    (b"<html>gateway</html>", "reply is not a chat completion"),
    (json.dumps({"choices": []}).encode(), "reply is not a chat completion"),
    (completion("I would rate it highly."), "no rating [[1-5]] in the reply"),
    (completion("Rating: [[9]]"), "no rating [[1-5]] in the reply"),
])
def test_junk_is_retried_then_an_error(stub: Callable[..., Stub], payload: bytes, reason: str) -> None:
    s = stub(lambda n, body: (200, payload, 0))
    j, _ = judge(s.url, None, retries=1)
    with pytest.raises(SoiError, match=rf"^judge endpoint {s.url}/v1/chat/completions: ") as err:
        j.evaluate(ROWS[:1], PREDS[:1])
    assert reason in str(err.value) and "after 2 attempt(s)" in str(err.value) and s.count == 2


def test_slow_endpoint_times_out(stub: Callable[..., Stub]) -> None:
    s = stub(lambda n, body: (*good(n, body)[:2], 1.5))
    j, _ = judge(s.url, None, retries=1, timeout_s=0.2)
    t0 = time.perf_counter()
    with pytest.raises(SoiError, match=r"no reply within 0.2 s after 2 attempt\(s\)"):
        j.evaluate(ROWS[:1], PREDS[:1])
    assert s.count == 2 and time.perf_counter() - t0 < 1.4  # bounded: 2 x 0.2 s, not the server's 1.5 s each


def test_client_errors_are_not_retried(stub: Callable[..., Stub]) -> None:
    s = stub(lambda n, body: (404, b'{"error": "model not found"}', 0))
    j, sleeps = judge(s.url, None, retries=3)
    with pytest.raises(SoiError, match=r"HTTP 404 Not Found \(check scoring.judge.url and scoring.judge.model\)"):
        j.evaluate(ROWS[:1], PREDS[:1])
    assert s.count == 1 and sleeps == []


def test_connection_refused_names_the_endpoint() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    j, sleeps = judge(f"http://127.0.0.1:{port}", None, retries=2)
    with pytest.raises(SoiError, match=rf"^judge endpoint http://127.0.0.1:{port}/v1/chat/completions: cannot "
                       r"connect \(.*\) after 3 attempt\(s\)$"):
        j.evaluate(ROWS[:1], PREDS[:1])
    assert j.requests == 3 and len(sleeps) == 2


def test_failure_midway_keeps_the_answers_so_far(stub: Callable[..., Stub], tmp_path: Path) -> None:
    state = {"up": True}
    s = stub(lambda n, body: good(n, body) if state["up"] and n < 2 else (500, b"", 0))
    j, _ = judge(s.url, tmp_path, retries=0)
    with pytest.raises(SoiError, match="HTTP 500"):
        j.evaluate(ROWS, PREDS)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2
    s.behave = good
    again, _ = judge(s.url, tmp_path)
    out = again.evaluate(ROWS, PREDS)
    assert again.requests == 1 and again.cache_hits == 2
    np.testing.assert_allclose(out.values, [1.0, 0.25, 0.25])


def test_parallel_workers_keep_row_order(stub: Callable[..., Stub]) -> None:
    s = stub(lambda n, body: (*good(n, body)[:2], 0.05))
    rows = [{"prompt": f"q{i}", "response": f"#### {i}", "language": "en"} for i in range(12)]
    preds = [f"#### {i}" if i % 3 else "no" for i in range(12)]
    j, _ = judge(s.url, None, workers=4)
    out = j.evaluate(rows, preds)
    np.testing.assert_allclose(out.values, [0.25 if i % 3 == 0 else 1.0 for i in range(12)])
    assert s.count == 12


def test_parallel_failure_stops_the_other_workers(stub: Callable[..., Stub]) -> None:
    s = stub(lambda n, body: (500, b"", 0.02))
    rows = [{"prompt": f"q{i}", "response": str(i), "language": "en"} for i in range(40)]
    j, _ = judge(s.url, None, workers=3, retries=1)
    with pytest.raises(SoiError, match="HTTP 500 Internal Server Error after 2 attempt"):  # the cause, not "stopped"
        j.evaluate(rows, ["x"] * 40)
    assert s.count <= 3 * 2 + 3  # the workers in flight finish their attempt; nothing else is asked (not 80)


def test_bearer_token_from_the_environment(stub: Callable[..., Stub], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    s = stub(good)
    j, _ = judge(s.url, tmp_path, api_key_env="SOI_TEST_JUDGE_KEY")
    with pytest.raises(SoiError, match="environment variable SOI_TEST_JUDGE_KEY"):
        j.evaluate(ROWS[:1], PREDS[:1])
    assert s.count == 0
    monkeypatch.setenv("SOI_TEST_JUDGE_KEY", "sekret")
    j.evaluate(ROWS[:1], PREDS[:1])
    assert s.headers[0]["Authorization"] == "Bearer sekret"
    assert "sekret" not in next((tmp_path / "cache").rglob("*.json")).read_text(encoding="utf-8")


def test_bad_parameters() -> None:
    with pytest.raises(SoiError, match="no endpoint url"):
        OpenAIJudge("", "m")
    with pytest.raises(SoiError, match="no model name"):
        OpenAIJudge("http://x", "")
    with pytest.raises(SoiError, match=r"must contain \{response\}"):
        OpenAIJudge("http://x", "m", rubric="Rate {prompt}")
    with pytest.raises(SoiError, match="timeout_s must be a positive number"):
        OpenAIJudge("http://x", "m", timeout_s=0)
    assert check_rubric("{prompt} {reference} {response}") is None
    assert "unknown placeholder" in (check_rubric("{response} {answer}") or "")
    assert "not a str.format template" in (check_rubric("{response") or "")


@pytest.mark.parametrize(("url", "endpoint"), [
    ("http://h:8000", "http://h:8000/v1/chat/completions"), ("http://h:8000/", "http://h:8000/v1/chat/completions"),
    ("http://h/v1", "http://h/v1/chat/completions"), ("https://api.x/v1/chat/completions",
                                                      "https://api.x/v1/chat/completions"),
])
def test_chat_endpoint(url: str, endpoint: str) -> None:
    assert chat_endpoint(url) == endpoint


@pytest.mark.parametrize(("text", "expected"), [
    ("Good.\nRating: [[5]]", 1.0), ("Rating: [[1]]", 0.0), ("[[3]] at first, then [[4]]", 0.75),
    ("Score: 2", 0.25), ("rating = **3**", 0.5), ("[[2.5]]", 0.375), ("Rating: [[0]]", None), ("[[6]]", None),
    ("no number", None), ("", None), (None, None), ("Score: 4 but [[2]]", 0.25),
])
def test_parse_rating_table(text: str | None, expected: float | None) -> None:
    assert parse_rating(text) == expected


_plain = st.text(st.characters(blacklist_characters="[]:=", blacklist_categories=("Cs",)), max_size=60).filter(
    lambda t: "rating" not in t.lower() and "score" not in t.lower())


@settings(max_examples=200, deadline=None)
@given(before=_plain, after=_plain, n=st.integers(-3, 9))
def test_parse_rating_property(before: str, after: str, n: int) -> None:
    """Any surrounding text: the bracketed rating N is read back as (N - 1) / 4 inside 1..5, else None."""
    got = parse_rating(f"{before}Rating: [[{n}]]{after}")
    assert got == ((n - 1) / 4 if 1 <= n <= 5 else None)
