"""KeepWaiting (nora serve's keep-alive for a request that is not streamed), in front of a tiny real
ASGI app served by uvicorn on 127.0.0.1, read by httpx and by the real openai client.  No model."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import httpx2
import pytest

from nora_widgets._keep_waiting import KeepWaiting, keepalive_from_env

pytestmark = pytest.mark.timeout(60)
REPLY = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello!"}}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
STOPPED = "nora serve was stopped before this reply was complete: send the request again when it is back"


async def slow_app(scope, receive, send):
    """Waits the request's "delay" seconds, then answers its "status" (200: REPLY; 503: the stop's
    error, as StopWhenGone writes it; 500: a plain-text page; "none": ends with no answer at all)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    asked = json.loads(body)
    await asyncio.sleep(asked.get("delay", 0))
    status = asked.get("status", 200)
    if status == "none":
        return
    kind, payload = b"application/json", json.dumps(REPLY).encode()
    if status == 503:
        payload = json.dumps({"error": {"message": STOPPED, "type": "server_error", "param": None,
                                        "code": None}}).encode()
    elif status == 500:
        kind, payload = b"text/plain; charset=utf-8", b"Internal Server Error"
    if asked.get("stream"):
        kind, payload = b"text/event-stream", b"data: " + json.dumps(REPLY).encode() + b"\n\ndata: [DONE]\n\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class Served:
    """`app` served by uvicorn in a thread on a free loopback port; its log records are kept."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="info",
                                                    lifespan="off"))
        self.records: list[logging.LogRecord] = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        for name in ("uvicorn.error", "uvicorn.access", "asyncio"):
            logging.getLogger(name).addHandler(self.handler)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        for name in ("uvicorn.error", "uvicorn.access", "asyncio"):
            logging.getLogger(name).removeHandler(self.handler)

    def openai(self, timeout: float):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="any", timeout=timeout, max_retries=0)

    def post(self, timeout: float = 10, **asked):
        return httpx2.post(self.url + "/v1/chat/completions", json={"model": "m", "messages": [], **asked},
                           timeout=timeout)

    def wait_until_idle(self, hang_guard: float = 20.0) -> None:
        """Wait until every request's task has ended: whatever uvicorn logs for a request after its app has
        returned ("Exception in ASGI application", "... returned without completing response") is logged by then."""
        deadline = time.monotonic() + hang_guard
        while self.server.server_state.tasks:
            assert time.monotonic() < deadline, f"a request was still being answered after {hang_guard} s"
            time.sleep(0.01)

    def access_lines(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == "uvicorn.access"]

    def troubles(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


@pytest.fixture
def served():
    made: list[Served] = []

    def serve(app) -> Served:
        made.append(Served(app))
        return made[-1]

    yield serve
    for one in made:
        one.close()


ASK = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def test_a_reply_in_time_is_passed_on_byte_for_byte(served):
    bare, kept = served(slow_app), served(KeepWaiting(slow_app, every=0.5))
    answers = [s.post(delay=0.1) for s in (bare, kept)]
    headers = [{k: v for k, v in a.headers.items() if k != "date"} for a in answers]
    assert headers[0] == headers[1] and headers[1]["content-length"] == str(len(json.dumps(REPLY)))
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == answers[1].content == json.dumps(REPLY).encode()


def test_a_slow_reply_comes_after_spaces_and_the_openai_client_reads_it(served):
    kept = served(KeepWaiting(slow_app, every=0.3))
    answer = kept.post(delay=1.6)
    assert answer.status_code == 200 and "content-length" not in answer.headers
    assert answer.headers["content-type"] == "application/json"
    # a space every 0.3 s of the 1.6 s (five on a quiet machine; fewer when it is busy, never none)
    assert answer.content.startswith(b"  ") and answer.content.lstrip() == json.dumps(REPLY).encode()
    # the client's timeout (0.8 s) is shorter than the wait (2 s): the spaces keep it reading
    asked = time.monotonic()
    reply = kept.openai(timeout=0.8).chat.completions.create(**ASK, extra_body={"delay": 2.0})
    waited = time.monotonic() - asked
    assert type(reply).__name__ == "ChatCompletion" and reply.choices[0].message.content == "Hello!"
    assert reply.usage.total_tokens == 5 and waited > 1.9
    assert len(kept.access_lines()) == 2 and all('"POST /v1/chat/completions HTTP/1.1" 200' in line
                                                  for line in kept.access_lines())
    assert kept.troubles() == []


def test_without_it_the_same_wait_is_a_timeout(served):
    import openai

    for bare in (served(slow_app), served(KeepWaiting(slow_app, every=0))):  # 0: off
        with pytest.raises(openai.APITimeoutError):
            bare.openai(timeout=0.8).chat.completions.create(**ASK, extra_body={"delay": 2.0})


def test_a_stream_and_another_path_pass_through(served):
    kept = served(KeepWaiting(slow_app, every=0.2))
    streamed = kept.post(delay=0.7, stream=True)
    assert streamed.headers["content-type"] == "text/event-stream" and streamed.content.startswith(b"data: ")
    other = httpx2.post(kept.url + "/v1/embeddings", json={"delay": 0.7}, timeout=10)
    assert other.content == json.dumps(REPLY).encode() and "content-length" in other.headers


@pytest.mark.parametrize("status", [503, 500, "none"])
def test_an_error_after_the_head_is_the_body_in_openais_shape(served, status):
    kept = served(KeepWaiting(slow_app, every=0.2))
    answer = kept.post(delay=0.7, status=status)
    # the head had gone out: the body starts with the spaces sent while it waited (how many: the machine's load)
    assert answer.status_code == 200 and answer.content.startswith(b" ")
    error = answer.json()["error"]
    assert error["type"] == "server_error"
    assert error["message"] == {503: STOPPED, 500: "Internal Server Error (HTTP 500)",
                                "none": "the server ended without a reply"}[status]
    assert kept.troubles() == []


def test_nora_says_the_servers_words_for_an_error_after_the_head(served):
    from nora_widgets.conversation import run_turn
    from nora_widgets.errors import ErrorBodyError, describe_failure

    kept = served(KeepWaiting(slow_app, every=0.2))
    history = [{"role": "system", "content": "Be brief."}]
    with pytest.raises(ErrorBodyError) as caught:
        run_turn(kept.openai(timeout=5), history, "Hi", model="m", extra_body={"delay": 0.7, "status": 503})
    assert history == [{"role": "system", "content": "Be brief."}]  # rolled back
    assert describe_failure(caught.value).line() == (
        f"(error talking to the model: the server answered with an error: {STOPPED} - try again in a moment)")


def test_a_client_that_leaves_while_it_waits_leaves_no_trace(served):
    gone = threading.Event()

    async def app(scope, receive, send):  # as StopWhenGone: hears the disconnect while it waits
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        await asyncio.sleep(0.5)  # the reply the server then throws away, spaces still going out
        await slow_app(scope, _one({"type": "http.request", "body": b'{"delay": 0}'}), send)

    kept = served(KeepWaiting(app, every=0.1))
    with httpx2.stream("POST", kept.url + "/v1/chat/completions", json=ASK, timeout=5) as answer:
        assert answer.status_code == 200  # the head came (after 0.1 s); the client leaves before the reply
    assert gone.wait(20), "the app never heard the client leave"
    kept.wait_until_idle()  # the app has returned (0.5 s later, or more on a busy machine) and uvicorn said its say
    assert kept.troubles() == []
    assert len(kept.access_lines()) == 1


def _one(message: dict):
    async def receive() -> dict:
        return message
    return receive


def test_the_head_it_sends_carries_the_cors_headers(served):
    from nora_widgets._browser import BrowserOrigins

    kept = served(BrowserOrigins(KeepWaiting(slow_app, every=0.2)))
    answer = httpx2.post(kept.url + "/v1/chat/completions", json={"delay": 0.7}, timeout=5,
                         headers={"Origin": "http://localhost:5500"})
    assert answer.content.startswith(b" ") and answer.headers["access-control-allow-origin"] == "http://localhost:5500"


@pytest.mark.parametrize("value, found", [
    (None, (10.0, None)), ("1.5", (1.5, None)), ("0", (0.0, None)),
    ("soon", (10.0, "NORA_SERVE_KEEPALIVE must be a number of seconds, 0 for off (got 'soon')")),
    ("-1", (10.0, "NORA_SERVE_KEEPALIVE must be a number of seconds, 0 for off (got '-1')")),
])
def test_the_keepalive_setting(value, found):
    assert keepalive_from_env({} if value is None else {"NORA_SERVE_KEEPALIVE": value}) == found
