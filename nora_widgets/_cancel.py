"""A cancel for an in-process call running in another thread: what lets arun_turn stop the embedded model.

A thread cannot be stopped from outside, but the code it runs can look at a flag.  arun_turn runs a sync
client's create() in a worker thread with a threading.Event set here (a ContextVar: it follows the call
through any wrapper, e.g. a GuardedClient, and no other call sees it); when the awaiting task is cancelled
it sets the Event, and the embedded model, which looks at it before each token, stops and frees itself:

    cancel = threading.Event()
    token = CANCEL.set(cancel)          # in the worker thread, around the call
    ...                                 # the engine: if cancel.is_set(): raise CallCancelled
    cancel.set()                        # on the event loop, when the awaited turn is cancelled

A call made with no Event (every sync turn, a stream) is never cancelled this way: a stream is stopped by
closing it instead.  A client over the network cannot look at the flag; its call runs to its timeout.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

__all__ = ["CANCEL", "CallCancelled"]

# the Event of the call running in this context, or None (nobody is going to cancel it)
CANCEL: ContextVar[threading.Event | None] = ContextVar("nora_call_cancel", default=None)


class CallCancelled(Exception):
    """Raised inside an in-process call whose caller has stopped waiting for it (its reply would be dropped).
    Nobody sees it: the awaiting task was cancelled already.  Example: the engine, at the next token"""
