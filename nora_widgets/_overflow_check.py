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

A request that gives ``max_tokens`` (streamed or not) is counted too, and refused with
the same 400 when ``prompt + max_tokens > n_ctx``: the server cut max_tokens down to
the room left without a word, so the reply stopped short with finish_reason "length"
while the client believed it had asked for more.  OpenAI refuses such a request with
this very message ("However, you requested 600 tokens (88 in the messages, 512 in the
completion)"), and so does Nora's LocalClient; Nora's core reacts to the code by
trimming the conversation, which makes room.  (A max_tokens no prompt leaves room for,
``>= n_ctx``, is refused before counting, naming max_tokens: see _chat_request.py.)

One reply may be at most ``max_reply`` tokens (``nora serve --max-tokens``, 512 by default,
as many as LocalClient writes when no max_tokens is given).  The server writes one reply at a
time, and a request without max_tokens ran until the model stopped or the window was full (a
story asked for ran 489 tokens, 11 s here, while the class waited; with no end-of-text token it
would run ~2000).  A request that gives none is sent on with ``max_tokens = max_reply`` (the
server still cuts it to the room left, as it did before), and one asking for more is refused
with a 400 naming its field (_chat_request.over_reply_cap), never cut short without a word.

Every chat request is counted as the server renders it: the messages its request model
passes on (tool calls, tool results and all), and the ``tools`` / ``tool_choice`` /
``functions`` / ``function_call`` its chat template is given too (SmolLM2's shows none of
them; a template that lists the tools counts them).  ``response_format`` and a tool named by
``tool_choice`` change no prompt: they only limit what may be sampled.

Since it reads every POST body anyway, it mends two more rough edges of that server:

- a body that is not a JSON object (``{bad``) got a plain-text 500 and a page of
  traceback in the server's log; it gets a 400 in OpenAI's shape
  (``invalid_request_error``), which the openai client raises as ``BadRequestError``;
- a completion request that names no ``model`` got the GGUF file's path as the reply's
  ``model``; it is sent on with the name ``/v1/models`` lists (``model=``);
- a chat request whose ``messages`` is not a non-empty list of objects with a ``role``
  got a 500 carrying the validation error and source paths; it gets a 400 too;
- a JSON body sent without ``Content-Type: application/json`` (``curl -d``) got a 500;
  it is passed on with that header;
- OpenAI's fields that server ignores or crashes on (``developer`` messages, content
  parts, ``n``, ``max_completion_tokens``, ...) are mended or refused with a 400 (see
  _chat_request.py; the legacy ``/v1/completions`` gets the same type, range and ``n`` checks), and
  the reply is mended where it differs from OpenAI's
  (``top_logprobs``, a streamed reply's usage: see _reply_mend.py).

    app = OverflowCheck(create_app(...), vocab_counter(path), n_ctx=2048, api_key=None,
                        model="SmolLM2-135M-Instruct")
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Awaitable, Callable

from ._chat_request import (authorized, error_body, max_tokens_too_large, mend_chat_request, mend_legacy_request,
                            over_reply_cap)
from ._reply_mend import run_with_mended_reply

__all__ = ["OverflowCheck", "overflow_body", "json_object", "bad_messages", "vocab_counter", "template_input"]

_TEMPLATE_ARGS = ("tools", "tool_choice", "functions", "function_call")  # the server's template is given these too


def overflow_body(prompt_tokens: int, n_ctx: int, max_tokens: int | None) -> dict:
    """The 400 body llama-cpp-python's server gives a non-streamed request that is too long,
    made by the server's own formatter from the error llama.cpp raises, so both read the same.

    A request that gives no max_tokens gets OpenAI's own words for it: the server's formatter said
    "you requested 3041 tokens (3041 in the messages, None in the completion)".

    Example: overflow_body(3041, 2048, None)["error"]["message"]
        -> "This model's maximum context length is 2048 tokens. However, your messages resulted in 3041 tokens. ..."
    """
    if max_tokens is None:
        return error_body(f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                          f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
                          "messages", "context_length_exceeded")
    from llama_cpp.server.errors import ErrorResponseFormatters

    refusal = f"Requested tokens ({prompt_tokens}) exceed context window of {n_ctx}"  # as llama.cpp says it
    match = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", refusal)
    assert match is not None  # refusal is written above to match
    request = type("Request", (), {"messages": [], "max_tokens": max_tokens})()
    _status, error = ErrorResponseFormatters.context_length_exceeded(request, match)
    return {"error": dict(error)}


_A_REQUEST = '{"model": ..., "messages": [...]}'
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def json_object(body: bytes) -> tuple[dict | None, dict | None]:
    """(the request, None) when the body is a JSON object (what every POST of this server
    takes), else (None, the 400 body that says what is wrong, in OpenAI's shape).

    Example: json_object(b"{bad")[1]["error"]["message"]
        -> 'We could not parse the JSON body of your request: Expecting property name ... (char 1). ...'
    """
    try:
        request = json.loads(body)
    except ValueError as exc:  # json's own errors, and bytes that are not UTF-8
        why = str(exc) if body.strip() else "the body is empty"
        message = f"We could not parse the JSON body of your request: {why}. The API expects a JSON object, e.g. {_A_REQUEST}."
    else:
        if isinstance(request, dict):
            return request, None
        message = f"The request body must be a JSON object, e.g. {_A_REQUEST}, not {_JSON_KINDS[type(request)]}."
    return None, error_body(message)


def bad_messages(request: dict) -> dict | None:
    """The 400 body when a chat request's "messages" is not a non-empty list of objects with a
    "role" (the server answered a 500 with its validation error and source paths), else None.
    Example: bad_messages({"messages": 5})["error"]["param"] -> 'messages'
    """
    messages = request.get("messages")
    if not isinstance(messages, list):
        got = "missing" if messages is None else _JSON_KINDS.get(type(messages), "an object")
    elif not messages:
        got = "an empty list"
    else:
        i = next((i for i, m in enumerate(messages) if not (isinstance(m, dict) and isinstance(m.get("role"), str))),
                 None)
        if i is None:
            return None
        got = f"item {i} has no \"role\"" if isinstance(messages[i], dict) else \
            f"item {i} is {_JSON_KINDS.get(type(messages[i]), 'not an object')}"
    message = (f"'messages' must be a non-empty list of objects like {{\"role\": \"user\", \"content\": \"Hi\"}} "
               f"(got: {got}).")
    return error_body(message, "messages")


def _says_json(scope: dict) -> bool:
    """True if the request's Content-Type is JSON (application/json, maybe with a charset)."""
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip().lower() == b"application/json"
               for k, v in scope.get("headers", []))


