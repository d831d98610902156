"""`nora serve`: stop generating a reply when the client that asked for it has gone.

llama-cpp-python's server (0.3.x) runs one request at a time.  A streamed request whose
client closes the connection stops after the next token, and a queued request whose client
left is dropped when its turn comes.  But a request that is *not* streamed, once the model
has started on it, ran to its end (max_tokens, or the whole window when none is given)
while nobody read it.  The openai client gives up after its timeout and, by default, sends
the request again (max_retries=2): with a class queued behind it, each give-up added a full
reply of work to the queue, and every student waited for replies that went nowhere.

Two small parts fix that:

- ``StopWhenGone``, ASGI middleware: once a POST's body has been read, it listens for the
  client's disconnect and sets a flag for that request (a ``threading.Event`` in a context
  variable, which reaches the worker thread where the model runs);
- ``stop_when_gone(llama)``: the model's ``create_completion`` (which chat requests go
  through too) gets one more stopping criterion, "has the flag been set?", checked after
  every token.  The reply then ends early and is thrown away by the server.  The flag is a
  Cancel (_cancel.py) that llama.cpp also looks at inside the prompt read (_abort.py): a
  client that leaves while its long prompt is read (1,900 tokens: ~10 s on one thread) frees
  the model at once for the next in line, instead of after the whole prompt.

The same flag stops every reply when the server stops (Ctrl-C, SIGTERM): ``stop_all_replies()``,
called as uvicorn begins its shutdown, sets each request's flag.  uvicorn waited for a reply
being written to finish (8.9 s for a 400-token one), and a stream's response was cut off
without its end, so uvicorn logged "ERROR: ASGI callable returned without completing
response." and the server printed "disconnected" and "Disconnected from client (via
refresh/close) Address(...)".  Now a reply cut short by the stop is never passed off as
whole: a non-streamed one is answered 503 with OpenAI's error shape, and a stream ends with
an error event (the openai client raises it as ``APIError``) and a proper end.  The server's
own disconnect lines are said once, in Nora's words, or not at all when the server is
stopping (``quiet_disconnect_lines``).

Since it sees each request from its arrival to its end, ``StopWhenGone`` also prints one line
per reply the model wrote, for the instructor watching a class on the server's terminal: the
access log's one line per request said only that a request came (a streamed one, at once),
never how long its learner waited or how many were still in line:

    nora serve: 127.0.0.1:51708 got 57 tokens in 14.0 s, the first after 12.3 s; 3 more waiting

    app = StopWhenGone(app)         # around the server's app
    stop_when_gone(llama)           # the one model the server loaded
    quiet_disconnect_lines(llama_cpp.server.app)
    stop_all_replies()              # when the server stops
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any, Awaitable, Callable

from ._abort import abort_on, aborted
from ._cancel import Cancel
from ._chat_request import error_body

__all__ = ["StopWhenGone", "stop_when_gone", "stop_all_replies", "quiet_disconnect_lines"]

STOPPED = "nora serve was stopped before this reply was complete: send the request again when it is back"


class _Request:
    """One request's state: its "client gone" flag, the tokens generated for it, and whether
    its reply was stopped early (and that said)."""

    def __init__(self, client: str = "") -> None:
        self.client = client  # "127.0.0.1:51708", as the access log and the served line name it
        self.gone = Cancel()  # a threading.Event that llama.cpp reads too, inside a prompt read
        self.tokens = 0
        self.cut = False
        self.said = False
        self.aborted = False  # llama.cpp gave up its prompt read (or a token) once gone was set
        self.asked = time.monotonic()  # when the request came
        self.first: float | None = None  # when its first token came (it waited its turn until then)
        self.written = 0  # the reply's tokens (an end-of-text token is not one), as its usage counts them


# the request being served in this context; None outside a request
_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("nora_client_gone", default=None)
_in_flight: set[_Request] = set()  # every request being served (touched on the event loop only)
_stopping = threading.Event()  # set once the server is stopping


def stop_all_replies() -> None:
    """The server is stopping: every reply stops at its next token (see the module docstring)."""
    _stopping.set()
    for request in list(_in_flight):
        request.gone.set()


def _error_body(message: str) -> bytes:
    return json.dumps(error_body(message, kind="server_error")).encode()


class StopWhenGone:
    """ASGI middleware: sets this request's "client gone" flag when the client disconnects, and
    ends properly a reply that the server's stop cut short."""

    def __init__(self, app: Any, say: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.say = say or (lambda text: print(text, flush=True))  # stdout, beside the access log

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        import anyio

        request, body_read = _Request(_address(scope)), anyio.Event()
        gone = request.gone
        state = {"started": False, "ended": False, "stream": False, "replaced": False}

        async def seen(message: dict) -> dict:  # the app's own reads pass through here
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_receive() -> dict:
            return await seen(await receive())

        async def listen() -> None:  # after the body, the next message can only be the disconnect
            await body_read.wait()
            while not gone.is_set():
                await seen(await receive())

        async def app_send(message: dict) -> None:
            cut = request.cut and _stopping.is_set()  # the server's stop cut this reply short
            if message["type"] == "http.response.start":
                state["started"] = True
                state["stream"] = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                                      for k, v in message.get("headers", []))
                if cut and not state["stream"]:  # never passed off as a whole reply
                    state["replaced"] = True
                    await _send_stopped(send)
                    return
            elif message["type"] == "http.response.body":
                if state["replaced"] or (state["stream"] and cut):  # a stream's end, below, says why
                    return
                state["ended"] = not message.get("more_body", False)
            await send(message)

        token = _current.set(request)
        _in_flight.add(request)
        failure = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(listen)
                try:
                    await self.app(scope, app_receive, app_send)
                except Exception as exc:  # raised as it came, not wrapped in the task group's ExceptionGroup
                    failure = exc
                if failure is None and _stopping.is_set() and not state["replaced"]:
                    state["replaced"] = await _end_cut_reply(send, state)
                tasks.cancel_scope.cancel()  # the reply is sent (or refused): stop listening
        finally:
            _in_flight.discard(request)
            _current.reset(token)
        if failure is not None:
            raise failure
        # a reply the stop cut short is not one the model wrote; one that was whole when the stop came is
        if request.first is not None and not request.cut and not state["replaced"]:
            self.say(_served_line(scope, request, len(_in_flight)))


