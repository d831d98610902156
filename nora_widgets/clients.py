"""Clients: the scripted stand-in, and the one function that decides which client to build.

Every client has the same surface, the part of ``openai.OpenAI`` that Nora uses:

    client.chat.completions.create(model=..., messages=[...], temperature=..., stream=False)
        -> openai.types.chat.ChatCompletion            (stream=False)
        -> iterator of ChatCompletionChunk             (stream=True)

plus small extras Nora's views read if present: ``default_model`` (the
name to send when the caller gives none) and ``wire`` (a WireLog holding the
last request exactly as it was sent, key masked), which every client
make_client builds has (its return type, NoraClient, says so);
``default_model_pending`` (None, or while a server has not yet answered
make_client's question about its models, or was not asked yet, a hook that
asks: conversation.py calls it before a turn that would send the default name;
see make_client) and ``key_refused`` (401 when that question was refused for
the key).

    ScriptedClient   canned replies, records every call: lessons and tests
    openai.OpenAI    OpenAI, or any OpenAI-compatible server via base_url
    LocalClient      the embedded SmolLM2 model, in-process (nora_widgets.local)
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, TypeGuard
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit  # no cost: the package's other imports load it anyway

from .conversation import ChatClient  # only for NoraClient, the type make_client returns
from .errors import NO_KEY, NoraError, count_of, looks_like_a_key, redact
from .tokens import rough_tokens

if TYPE_CHECKING:
    from .aio import AsyncNoraClient  # not at run time: aio imports asyncio

__all__ = [
    "NoraClient",
    "ScriptedClient",
    "WireLog",
    "make_client",
    "make_async_client",
    "describe_client",
    "ModelUnavailableError",
    "BACKENDS",
]

BACKENDS = ("auto", "local", "openai", "scripted")
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"


class ModelUnavailableError(NoraError):
    """No model can answer with the current settings (says how to get one).

    Raised by make_client and LocalClient: the embedded model not installed, a NORA_MODEL_PATH that is
    missing or not a GGUF file, backend "openai" with neither OPENAI_API_KEY nor OPENAI_BASE_URL set.
    Example: make_client("openai") with no key or base URL -> ModelUnavailableError('OPENAI_API_KEY is not set: ...')"""


# --------------------------------------------------------------------------- #
# the wire: what actually went out


def _json_answer(response: Any) -> bool:
    """Whether a response's body is JSON (Content-Type application/json): one header looked up."""
    return str(response.headers.get("content-type") or "")[:16].lower() == "application/json"


def _keep_json(response: Any) -> None:
    """httpx2 response event hook: read a JSON answer whole as it arrives, so it stays readable.

    Some servers and proxies ignore "stream": true and answer a streamed request with JSON: the whole
    completion, or an error as the body.  openai's stream reads the body as server-sent events, finds
    none, and keeps nothing of it (httpx2 says StreamConsumed when asked again).  Read here, the body is
    kept on the response, where stream_turn reads the reply (or the error) from it.  An answer that is
    not streamed is read whole by httpx2 right after this hook anyway: reading it here costs nothing more.
    A stream (text/event-stream) is left alone.
    Example: a streamed request answered {"choices": [...]} -> stream.response.content holds it"""
    if _json_answer(response):
        response.read()


async def _akeep_json(response: Any) -> None:
    """_keep_json, for an async client (httpx2 awaits an async client's hooks)."""
    if _json_answer(response):
        await response.aread()


class WireLog:
    """Keeps the last request a client sent, with any secret masked.

    ``last`` is a dict: {"transport": "http" | "in-process", "method", "url",
    "headers", "body"} where body is the JSON the server received.
    """

    def __init__(self) -> None:
        self.last: dict | None = None
        self.count = 0

    def clear(self) -> None:
        """Forget what was recorded (e.g. the model-list request make_client sends first)."""
        self.last, self.count = None, 0

    def record_http(self, request: Any) -> None:
        """httpx2 request event hook: keep method, url, masked headers and the JSON body."""
        try:
            body: Any = json.loads(request.content) if request.content else None
        except (ValueError, UnicodeDecodeError):
            body = "<non-JSON body>"
        headers = {}
        for name, value in request.headers.items():
            lname = name.lower()
            if lname in ("authorization", "api-key", "x-api-key", "openai-organization", "openai-project"):
                value = "Bearer ***" if lname == "authorization" else "***"
            headers[lname] = redact(value)
        self.last = {
            "transport": "http",
            "method": request.method,
            "url": redact(str(request.url)),
            "headers": headers,
            "body": body,
        }
        self.count += 1

    def record_call(self, kwargs: dict, **extra: Any) -> None:
        """For in-process clients: the keyword arguments of the create() call."""
        self.last = {"transport": "in-process", "body": copy.deepcopy(kwargs), **extra}
        self.count += 1


