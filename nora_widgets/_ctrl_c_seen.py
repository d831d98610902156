"""Know the moment Ctrl-C is pressed, even while Python cannot act on it yet.

Python raises KeyboardInterrupt in the main thread between two bytecodes, so a Ctrl-C pressed
during one long C call waits for that call to return.  The embedded model reads a prompt in
calls of 512 tokens, a few seconds each on a slow machine: a learner who pasted a long text and
pressed Ctrl-C saw nothing happen, under a note still saying "Ctrl-C gives up".

The C-level signal handler runs at once, though, and ``signal.set_wakeup_fd`` makes it write
the signal's number to a file descriptor.  A thread reads that pipe and calls back, so a face
can say it heard the key; KeyboardInterrupt still comes, as before, when the C call returns.

    stop = watch_ctrl_c(lambda: print("(stopping...)"))   # main thread only; else it does nothing
    ...                                                    # the long call
    stop()                                                 # no call back after this returns

Standard library only (``nora --help`` stays instant).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

__all__ = ["watch_ctrl_c"]

_STOP = 0  # no signal has the number 0: the byte stop() writes to end the watching thread


def watch_ctrl_c(on_press: Callable[[], None], after: float = 0.3) -> Callable[[], None]:
    """Call on_press (on another thread) when Ctrl-C has been pressed and stop() was not called
    within `after` seconds (a call that returns at once, as an HTTP read does, needs no word).
    Returns stop(), which ends the watching and puts back the wakeup descriptor there was.
    Example: stop = watch_ctrl_c(say_stopping); reply = read_prompt(); stop()
    """
    if threading.current_thread() is not threading.main_thread():  # set_wakeup_fd is the main thread's
        return lambda: None
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the signal handler must never block on it
    try:
        before = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_end)
        os.close(write_end)
        return lambda: None
    stopped = threading.Event()

    def watch() -> None:
        while True:
            got = os.read(read_end, 64)
            if not got or _STOP in got:
                return
            if signal.SIGINT in got and not stopped.wait(after):
                on_press()
                return

    thread = threading.Thread(target=watch, name="nora-ctrl-c", daemon=True)
    thread.start()

    def stop() -> None:  # a second call does nothing
        if stopped.is_set():
            return
        stopped.set()
        try:
            signal.set_wakeup_fd(before)
        except ValueError:  # called from another thread: the process is leaving anyway
            pass
        try:
            os.write(write_end, bytes([_STOP]))
        except OSError:  # full: the thread has plenty to read already
            pass
        thread.join()
        os.close(read_end)
        os.close(write_end)

    return stop
