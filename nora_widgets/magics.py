"""The notebook extension: talk to the model from cells, and see the list behind it.

    %load_ext nora_widgets
    %%chat
    Do you have anything by Ursula K. Le Guin?

The cell body is the next user message of *one* conversation per notebook:
a plain list of {"role", "content"} dicts, persona first, the very list
``run_turn`` appends to.  Reach it from code with ``conversation()`` (or the
``nora_history`` name the extension puts in the notebook).  Every turn goes
through ``conversation.safe_run_turn``: this module only parses options and
shows things; it holds no turn logic of its own.

    %chat --temperature 0 --keep-turns 2     settings for the following turns
    %chat --show-sent                        after each reply, a line on what that call sent
    %chat history | wire | reset | undo | trim N | save FILE | load FILE | help
    %chat edit N TEXT                        rewrite message N (numbered as %chat history shows)
    %%chat edit N                            the same, with the cell's lines as the text

Failures (the server, the network, Ctrl-C) show one line and roll the turn
back; a mistyped option is one ``UsageError`` line.  No tracebacks.
"""

from __future__ import annotations

import argparse
import html
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display

from ._message_hints import closest
from ._sent_line import describe_sent
from ._terminal_text import clip, printable, unquote
from .clients import BACKENDS, describe_client, make_client, model_note, model_used
from .conversation import (
    DEFAULT_TEMPERATURE,
    ChatClient,
    dropped_indexes,
    edit_message,
    means_no_persona,
    message_number,
    messages_to_send,
    new_history,
    persona_only,
    safe_run_turn,
    set_persona,
    temperature_problem,
    trim_history,
    undo_turn,
    validate_history,
)
from .errors import HistoryError, NoraError, count_of, describe_failure, looks_like_a_key, redact
from .transcript import TranscriptError, load_transcript, save_transcript

__all__ = ["NotebookSession", "ChatMagics", "conversation", "session", "use_client",
           "load_ipython_extension", "unload_ipython_extension", "USER_NAME"]

MAGIC_TRIM = "send fewer turns: %chat --keep-turns N"  # (or on one cell's %%chat line: docs/magics.md)
MAGIC_TIMEOUT = "try again, or wait longer: %chat --timeout S"
MAGIC_NOT_FOUND = "check %chat --model and %chat --base-url (or OPENAI_BASE_URL)"
MAGIC_PERSONA = "shorten the persona: %chat --system TEXT"  # when the persona alone overflows the window
USER_NAME = "nora_history"  # the name the extension puts in the notebook's namespace
HISTORY_FIX = f"(fix or remove it in {USER_NAME}, or start over with %chat reset)"  # after a bad item, named
COMMANDS = ("history", "wire", "reset", "undo", "trim", "save", "load", "edit", "help")


# --------------------------------------------------------------------------- #
# the state: one conversation and its settings


@dataclass
class NotebookSession:
    """The notebook's conversation plus the settings the next turn uses.

    history is edited in place (reset/load use ``history[:] = ...``) so any
    reference a learner holds stays the live list.
    Example: NotebookSession().history -> [{'role': 'system', 'content': SYSTEM_PROMPT}]
    """

    history: list = field(default_factory=new_history)  # [{"role", "content"}, ...], system first
    backend: str = "auto"            # what make_client builds: auto | local | openai | scripted
    client: Any = None               # built on first use, or given with use_client()
    model: str | None = None         # None: the client's own default model
    temperature: float = DEFAULT_TEMPERATURE
    keep_turns: int | None = None    # None: send the whole history
    stream: bool = True
    display: str = "auto"            # auto | rich (display handle) | text (print pieces)
    base_url: str | None = None
    timeout: float | None = None
    max_retries: int | None = None
    update_every: float = 0.1        # seconds between refreshes of a streaming reply
    show_sent: bool = False          # after each reply, a line saying what that call sent

    def build_client(self, ask_models: bool = True) -> Any:
        """A fresh client for these settings (raises NoraError with one line).  The model name is
        not built in: each turn sends self.model, else the client's own default (NORA_MODEL, the
        one model a server lists...), so `%chat --model ''` goes back to that default.
        ask_models: whether a server is asked for its models now (see make_client)."""
        return make_client(self.backend, base_url=self.base_url, timeout=self.timeout, ask_models=ask_models,
                           max_retries=self.max_retries, base_url_name="--base-url")  # set by %chat --base-url only

    def get_client(self) -> Any:
        """The client, built lazily: the embedded model loads only when a turn needs it.  Built for the
        turn about to be sent, so a server's models are asked for once, by that turn, not here too."""
        if self.client is None:
            self.client = self.build_client(ask_models=False)
        return self.client

    def describe(self) -> str:
        """One line: backend, model, temperature, trimming, streaming, the line on what was sent."""
        who = describe_client(self.client) if self.client is not None else \
            f"{self.backend} (connects on the first %%chat)"
        keep = "all" if self.keep_turns is None else str(self.keep_turns)
        model = f" | model: {self.model}" if self.model else ""  # else the client's own default
        note = model_note(self.client, self.model, choose="%chat --model")
        if note:
            model += f" ({note})"
        return (f"backend: {who}{model} | temperature: {self.temperature:g} | keep-turns: {keep} | "
                f"stream: {'on' if self.stream else 'off'} | show-sent: {'on' if self.show_sent else 'off'}")