class NoraClient(ChatClient, Protocol):
    """What make_client() returns, for a type checker: a ChatClient that also has the extras every
    client Nora builds carries (ScriptedClient, LocalClient, and openai.OpenAI with them set on it):
    ``default_model``, the name sent when a turn gives none, and ``wire``, the last request as sent.
    openai.OpenAI built by hand is a ChatClient, not a NoraClient (it has neither).
    So is a GuardedClient wrapping one.  Both are read here, never set: read-only for a type checker.
    Example: client: NoraClient = make_client("scripted"); client.default_model -> 'scripted'
    """

    @property
    def default_model(self) -> str: ...

    @property
    def wire(self) -> WireLog: ...


# --------------------------------------------------------------------------- #
# building real response objects


def make_completion(text: str, model: str, prompt_tokens: int, completion_tokens: int, finish_reason: str = "stop",
                    cached_tokens: int | None = None):
    """A real openai ChatCompletion holding one assistant message (cached_tokens: fills
    usage.prompt_tokens_details, the prompt tokens taken from a cache)."""
    from openai.types.chat import ChatCompletion

    usage: dict = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
    )


def make_chunk(cid: str, created: int, model: str, content: str | None = None, finish_reason: str | None = None,
               role: str | None = None, usage: dict | None = None):
    """A real openai ChatCompletionChunk (a usage-only chunk has no choices)."""
    from openai.types.chat import ChatCompletionChunk

    data: dict = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage is not None:
        data["choices"] = []
        data["usage"] = usage
    else:
        delta: dict = {}
        if role:
            delta["role"] = role
        if content is not None:
            delta["content"] = content
        data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return ChatCompletionChunk.model_validate(data)


# --------------------------------------------------------------------------- #
# the scripted stand-in


class _Completions:
    """client.chat.completions of Nora's own clients: .create is the client's own method."""

    def __init__(self, create: Callable[..., Any]) -> None:
        self.create = create


class _Chat:
    """client.chat of Nora's own clients: .completions.create(**kwargs), the path openai.OpenAI has."""

    def __init__(self, create: Callable[..., Any]) -> None:
        self.completions = _Completions(create)


