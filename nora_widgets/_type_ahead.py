"""Type-ahead in `nora chat`: keys pressed while a reply streams wait for the next prompt.

A terminal echoes each key where the cursor is, so a question typed while the model was answering
landed inside the answer ('nora: one twoWhat about three'), and an Enter pressed then sent a turn
nobody had seen.  While a turn runs, ``held_keys`` turns the terminal's echo off and reads keys as
they come (not by lines); when the turn ends it takes what was typed and puts the terminal back
exactly as it was, in a ``finally`` (Ctrl-C, SIGTERM's Stopped and any exception pass through it).
``prefill`` then gives that text to readline, which shows it after the next prompt, ready to edit.

Only for a terminal on both stdin and stdout with readline; a piped session is untouched.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

__all__ = ["held_keys", "as_line", "prefill"]

_KEPT: list[str] = []  # what was typed during the last turn, until the next prompt takes it

# an escape sequence a key sends (arrows, Home, F1...): not text, dropped
_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)


def as_line(typed: str) -> str:
    """Keys typed during a reply as the text of one line, the way the terminal's line editing reads
    them: Backspace erases, Ctrl-U erases the line, an Enter (a pasted line end) is a space (a turn
    is only sent by an Enter at the prompt, where it can be seen), other keys that are not text go.
    Example: as_line("What abt\\x7f\\x7fbout\\rseven?\\x1b[A") -> 'What about seven?'
    """
    line: list[str] = []
    for char in _ESCAPE.sub("", typed):
        if char in "\x7f\x08":
            if line:
                line.pop()
        elif char == "\x15":  # Ctrl-U
            line.clear()
        elif char in "\r\n\t":
            line.append(" ")
        elif char.isprintable():
            line.append(char)
    return "".join(line).lstrip()


def _pending(fd: int) -> bytes:
    """What can be read from fd now, without waiting."""
    import select

    got = b""
    while select.select([fd], [], [], 0)[0]:
        piece = os.read(fd, 4096)
        if not piece:  # the terminal hung up
            break
        got += piece
    return got


@contextmanager
def held_keys(on: bool, fd: int = 0) -> Iterator[None]:
    """While the block runs (a turn, a command), keys typed on terminal fd are neither shown nor sent:
    echo off, read one by one.  After it, what was typed is kept for prefill(), and the terminal's
    settings are put back as they were, whatever ended the block.  on=False: nothing is changed.
    """
    if not on:
        yield
        return
    import termios

    try:
        before = termios.tcgetattr(fd)
    except (termios.error, OSError):  # not a terminal after all
        yield
        return
    quiet = [*before[:6], list(before[6])]
    quiet[3] = before[3] & ~(termios.ECHO | termios.ICANON)  # ISIG stays: Ctrl-C still stops the reply
    quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)  # TCSANOW: nothing typed so far is thrown away
        yield
        typed = _pending(fd)
        if typed:
            _KEPT.append(typed.decode("utf-8", "ignore"))
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


def prefill() -> None:
    """Give what was typed during the last turn to readline, to show after the next prompt.
    Does nothing when nothing was typed, or readline cannot be told."""
    text = as_line("".join(_KEPT))
    _KEPT.clear()
    if not text:
        return
    try:
        import readline
    except ImportError:
        return
    if not hasattr(readline, "set_pre_input_hook"):
        return

    def put() -> None:  # readline calls it once the prompt is shown, before the first key is read
        readline.insert_text(text)
        readline.redisplay()
        readline.set_pre_input_hook(None)

    readline.set_pre_input_hook(put)