_SESSION = NotebookSession()


def session() -> NotebookSession:
    """The notebook's NotebookSession: the conversation and the settings the next turn uses."""
    return _SESSION


def conversation() -> list:
    """The live messages list the magics send and extend.

    Example: %%chat Hello  ->  conversation()[-2:] == [{'role': 'user', ...}, {'role': 'assistant', ...}]
    """
    return _SESSION.history


def use_client(client: ChatClient) -> None:
    """Make every following %%chat use this client (e.g. a ScriptedClient for a lesson).

    Returns None, so a cell ending in use_client(...) shows nothing (a repr with a
    memory address would differ on every run and break nbval).
    Example: use_client(ScriptedClient(["Yes, two novels."]))
    """
    if not hasattr(getattr(client, "chat", None), "completions"):
        raise TypeError("use_client() needs an object with .chat.completions.create(...), like openai.OpenAI")
    _SESSION.client = client


# --------------------------------------------------------------------------- #
# options: parsed with argparse, every mistake becomes one UsageError line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit the kernel
        raise UsageError(f"{self.prog}: {message} (see %chat help)")  # as nora's: '(see nora chat --help)'

    def parse_known_args(self, args=None, namespace=None):  # parse_args calls it too
        try:
            return super().parse_known_args(args, namespace)
        except UsageError as exc:  # a value its type refused (--temperature 5): named as the rest, '%chat: ...'
            if str(exc).startswith(f"{self.prog}:"):
                raise
            raise UsageError(f"{self.prog}: {exc}") from None


def _temperature(raw: str) -> float:
    problem = temperature_problem(raw, "--temperature")
    if problem:
        raise UsageError(problem)
    return float(raw)


def _is_whole(raw: str) -> bool:
    """Example: _is_whole("12") -> True; _is_whole("\u00b2") -> False ('²' is a digit to isdigit(), not to int())"""
    return raw.isascii() and raw.isdigit()


def _keep_turns(raw: str) -> int | None:
    if raw.lower() in ("all", "none"):
        return None
    if not _is_whole(raw):
        raise UsageError(f"--keep-turns must be a whole number >= 0, or 'all' (got {raw!r})")
    return int(raw)


def _positive(name: str, kind: type):
    """--timeout (float) and --max-retries (int), in nora chat's words for the same flags.
    Example: _positive("timeout", float)("0") raises UsageError("--timeout must be more than 0 seconds (got '0')")"""
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            what = "a number of seconds" if kind is float else "a whole number"
            raise UsageError(f"--{name} must be {what} (got {raw!r})") from None
        if kind is int and value < 0:
            raise UsageError(f"--{name} must be 0 or more (got {raw!r})")
        if kind is float and not value > 0:  # written so that nan is refused too
            raise UsageError(f"--{name} must be more than 0 seconds (got {raw!r})")
        if kind is float and value == float("inf"):  # httpx cannot wait forever: every call would fail
            raise UsageError(f"--{name} must be a finite number of seconds (got {raw!r})")
        return value
    return parse


def _turn_options(parser: argparse.ArgumentParser) -> None:
    """Options that make sense for one turn (on a %%chat line) and as settings (on %chat)."""
    parser.add_argument("--temperature", type=_temperature)
    parser.add_argument("--model")
    parser.add_argument("--keep-turns", type=_keep_turns, default=argparse.SUPPRESS)
    parser.add_argument("--stream", dest="stream", action="store_true", default=None)
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    parser.add_argument("--show-sent", dest="show_sent", action="store_true", default=None)
    parser.add_argument("--no-show-sent", dest="show_sent", action="store_false")


