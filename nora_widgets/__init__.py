"""Nora: see that a chat-completion API is stateless.

The model remembers nothing; your program keeps a list of {"role", "content"}
messages and resends all of it on every call.  Nora makes that list visible.

    from nora_widgets import run_turn, ScriptedClient, SYSTEM_PROMPT
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    run_turn(ScriptedClient(["Hi!"]), history, "Hello")   # history now has 3 messages

Heavy parts (the widget panel, the embedded model) load on first use.
"""

from .clients import ScriptedClient, make_client
from .conversation import SYSTEM_PROMPT, run_turn, safe_run_turn, stream_turn, trim_history
from .transcript import load_transcript, save_transcript

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_PROMPT",
    "run_turn",
    "stream_turn",
    "safe_run_turn",
    "trim_history",
    "ScriptedClient",
    "make_client",
    "LocalClient",
    "ChatPanel",
    "GuardedClient",
    "count_tokens",
    "save_transcript",
    "load_transcript",
    "load_ipython_extension",
    "unload_ipython_extension",
]

# name -> module that defines it, imported on first access (keeps `import nora_widgets` fast)
_LAZY = {
    "LocalClient": "local",
    "ChatPanel": "panel",
    "GuardedClient": "guard",
    "count_tokens": "tokens",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nora_widgets' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
