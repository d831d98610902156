"""Ctrl-C while the embedded model loads: llama.cpp logs through a ctypes callback into
Python during the load, and ctypes drops an exception raised inside a callback, so a
Ctrl-C that landed there was lost (the turn went on).  nora_widgets._engine holds it
during the load and raises it afterwards.  No model needed: a ctypes callback of our own."""

from __future__ import annotations

import ctypes
import signal
import threading

import pytest

from nora_widgets._engine import _ctrl_c_held

CALLBACK = ctypes.CFUNCTYPE(None)


@pytest.fixture(autouse=True)
def python_s_own_ctrl_c_handler():
    """Python's default SIGINT handler for each test, as in a terminal: a test run started in the background
    (`pytest ... &` from a script) inherits SIGINT ignored, and Python then installs no handler: 3 of these
    tests failed there, not on any bug."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _press_ctrl_c() -> None:
    signal.raise_signal(signal.SIGINT)  # what the terminal does, delivered while C code calls back


def test_ctypes_drops_a_ctrl_c_raised_inside_a_callback(monkeypatch):
    # the failure the guard exists for: nothing reaches the caller; ctypes hands the
    # exception to sys.unraisablehook ("Exception ignored on calling ctypes callback")
    dropped = []
    monkeypatch.setattr("sys.unraisablehook", lambda info: dropped.append(info.exc_type))
    CALLBACK(_press_ctrl_c)()
    assert dropped == [KeyboardInterrupt]


def test_a_ctrl_c_inside_the_held_call_is_raised_when_it_is_over():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_held():
            CALLBACK(_press_ctrl_c)()
            finished.append(True)  # the call itself runs to its end
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_no_ctrl_c_no_interrupt_and_the_handler_is_put_back():
    with _ctrl_c_held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_custom_handler_and_other_threads_are_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with _ctrl_c_held():  # someone else's handler: not replaced, so it hears the Ctrl-C itself
            signal.raise_signal(signal.SIGINT)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
    errors = []

    def in_a_thread():
        try:
            with _ctrl_c_held():  # signal.signal() would fail here: the guard does nothing
                pass
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert errors == []
