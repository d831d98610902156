"""`nora chat`'s session: the list, the settings, the slash commands, and the loop that reads lines.

``ChatSession`` holds one conversation (a client, the plain list ``history``, the settings) and
runs each turn through ``conversation.safe_run_turn``; ``chat_loop`` reads lines (typed, piped or
pasted, with three-double-quote blocks) and hands each one to the session.  ``nora ask`` uses a
ChatSession for its one turn too.  The command line (flags, the ``cmd_*`` functions) is ``cli.py``;
how a line is read from the keyboard or a pipe (the prompt, echo, blocks, Ctrl-C/Ctrl-D at the
prompt) is ``_line_input.py``; what Tab offers, and readline set up for it, ``_completion.py``.

Like cli.py, nothing here imports ``openai`` or ``llama_cpp`` (``nora --help`` stays instant).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Callable, TextIO

from ._completion import COMMANDS, _after_model, completions, use_readline  # noqa: F401  (cli, tests import them here)
from ._cancel import CANCEL, Cancel
from ._ctrl_c_seen import watch_ctrl_c
from ._line_input import BLOCK, Stopped, _after_ctrl_c, _next_line, _read_block, _type_ahead_on
from ._sent_line import describe_sent
from ._terminal_text import SHOW_AS_CODE as _SHOW_AS_CODE
from ._terminal_text import OutputError, _write  # noqa: F401  (cli imports both from here)
from ._terminal_text import clip, unquote
from ._terminal_text import printable as _printable
from ._type_ahead import held_keys
from ._waiting import Ticker, waiting_words
from .clients import _listed_models, model_note, model_used, not_known_yet
from .conversation import (
    DEFAULT_TEMPERATURE,
    _earlier_turns,
    ChatClient,
    dropped_indexes,
    edit_message,
    means_no_persona,
    message_number,
    messages_to_send,
    persona_only,
    safe_run_turn,
    set_persona,
    temperature_problem,
    undo_turn,
)
from .errors import Failure, NoraError, count_of, looks_like_a_key, redact
from .transcript import TranscriptError, load_transcript, save_transcript

__all__ = ["ChatSession", "Stopped", "chat_loop", "HELP_TEXT", "completions", "use_readline"]

QUIT_WORDS = ("quit", "exit", "/quit", "/exit")
TAKE_NOTHING = ("/history", "/clear", "/undo", "/retry", "/quit", "/exit")  # '/undo 2' must not undo one turn
CLI_TRIM = "trim it (/trim N or keep fewer turns)"  # the failures' advice in this face's words
CLI_TIMEOUT = "try again, or raise --timeout / NORA_TIMEOUT"
CLI_NOT_FOUND = "check --model (nora models lists them) and OPENAI_BASE_URL"
CLI_MODEL_NOT_FOUND = "check /model (nora models lists them) and OPENAI_BASE_URL"  # a name /model NAME chose
ASK_TRIM = "start a new --history file, or go on in nora chat --load FILE --keep-turns N"  # nora ask has no /trim
CLI_PERSONA = "shorten the persona: /system TEXT (or --system TEXT at the start)"  # the persona alone overflows
CLI_AGAIN = "/retry asks again"  # after an empty reply: how this face asks for another
ASK_AGAIN = "run the command again"
ASK_PERSONA = "shorten the persona: --system TEXT"

HELP = [  # (what to type, what it does): /help's list, wrapped to the terminal by help_text()
    ("/history", "show the messages exactly as the next call sends them (trimmed per /trim)"),
    ("/system TEXT", "set the persona (system prompt); /system alone shows it, /system off removes it"),
    ("/model NAME", "send the same list to another model from now on; /model alone shows it; /model default"),
    ("/temperature T", "0 to 2 from now on (0 = repeatable, higher = more varied); /temperature alone shows it"),
    ("/trim N", "send only the last N turns (the transcript keeps everything); /trim off"),
    ("/save [FILE]", "save the whole conversation as JSON (default: the --save file); FILE.md: as Markdown, to read"),
    ("/load FILE", "replace the conversation with a saved one"),
    ("/clear", "forget the conversation, keep the persona"),
    ("/sent [on|off]", "after each reply, one line saying what that call sent (messages, turns, tokens)"),
    ("/undo", "take back your last message and its reply (the next call will not send them)"),
    ("/retry", "ask for your last message's reply again (the list as it now stands goes out)"),
    ("/edit N TEXT", "rewrite message N (numbered from 0 as /history lists them; 0 is the persona): the next call "
                     f"sends the edited list; /edit N shows the message whole; /edit N {BLOCK} on a line of its own: "
                     f"the lines up to the next {BLOCK} line are its new text"),
    ("/help", "this list"),
    ("quit, Ctrl-D", "leave (exit, /quit and /exit too); Ctrl-C cancels a reply in progress"),
    ("//text", "send a message that starts with '/'"),
    (BLOCK, "on a line of its own: the lines up to the next \"\"\" line (or Ctrl-D) are one message"),
]


def help_text(width: int = 79) -> str:
    """/help's list within `width` columns, each description wrapped under its own column (at 80
    columns 12 of its lines wrapped mid-word, back to the first column, when they were written whole).
    Example: help_text(40).splitlines()[1:3] -> ['  /history        show the messages', '                  exactly as the next']
    """
    import textwrap

    width = max(width, 36)  # narrower still: the terminal wraps what is left
    lines = ["commands:"]
    for name, words in HELP:
        lines += textwrap.wrap(words, width, initial_indent=f"  {name:<15} ", subsequent_indent=" " * 18)
    return "\n".join(lines)


HELP_TEXT = help_text()  # through a pipe, and `nora chat --help`


def _columns(stream: TextIO) -> int:
    """The width of the terminal stream writes to, asked each time (a window may be resized); 80 when
    it is not a terminal or does not say."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80  # 0: a terminal that does not say
    except (AttributeError, ValueError, OSError):
        return 80


