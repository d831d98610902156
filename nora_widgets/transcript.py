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

A name ending in .md or .markdown is saved as a Markdown document instead, for reading and
handing out (markdown_text): the same list, numbered from 0 as the panel's inspector numbers it,
each message verbatim inside a code fence longer than any run of backticks in it, so a reply's
own headings, fences or <script> stay text.  It never loads back: the JSON is the record.
Loading checks everything first and raises TranscriptError with one clear line;
it changes nothing on failure.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from .conversation import validate_history
from .errors import HistoryError, NoraError, count_of

__all__ = ["save_transcript", "load_transcript", "markdown_text", "is_markdown", "is_notebook", "overwrite_problem",
           "TranscriptError",
           "MAX_TRANSCRIPT_BYTES", "NOT_READ_BACK"]

FORMAT = "nora-transcript"
VERSION = 1
MAX_TRANSCRIPT_BYTES = 20 * 1024 * 1024  # 20 MB: far beyond any real chat, small enough to read safely
MARKDOWN_SUFFIXES = (".md", ".markdown")
MARKDOWN_TITLE = "# A conversation, saved by Nora"  # the export's first line: how a renamed one is still known
MARKDOWN_EXPORT = "it is a Markdown export, for reading: load the conversation's .json transcript instead"
NOT_READ_BACK = ("would be saved as Markdown, which nora ask cannot read back: give a .json file "
                 "(for Markdown, /save FILE.md in nora chat)")  # after --history: 'notes.md'
NOTEBOOK_NAME = "is a notebook's name: save the conversation to a .json name (or .md, to read)"  # after the name


class TranscriptError(NoraError):
    """A transcript file could not be read or written.

    Raised by load_transcript (a missing, huge, non-UTF-8, non-JSON or wrongly shaped file) and
    save_transcript (a folder, a notebook, a file holding something else), the file left as it was.
    Example: load_transcript("missing.json") -> TranscriptError('cannot load missing.json: no such file')"""


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


def overwrite_problem(path: str | os.PathLike) -> str | None:
    """None when a save may write at path, else why not, as words that follow the file's name.
    A save replaces the file whole (a new file renamed over it), so only what Nora itself would write
    there may be replaced: nothing, an empty file, a transcript, a Markdown export.
    Example: overwrite_problem("notes.md") with someone's notes in it ->
        'holds something other than a conversation saved by Nora, ...'"""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO, a socket, /dev/null (as root, the rename replaces it)
        return "is not a regular file (save to a file name)"
    if not _saved_over_safely(path):
        return ("holds something other than a conversation saved by Nora, which saving would replace: "
                "choose another name (or delete it first)")
    return None


def _saved_over_safely(path: Path) -> bool:
    """Whether saving may replace what is at path: nothing there, an empty file, a transcript (one Nora
    wrote, or any file load_transcript takes) or a Markdown export Nora wrote.  Anything else is someone's
    file, and a save would replace it whole.  A transcript Nora wrote is known by its first line or two
    (the usual case: --save writes over its own file after every turn), anything else is loaded to see."""
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # unreadable here: the write below says why, in its own words
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if not text or text.startswith(MARKDOWN_TITLE) or text.startswith('{\n  "format": "nora-transcript"'):
        return True
    try:
        load_transcript(path)
    except TranscriptError:
        return False
    return True


def is_markdown(path: str | os.PathLike) -> bool:
    """Whether saving to path writes Markdown (for reading) rather than the JSON transcript.
    Example: is_markdown("notes.MD") -> True; is_markdown("chat.json") -> False"""
    return Path(path).suffix.lower() in MARKDOWN_SUFFIXES


def is_notebook(path: str | os.PathLike) -> bool:
    """Whether path names a notebook, which a save must never replace.
    Example: is_notebook("lesson.IPYNB") -> True; is_notebook("chat.json") -> False"""
    return Path(path).suffix.lower() == ".ipynb"


