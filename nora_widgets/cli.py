"""`nora`: the reference article's command-line loop, grown up.

    nora chat                      talk to Nora (streamed replies, slash commands)
    nora ask "Do you have Dune?"   one question, one answer on stdout
    nora serve                     the embedded model as an OpenAI-compatible server
    nora models                    the model names --model can take on this backend

This file is the command line: the flags and one ``cmd_*`` function per command.
``nora chat``'s session (the slash commands, a turn, reading lines) is
``_chat_session.py``.  Every turn goes through ``conversation.safe_run_turn`` (the
one implementation of a turn), every client comes from ``clients.make_client``.
The conversation is the plain list ``history`` (system first, then user/assistant
pairs), resent on every call.

What the terminal shows is the same whether stdin is a keyboard or a pipe: with a
pipe, each line read is echoed as ``you: ...``, so a piped session's stdout reads
like the screen would.  Status lines are in (parentheses); failures go to stderr.

Exit status: 0 ok, 1 a call or a file failed, 2 bad command line or settings,
130 cancelled with Ctrl-C (``nora ask``; ``nora serve`` while the model loads; any command while it starts), 143 ``nora chat`` stopped by SIGTERM.

Import cost matters (``nora --help`` must be instant): nothing here imports
``openai`` or ``llama_cpp``; ``make_client`` does, when a client is built.  On the
embedded model the replies are the plain look-alikes of ``nora_widgets.shapes``
(``local_responses="plain"``), so ``nora ask`` never imports openai at all: the
terminal prints the text, it has no use for openai's pydantic types.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import __version__
from ._chat_session import (  # noqa: F401  (tests import these from cli too)
    _SHOW_AS_CODE,
    ASK_AGAIN,
    ASK_PERSONA,
    ASK_TRIM,
    CLI_TIMEOUT,
    CLI_TRIM,
    HELP_TEXT,
    ChatSession,
    OutputError,
    Stopped,
    _printable,
    _write,
    chat_loop,
    use_readline,
    warn_line,
)
from ._input_history import HistoryError, history_path, load_history, save_history
from .clients import BACKENDS, describe_client, lists_model, make_client, model_note
from .conversation import (DEFAULT_TEMPERATURE, SYSTEM_PROMPT, means_no_persona, new_history, set_persona,
                           temperature_problem)
from .errors import NoraError, count_of, describe_failure, redact
from .transcript import (NOT_READ_BACK, NOTEBOOK_NAME, TranscriptError, _read_only, is_markdown, is_notebook,
                         load_transcript, overwrite_problem)

__all__ = ["main", "build_parser", "ChatSession"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_TERMINATED = 0, 1, 2, 130, 128 + signal.SIGTERM
NOTHING_TO_ASK = "nothing to ask: give a question, or pipe one in (- stands for stdin)"
EMPTY_STDIN = "- stands for stdin, and stdin was empty: nothing sent (pipe the text in, or leave - out)"


class UsageError(NoraError):
    """A bad flag or setting: one line, exit status 2."""


# --------------------------------------------------------------------------- #
# settings -> client


def _settings(args: argparse.Namespace) -> None:
    """Check the flags that argparse cannot; raise UsageError with one line."""
    if getattr(args, "system", None) is not None and means_no_persona(args.system):
        args.system = ""  # --system off: no persona, as /system off and %chat --system off
    if args.timeout is not None and not args.timeout > 0:  # written so that nan is refused too
        raise UsageError(f"--timeout must be more than 0 seconds (got {args.timeout:g})")
    if args.timeout is not None and math.isinf(args.timeout):  # httpx cannot wait forever: every call fails
        raise UsageError(f"--timeout must be a finite number of seconds (got {args.timeout:g})")
    if args.max_retries is not None and args.max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more (got {args.max_retries})")
    if temperature_problem(args.temperature, "--temperature"):
        raise UsageError(temperature_problem(args.temperature, "--temperature"))
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be a whole number of at least 1 (got {args.max_tokens})")
    if getattr(args, "keep_turns", None) is not None and args.keep_turns < 0:
        raise UsageError(f"--keep-turns must be 0 or more (got {args.keep_turns})")
    for flag, path in (("--save", getattr(args, "save", None)), ("--history", getattr(args, "history", None))):
        if path:
            path = os.path.expanduser(path)  # --save=~/chat.json: the shell leaves that ~ alone, save_transcript does not
            if flag == "--history" and is_markdown(path):  # read back by the next nora ask: JSON only
                raise UsageError(f"--history: {path!r} {NOT_READ_BACK}")
            if is_notebook(path):  # else the call is made and every save after it refused (chat: each turn)
                words = "is a notebook's name: give a .json file" if flag == "--history" else NOTEBOOK_NAME
                raise UsageError(f"{flag}: {path!r} {words}")
            folder = os.path.dirname(path) or "."
            if not os.path.isdir(folder):
                raise UsageError(f"{flag}: folder {folder!r} does not exist")
            if os.path.isdir(path):  # else every turn would fail to save, one warning each
                raise UsageError(f"{flag}: {path!r} is a folder: give a file name, e.g. {flag} chat.json")
            # checked now, not after the call: the answer would be lost from the file (ask) or every turn
            # would fail to save (chat).  The save renames a new file over the old one, which a read-only
            # file does not stop, so its mode is read too (root passes os.access everywhere).
            # a file that is not a saved conversation would be replaced whole by the first save; --history, and
            # --save naming the --load file, are loaded first, which refuses such a file in its own words
            same = _same_file(getattr(args, "load", None), path)
            problem = overwrite_problem(path) if flag == "--save" and not same else None
            if problem:
                raise UsageError(f"{flag}: {path!r} {problem}")
            if _read_only(Path(path)):
                raise UsageError(f"{flag}: {path!r} is read-only and each new turn is written to it: "
                                 "make it writable (chmod u+w) or give another file")
            target_folder = os.path.dirname(os.path.realpath(path))  # a symlink is written through
            if not os.access(target_folder, os.W_OK | os.X_OK):
                raise UsageError(f"{flag}: cannot write in folder {target_folder!r} (permission denied)")


def _client(args: argparse.Namespace, ask_models: bool = True) -> Any:
    """The client for the flags.  ask_models=False (nora ask): a server's models are asked for by the
    one turn, not also here (make_client), so a server that is down costs one wait."""
    try:
        client = make_client(args.backend, base_url=args.base_url, model=args.model, ask_models=ask_models,
                             timeout=args.timeout, max_retries=args.max_retries,
                             local_responses="plain",  # the embedded model: no openai import (start-up)
                             base_url_name="--base-url")
    except NoraError as exc:
        raise UsageError(str(exc)) from None
    wrap = getattr(args, "wrap", None)  # e.g. a GuardedClient around every call (see main)
    return wrap(client) if wrap is not None else client


def _same_file(load: str | None, path: str | os.PathLike) -> bool:
    """Whether the --load file is path (a ~ or a symlink on either side), so --save goes on with it."""
    return load is not None and os.path.realpath(os.path.expanduser(load)) == os.path.realpath(os.path.expanduser(path))


def _earlier_conversation(save: str | None, load: str | None) -> str | None:
    """None when `nora chat --save FILE` replaces nothing of worth: no file, an empty one, or the --load file
    (it goes on with that one); else what FILE holds, as words after "an earlier conversation" ('' or
    ' (12 messages)').  Files that are not conversations were refused before (overwrite_problem).
    Example: yesterday's chat.json, no --load -> ' (12 messages)'"""
    if not save:
        return None
    path = Path(os.path.expanduser(save))
    try:
        if path.stat().st_size == 0:
            return None
    except OSError:  # no file yet
        return None
    if _same_file(load, path):
        return None
    try:
        history, _meta = load_transcript(path)
    except TranscriptError:  # a Markdown export Nora wrote: still a conversation someone kept
        return ""
    return f" ({count_of(len(history), 'message')})" if history else None