def vocab_counter(path: Any) -> Callable[..., int]:
    """(messages, **tools and the like) -> prompt tokens, counted as the served model counts them:
    its chat template (given tools, tool_choice, functions and function_call too, as the server
    gives them) and tokenizer, from a vocabulary-only load of the same file (loaded here: 0.2-0.5 s, ~17 MB).

    Example: vocab_counter(find_model_path())([{"role": "user", "content": "Hi"}]) -> 31
        (SmolLM2's template adds its default persona when there is no system message)
    """
    from ._engine import _Engine

    engine = _Engine(path, n_ctx=64, n_threads=1, vocab_only=True)
    engine.llama  # load now: a file that cannot be read fails at start, not on a request
    return lambda messages, **template_args: len(engine.tokens(messages, template_args=template_args))


def template_input(request: dict) -> dict | None:
    """What the server's chat template is given for a chat request: {"messages": [...]} and those of
    tools, tool_choice, functions, function_call that are set, as the server passes them on (its
    request model's dump: a message's fields it does not know, "name" among them, are dropped).
    None when that model refuses the request (the server then answers it).  response_format changes
    no prompt: it only limits what may be sampled, and so does a tool named by tool_choice.
    Example: template_input({"messages": [{"role": "user", "content": "Hi", "name": "ann"}], "tools": None})
        -> {'messages': [{'role': 'user', 'content': 'Hi'}]}
    """
    from llama_cpp.server.types import CreateChatCompletionRequest
    from pydantic import ValidationError

    try:
        given = CreateChatCompletionRequest.model_validate(request).model_dump(include={"messages", *_TEMPLATE_ARGS})
    except ValidationError:
        return None
    return {name: value for name, value in given.items() if name == "messages" or value is not None}


def _to_check(request: dict, always: bool = False) -> tuple[dict, int | None] | None:
    """What the template renders for a chat request (template_input), and its max_tokens; None when
    there is nothing to check (not streamed and no max_tokens, unless always: the server's own 400
    covers the prompt) or the request's shape is refused (the server then decides, as before)."""
    max_tokens = request.get("max_tokens")
    max_tokens = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
    if request.get("stream") is not True and max_tokens is None and not always:
        return None
    given = template_input(request)
    return (given, max_tokens) if given is not None else None


