"""`nora`: the reference article's command-line loop, grown up.

    nora chat                      talk to Nora (streamed replies, slash commands)
    nora ask "Do you have Dune?"   one question, one answer on stdout
    nora serve                     the embedded model as an OpenAI-compatible server
    nora models                    the model names --model can take on this backend

This file is a thin shell: reading lines, printing, flags.  Every turn goes
through ``conversation.safe_run_turn`` (the one implementation of a turn), every
client comes from ``clients.make_client``.  The conversation is the plain list
``history`` (system first, then user/assistant pairs), resent on every call.

What the terminal shows is the same whether stdin is a keyboard or a pipe: with a
pipe, each line read is echoed as ``you: ...``, so a piped session's stdout reads
like the screen would.  Status lines are in (parentheses); failures go to stderr.

Exit status: 0 ok, 1 a call or a file failed, 2 bad command line or settings,
130 cancelled with Ctrl-C (``nora ask``; ``nora serve`` while the model loads).

Import cost matters (``nora --help`` must be instant): nothing here imports
``openai`` or ``llama_cpp``; ``make_client`` does, when a client is built.  On the
embedded model the replies are the plain look-alikes of ``nora_widgets.shapes``
(``local_responses="plain"``), so ``nora ask`` never imports openai at all: the
terminal prints the text, it has no use for openai's pydantic types.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TextIO

from . import __version__
from ._sent_line import describe_sent
from .clients import BACKENDS, describe_client, lists_model, make_client, model_note, model_used
from .conversation import (
    DEFAULT_TEMPERATURE,
    SYSTEM_PROMPT,
    messages_to_send,
    new_history,
    safe_run_turn,
    set_persona,
    trim_history,
    undo_turn,
)
from .errors import Failure, NoraError, count_of, describe_failure, redact
from .transcript import TranscriptError, _read_only, load_transcript, save_transcript

__all__ = ["main", "build_parser", "ChatSession"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
QUIT_WORDS = ("quit", "exit", "/quit", "/exit")
CLI_TRIM = "trim it (/trim N or keep fewer turns)"  # the failures' advice in this face's words
CLI_TIMEOUT = "try again, or raise --timeout / NORA_TIMEOUT"
CLI_NOT_FOUND = "check --model (nora models lists them) and OPENAI_BASE_URL"
NOTHING_TO_ASK = "nothing to ask: give a question, or pipe one in (- stands for stdin)"

HELP_TEXT = """\
commands:
  /history        show the messages exactly as the next call sends them (trimmed per /trim)
  /system TEXT    set the persona (system prompt); /system alone shows it, /system off removes it
  /trim N         send only the last N turns (the transcript keeps everything); /trim off
  /save [FILE]    save the whole conversation as JSON (default: the --save file)
  /load FILE      replace the conversation with a saved one
  /clear          forget the conversation, keep the persona
  /sent [on|off]  after each reply, one line saying what that call sent (messages, turns, tokens)
  /undo           take back your last message and its reply (the next call will not send them)
  /retry          ask for your last message's reply again (the same list goes out again)
  /help           this list
  quit, exit, Ctrl-D   leave (/quit and /exit too); Ctrl-C cancels a reply in progress
  //text          send a message that starts with '/'
  \"\"\"             on a line of its own: the lines up to the next \"\"\" line are one message"""


def _cli_words(failure: Failure, url_named: str) -> Failure:
    """A failure's advice in this face's words: /trim N, --timeout, `nora models` for a model name
    the server does not know, and where the URL came from."""
    return failure.in_words_of(CLI_TRIM, CLI_TIMEOUT, CLI_NOT_FOUND).with_url_named(url_named)


class UsageError(NoraError):
    """A bad flag or setting: one line, exit status 2."""


# --------------------------------------------------------------------------- #
# output helpers


# Characters that are not terminal commands but still mislead: bidi overrides and isolates reorder
# what is shown ("Trojan Source"), and lone surrogates cannot be written as UTF-8 at all.
_SHOW_AS_CODE = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)])