_BACKTICKS = re.compile(r"`+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _verbatim(text: str) -> str:
    """text inside a code fence, where nothing is Markdown: the fence is longer than any run of
    backticks in text, so no line of text can close it.  Example: 'hi' -> '```text\\nhi\\n```'"""
    fence = "`" * max(3, 1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    return f"{fence}text\n{text}\n{fence}"  # a renderer shows text + "\n" whatever text ends with


def _code_span(text: str) -> str:
    """One line of text as inline code, whatever backticks it holds.  Example: 'a`b' -> '`` a`b ``'"""
    text = " ".join(text.split())
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    pad = " " if "`" in (text[:1], text[-1:]) or fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_text(history: list[dict], model: Any = None, temperature: Any = None) -> str:
    """The conversation as a Markdown document, for reading: a note on what the list is, then
    each message under '## N · role', its text verbatim in a code fence.  Only the model's name and
    the temperature are written besides the messages: nothing else given can land in it.

    Example: markdown_text([{"role": "user", "content": "hi"}], model="m")
        -> '# A conversation, saved by Nora\\n\\n...## 0 · user (no reply yet)\\n\\n```text\\nhi\\n```\\n'
    """
    settings = []
    if isinstance(model, str) and model.strip():
        settings.append(f"model {_code_span(model)}")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and math.isfinite(temperature):
        settings.append(f"temperature {temperature:g}")
    settings.append(count_of(len(history), "message"))
    said = ", ".join(settings)
    systems = [i for i, m in enumerate(history) if m["role"] == "system"]
    kept = ("the persona and " if systems == [0] else "the system messages and " if systems else "") + \
        "only the latest turns that trimming kept"
    first_user = next((i for i, m in enumerate(history) if m["role"] == "user"), len(history))
    lines = [
        MARKDOWN_TITLE, "",
        "Saved as Markdown, for reading. Only Nora's `.json` transcripts load back: to go on with this "
        "conversation later, save it to a `.json` file too.", "",
        said[:1].upper() + said[1:] + ".", "",  # not .capitalize(): that lowers the model's name
        "The model remembers nothing between calls. Below is the list of messages the program keeps, numbered "
        "from 0 as the panel's inspector numbers them, "
        + ("the persona first. " if systems[:1] == [0] else "with no persona (no system message first). ")
        + "Each reply the model wrote came from one call, which sent the whole list as it stood just before "
        f"that reply: all of it, unless trimming was on (then {kept}).",
    ]
    if not history:
        lines += ["", "The list is empty: there are no messages yet."]
    for i, message in enumerate(history):
        role = message["role"]
        note = (" (the persona)" if i == 0 and role == "system"
                else " (a greeting, before any user message)" if role == "assistant" and i < first_user
                else " (no reply yet)" if role == "user" and i == len(history) - 1 else "")
        content = _LONE_SURROGATE.sub("\ufffd", message["content"])  # half an emoji: UTF-8 cannot hold it
        lines += ["", f"## {i} · {role}{note}", "", _verbatim(content)]
    return "\n".join(lines) + "\n"


def save_transcript(path: str | os.PathLike, history: list[dict], **metadata: Any) -> Path:
    """Write history (and metadata such as model=, temperature=) to path atomically.
    A leading ~ is the home folder, as in a shell.  A name ending in .md or .markdown gets a
    Markdown document for reading (markdown_text), written the same way; only the JSON loads back.

    Example: save_transcript("chat.json", history, model="SmolLM2") -> Path('chat.json')
    """
    try:
        validate_history(history)
    except HistoryError as exc:
        if isinstance(path, list) and isinstance(history, (str, os.PathLike)):  # the list first, as run_turn takes it
            raise TranscriptError("not saved: save_transcript takes (path, history) in that order - e.g. "
                                  "save_transcript(\"chat.json\", history)") from None
        raise TranscriptError(f"not saved: {exc}") from None
    given = path = Path(path).expanduser()
    bad = _unusable(path)
    if bad:
        raise TranscriptError(f"not saved: the file name contains {bad}")
    if is_notebook(given):  # `%chat save lesson.ipynb` would replace the notebook itself
        raise TranscriptError(f"not saved: {given} {NOTEBOOK_NAME}")
    if path.is_dir():  # else the rename below fails with an error that names the temp file
        raise TranscriptError(f"not saved: {path} is a folder")
    if path.is_symlink():  # write where the link points: renaming over it would replace the link
        path = Path(os.path.realpath(path))
    problem = overwrite_problem(path)  # `/save notes.md` over one's own notes; /dev/null
    if problem:
        raise TranscriptError(f"not saved: {given} {problem}")
    if _read_only(path):  # renaming a new file over it would replace it all the same: say no instead
        raise TranscriptError(f"not saved: {given} is read-only (make it writable, or save to another file)")
    # Only plain JSON values go in; never anything that could carry a secret.
    meta = {k: v for k, v in metadata.items() if k not in ("api_key", "messages") and v is not None}
    document = {"format": FORMAT, "version": VERSION, **meta, "messages": history}
    document["format"], document["version"] = FORMAT, VERSION  # the header is Nora's own: a format= or version=
    # given as metadata would make a file this Nora refuses to load
    if is_markdown(given):  # the name the user gave decides, a symlink's target or not
        text = markdown_text(history, meta.get("model"), meta.get("temperature"))
    else:
        text = _json_text(document, history, meta)
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


def _json_text(document: dict, history: list[dict], meta: dict) -> str:
    """The transcript file's text; TranscriptError naming what JSON cannot hold."""
    try:
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    except (TypeError, ValueError) as exc:  # e.g. a date put in a message by hand
        raise TranscriptError(f"not saved: {_not_json(history, meta, exc)}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. half an emoji from a server): write it as \ud83d,
        text = json.dumps(document, ensure_ascii=True, indent=2) + "\n"  # which loads back exactly
    return text


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
        if is_markdown(path) or text.startswith(MARKDOWN_TITLE):  # .md holding JSON (saved before) still loads
            raise TranscriptError(f"cannot load {name}: {MARKDOWN_EXPORT}") from None
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