def _cell_parser() -> _Parser:
    parser = _Parser(prog="%%chat", add_help=False, allow_abbrev=False)
    parser.add_argument("--amnesia", action="store_true")
    _turn_options(parser)
    return parser


SETTINGS_ONLY = ("--system", "--backend", "--base-url", "--timeout", "--max-retries", "--display")  # %chat only


def _cell_options(line: str) -> argparse.Namespace:
    """The options on a %%chat line, or one UsageError line saying where what is there belongs.
    Example: _cell_options('--system "Be brief."') raises UsageError("%%chat: --system is a setting ...")"""
    words = _split(line, "%%chat")
    for i, word in enumerate(words):
        name = word.split("=", 1)[0]
        if name in SETTINGS_ONLY:  # say the line to run, with the value as typed
            value = words[i + 1:i + 2] if "=" not in word else []
            typed = shlex.join([word, *value]) if "=" in word or value and not value[0].startswith("--") \
                else f"{name} ..."
            raise UsageError(f"%%chat: {name} is a setting for all following turns: run %chat {typed} "
                             f"in a cell of its own")
        if name in ("-h", "--help"):
            raise UsageError("%%chat: for help run %chat help in a cell of its own")
    opts, extra = _cell_parser().parse_known_args(words)
    if extra:  # words that are not options: most often the message, typed on the %%chat line
        if any(w.startswith("-") for w in extra):
            raise UsageError(f"%%chat: unrecognized arguments: {' '.join(extra)} (see %chat help)")
        raise UsageError(f"%%chat: {' '.join(extra)!r} is not an option: write your message in the cell, "
                         f"on the lines under %%chat (a # comment there is sent too)")
    keep = getattr(opts, "keep_turns", 0)
    if opts.amnesia and keep != 0:
        given = "all" if keep is None else keep
        raise UsageError(f"%%chat: --amnesia sends no earlier turns and --keep-turns {given} sends "
                         f"{'all of them' if keep is None else 'the last ' + count_of(keep, 'turn')}: give one of them")
    return opts


