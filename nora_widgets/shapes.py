"""Plain response objects with the shape of openai's chat completions (no pydantic, no openai).

openai's response types are pydantic models, and ``import openai.types.chat`` loads
every type of the whole API first: 0.6-0.9 s on a small machine, more than the
embedded model needs to answer a short question.  These classes have the same
attributes and give the same ``model_dump()`` for what a chat completion holds, so
code that reads a response cannot tell them apart:

    reply = make_completion("Hello!", "SmolLM2", prompt_tokens=31, completion_tokens=3)
    reply.choices[0].message.content, reply.usage.total_tokens   # -> ('Hello!', 34)

What they are not: validated, or openai's classes (``isinstance(reply,
openai.types.chat.ChatCompletion)`` is False).  ``LocalClient(responses="plain")``
returns them (``nora ask`` and ``nora chat`` use it); by default LocalClient returns
openai's own types, as every other client does.

The field lists follow openai's types, in openai's order (checked against the
installed openai by tests/test_shapes.py); the fields the local model never fills
(refusal, audio, tool_calls, ...) are None, as openai leaves them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "CompletionUsage",
    "PromptTokensDetails",
    "make_chunk",
    "make_completion",
]


def _dump(value: Any, exclude_none: bool) -> Any:
    """A field's value as plain data: shapes become dicts, lists are dumped item by item."""
    if isinstance(value, Shape):
        return value.model_dump(exclude_none=exclude_none)
    if isinstance(value, list):
        return [_dump(item, exclude_none) for item in value]
    return value


class Shape:
    """A record with a fixed list of fields, each an ordinary attribute (None unless given).

    Subclasses name their fields in ``_fields`` (openai's order) and fixed values in
    ``_defaults``.  Example: CompletionUsage(prompt_tokens=3).total_tokens -> None
    """

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(self._fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        for name in self._fields:
            setattr(self, name, values.get(name, self._defaults.get(name)))

    def model_dump(self, *, exclude_none: bool = False) -> dict:
        """The fields as a dict, nested objects as dicts (what openai's model_dump() gives).

        Example: PromptTokensDetails(cached_tokens=5).model_dump(exclude_none=True) -> {'cached_tokens': 5}
        """
        out = {}
        for name in self._fields:
            value = _dump(getattr(self, name), exclude_none)
            if not (exclude_none and value is None):
                out[name] = value
        return out

    def model_dump_json(self, *, indent: int | None = None, exclude_none: bool = False) -> str:
        """The same as JSON text, written the way pydantic writes it (compact unless indent).

        Example: PromptTokensDetails(cached_tokens=5).model_dump_json(exclude_none=True) -> '{"cached_tokens":5}'
        """
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.model_dump(exclude_none=exclude_none), indent=indent, ensure_ascii=False,
                          separators=separators)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.model_dump() == other.model_dump()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like a pydantic model

    def __repr__(self) -> str:
        # the fields that hold something; the many None fields would hide them
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if getattr(self, n) is not None)
        return f"{type(self).__name__}({shown})"


# --------------------------------------------------------------------------- #
# a whole reply: client.chat.completions.create(..., stream=False)


class PromptTokensDetails(Shape):
    """usage.prompt_tokens_details: cached_tokens = prompt tokens taken from a cache, not read again."""

    _fields = ("audio_tokens", "cache_write_tokens", "cached_tokens", "image_tokens", "text_tokens")


class CompletionUsage(Shape):
    """usage: tokens read (prompt_tokens) and written (completion_tokens), and their total."""

    _fields = ("completion_tokens", "prompt_tokens", "total_tokens", "completion_tokens_details",
               "prompt_tokens_details")


class ChatCompletionMessage(Shape):
    """choices[i].message: the reply, {"role": "assistant", "content": ...} as attributes."""

    _fields = ("content", "refusal", "role", "annotations", "audio", "function_call", "tool_calls")
    _defaults = {"role": "assistant"}


class Choice(Shape):
    """choices[i]: one candidate reply, why it ended ("stop", "length"), and its place (index)."""

    _fields = ("finish_reason", "index", "logprobs", "message")


class ChatCompletion(Shape):
    """The whole response: id, created (Unix seconds), model, choices, usage."""

    _fields = ("id", "choices", "created", "model", "object", "metadata", "moderation", "service_tier",
               "system_fingerprint", "usage")
    _defaults = {"object": "chat.completion"}


# --------------------------------------------------------------------------- #
# a streamed reply: create(..., stream=True) yields chunks


class ChoiceDelta(Shape):
    """chunk.choices[0].delta: the new piece of text (content), and the role in the first chunk."""

    _fields = ("audio", "content", "function_call", "refusal", "role", "tool_calls")


class ChunkChoice(Shape):
    """chunk.choices[i] (openai calls this class Choice too): a delta, and finish_reason in the last one."""

    _fields = ("delta", "index", "finish_reason", "logprobs")


class ChatCompletionChunk(Shape):
    """One piece of a stream; the optional last one has no choices, only usage."""

    _fields = ("id", "choices", "created", "model", "object", "moderation", "obfuscation", "service_tier",
               "system_fingerprint", "usage")
    _defaults = {"object": "chat.completion.chunk"}


# --------------------------------------------------------------------------- #
# building them (the same arguments as clients.make_completion / make_chunk)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> CompletionUsage:
    details = PromptTokensDetails(cached_tokens=cached_tokens) if cached_tokens is not None else None
    return CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           total_tokens=prompt_tokens + completion_tokens, prompt_tokens_details=details)


def make_completion(text: str, model: str, prompt_tokens: int, completion_tokens: int,
                    finish_reason: str = "stop", cached_tokens: int | None = None) -> ChatCompletion:
    """A ChatCompletion holding one assistant message (cached_tokens: fills usage.prompt_tokens_details).

    Example: make_completion("Hi!", "m", 10, 2).usage.total_tokens -> 12
    """
    choice = Choice(index=0, message=ChatCompletionMessage(content=text), finish_reason=finish_reason)
    return ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex[:12]}", created=int(time.time()), model=model,
                          choices=[choice], usage=_usage(prompt_tokens, completion_tokens, cached_tokens))


def make_chunk(cid: str, created: int, model: str, content: str | None = None, finish_reason: str | None = None,
               role: str | None = None, usage: dict | None = None) -> ChatCompletionChunk:
    """One ChatCompletionChunk; with usage (a dict as openai sends it) it has no choices.

    Example: make_chunk("c1", 0, "m", content="Hel").choices[0].delta.content -> 'Hel'
    """
    if usage is not None:
        fields = dict(usage)  # {"prompt_tokens": 31, ..., "prompt_tokens_details": {"cached_tokens": 0}}
        details = fields.pop("prompt_tokens_details", None)
        counts = CompletionUsage(**fields, prompt_tokens_details=None if details is None
                                 else PromptTokensDetails(**details))
        return ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=counts)
    delta = ChoiceDelta(content=content, role=role or None)
    choice = ChunkChoice(delta=delta, index=0, finish_reason=finish_reason)
    return ChatCompletionChunk(id=cid, created=created, model=model, choices=[choice])