def _printable(text: str) -> str:
    """Show control characters (escape sequences included) instead of obeying them.

    Model replies and pasted input are text, not terminal commands.
    Example: _printable("red \\x1b[31m!") -> 'red ^[[31m!'; _printable("a\\u202eb") -> 'a<U+202E>b'
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code in _SHOW_AS_CODE:
            out.append(f"<U+{code:04X}>")
        elif ch in "\n\t" or ch.isprintable() or code > 0x9F:
            out.append(ch)
        elif code < 0x20:
            out.append("^" + chr(code + 64))  # caret notation, as `cat -v` shows it
        else:
            out.append(f"\\x{code:02x}")
    return "".join(out)


def _unquote(arg: str) -> str:
    """A file name as a shell would read it: one pair of surrounding quotes is not part of it.

    Example: _unquote('"my chat.json"') -> 'my chat.json'; _unquote('notes.json') -> 'notes.json'
    """
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1].strip()
    return arg


def _write(stream: TextIO, text: str) -> None:
    stream.write(_printable(text))
    stream.flush()


# --------------------------------------------------------------------------- #
# one chat session: the list, the settings, the slash commands


class ChatSession:
    """The state of one `nora chat`: a client, the history list, and the settings.

    Example:
        s = ChatSession(ScriptedClient(["Hi!"]), new_history())
        s.send("hello")        # prints 'nora: Hi!'; s.history has 3 messages
        s.command("/history")  # prints the list the next call sends
    """

    def __init__(self, client: Any, history: list[dict], *, model: str | None = None,
                 temperature: float = DEFAULT_TEMPERATURE, keep_turns: int | None = None,
                 max_tokens: int | None = None, stream: bool = True, save_path: str | None = None,
                 prefix: str = "nora: ", out: TextIO | None = None, err: TextIO | None = None,
                 url_named: str = "OPENAI_BASE_URL", show_sent: bool = False) -> None:
        self.client = client
        self.history = history  # [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...]
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens  # None: not sent, the server decides how long a reply may be
        self.keep_turns = keep_turns  # None: send everything
        self.stream = stream
        self.save_path = save_path
        self.prefix = prefix  # printed before each reply
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.last_failure: str | None = None  # kind of the last failed turn ("timeout", "cancelled", ...)
        self.url_named = url_named  # where the server's URL came from, as failures' advice names it
        self.show_sent = show_sent  # after each reply, a line saying what the call sent (/sent)
        self.last_sent: list[dict] | None = None  # what the last successful call sent

    def say(self, text: str) -> None:
        """A line on stdout."""
        _write(self.out, text + "\n")

    def warn(self, text: str) -> None:
        """A line on stderr (failures, refusals)."""
        _write(self.err, redact(text) + "\n")

    # -- a turn ---------------------------------------------------------------

    def send(self, user_text: str) -> bool:
        """One turn: print the reply as it arrives; on failure one line on stderr.

        The history grows by a (user, assistant) pair, or stays exactly as it was.
        """
        before = list(self.history)
        started = []  # pieces printed so far (for the "nora: " prefix and a cut-off reply)

        def on_text(piece: str) -> None:
            if not started:
                _write(self.out, self.prefix)
            started.append(piece)
            _write(self.out, piece)

        extra = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}  # passed on to create()
        try:
            result = safe_run_turn(
                self.client, self.history, user_text, model=self.model, temperature=self.temperature,
                keep_last_n_turns=self.keep_turns, on_text=on_text if self.stream else None, **extra,
            )
        except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
            self.history[:] = before
            result = None
        if result is not None and result.ok:
            if self.stream:
                _write(self.out, "\n" if started else f"{self.prefix}\n")
            else:
                self.say(f"{self.prefix}{result}")
            self._autosave()
            self.last_sent = result.sent
            if self.show_sent and result.sent is not None:
                self.say(self.sent_line(result.sent, len(before)))
            return True
        if started:  # part of a reply is on screen but not in the history: say so
            _write(self.out, " [reply dropped]\n")
        self.last_failure = result.failure.kind if result is not None and result.failure else "cancelled"
        if result is None:
            self.warn("(cancelled: the turn was rolled back)")
        else:
            self.warn(_cli_words(result.failure, self.url_named).line() if result.failure else str(result))
        return False

    def sent_line(self, sent: list[dict], before: int) -> str:
        """What one call sent, in one line: the statelessness made visible turn by turn.
        before: how many messages the history held before this turn (so what trimming left out).
        Example: '(this call sent 4 messages: the persona, 1 earlier turn and your message; 61 tokens)'"""
        line = describe_sent(sent, self.history[:before], self.keep_turns, "/trim {n}", self.client, self.model)
        return f"({line})"

    def _autosave(self) -> None:
        if self.save_path:
            self.save(self.save_path, quiet=True)

    def save(self, path: str, quiet: bool = False) -> bool:
        model = model_used(self.client, self.model)
        try:
            save_transcript(path, self.history, model=model, temperature=self.temperature)
        except (TranscriptError, OSError) as exc:
            why = str(exc).removeprefix("not saved: ") if isinstance(exc, TranscriptError) else exc.strerror or exc
            self.warn(f"(not saved to {path}: {why})")  # in brackets: "nora: ..." is how replies start
            return False
        if not quiet:
            self.say(f"(saved {count_of(len(self.history), 'message')} to {path})")
        return True

    # -- slash commands -------------------------------------------------------

    def command(self, line: str) -> None:
        """Run one slash command, e.g. '/trim 2'.  Unknown commands get one line."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler: Callable[[str], None] | None = {
            "/history": self._history,
            "/system": self._system,
            "/trim": self._trim,
            "/save": self._save,
            "/load": self._load,
            "/clear": self._clear,
            "/sent": self._sent,
            "/undo": self._undo,
            "/retry": self._retry,
            "/help": lambda _arg: self.say(HELP_TEXT),
        }.get(name.lower())
        if handler is None:
            self.warn(f"(unknown command {name}: type /help for the list)")
        else:
            handler(arg)

    def _history(self, _arg: str) -> None:
        sent = messages_to_send(self.history, None, self.keep_turns)
        self.say(json.dumps(sent, indent=2, ensure_ascii=False))
        if len(sent) < len(self.history):
            self.say(f"(next call sends {len(sent)} of {len(self.history)} messages plus your new one: "
                     f"/trim {self.keep_turns} keeps the last {count_of(self.keep_turns, 'turn')})")
        elif not sent:
            self.say("(next call sends only your new message)")
        else:
            self.say(f"(next call sends {'this' if len(sent) == 1 else 'these'} {count_of(len(sent), 'message')} "
                     "plus your new one)")

    def _system(self, text: str) -> None:
        if text and (text.lower() == "off" or not _unquote(text)):  # /system off, /system ""
            set_persona(self.history, "")
            self.say("(system prompt removed: calls go without one)")
            return
        text = _unquote(text)
        if not text:
            first = self.history[0] if self.history else None
            self.say(f"(system prompt: {first['content']!r})" if first and first["role"] == "system"
                     else "(no system prompt)")
            return
        set_persona(self.history, text)  # the leading one only: system messages further down stay
        self.say("(system prompt set: it goes first in every call from now on)")

    def _trim(self, arg: str) -> None:
        if not arg:
            self.say("(trimming off: every call sends the whole conversation)" if self.keep_turns is None
                     else f"(sending the last {count_of(self.keep_turns, 'turn')})")
        elif arg.lower() == "off":
            self.keep_turns = None
            self.say("(trimming off: every call sends the whole conversation)")
        elif arg == "0":
            self.keep_turns = 0
            self.say("(from now on each call sends only the persona and your new message: "
                     "the model forgets everything; the transcript keeps it)")
        elif arg.isascii() and arg.isdigit():  # isdigit() alone lets '²' through, and int('²') fails
            self.keep_turns = int(arg)
            self.say(f"(from now on each call sends the persona and the last {count_of(self.keep_turns, 'turn')}; "
                     "the transcript keeps everything)")
        else:
            self.warn(f"(/trim needs a whole number of turns or 'off', not {arg!r})")

    def _save(self, path: str) -> None:
        path = _unquote(path) or self.save_path or ""
        if not path:
            self.warn("(/save needs a file name, e.g. /save chat.json)")
        else:
            self.save(path)

    def _load(self, path: str) -> None:
        path = _unquote(path)
        if not path:
            self.warn("(/load needs a file name, e.g. /load chat.json)")
            return
        try:
            messages, _meta = load_transcript(path)
        except TranscriptError as exc:
            self.warn(f"({exc}; the conversation is unchanged)")
            return
        self.history[:] = messages
        self.say(f"(loaded {count_of(len(messages), 'message')} from {path})")

    def _sent(self, arg: str) -> None:
        if arg.lower() not in ("", "on", "off"):
            self.warn(f"(/sent takes on or off, not {arg!r})")
            return
        self.show_sent = arg.lower() == "on" if arg else not self.show_sent
        self.say("(after each reply: what that call sent)" if self.show_sent else "(/sent is off)")

    def _undo(self, _arg: str) -> None:
        removed = undo_turn(self.history)
        if not removed:
            self.say("(nothing to undo: no message of yours in the conversation)")
            return
        self._autosave()
        more = len(removed) - 1  # what came after your message: none (no reply yet), the reply, or more
        what = "your last message" + ("" if not more else " and its reply" if more == 1 else
                                      f" and the {count_of(more, 'message')} after it")
        sends = len(messages_to_send(self.history, None, self.keep_turns))
        self.say(f"(took back {what}: the next call sends {count_of(sends, 'message')} plus your new one)")

    def _retry(self, _arg: str) -> None:
        removed = undo_turn(self.history)
        if not removed:
            self.say("(nothing to retry: send a message first)")
            return
        again = len(messages_to_send(self.history, None, self.keep_turns)) + 1
        replied = len(removed) > 1  # a loaded transcript may end on a message with no reply yet
        why = "the model has no memory of its last answer" if replied else "your last message has no reply yet"
        self.say(f"(sending the same {count_of(again, 'message')} again: {why})")
        if not self.send(removed[0]["content"]):
            self.history.extend(removed)  # the retry was rolled back: the earlier reply stays
            self.say("(the earlier reply is kept)" if replied else "(the conversation is as it was)")

    def _clear(self, _arg: str) -> None:
        dropped = sum(1 for m in self.history if m["role"] != "system")
        self.history[:] = trim_history(self.history, 0)  # the persona only
        kept = "the persona is kept" if self.history and self.history[0]["role"] == "system" else "there is no persona"
        self.say(f"(cleared {count_of(dropped, 'message')}; {kept})")


