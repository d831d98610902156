"""`nora serve`: the reply mended on its way out, where llama-cpp-python's server differs from OpenAI.

_chat_request.py mends what a request asks; two things need the reply itself:

    asked                                         the server (0.3.x) answered           now
    ------------------------------------------    ----------------------------------    ----------------------------
    "logprobs": true, "top_logprobs": N           N alternatives per token, plus the    at most N, as OpenAI: [] for
    (N = 0 when none is given)                    chosen token when not among them      0, the N likeliest for N > 0
    "stream": true,                               no usage chunk (stream_options        a last chunk before [DONE]
    "stream_options": {"include_usage": true}     is not a field it knows)              with "choices": [] and the
                                                                                        usage a whole reply has

The usage is counted where the server counts it for a whole reply: ``count_usage(llama)``
wraps the model's ``generate``, which every completion goes through, and notes the prompt's
length and each token the reply keeps (all but an end-of-generation token, which the
server drops too).  So a streamed reply's usage equals the same reply's non-streamed usage.
As OpenAI does, every other chunk of such a stream carries ``"usage": null``.

    count_usage(llama)                                    # once, on the model the server loaded
    await run_with_mended_reply(app, scope, receive, send, request)   # per chat request
"""

from __future__ import annotations

import contextvars
import json
from typing import Any, Awaitable, Callable, Iterator, TypeGuard

__all__ = ["count_usage", "run_with_mended_reply", "trim_top_logprobs"]

# the usage of the reply being generated in this context, filled by count_usage's generate
_usage: contextvars.ContextVar[dict | None] = contextvars.ContextVar("nora_reply_usage", default=None)


def count_usage(llama: Any) -> None:
    """Wrap `llama.generate` to note, for a request that asked for its usage, the prompt's
    tokens and the reply's (what the server reports as usage for a whole reply)."""
    generate = llama.generate
    try:
        import llama_cpp

        vocab = llama._model.vocab  # the library's own test for the end of a reply
        is_end = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))  # noqa: E731
    except (AttributeError, ImportError):  # pragma: no cover - another llama-cpp-python
        eos = llama.token_eos()
        is_end = lambda token: token == eos  # noqa: E731

    def generate_counted(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        usage = _usage.get()
        if usage is None:  # no one asked: nothing to note
            return generate(tokens, *args, **kwargs)
        return _counted(generate(tokens, *args, **kwargs), usage, len(tokens), is_end)

    llama.generate = generate_counted


def _counted(tokens: Iterator[int], usage: dict, prompt: int, is_end: Callable[[int], bool]) -> Iterator[int]:
    usage.update(prompt_tokens=prompt, completion_tokens=0)
    for token in tokens:  # create_completion only iterates it (never sends a value in)
        if not is_end(token):  # an end-of-generation token ends the reply and is not kept
            usage["completion_tokens"] += 1
        yield token


def trim_top_logprobs(reply: dict, top: int) -> dict:
    """Keep at most `top` alternatives per token, in place; returns reply.  llama.cpp lists the
    `top` likeliest, then adds the chosen token when it is not among them.
    Example: trim_top_logprobs({"choices": [{"logprobs": {"content": [{"top_logprobs": [a]}]}}]}, 0)
        -> {"choices": [{"logprobs": {"content": [{"top_logprobs": []}]}}]}"""
    for choice in reply.get("choices") or []:
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        for item in (logprobs.get("content") or []) if isinstance(logprobs, dict) else []:
            if isinstance(item, dict) and isinstance(item.get("top_logprobs"), list):
                item["top_logprobs"] = item["top_logprobs"][:top]
    return reply


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


async def run_with_mended_reply(app: Any, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any,
                                request: dict) -> None:
    """Run the app for a chat request, its reply mended as the request asks (see the module docstring)."""
    top = request.get("top_logprobs") if request.get("logprobs") is True else None
    top = top if _whole(top) and top >= 0 else None
    options = request.get("stream_options")
    usage: dict | None = {} if (request.get("stream") is True and isinstance(options, dict)
                   and options.get("include_usage") is True) else None
    if top is None and usage is None:
        await app(scope, receive, send)
        return
    token = _usage.set(usage)
    try:
        await app(scope, receive, _MendedSend(send, top, usage))
    finally:
        _usage.reset(token)


class _MendedSend:
    """The app's `send`, with a JSON reply or an event stream mended on the way."""

    def __init__(self, send: Any, top: int | None, usage: dict | None) -> None:
        self.send, self.top, self.usage = send, top, usage
        self.kind: str | None = None  # "json", "events", or None: passed on as it comes
        self.start: dict | None = None
        self.held = b""  # a JSON body so far, or the part of an event not yet complete
        self.last: dict | None = None  # the last chunk streamed: the usage chunk copies its id

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            kind = dict((k.lower(), v) for k, v in message.get("headers", [])).get(b"content-type", b"")
            if message.get("status") == 200 and kind.startswith(b"text/event-stream"):
                self.kind = "events"
            elif message.get("status") == 200 and kind.startswith(b"application/json") and self.top is not None:
                self.kind, self.start = "json", message  # held until the body is known: its length changes
                return
            await self.send(message)
        elif message["type"] != "http.response.body" or self.kind is None:
            await self.send(message)
        elif self.kind == "json":
            await self._json(message)
        else:
            await self._events(message)

    async def _json(self, message: dict) -> None:
        self.held += message.get("body", b"")
        if message.get("more_body", False):
            return
        body, self.held = self.held, b""
        assert self.top is not None  # a JSON reply is held only to trim its top_logprobs
        try:
            body = json.dumps(trim_top_logprobs(json.loads(body), self.top)).encode()
        except (ValueError, AttributeError):  # not the reply expected: sent on as it came
            pass
        assert self.start is not None
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _events(self, message: dict) -> None:
        more = message.get("more_body", False)
        events = (self.held + message.get("body", b"")).split(b"\n\n")
        self.held = events.pop() if more else b""  # an event not yet complete waits for the rest
        out = b"".join(self._event(event) + b"\n\n" if event else b"" for event in events)
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    def _event(self, event: bytes) -> bytes:
        """One server-sent event, mended: its chunk trimmed and given "usage": null, or the
        usage chunk put in before [DONE]."""
        if not event.startswith(b"data: "):  # a keep-alive comment
            return event
        data = event[len(b"data: "):]
        if data.strip() == b"[DONE]":
            if self.usage and self.last is not None:
                prompt, completion = self.usage["prompt_tokens"], self.usage["completion_tokens"]
                chunk = {key: self.last[key] for key in ("id", "object", "created", "model") if key in self.last}
                chunk.update(choices=[], usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                                "total_tokens": prompt + completion})
                return b"data: " + json.dumps(chunk).encode() + b"\n\n" + event
            return event
        try:
            chunk = json.loads(data)
        except ValueError:
            return event
        if not isinstance(chunk, dict) or "choices" not in chunk:  # an error, say: as it came
            return event
        self.last = chunk
        if self.top is not None:
            trim_top_logprobs(chunk, self.top)
        if self.usage is not None:
            chunk["usage"] = None
        return b"data: " + json.dumps(chunk).encode()
