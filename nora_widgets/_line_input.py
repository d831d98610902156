"""How `nora chat` reads what you type: one line at the prompt, or a block between two \"\"\" lines.

Reading a line is more than ``input()``.  Piped input is echoed as ``you: ...`` so a piped
session's stdout reads like the screen; with ``nora chat > log.txt`` the prompt and the line
being edited go to the terminal (stderr's, else /dev/tty) so readline still edits it, while the
file gets the finished line; Ctrl-C and Ctrl-D at a prompt leave the cursor on a fresh line; what
was typed while a reply streamed is put after the prompt (``_type_ahead.py``); and a paste that
holds a whole \"\"\" block, closing line and all, is read line by line, its remainder kept for later.
``chat_loop`` (``_chat_session.py``) decides what a line means; this module only gets it.

    pending: list[str] = []
    line = _next_line(interactive=False, pending=pending)   # stdin 'Hi' -> 'Hi' (stdout: 'you: Hi')
    if line == BLOCK:
        text = _read_block(False, pending)                   # 'a', 'b', '\"\"\"' -> 'a\\nb'

Standard library only (``nora --help`` stays instant).
"""

from __future__ import annotations

import os
import sys

from ._terminal_text import _write
from ._type_ahead import prefill

__all__ = ["BLOCK", "Stopped"]

BLOCK = '"""'  # a line of its own starts and ends a message of several lines


class Stopped(BaseException):
    """SIGTERM while nora chat runs (cli.cmd_chat raises it from the signal): not a failed call (so not
    an Exception) and not Ctrl-C, which keeps the session.  Raised inside input(), it lets readline put
    the terminal back as it found it; the default action of SIGTERM would leave it without echo."""


def _read_line(interactive: bool, prompt: str = "you: ") -> str | None:
    """The next line of input, or None at end of input (Ctrl-D)."""
    if interactive:
        terminal = _prompt_terminal()
        prefill()  # what was typed while the last reply streamed, after the prompt (_type_ahead.py)
        try:
            line = input(prompt) if terminal is None else _typed_beside(terminal, prompt)
        except EOFError:
            _end_line(terminal)
            return None
        except Stopped:
            _end_line(terminal)  # the line after the prompt: the shell's prompt does not start beside 'you: '
            raise
        if terminal is not None:
            _echo(line, prompt)  # stdout is a file or a pipe: it gets the line, as a piped session's does
        return line
    line = sys.stdin.readline()
    if not line:
        return None
    line = line.rstrip("\r\n")
    _echo(line, prompt)
    return line


def _echo(line: str, prompt: str) -> None:
    """What was read, on stdout as the screen shows it, so a piped session (or `nora chat > log.txt`)
    reads like the screen would.  A blank line is ignored at the prompt, part of a \"\"\" block."""
    if line.strip() or prompt != "you: ":
        _write(sys.stdout, f"{prompt}{line}\n")


_TTY: list[int] = []  # /dev/tty, opened once, when stdout and stderr both go elsewhere


def _prompt_terminal() -> int | None:
    """The terminal to show the prompt and the line being edited on, when stdin is a terminal and stdout
    is not (`nora chat > log.txt`, `nora chat | tee log.txt`): stderr's, else /dev/tty.  None when
    stdout is the terminal (input() does it all), or there is no terminal to write to."""
    try:
        if sys.stdout.fileno() != 1 or sys.stdin.fileno() != 0 or os.isatty(1):
            return None
    except (AttributeError, ValueError, OSError):  # not a real stream (a test's), or closed
        return None
    if os.isatty(2):
        return 2
    if not _TTY:
        try:
            _TTY.append(os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY))
        except OSError:
            return None
    return _TTY[0]


def _typed_beside(terminal: int, prompt: str) -> str:
    """input(prompt) with readline's editing and history on the terminal, while stdout is a file or a pipe.

    input() uses readline only when stdout is a terminal too: with `nora chat > log.txt` it wrote the
    prompt into the file, showed none, and read the keys raw, so Up sent '\\x1b[A' to the model as a
    message.  So stdout is the terminal for as long as the line is typed, and put back after.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(terminal, 1)
        return input(prompt)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _after_ctrl_c(interactive: bool) -> None:
    """Ctrl-C at a prompt: the next line starts below it, on the terminal that shows the prompt (not in
    a file that stderr may be: `nora chat 2> err.txt` showed 'you: you: ')."""
    if interactive:
        _end_line(_prompt_terminal())


def _end_line(terminal: int | None) -> None:
    """A newline after the prompt left by Ctrl-D or SIGTERM, on the terminal that shows it."""
    if terminal is None:
        print()
    else:
        os.write(terminal, b"\n")


def _next_line(interactive: bool, pending: list[str], prompt: str = "you: ") -> str | None:
    """What was left over from a paste first, else the next line of input (None: the input ended)."""
    return pending.pop(0) if pending else _read_line(interactive, prompt)


def _read_block(interactive: bool, pending: list[str]) -> str | None:
    """The lines after a line of three double quotes, up to the next line that is three double quotes
    from its first column, or to Ctrl-D on a terminal, as one message (None: piped input ended first).  Example: lines 'Fix this:', '  x = 1 +', BLOCK -> 'Fix this:\n  x = 1 +'

    A paste on a terminal comes as one piece with its newlines in it (bracketed paste): its lines
    are looked at one by one, so a pasted closing line ends the block too; what the paste held
    after it is put back in pending, for the loop to read as the next input.
    """
    lines: list[str] = []
    while True:
        piece = _next_line(interactive, pending, prompt="...: ")
        if piece is None:  # Ctrl-D on a terminal ends the block, as it ends `nora ask -`'s question
            return "\n".join(lines) if interactive else None
        parts = piece.split("\n")
        if len(parts) > 1 and not parts[-1]:  # a paste that ends with a newline: that ends its last line
            parts.pop()
        for i, line in enumerate(parts):
            if line.rstrip() == BLOCK:  # at the start of the line: an indented one (a docstring) is text
                rest = "\n".join(parts[i + 1:])
                if rest.strip():
                    pending.insert(0, rest)
                return "\n".join(lines)
            lines.append(line)


def _type_ahead_on() -> bool:
    """Whether keys typed during a turn can wait for the next prompt: stdin and stdout are the
    terminal (not `nora chat > log.txt`) and readline, which shows them there, is in use and can be
    given text before the first key (a readline built without that hook: keys echo as before, not lost)."""
    try:
        return (sys.stdin.fileno() == 0 and os.isatty(0) and os.isatty(sys.stdout.fileno())
                and hasattr(sys.modules.get("readline"), "set_pre_input_hook"))
    except (AttributeError, ValueError, OSError):  # not a real stream (a test's), or closed
        return False
