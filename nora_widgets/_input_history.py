"""`nora chat`'s input history kept between sessions, as Python's own prompt keeps it.

Up at the prompt recalls the lines typed before, this session's and the earlier sessions'.  The
file holds one typed line per line, the last HISTORY_LINES of them: read when nora chat starts on
a terminal, added to when it leaves, under a lock (so two sessions leaving at once both keep their
lines: keep_lines).
Where: NORA_HISTORY_FILE; else $XDG_STATE_HOME/nora/history; else ~/.local/state/nora/history.
NORA_HISTORY_FILE= (empty) keeps none.  A line that may hold an API key is not written (holds_a_key:
one errors.redact would mask, a piece of OPENAI_API_KEY, a long run of letters and digits as keys
are, not a model's name), nor a message of several lines (a paste); the file is made readable by its owner only (0600).
Nothing here is used by a piped session.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Mapping

from .errors import looks_like_a_key

__all__ = ["HISTORY_LINES", "history_path", "load_history", "save_history", "keep_lines", "holds_a_key"]

HISTORY_LINES = 1000  # the file keeps the last this many lines


def history_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """Where the input history is kept; None: keep none (NORA_HISTORY_FILE set to nothing).
    Example: history_path({"HOME": "/home/ann"}) -> Path('/home/ann/.local/state/nora/history')
             history_path({"NORA_HISTORY_FILE": ""}) -> None
    """
    if "NORA_HISTORY_FILE" in env:
        chosen = env["NORA_HISTORY_FILE"].strip()
        return Path(chosen).expanduser() if chosen else None
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # unset, empty or relative: the spec says to ignore it
        home = env.get("HOME") or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return Path(state) / "nora" / "history"


def load_history(path: Path | None) -> int:
    """Put the file's lines into readline's history (Up recalls them); returns how many the history
    held after that, which save_history counts from.  A missing file is an empty history."""
    import readline

    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise HistoryError(f"could not read the input history {path}: {exc.strerror or exc}") from exc
        for line in lines[-HISTORY_LINES:]:
            if line.strip():
                readline.add_history(line)
    return readline.get_current_history_length()


def save_history(path: Path | None, start: int) -> None:
    """Add the lines typed since load_history (readline's history after its first `start` items)
    to the file (keep_lines), leaving out a line that looks like an API key and a paste of several."""
    import readline

    if path is None:
        return
    typed = [readline.get_history_item(i) for i in range(start + 1, readline.get_current_history_length() + 1)]
    keep_lines(path, [line for line in typed if line and "\n" not in line and not holds_a_key(line)])


_WORD = re.compile(r"[^\s\"'`,;:=()<>\[\]{}]+")  # a word, as a key pasted into a sentence or after = is one
_KEY_LIKE = re.compile(r"[A-Za-z0-9_\-]{20,}")  # 20+ letters, digits, _ and -: OpenAI's, a hex or base64 key
KEY_PIECE = 8  # this many characters of OPENAI_API_KEY, or more, are a piece of it


def holds_a_key(line: str, env: Mapping[str, str] = os.environ) -> bool:
    """Whether a typed line may hold an API key, and so is not kept in the history file: one errors.redact
    would mask (OPENAI_API_KEY's value, sk-..., a URL's password or ?key=), a word that is a piece of
    OPENAI_API_KEY (8 characters or more: a key of any shape, pasted in part), or a run of 20 or more
    letters, digits, - and _, with both letters and digits and 12 or more of them between two - or _, as
    keys are (a 40-character hex key other than the one set, a base64 one) and model names are not
    (SmolLM2-135M-Instruct, llama-3.1-8b-instruct-q4_k_m).  Losing a line from Up is cheap; a key in a file is not.
    Example: holds_a_key("/model SmolLM2-135M-Instruct") -> False; holds_a_key("key 3f2a9c0e1b7d4f6a8c2e") -> True"""
    if looks_like_a_key(line):
        return True
    key = env.get("OPENAI_API_KEY", "").strip()
    for word in _WORD.findall(line):
        if len(key) >= KEY_PIECE and len(word) >= KEY_PIECE and word in key:
            return True
        for run in _KEY_LIKE.findall(word):
            if re.search(r"\d", run) and re.search(r"[A-Za-z]", run) and max(map(len, re.split(r"[-_]", run))) >= 12:
                return True
    return False


def keep_lines(path: Path, new: list[str]) -> None:
    """Add new lines at the end of the history file and keep its last HISTORY_LINES, made 0600 in a
    folder made 0700 when they are new.  Two sessions leaving at the same moment both keep their lines:
    under an exclusive lock (HISTORY.lock beside it) the file is read as it is now, this session's
    lines go after it, and the last HISTORY_LINES are written to a temporary file put in its place
    whole.  Without fcntl (Windows) the lines are appended and the file trimmed, unlocked.
    Example: a file of 1,000 lines, two sessions adding 5 each at once -> lines 11 to 1,000 and both fives"""
    if not new:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            _append_unlocked(path, new)
            return
        lock = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the lock file is closed
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                lines = []
            _write_whole(path, (lines + new)[-HISTORY_LINES:])
        finally:
            os.close(lock)
    except OSError as exc:
        raise HistoryError(f"could not keep the input history in {path}: {exc.strerror or exc}") from exc


def _write_whole(path: Path, lines: list[str]) -> None:
    """lines to a new 0600 file beside path (a link's target: the link stays), then put in its place."""
    target = Path(os.path.realpath(path))
    fd, fresh = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".new")  # made 0600
    try:
        with open(fd, "w", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))
        os.replace(fresh, target)
    except BaseException:
        os.unlink(fresh)
        raise


def _append_unlocked(path: Path, new: list[str]) -> None:
    """Where there is no fcntl: append, then keep the last HISTORY_LINES (two sessions trimming at the
    same moment can lose one's lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in new))
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) > HISTORY_LINES:  # the last ones, written whole to a new file, then put in its place
        fresh = path.with_name(path.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        with open(fd, "w", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines[-HISTORY_LINES:]))
        os.replace(fresh, path)


class HistoryError(OSError):
    """The history file could not be read or written: said in one line, the chat goes on."""
