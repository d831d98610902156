"""What a face says while no word of the reply has come yet: the seconds waited, and why it may take long.

A server shared by a class (``nora serve``) writes one reply at a time: a learner whose request
is tenth in the queue waits for nine replies before the first word of theirs.  `nora chat` showed
nothing meanwhile (a blank line after "you: ...") and the panel a "replying…" that never changed,
so the wait looked like a frozen screen.  `nora chat` (on a terminal) and the panel now count the
seconds, from WAIT_NOTE_AFTER on, until the first words come:

    ticker = Ticker(lambda seconds: print(waiting_words(client, seconds, "Ctrl-C")))
    ticker.start()          # calls back once a second from WAIT_NOTE_AFTER on
    ...                     # the call; the first piece of the reply arrives
    ticker.stop()           # no call back after this returns
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

__all__ = ["WAIT_NOTE_AFTER", "Clock", "Ticker", "waiting_words"]

WAIT_NOTE_AFTER = 2.0  # seconds without a word of the reply before a face says it is waiting


def waiting_words(client: Any, seconds: float, give_up: str) -> str:
    """The note on a wait.  A client talking to a server (one with a base_url) may be queued behind
    others; the in-process model reads the conversation first.
    Short enough for one line of an 80-column terminal, in brackets.
    Example: waiting_words(openai_client, 7.2, "Ctrl-C")
        -> 'waiting 7 s: the server may be busy with others' replies. Ctrl-C gives up'"""
    why = ": the server may be busy with others' replies" if getattr(client, "base_url", None) else ""
    return f"waiting {seconds:.0f} s{why}. {give_up} gives up"


class Clock:
    """The time a Ticker counts in: now() and a wait that a stop() cuts short.  The one seam for
    a test that moves time on itself (a subclass), so a note held for 2 s is not raced on a busy machine.
    Example: Clock().wait(stopped, 1.0) -> True if stopped was set within the second, else False"""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, stopped: threading.Event, seconds: float) -> bool:
        return stopped.wait(seconds)


class Ticker:
    """Calls say(seconds waited) once a second on a thread of its own, from `after` seconds on,
    until stop().  stop() waits for a call in progress, so nothing is said once it returns."""

    def __init__(self, say: Callable[[float], None], after: float = WAIT_NOTE_AFTER, every: float = 1.0,
                 clock: Clock | None = None) -> None:
        self.say, self.after, self.every = say, after, every
        self.clock = clock or Clock()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.said = False  # a note was given and stop() has not said so yet

    def start(self) -> "Ticker":
        clock = self.clock
        started = clock.now()

        def run() -> None:
            wait = self.after
            while not clock.wait(self._stopped, wait):
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self.say(clock.now() - started)
                    self.said = True
                wait = self.every

        self._thread = threading.Thread(target=run, name="nora-waiting", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """No more notes; True if one was given (once: a second stop() says False), so the caller
        knows to take it back."""
        self._stopped.set()
        with self._lock:  # a note being written finishes first
            said, self.said = self.said, False
            return said