class ScriptedClient:
    """A stand-in for openai.OpenAI with canned replies and a call log.

    replies: strings returned in order (one string alone is one reply); an Exception
    instance in the list is raised instead (to demo failures).  With no replies at all, every call gets
    an echo that shows what the model was sent, e.g.
    "[scripted reply 2] I was sent 4 messages; the last one says: 'How much is it?'".

    Every call's keyword arguments are kept in ``.calls`` (a deep copy, as sent),
    so ``client.calls[-1]["messages"]`` is exactly the list the "model" received.

    Example:
        client = ScriptedClient(["Hello!", TimeoutError("timed out")])
        client.chat.completions.create(model="m", messages=[...]).choices[0].message.content -> 'Hello!'
        the second call raises TimeoutError
    """

    def __init__(self, replies: list | None = None, model: str = "scripted", chunk_size: int = 1) -> None:
        self._echo = replies is None  # no replies given: echo, also after any enqueued ones are used up
        if isinstance(replies, (str, BaseException)):  # ScriptedClient("Hi") meant one reply, not "H", "i"
            replies = [replies]
        self._replies = list(replies) if replies is not None else []
        self._given = len(self._replies)
        self.default_model = model
        self.default_model_pending = None  # no server to ask: the name is known
        self.calls: list[dict] = []
        self.chunk_size = max(1, chunk_size)  # words per streamed chunk
        self.wire = WireLog()
        self.chat = _Chat(self._create)

    def enqueue(self, *replies: Any) -> None:
        """Add more replies (strings or exceptions) to the end of the queue.  An echoing client
        (made with no replies) answers with these first, then echoes again."""
        self._replies.extend(replies)
        self._given += len(replies)

    @property
    def remaining(self) -> int:
        """Canned replies left; -1 for an echoing client, which never runs out."""
        return -1 if self._echo else len(self._replies)

    def _next_reply(self, messages: list[dict]) -> str:
        n = len(self.calls)
        if self._echo and not self._replies:
            last = messages[-1]["content"] if messages else ""
            if len(last) > 60:
                last = last[:57] + "..."
            return f"[scripted reply {n}] I was sent {count_of(len(messages), 'message')}; the last one says: {last!r}"
        if not self._replies:
            raise RuntimeError(f"ScriptedClient has no replies left (it was given {self._given}) - add more with "
                               f"its .enqueue(...), or make one with no replies to echo what it is sent")
        reply = self._replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return str(reply)

    def _create(self, **kwargs: Any):
        messages = kwargs.get("messages")
        if not isinstance(messages, list):
            raise TypeError("create() needs messages=[...], a list of {'role', 'content'} dicts")
        self.calls.append(copy.deepcopy(kwargs))
        self.wire.record_call(kwargs)
        text = self._next_reply(messages)
        model = kwargs.get("model") or self.default_model
        prompt_tokens = sum(rough_tokens(m.get("content") or "") + 4 for m in messages)
        completion_tokens = rough_tokens(text)
        if kwargs.get("stream"):
            include_usage = bool((kwargs.get("stream_options") or {}).get("include_usage"))
            return self._stream(text, model, prompt_tokens, completion_tokens, include_usage)
        return make_completion(text, model, prompt_tokens, completion_tokens)

    def _stream(self, text: str, model: str, prompt_tokens: int, completion_tokens: int,
                include_usage: bool) -> Iterator:
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        yield make_chunk(cid, created, model, content="", role="assistant")
        words = text.split(" ")
        for i in range(0, len(words), self.chunk_size):
            piece = " ".join(words[i:i + self.chunk_size])
            yield make_chunk(cid, created, model, content=piece if i == 0 else " " + piece)
        yield make_chunk(cid, created, model, finish_reason="stop")
        if include_usage:
            yield make_chunk(cid, created, model, usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            })


# --------------------------------------------------------------------------- #
# the one place that builds a client


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise NoraError(f"{name} must be a number of seconds (got {raw!r})") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise NoraError(f"{name} must be a whole number (got {raw!r})") from None


def choose_backend(backend: str = "auto", api_key: str | None = None, base_url: str | None = None) -> str:
    """auto -> 'openai' when a key or base URL is configured, else 'local' (the embedded model)."""
    if backend not in BACKENDS:
        raise NoraError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if api_key or base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    return "local"