def _line_parser() -> _Parser:
    parser = _Parser(prog="%chat", add_help=False, allow_abbrev=False)
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--system")
    parser.add_argument("--backend", choices=BACKENDS)
    parser.add_argument("--base-url")
    parser.add_argument("--timeout", type=_positive("timeout", float))
    parser.add_argument("--max-retries", type=_positive("max-retries", int))
    parser.add_argument("--display", choices=("auto", "rich", "text"))
    parser.add_argument("--amnesia", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    _turn_options(parser)
    return parser


def _split(line: str, prog: str = "%chat") -> list[str]:
    r"""The words of a magic's line: quotes group words, and a backslash is a character, kept as typed
    (shlex.split's POSIX rules read it as an escape: C:\Users\x\chat.json became C:Usersxchat.json).
    Example: _split(r'save "C:\my chats\a.json"') -> ['save', 'C:\\my chats\\a.json']"""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True  # words end at spaces only, as shlex.split's do
    lexer.commenters = ""  # a '#' is a word: '%chat # note' is refused as a command, not read as nothing
    lexer.escape = ""  # no escape character at all, in quotes or out
    try:
        return list(lexer)
    except ValueError as exc:  # e.g. "No closing quotation"
        example = '--system "Be brief."' if prog == "%chat" else '--model "my model"'
        raise UsageError(f"{prog}: {exc} (quote text with spaces: {example})") from None


# --------------------------------------------------------------------------- #
# showing things: every output has a deterministic text/plain (nbval compares it)


def _show(plain: str, html_body: str | None = None) -> None:
    """Display text/plain (and text/html when given); a terminal prints the text/plain, so its control
    characters are shown, not obeyed (a reply's escape sequences, as in nora chat)."""
    data = {"text/plain": printable(plain)}
    if html_body is not None:
        data["text/html"] = html_body
    display(data, raw=True)


def _show_failure(line: str) -> None:
    """The failure line in the panel's red (render.ERROR_COLOUR: the theme's, so it stays readable in the dark theme)."""
    from .render import ERROR_COLOUR

    _show(line, f'<div class="nora-error" style="color:{ERROR_COLOUR};font-family:monospace">{html.escape(line)}</div>')


def _show_sent(line: str) -> None:
    from .render import MUTED

    _show(line, f'<div class="nora-sent" style="color:{MUTED};font-size:0.85em">{html.escape(line)}</div>')


def _reply_html(text: str) -> str:
    from .render import markdown_to_html, role_chip_html

    return f'<div class="nora-reply">{role_chip_html("assistant")}{markdown_to_html(text)}</div>'


class _ReplyView:
    """Where a reply appears as it arrives.

    rich (a notebook): a display handle refreshed with rendered markdown; when the
    reply is complete it is emptied and the final reply is displayed once, so a
    re-run (nbval) sees the same outputs as the saved notebook.
    text (terminal IPython): pieces are printed as they come; a reply that fails part-way
    ends with " [reply dropped]", as in nora chat (what is on screen is not in the history).
    """

    def __init__(self, rich: bool, update_every: float) -> None:
        self.rich, self.update_every = rich, update_every
        self.pieces: list[str] = []
        self.handle: Any = None  # IPython's DisplayHandle, once the first piece is shown
        self.last_update = 0.0

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        if not self.rich:
            print(printable(piece), end="", flush=True)
            return
        if self.handle is None:
            self.handle = display({"text/plain": ""}, raw=True, display_id=True)
        now = time.monotonic()
        if now - self.last_update >= self.update_every:
            so_far = "".join(self.pieces)
            self.handle.update({"text/plain": printable(so_far), "text/html": _reply_html(so_far + " \u258d")}, raw=True)
            self.last_update = now

    def finish(self, result: str, ok: bool, url_named: str = "OPENAI_BASE_URL") -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)  # back to the placeholder it started as
        if not self.rich and self.pieces:
            print("" if ok else " [reply dropped]")  # end the streamed line; a failed one says it was not kept
            if ok:
                return
        failed = getattr(result, "failure", None)  # a TurnResult's Failure; a plain str has none
        if ok:
            _show(str(result), _reply_html(result))
        elif failed is not None:
            not_found = MAGIC_NOT_FOUND if url_named == "OPENAI_BASE_URL" else "check %chat --model and %chat --base-url"
            failure = failed.in_words_of(MAGIC_TRIM, MAGIC_TIMEOUT, not_found, MAGIC_PERSONA)
            _show_failure(failure.with_url_named(url_named).line())
        else:
            _show_failure(str(result))


def _token_counts(messages: list, client: Any, model: str | None):
    """nora_widgets.tokens.count_tokens, or None when it is missing or fails (counts are a bonus)."""
    try:
        from .tokens import count_tokens

        return count_tokens(messages, client=client, model=model)
    except Exception:  # noqa: BLE001 - no counts is better than no history
        return None


def history_view(s: NotebookSession) -> tuple[str, str]:
    """(text/plain, text/html) of the history, marking what the next call will not send.

    Example first line: '3 messages, 3 sent on the next call (keep-turns: all), 61 tokens before your next message'
    """
    history = s.history
    sent = messages_to_send(history, None, s.keep_turns)
    dropped = set(dropped_indexes(history, sent))
    counts = _token_counts(history, s.client, s.model)
    sent_count = _token_counts(sent, s.client, s.model)  # its total adds the reply primer
    per = list(counts.per_message) if counts is not None else None
    keep = "all" if s.keep_turns is None else str(s.keep_turns)
    head = f"{count_of(len(history), 'message')}, {len(sent)} sent on the next call (keep-turns: {keep})"
    notes = []
    if per is not None and sent_count is not None:
        head += f", {sent_count.total:,} tokens before your next message"
        how = "exact" if counts.exact else "an estimate"
        method = counts.method.removeprefix("estimate: ").removeprefix("exact: ")
        notes.append(f"token counts are {how} ({method})")
    lines = [head, *notes, f"{'#':>3}  {'role':<9}  {'tokens':>6}  content"]
    for i, m in enumerate(history):
        n = "" if per is None or i >= len(per) or per[i] is None else f"{per[i]:,}"
        mark = "  (not sent)" if i in dropped else ""
        lines.append(f"{i:>3}  {m['role']:<9}  {n:>6}  {clip(m['content'])}{mark}")
    from .render import MUTED, messages_table_html

    table = messages_table_html(history, token_counts=per, dimmed=dropped, caption=head, max_chars=2000)
    note_html = "".join(f'<div class="nora-note" style="color:{MUTED};font-size:0.85em">{html.escape(n)}</div>'
                        for n in notes)
    return "\n".join(lines), table + note_html