def _url_named(args: argparse.Namespace) -> str:
    """How failures' advice names the server's URL: the flag when it was given, else the variable."""
    return "--base-url" if args.base_url else "OPENAI_BASE_URL"


# seconds after the question at the start within which a piped first turn does not ask the server for its
# models again (a pipe that brings its first line later, as a server may be up by then, asks)
PIPED_FIRST_ASK = 2.0


def cmd_chat(args: argparse.Namespace) -> int:
    _settings(args)
    history = new_history(SYSTEM_PROMPT if args.system is None else args.system)
    loaded = None
    if args.load:
        try:
            history, _meta = load_transcript(args.load)
        except TranscriptError as exc:
            warn_line(f"nora: {exc}")
            return EXIT_FAILED
        loaded = len(history)
        if args.system is not None:  # an explicit --system replaces the file's persona
            set_persona(history, args.system)
    client = _client(args)
    interactive = sys.stdin.isatty()
    pending = getattr(client, "default_model_pending", None)  # the server gave no answer about its models
    if pending is not None and not interactive:
        # piped: the first turn comes at once, and asking again right away only doubled the wait
        # (two 5 s waits before a server that never answers); typed, each turn asks again as before
        pending.hold(PIPED_FIRST_ASK)
    session = ChatSession(client, history, model=args.model, temperature=args.temperature,
                          keep_turns=args.keep_turns, max_tokens=args.max_tokens, stream=not args.no_stream,
                          save_path=args.save, url_named=_url_named(args), show_sent=args.show_sent)
    kept = None  # (the history file, how many lines readline held after reading it): Up recalls earlier sessions'
    if interactive and use_readline(session.tab):  # line editing, input history, Tab completion
        kept = _earlier_input(session)
    session.say(f"Nora chat: {describe_client(client)}")
    note = model_note(client, args.model)
    if note:
        session.say(f"({note})")
    session.say("(type /help for commands; quit or Ctrl-D to leave)")
    if loaded is not None:
        session.say(f"(loaded {count_of(loaded, 'message')} from {args.load})")
    replaced = _earlier_conversation(args.save, args.load)
    if replaced:  # the first whole turn replaces it: said before anything is typed, while Ctrl-D still keeps it
        session.say(f"({args.save} holds an earlier conversation{replaced}: your first turn replaces it; "
                    f"--load {args.save} goes on with it)")
    try:
        before = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # main() run in a thread of another program: SIGTERM is that program's
        before = None
    try:
        return chat_loop(session, interactive)
    except Stopped:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM now: leave at once
        saved = f"; every whole turn is in {args.save}" if args.save else ""
        session.warn(f"(nora chat stopped by SIGTERM{saved})")
        return EXIT_TERMINATED
    finally:
        if kept is not None:
            try:
                save_history(*kept)
            except HistoryError as exc:
                session.warn(f"({exc})")
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def _earlier_input(session: ChatSession) -> tuple[Path, int] | None:
    """Readline's history from the history file (_input_history.py), and what save_history needs at the
    end; None when there is none to keep (NORA_HISTORY_FILE=) or the file cannot be read (said in a line)."""
    path = history_path()
    if path is None:
        return None
    try:
        return path, load_history(path)
    except HistoryError as exc:
        session.warn(f"({exc}; this session's lines are not kept)")
        return None