def make_client(
    backend: str = "auto",
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    replies: list | None = None,
    local_responses: str = "openai",
    base_url_name: str | None = None,
    ask_models: bool = True,
) -> NoraClient:
    """Build the client for these settings (arguments win over the environment).

    backend: 'auto' (default: OpenAI-compatible when OPENAI_API_KEY or OPENAI_BASE_URL
    is set, otherwise the embedded model), 'openai', 'local' or 'scripted'.
    Environment: OPENAI_API_KEY, OPENAI_BASE_URL, NORA_MODEL, NORA_TIMEOUT (seconds,
    default 60), NORA_MAX_RETRIES (default 2), NORA_MODEL_PATH (a GGUF for 'local').
    The key is read here and handed to the client; it is never stored anywhere else.
    local_responses: what the embedded model returns, "openai" (openai's types, the
    default) or "plain" (nora_widgets.shapes: no openai import, a faster start); the
    other backends always return openai's types.
    replies: the canned answers of the 'scripted' backend (refused for the others).
    base_url_name: what a refusal of base_url calls it, as a face names the setting (e.g. "--base-url");
    by default "the base URL" ("a base URL" where it says that one is not wanted).
    ask_models: False for a face that builds the client for a turn it sends at once (%%chat, the
    panel's first message, nora ask): the server is not asked for its models here but by that turn
    (default_model_pending), so a server that is down costs one wait, not two.
    Example: make_client("scripted").chat.completions.create(model="m", messages=[...])
    """
    chosen = choose_backend(backend, api_key, base_url)
    if base_url and chosen in ("local", "scripted"):  # it would be ignored without a word
        raise NoraError(f"{base_url_name or 'a base URL'} names a server, and the {chosen!r} backend has none: "
                        "give one or the other (a server is the 'openai' backend)")
    if replies is not None and chosen != "scripted":  # so would these: the model answers instead
        raise NoraError(f"replies are the 'scripted' backend's canned answers, and the {chosen!r} backend has a "
                        "model: make_client('scripted', replies=[...])")
    given_model = model
    model = model or os.environ.get("NORA_MODEL") or None
    if model and looks_like_a_key(model.strip()):  # the key pasted where the name goes: never sent, nor shown
        where = "NORA_MODEL" if not given_model else "the model name"
        raise NoraError(f"{where} looks like an API key, not a model name: a key goes in OPENAI_API_KEY only")
    if chosen == "scripted":
        return ScriptedClient(replies, model=model or "scripted")
    if chosen == "local":
        try:
            from .local import LocalClient
        except ImportError as exc:  # llama-cpp-python missing
            raise ModelUnavailableError(
                "the embedded model needs llama-cpp-python: pip install 'nora-widgets[local]' "
                "(or set OPENAI_API_KEY / OPENAI_BASE_URL to use a server)"
            ) from exc
        return LocalClient(responses=local_responses)
    # openai: the official client, OpenAI itself or any compatible server
    # a bad value names where it came from, as it was given there: NORA_TIMEOUT=0 is '0', not 0.0
    timeout_name, timeout_given = ("timeout", repr(timeout)) if timeout is not None else \
        ("NORA_TIMEOUT", repr(os.environ.get("NORA_TIMEOUT", "").strip()))
    retries_name, retries_given = ("max_retries", repr(max_retries)) if max_retries is not None else \
        ("NORA_MAX_RETRIES", repr(os.environ.get("NORA_MAX_RETRIES", "").strip()))
    timeout = timeout if timeout is not None else _env_float("NORA_TIMEOUT", DEFAULT_TIMEOUT)
    max_retries = max_retries if max_retries is not None else _env_int("NORA_MAX_RETRIES", DEFAULT_MAX_RETRIES)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):  # "5" failed at the comparison
        raise NoraError(f"{timeout_name} must be a number of seconds (got {timeout_given})")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise NoraError(f"{retries_name} must be a whole number (got {retries_given})")
    if not 0 < timeout:  # written so that nan is refused too
        raise NoraError(f"{timeout_name} must be more than 0 seconds (got {timeout_given})")
    if timeout == float("inf"):
        raise NoraError(f"{timeout_name} must be a finite number of seconds (got {timeout_given})")
    if max_retries < 0:
        raise NoraError(f"{retries_name} must be 0 or more (got {retries_given})")
    from_env = (os.environ.get("OPENAI_BASE_URL") or "").strip()
    base_url = (base_url or "").strip() or from_env or None  # " http://..." pasted with a space still works
    if base_url and not _looks_like_url(base_url):
        given = "OPENAI_BASE_URL" if base_url == from_env else base_url_name or "the base URL"
        raise NoraError(f"{given} must start with http:// or https:// and name a host, "
                        f"e.g. http://127.0.0.1:8000/v1 (got {redact(base_url)!r})")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        if not base_url:
            raise ModelUnavailableError("OPENAI_API_KEY is not set: export it, or set OPENAI_BASE_URL for a local server")
        key = NO_KEY  # local servers (Ollama, llama.cpp, vLLM) accept any key
    import openai

    # openai's client appends the path to base_url as text, after any ?query in it (.../v1/?api-version=X
    # chat/completions, a 404): the query goes to every request as the client's default_query instead
    base_url, query = _split_query(base_url)
    wire = WireLog()
    # Any: openai's class declares none of the extras set on it below (wire, default_model, ...)
    client: Any = openai.OpenAI(
        api_key=key,
        base_url=base_url,
        default_query=query,
        timeout=timeout,
        max_retries=max_retries,
        http_client=openai.DefaultHttpx2Client(event_hooks={"request": [wire.record_http],
                                                            "response": [_keep_json]}),
    )
    client.wire = wire
    client.model_windows = {}  # the windows the server states, filled in when it is asked (_stated_windows)
    client.key_refused = None  # 401 when GET /models was refused for the key (describe_client says so)
    client.models_answer = None  # what GET /models answered when asked (_asked_models): `nora models` asks no more
    listed: list[str] | None = []  # a model given, or no server named: nothing to ask
    pending = None
    if base_url and not model:  # None: no answer (the server not up yet), or not asked yet
        listed = _asked_models(client, base_url) if ask_models else None
        if listed is None:  # the name is not known, and is asked for before the next turn
            pending = _AskAgain(client, base_url, asked=ask_models)
    client.listed_models = listed or []
    client.default_model = model or _one_model(client.listed_models) or OPENAI_DEFAULT_MODEL
    client.default_model_pending = pending
    return client


