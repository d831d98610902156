"""The turn runner on its own, with no widgets at all: start, commit, cancel, wait.

BackgroundTurn (nora_widgets/_background.py) is the machine inside the chat panel.
Its rule: the reply streams into a copy of the history; the user message and the
reply are appended together, once, only if the reply is complete and Stop did not
come first; Stop frees the caller at once, even while the server is silent.
The stand-ins are small real classes: ScriptedClient, and GatedClient below, a
"server" that goes quiet until the test opens its gate.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from nora_widgets._background import BackgroundTurn
from nora_widgets.clients import ScriptedClient, make_chunk
from nora_widgets.conversation import new_history
from tests.helpers import thread_exceptions

pytestmark = pytest.mark.timeout(30)


class GatedClient:
    """Streams text word by word and, before word number stall_at, waits until .gate is set.

    stall_at=len(words) stalls after the whole text, before the stream's last chunk:
    the reply is then complete the moment the gate opens.  Records each call in .calls,
    sets .stalled when it starts waiting, and .closed_early if the consumer closed
    the stream before its end.
    """

    default_model = "gated"

    def __init__(self, text: str = "one two three four", stall_at: int = 2, delay: float = 0.0):
        self.words = text.split(" ")
        self.stall_at = stall_at
        self.delay = delay
        self.gate = threading.Event()
        self.stalled = threading.Event()
        self.calls: list[dict] = []
        self.closed_early = False
        completions = type("Completions", (), {"create": staticmethod(self._create)})()
        self.chat = type("Chat", (), {"completions": completions})()

    def _create(self, **kwargs):
        self.calls.append(kwargs)
        return self._stream(kwargs.get("model") or self.default_model)

    def _stream(self, model):
        finished = False
        try:
            for i, word in enumerate(self.words + [None]):
                if i == self.stall_at:
                    self.stalled.set()
                    self.gate.wait(20)  # the server says nothing until the test opens the gate
                if word is None:
                    break
                yield make_chunk("g1", 0, model, content=word if i == 0 else " " + word)
                time.sleep(self.delay)
            yield make_chunk("g1", 0, model, finish_reason="stop")
            finished = True
        finally:
            self.closed_early = not finished


class WatchedList(list):
    """A list that logs every change made to it: how many steps did a commit take?"""

    def __init__(self, *args):
        super().__init__(*args)
        self.changes: list[tuple] = []

    def append(self, item):
        self.changes.append(("append", item))
        super().append(item)

    def extend(self, items):
        items = list(items)
        self.changes.append(("extend", items))
        super().extend(items)

    def __setitem__(self, index, value):
        self.changes.append(("set", index))
        super().__setitem__(index, value)

    def __delitem__(self, index):
        self.changes.append(("del", index))
        super().__delitem__(index)


class Recorder:
    """Every callback of a turn, in order, as (name, argument)."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []

    def callbacks(self) -> dict:
        names = ["on_text", "on_commit", "after_commit", "on_twin_text", "on_twin_done"]
        found = {name: (lambda arg, n=name: self.events.append((n, arg))) for name in names}
        found["on_finish"] = lambda result, late: self.events.append(("on_finish", (result, late)))
        return found

    def named(self, name: str) -> list:
        return [arg for n, arg in self.events if n == name]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_the_module_imports_no_widgets():
    code = ("import sys, nora_widgets._background; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'traitlets', 'IPython')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # testable, and usable, with no notebook around


def test_a_kept_turn_is_committed_once_with_the_user_message_and_the_reply_together():
    client = ScriptedClient(["Hello Ada, nice to meet you."])
    history = WatchedList(new_history())
    runner, seen, lock_free = BackgroundTurn(flush_interval=0.0), Recorder(), []
    sizes_while_streaming = []
    cbs = seen.callbacks()

    def on_text(so_far):
        sizes_while_streaming.append(len(history))
        cbs["on_text"](so_far)

    def on_commit(sent):
        cbs["on_commit"](sent)
        # another thread cannot take the lock now: the commit and this callback are one step
        other = threading.Thread(target=lambda: lock_free.append(runner.lock.acquire(blocking=False)))
        other.start()
        other.join()

    runner.start(client, history, "My name is Ada.", **{**cbs, "on_text": on_text, "on_commit": on_commit})
    result = runner.wait(10)
    assert result == "Hello Ada, nice to meet you." and result.ok and runner.result is result
    assert history.changes == [("extend", [user("My name is Ada."), assistant("Hello Ada, nice to meet you.")])]
    assert sizes_while_streaming and set(sizes_while_streaming) == {1}  # untouched while the reply streamed
    assert seen.named("on_commit") == [history[:2]] == [client.calls[0]["messages"]]  # what really went out
    assert lock_free == [False]
    assert [n for n, _ in seen.events if n != "on_text"] == ["on_commit", "after_commit", "on_finish"]
    assert seen.named("on_finish") == [(result, None)] and not runner.running
    assert client.calls[0]["stream"] is True


def test_a_failed_turn_leaves_the_history_untouched():
    client = ScriptedClient([TimeoutError("read timed out")])
    history = WatchedList(new_history())
    before = list(history)
    runner, seen = BackgroundTurn(), Recorder()
    runner.start(client, history, "hello", **seen.callbacks())
    result = runner.wait(10)
    assert not result.ok and result.failure.kind == "timeout"
    assert history == before and history.changes == []  # the failure happened to the copy
    assert seen.named("on_commit") == [] and seen.named("on_finish") == [(result, None)]


def test_cancel_mid_stream_rolls_back_and_frees_at_once_while_the_client_is_stalled():
    client = GatedClient("one two three four", stall_at=2)
    history = new_history()
    before = list(history)
    runner, seen = BackgroundTurn(flush_interval=0.0), Recorder()
    try:
        runner.start(client, history, "Tell me everything", **seen.callbacks())
        assert client.stalled.wait(10)  # two pieces are in, then the server goes quiet
        assert seen.named("on_text")[-1] == "one two"
        t0 = time.monotonic()
        assert runner.cancel() == "stopped"
        # at once, with the worker still stuck in the stalled call: finished, rolled back
        assert not runner.running and runner.worker.is_alive()
        (result, late), = seen.named("on_finish")
        assert result.failure.kind == "cancelled" and late is None
        assert runner.wait(10) is result and history == before
        assert time.monotonic() - t0 < 2.5  # wait() gives the stalled call a moment only, not 10 s
        assert runner.cancel() == ""  # nothing left to stop
    finally:
        client.gate.set()
    runner.worker.join(10)
    assert not runner.worker.is_alive() and client.closed_early  # the next piece saw the flag
    assert history == before and seen.named("on_commit") == [] and len(seen.named("on_finish")) == 1


def test_a_piece_reported_at_the_moment_of_cancel_is_reported_before_the_end_never_after():
    # The worker checked that the turn was not stopped, then reported its piece: a cancel() in between
    # reported the end first (the panel emptied its reply area), and the piece came after it.  Here the
    # report of the first piece waits until cancel() has returned, or 1 s.
    client = GatedClient("one two three four", stall_at=2)
    runner, seen = BackgroundTurn(flush_interval=0.0), Recorder()
    reporting, cancelled = threading.Event(), threading.Event()
    callbacks = seen.callbacks()
    record_text = callbacks["on_text"]

    def on_text(so_far):
        if not reporting.is_set():
            reporting.set()
            cancelled.wait(1.0)  # a cancel() that waits for this report is waited for 1 s only
        record_text(so_far)

    callbacks["on_text"] = on_text
    try:
        runner.start(client, new_history(), "Tell me everything", **callbacks)
        assert reporting.wait(10)
        stopper = threading.Thread(target=lambda: (runner.cancel(), cancelled.set()))
        stopper.start()
        stopper.join(10)
    finally:
        client.gate.set()
    runner.worker.join(10)
    assert not runner.worker.is_alive() and client.closed_early
    names = [name for name, _ in seen.events]
    assert names[-1] == "on_finish" and names.count("on_finish") == 1, names  # no piece after the end


def test_a_late_reply_after_cancel_is_dropped_even_after_the_next_turn():
    stalled = GatedClient("the old answer", stall_at=3)  # stalls after the whole reply, before the end
    history = WatchedList(new_history())
    runner, seen = BackgroundTurn(flush_interval=0.0), Recorder()
    try:
        runner.start(stalled, history, "first question", **seen.callbacks())
        assert stalled.stalled.wait(10)
        assert runner.cancel() == "stopped"
        old_worker = runner.worker
        # the panel is free: the next turn runs while the stopped one still waits on its server
        runner.start(ScriptedClient(["the new answer"]), history, "second question", **seen.callbacks())
        assert runner.wait(10) == "the new answer"
    finally:
        stalled.gate.set()
    old_worker.join(10)
    assert not old_worker.is_alive() and not stalled.closed_early  # the old reply did arrive, complete
    # ... and was dropped: the history holds the second turn only, committed once
    assert history.changes == [("extend", [user("second question"), assistant("the new answer")])]
    (stopped, _), (answered, _) = seen.named("on_finish")  # once per turn: the late end was not reported
    assert stopped.failure.kind == "cancelled" and answered == "the new answer"
    assert runner.result == "the new answer"  # the late reply did not overwrite the latest result


@pytest.mark.parametrize("flush_interval, expected", [(0.0, 40), (10.0, 1)])
def test_progress_reports_follow_flush_interval(flush_interval, expected):
    words = [f"w{i}" for i in range(40)]
    client = ScriptedClient([" ".join(words)])  # 40 pieces, as fast as they come
    runner, seen = BackgroundTurn(flush_interval=flush_interval), Recorder()
    runner.start(client, new_history(), "go", **seen.callbacks())
    assert runner.wait(10).ok
    reports = seen.named("on_text")
    assert len(reports) == expected  # 0: every piece; 10 s: only the first (the rest come within 10 s)
    assert reports[0] == "w0" and all(" ".join(words).startswith(r) for r in reports)


def test_progress_reports_are_throttled_on_a_slow_stream():
    client = GatedClient(" ".join(f"w{i}" for i in range(30)), stall_at=-1, delay=0.01)  # ~0.3 s of pieces
    runner, seen = BackgroundTurn(flush_interval=0.05), Recorder()
    runner.start(client, new_history(), "go", **seen.callbacks())
    assert runner.wait(10).ok
    reports = seen.named("on_text")
    assert 2 <= len(reports) < 30  # far fewer reports than pieces, but more than one
    assert all(len(a) < len(b) for a, b in zip(reports, reports[1:]))  # each one shows more text


def test_the_twin_without_memory_gets_its_turn_after_the_commit():
    client = ScriptedClient()  # echoes how many messages it was sent
    history, twin = new_history(), new_history()
    runner, seen = BackgroundTurn(flush_interval=0.0), Recorder()
    twin_size_at_commit = []
    cbs = seen.callbacks()
    on_commit = cbs["on_commit"]
    cbs["on_commit"] = lambda sent: (twin_size_at_commit.append(len(twin)), on_commit(sent))
    for question in ["My name is Ada.", "What's my name?"]:
        runner.start(client, history, question, twin_history=twin, **cbs)
        assert runner.wait(10).ok
    # each question: one call with memory, then one without (persona + the question only)
    assert [len(c["messages"]) for c in client.calls] == [2, 2, 4, 2]
    assert twin_size_at_commit == [1, 3]  # the twin's turn comes after the main commit
    assert [m["content"] for m in twin if m["role"] == "user"] == ["My name is Ada.", "What's my name?"]
    assert len(twin) == len(history) == 5
    names = [n for n, _ in seen.events]
    assert names.index("on_commit") < names.index("on_twin_text") < names.index("on_twin_done") \
        < names.index("on_finish")
    assert all(r.ok for r in seen.named("on_twin_done"))


def test_a_failing_twin_changes_neither_history():
    client = ScriptedClient(["kept", TimeoutError("read timed out")])
    history, twin = new_history(), new_history()
    runner, seen = BackgroundTurn(), Recorder()
    runner.start(client, history, "hi", twin_history=twin, **seen.callbacks())
    assert runner.wait(10) == "kept" and len(history) == 3
    (twin_result,) = seen.named("on_twin_done")
    assert twin_result.failure.kind == "timeout" and twin == new_history()


def test_a_callback_failing_after_the_commit_keeps_the_turn_and_says_so():
    client = ScriptedClient(["kept anyway"])
    history = new_history()
    runner, seen = BackgroundTurn(), Recorder()

    def broken(_sent):
        raise ValueError("the chart broke")

    runner.start(client, history, "hi", **{**seen.callbacks(), "after_commit": broken})
    result = runner.wait(10)
    assert result == "kept anyway" and history[-1] == assistant("kept anyway")
    ((finished, late),) = seen.named("on_finish")
    assert finished is result and "the chart broke" in late.message


def test_a_callback_failing_before_the_commit_fails_the_turn_and_keeps_nothing():
    client = ScriptedClient(["never kept"])
    history = new_history()
    runner, seen = BackgroundTurn(), Recorder()

    def broken(_so_far):
        raise ValueError("the drawing broke")

    runner.start(client, history, "hi", **{**seen.callbacks(), "on_text": broken})
    result = runner.wait(10)
    assert not result.ok and "the drawing broke" in result and history == new_history()


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_a_keyboard_interrupt_or_sys_exit_after_the_commit_ends_the_turn_and_then_goes_on(raised):
    """Neither is an Exception: it went past the worker's except, on_finish never came, and the
    runner stayed running for good (the panel busy, Send disabled)."""
    client = ScriptedClient(["kept"])
    history = new_history()
    runner, seen = BackgroundTurn(), Recorder()

    def broken(_sent):
        raise raised()

    with thread_exceptions() as ended:
        runner.start(client, history, "hi", **{**seen.callbacks(), "after_commit": broken})
        result = runner.wait(10)
    assert not runner.running and result == "kept" and history[-1] == assistant("kept")
    ((finished, late),) = seen.named("on_finish")
    assert finished is result and late is not None
    assert ended == [raised]  # then it went on, and ended the worker thread (only that thread)


def test_sys_exit_in_the_client_fails_the_turn_and_keeps_nothing():
    class Exits(ScriptedClient):
        def _create(self, **kwargs):
            sys.exit(3)

    history = new_history()
    runner, seen = BackgroundTurn(), Recorder()
    with thread_exceptions() as ended:
        runner.start(Exits(), history, "hi", **seen.callbacks())
        result = runner.wait(10)
    assert not runner.running and not result.ok and result.failure.kind == "exit"
    assert history == new_history() and seen.named("on_finish") == [(result, None)] and ended == [SystemExit]


def test_one_turn_at_a_time():
    client = GatedClient(stall_at=1)
    runner = BackgroundTurn()
    try:
        runner.start(client, new_history(), "first")
        assert client.stalled.wait(10)
        with pytest.raises(RuntimeError, match="already running"):
            runner.start(client, new_history(), "second")
        with pytest.raises(TimeoutError, match="still running"):
            runner.wait(0.2)
    finally:
        client.gate.set()
    assert runner.wait(10) == "one two three four"
    assert BackgroundTurn().wait(1) is None  # no turn ran