# said when Ctrl-C has not stopped the call 0.3 s later: Python acts on Ctrl-C only between two bytecodes, and
# the embedded model reads a prompt in C calls of 512 tokens (seconds each on a slow machine): the key also sets
# the turn's cancel, which llama.cpp looks at inside the call (_abort.py); a server's C calls (a name looked up)
STOPPING = {True: "(Ctrl-C: stopping once the call in progress lets go)",
            False: "(Ctrl-C: stopping the model)"}
STOPPING_SHORT = "(Ctrl-C: stopping...)"  # a narrow window: what fits of the note, as for the waiting note


def _cli_words(failure: Failure, url_named: str, trim: str = CLI_TRIM, not_found: str = CLI_NOT_FOUND,
               persona: str = CLI_PERSONA) -> Failure:
    """A failure's advice in this face's words: /trim N (trim: nora ask's, which has no /trim), --timeout,
    `nora models` for a model name the server does not know (not_found: /model's words when that
    command chose the name), /system for a persona too long (persona: nora ask's, which has no /system),
    where the URL came from, and --max-tokens for the argument max_tokens."""
    return failure.in_words_of(trim, CLI_TIMEOUT, not_found, persona).with_url_named(url_named) \
        .with_max_tokens_named("--max-tokens")


# --------------------------------------------------------------------------- #
# output helpers


def warn_line(text: str, stream: TextIO | None = None) -> None:
    """One line on stderr: any API key redacted, control characters shown (not obeyed)."""
    _write(stream or sys.stderr, redact(text) + "\n")


# --------------------------------------------------------------------------- #
# one chat session: the list, the settings, the slash commands


