"""Text from outside (a reply, a server's error message or model names, a loaded transcript) as a
terminal may safely show it: the one helper every face that prints to a terminal goes through.

A reply is text, not terminal commands.  Printed raw, a broken or hostile server could clear the
screen (``ESC [2J``), set the window title (``ESC ] 0;...BEL``), write the clipboard
(``ESC ] 52;c;...``), or overwrite a line with ``\\r`` and backspaces.  So every control character
but newline and tab is shown instead of obeyed, as ``cat -v`` shows it (``^[``), and the
characters that reorder what is shown (bidi overrides: "Trojan Source") as ``<U+202E>``.
Letters of every script, emoji (with their joiners and variation selectors) and right-to-left
text pass as they are.  What is stored (the history, transcripts) keeps the exact text.
``_write`` is the terminal client's way to put such text on stdout or stderr (``OutputError``
when the stream cannot take it: a full disk under ``nora ask ... > answer.txt``).

No imports beyond the standard library: ``nora --help`` stays instant.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["printable", "clip", "unquote", "SHOW_AS_CODE", "OutputError"]

# Characters that are not terminal commands but still mislead: bidi overrides and isolates reorder
# what is shown ("Trojan Source"), and lone surrogates cannot be written as UTF-8 at all.
SHOW_AS_CODE = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)])


def printable(text: str) -> str:
    """Show control characters (escape sequences included) instead of obeying them.

    Each character is looked at on its own, so a sequence split across streamed pieces is shown
    the same as a whole one.
    Example: printable("red \\x1b[31m!") -> 'red ^[[31m!'; printable("a\\u202eb") -> 'a<U+202E>b'
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code in SHOW_AS_CODE:
            out.append(f"<U+{code:04X}>")
        elif ch in "\n\t" or ch.isprintable() or code > 0x9F:
            out.append(ch)
        elif code < 0x20:
            out.append("^" + chr(code + 64))  # caret notation, as `cat -v` shows it
        else:
            out.append(f"\\x{code:02x}")  # DEL and the C1 controls (0x9b is a one-byte ESC [)
    return "".join(out)


def clip(text: str, width: int = 60) -> str:
    """A message on one line of at most width characters: its whitespace runs made one space, cut with an
    ellipsis.  Example: clip("Yes,\n two novels by Le Guin.", 12) -> 'Yes, two no\u2026'"""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


class OutputError(OSError):
    """stdout or stderr could not be written (a full disk under `nora ask ... > answer.txt`), except
    for a reader that left (BrokenPipeError, which stays itself): cli.main says so in one line."""

    def __init__(self, stream: TextIO, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.stream = stream


def unquote(arg: str) -> str:
    """A word as a shell would read it: one pair of surrounding quotes is not part of it (nora chat's
    /system, /model, /save, /load and /edit, and %chat edit, all read it so).

    Example: unquote('"my chat.json"') -> 'my chat.json'; unquote('notes.json') -> 'notes.json'
    """
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1].strip()
    return arg


def _write(stream: TextIO, text: str) -> None:
    """Text on stdout or stderr as a terminal may show it (printable, above), flushed.
    Raises OutputError when the stream cannot take it (BrokenPipeError as it is)."""
    try:
        stream.write(printable(text))
        stream.flush()
    except (BrokenPipeError, OutputError):
        raise
    except OSError as exc:
        raise OutputError(stream, exc) from exc