def make_async_client(backend: str = "auto", **settings: Any) -> "AsyncNoraClient | NoraClient":
    """make_client, for arun_turn and astream_turn: the same settings (arguments, then the environment), and
    for a server an openai.AsyncOpenAI configured as make_client's openai.OpenAI is (base URL and its query,
    key, timeout, retries), with the same extras: default_model, listed_models, model_windows, and wire, the
    last request as sent.  The embedded model and the scripted stand-in are in-process and sync: they come
    back as make_client gives them, and arun_turn calls them in a worker thread.
    Like make_client it may ask the server for its models (one GET, 5 s at most): build the client once, at
    start-up, not per request.  A server that did not answer is asked again before a turn that needs its
    model's name, in a worker thread (the event loop does not wait on it).
    Typed AsyncNoraClient | NoraClient: client.default_model and client.wire type-check on either.
    Example: client = make_async_client(); await arun_turn(client, history, "Hi")
    """
    sync: Any = make_client(backend, **settings)
    import openai

    # tested apart: inline, mypy would narrow sync to openai.OpenAI, which declares none of the extras read below
    server = isinstance(sync, openai.OpenAI)
    if not server:  # local or scripted: in-process
        return sync
    wire = WireLog()

    async def record(request: Any) -> None:  # httpx calls an async client's hooks with await
        wire.record_http(request)

    client: Any = openai.AsyncOpenAI(
        api_key=sync.api_key,
        base_url=sync.base_url,
        default_query=sync.default_query or None,
        timeout=sync.timeout,
        max_retries=sync.max_retries,
        http_client=openai.DefaultAsyncHttpx2Client(event_hooks={"request": [record], "response": [_akeep_json]}),
    )
    client.wire = wire
    client.default_model = sync.default_model
    _learnt_from(sync, client)
    twin_pending = sync.default_model_pending
    client.default_model_pending = None if twin_pending is None else _AskTwin(client, sync)
    return client


def _learnt_from(sync: Any, client: Any) -> None:
    """What make_client learnt of the server, on the async client: its models, their windows, a refused key."""
    client.listed_models = list(sync.listed_models)
    client.model_windows = dict(sync.model_windows)
    client.key_refused = sync.key_refused


class _AskTwin:
    """An async client's ``default_model_pending``: its sync twin (make_client's, kept for this) asks the
    server as _AskAgain does, and what it learns is copied over; arun_turn calls it in a worker thread.
    A default_model set by hand meanwhile is kept.  Example: see make_async_client."""

    def __init__(self, client: Any, sync: Any) -> None:
        self._client = weakref.ref(client)  # the client holds this hook: no cycle to keep it alive
        self._sync = sync

    @property
    def asked(self) -> bool:
        return getattr(self._sync.default_model_pending, "asked", True)

    def __call__(self) -> None:
        client, sync = self._client(), self._sync
        if client is None or client.default_model_pending is not self:
            return
        if sync.default_model_pending is not None:
            sync.default_model_pending()
        if sync.default_model_pending is None:  # the server answered: settled for good
            _learnt_from(sync, client)
            if client.default_model == OPENAI_DEFAULT_MODEL:
                client.default_model = sync.default_model
            client.default_model_pending = None


def _split_query(base_url: str | None) -> tuple[str | None, dict | None]:
    """A base URL without its query, and the query's parameters (None: there is none), for an
    Azure-style gateway that wants ?api-version=... on every request.
    Example: _split_query("http://host:8000/v1?api-version=2024-02-01") -> ("http://host:8000/v1", {"api-version": "2024-02-01"})"""
    if not base_url or "?" not in base_url:
        return base_url, None
    parts = urlsplit(base_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) or None
    return urlunsplit(parts._replace(query="", fragment="")), query