# --------------------------------------------------------------------------- #
# the loop


def _read_line(interactive: bool, prompt: str = "you: ") -> str | None:
    """The next line of input, or None at end of input (Ctrl-D)."""
    if interactive:
        try:
            return input(prompt)
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    if not line:
        return None
    line = line.rstrip("\r\n")
    if line.strip() or prompt != "you: ":  # a blank line is ignored at the prompt, part of a """ block
        _write(sys.stdout, f"{prompt}{line}\n")  # echo: stdout reads like the screen would
    return line


BLOCK = '"""'  # a line of its own starts and ends a message of several lines


def _next_line(interactive: bool, pending: list[str], prompt: str = "you: ") -> str | None:
    """What was left over from a paste first, else the next line of input (None: the input ended)."""
    return pending.pop(0) if pending else _read_line(interactive, prompt)


def _read_block(interactive: bool, pending: list[str]) -> str | None:
    """The lines after a line of three double quotes, up to the next line that is three double quotes
    from its first column, as one message (None: the input ended first).  Example: lines 'Fix this:', '  x = 1 +', BLOCK -> 'Fix this:\n  x = 1 +'

    A paste on a terminal comes as one piece with its newlines in it (bracketed paste): its lines
    are looked at one by one, so a pasted closing line ends the block too; what the paste held
    after it is put back in pending, for the loop to read as the next input.
    """
    lines: list[str] = []
    while True:
        piece = _next_line(interactive, pending, prompt="...: ")
        if piece is None:
            return None
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


