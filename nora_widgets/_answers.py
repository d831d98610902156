"""What a server answered instead of a chat completion, said in one line: the cold paths of the turns.

A web page at the base URL (a web UI on that port, a URL missing /v1), another JSON API, an error sent as
a 200's body, a body that is not JSON, or a whole completion where a stream was asked for.  Only ever
called once reading the answer has failed or a stream has ended with no chunks: nothing here runs on a
turn that succeeds the usual way.  Pure: no network, no UI (conversation.py and aio.py use it).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import NOT_JSON, BadResponseError, ErrorBodyError

__all__ = ["not_a_completion", "empty_stream", "reply_not_streamed", "raise_if_not_json"]


def not_a_completion(response: Any) -> BadResponseError:
    """The error for an answer with no choices[0].message.content: a web page at the base URL,
    another JSON API, an empty choices list.
    Example: "<!DOCTYPE html>..." -> "the server's answer is not a chat completion (a text/HTML page)"
    A 200 whose body is an error, {"error": {"message": ...}} (nora serve's answer to a request that
    waited past its keep-alive and then failed), is that error, in the server's words:
    Example: {"error": {"message": "overloaded"}} -> "the server answered with an error: overloaded"
    """
    error = response.get("error") if isinstance(response, dict) else getattr(response, "error", None)
    if isinstance(error, dict) and isinstance(error.get("message"), str):  # openai keeps it as an extra field
        return ErrorBodyError(error)
    if isinstance(response, (str, bytes)):
        text = response.decode(errors="replace") if isinstance(response, bytes) else response
        what = _PAGE if text.lstrip().startswith("<") else _TEXT
    elif not getattr(response, "choices", None):
        what = "no choices"
    else:
        what = "no message in choices[0]"
    return BadResponseError(f"the server's answer is not a chat completion ({what})")


_PAGE, _TEXT = "a text/HTML page", "plain text"  # what came back instead: one wording, streamed or not


def empty_stream(stream: Any) -> BadResponseError:
    """The error for a stream that ended before its first chunk.  A web page at the base URL (a web UI on
    that port, a URL missing /v1) answers a streamed request with its page: said as the answer not streamed
    is, from the Content-Type of the response the stream was read from (openai's Stream keeps it).  A server
    that ignores "stream": true answers with JSON: an error as the body is said in the server's own words
    (as not streamed), any other JSON is named; a whole completion is no error (reply_not_streamed).
    Example: a 200 text/html -> "the server's answer is not a stream of chat chunks (a text/HTML page)";
        a 200 {"error": {"message": "overloaded"}} -> 'the server answered with an error: overloaded';
        a 200 {"status": "ok"} -> "the server's answer is not a stream of chat chunks (JSON)";
        a stream with no chunks and no such header -> 'the server sent an empty stream (no chunks)'"""
    kind = _content_type(stream)
    what = _PAGE if kind.startswith("text/html") else _TEXT if kind.startswith("text/plain") else ""
    if kind.startswith("application/json"):
        body = _json_kept(stream)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return ErrorBodyError(error)
        what = "JSON"
    if what:
        return BadResponseError(f"the server's answer is not a stream of chat chunks ({what})")
    return BadResponseError("the server sent an empty stream (no chunks)")


def reply_not_streamed(stream: Any) -> str:
    """The reply's text when a streamed request was answered with a whole chat completion (JSON) instead:
    some servers and proxies ignore "stream": true.  The reply is then one piece, and the turn succeeds.
    Anything else that ended before its first chunk raises its error (empty_stream).  Only ever called
    on the error path: a stream that ended with no chunks.
    openai's stream reads the body as events and keeps nothing of it; make_client's clients keep a JSON
    body readable (clients._keep_json), so the reply can be read from stream.response.  Another client's
    whole reply is said as '... not a stream of chat chunks (JSON)'.
    Example: {"choices": [{"message": {"role": "assistant", "content": "Hi"}}], ...} -> 'Hi'"""
    body: Any = _json_kept(stream) if _content_type(stream).startswith("application/json") else None
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise empty_stream(stream) from None
    if text is None:  # e.g. a reply that is only a tool call, as run_turn takes it
        return ""
    if not isinstance(text, str):
        raise empty_stream(stream)
    return text


def _content_type(stream: Any) -> str:
    """The Content-Type of the response a stream was read from, lower case; '' when there is none.
    Example: openai's Stream over a web page -> 'text/html; charset=utf-8'; a generator -> ''"""
    try:
        return str(stream.response.headers.get("content-type") or "").lower()
    except Exception:  # not openai's stream (a generator, the embedded model's): no headers to read
        return ""


def _json_kept(stream: Any) -> Any:
    """The JSON body of the response a stream was read from, parsed, if it was kept (clients._keep_json);
    None when it was not kept (openai's stream reading it leaves nothing) or is not JSON."""
    try:
        return json.loads(stream.response.content)
    except Exception:  # httpx's ResponseNotRead, a body that is not JSON, no response at all
        return None


def raise_if_not_json(exc: Exception) -> None:
    """A 200 whose body is not JSON: openai raises json's JSONDecodeError ("Expecting property name enclosed in
    double quotes: line 1 column 2 (char 1)"), which does not say that the server sent it.  Raise the
    BadResponseError that does, from it.  Only ever called on the error path.
    Example: '{'this is': not JSON' -> BadResponseError("the server's answer is not JSON")"""
    if isinstance(exc, json.JSONDecodeError):
        raise BadResponseError(NOT_JSON) from exc
