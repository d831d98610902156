"""Nora: see that a chat-completion API is stateless.

The model remembers nothing; your program keeps a list of {"role", "content"}
messages and resends all of it on every call.  Nora makes that list visible.

    from nora_widgets import run_turn, ScriptedClient, SYSTEM_PROMPT
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    run_turn(ScriptedClient(["Hi!"]), history, "Hello")   # history now has 3 messages

Every name loads on first use (`import nora_widgets` itself imports nothing).  Every refusal of bad
input is a NoraError (a ValueError) whose text is one line saying what to do; its kinds
(HistoryError, ArgumentError, ContextWindowError, TranscriptError, BadResponseError, StreamCutError, ...)
import from here too.  A failed call is the server's own exception (openai's), or BadResponseError for an
answer Nora cannot read (a web page, a body that is not JSON); describe_failure(exc).line() says any of
them in the one line safe_run_turn returns, advice included:

    from nora_widgets import NoraError, HistoryError, describe_failure
    try:
        run_turn(client, history, text)
    except HistoryError as exc:   # the list is not messages: exc says which item, and what to write
        print(exc)
    except Exception as exc:      # the server failed (or refused): history is as it was
        print(describe_failure(exc).line())   # '(error talking to the model: ... - try again in a moment)'

The package ships its type annotations (py.typed), for mypy and pyright.  ChatClient is the type of
a client (anything with .chat.completions.create): run_turn takes one.  make_client() returns a
NoraClient, a ChatClient with .default_model and .wire (the last request, as sent).

Code that awaits (a web app, top-level await in Jupyter) has the same turns awaited: arun_turn,
astream_turn and asafe_run_turn take openai.AsyncOpenAI (make_async_client() builds one from the
same settings, typed AsyncNoraClient | NoraClient: .default_model and .wire as above) or any client
above, and leave the list as it was if the task is cancelled:

    reply = await arun_turn(make_async_client(), history, "Hello")
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own flag, without importing typing: mypy and pyright take it as True

if TYPE_CHECKING:  # mypy and pyright see every name with its real type; at run time each loads on first use (_LAZY)
    from .aio import AsyncChatClient, AsyncNoraClient, arun_turn, asafe_run_turn, astream_turn
    from .clients import ModelUnavailableError, NoraClient, ScriptedClient, make_async_client, make_client
    from .conversation import (SYSTEM_PROMPT, ChatClient, TurnResult, edit_message, run_turn, safe_run_turn,
                               stream_turn, trim_history, trim_to_budget)
    from .errors import (ArgumentError, BadResponseError, ContextWindowError, EmptyMessageError, HistoryError,
                         MessageTooLongError, NoraError, RefusedError, StreamCutError, describe_failure)
    from .guard import GuardedClient
    from .local import LocalClient
    from .magics import load_ipython_extension, unload_ipython_extension
    from .panel import ChatPanel
    from .tokens import count_tokens, token_counter
    from .transcript import TranscriptError, load_transcript, save_transcript

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_PROMPT",
    "run_turn",
    "stream_turn",
    "safe_run_turn",
    "TurnResult",
    "arun_turn",
    "astream_turn",
    "asafe_run_turn",
    "trim_history",
    "trim_to_budget",
    "edit_message",
    "ChatClient",
    "AsyncChatClient",
    "NoraClient",
    "AsyncNoraClient",
    "ScriptedClient",
    "make_client",
    "make_async_client",
    "LocalClient",
    "ChatPanel",
    "GuardedClient",
    "count_tokens",
    "token_counter",
    "save_transcript",
    "load_transcript",
    "load_ipython_extension",
    "unload_ipython_extension",
    # what a caller catches: every refusal is a NoraError (a ValueError), whatever face raised it
    "NoraError",
    "EmptyMessageError",
    "HistoryError",
    "ArgumentError",
    "ContextWindowError",
    "MessageTooLongError",
    "TranscriptError",
    "ModelUnavailableError",
    "RefusedError",
    "BadResponseError",
    "StreamCutError",
    "describe_failure",  # any exception a turn raises -> its one line (.line()), kind, status and advice
]

# name -> module that defines it, imported on first access.  `import nora_widgets` imports nothing: it is
# the first step of every `nora` command too, and the console script's Ctrl-C guard (_start.py) is only in
# place once it is done; the rest (clients, conversation, ... about 0.3 s with cli.py) loads inside that guard
_LAZY = {
    **dict.fromkeys(["SYSTEM_PROMPT", "ChatClient", "TurnResult", "edit_message", "run_turn", "safe_run_turn",
                     "stream_turn", "trim_history", "trim_to_budget"], "conversation"),
    **dict.fromkeys(["ModelUnavailableError", "NoraClient", "ScriptedClient", "make_async_client", "make_client"],
                    "clients"),
    **dict.fromkeys(["ArgumentError", "BadResponseError", "ContextWindowError", "EmptyMessageError", "HistoryError",
                     "MessageTooLongError", "NoraError", "RefusedError", "StreamCutError", "describe_failure"],
                    "errors"),
    **dict.fromkeys(["TranscriptError", "load_transcript", "save_transcript"], "transcript"),
    # aio imports asyncio (30-70 ms): only code that awaits pays for it
    **dict.fromkeys(["arun_turn", "astream_turn", "asafe_run_turn", "AsyncChatClient", "AsyncNoraClient"], "aio"),
    "LocalClient": "local",
    "ChatPanel": "panel",
    "GuardedClient": "guard",
    "count_tokens": "tokens",
    "token_counter": "tokens",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
}


if not TYPE_CHECKING:  # at run time only: to mypy a module __getattr__ makes every name resolve (as Any),
    # so `from nora_widgets import run_trun` would pass unchecked; the lazy names are imported above for it
    def __getattr__(name: str) -> object:
        """The names of __all__ that load on first use (LocalClient, ChatPanel, GuardedClient, count_tokens, ...)."""
        if name in _LAZY:
            import importlib

            value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'nora_widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What is here, the names that load on first use included."""
    return sorted(set(globals()) | set(__all__))