def _stop(_signum: int, _frame: Any) -> None:
    """SIGTERM in nora chat: leave the way Ctrl-D does, with the terminal as it was (see Stopped)."""
    raise Stopped


def _question(words: list[str]) -> str:
    """The question from the command line: its words joined by spaces, each - replaced by stdin.

    With no words at all, a piped stdin is the question (`git log -1 | nora ask`); a keyboard is
    not read (that would wait silently).
    Example: ["Summarise:", "-"] with "a diff" piped in -> "Summarise: a diff"
    """
    if not words and not sys.stdin.isatty():
        words = ["-"]
    if "-" in words and sys.stdin.isatty():  # else it waits without a word, and Ctrl-D is not obvious
        warn_line("(nora ask -: type the question, then press Ctrl-D on a line of its own)")
    piped = sys.stdin.read().strip() if "-" in words else ""
    question = " ".join(piped if word == "-" else word for word in words).strip()
    if not question:
        raise UsageError(NOTHING_TO_ASK)
    if "-" in words and not piped:  # `git log -1 | nora ask "Explain:" -` outside a repository: 'Explain:' alone
        raise UsageError(EMPTY_STDIN)
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
        warn_line(f"nora: {exc}")
        return EXIT_FAILED
    client = _client(args, ask_models=False)
    before = len(history)
    session = ChatSession(client, history, model=args.model, temperature=args.temperature,
                          max_tokens=args.max_tokens, stream=not args.no_stream, prefix="",
                          url_named=_url_named(args), trim_words=ASK_TRIM, persona_words=ASK_PERSONA, notes_on_stderr=True,
                          again_words=ASK_AGAIN)
    note = model_note(client, args.model)
    if note:  # on stderr: the answer alone goes to stdout
        session.warn(f"({note})")
    try:
        if not session.send(question):
            return EXIT_CANCELLED if session.last_failure == "cancelled" else EXIT_FAILED
    except BrokenPipeError:  # `... | head -1`: main() leaves quietly, but a --history file misses this turn
        if args.history:
            session.warn(f"(not saved to {args.history}: stdout's reader left before the whole answer was "
                         "written; this turn is not in it)")
        raise
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
    A failure (down, a wrong key, no /models) is raised as the client raised it.  A server that gave
    make_client no answer (e.g. a 503 while it loads its model) is asked through the client's hook,
    which also settles the default model the last line names, and asked once more by it when it
    answers only to the retries of the direct question.  What the server answered make_client (its
    list, or an error such as the 404 of a URL without /v1) is used as it is: one GET /models, not
    two; only an error the client's retries would have asked again about is asked again."""
    pending = getattr(client, "default_model_pending", None)
    if pending is not None:
        pending()
    names = list(getattr(client, "listed_models", None) or [])
    answer = getattr(client, "models_answer", None)
    if isinstance(answer, Exception) and not _retried(client, answer):
        raise answer
    if not names and not isinstance(answer, list):  # not asked yet (a name given), or no answer yet
        names = [m.id for m in client.models.list().data]
        pending = getattr(client, "default_model_pending", None)
        if pending is not None:  # up now: what a chat would send is what it lists now
            pending()
    return sorted(name for name in names if isinstance(name, str) and name)