def wire_view(client: Any) -> str:
    """The last request as sent (HTTP line, masked key, JSON body), or why there is none.

    Only the authorization header: text/plain must not change between openai versions
    (nbval compares it), and the user-agent names the version.
    Example first line: 'in-process call: client.chat.completions.create(**body) (no HTTP)'
    """
    wire = getattr(client, "wire", None)
    last = getattr(wire, "last", None)
    if client is None or last is None:
        return "no request sent yet: run a %%chat cell first" if wire is not None or client is None \
            else "this client does not record its requests"
    from .render import wire_sections

    sections = wire_sections(last, headers=("authorization",))  # the same sections the wire view draws
    return "\n\n".join("\n".join(part for part in section if part) for section in sections)


# --------------------------------------------------------------------------- #
# the magics


USAGE = """\
%%chat [--amnesia] [--temperature T] [--model NAME] [--keep-turns N] [--no-stream] [--show-sent]
    the cell is your next message; these options apply to this turn only
    (--amnesia: send only the persona and this message, no history)
%chat [options]    settings for the following turns:
    --system TEXT  persona (replaces the system message; --system off: none)   --temperature T (0-2)
    --model NAME   --backend {auto,local,openai,scripted}   --base-url URL
    --keep-turns N|all  send only the last N turns         --timeout S  --max-retries N
    --stream / --no-stream   --display {auto,rich,text}
    --show-sent / --no-show-sent   after each reply, a line on what that call sent
%chat history      the messages list as it will be sent next (with token counts)
%chat wire         the last request exactly as sent (key masked)
%chat reset        forget the turns, keep the persona      %chat trim N   keep the last N turns
%chat undo         take back the last turn (then run a %%chat cell again to ask it again)
%chat edit N TEXT  rewrite message N (the # of %chat history; 0 is the persona), its role kept:
    the next turn sends the edited list; %chat edit N shows the message whole
%%chat edit N      the cell under the line (several lines) is message N's new text
%chat save FILE    %chat load FILE   (the same JSON as `nora chat --save` and the panel)
%chat save FILE.md  the conversation as Markdown, to read and hand out (it does not load back)
From code: nora_widgets.magics.conversation() is the list; use_client(client) picks the client."""


