"""Save and load a conversation as JSON: the literal messages list, plus metadata.

The file is what went on the wire, so a learner can open it and read it:

    {
      "format": "nora-transcript",
      "version": 1,
      "model": "SmolLM2-135M-Instruct",
      "temperature": 0.7,
      "messages": [{"role": "system", "content": "..."}, {"role": "user", ...}, ...]
    }

A bare JSON list of messages is accepted on load too.  Saving is atomic (a temp
file in the same folder, then rename), so a crash never leaves half a file; a file
saved over keeps its permissions (a new one is 0600: private), a symlink is written
through.
Loading checks everything first and raises TranscriptError with one clear line;
it changes nothing on failure.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from .conversation import validate_history
from .errors import HistoryError, NoraError

__all__ = ["save_transcript", "load_transcript", "TranscriptError", "MAX_TRANSCRIPT_BYTES"]

FORMAT = "nora-transcript"
VERSION = 1
MAX_TRANSCRIPT_BYTES = 20 * 1024 * 1024  # 20 MB: far beyond any real chat, small enough to read safely


class TranscriptError(NoraError):
    """A transcript file could not be read or written."""


def _unusable(path: Path) -> str | None:
    """Why no file can have this name (os.stat would raise ValueError), or None.
    Example: _unusable(Path("a\\x00b.json")) -> 'a NUL character'; _unusable(Path("chat.json")) -> None"""
    if "\x00" in str(path):
        return "a NUL character"
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate, e.g. half an emoji
        return "a character the file system cannot encode"
    return None


def _not_json(history: list[dict], meta: dict, exc: Exception) -> str:
    """What JSON cannot hold, named by where it is.  Example: a date in message 3 ->
    'message 3: Object of type date is not JSON serializable'"""
    places = [(f"message {i}", m) for i, m in enumerate(history)] + list(meta.items())
    for where, value in places:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            return f"{where}: {error}"
    return str(exc)


def _read_only(path: Path) -> bool:
    """An existing file its owner made read-only (chmod a-w), or one this process may not write.
    The mode is read as well as os.access: root passes os.access everywhere."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # not there yet: a new file
    return not (mode & 0o222 and os.access(path, os.W_OK))


def save_transcript(path: str | os.PathLike, history: list[dict], **metadata: Any) -> Path:
    """Write history (and metadata such as model=, temperature=) to path atomically.
    A leading ~ is the home folder, as in a shell.

    Example: save_transcript("chat.json", history, model="SmolLM2") -> Path('chat.json')
    """
    try:
        validate_history(history)
    except HistoryError as exc:
        raise TranscriptError(f"not saved: {exc}") from None
    given = path = Path(path).expanduser()
    bad = _unusable(path)
    if bad:
        raise TranscriptError(f"not saved: the file name contains {bad}")
    if path.is_dir():  # else the rename below fails with an error that names the temp file
        raise TranscriptError(f"not saved: {path} is a folder")
    if path.is_symlink():  # write where the link points: renaming over it would replace the link
        path = Path(os.path.realpath(path))
    if _read_only(path):  # renaming a new file over it would replace it all the same: say no instead
        raise TranscriptError(f"not saved: {given} is read-only (make it writable, or save to another file)")
    # Only plain JSON values go in; never anything that could carry a secret.
    meta = {k: v for k, v in metadata.items() if k not in ("api_key", "messages") and v is not None}
    document = {"format": FORMAT, "version": VERSION, **meta, "messages": history}
    document["format"], document["version"] = FORMAT, VERSION  # the header is Nora's own: a format= or version=
    # given as metadata would make a file this Nora refuses to load
    try:
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    except (TypeError, ValueError) as exc:  # e.g. a date put in a message by hand
        raise TranscriptError(f"not saved: {_not_json(history, meta, exc)}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. half an emoji from a server): write it as \ud83d,
        text = json.dumps(document, ensure_ascii=True, indent=2) + "\n"  # which loads back exactly
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TranscriptError(f"not saved: folder {str(folder)!r} does not exist")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # a file saved over keeps its permissions
    except OSError:
        mode = None  # a new file: mkstemp's 0600, a conversation is private to its owner
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # from here on, closing f closes fd
            if mode is not None:
                try:
                    os.chmod(f.fileno(), mode)
                except OSError:  # a file system that keeps no modes (FAT, some network shares): save anyway
                    pass
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return given


def load_transcript(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """Read and check a transcript; return (messages, metadata).

    Raises TranscriptError with a one-line reason for a missing, huge, non-UTF-8,
    non-JSON or wrongly shaped file.
    Example: load_transcript("chat.json") -> ([{'role': 'system', ...}, ...], {'model': 'SmolLM2'})
    """
    path = Path(path).expanduser()  # "~/chat.json", as in a shell
    name = str(path)
    bad = _unusable(path)
    if bad:
        raise TranscriptError(f"cannot load {name}: the file name contains {bad}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise TranscriptError(f"cannot load {name}: no such file") from None
    except OSError as exc:
        raise TranscriptError(f"cannot load {name}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise TranscriptError(f"cannot load {name}: it is a folder")
    if size > MAX_TRANSCRIPT_BYTES:
        raise TranscriptError(f"cannot load {name}: {size:,} bytes is over the {MAX_TRANSCRIPT_BYTES:,}-byte limit")
    try:
        with path.open("rb") as f:  # read at most one byte past the limit: /dev/zero says its size is 0
            raw = f.read(MAX_TRANSCRIPT_BYTES + 1)
        if len(raw) > MAX_TRANSCRIPT_BYTES:
            raise TranscriptError(f"cannot load {name}: over the {MAX_TRANSCRIPT_BYTES:,}-byte limit")
        text = raw.decode("utf-8-sig")  # a byte-order mark (Notepad) is not part of the JSON
    except UnicodeDecodeError as exc:
        raise TranscriptError(f"cannot load {name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise TranscriptError(f"cannot load {name}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise TranscriptError(f"cannot load {name}: not valid JSON{where}") from None
    if isinstance(document, list):
        messages, metadata = document, {}
    elif isinstance(document, dict) and "messages" in document:
        if document.get("format", FORMAT) != FORMAT:
            raise TranscriptError(f"cannot load {name}: unknown format {document.get('format')!r}")
        version = document.get("version", VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TranscriptError(f"cannot load {name}: unknown transcript version {version!r}")
        if version > VERSION:
            raise TranscriptError(f"cannot load {name}: written by a newer Nora: transcript version {version}, "
                                  f"this one reads version {VERSION} (pip install -U nora-widgets)")
        messages = document["messages"]
        metadata = {k: v for k, v in document.items() if k not in ("messages", "format", "version")}
    else:
        raise TranscriptError(f"cannot load {name}: expected a list of messages or an object with 'messages'")
    try:
        validate_history(messages)
    except HistoryError as exc:
        raise TranscriptError(f"cannot load {name}: {exc}") from None
    # Keep only the wire fields; a copy, so the caller owns it.
    return [{"role": m["role"], "content": m["content"]} for m in messages], metadata
