"""Turn any failure of a model call into something a person can act on.

Every face of Nora (terminal, panel, magics) shows failures the same way: one
line saying what went wrong and what to do next.  This module is the single
place that knows how exceptions map to that line.  It imports nothing from
the rest of the package and does not import ``openai``: errors are recognised
by their class name and attributes (duck typing), so the core stays light.

    >>> describe_failure(TimeoutError("read timed out")).kind
    'timeout'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

__all__ = [
    "Failure",
    "describe_failure",
    "redact",
    "mask_keys",
    "count_of",
    "NoraError",
    "EmptyMessageError",
    "HistoryError",
    "ArgumentError",
    "ContextWindowError",
    "BadResponseError",
    "ErrorBodyError",
    "StreamCutError",
    "MessageTooLongError",
    "PersonaTooLongError",
    "RefusedError",
]


class NoraError(ValueError):
    """Base class for Nora's own refusals (bad input, bad files, a model that cannot answer).

    Every exception below is one, so ``except NoraError`` catches them all (and, being a
    ValueError, so does ``except ValueError``); its text is one line that says what to do.
    Raised as itself for a bad setting, e.g. LocalClient(seed="x") or make_client("nope").
    Errors from the server (openai's, timeouts) are not NoraErrors, but what Nora reads in its answer is: a 200
    whose body is not JSON comes out of the turns as BadResponseError, not json's JSONDecodeError.
    describe_failure(exc).line() says any of them, and any NoraError, in one line.
    Example: LocalClient(seed="x") -> NoraError('seed must be a whole number, or None for a random one (got 'x')')"""


class EmptyMessageError(NoraError):
    """The user text was empty or only whitespace: nothing is sent.

    Raised by run_turn and stream_turn before any call (safe_run_turn returns '(not sent: ...)').
    Example: run_turn(client, history, "   ") -> EmptyMessageError, history unchanged"""


class HistoryError(NoraError):
    """The conversation is not a list of {"role", "content"} dicts.

    Raised, naming the item and what to write instead, by run_turn, stream_turn, trim_history,
    trim_to_budget, new_history / set_persona (a persona that is not text), count_tokens /
    message_tokens and LocalClient's create(), before anything is sent.
    Example: run_turn(client, [{"role": "sytem", "content": "Hi"}], "x") -> HistoryError("message 0: role ...")"""


class ArgumentError(NoraError):
    """An argument of a turn (other than the list and the text) is not one Nora can use: nothing is sent.

    Raised by edit_message and message_at for a number that names no message or an empty text, and by
    trim_history and trim_to_budget, so by run_turn and stream_turn (and the async turns) given such a
    keep_last_n_turns, after the history is rolled back; safe_run_turn says it as '(not sent: ...)'.
    Example: safe_run_turn(client, history, "hi", keep_last_n_turns="3") ->
        "(not sent: keep_last_n_turns must be a whole number >= 0 (got '3'))", nothing sent, history unchanged"""


class ContextWindowError(NoraError):
    """The messages (plus room for the reply) do not fit the model's context window.

    Raised by LocalClient's create() (so by run_turn and stream_turn with the embedded model)
    before the model reads anything; an OpenAI-compatible server says the same with a 400 instead.
    Carries the same code an OpenAI server uses, so callers can treat both alike.  Its text is
    the whole of what a failure line says (describe_failure), so it says what did not fit.
    Example: ContextWindowError("the prompt (2,300 tokens) + max_tokens=20 is over the context window of 2,048 tokens",
                                prompt_tokens=2300, limit=2048, max_tokens=20)
    """

    code = "context_length_exceeded"

    def __init__(self, message: str, *, prompt_tokens: int | None = None, limit: int | None = None,
                 max_tokens: int | None = None) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        self.max_tokens = max_tokens  # the reply length asked for, if one was

    @property
    def reply_too_long(self) -> bool:
        """The messages fit; the max_tokens asked for is what does not (a smaller one would)."""
        return (self.max_tokens is not None and self.prompt_tokens is not None and self.limit is not None
                and self.prompt_tokens < self.limit)


class BadResponseError(NoraError):
    """The server answered, but not with a chat completion (a web page, a body that is not JSON, an empty stream).

    Raised by run_turn and stream_turn (and the async turns), after the history is rolled back.  Its text
    says what came back; describe_failure(exc).line() adds what to do (check the base URL).  A body that is not
    JSON raises it from json's JSONDecodeError (its __cause__ says where the parse stopped).
    Example: run_turn(client, history, "hi") against a web page ->
        BadResponseError("the server's answer is not a chat completion (a text/HTML page)"), history unchanged
    Example: stream_turn(...) against that page -> "the server's answer is not a stream of chat chunks (a text/HTML page)"
    Example: run_turn(...) against a 200 whose body is "{'this is': not JSON" -> BadResponseError("the server's answer is not JSON")"""


class ErrorBodyError(BadResponseError):
    """The server answered 200 with an error as the body, {"error": {"message": ...}}: nora serve does so
    when a request that waited past its keep-alive ends in an error (the status had gone out already), and
    so does a server that ignores "stream": true and fails (read from make_client's clients).
    body: that JSON, as an openai error's body is, so the server's message is quoted as for any error.
    Example: str(ErrorBodyError({"message": "overloaded"})) -> 'the server answered with an error: overloaded'"""

    def __init__(self, error: dict) -> None:
        super().__init__(f"the server answered with an error: {error.get('message')}")
        self.body = {"error": error}


class StreamCutError(NoraError):
    """A streamed reply stopped part-way: what arrived is not kept.

    Raised by stream_turn and astream_turn (safe_run_turn with on_text reports it), after the history is
    rolled back; the pieces already yielded are the caller's to clear from the screen.
    Example: for piece in stream_turn(client, history, "hi"): ... -> after 2 pieces,
        StreamCutError('the reply was cut off after 5 characters (the server closed the connection)')"""


class MessageTooLongError(NoraError):
    """The new message does not fit the context window even with no earlier turns sent.

    Trimming cannot help here: the message itself has to get shorter.  Raised by run_turn and
    stream_turn in place of the client's context-window error when the turn sent no earlier
    turns to drop, or the persona and the message alone are over the window (or, with no earlier turn
    sent, the request is over the server's size limit: a 413).
    Example: MessageTooLongError("your message and persona (1,048,576 + 120 characters) overflow the 2,048-token context window")
    """


class PersonaTooLongError(MessageTooLongError):
    """As MessageTooLongError, when what overflows is mostly the persona (the system message):
    sending the message in parts cannot help, the persona has to get shorter.
    Example: PersonaTooLongError("the persona and your message (40,000 + 2 characters) overflow the 2,048-token context window")
    """


class RefusedError(NoraError):
    """A check in your own code refused a message before it was sent, or a reply after it came.

    Raised by the checks of nora_widgets.guard.GuardedClient (or by any client);
    ``describe_failure`` maps it to kind "refused" and shows the reason as given,
    so a reason must be one short line and must not repeat what it protects.
    stage: "before" (nothing was sent) or "after" (the reply was withheld).
    Example: RefusedError("the message looks like a prompt injection ('ignore previous instructions')")
    """

    def __init__(self, reason: str, *, stage: str = "before", check: str | None = None) -> None:
        super().__init__(" ".join(str(reason).split()) or "refused by a check")
        self.stage = stage
        self.check = check

    @property
    def hint(self) -> str:
        if self.stage == "after":
            return "the reply was withheld and the turn rolled back"
        return "nothing was sent; rephrase your message"


@dataclass(frozen=True)
class Failure:
    """What failed, as data a UI can use.

    kind:    short machine name ("rate_limit", "auth", "timeout", ...)
    status:  the HTTP status code when there was one, else None
    message: one line, key-free, saying what happened
    hint:    one short sentence saying what to do
    """

    kind: str
    status: int | None
    message: str
    hint: str

    def in_words_of(self, trim: str, timeout: str | None = None, not_found: str | None = None,
                    persona: str | None = None) -> "Failure":
        """This failure with its advice in a face's own words: how to trim (`/trim N` is nora
        chat's) and, if given, how to wait longer (`--timeout` is a flag of nora's), what to
        check for a model name the server does not know (`nora models` lists them) and how to
        shorten the persona (`/system TEXT` in nora chat).
        Example: f.in_words_of("tick 'keep last N turns'").hint -> "tick 'keep last N turns'"
        (only a hint that is TRIM_HINT, TIMEOUT_HINT, NOT_FOUND_HINT or PERSONA_HINT changes; any other
        comes back as it is)"""
        if self.hint == PERSONA_HINT and persona is not None:
            return replace(self, hint=persona)
        if self.hint == TRIM_HINT:
            return replace(self, hint=trim)
        if self.hint == TIMEOUT_HINT and timeout is not None:
            return replace(self, hint=timeout)
        if self.hint == NOT_FOUND_HINT and not_found is not None:
            return replace(self, hint=not_found)
        return self

    def with_url_named(self, name: str) -> "Failure":
        """This failure with "OPENAI_BASE_URL" in its advice replaced by where the URL really came from.
        Example: f.with_url_named("--base-url").hint -> "check --base-url and your network"
        """
        return replace(self, message=self.message.replace("OPENAI_BASE_URL", name),
                       hint=self.hint.replace("OPENAI_BASE_URL", name) if self.hint else self.hint)

    def with_max_tokens_named(self, flag: str) -> "Failure":
        """This failure with the argument max_tokens=N named as a face's flag is typed.
        Example: f.with_max_tokens_named("--max-tokens").hint -> 'ask for a shorter reply: --max-tokens 94 or less'
        (a bare "max_tokens=", as in 'check max_tokens=', becomes the flag alone: 'check --max-tokens')
        """
        def named(text: str) -> str:
            return re.sub(r"max_tokens=(?=\d)", f"{flag} ", text).replace("max_tokens=", flag)

        return replace(self, message=named(self.message), hint=named(self.hint) if self.hint else self.hint)

    def line(self) -> str:
        """The one-line form shown to people: '(error talking to the model: ...)', or, for input refused
        before anything was sent (kind "bad_input": no model was talked to), '(not sent: ...)'."""
        text = self.message
        if self.hint:
            text = f"{text} - {self.hint}"
        if self.kind == "bad_input":
            return f"(not sent: {text})"
        return f"(error talking to the model: {text})"


# The advice in code's words (the library, the lessons); each face puts it in its own with
# Failure.in_words_of: nora chat says /trim N and --timeout, the panel its checkbox, the magics %chat.
NO_KEY = "no-key"  # what make_client sends to a server when OPENAI_API_KEY is not set (local servers take any)
NOT_FOUND_HINT = "check --model and OPENAI_BASE_URL"
TRIM_HINT = "trim it (keep_last_n_turns=N, or trim_history)"
TIMEOUT_HINT = "try again, or wait longer (make_client(timeout=...) or NORA_TIMEOUT)"
PERSONA_HINT = "shorten the persona (set_persona, or the system message in the list)"
NOT_JSON = "the server's answer is not JSON"  # a 200 whose body does not parse: BadResponseError says the same

# (class name) -> (kind, message, hint); checked along the exception's MRO so
# subclasses we do not know about still land in the right row.
_BY_CLASS = {
    "AuthenticationError": ("auth", "the server refused the API key", "check OPENAI_API_KEY"),
    "PermissionDeniedError": ("permission", "the key may not use this model", "check the model name and the key's access"),
    "RateLimitError": ("rate_limit", "rate limit reached", "wait a moment, then send again"),
    "NotFoundError": ("not_found", "the server does not know this model or URL", NOT_FOUND_HINT),
    "BadRequestError": ("bad_request", "the server rejected the request", "check the model name and settings"),
    "UnprocessableEntityError": ("bad_request", "the server could not process the request", "check the model name and settings"),
    "InternalServerError": ("server", "the server had an internal error", "try again in a moment"),
    "APITimeoutError": ("timeout", "the request timed out", TIMEOUT_HINT),
    "APIConnectionError": ("connection", "could not reach the server", "check OPENAI_BASE_URL and your network"),
    "APIResponseValidationError": ("bad_response", "the server sent a reply Nora could not read", "check that OPENAI_BASE_URL is an OpenAI-compatible API"),
    "JSONDecodeError": ("bad_response", NOT_JSON, "check that OPENAI_BASE_URL is an OpenAI-compatible API"),
    "KeyboardInterrupt": ("cancelled", "cancelled", "the turn was rolled back; send it again when ready"),
    # the embedded model stopped because its caller stopped waiting (the panel's Stop while it read the prompt)
    "CallCancelled": ("cancelled", "cancelled", "the turn was rolled back; send it again when ready"),
    # sys.exit() inside a client's create() or its stream: only the panel's worker thread sees it and goes on
    "SystemExit": ("exit", "the client called sys.exit() during the call", "the turn was rolled back; fix the client, then send again"),
    "ContextWindowError": ("context_length", "the conversation is longer than the model's context window", TRIM_HINT),
    "ModelUnavailableError": ("no_model", "no model is available", ""),
    "ErrorBodyError": ("server", "the server answered with an error", "try again in a moment"),
    "BadResponseError": ("bad_response", "the server sent a reply Nora could not read", "check that OPENAI_BASE_URL is an OpenAI-compatible API"),
    "StreamCutError": ("stream_cut", "the reply was cut off part-way", "the turn was rolled back; send it again"),
    "PersonaTooLongError": ("too_long", "the persona is too long for the model's context window", PERSONA_HINT),
    "MessageTooLongError": ("too_long", "your message is too long for the model's context window", "shorten them, or send the message in parts"),
    "RefusedError": ("refused", "refused by a check", ""),
    "ArgumentError": ("bad_input", "an argument Nora cannot use", ""),  # said in its own words: nothing was sent
    "TimeoutError": ("timeout", "the request timed out", TIMEOUT_HINT),
    "ConnectionError": ("connection", "could not reach the server", "check OPENAI_BASE_URL and your network"),
}

_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,})")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")  # http://user:PASSWORD@host/ (basic auth in a URL)
# ?api-key=VALUE, &token=VALUE, ?sig=VALUE...: a query parameter whose name looks like a secret (a gateway's key)
# (a name written percent-encoded, api%2Dkey, is read with its % escapes as part of the name)
_QUERY_SECRET = re.compile(r"([?&](?:[\w.~%-]*(?:key|token|secret|passw|auth|credential)[\w.~%-]*|sig|signature|code)=)"
                           r"[^&#\s'\"<>]+", re.IGNORECASE)


def count_of(n: int, word: str) -> str:
    """A number and a noun that agree.  Example: count_of(1, "message") -> '1 message'; (1200, "turn") -> '1,200 turns'"""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def redact(text: str, *secrets: str) -> str:
    """Remove anything that looks like an API key from text: OPENAI_API_KEY's value,
    any other secrets given, anything shaped like 'sk-...', the password in a URL, and the value of a
    URL's query parameter named like a key (api-key, key, token, access_token, sig, code...).

    Example: redact("bad key sk-abc123456789") -> 'bad key sk-***'; redact("http://u:pw@h/v1") -> 'http://u:***@h/v1'
    Example: redact("http://h/v1?api-version=1&api-key=abc") -> 'http://h/v1?api-version=1&api-key=***'
    """
    for key in (os.environ.get("OPENAI_API_KEY", ""), *secrets):
        if key and len(key) >= 8:  # short placeholders ("test", "no-key") are not secrets
            text = text.replace(key, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    return _KEY_PATTERN.sub("sk-***", text)


def looks_like_a_key(text: str) -> bool:
    """Whether text holds what redact would mask: the key pasted where a model's name or a typed line goes.
    Example: looks_like_a_key("sk-proj-abc123456789") -> True; looks_like_a_key("SmolLM2-135M-Instruct") -> False"""
    return redact(text) != text


def _bearer(exc: BaseException) -> str:
    """The key the failed request carried in its Authorization header ('' when none)."""
    request = None
    for owner in (exc, getattr(exc, "response", None)):
        try:
            request = getattr(owner, "request", None)
        except RuntimeError:  # httpx2's errors (and responses) made without a request raise, not give None
            continue
        if request is not None:
            break
    try:
        auth = request.headers.get("authorization") or "" if request is not None else ""
    except Exception:
        return ""
    return auth[7:].strip() if isinstance(auth, str) and auth.lower().startswith("bearer ") else ""


def _sent_key(exc: BaseException) -> str:
    """The key the failed request carried (its Authorization header), so an echo of it can be
    masked even when it came from code rather than the environment, or has no 'sk-' prefix."""
    key = _bearer(exc)
    return key if len(key) >= 8 else ""  # short placeholders ("no-key", "test") are not secrets: leave text alone


def mask_keys(exc: BaseException) -> BaseException:
    """Mask, in place, any API key in an exception's own words and in those of its causes: the text
    str() and a traceback show (args, openai's .message) and the server's error body (.body), as
    redact masks them (OPENAI_API_KEY, the key the request carried, sk-..., a URL's password or key=).
    A server that echoes the key in its 401 made the traceback of a failed run_turn show it whole in
    the notebook; the turns call this before they re-raise, so the exception keeps its class.
    Example: openai.AuthenticationError('Error code: 401 - Incorrect API key provided: sk-abc123456789')
        -> the same exception, str() 'Error code: 401 - Incorrect API key provided: sk-***'"""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    secrets = [key for key in {_sent_key(link) for link in chain} if key]
    for link in chain:
        try:
            args = tuple(redact(a, *secrets) if isinstance(a, str) else a for a in link.args)
            if args != link.args:
                link.args = args
            message = getattr(link, "message", None)
            masked_message = redact(message, *secrets) if isinstance(message, str) else message
            if masked_message != message:
                link.message = masked_message  # type: ignore[attr-defined]
            body = getattr(link, "body", None)
            if body is not None:
                masked = _masked(body, secrets)
                if masked != body:
                    link.body = masked  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # an exception whose attributes cannot be set: left as it is
            continue
    return exc


def _masked(value: object, secrets: list[str]) -> object:
    """A JSON value with every string in it redacted.
    Example: {"message": "bad sk-abc123456789"} -> {"message": "bad sk-***"}"""
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, secrets) for v in value]
    return value


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _shorten(text: str, limit: int) -> str:
    """text cut to at most limit characters at a space, with an ellipsis to say so.
    Example: _shorten("leave room for the prompt", 12) -> 'leave room…'"""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut).rstrip(" ,;:") + "…"


SERVER_DETAIL_CHARS = 120  # a server's own message, at most: OpenAI's name their fix within it


def _server_detail(exc: BaseException) -> str:
    """The server's own error message, if it sent one (short, key-free; cut at SERVER_DETAIL_CHARS)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            detail = inner.get("message")
        else:
            detail = inner if isinstance(inner, str) else None
        if isinstance(detail, str) and detail.strip():
            detail = " ".join(detail.split())
            return _shorten(redact(detail, _sent_key(exc)), SERVER_DETAIL_CHARS)  # masked whole, then cut
    return ""


def _param_named(exc: BaseException) -> str:
    """The request field a server's 400 names (OpenAI's error.param, e.g. 'max_tokens'), or ''.
    Only a plain field name is taken: it goes into a hint as it is."""
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    param = inner.get("param") if isinstance(inner, dict) else None
    return param if isinstance(param, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\[\]]{0,40}", param) else ""


def _retry_after(exc: BaseException) -> str:
    """The server's Retry-After header, as '20 s', if it sent one."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
    except Exception:
        return ""
    if not value:
        return ""
    value = str(value).strip()
    return f"{value} s" if value.replace(".", "", 1).isdigit() else value[:40]


# The connection was open and then closed by the server.  "Could not reach the server" would
# send people to check a URL that works; say what happened instead.  (httpx2's
# RemoteProtocolError text, found anywhere in the exception's cause chain.)
_CLOSED = {
    "answer": ("connection", "the server closed the connection without answering",
               "try again; if it keeps happening, check OPENAI_BASE_URL"),
    "body": ("stream_cut", "the reply was cut off: the server closed the connection mid-reply",
             "the turn was rolled back; send it again"),
}


def _closed_by_server(exc: BaseException) -> str | None:
    """'answer' (hung up before replying), 'body' (hung up mid-reply) or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "RemoteProtocolError":
            text = str(current).lower()
            if "complete message body" in text or "incomplete chunked read" in text:
                return "body"
            if "without sending a response" in text:
                return "answer"
        current = current.__cause__ or current.__context__
    return None


def _where(exc: BaseException) -> tuple[str, str]:
    """(host, host:port) the failed request was going to; ('', '') when the error carries no request.
    Example: a refused POST to http://[::1]:9/v1/chat/completions -> ('::1', '[::1]:9')"""
    try:
        url = getattr(exc, "request").url  # openai's and httpx's errors carry the request
        host, port = url.host, url.port
    except Exception:  # no request, or httpx2's errors made without one (they raise)
        return "", ""
    if not isinstance(host, str) or not host:
        return "", ""
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    return host, f"{shown}:{port}" if isinstance(port, int) else shown


def _unreachable(exc: BaseException) -> str:
    """Why a connection was never made, and where to, read from the chain of causes ('' when
    neither is known).  By class name, as _BY_CLASS is: this module imports neither ssl nor socket.
    Example: refused at 127.0.0.1:9 -> 'nothing is listening at 127.0.0.1:9'"""
    host, where = _where(exc)
    if not where:
        return ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        if "ConnectionRefusedError" in names:
            return f"nothing is listening at {where}"
        if "gaierror" in names:  # the name lookup failed: a typo in the host, or no network
            return f"no host named {host} was found"
        if "SSLError" in names:  # https:// to a server that speaks http:// (or a certificate refused)
            return f"the https:// connection to {where} failed (if the server speaks plain http://, use that)"
        current = current.__cause__ or current.__context__
    return f"at {where}"


def _is_context_overflow(exc: BaseException) -> bool:
    body = getattr(exc, "body", None)
    code = getattr(exc, "code", None)
    if code == "context_length_exceeded":
        return True
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code") == "context_length_exceeded":
            return True
    text = str(exc).lower()
    return "context_length_exceeded" in text or "exceed context window" in text or "maximum context length" in text


_WINDOW = re.compile(r"maximum context length is ([\d,]+) tokens")  # OpenAI's, vLLM's and llama.cpp's server's
_ASKED = re.compile(r"(?:resulted in|requested) ([\d,]+) tokens")


def _overflow_numbers(detail: str) -> str:
    """A server's context-overflow message as its numbers ('' when it names no window).
    Example: "This model's maximum context length is 8192 tokens. However, your messages resulted in
    9013 tokens. Please reduce the length of the messages." -> '9,013 tokens > 8,192'"""
    window, asked = _WINDOW.search(detail), _ASKED.search(detail)
    if window is None:
        return ""
    limit = int(window.group(1).replace(",", ""))
    if asked is None:
        return f"it holds {limit:,} tokens"
    return f"{int(asked.group(1).replace(',', '')):,} tokens > {limit:,}"


def describe_failure(exc: BaseException) -> Failure:
    """Map any exception to a Failure with a one-line, key-free message.

    Example: a 429 from the server ->
        Failure(kind='rate_limit', status=429, message='rate limit reached (HTTP 429)', hint='wait a moment, then send again')
    """
    status = _status(exc)
    closed = _closed_by_server(exc) if not isinstance(exc, NoraError) else None
    if _is_context_overflow(exc) and not isinstance(exc, MessageTooLongError):
        kind, message, hint = _BY_CLASS["ContextWindowError"]
    elif isinstance(exc, (EmptyMessageError, HistoryError)):  # refused before any call: '(not sent: ...)',
        kind, message, hint = "bad_input", "", ""  # its own words, as safe_run_turn says it
    elif closed:
        kind, message, hint = _CLOSED[closed]
    else:
        for cls in type(exc).__mro__:
            if cls.__name__ in _BY_CLASS:
                kind, message, hint = _BY_CLASS[cls.__name__]
                break
        else:
            if status is not None and status >= 500:
                kind, message, hint = _BY_CLASS["InternalServerError"]
            elif status == 413:  # a body over the server's limit (nora serve: far over what its window holds)
                kind, message, hint = "bad_request", "the request is too large for the server", TRIM_HINT
            else:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                kind, message, hint = "error", f"{type(exc).__name__}: {detail}", ""
    if kind == "connection" and not closed:  # where it was going, and why it never got there
        why = _unreachable(exc)
        if why:
            message = f"{message} {why}" if why.startswith("at ") else f"{message}: {why}"
    if kind == "server" and status == 503:  # not a bug on the server: it is busy or starting up
        message = "the server is unavailable"
    elif kind == "server" and status == 501:  # a web server that is not the API (python -m http.server)
        message, hint = "the server does not support this request", _BY_CLASS["BadResponseError"][2]
    own_words = kind == "error" or (kind in ("no_model", "bad_response", "stream_cut", "too_long", "refused",
                                             "context_length", "bad_input") and isinstance(exc, NoraError))
    if own_words and str(exc).strip():
        message = " ".join(str(exc).split())
    if kind == "context_length" and isinstance(exc, ContextWindowError) and exc.reply_too_long:
        assert exc.limit is not None and exc.prompt_tokens is not None  # as reply_too_long has checked
        room = exc.limit - exc.prompt_tokens  # what a reply may use with these messages
        hint = f"ask for a shorter reply: max_tokens={room} or less"
    if kind == "auth" and _bearer(exc) == NO_KEY:  # no key was set: make_client sent its placeholder
        message, hint = "the server wants an API key and none is set", "export OPENAI_API_KEY=<the key this server expects>"
    if kind == "refused":
        message = f"refused: {message}"
        hint = getattr(exc, "hint", "") or ""
    field = _param_named(exc) if kind == "bad_request" else ""
    if field:  # the server says which field: not "the model name and settings"
        hint = ("check max_tokens=" if field in ("max_tokens", "max_completion_tokens")
                else f"check {field}, the field the server names")
    detail = _server_detail(exc)
    if detail and kind == "context_length":  # the server's sentences, as numbers (they said little else)
        detail = _overflow_numbers(detail) or detail
    if detail and kind in ("bad_request", "not_found", "permission", "server", "context_length"):
        message = f"{message}: {detail}"
    if status is not None:
        wait = _retry_after(exc)
        message = f"{message} (HTTP {status}, retry after {wait})" if wait else f"{message} (HTTP {status})"
    return Failure(kind=kind, status=status, message=_shorten(redact(message, _sent_key(exc)), 320), hint=hint)
