"""nora serve's check of streamed requests against the window (nora_widgets._overflow_check),
as an ASGI middleware in front of a small real ASGI app that records what reached it."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from nora_widgets._overflow_check import OverflowCheck

N_CTX = 100


def run(coroutine) -> None:
    """asyncio.run in a thread of its own: an earlier test in the same process may have left an
    event loop running in the main thread (Playwright's sync API does), and asyncio.run refuses that."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # pragma: no cover - handed back to the test
            failure.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(30)
    if failure:
        raise failure[0]


class RecordingApp:
    """The app behind the check: reads the whole body it is given and answers 200 "ok"."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Counter:
    """count_prompt: one token per word, and a log of what it was asked to count."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[list[dict]] = []
        self.fail = fail

    def __call__(self, messages):
        self.seen.append(messages)
        if self.fail:
            raise RuntimeError("tokenizer unavailable")
        return sum(len(m["content"].split()) for m in messages)


def request(body: dict | bytes, *, path="/v1/chat/completions", key: str | None = None, chunks: int = 1):
    """Run one POST through OverflowCheck(RecordingApp); returns (status, response body, app, counter)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    size = -(-len(raw) // chunks)
    parts = [raw[i:i + size] for i in range(0, len(raw), size)] or [b""]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    app, counter = RecordingApp(), Counter()
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    check = OverflowCheck(app, counter, N_CTX, api_key="k3y" if key is not None else None)
    run(check(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, payload, app, counter


def chat(words: int, stream=True, **extra) -> dict:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "w " * words}], **extra}


def test_a_streamed_request_that_fits_reaches_the_app_with_its_body_intact():
    body = chat(20, max_tokens=5)
    status, payload, app, counter = request(body, chunks=3)  # the body arrives in three pieces
    assert (status, payload) == (200, b"ok")
    assert app.bodies == [json.dumps(body).encode()]  # replayed exactly, all pieces
    assert counter.seen == [[{"role": "user", "content": "w " * 20}]]


def test_a_streamed_request_too_long_is_refused_before_the_app_sees_it():
    pytest.importorskip("llama_cpp.server.errors")
    status, payload, app, counter = request(chat(N_CTX, max_tokens=7))
    assert status == 400 and app.bodies == []
    error = json.loads(payload)["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"This model's maximum context length is {N_CTX} tokens. "
                                       f"However, you requested {N_CTX + 7} tokens ({N_CTX} in the messages, 7 ")
    status, _payload, app, _counter = request(chat(N_CTX - 1))  # one token under: llama.cpp's rule is >=
    assert status == 200 and len(app.bodies) == 1


@pytest.mark.parametrize("body", [
    chat(500, stream=False),                                                   # the server's own 400 covers it
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": "w " * 500}]}]},
    {"model": "m", "stream": True, "messages": [{"role": "tool", "content": "w " * 500}]},
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "w " * 500, "tool_calls": []}]},
    {"model": "m", "stream": True, "messages": []},
    chat(500, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    b"{not json",
], ids=["not-streamed", "content-parts", "tool-role", "extra-fields", "no-messages", "tools", "not-json"])
def test_what_it_cannot_count_exactly_goes_to_the_server_untouched(body):
    status, _payload, app, counter = request(body)
    assert status == 200 and counter.seen == []
    assert app.bodies == [body if isinstance(body, bytes) else json.dumps(body).encode()]


def test_other_paths_and_a_missing_key_pass_through_uncounted():
    for kwargs in ({"path": "/v1/completions"}, {"key": "wrong"}):
        status, _payload, app, counter = request(chat(500), **kwargs)
        assert status == 200 and counter.seen == [] and len(app.bodies) == 1  # the server answers (401 for a bad key)
    pytest.importorskip("llama_cpp.server.errors")
    status, _payload, app, _counter = request(chat(500), key="k3y")  # the right key: checked
    assert status == 400 and app.bodies == []


def test_a_counter_that_fails_lets_the_server_decide():
    app, counter = RecordingApp(), Counter(fail=True)
    incoming = [{"type": "http.request", "body": json.dumps(chat(500)).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    run(OverflowCheck(app, counter, N_CTX)(scope, receive, send))
    assert sent[0]["status"] == 200 and len(counter.seen) == 1 and len(app.bodies) == 1
