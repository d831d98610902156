"""`nora serve`: refuse a request body far bigger than the model's window could ever hold, at once.

llama-cpp-python's server (0.3.x) sets no limit on a request's size.  A 30 MB chat request was read
whole, parsed, and its prompt tokenized, only to be refused as too long for the window (measured with
n_ctx 2048: the server grew from 244 MB to 1179 MB at its peak, and its client waited 18-44 s); and
since counting outlasted the keep-alive (_keep_waiting.py), a client that was not streamed got a 200
whose body was that error.  Now it gets a 413 in 0.1-0.3 s, and the server stays at 244 MB.

No request that can fit the window is that big.  A prompt holds at most ``n_ctx`` tokens; no token is
longer than the vocabulary's longest (``longest`` bytes of UTF-8: 81 for SmolLM2, a run of spaces);
and JSON writes no byte of text in more than 6 bytes (``\\u0001`` for a control character; a character
of 2-4 bytes is one or two ``\\uXXXX``, 3-6 bytes per byte at most).  So the messages of a request that
fits take at most ``n_ctx * longest * 6`` bytes, and ROOM (1 MiB) more is left for everything else a
request may carry that the prompt does not count (a response_format schema, a logit_bias over the
whole vocabulary, pretty-printed JSON):

    limit = n_ctx * longest * 6 + ROOM        # SmolLM2, n_ctx 2048: 2048 * 81 * 6 + 1 MiB = 2,043,904 bytes

A body over the limit gets a 413 in OpenAI's shape before it is read: at once when its Content-Length
says so, and as soon as the bytes read pass the limit when it comes chunked (no Content-Length);
nothing of it is kept.  uvicorn then reads and drops the rest of the body, so the client, which sends
its whole body before it reads the answer, gets the 413 (not a broken connection).  A client that
leaves before its body is whole (a closed tab, a timed-out script, a connection closed by
_read_timeout.py) is not answered and the server never sees its request: it raised ClientDisconnect,
and each such client added some 100 lines of traceback to the server's stderr.

Its place: just inside BrowserOrigins (the 413 gets the CORS headers) and outside everything that
reads a body whole (KeepWaiting, OverflowCheck).

    app = BodyLimit(app, body_limit(n_ctx=2048, longest=81))
"""

from __future__ import annotations

import ctypes
import json
from typing import Any, Awaitable, Callable

from ._chat_request import error_body

__all__ = ["BodyLimit", "body_limit", "longest_token", "ROOM"]

ROOM = 1024 * 1024  # bytes for what the prompt does not count: schemas, logit_bias, indentation
_ESCAPED = 6  # the most bytes JSON writes for one byte of text: \u0001
SIZE = 256  # bytes read for a token's text; also the length assumed when the vocabulary cannot be read


def body_limit(n_ctx: int, longest: int) -> int:
    """The most bytes a request body may have: more than any request that fits the window can need.
    Example: body_limit(2048, 81) -> 2043904"""
    return n_ctx * longest * _ESCAPED + ROOM


def longest_token(llama: Any) -> int:
    """The longest token of a loaded model's vocabulary, in bytes of UTF-8, special tokens included
    (a prompt may hold their text).  Example: longest_token(smollm2) -> 81 (0.2 s for 49,152 tokens)
    The vocabulary is read through llama-cpp-python's low-level API; should that not answer (another
    version), SIZE (256) bytes, more than any token of the models Nora runs, so the limit stays sound."""
    import llama_cpp

    try:
        vocab = llama._model.vocab
        piece = ctypes.create_string_buffer(SIZE)
        longest = 1
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            n = llama_cpp.llama_token_to_piece(vocab, token, piece, SIZE, 0, True)
            longest = max(longest, abs(n))  # a negative n: the piece did not fit, -n is its length
    except (AttributeError, TypeError, ctypes.ArgumentError):
        return SIZE
    return longest


def _megabytes(size: int) -> str:
    """Example: _megabytes(31457341) -> '31.5 MB'; _megabytes(2043904) -> '2.0 MB'"""
    return f"{size / 1e6:.1f} MB"


def too_large(size: int | None, limit: int) -> dict:
    """The 413 body.  size: the body's bytes, None when it came chunked (only known to be over).
    Example: too_large(31457341, 2043904)["error"]["message"]
        -> 'The request body is 31.5 MB, over the 2.0 MB this server takes: send a shorter conversation.'"""
    said = f"is {_megabytes(size)}" if size is not None else "is over"
    over = ", over" if size is not None else ""
    return error_body(f"The request body {said}{over} the {_megabytes(limit)} this server takes: "
                      "send a shorter conversation.", None, "request_too_large")


class BodyLimit:
    """ASGI middleware: a request whose body is over `limit` bytes is answered 413 (see the module
    docstring); every other request passes through, its body replayed as it came."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
        chunked = any(k.lower() == b"transfer-encoding" for k, _ in scope.get("headers", []))
        if length is None and not chunked:  # no body at all (a GET)
            await self.app(scope, receive, send)
            return
        # uvicorn has checked a Content-Length is a number and will not pass more bytes than it says
        if length is not None and int(length) > self.limit:
            await self._refuse(send, int(length))
            return
        received: list[dict] = []  # the body so far, counted as it comes; replayed to the app below
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # the client left before its request was whole:
                return  # nobody to answer (the server raised ClientDisconnect: 100 lines of traceback)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, size: int | None) -> None:
        payload = json.dumps(too_large(size, self.limit)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
