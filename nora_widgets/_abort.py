"""Stop llama.cpp in the middle of reading a prompt: its abort callback, with no Python in it.

The model reads a prompt in one C call per 512 tokens (llama_decode), seconds each on a slow
machine, and Python cannot stop a C call from outside.  llama.cpp can stop itself, though: it
calls an "abort callback" before each step of its computation (each node of the graph, a few
hundred per call) and gives up the call when it returns true (llama_decode then returns 2 and
llama-cpp-python raises RuntimeError("llama_decode returned 2")).  What was read in the calls
before stays in the KV cache, and llama.cpp drops the half-read batch, so llama.n_tokens (which
llama-cpp-python raises only after a batch is read) still says exactly what the cache holds.

The callback here is the C library's strlen, over a 2-byte buffer that Cancel.set() writes a 1
into (_cancel.py): b"\\0\\0" -> 0 (go on), b"\\1\\0" -> 1 (stop).  Why no Python function:

- a Python callback, called a few hundred times per token, would slow generation by a few percent,
  and take the GIL each time (a busy thread elsewhere would slow the prompt read too);
- Ctrl-C in the main thread runs Python's signal handler inside whatever Python code runs next:
  inside a ctypes callback, the KeyboardInterrupt is printed as "Exception ignored" and lost.
  With strlen no Python runs inside llama_decode, so Ctrl-C is raised when the call returns, as before.

Why strlen is sound as a `bool (*)(void *)`: on x86-64 (System V and Windows) and arm64 (AAPCS64)
a pointer argument goes in the same register for both signatures (rdi / rcx / x0), and the result
comes back in rax / x0, of which a bool caller reads the low byte (al / w0's low 8 bits): strlen's
0 or 1 is then false or true, with the upper bits zero anyway.  The buffer always ends in a 0 byte,
so strlen never reads past it (it may load the aligned word around it, which libc's strlen does on
every string and is safe by its design).  The flag's byte is written by one thread and read by
another: a single byte cannot be torn, and a read that comes just before the write sees the 1 at
the next node, a few microseconds later.

    with abort_on(llama, cancel):      # cancel: a Cancel (or None: nothing to watch)
        llama.eval(tokens)             # RuntimeError within a node or two of cancel.set()

llama.cpp says that it gave up on stderr, in two lines, even with verbose=False ("decode: removing
memory module entries for seq_id = 0, pos = [512, +inf)", "llama_decode: failed to decode, ret = 2"):
a stop the user asked for is no error to show them.  _quiet_aborts() drops that pair, and only it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from typing import Any, Iterator

__all__ = ["abort_on", "aborted", "gave_up"]

_REMOVING = b"decode: removing memory module entries"  # logged by a decode that failed, whatever the cause
_installing = threading.Lock()
_ABORTED = b"llama_decode: failed to decode, ret = 2"  # next: 2 is "aborted" (other failures give other codes)


@functools.lru_cache(maxsize=None)
def _strlen_callback() -> Any:
    """libc's strlen as a llama.cpp abort callback, or None where it cannot be found (the prompt is
    then stopped between tokens only, as before)."""
    import llama_cpp

    try:
        libc = ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    if not address:
        return None
    _quiet_aborts()
    return llama_cpp.ggml_abort_callback(address)


def _quiet_aborts() -> None:
    """Put a filter in front of llama-cpp-python's log callback: an aborted decode's two lines are dropped,
    every other line goes on to it as before.  The "removing" line is held until the next one, which a
    failed decode always logs at once: ret = 2 drops both, anything else lets both through."""
    import llama_cpp
    from llama_cpp import _logger

    with _installing:  # once, even if two threads start their first calls together
        if getattr(_quiet_aborts, "callback", None) is None:
            _quiet_aborts.callback = _filter(_logger.llama_log_callback)  # type: ignore[attr-defined]
            llama_cpp.llama_log_set(_quiet_aborts.callback, ctypes.c_void_p(0))  # type: ignore[attr-defined]


def _filter(forward: Any) -> Any:
    """The filtering callback of _quiet_aborts, passing on to forward (kept alive by the caller: C holds
    only its address)."""
    import llama_cpp

    held = threading.local()  # per thread: two models may decode at once

    @llama_cpp.llama_log_callback
    def filtered(level: int, text: bytes, user_data: Any) -> None:
        waiting = getattr(held, "line", None)
        if waiting is not None:
            held.line = None
            if (text or b"").startswith(_ABORTED):
                return
            forward(*waiting)
        if (text or b"").startswith(_REMOVING):
            held.line = (level, text, user_data)
            return
        forward(level, text, user_data)

    return filtered


@contextlib.contextmanager
def abort_on(llama: Any, cancel: Any) -> Iterator[None]:
    """While inside: llama.cpp gives up the computation in progress (a prompt read, a token) once
    cancel is set.  cancel: a Cancel (whose .flag is its C-readable byte), or None.  The callback is
    taken off again on the way out, so no later call looks at a flag that may be freed.
    Example: with abort_on(llama, cancel): llama.eval(tokens)"""
    flag: Any = getattr(cancel, "flag", None)
    callback = _strlen_callback() if flag is not None else None
    if callback is None:
        yield
        return
    import llama_cpp

    ctx = llama._ctx.ctx
    llama_cpp.llama_set_abort_callback(ctx, callback, ctypes.addressof(flag))
    try:
        yield
    finally:
        llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)  # NULL: none


def gave_up(exc: BaseException) -> bool:
    """Is exc llama-cpp-python's word that llama.cpp gave up a decode through its abort callback?  The
    batch is then dropped whole (n_tokens still says what the cache holds); other failures say other codes.
    Example: gave_up(RuntimeError("llama_decode returned 2")) -> True; gave_up(RuntimeError("...returned 1")) -> False"""
    return isinstance(exc, RuntimeError) and str(exc) == "llama_decode returned 2"


def aborted(exc: BaseException, cancel: Any) -> bool:
    """Is exc llama-cpp-python's word that llama.cpp gave up because cancel was set?
    Example: aborted(RuntimeError("llama_decode returned 2"), cancel) -> True once cancel.set()"""
    return gave_up(exc) and cancel is not None and cancel.is_set()