def _shown_url(base_url: Any, query: Any) -> str:
    """The base URL as it was given: with the query make_client moved to default_query put back, and any
    key in it (or in the URL) masked.
    Example: _shown_url("http://h:8000/v1/", {"api-version": "2024-02-01", "api-key": "abc"})
        -> 'http://h:8000/v1?api-version=2024-02-01&api-key=***'"""
    shown = str(base_url).rstrip("/")
    if isinstance(query, dict) and query:
        shown += "?" + urlencode({str(k): str(v) for k, v in query.items()}, quote_via=quote)
    return redact(shown)


def _one_model(names: list[str]) -> str | None:
    """The name a server's list gives the default: its one model, else None (none, or several to choose from)."""
    return names[0] if len(names) == 1 else None


# a server that is starting (llama.cpp's server listens before its model is loaded and answers 503),
# or a proxy whose server is down: no answer yet, as when nothing listens
_NOT_UP_YET = (502, 503, 504)


def _asked_models(client: Any, base_url: str) -> list[str] | None:
    """The model names a server lists: asked when no name was given, so that a server with one
    model (`nora serve`, llama.cpp's server, vLLM serving one) gets that name, and Nora names
    the model that really answers; with several (Ollama), Nora can say which there are.
    None when the server gave no answer: nothing listening, no reply in 5 s, or a 502/503/504 (a
    server still starting, a proxy whose server is down); asked again later (make_client's
    default_model_pending).  [] when it answered without a list (no /models, a wrong key...: the first
    real call says what is wrong), and for api.openai.com (dozens: nothing to learn).
    One GET /models; the wire log forgets it (it keeps the last chat request, if any, as it was).
    An answer is kept as client.models_answer too: the names, or the error the server answered with
    (e.g. the 404 of a URL without /v1), which `nora models` reports without asking a second time.
    Example: with `nora serve` at base_url -> ['SmolLM2-135M-Instruct']; nothing listening -> None
    """
    if urlsplit(base_url).hostname == "api.openai.com":
        return []
    import openai

    kept = (client.wire.last, client.wire.count)
    asking = client.with_options(timeout=5.0, max_retries=0)
    try:
        entries = list(asking.models.list().data)
        names = [m.id for m in entries]
        client.model_windows = _stated_windows(asking, base_url, entries)
    except openai.APIConnectionError:  # refused, timed out (APITimeoutError is one), the host unknown
        return None
    except openai.APIStatusError as exc:
        if exc.status_code == 401:  # a wrong key (or none): said where the client is described, not only at the turn
            client.key_refused = 401
        if exc.status_code in _NOT_UP_YET:
            return None
        client.models_answer = exc.with_traceback(None)  # its frames hold this client: no cycle kept
        return []
    except Exception as exc:  # a reply that is not a list of models: an answer all the same
        client.models_answer = exc.with_traceback(None)
        return []
    finally:
        client.wire.last, client.wire.count = kept
    client.models_answer = [name for name in names if isinstance(name, str) and name]
    return list(client.models_answer)


def _stated_windows(client: Any, base_url: str, entries: list) -> dict[str, int]:
    """The context window of each listed model, where the server states it: vLLM and `nora serve`
    list ``max_model_len`` with each model; llama.cpp's server (``owned_by: llamacpp``) says the
    window it serves at GET /props (its list gives only ``meta.n_ctx_train``, the window the model
    was trained with, often far larger than the one it runs with).  Ollama, LM Studio and OpenAI
    state none here: {} (the gauge then uses its table of well-known models, or says unknown).
    Example: `nora serve --n-ctx 1024` -> {'SmolLM2-135M-Instruct': 1024}"""
    windows: dict[str, int] = {}
    for entry in entries:
        stated = (getattr(entry, "model_extra", None) or {}).get("max_model_len")
        if _a_count(stated) and isinstance(entry.id, str):
            windows[entry.id] = stated
    if windows or len(entries) != 1 or getattr(entries[0], "owned_by", None) != "llamacpp":
        return windows
    root = base_url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    try:  # one request more, for llama.cpp's server only; a failure leaves the window unknown
        props = client.get(f"{root}/props", cast_to=object)
        stated = props.get("n_ctx") or (props.get("default_generation_settings") or {}).get("n_ctx")
    except Exception:
        return {}
    return {entries[0].id: stated} if _a_count(stated) and isinstance(entries[0].id, str) else {}