class ChatSession:
    """The state of one `nora chat`: a client, the history list, and the settings.

    Example:
        s = ChatSession(ScriptedClient(["Hi!"]), new_history())
        s.send("hello")        # prints 'nora: Hi!'; s.history has 3 messages
        s.command("/history")  # prints the list the next call sends
    """

    def __init__(self, client: ChatClient, history: list[dict], *, model: str | None = None,
                 temperature: float = DEFAULT_TEMPERATURE, keep_turns: int | None = None,
                 max_tokens: int | None = None, stream: bool = True, save_path: str | None = None,
                 prefix: str = "nora: ", out: TextIO | None = None, err: TextIO | None = None,
                 url_named: str = "OPENAI_BASE_URL", show_sent: bool = False, trim_words: str = CLI_TRIM,
                 persona_words: str = CLI_PERSONA, notes_on_stderr: bool = False, again_words: str = CLI_AGAIN) -> None:
        self.client = client
        self.history = history  # [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...]
        self.model = model
        self.model_from_command = False  # whether /model NAME chose self.model (a 404's advice names /model)
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
        self.edited: set[int] = set()  # the numbers of the messages /edit rewrote since the last call
        self.sent_persona: list[dict] | None = None  # the persona the last call sent ([]: none); None: no call yet
        self.sent_keep_turns: int | None = keep_turns  # the /trim the last call was sent with (None: off)
        self.listed_models: list[str] | None = None  # the server's names, once /model (or Tab after it) got them
        self.trim_words = trim_words  # the advice when the conversation is too long: /trim N, or nora ask's
        self.persona_words = persona_words  # the advice when the persona is: /system TEXT, or nora ask's --system
        self.notes_on_stderr = notes_on_stderr  # nora ask: stdout is the answer alone, a note on the model goes to stderr
        self.again_words = again_words  # after an empty reply: /retry, or nora ask's "run the command again"

    def say(self, text: str) -> None:
        """A line on stdout."""
        _write(self.out, text + "\n")

    def warn(self, text: str) -> None:
        """A line on stderr (failures, refusals)."""
        warn_line(text, self.err)

    # -- a turn ---------------------------------------------------------------

    def send(self, user_text: str) -> bool:
        """One turn: print the reply as it arrives; on failure one line on stderr.

        The history grows by a (user, assistant) pair, or stays exactly as it was.
        """
        before = list(self.history)
        started: list[str] = []  # pieces printed so far (for the "nora: " prefix and a cut-off reply)
        cancel = Cancel()  # set by Ctrl-C (from a watching thread): the embedded model stops inside a prompt read too
        waiting = self._wait_note(cancel)  # on a terminal: the seconds waited until the first words

        def on_text(piece: str) -> None:
            if not started:
                waiting()
                _write(self.out, self.prefix)
            started.append(piece)
            _write(self.out, piece)

        extra = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}  # passed on to create()
        unknown = self._model_unknown()  # the turn asks the server for its models again (conversation.py)
        called = CANCEL.set(cancel)
        try:
            result = safe_run_turn(
                self.client, self.history, user_text, model=self.model, temperature=self.temperature,
                keep_last_n_turns=self.keep_turns, on_text=on_text if self.stream else None, **extra,
            )
        except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
            self.history[:] = before
            result = None
        except Stopped:  # SIGTERM: nora chat is leaving; a half reply on screen says it was not kept
            self.history[:] = before
            waiting()
            if started:
                _write(self.out, " [reply dropped]\n")
            raise
        finally:
            CANCEL.reset(called)
            waiting()  # (a second time does nothing)
        if result is not None and result.ok:
            if self.stream:
                _write(self.out, "\n" if started else f"{self.prefix}\n")
            else:
                self.say(f"{self.prefix}{result}")
            if not result.strip():  # a bare 'nora: ' line read as a fault of nora's (a server can send no text)
                self.warn(f"(the reply was empty: the model sent no text; it is in the history as it came; "
                          f"{self.again_words})")
            self._autosave()
            self.last_sent = result.sent
            self.edited.clear()
            self.sent_persona = persona_only(self.history)  # /system since then: /retry says so
            self.sent_keep_turns = self.keep_turns  # and /trim
            if self.show_sent and result.sent is not None:
                self.say(self.sent_line(result.sent, len(before)))
            if unknown and not self._model_unknown():
                self._tell_model_known()
            return True
        if started:  # part of a reply is on screen but not in the history: say so
            _write(self.out, " [reply dropped]\n")
        self.last_failure = result.failure.kind if result is not None and result.failure else "cancelled"
        if self.last_failure == "cancelled" and not started:
            self._line_start()  # over the ^C the terminal echoed: '^C(error talking ...' read as one word
        if result is None:
            self.warn("(cancelled: the turn was rolled back)")
        else:
            not_found = CLI_MODEL_NOT_FOUND if self.model_from_command else CLI_NOT_FOUND
            self.warn(_cli_words(result.failure, self.url_named, self.trim_words, not_found, self.persona_words).line()
                      if result.failure else str(result))
        if unknown and not self._model_unknown():
            self._tell_model_known()
        return False

    def _wait_note(self, cancel: Cancel) -> Callable[[], None]:
        """Start saying how long the reply has been awaited, on its own line of the terminal, from
        WAIT_NOTE_AFTER seconds on (a shared server may be writing others' replies first); returns
        the call that stops it and clears the line.  Not on a pipe or a file: nothing is written there.
        Ctrl-C sets cancel (an in-process model then stops even inside a C call), on a pipe too."""
        stream = self.err if self.notes_on_stderr else self.out  # nora ask's stdout is the answer alone
        try:
            shown = stream.isatty()
        except (AttributeError, ValueError):  # closed, or not a real stream
            shown = False
        in_process = not getattr(self.client, "base_url", None)
        if not shown:
            return watch_ctrl_c(cancel.set, after=0.0) if in_process else (lambda: None)

        def room() -> int:  # asked each time: the window may be resized while the reply is awaited
            return max(1, _columns(stream) - 1)

        width = [0]
        pressed: list[bool] = []  # Ctrl-C was pressed and the call has not ended yet
        stopping = STOPPING[not in_process]
        lock = threading.Lock()  # the ticker's thread and the Ctrl-C watcher's both write the note

        def show(note: str, short: str) -> None:  # kept within the line: a wrapped note could not be written over
            with lock:
                fits = room()
                note = (note if len(note) <= fits else short)[:fits]  # short: how to give up, not why
                stream.write("\r" + note + " " * max(0, min(width[0], fits) - len(note)))  # over the last one
                stream.flush()
                width[0] = max(min(width[0], fits), len(note))

        def say(seconds: float) -> None:
            if pressed:
                show(stopping, STOPPING_SHORT)
            else:  # waiting_words(None, ...): without the reason, e.g. '(waiting 7 s. Ctrl-C gives up)'
                show(f"({waiting_words(self.client, seconds, 'Ctrl-C')})", f"({waiting_words(None, seconds, 'Ctrl-C')})")

        def heard_ctrl_c() -> None:  # the call goes on inside C code for now (the embedded model reading)
            cancel.set()  # which llama.cpp looks at between two steps of its computation (_abort.py)
            pressed.append(True)
            with lock:
                width[0] += 2  # the ^C the terminal echoed after the note, written over too
            show(stopping, STOPPING_SHORT)

        ticker = Ticker(say).start()
        unwatch = watch_ctrl_c(heard_ctrl_c)

        def done() -> None:
            unwatch()
            if ticker.stop() | bool(pressed) and width[0]:
                blank = " " * min(width[0], room())
                stream.write("\r" + blank + "\r")  # the line is blank again, the cursor at its start
                stream.flush()
                width[0] = 0

        return done

    def _line_start(self) -> None:
        """On a terminal, the cursor back to the start of its line (stderr's, where failures go)."""
        try:
            if self.err.isatty():
                self.err.write("\r")  # not through _write: that shows a \r as ^M
        except (AttributeError, ValueError, OSError):  # closed, or not a real stream
            pass

    def _model_unknown(self) -> bool:
        """Whether the default model is not known yet (the server had not answered when asked for its
        models) and this session would send it: the next turn asks the server again."""
        return self.model is None and getattr(self.client, "default_model_pending", None) is not None

    def _tell_model_known(self) -> None:
        """The server answered at last (before this turn, or /model): the line the start would have shown
        had it answered then; on a server that lists one model, which one it is.  nora ask (notes on
        stderr, its stdout the answer alone) says only what needs doing: choosing among several."""
        note = model_note(self.client, self.model)
        if note:
            (self.warn if self.notes_on_stderr else self.say)(f"({note})")
            return
        if self.notes_on_stderr:
            return
        listed = getattr(self.client, "listed_models", None) or []
        default = getattr(self.client, "default_model", None)
        why = "the one the server lists" if len(listed) == 1 else \
            "the default, which the server lists" if listed else "the default: the server lists no models"
        self.say(f"(model: {default}, {why})")

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
        """Run one slash command, e.g. '/trim 2'.  Unknown commands get one line, and so do words after a
        command that takes none ('/undo 2'), which then does nothing."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler = self._handlers().get(name.lower())
        if arg and name.lower() in TAKE_NOTHING:  # '/clear please' cleared, '/undo 2' took back one turn
            self.warn(f"({name} takes nothing after it, not {arg!r}: type {name} alone; nothing was done)")
        elif handler is None:
            self.warn(f"(unknown command {name}: type /help for the list)")
        else:
            handler(arg)

    def _handlers(self) -> dict[str, Callable[[str], None]]:
        """Each slash command's method (COMMANDS lists these names for Tab, and /quit and /exit)."""
        return {
            "/history": self._history,
            "/system": self._system,
            "/model": self._model,
            "/temperature": self._temperature,
            "/trim": self._trim,
            "/save": self._save,
            "/load": self._load,
            "/clear": self._clear,
            "/sent": self._sent,
            "/undo": self._undo,
            "/retry": self._retry,
            "/edit": self._edit,
            "/help": lambda _arg: self.say(help_text(min(79, _columns(self.out) - 1))),
        }

    def _history(self, _arg: str) -> None:
        sent = messages_to_send(self.history, None, self.keep_turns)
        self.say(json.dumps(sent, indent=2, ensure_ascii=False))
        if self.keep_turns is not None and len(sent) < len(self.history):  # trimmed (None sends all)
            self.say(f"(next call sends {len(sent)} of {len(self.history)} messages plus your new one: "
                     f"/trim {self.keep_turns} keeps the last {count_of(self.keep_turns, 'turn')})")
            left_out = set(dropped_indexes(self.history, sent))
            shown = [i for i in range(len(self.history)) if i not in left_out]
            self.say(f"(/edit N counts all {len(self.history)} messages from 0: these are {_numbers(shown) or 'none of them'})")
        elif not sent:
            self.say("(next call sends only your new message)")
        else:
            self.say(f"(next call sends {'this' if len(sent) == 1 else 'these'} {count_of(len(sent), 'message')} "
                     "plus your new one)")

    def _system(self, text: str) -> None:
        if text and (means_no_persona(text) or not unquote(text)):  # /system off, /system ""
            self._set_persona("")
            self.say("(system prompt removed: calls go without one)")
            return
        text = unquote(text)
        if not text:
            first = self.history[0] if self.history else None
            self.say(f"(system prompt: {first['content']!r})" if first and first["role"] == "system"
                     else "(no system prompt)")
            return
        self._set_persona(text)  # the leading one only: system messages further down stay
        self.say("(system prompt set: it goes first in every call from now on)")

    def _set_persona(self, text: str) -> None:
        """set_persona, and the numbers of the messages /edit rewrote follow their messages: a persona
        added or removed moves every other message one place.  Example: edited {1}, a persona added -> {2}"""
        count = len(self.history)
        set_persona(self.history, text)
        moved = len(self.history) - count  # +1, -1 or 0
        self.edited = {i + moved for i in self.edited if i + moved >= 0}  # a persona removed: its edit goes too

    def _model(self, arg: str) -> None:
        """/model: which model the next call asks for.  The conversation is the list, so another
        model gets it all: nothing is sent now, and the history is not touched."""
        local = getattr(self.client, "backend", None) == "local"
        if not arg:
            asked = self._model_unknown()
            if asked:
                self._server_names()  # the server is asked again: its answer may name the model
                if self._model_unknown():
                    fallback = getattr(self.client, "default_model", None)
                    self.say(f"(model: {not_known_yet(fallback)}; /model NAME asks for one by name)")
                    return
            default = getattr(self.client, "default_model", None)
            used = model_used(self.client, self.model)
            if local:
                self.say(f"(model: {used}, the embedded model: it answers as itself whatever name is sent)")
            elif self.model is None or self.model == default:
                self.say(f"(model: {used}, the default; /model NAME asks for another from the next call on)")
            else:
                self.say(f"(model: {self.model}; /model default goes back to {default})")
            note = model_note(self.client, self.model) if asked else ""  # what the start would have said
            if note:
                self.say(f"({note})")
            return
        name = None if arg.lower() == "default" else unquote(arg)  # /model "default": a model of that name
        if name and any(ch.isspace() for ch in name):  # /model "" is the default, as /system "" is no persona
            self.warn(f"(/model takes one model name, or default; not {redact(arg)!r})")
            return
        if name and looks_like_a_key(name):  # the key pasted where the name goes: not echoed, not sent as a name
            self.warn("(that looks like an API key, not a model name: the model is unchanged; "
                      "a key goes in OPENAI_API_KEY, never in a command)")
            return
        self.model = name or None
        self.model_from_command = self.model is not None
        listed = self._server_names()  # a server that had not answered is asked again: the default may be known now
        default = getattr(self.client, "default_model", None)
        sends = count_of(len(messages_to_send(self.history, None, self.keep_turns)), "message")
        now = self.model if self.model is not None else \
            f"the default ({not_known_yet(default)})" if self._model_unknown() else f"the default, {default},"
        self.say(f"(from the next call on, calls ask for {now} and send it the same list: {sends} plus your new one)")
        note = model_note(self.client, self.model, choose="/model NAME", listed=listed)
        if note:
            self.say(f"({note}; set anyway: a server may take names it does not list)" if not local
                     else f"({note})")

    def _server_names(self) -> list[str] | None:
        """The names the server lists, for /model's note and Tab: what make_client asked for at the start,
        else asked now (5 s at most, no retries, [] when the server does not say).  A list is kept for the
        session; no list (the server down at that moment) is not, so the next /model NAME or Tab asks again.
        A client whose server had not answered make_client is asked through its own hook
        (default_model_pending), so an answer also settles its default model for the turns.
        None for the embedded model and the scripted stand-in (no server)."""
        if not self.listed_models:
            pending = getattr(self.client, "default_model_pending", None)
            if pending is not None:
                pending()  # one GET /models; an answer sets the client's listed_models and default_model
            asked = getattr(self.client, "listed_models", None)
            base_url = getattr(self.client, "base_url", None)
            if asked:
                self.listed_models = list(asked)
            elif getattr(self.client, "backend", None) == "local" or base_url is None or \
                    not hasattr(self.client, "models"):
                return None
            elif pending is not None:  # asked just now: once is enough
                self.listed_models = []
            else:
                self.listed_models = _listed_models(self.client, str(base_url))
        return self.listed_models

    def tab(self, text: str, line: str) -> list[str]:
        """What Tab offers (completions): after /model, the names the server lists, asked on the
        first Tab there (as /model asks: 5 s at most; kept once the server gave them, asked again on a
        later Tab while it has not) and never for any other Tab.
        Example: against Ollama with llama3.2 and qwen2.5, tab("q", "/model q") -> ['qwen2.5']"""
        return completions(text, line, self._server_names() if _after_model(text, line) else None)

    def _temperature(self, arg: str) -> None:
        if not arg:
            self.say(f"(temperature: {self.temperature:g}; 0 = repeatable, higher = more varied, up to 2)")
            return
        problem = temperature_problem(arg, "/temperature")
        if problem:
            self.warn(f"({problem})")
            return
        self.temperature = float(arg) + 0.0  # + 0.0: '-0' is 0
        self.say(f"(temperature: {self.temperature:g} from the next call on)")

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
        path = unquote(path) or self.save_path or ""
        if not path:
            self.warn("(/save needs a file name, e.g. /save chat.json)")
        else:
            self.save(path)

    def _load(self, path: str) -> None:
        path = unquote(path)
        if not path:
            self.warn("(/load needs a file name, e.g. /load chat.json)")
            return
        try:
            messages, _meta = load_transcript(path)
        except TranscriptError as exc:
            self.warn(f"({exc}; the conversation is unchanged)")
            return
        self.history[:] = messages
        self.edited.clear()  # numbers of the conversation gone
        self.sent_persona = None  # and the calls it was sent with
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
        again = messages_to_send(self.history, removed[0]["content"], self.keep_turns)
        replied = len(removed) > 1  # a loaded transcript may end on a message with no reply yet
        why = "the model has no memory of its last answer" if replied else "your last message has no reply yet"
        # /edit since the last call of a message this call sends again (the retried one included; not the
        # reply it drops), or /system: the list is not the same as when that message was sent.  (/model and
        # /temperature change how it is asked, not the messages: those are the same.)
        # /trim since then: the turns it sends now against the turns the last call's /trim sends of this list
        changes = ["as edited"] if any(i <= len(self.history) for i in self.edited) else []
        if self.sent_persona is not None and persona_only(self.history) != self.sent_persona and 0 not in self.edited:
            changes.append("with the system prompt changed")
        turns = _earlier_turns(again)
        turns_then = turns if self.sent_persona is None else \
            _earlier_turns(messages_to_send(self.history, removed[0]["content"], self.sent_keep_turns))
        if turns != turns_then:
            now = "trimming off" if self.keep_turns is None else f"/trim {self.keep_turns}"
            changes.append("with /trim changed")
            self.say(f"(sending {count_of(len(again), 'message')}, {' and '.join(changes)} since the last call "
                     f"({now} sends {count_of(turns, 'earlier turn') if turns else 'no earlier turn'}, "
                     f"not {turns_then}): {why})")
        else:
            self.say(f"(sending the {count_of(len(again), 'message')} again, {' and '.join(changes)} since the last "
                     f"call: {why})" if changes else f"(sending the same {count_of(len(again), 'message')} again: {why})")
        if not self.send(removed[0]["content"]):
            self.history.extend(removed)  # the retry was rolled back: the earlier reply stays
            self.say("(the earlier reply is kept)" if replied else "(the conversation is as it was)")

    def _edit(self, arg: str) -> None:
        """/edit N TEXT: message N (counted from 0, as /history's list) gets TEXT, its role kept
        (conversation.edit_message); /edit N alone prints it whole, to copy (/edit N \"\"\", for text of
        several lines, is read by chat_loop and ends in edit()).  Nothing is sent now: the
        next call sends the list as edited, and the model, which remembers nothing, cannot tell.
        Example: after one turn, '/edit 2 We have none.' -> '(message 2 (assistant) now: "We have none.")'"""
        number, text = (arg.split(None, 1) + ["", ""])[:2]  # a tab after N separates as a space does
        if not number:
            self.warn("(/edit N TEXT gives message N the text TEXT (counted from 0, as /history lists them); "
                      f"/edit N {BLOCK} takes several lines; /edit N shows it; nothing was changed)")
            return
        if not text.strip():
            try:
                index = message_number(self.history, number)  # '/edit 03' shows message 3
            except NoraError as exc:
                self.warn(f"(/edit: {exc}; nothing was changed)")
                return
            message, number = self.history[index], str(index)
            lines = message["content"].count("\n") + 1  # several: pasted after /edit N TEXT, each line is a message
            how = f": /edit {number} TEXT replaces it" if lines == 1 else \
                f", {lines} lines: /edit {number} {BLOCK} replaces it with the lines up to a {BLOCK} line"
            self.say(f"(message {number}, {message['role']}{how})")
            self.say(message["content"])
            return
        self.edit(number, unquote(text.strip()))  # /edit 2 "Yes." as /system's quotes

    def edit_refused(self, number: str) -> bool:
        """Whether /edit N would be refused for its number (said in one line), checked before the
        \"\"\" block of /edit N \"\"\" is read.  Example: with 3 messages, edit_refused("9") -> True"""
        try:
            message_number(self.history, number)
        except NoraError as exc:
            self.warn(f"(/edit: {exc}; nothing was changed)")
            return True
        return False

    def edit(self, number: str, text: str) -> None:
        """Message `number` gets `text`, its role kept; one line says what changed (or why nothing did).
        /edit N TEXT and /edit N \"\"\" (the lines of a block, chat_loop) both end here.
        Example: after one turn, edit("2", "We have none.") -> '(message 2 (assistant) now: "We have none.")'"""
        try:
            index = message_number(self.history, number)
            old = edit_message(self.history, index, text)
        except NoraError as exc:
            self.warn(f"(/edit: {exc}; nothing was changed)")
            return
        self.edited.add(index)
        self._autosave()  # as after a turn: the --save file holds the conversation the next call sends
        sent = messages_to_send(self.history, None, self.keep_turns)
        left_out = index in dropped_indexes(self.history, sent)
        note = f"; /trim {self.keep_turns} leaves it out of the next call" if left_out else ""
        self.say(f'(message {index} ({old["role"]}) now: "{clip(self.history[index]["content"], 50)}"{note})')

    def _clear(self, _arg: str) -> None:
        """/clear: the persona (a leading system message) is kept, everything else goes, a system message
        further down included: kept, it would become the persona (trim_history keeps every system message).
        Example: [user, assistant, system "Be brief.", user, assistant] -> [] ('there is no persona')"""
        persona = persona_only(self.history)
        dropped = len(self.history) - len(persona)
        self.history[:] = persona
        self.edited.clear()
        kept = "the persona is kept" if persona else "there is no persona, so nothing is kept"
        self.say(f"(cleared {count_of(dropped, 'message')}; {kept})")