def _retried(client: Any, exc: Exception) -> bool:
    """Whether the client would ask again after this error (make_client asked once, with no retries):
    openai's client retries a 408, 409, 429 and any 5xx, max_retries times.
    Example: a 404 -> False; a 500 with max_retries=2 -> True, with max_retries=0 -> False"""
    status = getattr(exc, "status_code", None)
    retried = isinstance(status, int) and (status in (408, 409, 429) or status >= 500)
    return retried and (getattr(client, "max_retries", 0) or 0) > 0


def _ends_in_v1(client: object) -> bool:
    """Whether the server's URL ends in /v1 (http://127.0.0.1:8000/v1), where the API of vLLM, Ollama,
    llama.cpp's server and nora serve is.  Example: a client for http://127.0.0.1:8000 -> False"""
    return str(getattr(client, "base_url", "")).rstrip("/").endswith("/v1")


def cmd_models(args: argparse.Namespace) -> int:
    """One model name per line on stdout (what --model / NORA_MODEL can take); what they are on stderr.
    Example: `nora models` against Ollama -> 'llama3.2:latest', 'qwen2.5:latest'"""
    _settings(args)
    client = _client(args)
    if getattr(client, "backend", None) == "local":
        try:  # a GGUF file cut short passes the start's four-byte check and fails at the first call:
            client.check()  # named here only when a call could use it (the line and status of nora ask)
        except NoraError as exc:
            warn_line(f"nora: {exc}")
            return EXIT_FAILED
        _write(sys.stdout, f"{client.default_model}\n")
        size = os.path.getsize(client.model_path) / 1e6
        warn_line(f"(the embedded model: {client.model_path}, {size:,.0f} MB, context window {client.n_ctx:,} tokens; "
                  f"it answers as itself whatever --model says; NORA_MODEL_PATH picks another GGUF file)")
        return EXIT_OK
    if not hasattr(client, "models"):  # the scripted stand-in: one name, no server
        _write(sys.stdout, f"{client.default_model}\n")
        warn_line(f"({describe_client(client)})")
        return EXIT_OK
    try:
        names = _server_models(client)
    except Exception as exc:
        failure = describe_failure(exc).in_words_of(CLI_TRIM, CLI_TIMEOUT).with_url_named(_url_named(args))
        if failure.kind == "not_found" and not _ends_in_v1(client):  # vLLM, Ollama, nora serve: all under /v1
            where = redact(str(client.base_url)).rstrip("/")
            failure = replace(failure, message=f"nothing at {where}/models (HTTP {failure.status})",
                              hint=f"check {_url_named(args)}: an OpenAI-compatible API's URL usually ends in /v1")
        elif failure.kind == "not_found":  # the server is there, with no list (GET /models is optional)
            failure = replace(failure, message=f"it has no list of models (HTTP {failure.status})",
                              hint="ask for one by name with --model or NORA_MODEL")
        hint = f" - {failure.hint}" if failure.hint else ""
        warn_line(f"nora: could not list the server's models: {failure.message}{hint}")
        return EXIT_FAILED
    where = redact(str(client.base_url)).rstrip("/")
    if not names:
        warn_line(f"(the server at {where} lists no models: ask for one by name with --model or NORA_MODEL)")
        return EXIT_OK
    _write(sys.stdout, "".join(f"{name}\n" for name in names))
    default = client.default_model
    if lists_model(names, default):
        chosen = f"nora uses {default} unless told otherwise; "
    else:  # e.g. a NORA_MODEL with a typo: the name every call sends, which this server does not list
        origin = " (NORA_MODEL)" if os.environ.get("NORA_MODEL") else ""
        chosen = f"nora asks for {default!r}{origin} unless told otherwise, and this server does not list it; "
    warn_line(f"({count_of(len(names), 'model')} at {where}; {chosen}choose with --model or NORA_MODEL)")
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
    p.add_argument("--system", help="the persona (system prompt); off or \"\" for none; default: Nora the bookshop assistant")
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
    """The `nora` command line (the console script runs it through _start.main, which imports this
    module behind a Ctrl-C guard).  Example: main(["ask", "Hi"]) -> 0

    wrap: a function applied to the client nora builds, for your own checks around every
    call, e.g. a script holding
        sys.exit(main(wrap=lambda c: GuardedClient(c, after=never_reveal("LEGUIN-42"))))
    (see nora_widgets.guard and docs/reliability.md).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:  # closed when nora started (`nora ask hi >&-`): Python gives None
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # taken as /dev/null
    try:
        parser = build_parser(with_serve=_subcommand(argv) == "serve")
    except ImportError as exc:
        if exc.name == "nora_widgets.serve":
            why = "this install has no nora_widgets/serve.py"
        else:
            why = f"it needs {exc.name or exc}: pip install 'nora-widgets[local]'"
        warn_line(f"nora: error: nora serve is not available: {why}")
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
    for stream in (sys.stdout, sys.stderr):  # a terminal that is not UTF-8 (PYTHONIOENCODING=ascii, an
        if hasattr(stream, "reconfigure"):   # old locale): a character it cannot show is written as \u26a0
            stream.reconfigure(errors="backslashreplace")
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        warn_line(f"nora: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        warn_line("\n(cancelled)")
        return EXIT_CANCELLED
    except BrokenPipeError:  # e.g. `nora ask ... | head -c 10`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except OutputError as exc:  # e.g. `nora ask ... > answer.txt` on a full disk: one line, not a traceback
        name = "stderr" if exc.stream is sys.stderr else "stdout"
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), exc.stream.fileno())  # what it still holds: no second error at exit
        except (AttributeError, ValueError, OSError):
            pass
        if name == "stdout":
            try:
                warn_line(f"nora: could not write to stdout: {exc.strerror}")
            except OSError:
                pass
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
