"""Tab at `nora chat`'s prompt, and readline set up for it: what a Tab offers, and the line editing.

After '/' Tab offers the slash commands; after /save or /load, file names; after /model, the names
the server lists (the session asks for them: ``ChatSession.tab``) and default.  ``use_readline``
turns on line editing, input history and Tab for ``input()`` where Python has readline.

    completions("/s", "/s")                  # -> ['/system', '/save', '/sent']
    use_readline(session.tab)                # -> True on a terminal with readline

Standard library only (``nora --help`` stays instant).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["COMMANDS", "completions", "use_readline"]

COMMANDS = ("/history", "/system", "/model", "/temperature", "/trim", "/save", "/load", "/clear", "/sent",
            "/undo", "/retry", "/edit", "/help", "/quit", "/exit")  # what Tab completes after '/', in /help's order
FILE_COMMANDS = ("/save", "/load")  # Tab after these completes file names
MODEL_COMMAND = "/model"  # Tab after it completes the model names the server lists, and default


def completions(text: str, line: str, model_names: list[str] | None = None) -> list[str]:
    """What Tab offers for the word being typed: text is that word, line the input up to the cursor
    (ending with text).  After '/' at the start: the slash commands; after /save or /load: file
    names, with ~ read as the home folder (and kept as typed), a folder ending in '/'; after /model:
    the model_names given (the server's list; None or [] when there is none) and default.
    Example: completions("/hi", "/hi") -> ['/history']; completions("/s", "/s") -> ['/system', '/save', '/sent'];
             completions("~/ch", "/save ~/ch") -> ['~/chat.json'] when the home folder holds chat.json
             completions("q", "/model q", ["llama3.2", "qwen2.5"]) -> ['qwen2.5']
    """
    before = _words_before(text, line)
    if not before:
        if text.startswith("/") and not text.startswith("//"):
            return [name for name in COMMANDS if name.startswith(text.lower())]
        return []
    if len(before) == 1 and before[0].lower() in FILE_COMMANDS:
        return _file_names(text)
    if _after_model(text, line):  # a name with a space in it cannot be set with /model: not offered
        names = [name for name in model_names or [] if name.startswith(text) and not any(c.isspace() for c in name)]
        return names + (["default"] if "default".startswith(text.lower()) and "default" not in names else [])
    return []


def _words_before(text: str, line: str) -> list[str]:
    """The words typed before the one being completed.  Example: _words_before("ch", "/save ch") -> ['/save']"""
    return line[: len(line) - len(text)].split()


def _after_model(text: str, line: str) -> bool:
    """Whether the word being completed is /model's name (so Tab wants the server's list).
    Example: _after_model("q", "/model q") -> True; _after_model("q", "tell me q") -> False"""
    return [word.lower() for word in _words_before(text, line)] == [MODEL_COMMAND]


def _file_names(text: str) -> list[str]:
    """The files and folders whose names start as text does, written as text writes them (a file
    after an opening quote gets the closing one).
    Example: _file_names("notes/ch") -> ['notes/chapters/', 'notes/chat.json']; _file_names('"my') -> ['"my chat.json"']"""
    quote = text[:1] if text[:1] in ("'", '"') else ""  # /save "my ch... : the quote stays in front
    typed = text[len(quote):]
    path = os.path.expanduser(typed)
    if typed.startswith("~") and "/" not in typed:  # ~ or ~name: the folder itself
        return [f"{quote}{typed}/"] if path != typed and os.path.isdir(path) else []
    folder, start = os.path.split(path)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:  # no such folder, not a folder, no permission: nothing to offer
        return []
    shown = typed[: len(typed) - len(start)]  # the folder as typed: '~/' stays '~/'
    return [f"{quote}{shown}{name}" + ("/" if os.path.isdir(os.path.join(folder or ".", name)) else quote)
            for name in names
            if name.startswith(start) and (start.startswith(".") or not name.startswith("."))]


def use_readline(complete_with: Callable[[str, str], list[str]] = completions) -> bool:
    """On a terminal: line editing and input history for input(), and Tab completion (complete_with:
    what Tab offers for (the word, the line up to the cursor), e.g. a ChatSession's tab), when
    Python has readline.  False when it has not (input() then reads plain lines)."""
    try:
        import readline
    except ImportError:
        return False
    matches: list[str] = []

    def complete(text: str, state: int) -> str | None:  # readline asks for match 0, 1, ... until None
        if state == 0:
            matches[:] = complete_with(text, readline.get_line_buffer()[: readline.get_endidx()])
        return matches[state] if state < len(matches) else None

    _utf8_line_editing()
    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")  # a word is up to a space: '/hi' and '~/notes/ch' whole
    if "libedit" in (readline.__doc__ or ""):  # macOS's Python: libedit's own way of binding Tab
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    return True


UTF8_LOCALES = ("C.UTF-8", "C.utf8", "en_US.UTF-8", "UTF-8")  # the first this machine has serves readline


def _utf8_line_editing() -> None:
    """Make readline edit by characters when Python reads the terminal as UTF-8 but the locale is not.

    Under LC_ALL=C Python still decodes what is typed as UTF-8 (its UTF-8 mode), while readline, which
    takes the locale's LC_CTYPE each time it reads a line, moved and erased by bytes: one Backspace over
    'é' left half of it, which reached the model as U+FFFD though the screen showed 'Café'.  Then
    LC_CTYPE is set to a UTF-8 locale (LC_ALL, which overrides it, moves to LANG); nothing else in
    nora reads the locale.  Example: LC_ALL=C -> LC_CTYPE=C.UTF-8, LANG=C
    """
    import locale

    def utf8(name: str | None) -> bool:
        return (name or "").replace("-", "").replace("_", "").lower() == "utf8"

    if not utf8(getattr(sys.stdin, "encoding", None)) or utf8(locale.nl_langinfo(locale.CODESET)):
        return
    before = locale.setlocale(locale.LC_CTYPE)
    for name in UTF8_LOCALES:
        try:
            locale.setlocale(locale.LC_CTYPE, name)
        except locale.Error:  # not on this machine
            continue
        locale.setlocale(locale.LC_CTYPE, before)
        lc_all = os.environ.pop("LC_ALL", None)
        if lc_all:
            os.environ["LANG"] = lc_all
        os.environ["LC_CTYPE"] = name
        return