class OverflowCheck:
    """ASGI middleware in front of llama-cpp-python's app (see the module docstring).

    count_prompt(messages, **template_args) -> int: prompt tokens (e.g. vocab_counter(path));
        template_args: the request's tools, tool_choice, functions, function_call that are set.
    api_key: the server's key, if any: a request without it is passed through untouched
        (unless its body is not JSON), so it gets the server's own 401, never a hint about the window.
    model: the name /v1/models lists, given to a completion request that names none.
    max_reply: the most tokens one reply may have (nora serve --max-tokens; None: the room left).
        A request asking for more is refused (a 400 naming its max_tokens); one that gives no
        max_tokens is sent on with this one (the server still cuts it to the room left): a reply
        that runs on holds the model while everyone queued behind it waits.
    Example: OverflowCheck(app, vocab_counter(path), n_ctx=2048, model="SmolLM2-135M-Instruct", max_reply=512)
    """

    def __init__(self, app: Any, count_prompt: Callable[..., int], n_ctx: int,
                 api_key: str | None = None, model: str | None = None, max_reply: int | None = None) -> None:
        self.app, self.count_prompt, self.n_ctx, self.api_key = app, count_prompt, n_ctx, api_key
        self.model, self.max_reply = model, max_reply

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        received: list[dict] = []  # the request as it came, replayed to the app below
        chat_request = None  # a chat request passed on: its reply may need mending too (_reply_mend.py)
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if received[-1]["type"] == "http.request":  # the client did not leave half-way
            request, refusal = json_object(body)
            if request is None:  # the server would answer a plain-text 500 and log a page of traceback
                assert refusal is not None  # json_object gives the one or the other
                await self._refuse(send, refusal)
                return
            path = scope.get("path", "").rstrip("/")
            rewrite = not _says_json(scope)  # curl -d sends form-encoded: the server then answered a 500
            if path.endswith("/completions") and authorized(scope, self.api_key):
                chat = path.endswith("/chat/completions")
                if chat:
                    refusal = bad_messages(request)
                else:  # the legacy /v1/completions: the chat path's checks of the same fields, null switches left out
                    mended, refusal = mend_legacy_request(request)
                    refusal = refusal or max_tokens_too_large("max_tokens", mended.get("max_tokens"), self.n_ctx)
                    rewrite, request = rewrite or mended != request, mended
                asked = "max_completion_tokens" if request.get("max_tokens") is None and chat else "max_tokens"
                if refusal is None and chat:  # OpenAI's fields the server would ignore or crash on
                    mended, refusal = mend_chat_request(request, self.n_ctx)
                    rewrite = rewrite or mended != request
                    request = mended
                if refusal is None:  # one learner's long reply would hold up the class
                    refusal = over_reply_cap(asked, request.get("max_tokens"), self.max_reply)
                if refusal is None and chat:
                    refusal = await self._too_long(request)
                if refusal is not None:
                    await self._refuse(send, refusal)
                    return
                if self.max_reply is not None and request.get("max_tokens") is None and (
                        chat or "max_tokens" in request):  # the legacy path's default is 16; null: the room left
                    request, rewrite = {**request, "max_tokens": self.max_reply}, True
                if request.get("model") is None and self.model:  # else the reply's "model" is the file's path
                    request, rewrite = {**request, "model": self.model}, True
                chat_request = request if chat else None
            if rewrite:
                body = json.dumps(request).encode()
                received = [{"type": "http.request", "body": body, "more_body": False}]
                headers = [(k, v) for k, v in scope.get("headers", [])
                           if k.lower() not in (b"content-length", b"content-type")]
                scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode()),
                                              (b"content-type", b"application/json")]}

        async def replay() -> dict:
            return received.pop(0) if received else await receive()

        if chat_request is not None:
            await run_with_mended_reply(self.app, scope, replay, send, chat_request)
        else:
            await self.app(scope, replay, send)

    async def _too_long(self, request: dict) -> dict | None:
        """The 400 body when the prompt does not fit, or the prompt and max_tokens do not, else None."""
        # with a cap, a request without max_tokens gets one (below): counted first, so that a prompt
        # too long is refused as the client sent it (the server's own 400 would name the cap as asked for)
        found = _to_check(request, always=self.max_reply is not None)
        if found is None:
            return None
        given, max_tokens = found
        import anyio

        count = functools.partial(self.count_prompt, given.pop("messages"), **given)
        try:  # tokenizing a long prompt takes milliseconds: not on the event loop
            tokens = await anyio.to_thread.run_sync(count)
        except Exception:  # cannot count it: let the server decide, as before
            return None
        too_long = tokens >= self.n_ctx or (max_tokens is not None and tokens + max_tokens > self.n_ctx)
        return overflow_body(tokens, self.n_ctx, max_tokens) if too_long else None

    @staticmethod
    async def _refuse(send: Any, error: dict) -> None:
        payload = json.dumps(error).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
