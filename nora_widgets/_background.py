"""One chat turn on a worker thread: the part of the chat panel that needs no widgets.

    runner = BackgroundTurn()
    runner.start(ScriptedClient(["Hi Ada!"]), history, "My name is Ada.", on_text=print)
    runner.wait()                 # -> 'Hi Ada!'; history grew by the user message and the reply

Why a thread: a reply can take many seconds.  A notebook kernel handles one event at a
time, so if Send ran the turn itself, the click on Stop would wait until the reply was
over.  The turn runs here instead, and the panel only draws what the callbacks report.

The rule that keeps the conversation whole (``history``: [{"role", "content"}, ...], system first):

- The reply streams into a *copy* of the history.  Code that reads the real list
  meanwhile (a redraw, a lesson cell) sees the conversation as it was, never half a turn.
- The user message and the reply are appended together, in one step under ``lock``,
  only if the reply is complete and Stop did not come first.  A failure or a Stop
  leaves the list exactly as it was: there is nothing to undo.
- Stop frees the caller at once, even while the server is silent: ``cancel()``
  reports the turn as finished right away; the worker notices the flag at the
  next streamed piece (or when the client times out) and drops whatever it gets.
  The flag is also the call's cancel (_cancel.py): the embedded model stops on it
  even while it reads a long prompt, and frees itself for the next turn.
  A piece being drawn at that moment is drawn before the end is reported, never
  after it (the check and the draw are one step under ``lock``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ._cancel import CANCEL, Cancel
from .conversation import DEFAULT_TEMPERATURE, TurnResult, safe_run_turn
from .errors import Failure, describe_failure

__all__ = ["BackgroundTurn"]

Callback = Callable[..., Any]


class _Stopped(KeyboardInterrupt):
    """Raised inside the stream when Stop is clicked; the core treats it like Ctrl-C (rollback)."""


class _Turn:
    """The state of one turn.  Each turn gets its own, with its own cancel flag: a stopped
    turn may still be waiting on a stalled server, and its late reply must never be taken
    for the next turn's."""

    __slots__ = ("cancel", "committed", "abandoned", "finished", "callbacks")

    def __init__(self, callbacks: dict[str, Callback | None]) -> None:
        self.cancel = Cancel()  # set by cancel(); the worker checks it on every piece, the embedded model in C too
        self.committed = False  # the user message and the reply are in the history
        self.abandoned = False  # stopped before the commit: the caller was freed at once
        self.finished = False  # the end is reported (on_finish: exactly once per turn)
        self.callbacks = callbacks