@magics_class
class ChatMagics(Magics):
    """%chat (settings and views) and %%chat (one turn); state lives in NotebookSession."""

    @no_var_expand  # the text is sent as typed: "$5" and "{x}" stay literal
    @line_cell_magic
    def chat(self, line: str, cell: str | None = None) -> None:
        try:
            if cell is None:
                self._line(line)
            elif [w.lower() for w in line.split()[:1]] == ["edit"]:  # %%chat edit N: the cell is message N's new text
                self._cell_edit(line.split()[1:], cell)
            else:
                self._turn(line, cell)
        except UsageError as exc:  # a refusal quotes the word it got: a key pasted there ('%chat edit sk-...')
            said = str(exc)        # would stay in the cell's output, which the notebook saves
            if redact(said) != said:
                raise UsageError(redact(said)) from None
            raise

    # -- %%chat: one turn ------------------------------------------------- #

    def _turn(self, line: str, cell: str) -> None:
        s = _SESSION
        opts = _cell_options(line)
        text = cell.strip()
        if not text:
            raise UsageError("%%chat: nothing to send: write your message in the cell under %%chat")
        keep = 0 if opts.amnesia else getattr(opts, "keep_turns", s.keep_turns)
        stream = s.stream if opts.stream is None else opts.stream
        try:
            client = s.get_client()
        except NoraError as exc:  # e.g. no key and no embedded model: say how to get one
            _show_failure(describe_failure(exc).line())
            return
        view = _ReplyView(self._rich(), s.update_every)
        before = list(s.history)  # what trimming could leave out, for the line on what was sent
        model = opts.model or s.model
        result = safe_run_turn(
            client, s.history, text,
            model=model,
            temperature=s.temperature if opts.temperature is None else opts.temperature,
            keep_last_n_turns=keep,
            on_text=view.add if stream else None,
        )
        if result.failure is not None and result.failure.kind == "bad_input":
            raise UsageError(f"%%chat: {result.failure.message} {HISTORY_FIX}")  # a hand-edited list that broke
        view.finish(result, result.ok, _url_named(s))
        show_sent = s.show_sent if opts.show_sent is None else opts.show_sent
        if show_sent and result.ok and result.sent is not None:
            trim = "--amnesia" if opts.amnesia else "--keep-turns {n}"
            _show_sent(describe_sent(result.sent, before, keep, trim, client, model))

    def _rich(self) -> bool:
        if _SESSION.display != "auto":
            return _SESSION.display == "rich"
        return getattr(self.shell, "kernel", None) is not None  # a Jupyter kernel, not a terminal

    # -- %chat: settings and views ---------------------------------------- #

    def _line(self, line: str) -> None:
        s = _SESSION
        first, rest = (line.split(None, 1) + ["", ""])[:2]
        if first.lower() == "edit":  # the text as typed: quotes and apostrophes are part of it, not shell words
            self._cmd_edit(rest.strip())
            return
        opts = _line_parser().parse_args(_split(line))
        if opts.amnesia:
            raise UsageError("%chat: --amnesia is for one turn: put it on the %%chat line of that cell")
        if opts.command is not None:  # a mistyped command changes no setting given with it on the line
            opts.command = _check_command(opts.command, opts.args)
        changed = self._apply_settings(opts)
        command = opts.command or ("help" if opts.help or not changed else None)
        if command is None:
            line = "settings: " + s.describe()
            if opts.system is not None:  # say what became of the persona: the settings line does not show it
                line = ("persona: none, calls go without a system message" if not s.history or
                        s.history[0].get("role") != "system" else "persona: set, first in every call") + " | " + line
            _show(line)
            return
        if command in ("history", "trim", "help", "save", "undo"):
            _check_history(command)
        getattr(self, f"_cmd_{command}")(*opts.args)

    def _apply_settings(self, opts: argparse.Namespace) -> bool:
        """Apply the options given; True if any was.  A new client is built right away when
        its settings change, so a bad --backend/--base-url shows its error on this line."""
        s = _SESSION
        given = {k: v for k, v in vars(opts).items()
                 if k not in ("command", "args", "help", "amnesia") and (v is not None or k == "keep_turns")}
        changed = bool(given)
        if "system" in given and means_no_persona(given["system"]):
            given["system"] = None  # --system off or '': no persona, as /system off in nora chat
        if "system" in given:
            _check_history("--system")
        if "model" in given and not given["model"].strip():
            given["model"] = None  # back to the client's own default
        elif "model" in given and looks_like_a_key(given["model"].strip()):  # the key, pasted there
            raise UsageError("%chat: --model got what looks like an API key, not a model name: nothing was changed "
                             "(delete it from the cell; a key goes in OPENAI_API_KEY)")
        if given.get("backend") in ("local", "scripted") and "base_url" not in given:
            given["base_url"] = None  # an earlier --base-url was for a server: not for this backend
        rebuild: dict[str, Any] = {k: given[k] for k in ("backend", "base_url", "timeout", "max_retries") if k in given}
        if rebuild:
            trial = NotebookSession(**{**vars(s), **rebuild})
            try:  # build first: a bad setting leaves the working client in place
                s.client = trial.build_client()
            except NoraError as exc:
                raise UsageError(f"%chat: {describe_failure(exc).message}") from None
        if "system" in given:
            set_persona(s.history, given.pop("system"))  # a new dict: copies saved earlier keep the old persona
        for key, value in given.items():
            setattr(s, key, value)
        return changed

    def _cmd_help(self) -> None:
        s = _SESSION
        turns = sum(1 for m in s.history if m["role"] == "user")
        size = f"{count_of(len(s.history), 'message')}, {count_of(turns, 'turn')}"
        _show(f"{USAGE}\n\nnow: {s.describe()}\nconversation: {size} "
              f"(nora_widgets.magics.conversation(), or {USER_NAME} in this notebook)")

    def _cmd_history(self) -> None:
        _show(*history_view(_SESSION))

    def _cmd_edit(self, rest: str) -> None:
        """%chat edit N TEXT: message N (the # of %chat history) gets TEXT, its role kept
        (conversation.edit_message); %chat edit N alone shows it whole.  Nothing is sent now: the next
        %%chat sends the list as edited, and the model, which remembers nothing, cannot tell."""
        number, text = (rest.split(None, 1) + ["", ""])[:2]
        if not number:
            raise UsageError("%chat edit: takes N TEXT, the number of a message (the # of %chat history) and its "
                             "new text, e.g. %chat edit 2 We have none.; %chat edit N shows message N")
        _check_history("edit")
        history = _SESSION.history
        given = text.strip()
        text = unquote(given)  # one pair of surrounding quotes, as nora chat's /edit
        if not given:
            try:
                index = message_number(history, number)  # '%chat edit 02' shows message 2
            except NoraError as exc:
                raise UsageError(f"%chat edit: {exc}; nothing was changed") from None
            message = history[index]
            how = f"%chat edit {index} TEXT" if "\n" not in message["content"] else \
                f"a cell of %%chat edit {index} (the lines under it)"
            _show(f"message {index} ({message['role']}): {how} replaces it\n{message['content']}")
            return
        self._edit(number, text, "%chat edit")

    def _cell_edit(self, words: list[str], cell: str) -> None:
        """%%chat edit N: the cell under the line is message N's new text, its lines as they are (the
        text of several lines that %chat edit N TEXT cannot take), trimmed as a %%chat cell is.
        Example: a cell '%%chat edit 2' over 'We have none.\nTry the library.' -> message 2 has both lines"""
        if len(words) != 1:
            raise UsageError("%%chat edit: takes N alone on its line, the number of a message (the # of "
                             "%chat history); the lines under it are its new text")
        _check_history("edit")
        self._edit(words[0], cell, "%%chat edit")  # trimmed at both ends by edit_message, as every edit is

    def _edit(self, number: str, text: str, name: str) -> None:
        """Message `number` gets `text` (conversation.edit_message), said in one line; a refusal is one UsageError."""
        history = _SESSION.history
        try:
            index = message_number(history, number)
            old = edit_message(history, index, text)
        except NoraError as exc:
            raise UsageError(f"{name}: {exc}; nothing was changed") from None
        s = _SESSION
        sent = messages_to_send(history, None, s.keep_turns)
        note = f"; --keep-turns {s.keep_turns} leaves it out of the next call" \
            if index in dropped_indexes(history, sent) else ""
        _show(f'message {index} ({old["role"]}) now: "{clip(history[index]["content"], 50)}"{note}')

    def _cmd_wire(self) -> None:
        s = _SESSION
        text = wire_view(s.client)
        if text.startswith("no request sent yet") and any(isinstance(m, dict) and m.get("role") == "assistant"
                                                          for m in s.history):
            text = ("no request sent yet by this client (a new one is built when --backend, --base-url, "
                    "--timeout or --max-retries change): run a %%chat cell")
        _show(text, f'<pre class="nora-wire">{html.escape(text)}</pre>')

    def _cmd_reset(self) -> None:
        history = _SESSION.history
        usable = [m for m in history if _is_message(m)]  # reset is how a broken list is mended
        dropped = len(history) - len(usable)
        history[:] = persona_only(usable)  # one further down, kept, would become the persona
        note = f"; dropped {count_of(dropped, 'item')} that {'was' if dropped == 1 else 'were'} not messages" \
            if dropped else ""
        kept = "kept the persona" if history else "there is no persona"
        _show(f"conversation reset: {kept} ({count_of(len(history), 'message')}){note}")

    def _cmd_undo(self) -> None:
        history = _SESSION.history
        removed = undo_turn(history)
        if not removed:
            _show("nothing to undo: no message of yours in the conversation")
            return
        more = len(removed) - 1  # what came after your message: none (no reply yet), the reply, or more
        after = "" if not more else " and its reply" if more == 1 else f" and {count_of(more, 'message')} after it"
        _show(f"took back your last message ({clip(removed[0]['content'], 40)!r}){after}: "
              f"{count_of(len(history), 'message')} left; the model never kept it")

    def _cmd_trim(self, raw: str) -> None:
        n = int(raw)  # checked by _check_command
        history = _SESSION.history
        before = len(history)
        turns = sum(1 for m in history if m["role"] == "user")
        history[:] = trim_history(history, n)
        persona = "the persona and " if any(m["role"] == "system" for m in history) else ""
        if len(history) == before:  # "kept the last 5 turns" of a list with 1 would claim turns that are not there
            _show(f"nothing to trim: the conversation has {count_of(turns, 'turn')}, not more than {n} "
                  f"({count_of(before, 'message')})")
            return
        _show(f"trimmed: kept {persona}the last {count_of(n, 'turn')} ({before} -> {count_of(len(history), 'message')})")

    def _cmd_save(self, path: str) -> None:
        s = _SESSION
        model = model_used(s.client, s.model)
        try:
            saved = save_transcript(path, s.history, model=model, temperature=s.temperature)
        except TranscriptError as exc:
            raise UsageError(f"%chat save: {exc}") from None
        except OSError as exc:  # e.g. a read-only folder: the old file (if any) is untouched
            raise UsageError(f"%chat save: cannot write {path}: {exc.strerror or exc}") from None
        _show(f"saved {count_of(len(s.history), 'message')} to {saved}")

    def _cmd_load(self, path: str) -> None:
        try:
            messages, _meta = load_transcript(path)
        except TranscriptError as exc:
            raise UsageError(f"%chat load: {exc}") from None
        _SESSION.history[:] = messages  # same list object: references stay live
        turns = sum(1 for m in messages if m["role"] == "user")
        _show(f"loaded {count_of(len(messages), 'message')} ({count_of(turns, 'turn')}) from {path}")


