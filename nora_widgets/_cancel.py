"""A cancel for an in-process call running in another thread: what lets arun_turn stop the embedded model.

A thread cannot be stopped from outside, but the code it runs can look at a flag.  arun_turn runs a sync
client's create() in a worker thread with a threading.Event set here (a ContextVar: it follows the call
through any wrapper, e.g. a GuardedClient, and no other call sees it); when the awaiting task is cancelled
it sets the Event, and the embedded model, which looks at it before each token, stops and frees itself:

    cancel = Cancel()                   # a threading.Event (below)
    token = CANCEL.set(cancel)          # in the worker thread, around the call
    ...                                 # the engine: if cancel.is_set(): raise CallCancelled
    cancel.set()                        # on the event loop, when the awaited turn is cancelled

The Event is a Cancel: set() also writes a byte that C code can read, so the embedded model stops even in
the middle of reading a long prompt (one llama.cpp call per 512 tokens, seconds each; _abort.py).  Other
faces set one too: the panel's Stop, `nora chat`'s Ctrl-C, astream_turn left early (a stream is closed as
well, but a generator cannot be closed while another thread runs it).  A call made with no Event (a plain
sync turn) is never cancelled this way.  A client over the network cannot look at the flag; its call runs
to its timeout.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

__all__ = ["CANCEL", "Cancel", "CallCancelled"]


class Cancel(threading.Event):
    """A threading.Event that C code can read too: set() also writes a 1 into .flag, a 2-byte buffer
    that llama.cpp's abort callback looks at while it computes (_abort.py).
    Example: cancel = Cancel(); cancel.set(); cancel.flag.raw -> the bytes 1, 0 (before set(): 0, 0)"""

    def __init__(self) -> None:
        super().__init__()
        import ctypes  # here: importing this module stays free for `nora --help`

        self.flag = ctypes.create_string_buffer(2)

    def set(self) -> None:
        self.flag[0] = b"\x01"  # first: whoever wakes on the Event finds the C side set too
        super().set()

    def clear(self) -> None:
        self.flag[0] = b"\x00"
        super().clear()


# the Event of the call running in this context, or None (nobody is going to cancel it)
CANCEL: ContextVar[threading.Event | None] = ContextVar("nora_call_cancel", default=None)


class CallCancelled(Exception):
    """Raised inside an in-process call whose caller has stopped waiting for it (its reply would be dropped).
    Nobody sees it: the awaiting task was cancelled already.  Example: the engine, at the next token"""
