"""Helpers shared by the test modules: `nora` as a real subprocess, and the chat panel clicked.

    run_nora("ask", "hi", env=nora_env(stub.base_url, KEY)) -> CompletedProcess (stdout, stderr as text)
    free_port() -> a port nothing listens on yet (a server can be started on it later)
    Popen([...], preexec_fn=sigint_as_in_a_terminal) -> a child that Ctrl-C (SIGINT) reaches
    panel_send(panel_for(client), "hi") -> the TurnResult, once the reply is in
    ManualClock() -> a clock a waiting count reads, moved on by the test (advance), not by the machine
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from nora_widgets._waiting import Clock

ROOT = Path(__file__).resolve().parent.parent  # the repository root


def nora_env(base_url: str | None = None, key: str | None = None, **extra: str) -> dict:
    """The machine's environment with no OPENAI_ / NORA_ setting leaking in (and no input history
    kept: NORA_HISTORY_FILE=), the checkout on PYTHONPATH, then the server and key given (if any) and any extra variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NORA_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["NORA_HISTORY_FILE"] = ""  # nora chat on a terminal keeps no input history in the real home
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
    if key is not None:
        env["OPENAI_API_KEY"] = key
    env.update(extra)
    return env


def run_nora(*args: str, env: dict, stdin: str | None = "", cwd: Path | str | None = None, merge: bool = False,
             timeout: float = 45) -> subprocess.CompletedProcess:
    """Run `python -m nora_widgets.cli ARGS` with stdin piped (UTF-8 both ways); merge=True puts
    stderr into stdout, in order."""
    return subprocess.run(
        [sys.executable, "-m", "nora_widgets.cli", *args],
        input=stdin, text=True, encoding="utf-8", cwd=cwd, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE,
    )


def panel_for(client, **kw):
    """A ChatPanel over client that redraws on every piece (no flush pause), so a test sees each
    piece as it arrives. Example: panel_for(client, history=earlier()).history[0]["role"] -> "system"
    """
    from nora_widgets.panel import ChatPanel  # here, not at the top: the CLI tests need no widgets

    return ChatPanel(client, flush_interval=0.0, **kw)


class ManualClock(Clock):
    """A Clock (nora_widgets._waiting) whose time moves only when the test says so.  advance() wakes
    each wait whose time has come and returns once the thread it woke is waiting again (its tick said,
    or kept back) or has left: what a tick does is seen at once, however busy the machine.
    Example: panel = ChatPanel(client, clock=clock); click Send; clock.until_waited_on(); clock.advance(2.0)
        -> the status line says 'replying… waiting 2 s: ...'"""

    GUARD = 30.0  # real seconds at most for a thread to come to or back to its wait (a hang, not a pace)

    def __init__(self) -> None:
        self._now = 0.0
        self._cond = threading.Condition()
        self._ends: dict[int, float] = {}  # thread -> when its wait ends, for the threads waiting
        self._woken: set[int] = set()  # threads advance() woke that have not come back to wait

    def now(self) -> float:
        with self._cond:
            return self._now

    def wait(self, stopped: threading.Event, seconds: float) -> bool:
        me = threading.get_ident()
        with self._cond:
            self._woken.discard(me)
            self._ends[me] = self._now + seconds
            self._cond.notify_all()
            while not stopped.is_set() and self._now < self._ends[me]:
                self._cond.wait(0.02)  # stop() sets an Event, which tells no Condition: looked at often
            del self._ends[me]
            if not stopped.is_set():
                self._woken.add(me)  # it goes to its tick, and comes back
            self._cond.notify_all()
            return stopped.is_set()

    def until_waited_on(self) -> None:
        """Until a thread waits on this clock (a Ticker's thread has started)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._ends, self.GUARD), "no thread waits on the clock"

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: not self._woken and all(end > self._now for end in self._ends.values()), self.GUARD)
            assert done, f"a tick did not come back to its wait within {self.GUARD:g} s"


def panel_send(panel, text: str, timeout: float = 15):
    """Type text into the input, click Send, wait for the reply (or the failure): what a person does.

    Example: panel_send(panel, "hi") -> 'Hello!' (a TurnResult); None if nothing was sent.
    """
    panel.prompt.value = text
    panel.send.click()
    return panel.wait(timeout)


@contextlib.contextmanager
def thread_exceptions():
    """The exception types that end a thread meanwhile, as threading.excepthook hears of them (its
    default says nothing of SystemExit).  Example: with thread_exceptions() as ended: ... -> [SystemExit]"""
    ended: list[type] = []
    before = threading.excepthook
    threading.excepthook = lambda args: ended.append(args.exc_type)
    try:
        yield ended
    finally:
        threading.excepthook = before


def sigint_as_in_a_terminal() -> None:
    """Run in the child before it starts: SIGINT's default action, so Python turns it into
    KeyboardInterrupt.  A shell's `&` starts background jobs with SIGINT ignored, and an
    ignored signal stays ignored in children: these tests could not press Ctrl-C at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (yet): point a client at it, start a server on it later.
    Example: StubServer(port=free_port())"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_async(coroutine):
    """asyncio.run(coroutine) on a thread of its own, its result or its exception handed back: a test session
    that has driven a browser (Playwright's sync API keeps an event loop running on the main thread) would
    have asyncio.run refuse there."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# a sitecustomize.py that holds the import of one module: Ctrl-C can then be pressed at a known point of the start
_HOLD_IMPORT = '''\
import os, sys, time


class _Hold:
    """Stops at the import of $NORA_TEST_HOLD (a module name) until a signal comes, once it has made $NORA_TEST_HELD."""

    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("NORA_TEST_HOLD"):
            open(os.environ["NORA_TEST_HELD"], "w").close()
            time.sleep(60)  # Ctrl-C raises KeyboardInterrupt here, inside the import statement
        return None


sys.meta_path.insert(0, _Hold())
'''


def holding_import(folder: Path, module: str, env: dict) -> tuple[dict, Path]:
    """env for a child Python that stops when it first imports `module` (a sitecustomize.py in folder,
    put first on PYTHONPATH), and the file it makes once it is there.  With press_ctrl_c_when_held:
    Ctrl-C lands during that import, however busy the machine is.
    Example: env, held = holding_import(tmp_path, "nora_widgets.clients", nora_env())"""
    (folder / "sitecustomize.py").write_text(_HOLD_IMPORT)
    held = folder / "held"
    env = dict(env, NORA_TEST_HOLD=module, NORA_TEST_HELD=str(held))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
    return env, held


def press_ctrl_c_when_held(proc: subprocess.Popen, held: Path, timeout: float = 60) -> tuple[str, str]:
    """SIGINT to proc once it has made `held` (see holding_import), then its (stdout, stderr) when it ends.
    A child that ends first, or never gets there, fails the test with what it said."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not held.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"never reached the held import (exit {proc.returncode}): {out!r} {err!r}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)


def model_file_or_skip() -> Path:
    """The embedded model's file, or the calling test module skipped (no llama-cpp-python, or no model file:
    the [local] extra not installed).  Called at a model test module's top, before it imports LocalClient."""
    import pytest

    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python ([local] extra)")
    from nora_widgets.clients import ModelUnavailableError
    from nora_widgets.local import find_model_path

    try:
        return find_model_path()
    except ModelUnavailableError as exc:  # pragma: no cover - depends on the install
        pytest.skip(f"no model file: {exc}", allow_module_level=True)