def chat_loop(session: ChatSession, interactive: bool) -> int:
    """Read, send, print until quit / exit / end of input.  Returns the exit status (0)."""
    pending: list[str] = []  # what a paste held after a block it closed: read before the keyboard
    while True:
        try:
            line = _next_line(interactive, pending)
            if line is None:
                return EXIT_OK
            text = line.strip()
            first, newline, rest = line.partition("\n")
            if newline and first.strip() == BLOCK:  # a pasted block: '"""', its lines, maybe the closing line
                if rest:
                    pending.insert(0, rest)
                text = BLOCK
            if text == BLOCK:
                try:
                    block = _read_block(interactive, pending)
                except KeyboardInterrupt:
                    pending.clear()
                    session.warn(("\n" if interactive else "") + "(Ctrl-C: the message of several lines was not sent)")
                    continue
                if block is None:
                    session.warn(f"(input ended inside a {BLOCK} block: that message was not sent)")
                    return EXIT_OK
                if block.strip():
                    session.send(block)
                else:
                    session.warn(f"(nothing between the {BLOCK} lines: nothing sent)")
                continue
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                return EXIT_OK
            if text.startswith("/") and not text.startswith("//"):
                session.command(text)
            else:
                session.send(line[line.index("/") + 1:] if text.startswith("//") else line)
        except KeyboardInterrupt:  # Ctrl-C at the prompt: not a way out, say what is
            session.warn(("\n" if interactive else "") + "(Ctrl-C: type quit or press Ctrl-D to leave)")