def _numbers(indexes: list[int]) -> str:
    """Positions in the list as runs.  Example: _numbers([0, 5, 6, 7]) -> '0 and 5-7'; _numbers([0, 3]) -> '0 and 3'"""
    runs: list[str] = []
    for i in indexes:
        if runs and runs[-1].split("-")[-1] == str(i - 1):
            runs[-1] = f"{runs[-1].split('-')[0]}-{i}"
        else:
            runs.append(str(i))
    return ", ".join(runs[:-1]) + f" and {runs[-1]}" if len(runs) > 1 else "".join(runs)


# --------------------------------------------------------------------------- #
# the loop (a line itself is read by _line_input.py; Tab and readline are _completion.py)


def chat_loop(session: ChatSession, interactive: bool) -> int:
    """Read, send, print until quit / exit / end of input.  Returns the exit status (0)."""
    pending: list[str] = []  # what a paste held after a block it closed: read before the keyboard
    hold = interactive and _type_ahead_on()  # keys typed during a turn wait for the next prompt
    while True:
        try:
            line = _next_line(interactive, pending)
            if line is None:
                return 0
            text = line.strip()
            first, newline, rest = line.partition("\n")
            edit = _block_edit(first)  # '/edit 2 """': the block's lines are message 2's new text
            if newline and (first.strip() == BLOCK or edit):  # a pasted block: its opening line, lines, closing line?
                if rest:
                    pending.insert(0, rest)
                text = first.strip()
            if edit:
                refused = session.edit_refused(edit)
                if refused and interactive and not pending:
                    continue  # said before a line of the block is typed
                # refused, piped or pasted: the block's lines are there, so they are read (and not sent)
                number = None if refused else message_number(session.history, edit)  # '02': message 2
                said = ("nothing was changed",) * 2 if number is None else \
                    (f"message {number} was not changed", f"message {number} is unchanged")
                block = _block(session, interactive, pending, *said)
                if block and not refused:
                    with held_keys(hold):
                        session.edit(edit, block)
                continue
            if text == BLOCK:
                block = _block(session, interactive, pending, "the message of several lines was not sent",
                               "nothing sent", ended="that message was not sent")
                if block:
                    with held_keys(hold):
                        session.send(block)
                continue
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                return 0
            with held_keys(hold):
                if text.startswith("/") and not text.startswith("//"):
                    session.command(text)
                else:
                    session.send(line[line.index("/") + 1:] if text.startswith("//") else line)
        except KeyboardInterrupt:  # Ctrl-C at the prompt: not a way out, say what is
            _after_ctrl_c(interactive)
            session.warn("(Ctrl-C: type quit or press Ctrl-D to leave)")
        except EOFError:  # piped input ended inside a block (said by _block)
            return 0


