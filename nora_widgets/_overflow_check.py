"""`nora serve`: refuse a streamed request that does not fit the window *before* streaming.

llama-cpp-python's server answers a streamed chat request with "200 OK" and an event
stream at once, and only then reads the prompt.  When the prompt is longer than the
context window, llama.cpp refuses it inside the stream: the client sees an empty
stream, and the server prints a traceback.  A non-streamed request that is too long
gets a clear 400 with OpenAI's code ``context_length_exceeded`` instead, and Nora's
core reacts to that code (with trimming on, it retries once with half the turns).

This ASGI middleware gives streamed requests the same 400.  It reads the request
body, counts the prompt with the model's own chat template and tokenizer (the
vocabulary only: no second copy of the weights), and answers the 400 itself when
``prompt tokens >= n_ctx`` (llama.cpp's own rule).  Everything else passes through
untouched, with the body replayed as it came.

    app = OverflowCheck(create_app(...), vocab_counter(path), n_ctx=2048, api_key=None)
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

__all__ = ["OverflowCheck", "overflow_body", "vocab_counter"]

_PLAIN_ROLES = ("system", "user", "assistant")
_PROMPT_CHANGERS = {"tools", "tool_choice", "functions", "function_call", "response_format"}  # other prompts


def overflow_body(prompt_tokens: int, n_ctx: int, max_tokens: int | None) -> dict:
    """The 400 body llama-cpp-python's server gives a non-streamed request that is too long,
    made by the server's own formatter from the error llama.cpp raises, so both read the same.

    Example: overflow_body(3041, 2048, None)["error"]["code"] -> 'context_length_exceeded'
    """
    from llama_cpp.server.errors import ErrorResponseFormatters

    refusal = f"Requested tokens ({prompt_tokens}) exceed context window of {n_ctx}"  # as llama.cpp says it
    match = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", refusal)
    request = type("Request", (), {"messages": [], "max_tokens": max_tokens})()
    _status, error = ErrorResponseFormatters.context_length_exceeded(request, match)
    return {"error": dict(error)}


def vocab_counter(path: Any) -> Callable[[list[dict]], int]:
    """messages -> prompt tokens, counted as the served model counts them: its chat template
    and tokenizer, from a vocabulary-only load of the same file (loaded here: 0.2-0.5 s, ~17 MB).

    Example: vocab_counter(find_model_path())([{"role": "user", "content": "Hi"}]) -> 20
    """
    from ._engine import _Engine

    engine = _Engine(path, n_ctx=64, n_threads=1, vocab_only=True)
    engine.llama  # load now: a file that cannot be read fails at start, not on a request
    return lambda messages: len(engine.tokens(messages))


def _messages_to_check(body: bytes) -> tuple[list[dict], int | None] | None:
    """The messages of a streamed chat request in plain form, and its max_tokens; None when
    there is nothing this check can count exactly (not streamed, not JSON, content parts,
    tools...): the server then decides, as before."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True or _PROMPT_CHANGERS & set(request):
        return None
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    plain = []
    for message in messages:
        if (not isinstance(message, dict) or message.get("role") not in _PLAIN_ROLES
                or not isinstance(message.get("content"), str) or set(message) - {"role", "content", "name"}):
            return None
        plain.append({"role": message["role"], "content": message["content"]})
    max_tokens = request.get("max_tokens")
    return plain, max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None


class OverflowCheck:
    """ASGI middleware in front of llama-cpp-python's app (see the module docstring).

    count_prompt(messages) -> int: prompt tokens (e.g. vocab_counter(path)).
    api_key: the server's key, if any: a request without it is passed through untouched,
        so it gets the server's own 401, never a hint about the window.
    Example: OverflowCheck(app, vocab_counter(path), n_ctx=2048)
    """

    def __init__(self, app: Any, count_prompt: Callable[[list[dict]], int], n_ctx: int,
                 api_key: str | None = None) -> None:
        self.app, self.count_prompt, self.n_ctx, self.api_key = app, count_prompt, n_ctx, api_key

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if (scope.get("type") != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").rstrip("/").endswith("/chat/completions") or not self._authorized(scope)):
            await self.app(scope, receive, send)
            return
        received: list[dict] = []  # the request as it came, replayed to the app below
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        too_long = await self._too_long(body)
        if too_long is not None:
            await self._refuse(send, too_long)
            return

        async def replay() -> dict:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    def _authorized(self, scope: dict) -> bool:
        if self.api_key is None:
            return True
        expected = f"Bearer {self.api_key}".encode()
        return any(name.lower() == b"authorization" and value == expected for name, value in scope.get("headers", []))

    async def _too_long(self, body: bytes) -> dict | None:
        """The 400 body when the streamed request's prompt does not fit, else None."""
        found = _messages_to_check(body)
        if found is None:
            return None
        messages, max_tokens = found
        import anyio

        try:  # tokenizing a long prompt takes milliseconds: not on the event loop
            tokens = await anyio.to_thread.run_sync(self.count_prompt, messages)
        except Exception:  # cannot count it: let the server decide, as before
            return None
        return overflow_body(tokens, self.n_ctx, max_tokens) if tokens >= self.n_ctx else None

    @staticmethod
    async def _refuse(send: Any, error: dict) -> None:
        payload = json.dumps(error).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