def _command(typed: str) -> str:
    """The command meant, in any case; one UsageError line for a word that is none, naming the near miss.
    Example: _command("HISTORY") -> 'history'; _command("Hisotry") raises UsageError("... did you mean 'history'? ...")"""
    if typed.lower() in COMMANDS:
        return typed.lower()
    meant = closest(typed, COMMANDS)
    hint = f"did you mean {meant!r}? " if meant else ""
    raise UsageError(f"%chat: unknown command {typed!r} ({hint}use %%chat, two %, to send a message; "
                     f"commands: {', '.join(COMMANDS)})")


def _check_command(typed: str, args: list) -> str:
    """The command as COMMANDS names it, or one UsageError line for an unknown command, the wrong number of
    arguments or a trim N that is not a whole number, raised before any option on the same line is
    applied: "Nothing changes".
    Example: _check_command("Trim", ["2"]) -> 'trim'; _check_command("#", ["a"]) raises UsageError("%chat: unknown command '#' ...")"""
    command = _command(typed)
    if command == "edit":  # after an option: '%chat --temperature 0 edit 2 x' (the text would be split as words)
        raise UsageError("%chat edit: goes at the start of a line of its own: %chat edit N TEXT")
    wants_arg = command in ("trim", "save", "load")
    if len(args) != (1 if wants_arg else 0) or wants_arg and not args[0].strip():  # '' would name the folder
        need = ("N, the number of turns to keep (e.g. %chat trim 2)" if command == "trim"
                else "FILE (quote file names with spaces)" if wants_arg else "nothing")
        raise UsageError(f"%chat {command}: takes {need}")
    if command == "trim" and not _is_whole(args[0]):
        raise UsageError(f"%chat trim: N is the number of turns to keep, a whole number >= 0 (got {args[0]!r})")
    return command


