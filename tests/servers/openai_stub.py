"""A small OpenAI-compatible HTTP server on 127.0.0.1 that can misbehave on purpose.

Tests point a real ``openai.OpenAI`` client (or ``nora`` itself) at it, so the
whole path is real: HTTP, JSON, server-sent events, retries, timeouts.

    with StubServer() as stub:                       # free port, background thread
        stub.enqueue(ok("Hello!"), rate_limit(retry_after=1))
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test-x", max_retries=0)
        client.chat.completions.create(model="m", messages=[...])   # -> "Hello!"
        stub.requests[-1].body["messages"]                          # what it received

Routes:
    POST /v1/chat/completions   JSON, or SSE with "stream": true
                                (a usage chunk at the end with stream_options.include_usage)
    GET  /v1/models             one model, named by ``model=`` (or the names in ``listed=``);
                                ``enqueue_models(error(...), drop(), stall(6))`` makes the next ones fail
    GET  /props                 llama.cpp's server's settings, with ``speaks_like="llamacpp"``

``StubServer(window=4096, speaks_like="vllm")`` lists each model with vLLM's ``max_model_len``;
``speaks_like="llamacpp"`` lists it as llama.cpp's server does (``owned_by: llamacpp``, the training
window in ``meta.n_ctx_train``, 4 x window) and says the window it serves at ``GET /props``.

``StubServer(strict=True)`` refuses a chat request for a model it does not list with a 404
(code "model_not_found"), as vLLM and Ollama do; by default any name is answered, as
llama.cpp's server does.  ``StubServer(port=N)`` listens on a port chosen in advance, e.g.
one a client was pointed at before the server started.

Every request is recorded (method, path, lower-cased headers, parsed JSON body).
Each chat request takes the next behaviour from the queue; an empty queue means
the default reply, which names how many messages it got:
    "I got 4 messages; the last one says 'How much is it?'."

Behaviours (module-level functions; ``FAULTS`` maps a short name to each fault):
    ok(text)                    a normal reply (streamed word by word when asked)
    ok(text, until=event)       the same, held back until the test sets a threading.Event
    error(status, ...)          any status with an OpenAI-style JSON error body
    rate_limit(retry_after=1)   429 with a Retry-After header
    server_error() / unavailable()                500 / 503
    unauthorized()              401 invalid_api_key
    context_length_exceeded()   400 with code "context_length_exceeded"
    malformed_json()            200 whose body is not JSON (a stream: an event that is not JSON)
    web_page()                  200 text/html: a web page, as a wrong base URL answers
    not_a_completion()          200 JSON that is not a chat completion ({"status": "ok"})
    whole_reply(text)           200 JSON: the whole chat completion even when the request asked for a
                                stream (a server or proxy that ignores "stream": true); not a fault
    error_after_head(message)   200 JSON whose body is spaces, then an OpenAI-style error: nora serve's
                                answer when a request kept waiting past its keep-alive then fails
    drop()                      close the socket without any reply
    stall(seconds, after_pieces=None)   say nothing for a while (a stream may send
                                some pieces first), then close; bounded to 30 s
    cut_stream(text, after_pieces=2)    start the reply, then close mid-body
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "StubServer",
    "Behaviour",
    "Recorded",
    "ok",
    "error",
    "rate_limit",
    "server_error",
    "unavailable",
    "unauthorized",
    "context_length_exceeded",
    "malformed_json",
    "web_page",
    "not_a_completion",
    "error_after_head",
    "whole_reply",
    "drop",
    "stall",
    "cut_stream",
    "FAULTS",
    "default_reply",
]

MAX_STALL = 30.0  # seconds: a stall never outlives a test by much
CREATED = 1_700_000_000  # fixed timestamp: responses are byte-for-byte repeatable


# --------------------------------------------------------------------------- #
# what the server can be told to do


@dataclass(frozen=True)
class Behaviour:
    """One scripted answer to one chat request.

    kind: "ok" | "error" | "malformed" | "page" | "other_json" | "error_in_200" | "whole" | "drop" | "stall" | "cut"
    Example: Behaviour("error", status=503, message="overloaded")
    """

    kind: str
    text: str | None = None  # reply text ("ok", "cut", and the pieces sent before a stall)
    status: int = 200
    message: str = ""
    type: str = ""
    code: str | None = None
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0  # stall length
    after_pieces: int | None = None  # stream pieces sent before a stall / cut
    delay: float = 0.0  # pause between streamed pieces
    wait: float = 0.0  # pause before the reply's first piece (a reply queued behind others')
    until: threading.Event | None = field(default=None, compare=False)  # and after it, until this is set


def ok(text: str | None = None, delay: float = 0.0, wait: float = 0.0,
       until: threading.Event | None = None) -> Behaviour:
    """A normal reply; text=None means the default reply.  wait: seconds of silence before it
    (a stream's headers come first, as from a server that queues requests); until: an Event the
    reply waits for after that (at most MAX_STALL), when an order of events matters, not how long
    a busy machine takes to get there.
    Example: ok("Yes, two novels."), ok("Hi", wait=3.0), ok("Later", until=released)"""
    return Behaviour("ok", text=text, delay=delay, wait=min(float(wait), MAX_STALL), until=until)


def error(status: int, message: str = "error", type: str = "server_error", code: str | None = None,
          headers: dict | None = None) -> Behaviour:
    """Any HTTP status with OpenAI's error body: {"error": {"message", "type", "param", "code"}}.

    Example: error(404, "The model 'x' does not exist", "invalid_request_error", "model_not_found")
    """
    return Behaviour("error", status=status, message=message, type=type, code=code, headers=dict(headers or {}))


def rate_limit(retry_after: float = 1) -> Behaviour:
    """429 with Retry-After (seconds)."""
    return error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded",
                 headers={"Retry-After": f"{retry_after:g}"})


def server_error() -> Behaviour:
    """500 Internal Server Error."""
    return error(500, "The server had an error while processing your request.", "server_error")


def unavailable() -> Behaviour:
    """503 Service Unavailable (an overloaded server)."""
    return error(503, "The server is overloaded or not ready yet.", "server_error")


def unauthorized() -> Behaviour:
    """401, as OpenAI answers a wrong key."""
    return error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def context_length_exceeded() -> Behaviour:
    """400 with code context_length_exceeded, as OpenAI answers a too-long conversation."""
    return error(
        400,
        "This model's maximum context length is 2048 tokens. However, your messages resulted in 3000 tokens. "
        "Please reduce the length of the messages.",
        "invalid_request_error",
        "context_length_exceeded",
    )


def malformed_json() -> Behaviour:
    """200 with Content-Type application/json but a body that is not JSON."""
    return Behaviour("malformed")


def web_page() -> Behaviour:
    """200 text/html with a web page, streamed or not (a base URL that is a web site, not the API)."""
    return Behaviour("page")


def not_a_completion() -> Behaviour:
    """200 application/json that is not a chat completion, streamed or not (another JSON API)."""
    return Behaviour("other_json")


def error_after_head(message: str = "The server had an error while processing your request.") -> Behaviour:
    """200 application/json whose body is a few spaces, then {"error": {...}} (streamed or not): what
    nora serve sends when a request that waited past its keep-alive then fails (its 200 had gone out)."""
    return Behaviour("error_in_200", message=message, type="server_error")


def whole_reply(text: str | None = None) -> Behaviour:
    """200 application/json with the whole chat completion, streamed or not: a server (or a proxy in front of
    one) that ignores "stream": true.  text=None means the default reply.
    Example: whole_reply("Yes, two novels.") answers stream=True with {"object": "chat.completion", ...}"""
    return Behaviour("whole", text=text)


def drop() -> Behaviour:
    """Read the request, then close the connection without a byte of reply."""
    return Behaviour("drop")


def stall(seconds: float = 5.0, after_pieces: int | None = None, text: str | None = None) -> Behaviour:
    """Say nothing for `seconds` (at most MAX_STALL), then close the connection.

    With after_pieces and a streaming request, the headers and that many pieces of
    the reply go out first, so the client is mid-stream when it stalls.
    Example: stall(3.0, after_pieces=2) against a client with timeout=0.5 -> a read timeout mid-reply
    """
    return Behaviour("stall", text=text, seconds=min(float(seconds), MAX_STALL), after_pieces=after_pieces)


def cut_stream(text: str | None = None, after_pieces: int = 2) -> Behaviour:
    """Start the reply, then close mid-body (a streamed reply: after `after_pieces` pieces)."""
    return Behaviour("cut", text=text, after_pieces=after_pieces)


# Short names for the fault matrix (issue: reliability).  name -> behaviour.
FAULTS = {
    "rate_limit_429": rate_limit(retry_after=1),
    "server_error_500": server_error(),
    "unavailable_503": unavailable(),
    "unauthorized_401": unauthorized(),
    "context_length_400": context_length_exceeded(),
    "malformed_json": malformed_json(),
    "web_page": web_page(),
    "not_a_completion": not_a_completion(),
    "error_after_head": error_after_head(),
    "dropped_connection": drop(),
    "stall": stall(3.0),
    "stream_cut": cut_stream(),
}


def default_reply(messages: list) -> str:
    """The reply when nothing is queued: it names how many messages arrived.

    Example: default_reply([sys, user("hi")]) -> "I got 2 messages; the last one says 'hi'."
    """
    last = messages[-1].get("content", "") if messages and isinstance(messages[-1], dict) else ""
    last = last if isinstance(last, str) else str(last)
    if len(last) > 60:
        last = last[:57] + "..."
    return f"I got {len(messages)} messages; the last one says {last!r}."


# --------------------------------------------------------------------------- #
# what the server saw


@dataclass
class Recorded:
    """One request as received.  path: as sent, any ?query included; headers: lower-case names; body: parsed
    JSON (None if not JSON); at: time.monotonic() when it was whole (the gap between two requests, as the
    server saw it, leaves out how long a client process took to start on a busy machine)."""

    method: str
    path: str
    headers: dict
    body: Any
    raw: bytes = b""
    at: float = field(default=0.0, compare=False)

    @property
    def messages(self) -> list | None:
        """The "messages" list of a chat request (None for other requests)."""
        return self.body.get("messages") if isinstance(self.body, dict) else None


# --------------------------------------------------------------------------- #
# wire formats


def _pieces(text: str) -> list[str]:
    """Split a reply the way a model streams it: word by word, spaces kept.

    Example: "Yes, two novels." -> ["Yes,", " two", " novels."]
    """
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _usage(messages: list, text: str) -> dict:
    # A rough count (4 characters per token): the stub has no tokenizer.
    prompt = sum(max(1, len(str(m.get("content", ""))) // 4) + 4 for m in messages if isinstance(m, dict))
    completion = max(1, len(text) // 4) if text else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(text: str, model: str, messages: list, n: int) -> dict:
    return {
        "id": f"chatcmpl-stub{n}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(messages, text),
    }


def _chunk(n: int, model: str, delta: dict | None = None, finish: str | None = None,
           usage: dict | None = None) -> dict:
    chunk: dict = {"id": f"chatcmpl-stub{n}", "object": "chat.completion.chunk", "created": CREATED, "model": model}
    if usage is not None:
        chunk["choices"], chunk["usage"] = [], usage  # the final usage-only chunk
    else:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}]
    return chunk


def _sse_events(text: str, model: str, messages: list, n: int, include_usage: bool) -> list[bytes]:
    """All server-sent events of one streamed reply, each b"data: {...}\\n\\n"."""
    events = [_chunk(n, model, {"role": "assistant", "content": ""})]
    events += [_chunk(n, model, {"content": piece}) for piece in _pieces(text)]
    events.append(_chunk(n, model, {}, finish="stop"))
    if include_usage:
        events.append(_chunk(n, model, usage=_usage(messages, text)))
    wire = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return wire + [b"data: [DONE]\n\n"]


# --------------------------------------------------------------------------- #
# the HTTP side


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like real servers
    server: "_HTTPServer"
    timeout = 10  # an idle keep-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.stub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.stub._track(self.connection, add=False)

    # -- helpers --------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_headers(self, status: int, length: int, headers: dict | None = None) -> None:
        """The status line and headers of a JSON reply of `length` bytes; the body is the caller's
        (whole, half of it, or not JSON at all). Example: self._json_headers(200, len(body))"""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self._json_headers(status, len(body), headers)
        self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, type: str = "invalid_request_error",
                    code: str | None = None, headers: dict | None = None) -> None:
        payload = {"error": {"message": message, "type": type, "param": None, "code": code}}
        self._send_json(status, payload, headers)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _send_chunk(self, data: bytes) -> None:
        # HTTP/1.1 chunked encoding: hex length, CRLF, data, CRLF.  A zero chunk ends the body,
        # so a connection closed before it is a visibly *incomplete* reply.
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the socket now, whatever was (or was not) sent."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _authorized(self) -> bool:
        key = self.server.stub.api_key
        if key is None:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._send_error(401, "Incorrect API key provided.", code="invalid_api_key")
        return False

    # -- routes ---------------------------------------------------------------

    @property
    def _route(self) -> str:
        """The path a request is routed by: a query (?api-version=...) does not change the route, as on a real
        server.  Example: '/v1/chat/completions?api-version=2024-02-01' -> '/v1/chat/completions'"""
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        self.server.stub._record(self, b"")
        if not self._authorized():
            return
        if self._route in ("/v1/models", "/models"):
            fault = self.server.stub._next_models_fault()
            if fault is not None and fault.kind == "error":
                self._send_error(fault.status, fault.message, fault.type, fault.code, fault.headers)
                return
            if fault is not None and fault.kind == "stall":  # a server that never answers
                self.server.stub._stopping.wait(fault.seconds)
            if fault is not None:  # drop(): as a server that is down at that moment
                self._abort()
                return
            self._send_json(200, {"object": "list", "data": [self.server.stub._listing(name)
                                                             for name in self.server.stub.names]})
        elif self._route == "/props" and self.server.stub.speaks_like == "llamacpp":
            self._send_json(200, {"default_generation_settings": {"n_ctx": self.server.stub.window},
                                  "total_slots": 1})
        else:
            self._send_error(404, f"Unknown path {self.path}", code="not_found")

    def do_POST(self) -> None:
        raw = self._read_body()
        self.server.stub._record(self, raw)
        if not self._authorized():
            return
        if self._route not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error(404, f"Unknown path {self.path}", code="not_found")
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
            assert isinstance(messages, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            self._send_error(400, "The request body must be JSON with a 'messages' list.")
            return
        stub = self.server.stub
        if stub.strict and body.get("model") not in stub.names:  # vLLM, Ollama: only the models they serve
            self._send_error(404, f"The model `{body.get('model')}` does not exist.", code="model_not_found")
            return
        n, behaviour = stub._next()
        try:
            self._chat(n, behaviour, body, messages)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it timed out): fine

    def _chat(self, n: int, b: Behaviour, body: dict, messages: list) -> None:
        stub = self.server.stub
        model = body.get("model") or stub.model
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        text = b.text if b.text is not None else default_reply(messages)

        if b.kind == "error":
            self._send_error(b.status, b.message, b.type, b.code, b.headers)
        elif b.kind == "malformed" and stream:  # a stream whose first event is not JSON
            self._start_stream()
            self._send_chunk(b"data: {'this is': not JSON\n\n")
            self._send_chunk(b"")
        elif b.kind == "malformed":
            bad = b"{'this is': not JSON"
            self._json_headers(200, len(bad))
            self.wfile.write(bad)
        elif b.kind == "page":
            page = b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        elif b.kind == "other_json":
            self._send_json(200, {"status": "ok"})
        elif b.kind == "error_in_200":
            body = b"   " + json.dumps({"error": {"message": b.message, "type": b.type, "param": None,
                                                  "code": None}}).encode()
            self._json_headers(200, len(body))
            self.wfile.write(body)
            self.wfile.flush()
        elif b.kind == "whole":  # "stream": true or not, the whole completion
            self._send_json(200, _completion(text, model, messages, n))
        elif b.kind == "drop":
            self._abort()
        elif b.kind in ("stall", "cut"):
            if stream and b.after_pieces is not None:
                self._start_stream()
                for event in _sse_events(text, model, messages, n, include_usage)[: 1 + b.after_pieces]:
                    self._send_chunk(event)
            elif b.kind == "cut":  # not streaming: promise the whole body, send half of it
                payload = json.dumps(_completion(text, model, messages, n)).encode()
                self._json_headers(200, len(payload))
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
            if b.kind == "stall":
                stub._stopping.wait(b.seconds)  # returns early when the server stops
            self._abort()
        elif stream:
            self._start_stream()
            self._hold(b)
            for event in _sse_events(text, model, messages, n, include_usage):
                self._send_chunk(event)
                if b.delay:
                    time.sleep(b.delay)
            self._send_chunk(b"")  # the zero-length chunk: end of body
        else:
            self._hold(b)
            self._send_json(200, _completion(text, model, messages, n))

    def _hold(self, b: Behaviour) -> None:
        """The pause before an "ok" reply: b.wait seconds, then until b.until is set (if given); either
        ends early when the server stops."""
        stopping = self.server.stub._stopping
        stopping.wait(b.wait)
        deadline = time.monotonic() + MAX_STALL
        while b.until is not None and not b.until.is_set() and not stopping.is_set() and time.monotonic() < deadline:
            b.until.wait(0.05)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    stub: "StubServer"

    def handle_error(self, request, client_address) -> None:
        """A client hanging up (the faults here make clients do that on purpose) is not an error
        of the server's: stay quiet.  Anything else is printed, as socketserver does."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


class StubServer:
    """The OpenAI-compatible stub: start() / stop(), or use it as a context manager.

    api_key: when set, every request must carry "Authorization: Bearer <api_key>" (401 otherwise).
    model:   the name /v1/models lists and replies use when the request names none.
    listed:  what /v1/models lists instead, e.g. several names (default: [model]).
    port:    the port to listen on (0, the default: a free one the OS picks).
    strict:  refuse chat requests for a model /v1/models does not list (404 model_not_found).
    window, speaks_like: the context window a server states, and how: "vllm" (max_model_len in
             /v1/models), "llamacpp" (GET /props), "openai" (not at all, the default).
    Example: with StubServer(api_key="sk-test-123") as stub: print(stub.base_url)
    """

    def __init__(self, api_key: str | None = None, model: str = "stub-model", listed: list[str] | None = None,
                 port: int = 0, strict: bool = False, window: int | None = None,
                 speaks_like: str = "openai") -> None:
        if speaks_like not in ("openai", "vllm", "llamacpp"):
            raise ValueError(f"speaks_like must be openai, vllm or llamacpp (got {speaks_like!r})")
        self.api_key = api_key
        self.window, self.speaks_like = window, speaks_like
        self.model = model
        self.listed = listed
        self.strict = strict
        self._port = port
        self.requests: list[Recorded] = []
        self._queue: list[Behaviour] = []
        self._models_queue: list[Behaviour] = []
        self._lock = threading.Lock()
        self._chats = 0
        self._stopping = threading.Event()
        self._connections: set = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------

    def start(self) -> "StubServer":
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)  # port 0: the OS picks a free one
        self._httpd.stub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any stall, close open connections."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- for tests ------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return self._httpd.server_address[1]

    def _listing(self, name: str) -> dict:
        """One model as GET /v1/models lists it, in the words of the server the stub speaks like."""
        entry = {"id": name, "object": "model", "created": CREATED, "owned_by": "stub"}
        if self.speaks_like == "vllm":
            entry.update(owned_by="vllm", root=name, max_model_len=self.window)
        elif self.speaks_like == "llamacpp":
            entry.update(owned_by="llamacpp", meta={"n_ctx_train": 4 * (self.window or 0), "n_vocab": 49152})
        return entry

    @property
    def names(self) -> list[str]:
        """The model names /v1/models lists: listed=, else [model]."""
        return self.listed if self.listed is not None else [self.model]

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be, e.g. 'http://127.0.0.1:41234/v1'."""
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *behaviours: Behaviour | str) -> None:
        """Queue answers for the next chat requests, in order (a str means ok(str))."""
        items = [ok(b) if isinstance(b, str) else b for b in behaviours]
        for item in items:
            if not isinstance(item, Behaviour):
                raise TypeError(f"enqueue() takes Behaviour objects or strings, not {type(item).__name__}")
        with self._lock:
            self._queue.extend(items)

    def enqueue_models(self, *behaviours: Behaviour) -> None:
        """Queue answers for the next GET /models, in order: error(...), drop() or stall(seconds); then the
        list again."""
        for item in behaviours:
            if not isinstance(item, Behaviour) or item.kind not in ("error", "drop", "stall"):
                raise TypeError("enqueue_models() takes error(...), drop() or stall(seconds)")
        with self._lock:
            self._models_queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many queued behaviours are still unused."""
        with self._lock:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[Recorded]:
        """Only the POSTs to /chat/completions, in arrival order."""
        return [r for r in list(self.requests) if r.method == "POST" and
                r.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions")]

    @property
    def open_connections(self) -> int:
        """How many client connections the server holds open right now (a stream being sent, an idle
        keep-alive); one the client closed is gone once the server's next write to it fails."""
        with self._lock:
            return len(self._connections)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least `count` requests have arrived; True if they did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return True
            time.sleep(0.01)
        return len(self.requests) >= count

    # -- used by the handler --------------------------------------------------

    def _next(self) -> tuple[int, Behaviour]:
        with self._lock:
            self._chats += 1
            return self._chats, (self._queue.pop(0) if self._queue else ok())

    def _next_models_fault(self) -> Behaviour | None:
        with self._lock:
            return self._models_queue.pop(0) if self._models_queue else None

    def _record(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self.requests.append(Recorded(handler.command, handler.path, headers, body, raw, time.monotonic()))

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)