async def _send_stopped(send: Any) -> None:
    """A 503 in OpenAI's shape: the reply was cut short by the server's stop.  ``x-should-retry: false``:
    the openai client retries a 5xx (twice, 0.5-2 s apart) and a stopped server is not back by then, so
    its retries met a closed port and the learner read "could not reach the server" instead of this
    message; the header (openai-python's, and the other Stainless clients') says not to."""
    body = _error_body(STOPPED)
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"x-should-retry", b"false")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _end_cut_reply(send: Any, state: dict) -> bool:
    """The server stopped while this reply was being written: end it properly, saying why.
    True when it did (the reply was not whole), False when the reply had been sent whole."""
    if not state["started"]:
        await _send_stopped(send)
    elif state["stream"] and not state["ended"]:  # the openai client raises an event with "error" as APIError
        await send({"type": "http.response.body", "body": b"data: " + _error_body(STOPPED) + b"\n\n",
                    "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        return False
    return True


def _address(scope: dict) -> str:
    """Who sent a request, as the access log names it.  Example: '127.0.0.1:51708'"""
    client = scope.get("client") or ("?", 0)
    return f"{client[0]}:{client[1]}"


def _who(request: _Request | None) -> str:
    """'the client at 127.0.0.1:51708' (the instructor can tell which learner left), or 'the client'."""
    return f"the client at {request.client}" if request is not None and request.client else "the client"


def _served_line(scope: dict, request: _Request, waiting: int) -> str:
    """The line the instructor reads for each reply the model wrote: who got it, how long it was, how
    long its client waited for the first token (its turn in the queue and reading the prompt), and how
    many requests are still in line.  The access log's line for the request names the same address.
    Example: 'nora serve: 127.0.0.1:51708 got 57 tokens in 14.0 s, the first after 12.3 s; 3 more waiting'"""
    now = time.monotonic()
    tokens = f"{request.written} token{'' if request.written == 1 else 's'}"
    line = (f"nora serve: {_address(scope)} got {tokens} in {now - request.asked:.1f} s, "
            f"the first after {(request.first or now) - request.asked:.1f} s")
    return line + (f"; {waiting} more waiting" if waiting else "")


def _after(request: _Request | None) -> str:
    """' after 3 tokens', ' after 1 token', or '' when not known."""
    if request is None:
        return ""
    return f" after {request.tokens} token{'' if request.tokens == 1 else 's'}"


def quiet_disconnect_lines(module: Any, say: Callable[[str], None] | None = None) -> None:
    """llama-cpp-python's server prints "disconnected" and "Disconnected from client (via
    refresh/close) Address(...)" when a client leaves (and when the server stops): said once in
    Nora's words instead, and not at all when the server is stopping.
    module: llama_cpp.server.app, whose print() calls these are."""
    say = say or (lambda text: print(text, flush=True))

    def quiet_print(*args: Any, **kwargs: Any) -> None:
        text = " ".join(map(str, args))
        if text == "disconnected":
            return
        if not text.startswith("Disconnected from client"):
            print(*args, **kwargs)
            return
        request = _current.get()
        if _stopping.is_set() or (request is not None and request.said):
            return
        if request is not None:
            request.said = True
        if "before llm invoked" in text:
            say(f"nora serve: {_who(request)} left before its turn; its reply was not started")
        else:
            say(f"nora serve: {_who(request)} left; its reply stopped{_after(request)}")

    module.print = quiet_print


def stop_when_gone(llama: Any, say: Callable[[str], None] | None = None) -> None:
    """Give `llama.create_completion` one more stopping criterion: this request's client has gone
    (or the server is stopping).
    Example: stop_when_gone(llama); a non-streamed request whose client times out stops after
    the token being generated, and the server prints one line saying so."""
    create_completion = llama.create_completion
    say = say or (lambda text: print(text, flush=True))  # stdout, beside the access log

    def create_completion_until_gone(*args: Any, stopping_criteria: Any = None, **kwargs: Any) -> Any:
        request = _current.get()
        if request is None:  # not inside a request (a test calling the model directly)
            return create_completion(*args, stopping_criteria=stopping_criteria, **kwargs)
        from llama_cpp import StoppingCriteriaList

        def client_gone(input_ids: Any, logits: Any) -> bool:  # checked after every token
            if not request.gone.is_set():
                request.tokens += 1
                return False
            if not request.cut:  # llama.cpp asks once more after the last one: say it once
                request.cut = True
                if not _stopping.is_set() and not request.said:
                    request.said = True
                    say(f"nora serve: {_who(request)} left; its reply stopped{_after(request)}")
            return True

        criteria = StoppingCriteriaList([*(stopping_criteria or []), client_gone])
        try:
            made = create_completion(*args, stopping_criteria=criteria, **kwargs)
        except IndexError:  # a reply that is not streamed: see _quietly
            if not request.aborted:
                raise
            return _nothing(kwargs.get("model"))
        return _quietly(made, request) if kwargs.get("stream") else made

    llama.create_completion = create_completion_until_gone
    _note_tokens(llama, say)


def _quietly(chunks: Any, request: _Request) -> Any:
    """A stream's chunks, ended quietly if llama.cpp gave up its prompt read: llama-cpp-python then asks
    the stopping criteria once more with the last token's scores, and there are none when not one batch of
    the prompt was read (IndexError).  The reply goes to nobody (its client left, or the server stops)."""
    try:
        yield from chunks
    except IndexError:
        if not request.aborted:
            raise


def _nothing(model: Any) -> dict:
    """An empty completion, as create_completion returns one: the reply of a prompt read given up (_quietly)."""
    return {"id": "cmpl-stopped", "object": "text_completion", "created": int(time.time()), "model": model or "",
            "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _note_tokens(llama: Any, say: Callable[[str], None]) -> None:
    """Wrap `llama.generate` to note, for the request being served, when its first token came and how
    many tokens its reply has (what the line the instructor reads says: _served_line)."""
    generate = llama.generate
    import llama_cpp

    vocab = llama._model.vocab

    def generate_noted(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        request = _current.get()  # create_completion calls this in the request's context
        inner = generate(tokens, *args, **kwargs)
        return inner if request is None else _noted(inner, request, vocab, llama_cpp.llama_vocab_is_eog, llama, say)

    llama.generate = generate_noted


def _noted(tokens: Any, request: _Request, vocab: Any, is_end: Callable[[Any, int], bool], llama: Any,
           say: Callable[[str], None]) -> Any:
    """The tokens, noted; llama.cpp gives up the prompt read (or a token) once the request's flag is set:
    the reply then ends with what it has (nothing, in the prompt read), thrown away as a stopped one is."""
    with abort_on(llama, request.gone):
        try:
            for token in tokens:  # create_completion only iterates it (never sends a value in)
                if request.first is None:
                    request.first = time.monotonic()
                if not is_end(vocab, token):  # an end-of-generation token ends the reply and is not kept
                    request.written += 1
                yield token
        except RuntimeError as exc:
            if not aborted(exc, request.gone):
                raise
            request.aborted = True
            if not request.cut:  # said once, as client_gone says it
                request.cut = True
                if not _stopping.is_set() and not request.said:
                    request.said = True
                    where = _after(request) if request.first is not None else " while its prompt was read"
                    say(f"nora serve: {_who(request)} left; its reply stopped{where}")