def _a_count(value: Any) -> TypeGuard[int]:
    """A whole number of tokens above 0 (not a bool).  Example: _a_count(2048) -> True, ("2048") -> False"""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _listed_models(client: Any, base_url: str) -> list[str]:
    """What _asked_models gives, [] for no answer too: `nora chat`'s /model NAME and Tab ask this way
    when make_client did not (a name was given).  Example: nothing listening -> []"""
    return _asked_models(client, base_url) or []


class _AskAgain:
    """A client's ``default_model_pending`` while the server has not answered GET /models: calling it
    asks once more (5 s at most, no retries).  An answer settles the client for good: ``listed_models``
    is the server's list, ``default_model`` its one model (else it stays gpt-4o-mini), and
    ``default_model_pending`` becomes None, so later turns ask nothing.  No answer leaves all as it was,
    to be asked again before the next turn.  conversation.py calls it before a turn that would send the
    default name (the asking is here: the core makes no network call of its own); `nora chat`'s /model
    and Tab call it too.  A default_model set by hand meanwhile is kept.
    Example: nora serve started after make_client -> client.default_model_pending(); client.default_model
        -> 'SmolLM2-135M-Instruct'
    """

    def __init__(self, client: Any, base_url: str, asked: bool = True) -> None:
        self._client = weakref.ref(client)  # the client holds this hook: no cycle to keep it alive
        self._base_url = base_url
        self.asked = asked  # False until the first call when make_client(ask_models=False) left the asking to it
        self._held_until = 0.0  # time.monotonic() before which the next call asks nothing (hold)

    def hold(self, seconds: float) -> None:
        """The next call asks nothing if it comes within seconds from now: the server has just given no
        answer, and asking again at once only doubles the wait (5 s each from a server that never answers).
        `nora chat` with stdin not a terminal holds it after make_client's question: its first turn comes
        at once, nothing typed in between.  Later calls ask as always.
        Example: hold(2.0), then a turn 10 ms later -> no GET /models; its next turn asks"""
        self._held_until = time.monotonic() + seconds

    def __call__(self) -> None:
        client = self._client()
        if client is None or client.default_model_pending is not self:
            return
        held, self._held_until = self._held_until, 0.0
        if time.monotonic() < held:
            return
        names = _asked_models(client, self._base_url)
        self.asked = True
        if names is None:  # still no answer
            return
        client.listed_models = names
        if client.default_model == OPENAI_DEFAULT_MODEL:
            client.default_model = _one_model(names) or OPENAI_DEFAULT_MODEL
        client.default_model_pending = None


def not_known_yet(fallback: str | None, then: str = "; ") -> str:
    """How every face says that a server has not yet said which model it serves (then: what joins the
    two halves, "; " or " (" before a closing bracket the caller adds).
    Example: not_known_yet("gpt-4o-mini") -> 'not known yet: the server did not answer when asked for its
        models; the next call asks again and sends its model if it lists one, else gpt-4o-mini'"""
    return (f"not known yet: the server did not answer when asked for its models{then}the next call asks again "
            f"and sends its model if it lists one, else {fallback}")


def key_refused_words(client: Any) -> str:
    """'' or how a server refused the key when asked for its models (a short clause after "which"
    or "the server"); never the key itself.
    Example: with a wrong OPENAI_API_KEY -> 'refused the key (HTTP 401) - check OPENAI_API_KEY'
    Example: with none set -> 'wants a key (HTTP 401) - set OPENAI_API_KEY'"""
    status = getattr(client, "key_refused", None)
    if not isinstance(status, int):
        return ""
    if getattr(client, "api_key", None) == NO_KEY:  # make_client's placeholder: no key was set
        return f"wants a key (HTTP {status}) - set OPENAI_API_KEY"
    return f"refused the key (HTTP {status}) - check OPENAI_API_KEY"


def _looks_like_url(url: str) -> bool:
    """Example: _looks_like_url("http://127.0.0.1:8000/v1") -> True, ("localhost:8000") -> False"""
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def lists_model(names: list[str], name: str | None) -> bool:
    """Whether a server's list of names holds name; Ollama lists tags, so "llama3.2" is "llama3.2:latest".
    Example: lists_model(["llama3.2:latest"], "llama3.2") -> True"""
    return name in names or f"{name}:latest" in names