def _url_named(s: NotebookSession) -> str:
    """How a failure's advice names the server's URL: the setting when %chat --base-url gave it, else the
    variable.  Example: a refused connection ends '- check %chat --base-url and your network'."""
    return "%chat --base-url" if s.base_url else "OPENAI_BASE_URL"


def _check_history(what: str) -> None:
    """A UsageError line naming the first bad item of the notebook's list (edited by hand)."""
    try:
        validate_history(_SESSION.history)
    except HistoryError as exc:
        raise UsageError(f"%chat {what}: {exc} {HISTORY_FIX}") from None


def _is_message(item: Any) -> bool:
    try:
        validate_history([item])
    except HistoryError:
        return False
    return True


# --------------------------------------------------------------------------- #
# the extension hooks (%load_ext nora_widgets / %unload_ext nora_widgets)


def load_ipython_extension(ipython: Any) -> None:
    """Register %chat / %%chat and put the conversation list in the namespace as nora_history."""
    ipython.register_magics(ChatMagics)
    ipython.push({USER_NAME: _SESSION.history})


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics (the conversation itself stays in conversation())."""
    magics = ipython.magics_manager.magics
    magics["line"].pop("chat", None)
    magics["cell"].pop("chat", None)
    ipython.magics_manager.registry.pop("ChatMagics", None)
    ipython.drop_by_id({USER_NAME: _SESSION.history})