# --------------------------------------------------------------------------- #
# settings -> client


def _settings(args: argparse.Namespace) -> None:
    """Check the flags that argparse cannot; raise UsageError with one line."""
    if args.timeout is not None and not args.timeout > 0:  # written so that nan is refused too
        raise UsageError(f"--timeout must be more than 0 seconds (got {args.timeout:g})")
    if args.timeout is not None and math.isinf(args.timeout):  # httpx cannot wait forever: every call fails
        raise UsageError(f"--timeout must be a finite number of seconds (got {args.timeout:g})")
    if args.max_retries is not None and args.max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more (got {args.max_retries})")
    if not 0 <= args.temperature <= 2:
        raise UsageError(f"--temperature must be between 0 and 2 (got {args.temperature:g})")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be a whole number of at least 1 (got {args.max_tokens})")
    if getattr(args, "keep_turns", None) is not None and args.keep_turns < 0:
        raise UsageError(f"--keep-turns must be 0 or more (got {args.keep_turns})")
    for flag, path in (("--save", getattr(args, "save", None)), ("--history", getattr(args, "history", None))):
        if path:
            path = os.path.expanduser(path)  # --save=~/chat.json: the shell leaves that ~ alone, save_transcript does not
            folder = os.path.dirname(path) or "."
            if not os.path.isdir(folder):
                raise UsageError(f"{flag}: folder {folder!r} does not exist")
            if os.path.isdir(path):  # else every turn would fail to save, one warning each
                raise UsageError(f"{flag}: {path!r} is a folder: give a file name, e.g. {flag} chat.json")
            # checked now, not after the call: the answer would be lost from the file (ask) or every turn
            # would fail to save (chat).  The save renames a new file over the old one, which a read-only
            # file does not stop, so its mode is read too (root passes os.access everywhere).
            if _read_only(Path(path)):
                raise UsageError(f"{flag}: {path!r} is read-only and each new turn is written to it: "
                                 "make it writable (chmod u+w) or give another file")
            target_folder = os.path.dirname(os.path.realpath(path))  # a symlink is written through
            if not os.access(target_folder, os.W_OK | os.X_OK):
                raise UsageError(f"{flag}: cannot write in folder {target_folder!r} (permission denied)")


def _client(args: argparse.Namespace) -> Any:
    try:
        client = make_client(args.backend, base_url=args.base_url, model=args.model,
                             timeout=args.timeout, max_retries=args.max_retries,
                             local_responses="plain")  # the embedded model: no openai import (start-up)
    except NoraError as exc:
        raise UsageError(str(exc)) from None
    wrap = getattr(args, "wrap", None)  # e.g. a GuardedClient around every call (see main)
    return wrap(client) if wrap is not None else client


