"""Async turns: arun_turn, astream_turn and asafe_run_turn, for code that awaits (FastAPI, aiohttp, top-level
await in Jupyter).

The same turn as run_turn and stream_turn (conversation.py), with the same checks, trimming, overflow retry and
errors; only the waiting is different:

    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")   # or make_async_client()
    reply = await arun_turn(client, history, "Do you have Le Guin?")                    # history: +2 messages
    async for piece in astream_turn(client, history, "How much is it?"):
        print(piece, end="")

One difference, on purpose: the list is not touched until the reply is in.  While a turn is awaited other
tasks run (another request of the same web app, a cancel), so the turn works on its own list, exactly what
it sends, and appends the user message and the reply together at the end, in one step with no await in
between.  Whatever stops it - an exception, a cancelled task, asyncio.wait_for's timeout, a `break` out of
`async for` (whose clean-up asyncio runs only later), aclose() - the list is as it was, at once.

A sync client (ScriptedClient, LocalClient, openai.OpenAI, make_client()'s) is accepted too: its call runs
in a worker thread, so the event loop never stalls on it, and a cancel stops the embedded model at its next
token, or inside its prompt read (see arun_turn; _abort.py).  asafe_run_turn is safe_run_turn awaited: a failed turn is its one line, not an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from typing import TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Callable, Protocol

from ._cancel import CANCEL, Cancel
from .conversation import (
    CANCELLED,
    DEFAULT_TEMPERATURE,
    ChatClient,
    Message,
    TurnResult,
    _cut_off,
    _default_model,
    _failed_turn,
    _fewer_turns,
    _is_async,
    _raise_clearer,
    _raise_if_swapped,
    trim_history,
    validate_history,
    validate_user_text,
)
from ._answers import not_a_completion, raise_if_not_json, reply_not_streamed
from .errors import BadResponseError, HistoryError, describe_failure, mask_keys

if TYPE_CHECKING:
    from .clients import WireLog  # only for AsyncNoraClient's annotations

__all__ = ["AsyncChatClient", "AsyncNoraClient", "arun_turn", "astream_turn", "asafe_run_turn"]


class _AsyncCompletionsLike(Protocol):
    def create(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """create(model=..., messages=[...], ...) -> awaitable of a ChatCompletion, or of an async stream of chunks."""
        ...


class _AsyncChatLike(Protocol):
    @property
    def completions(self) -> _AsyncCompletionsLike: ...


class AsyncChatClient(Protocol):
    """What an async turn needs of a client, for a type checker: ``.chat.completions.create(**kwargs)`` that
    returns an awaitable.  openai.AsyncOpenAI is one; so is any object of your own with that attribute path.
    arun_turn and astream_turn also take a sync ChatClient (run in a worker thread).
    Example: client: AsyncChatClient = openai.AsyncOpenAI(); await arun_turn(client, history, "Hi")
    """

    @property
    def chat(self) -> _AsyncChatLike: ...


class AsyncNoraClient(AsyncChatClient, Protocol):
    """What make_async_client() returns for a server, for a type checker: an AsyncChatClient with the extras
    of NoraClient, ``default_model`` (the name sent when a turn gives none) and ``wire`` (the last request as
    sent).  make_async_client() is typed AsyncNoraClient | NoraClient (the embedded model and the scripted
    stand-in come back sync), so both extras type-check on whatever it gives.
    Example: client = make_async_client(); client.default_model -> 'SmolLM2-135M-Instruct'; client.wire.last
    """

    @property
    def default_model(self) -> str: ...

    @property
    def wire(self) -> WireLog: ...


_AnyClient = AsyncChatClient | ChatClient  # a sync one is called in a worker thread


async def arun_turn(
    client: _AnyClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    *,
    on_sent: Callable[[list[Message]], None] | None = None,
    **kwargs: Any,
) -> str:
    """run_turn, awaited: append the user turn and the reply, return the reply's text.

    The history grows by exactly two messages, both appended once the reply is in; on any failure
    (an exception, the task cancelled, a timeout of asyncio.wait_for) it is left exactly as it was.
    keep_last_n_turns and on_sent as in run_turn (the overflow retry with half as many turns included).
    A sync client is called in a worker thread rather than refused: make_client() gives one (the embedded
    model, the scripted stand-in), and a web app should not need two code paths.  A cancelled await
    returns at once and the list stays as it was; the call in the thread is told so (_cancel.py), and the
    embedded model stops at its next token (once it has read the prompt) and is free for the next turn.
    A sync client over the network (openai.OpenAI) cannot be stopped from outside: its request runs to
    its end or its timeout, and the reply is dropped (openai.AsyncOpenAI's is closed at once).
    Example: await arun_turn(openai.AsyncOpenAI(), history, "hi") -> 'Hello!'; len(history) grew by 2
    """
    user = _checked("arun_turn", client, history, user_text)
    try:
        response, sent = await _send(client, history, user, keep_last_n_turns, model, temperature, kwargs, None)
        try:
            reply_text = response.choices[0].message.content  # choices is a list: n candidates
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise not_a_completion(response) from exc
    except KeyboardInterrupt as exc:
        if exc.__class__ is KeyboardInterrupt and not exc.args:  # a bare Ctrl-C: say so from here
            raise KeyboardInterrupt(CANCELLED) from None
        raise
    except Exception as exc:
        mask_keys(exc)  # a server's echo of the key must not reach the traceback
        raise
    if reply_text is None:  # e.g. a reply that is only a tool call
        reply_text = ""
    history.extend((user, {"role": "assistant", "content": reply_text}))  # the whole turn in one step
    if on_sent is not None:
        on_sent(sent)
    return reply_text


def astream_turn(
    client: _AnyClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    *,
    on_sent: Callable[[list[Message]], None] | None = None,
    **kwargs: Any,
) -> AsyncGenerator[str, None]:
    """stream_turn, awaited: yield the reply's text pieces as they arrive (`async for piece in ...`).

    Bad input is refused when astream_turn is called, before any piece is asked for.  The user message
    and the full reply are appended when the stream has ended; if it fails, or the caller stops early
    (break, aclose(), the task cancelled), the list is as it was.  A sync client's stream is read in a
    worker thread of its own, and closed there when the caller stops: the embedded model stops at the
    next token and frees itself for the next turn.
    Example: "".join([p async for p in astream_turn(client, history, "hi")]) == history[-1]["content"]
    """
    user = _checked("astream_turn", client, history, user_text)
    return _astream_turn(client, history, user, model, temperature, keep_last_n_turns, on_sent, kwargs)


async def _astream_turn(client: _AnyClient, history: list[Message], user: Message, model: str | None,
                        temperature: float, keep_last_n_turns: int | None,
                        on_sent: Callable[[list[Message]], None] | None, kwargs: dict) -> AsyncGenerator[str, None]:
    """astream_turn's generator, once its input has been checked."""
    pieces: list[str] = []
    # a sync client's stream is read chunk by chunk on this one thread: a generator that holds a lock
    # (LocalClient) is always driven, and closed, by the same thread, in order
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nora-stream")
    stream: Any = None
    completed = False
    cancel = Cancel()  # set when the caller stops early: the embedded model stops even inside the prompt read,
    try:               # where the stream's next() runs in the worker and cannot be closed yet (_cancel.py)
        stream, sent = await _send(client, history, user, keep_last_n_turns, model, temperature,
                                   {"stream": True, **kwargs}, worker, cancel)
        next_chunk = _reader(stream, worker)
        chunks = 0
        try:
            while True:
                try:
                    chunk = await next_chunk()
                except StopAsyncIteration:
                    break
                chunks += 1
                if not chunk.choices:  # e.g. the final usage-only chunk
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    pieces.append(piece)
                    yield piece
        except Exception as exc:
            if not pieces:
                raise_if_not_json(exc)
                raise
            raise _cut_off(exc, pieces) from exc
        if chunks == 0:  # not a stream: a whole reply is used, anything else raises why not
            piece = reply_not_streamed(stream)
            if piece:
                pieces.append(piece)
                yield piece
        completed = True
    except KeyboardInterrupt as exc:
        if exc.__class__ is KeyboardInterrupt and not exc.args:  # a bare Ctrl-C: say so from here
            raise KeyboardInterrupt(CANCELLED) from None
        raise
    except Exception as exc:
        mask_keys(exc)  # a server's echo of the key must not reach the traceback
        raise
    finally:
        if not completed:
            cancel.set()
        if not completed and stream is not None:
            await _close(stream, worker)
        worker.shutdown(wait=False)  # its thread ends once what was given to it (a close) is done
    history.extend((user, {"role": "assistant", "content": "".join(pieces)}))  # the whole turn in one step
    if on_sent is not None:
        on_sent(sent)


async def asafe_run_turn(
    client: _AnyClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    on_text: Callable[[str], Awaitable[Any] | None] | None = None,
    **kwargs: Any,
) -> TurnResult:
    """safe_run_turn, awaited: never raises for a failed turn; the list as it was and the same one line
    ('(error talking to the model: ...)', or '(not sent: ...)' for refused input) as a TurnResult.

    With on_text, the reply is streamed (astream_turn) and on_text(piece) is called per piece; it may be an
    async function too (e.g. a WebSocket's send_text), and is awaited.  What on_text itself raises is the
    caller's: the stream is closed and it propagates.  A cancelled task (asyncio.wait_for's timeout, a server
    shutting down) is not a failed turn: CancelledError goes on, as asyncio needs, with the list as it was.
    Example: await asafe_run_turn(client, history, "hi") -> 'Hello!' (.ok True); a server down ->
        '(error talking to the model: could not connect ...)' (.ok False), history unchanged
    """
    went_out: list[list[Message]] = []  # what the successful call sent
    on_sent = kwargs.pop("on_sent", None)  # a caller's own on_sent is told too
    callers: BaseException | None = None  # what on_text raised, if it did
    told: list[bool] = []  # the turn is in the list and the caller's on_sent raised: take it out again

    def report(sent: list[Message]) -> None:
        went_out.append(sent)
        if on_sent is not None:
            told.append(True)
            on_sent(sent)
            told.pop()

    try:
        if history.__class__ is not list:  # named as this function, not as the arun_turn it calls
            _raise_if_swapped("asafe_run_turn", client, history, user_text)
        if on_text is None:
            reply = await arun_turn(client, history, user_text, model, temperature, keep_last_n_turns,
                                    on_sent=report, **kwargs)
        else:
            pieces = astream_turn(client, history, user_text, model, temperature, keep_last_n_turns,
                                  on_sent=report, **kwargs)
            parts: list[str] = []
            try:
                async for piece in pieces:
                    parts.append(piece)
                    try:
                        shown = on_text(piece)
                        if inspect.isawaitable(shown):
                            await shown
                    except Exception as exc:
                        callers = exc
                        raise
            finally:
                await pieces.aclose()
            reply = "".join(parts)
    except (Exception, KeyboardInterrupt) as exc:
        if told:  # appended, then on_sent raised, with no await in between: the last two are this turn's
            del history[-2:]
        if exc is callers:
            raise
        return _failed_turn(exc)
    return TurnResult(reply, sent=went_out[-1] if went_out else None)


# --------------------------------------------------------------------------- #
# the call, and reading a stream


def _checked(name: str, client: Any, history: Any, user_text: Any) -> Message:
    """The checks run_turn makes, then the new user message (not yet in history).
    Example: _checked("arun_turn", client, [], "hi") -> {"role": "user", "content": "hi"}"""
    try:
        validate_history(history)
    except HistoryError:
        _raise_if_swapped(name, client, history, user_text)
        raise
    validate_user_text(user_text)
    return {"role": "user", "content": user_text}


def _to_send(history: list[Message], user: Message, keep_last_n_turns: int | None) -> list[Message]:
    """Exactly what the call sends: a new list, the (trimmed) history and the user message.
    Example: [s, u1, a1], u2, keep 0 -> [s, u2]"""
    return (list(history) if keep_last_n_turns is None else trim_history(history, keep_last_n_turns)) + [user]


async def _send(client: Any, history: list[Message], user: Message, keep_last_n_turns: int | None,
                model: str | None, temperature: float, kwargs: dict,
                worker: concurrent.futures.Executor | None, cancel: Cancel | None = None) -> tuple[Any, list[Message]]:
    """conversation._send, awaited: (response, the list that call sent), with the same one retry at half as
    many turns when a trimmed call overflows the context window."""
    sent = _to_send(history, user, keep_last_n_turns)
    if not model:  # a pending default may ask the server (a blocking request): not on the event loop
        pending = getattr(client, "default_model_pending", None)
        model = await asyncio.to_thread(_default_model, client) if pending is not None else _default_model(client)
    try:
        return await _call(client, sent, model, temperature, kwargs, worker, cancel), sent
    except Exception as exc:
        if keep_last_n_turns is None or describe_failure(exc).kind != "context_length":
            raise
        sent = _to_send(history, user, _fewer_turns(keep_last_n_turns, sent))
        return await _call(client, sent, model, temperature, kwargs, worker, cancel), sent


async def _call(client: Any, sent: list[Message], model: str, temperature: float, kwargs: dict,
                worker: concurrent.futures.Executor | None, cancel: Cancel | None = None) -> Any:
    """client.chat.completions.create, awaited; a sync client's create runs in a worker thread (worker, or
    asyncio's own), with a cancel Event (_cancel.py) that an in-process client looks at per token and while
    it reads the prompt, and that is set if this await is left early (or by the caller who gave it: a
    stream's reader).  Clearer errors as conversation._call gives them."""
    try:
        create = client.chat.completions.create
        if _is_async(create):
            return await create(messages=sent, model=model, temperature=temperature, **kwargs)
        if cancel is None:  # set if this await is left early: the embedded model stops at once
            cancel = Cancel()

        def call() -> Any:
            CANCEL.set(cancel)  # in this call's own copy of the context (below): no other call sees it
            return create(messages=sent, model=model, temperature=temperature, **kwargs)

        loop, context = asyncio.get_running_loop(), contextvars.copy_context()  # as asyncio.to_thread does
        try:
            response = await loop.run_in_executor(worker, context.run, call)
        except BaseException:  # cancelled, timed out (or the call failed, and the Event is moot)
            cancel.set()
            raise
        if inspect.isawaitable(response):  # a create that hides its being async (a plain def returning one)
            response = await response
        return response
    except Exception as exc:
        _raise_clearer(exc, client, sent)
        raise


_END = object()


def _reader(stream: Any, worker: concurrent.futures.Executor) -> Callable[[], Awaitable[Any]]:
    """A function that awaits the stream's next chunk (StopAsyncIteration at its end): an async stream's
    own __anext__, or a sync one's next() on the worker thread."""
    if hasattr(stream, "__aiter__"):
        return stream.__aiter__().__anext__
    try:
        chunks = iter(stream)
    except TypeError:
        raise BadResponseError(f"the stream is not a stream of chunks ({type(stream).__name__})") from None
    loop = asyncio.get_running_loop()

    async def next_chunk() -> Any:
        chunk = await loop.run_in_executor(worker, next, chunks, _END)
        if chunk is _END:
            raise StopAsyncIteration
        return chunk

    return next_chunk


async def _close(stream: Any, worker: concurrent.futures.Executor) -> None:
    """Close a stream left unfinished.  An async one is closed here (its connection freed); a sync one on its
    worker thread, after any next() still running there (no wait here: a stalled server must not hold up a
    cancel), so the embedded model stops at its next token and releases its lock, and openai.OpenAI's stream
    closes its connection.  Not left to the last reference: a kept task's traceback can hold the stream, and
    openai's refers to itself, so only a garbage collection, some time later, would free it."""
    if hasattr(stream, "__aiter__"):
        closer = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        if closer is not None:
            try:
                done = closer()
                if inspect.isawaitable(done):
                    await done
            except Exception:  # the turn's own error (or the cancel) is what the caller should see
                pass
        return
    closer = getattr(stream, "close", None)
    if closer is not None:
        worker.submit(closer)