def model_note(client: Any, name: str | None, choose: str = "--model or NORA_MODEL",
               listed: list[str] | None = None) -> str:
    """'' or one line about the model name a turn will send (name, else the client's default):
    the embedded model does not use a name it is given (it answers as itself, as llama.cpp's
    server does); a server that listed several models, none of them this one, will refuse it
    (choose: how to pick one in the face that shows the note; listed: the server's names when
    asked after make_client, else the client's listed_models).
    Example: model_note(LocalClient(), "gpt-4o") -> "model 'gpt-4o' is not used: the embedded model answers as itself"
    Example: against Ollama with llama3.2 and qwen2.5, no name ->
        "the server lists 2 models (llama3.2, qwen2.5), not 'gpt-4o-mini': choose one with --model or NORA_MODEL"
    """
    default = getattr(client, "default_model", None)
    if getattr(client, "backend", None) == "local":
        asked = name or os.environ.get("NORA_MODEL") or None
        if asked and asked != default:
            origin = "" if name else " (NORA_MODEL)"
            return f"model {asked!r}{origin} is not used: the embedded model answers as itself"
        return ""
    if listed is None:
        listed = getattr(client, "listed_models", None) or []
    sent = name or default
    if len(listed) > 1 and not lists_model(listed, sent):
        shown = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
        return (f"the server lists {count_of(len(listed), 'model')} ({shown}), not {sent!r}: "
                f"choose one with {choose}")
    return ""


def model_used(client: Any, name: str | None) -> str | None:
    """The model name a turn asked for name (None: the client's default) is answered by, as a
    transcript records it: the embedded model answers as itself whatever the name.
    Example: model_used(LocalClient(), "gpt-4o") -> 'SmolLM2-135M-Instruct'"""
    default = getattr(client, "default_model", None)
    return default if getattr(client, "backend", None) == "local" else name or default


def describe_client(client: Any, model: str | None = None) -> str:
    """One line naming the backend and model that answer, e.g.
    'local model SmolLM2-135M-Instruct (llama.cpp, in-process), context window n_ctx=2048 tokens'.
    model: the name the calls send instead of the client's default (the panel's model box); a
    client that describes itself (the embedded model answers as itself) is described as it is.
    A server that did not answer when make_client asked for its models has no known model yet:
    'OpenAI-compatible server http://127.0.0.1:8000/v1, model not known yet: the server did not answer
    when asked for its models (the next call asks again and sends its model if it lists one, else
    gpt-4o-mini)'; once it has answered, the line names the model, and its context window when the
    server states it: 'OpenAI-compatible server http://127.0.0.1:8000/v1, model SmolLM2-135M-Instruct,
    context window 2,048 tokens'.  A server that refused the key when asked (HTTP 401) is said so instead of
    a model it never named: 'OpenAI-compatible server http://127.0.0.1:8000/v1, which refused the key
    (HTTP 401) - check OPENAI_API_KEY'."""
    describe = getattr(client, "describe", None)
    if callable(describe):
        return describe()
    if isinstance(client, ScriptedClient):
        return "scripted stand-in (canned replies, no model)"
    base = getattr(client, "base_url", None)
    pending = getattr(client, "default_model_pending", None)
    if not model and pending is not None:
        fallback = getattr(client, "default_model", None) or OPENAI_DEFAULT_MODEL
        shown = f"model {not_known_yet(fallback, ' (')})" if getattr(pending, "asked", True) else \
            f"model not known yet (the first call asks the server for its models and sends its model if it lists " \
            f"one, else {fallback})"
    else:
        name = model or getattr(client, "default_model", None) or OPENAI_DEFAULT_MODEL
        shown = f"model {name}"
        stated = (getattr(client, "model_windows", None) or {}).get(name)
        if stated:  # the server said it (vLLM, llama.cpp's server, nora serve)
            shown += f", context window {stated:,} tokens"
    if base is not None:
        server = f"OpenAI-compatible server {_shown_url(base, getattr(client, 'default_query', None))}"
        refused = key_refused_words(client)
        if refused and not model:  # the model named would only be the fallback, not one the server said
            return f"{server}, which {refused}"
        return f"{server}, {shown} (the server {refused})" if refused else f"{server}, {shown}"
    return f"{type(client).__name__}, {shown}"