def _url_named(args: argparse.Namespace) -> str:
    """How failures' advice names the server's URL: the flag when it was given, else the variable."""
    return "--base-url" if args.base_url else "OPENAI_BASE_URL"


def cmd_chat(args: argparse.Namespace) -> int:
    _settings(args)
    history = new_history(SYSTEM_PROMPT if args.system is None else args.system)
    loaded = None
    if args.load:
        try:
            history, _meta = load_transcript(args.load)
        except TranscriptError as exc:
            print(f"nora: {exc}", file=sys.stderr)
            return EXIT_FAILED
        loaded = len(history)
        if args.system is not None:  # an explicit --system replaces the file's persona
            set_persona(history, args.system)
    client = _client(args)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    session = ChatSession(client, history, model=args.model, temperature=args.temperature,
                          keep_turns=args.keep_turns, max_tokens=args.max_tokens, stream=not args.no_stream,
                          save_path=args.save, url_named=_url_named(args), show_sent=args.show_sent)
    session.say(f"Nora chat: {describe_client(client)}")
    note = model_note(client, args.model)
    if note:
        session.say(f"({note})")
    session.say("(type /help for commands; quit or Ctrl-D to leave)")
    if loaded is not None:
        session.say(f"(loaded {count_of(loaded, 'message')} from {args.load})")
    return chat_loop(session, interactive)


def _question(words: list[str]) -> str:
    """The question from the command line: its words joined by spaces, each - replaced by stdin.

    With no words at all, a piped stdin is the question (`git log -1 | nora ask`); a keyboard is
    not read (that would wait silently).
    Example: ["Summarise:", "-"] with "a diff" piped in -> "Summarise: a diff"
    """
    if not words and not sys.stdin.isatty():
        words = ["-"]
    piped = sys.stdin.read().strip() if "-" in words else ""
    question = " ".join(piped if word == "-" else word for word in words).strip()
    if not question:
        raise UsageError(NOTHING_TO_ASK)
    return question


def _ask_history(args: argparse.Namespace) -> list[dict]:
    """The conversation `nora ask` sends its question after: --history FILE's when the file exists
    (an explicit --system replaces its persona), else a new one with the persona."""
    path = os.path.expanduser(args.history) if args.history else None
    if path is None or not os.path.exists(path):
        return new_history(SYSTEM_PROMPT if args.system is None else args.system)
    history, _meta = load_transcript(path)  # TranscriptError: one line, exit 1 (the caller)
    if args.system is not None:
        set_persona(history, args.system)
    return history