class BackgroundTurn:
    """Runs one turn at a time on a worker thread; start(), cancel(), wait().

    lock: shared with the caller (an RLock).  The commit happens under it, so code that
        reads the history under the same lock sees a turn completely or not at all.
    flush_interval: seconds between two progress reports (0: report every piece).
    Example: BackgroundTurn(flush_interval=0.1).start(client, history, "hi", on_finish=print)
    """

    def __init__(self, lock: Any = None, flush_interval: float = 0.05) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        self.flush_interval = flush_interval
        self.result: TurnResult | None = None  # the last finished turn's result
        self.worker: threading.Thread | None = None  # the thread of the latest turn
        self._turn: _Turn | None = None  # the latest turn

    @property
    def running(self) -> bool:
        """True from start() until the turn is finished (or stopped)."""
        turn = self._turn
        return turn is not None and not turn.finished

    def start(
        self,
        client: Any,
        history: list[dict],
        text: str,
        keep: int | None = None,
        model: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        extra: dict | None = None,
        twin_history: list[dict] | None = None,
        *,
        on_text: Callback | None = None,
        on_commit: Callback | None = None,
        after_commit: Callback | None = None,
        on_twin_text: Callback | None = None,
        on_twin_done: Callback | None = None,
        on_finish: Callback | None = None,
    ) -> None:
        """Start a turn on a worker thread and return at once.

        client, text, keep (keep_last_n_turns), model, temperature: as for safe_run_turn;
        extra: more create() arguments (e.g. {"max_tokens": 50}).  history grows by
        two messages when the turn is kept.  twin_history: a conversation sent without
        memory (keep 0), asked the same question once the turn is kept (side by side).
        The callbacks run on the worker thread (on_finish also from cancel()):

            on_text(so_far)          the reply so far, at most every flush_interval seconds; runs with
                                     `lock` held, never after a Stop (cancel) has reported the end
            on_commit(sent)          the turn was kept; runs with `lock` held, in the same step as
                                     the history grew: record here what must change with it
            after_commit(sent)       right after, lock released: slower work (counting, drawing)
            on_twin_text(so_far)     the twin's reply so far
            on_twin_done(result)     the twin's TurnResult; twin_history grew only if result.ok
            on_finish(result, late)  once per turn: the TurnResult; late is a Failure if a
                                     callback raised after the commit (the turn is still kept)

        sent is the list the successful call sent (after trimming, and after the
        core's retry with fewer turns if the context window overflowed).
        Example: runner.start(client, history, "hi", on_finish=lambda r, late: print(r))
        """
        callbacks = {"on_text": on_text, "on_commit": on_commit, "after_commit": after_commit,
                     "on_twin_text": on_twin_text, "on_twin_done": on_twin_done, "on_finish": on_finish}
        with self.lock:
            if self.running:
                raise RuntimeError("a turn is already running: wait() for it or cancel() it first")
            turn = self._turn = _Turn(callbacks)
            self.worker = threading.Thread(
                target=self._work, args=(turn, client, history, text, keep, model, temperature,
                                         dict(extra or {}), twin_history),
                name="nora-turn", daemon=True,
            )
            worker = self.worker
        worker.start()

    def cancel(self) -> str:
        """Stop the turn in progress (what the Stop button does).

        Returns "stopped": the turn is rolled back and on_finish has already been called
        with a "cancelled" result, even if the server is silent; "stopping": the reply
        was already kept, only the twin's call is being stopped; "": nothing to stop.
        Example: runner.cancel() -> 'stopped'; runner.wait(1).failure.kind -> 'cancelled'
        """
        with self.lock:
            turn = self._turn
            if turn is None or turn.finished or turn.cancel.is_set():
                return ""
            turn.cancel.set()
            if turn.committed:  # the reply is kept; the flag stops the side-by-side call
                return "stopping"
            # Free the caller now, even if the server has gone silent: the worker drops
            # whatever it gets later, and the history was never touched.
            turn.abandoned = turn.finished = True
            failure = describe_failure(KeyboardInterrupt())
            result = self.result = TurnResult(failure.line(), failure)
        if turn.callbacks["on_finish"] is not None:
            turn.callbacks["on_finish"](result, None)
        return "stopped"

    def wait(self, timeout: float | None = 60.0) -> TurnResult | None:
        """Block until the turn in progress is finished; return the last result (None if none ran).

        Raises TimeoutError if it is still running after timeout seconds.
        Example: runner.wait(5) -> 'Hi Ada!'
        """
        with self.lock:
            turn, worker = self._turn, self.worker
        if turn is None or worker is None:
            return self.result
        if turn.abandoned:
            # Stopped: already finished.  Give the old call a moment to wind down (it
            # closes its stream at the next piece); a stalled server is not waited for.
            worker.join(min(timeout if timeout is not None else 1.0, 1.0))
            return self.result
        worker.join(timeout)
        if worker.is_alive():
            raise TimeoutError(f"the reply is still running after {timeout} s (cancel() stops it)")
        return self.result

    # ------------------------------------------------------------------ #
    # on the worker thread

    def _streamer(self, turn: _Turn, show: Callable[[str], None]) -> Callable[[str], None]:
        """An on_text callback for safe_run_turn: stop if cancelled, collect pieces, report
        at most every flush_interval seconds (redrawing a widget per piece is slow)."""
        pieces: list[str] = []
        last = [0.0]

        def on_text(piece: str) -> None:
            if turn.cancel.is_set():
                raise _Stopped()  # safe_run_turn closes the stream and rolls back its list
            pieces.append(piece)
            now = time.monotonic()
            if now - last[0] >= self.flush_interval:
                last[0] = now
                show("".join(pieces))

        return on_text

    def _work(self, turn: _Turn, client: Any, history: list[dict], text: str, keep: int | None,
              model: str | None, temperature: float, extra: dict, twin_history: list[dict] | None) -> None:
        """One turn on a copy of the history, committed only if complete and not stopped."""
        cb = turn.callbacks
        result: TurnResult | None = None
        late: Failure | None = None
        escaped: BaseException | None = None
        CANCEL.set(turn.cancel)  # this thread's context only: the turn's calls (and its twin's) see Stop at once
        try:
            work = list(history)  # the copy the reply streams into (see the module docstring)
            before = len(work)

            def show(so_far: str) -> None:
                # Under the lock: cancel() marks the turn abandoned under it before on_finish draws the
                # end, so a piece is drawn before that end or not at all.  Checked outside it, a Stop
                # between the check and the draw cleared the reply area first, and the piece landed
                # after, a stale piece of a reply that is not in the history.
                if cb["on_text"] is None:
                    return
                with self.lock:
                    if not turn.abandoned:
                        cb["on_text"](so_far)

            result = safe_run_turn(client, work, text, model=model, temperature=temperature,
                                   keep_last_n_turns=keep, on_text=self._streamer(turn, show), **extra)
            if result.ok:
                with self.lock:
                    if turn.cancel.is_set():  # Stop came first: cancel() has finished this turn
                        return
                    history.extend(work[before:])  # the user message and the reply, together
                    turn.committed = True
                    if cb["on_commit"] is not None:
                        cb["on_commit"](result.sent)
                if cb["after_commit"] is not None:
                    cb["after_commit"](result.sent)
                if twin_history is not None:
                    self._twin(turn, client, twin_history, text, model, temperature, extra)
        except BaseException as exc:  # a client or callback that raises must not leave the caller busy forever
            failure = describe_failure(exc)
            if turn.committed:
                late = failure  # the turn itself is kept; say what went wrong after it
            else:
                result = TurnResult(failure.line(), failure)  # the history was never touched
            if not isinstance(exc, Exception):  # SystemExit (sys.exit() in the client), KeyboardInterrupt
                escaped = exc
        self._finish(turn, result, late)
        if escaped is not None:
            # The turn is over; the exception goes on, as in any thread: SystemExit ends this one
            # quietly (never the kernel), KeyboardInterrupt is printed by threading.excepthook.
            raise escaped

    def _twin(self, turn: _Turn, client: Any, twin_history: list[dict], text: str, model: str | None,
              temperature: float, extra: dict) -> None:
        """Side by side: the same question to a conversation sent without memory (keep 0)."""
        cb = turn.callbacks
        work = list(twin_history)
        before = len(work)
        show = cb["on_twin_text"] or (lambda so_far: None)
        result = safe_run_turn(client, work, text, model=model, temperature=temperature,
                               keep_last_n_turns=0, on_text=self._streamer(turn, show), **extra)
        if result.ok:
            with self.lock:
                twin_history.extend(work[before:])
        if cb["on_twin_done"] is not None:
            cb["on_twin_done"](result)

    def _finish(self, turn: _Turn, result: TurnResult | None, late: Failure | None = None) -> None:
        """Report the end of a turn, once: a stopped turn's late end is dropped."""
        with self.lock:
            if turn.finished:  # Stop already reported it: drop what came late
                return
            turn.finished = True
            self.result = result
        if turn.callbacks["on_finish"] is not None:
            turn.callbacks["on_finish"](result, late)
