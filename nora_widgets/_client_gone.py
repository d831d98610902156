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
  every token.  The reply then ends early and is thrown away by the server.

    app = StopWhenGone(app)         # around the server's app
    stop_when_gone(llama)           # the one model the server loaded
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Awaitable, Callable

__all__ = ["StopWhenGone", "stop_when_gone"]

# the flag of the request being served in this context; None outside a request
_gone: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("nora_client_gone", default=None)


class StopWhenGone:
    """ASGI middleware: sets this request's "client gone" flag when the client disconnects."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        import anyio

        gone, body_read = threading.Event(), anyio.Event()

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

        token = _gone.set(gone)
        failure = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(listen)
                try:
                    await self.app(scope, app_receive, send)
                except Exception as exc:  # raised as it came, not wrapped in the task group's ExceptionGroup
                    failure = exc
                tasks.cancel_scope.cancel()  # the reply is sent (or refused): stop listening
        finally:
            _gone.reset(token)
        if failure is not None:
            raise failure


def stop_when_gone(llama: Any, say: Callable[[str], None] | None = None) -> None:
    """Give `llama.create_completion` one more stopping criterion: this request's client has gone.
    Example: stop_when_gone(llama); a non-streamed request whose client times out stops after
    the token being generated, and the server prints one line saying so."""
    create_completion = llama.create_completion
    say = say or (lambda text: print(text, flush=True))  # stdout, beside the access log

    def create_completion_until_gone(*args: Any, stopping_criteria: Any = None, **kwargs: Any) -> Any:
        gone = _gone.get()
        if gone is None:  # not inside a request (a test calling the model directly)
            return create_completion(*args, stopping_criteria=stopping_criteria, **kwargs)
        from llama_cpp import StoppingCriteriaList

        generated = [0]  # tokens so far; llama.cpp asks once more after the last one: say it once

        def client_gone(input_ids: Any, logits: Any) -> bool:  # checked after every token
            if not gone.is_set():
                generated[0] += 1
                return False
            if generated[0] >= 0:
                say(f"nora serve: the client left; its reply stopped after {generated[0]} tokens")
                generated[0] = -1
            return True

        criteria = StoppingCriteriaList([*(stopping_criteria or []), client_gone])
        return create_completion(*args, stopping_criteria=criteria, **kwargs)

    llama.create_completion = create_completion_until_gone
