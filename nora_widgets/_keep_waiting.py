"""`nora serve`: keep a queued request that is not streamed alive while it waits its turn.

The server writes one reply at a time, so a class's requests queue.  A streamed request gets an
event-stream keep-alive line every 15 s while it waits; a request that is *not* streamed (what
`run_turn`, `nora chat --no-stream` and plain openai-client code send) waited in silence.  The
openai client's timeout (Nora's is 60 s, NORA_TIMEOUT) is the longest gap between two bytes: past
it the client gave up and sent the request again at the back of the queue, and after its last
retry the learner read "the request timed out" (20-30 learners, 512-token replies of 12-15 s each).

This ASGI middleware answers such a request itself once it has waited ``every`` seconds with
no answer begun (KEEPALIVE, 10 s; NORA_SERVE_KEEPALIVE sets it, 0 turns it off): it sends the
response head (200, ``application/json``, no length: chunked), then one space every ``every``
seconds until the reply is ready, then the reply's JSON.  JSON may begin with whitespace, and
the openai client reads such a body as the usual ChatCompletion; since bytes keep coming, its
read timeout never runs out in the queue.  A request answered within ``every`` seconds is
passed on untouched (its status, headers and Content-Length as the server sent them).

Once the head has gone out as 200 the status cannot change.  When the server then ends the
request with an error (a 503 when Ctrl-C stops the reply, any 4xx or 5xx), its error body is the
body: ``{"error": {...}}`` in OpenAI's shape, as the server wrote it (a body that is not such
JSON is put in that shape).  Nora's own client reads a 200 body holding an error as that error,
in the server's words (_answers.not_a_completion).

Its place: inside BrowserOrigins (the head it sends gets the CORS headers too) and outside
StopWhenGone (it sees the 503 that StopWhenGone writes for a reply the stop cut short).
uvicorn logs its one access-log line for the head, whoever sends it.

    app = KeepWaiting(app, every=10.0)
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable

from ._chat_request import error_body

__all__ = ["KeepWaiting", "KEEPALIVE", "KEEPALIVE_ENV", "keepalive_from_env", "seconds_from_env"]

KEEPALIVE = 10.0  # seconds a request waits in silence before the head and the first space go out
KEEPALIVE_ENV = "NORA_SERVE_KEEPALIVE"
_PATHS = ("/v1/chat/completions", "/v1/completions")  # the requests that wait for the model


def seconds_from_env(name: str, default: float, environ: dict | None = None) -> tuple[float, str | None]:
    """(seconds, None) from the environment variable `name` (default when unset; 0: off), or (default, the
    line saying what is wrong).  One reading for nora serve's settings in seconds.
    Example: seconds_from_env("NORA_SERVE_KEEPALIVE", 3.0, {"NORA_SERVE_KEEPALIVE": "soon"})
        -> (3.0, "NORA_SERVE_KEEPALIVE must be a number of seconds, 0 for off (got 'soon')")"""
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return default, None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        return default, f"{name} must be a number of seconds, 0 for off (got {text!r})"
    return seconds, None


def keepalive_from_env(environ: dict | None = None) -> tuple[float, str | None]:
    """(seconds, None) from NORA_SERVE_KEEPALIVE (KEEPALIVE when unset; 0: off), or (KEEPALIVE, the
    line saying what is wrong).  Example: keepalive_from_env({"NORA_SERVE_KEEPALIVE": "1.5"}) -> (1.5, None)"""
    return seconds_from_env(KEEPALIVE_ENV, KEEPALIVE, environ)


class KeepWaiting:
    """ASGI middleware: see the module docstring.  every: seconds of silence before the head goes
    out, and between two spaces after it (0 or None: off, every request passes through)."""

    def __init__(self, app: Any, every: float | None = KEEPALIVE) -> None:
        self.app, self.every = app, every

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if (not self.every or scope.get("type") != "http" or scope.get("method") != "POST"
                or scope.get("path", "").rstrip("/") not in _PATHS):
            await self.app(scope, receive, send)
            return
        received: list[dict] = []  # the request as it came, replayed to the app
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # the client left before its request was whole
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return received.pop(0) if received else await receive()

        if received[-1]["type"] != "http.request" or _streamed(body):  # a stream has its own keep-alive
            await self.app(scope, replay, send)
            return
        await _Waiting(send, self.every).run(self.app, scope, replay)


def _streamed(body: bytes) -> bool:
    """True for a request asking for a stream (or one that is not a JSON object: the server refuses
    it at once, as it came).  Example: _streamed(b'{"stream": true}') -> True"""
    try:
        request = json.loads(body)
    except ValueError:
        return True
    return not isinstance(request, dict) or request.get("stream") is True


class _Waiting:
    """One request's answer: the server's own, or the head and spaces sent here while it waits."""

    def __init__(self, send: Any, every: float) -> None:
        self.send, self.every = send, every
        self.begun = False  # the head has gone out (the server's or ours)
        self.ours = False  # ... and it was ours: the server's status and length are no longer sent
        self.status = 200  # the server's status, once it has sent its head
        self.held = b""  # the body of an error answered after our head, until it is whole
        self.ended = False

    async def run(self, app: Any, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        import anyio

        self.lock = anyio.Lock()  # the head is sent once: by the server or by the keep-alive
        failure = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._keep_alive)
            try:
                await app(scope, receive, self._from_app)
            except Exception as exc:  # raised as it came, after the answer is ended below
                failure = exc
            tasks.cancel_scope.cancel()
        if self.ours and not self.ended:  # the server failed (or stopped) without a whole answer
            why = "the server failed while writing this reply" if failure else "the server ended without a reply"
            await self._end(json.dumps(error_body(why, kind="server_error")).encode())
        if failure is not None:
            raise failure

    async def _keep_alive(self) -> None:
        import anyio

        await anyio.sleep(self.every)
        async with self.lock:
            if self.begun:
                return
            self.begun = self.ours = True
            await self.send({"type": "http.response.start", "status": 200,
                             "headers": [(b"content-type", b"application/json")]})
        while True:
            await anyio.sleep(self.every)
            async with self.lock:
                if self.ended:
                    return
                await self.send({"type": "http.response.body", "body": b" ", "more_body": True})

    async def _from_app(self, message: dict) -> None:
        async with self.lock:
            if message["type"] == "http.response.start":
                if not self.begun:  # in time: the server's answer, untouched
                    self.begun = True
                    await self.send(message)
                else:
                    self.status = message.get("status", 200)
                return
            if message["type"] != "http.response.body" or not self.ours:
                await self.send(message)
                return
            if self.ended:
                return
            more = message.get("more_body", False)
            if self.status < 400:  # the reply: its JSON after the spaces
                self.ended = not more
                await self.send({"type": "http.response.body", "body": message.get("body", b""), "more_body": more})
                return
            self.held += message.get("body", b"")
            if not more:
                await self._end(_as_error(self.held, self.status), locked=True)

    async def _end(self, body: bytes, locked: bool = False) -> None:
        if not locked:
            async with self.lock:
                await self._end(body, locked=True)
            return
        if not self.ended:
            self.ended = True
            await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _as_error(body: bytes, status: int) -> bytes:
    """An error answered after the head: its body as the server wrote it when that is OpenAI's
    {"error": {...}}, else that shape around its text.
    Example: _as_error(b"Internal Server Error", 500) -> b'{"error": {"message": "Internal Server Error (HTTP 500)", ...'"""
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("error"), dict):
        return body
    detail = found.get("detail") if isinstance(found, dict) else None  # FastAPI's own {"detail": ...}
    text = detail if isinstance(detail, str) else body.decode("utf-8", "replace").strip()
    return json.dumps(error_body(f"{text or 'no reply'} (HTTP {status})",
                                 kind="server_error" if status >= 500 else "invalid_request_error")).encode()