def _block_edit(line: str) -> str | None:
    """The message number of a line that opens a block for /edit, else None.
    Example: _block_edit('/edit 2 \"\"\"') -> '2'; _block_edit('/edit 2 Yes.') -> None"""
    words = line.split()
    return words[1] if len(words) == 3 and words[0].lower() == "/edit" and words[2] == BLOCK else None


def _block(session: ChatSession, interactive: bool, pending: list[str], dropped: str, empty: str,
           ended: str | None = None) -> str | None:
    """The lines of a block, after its opening line, as one text; None when there is nothing to use, said
    in one line: Ctrl-C inside it (dropped), only blank lines (empty).  Piped input that ends inside it
    raises EOFError, said first (ended, else dropped): the session is over.
    Example: piped 'a', 'b', '\"\"\"' -> 'a\nb'; piped '  ', '\"\"\"' -> None (said: nothing between the lines)"""
    try:
        block = _read_block(interactive, pending)
    except KeyboardInterrupt:
        pending.clear()
        _after_ctrl_c(interactive)
        session.warn(f"(Ctrl-C: {dropped})")
        return None
    if block is None:
        session.warn(f"(input ended inside a {BLOCK} block: {ended or dropped})")
        raise EOFError
    if not block.strip():
        session.warn(f"(nothing between the {BLOCK} lines: {empty})")
        return None
    return block