def _file_state(path: str | None) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next (each save renames a new file over it), or None
    when there is no file.  Example: _file_state("chat.json") -> (inode, size, modified in ns)"""
    try:
        st = os.stat(os.path.expanduser(path)) if path else None
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns) if st else None


def cmd_ask(args: argparse.Namespace) -> int:
    _settings(args)
    question = _question(args.question)
    read = _file_state(args.history)  # taken before the file is read: a change after it is caught below
    try:
        history = _ask_history(args)
    except TranscriptError as exc:
        print(f"nora: {exc}", file=sys.stderr)
        return EXIT_FAILED
    client = _client(args)
    before = len(history)
    session = ChatSession(client, history, model=args.model, temperature=args.temperature,
                          max_tokens=args.max_tokens, stream=not args.no_stream, prefix="",
                          url_named=_url_named(args))
    note = model_note(client, args.model)
    if note:  # on stderr: the answer alone goes to stdout
        session.warn(f"({note})")
    if not session.send(question):
        return EXIT_CANCELLED if session.last_failure == "cancelled" else EXIT_FAILED
    if args.show_sent and session.last_sent is not None:  # stderr too: stdout is the answer alone
        session.warn(session.sent_line(session.last_sent, before))
    if args.history and _file_state(args.history) != read:  # saving would drop the other process's turn
        session.warn(f"(not saved to {args.history}: it changed while this question was asked, "
                     "e.g. by another nora ask on the same file; this turn is not in it)")
        return EXIT_FAILED
    if args.history and not session.save(args.history, quiet=True):
        return EXIT_FAILED  # the answer is out, the file could not take it: said in one line
    return EXIT_OK


def _server_models(client: Any) -> list[str]:
    """The names the server's GET /models lists, sorted (make_client may have asked already).
    A failure (down, a wrong key, no /models) is raised as the client raised it."""
    names = list(getattr(client, "listed_models", None) or [])
    if not names:
        names = [m.id for m in client.models.list().data]
    return sorted(name for name in names if isinstance(name, str) and name)


def cmd_models(args: argparse.Namespace) -> int:
    """One model name per line on stdout (what --model / NORA_MODEL can take); what they are on stderr.
    Example: `nora models` against Ollama -> 'llama3.2:latest', 'qwen2.5:latest'"""
    _settings(args)
    client = _client(args)
    if getattr(client, "backend", None) == "local":
        _write(sys.stdout, f"{client.default_model}\n")
        size = os.path.getsize(client.model_path) / 1e6
        print(f"(the embedded model: {client.model_path}, {size:,.0f} MB, context window {client.n_ctx:,} tokens; "
              f"it answers as itself whatever --model says; NORA_MODEL_PATH picks another GGUF file)",
              file=sys.stderr)
        return EXIT_OK
    if not hasattr(client, "models"):  # the scripted stand-in: one name, no server
        _write(sys.stdout, f"{client.default_model}\n")
        print(f"({describe_client(client)})", file=sys.stderr)
        return EXIT_OK
    try:
        names = _server_models(client)
    except Exception as exc:
        failure = describe_failure(exc).in_words_of(CLI_TRIM, CLI_TIMEOUT).with_url_named(_url_named(args))
        if failure.kind == "not_found":  # the server is there, with no list (GET /models is optional)
            failure = replace(failure, message=f"it has no list of models (HTTP {failure.status})",
                              hint="ask for one by name with --model or NORA_MODEL")
        hint = f" - {failure.hint}" if failure.hint else ""
        print(f"nora: could not list the server's models: {failure.message}{hint}", file=sys.stderr)
        return EXIT_FAILED
    where = redact(str(client.base_url)).rstrip("/")
    if not names:
        print(f"(the server at {where} lists no models: ask for one by name with --model or NORA_MODEL)",
              file=sys.stderr)
        return EXIT_OK
    _write(sys.stdout, "".join(f"{name}\n" for name in names))
    default = client.default_model
    if lists_model(names, default):
        chosen = f"nora uses {default} unless told otherwise; "
    else:  # e.g. a NORA_MODEL with a typo: the name every call sends, which this server does not list
        origin = " (NORA_MODEL)" if os.environ.get("NORA_MODEL") else ""
        chosen = f"nora asks for {default!r}{origin} unless told otherwise, and this server does not list it; "
    print(f"({count_of(len(names), 'model')} at {where}; {chosen}choose with --model or NORA_MODEL)", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- #
# the command line


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (and exit 2), not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): a server when OPENAI_API_KEY or OPENAI_BASE_URL is set, "
                        "else the embedded model")
    p.add_argument("--model", help="model name to ask for (env NORA_MODEL)")
    p.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
                                      "(env OPENAI_BASE_URL)")
    p.add_argument("--system", help="the persona (system prompt); default: Nora the bookshop assistant")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"0 to 2: 0 = repeatable, higher = more varied (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="stop each reply after N tokens (sent as max_tokens; default: the server decides)")
    p.add_argument("--no-stream", action="store_true", help="print each reply whole instead of as it arrives")
    p.add_argument("--timeout", type=float, help="seconds to wait for the server (env NORA_TIMEOUT, default 60)")
    p.add_argument("--max-retries", type=int, help="retries on 408/409/429/5xx, timeouts and connection errors "
                                                   "(env NORA_MAX_RETRIES, default 2)")


def _subcommand(argv: list[str]) -> str | None:
    """The first word that is not an option, e.g. ['--version'] -> None, ['serve', '-h'] -> 'serve'."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(with_serve: bool = False) -> argparse.ArgumentParser:
    """The `nora` parser.  `nora serve`'s own options are added only when asked for
    (with_serve), so `nora --help` never imports the server code."""
    parser = _Parser(prog="nora", description="Nora: a chat client that shows the whole conversation "
                                              "is resent on every call.")
    parser.add_argument("--version", action="version", version=f"nora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{chat,ask,models,serve}", parser_class=_Parser)

    chat = sub.add_parser("chat", help="talk to Nora in the terminal", description=HELP_TEXT,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(chat)
    chat.add_argument("--keep-turns", type=int, metavar="N",
                      help="send only the last N turns, 0 = only the persona and the new message "
                           "(the saved transcript keeps everything)")
    chat.add_argument("--load", metavar="FILE", help="start from a saved conversation")
    chat.add_argument("--save", metavar="FILE", help="save the conversation after every successful turn")
    chat.add_argument("--show-sent", action="store_true",
                      help="after each reply, one line saying what that call sent (messages, turns, tokens; "
                           "/sent turns it on and off)")
    chat.set_defaults(func=cmd_chat)

    ask = sub.add_parser("ask", help="one question, one answer on stdout")
    ask.add_argument("question", nargs="*", help="the question; - stands for stdin (read too when no question is given and stdin is a pipe)")
    _add_model_options(ask)
    ask.add_argument("--history", metavar="FILE",
                     help="the conversation so far: read from FILE when it exists and sent before the question; "
                          "the new turn is written back (a failed call leaves the file as it was)")
    ask.add_argument("--show-sent", action="store_true",
                     help="after the answer, one line on stderr saying what the call sent")
    ask.set_defaults(func=cmd_ask)

    models = sub.add_parser("models", help="list the model names --model can take (the server's, or the embedded one)")
    models.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): a server when OPENAI_API_KEY or OPENAI_BASE_URL is set, "
                             "else the embedded model")
    models.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 "
                                           "(env OPENAI_BASE_URL)")
    models.add_argument("--timeout", type=float, help="seconds to wait for the server (env NORA_TIMEOUT, default 60)")
    models.add_argument("--max-retries", type=int, help="retries on 408/409/429/5xx, timeouts and connection "
                                                        "errors (env NORA_MAX_RETRIES, default 2)")
    models.set_defaults(func=cmd_models, model=None, temperature=DEFAULT_TEMPERATURE, max_tokens=None)

    serve = sub.add_parser("serve", help="serve the embedded model as an OpenAI-compatible API")
    if with_serve:
        import importlib

        serve_module = importlib.import_module("nora_widgets.serve")  # ImportError: main() reports it

        serve_module.add_arguments(serve)
        serve.set_defaults(func=serve_module.run)
    parser.subcommands = {"chat": chat, "ask": ask, "models": models, "serve": serve}  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None, wrap: Callable[[Any], Any] | None = None) -> int:
    """Entry point of the `nora` console script.  Example: main(["ask", "Hi"]) -> 0

    wrap: a function applied to the client nora builds, for your own checks around every
    call, e.g. a script holding
        sys.exit(main(wrap=lambda c: GuardedClient(c, after=never_reveal("LEGUIN-42"))))
    (see nora_widgets.guard and docs/reliability.md).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(with_serve=_subcommand(argv) == "serve")
    except ImportError as exc:
        if exc.name == "nora_widgets.serve":
            why = "this install has no nora_widgets/serve.py"
        else:
            why = f"it needs {exc.name or exc}: pip install 'nora-widgets[local]'"
        print(f"nora: error: nora serve is not available: {why}", file=sys.stderr)
        return EXIT_USAGE
    args, extra = parser.parse_known_args(argv)
    if extra:  # say which command's --help lists what it takes
        command = _subcommand(argv)
        where = parser.subcommands.get(command, parser)  # type: ignore[attr-defined]
        where.error(f"unrecognized arguments: {' '.join(extra)}")
    args.wrap = wrap
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    if hasattr(sys.stdin, "reconfigure"):  # odd bytes on stdin become U+FFFD, never a crash
        sys.stdin.reconfigure(errors="replace")
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"nora: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\n(cancelled)", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # e.g. `nora ask ... | head -c 10`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
