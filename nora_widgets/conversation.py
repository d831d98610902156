"""The conversation core: a chat is a list, a turn is one function.

A chat-completion API is stateless.  The model remembers nothing between
calls; *this* list is the memory, and every call resends all of it:

    history = [
        {"role": "system",    "content": SYSTEM_PROMPT},   # persona, always first
        {"role": "user",      "content": "Do you have Le Guin?"},
        {"role": "assistant", "content": "Yes, two novels."},
        ...                                                 # (user, assistant) pairs
    ]

Everything here is pure: no widgets, no terminal, no network code of its own.
A *client* is any object with ``.chat.completions.create(**kwargs)`` that
returns an object shaped like ``openai.types.chat.ChatCompletion`` (or, with
``stream=True``, an iterator of ``ChatCompletionChunk``); ``ChatClient`` says
so for a type checker.
"""

from __future__ import annotations

import inspect
import re
from operator import itemgetter
from itertools import islice
from typing import Any, Callable, Generator, Protocol

from .errors import (
    ArgumentError,
    EmptyMessageError,
    Failure,
    HistoryError,
    MessageTooLongError,
    PersonaTooLongError,
    StreamCutError,
    count_of,
    describe_failure,
    mask_keys,
)
from ._answers import not_a_completion, raise_if_not_json, reply_not_streamed
from ._message_hints import bad_content, bad_role, not_a_list, not_a_message

__all__ = [
    "SYSTEM_PROMPT",
    "ChatClient",
    "DEFAULT_MODEL",
    "DEFAULT_TEMPERATURE",
    "ROLES",
    "new_history",
    "persona_only",
    "undo_turn",
    "message_at",
    "message_number",
    "edit_message",
    "validate_history",
    "validate_user_text",
    "is_client",
    "not_a_client",
    "temperature_problem",
    "means_no_persona",
    "messages_to_send",
    "run_turn",
    "stream_turn",
    "safe_run_turn",
    "TurnResult",
    "trim_history",
    "trim_to_budget",
    "dropped_by_trim",
    "dropped_indexes",
    "set_persona",
]

SYSTEM_PROMPT = (
    "You are Nora, a terse, helpful assistant for a small bookshop's website. "
    "Keep answers under three sentences."
)
DEFAULT_MODEL = "gpt-4o-mini"  # used only when the client names no model of its own
DEFAULT_TEMPERATURE = 0.7
ROLES = ("system", "user", "assistant")
_ROLE_SET = frozenset(ROLES)
_role_of = itemgetter("role")

Message = dict  # {"role": str, "content": str}


class _CompletionsLike(Protocol):
    def create(self, *args: Any, **kwargs: Any) -> Any:
        """create(model=..., messages=[...], temperature=..., stream=False) -> a ChatCompletion, or chunks."""
        ...


class _ChatLike(Protocol):
    @property
    def completions(self) -> _CompletionsLike: ...


class ChatClient(Protocol):
    """What a turn needs of a client, for a type checker: ``.chat.completions.create(**kwargs)``.

    openai.OpenAI, ScriptedClient, LocalClient, GuardedClient and make_client()'s result are ChatClients;
    so is any object of your own with that attribute path (duck typing: no base class to inherit).
    ``default_model`` (the name sent when a turn gives none) is read when a client has it, and is not
    required, so it is not part of this type: read it with getattr(client, "default_model", None).
    make_client() returns a NoraClient (nora_widgets.clients), this type with ``default_model`` and ``wire``.
    Example: client: ChatClient = make_client(); run_turn(client, history, "Hi")
    """

    @property
    def chat(self) -> _ChatLike: ...


# --------------------------------------------------------------------------- #
# building and checking the list


def new_history(system_prompt: str | None = SYSTEM_PROMPT) -> list[Message]:
    """A fresh conversation: just the persona (none for None or blank text, as set_persona).

    Example: new_history("Be brief.") -> [{'role': 'system', 'content': 'Be brief.'}]; new_history("  ") -> []
    """
    return [{"role": "system", "content": system_prompt}] if _persona_text(system_prompt) else []


def _persona_text(text: Any) -> str | None:
    """text if it is a persona, None for None or blank text; anything else is refused in one line."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise HistoryError(f"the persona must be text (or None for none), not {type(text).__name__}")
    return text if text.strip() else None


def persona_only(history: list[Message]) -> list[Message]:
    """The persona alone, as a new list: [the leading system message], or [] when there is none.  A
    system message further down is no persona (kept alone, it would become one): what /clear and
    %chat reset keep.  Example: persona_only([u, a, s, u2]) -> []; persona_only([s, u, a]) -> [s]"""
    return history[:1] if history and isinstance(history[0], dict) and history[0].get("role") == "system" else []


def set_persona(history: list[Message], text: str | None) -> None:
    """Make text the persona, in place: the leading system message is replaced by a new dict
    (copies taken earlier keep the old one), or one is inserted; blank text or None removes it.

    Example: set_persona(h, "Be brief.") -> h[0] == {"role": "system", "content": "Be brief."}
    """
    if not isinstance(history, list):
        raise HistoryError(f"the conversation must be a list of messages, not {type(history).__name__}")
    text = _persona_text(text)
    has_persona = bool(persona_only(history))
    if text is not None:
        persona = {"role": "system", "content": text}
        if has_persona:
            history[0] = persona
        else:
            history.insert(0, persona)
    elif has_persona:
        del history[0]


def undo_turn(history: list[Message]) -> list[Message]:
    """Take the last turn out of history, in place, and return it: the last user message and
    everything after it.  The model will never know it happened: the next call does not send it.
    Nothing to undo (no user message) returns [] and changes nothing.
    Example: [s, u1, a1, u2, a2] -> returns [u2, a2]; history is now [s, u1, a1]
    """
    validate_history(history)
    for i in range(len(history) - 1, -1, -1):
        if history[i]["role"] == "user":
            removed = history[i:]
            del history[i:]
            return removed
    return []


def message_at(history: list[Message], index: int | str) -> Message:
    """history[index], counted from 0 (the persona, when there is one, is message 0), with a one-line
    ArgumentError (a NoraError) for a number that names no message (message_number reads index).
    Example: message_at([s, u1, a1], "2") -> a1; message_at([s, u1, a1], 3) raises
        ArgumentError('there is no message 3: the conversation has 3 messages, numbered 0 to 2')
    """
    return history[message_number(history, index)]


def message_number(history: list[Message], index: int | str) -> int:
    """The number of a message of history, as an int: what every face reads from the number typed
    (/edit N, %chat edit N, the panel's message box), so each shows and stores the same number.
    index may be an int or the number as typed, white space around it and leading zeros allowed; a
    negative one is refused, not read from the end: a face shows the numbers 0, 1, 2... and nothing else.
    A number that names no message is one ArgumentError line (a NoraError), as message_at says it.
    Example: message_number([s, u1, a1], " 02 ") -> 2; message_number([s, u1, a1], "two") raises
        ArgumentError("the message number must be a whole number from 0 to 2 (got 'two')")
    """
    validate_history(history)
    count = len(history)
    if not count:
        raise ArgumentError("there are no messages: the conversation is empty")
    number = index.strip() if isinstance(index, str) else index
    if isinstance(number, str) and number.isascii() and number.isdigit():  # isdigit() alone lets '²' through
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ArgumentError(f"the message number must be a whole number from 0 to {count - 1} (got {index!r})")
    if number >= count:
        raise ArgumentError(f"there is no message {number}: the conversation has {count_of(count, 'message')}, "
                        f"numbered 0 to {count - 1}")
    return number


def edit_message(history: list[Message], index: int | str, text: str) -> Message:
    """Rewrite the past, in place: message `index` (counted from 0, as history[index]; message_number
    reads it) gets `text` as its content, the white space around it trimmed (as every face takes it:
    /edit N TEXT, %chat edit, the panel's Save edit; the white space inside is kept), and keeps its
    role; returns the message it replaced.  The model cannot tell: it has no memory, so the next call
    sends the list as it is now and the reply follows it.  The message is a new dict (copies taken
    earlier keep the old one, as with set_persona); message 0, the persona when there is one, is edited
    like any other.  Bad input (a number that names no message, empty text) is one ArgumentError line,
    and the list is unchanged.
    Example: h = [s, u1, {"role": "assistant", "content": "Two novels."}]
             edit_message(h, 2, "Three novels. ") -> returns the old reply; h[2] == {"role": "assistant",
             "content": "Three novels."}, and the next run_turn sends that
    """
    number = message_number(history, index)
    old = history[number]
    if not isinstance(text, str):
        raise ArgumentError(f"the new text must be a string (got {type(text).__name__})")
    content = text.strip()  # the one rule for an edit's text: ' Yes. ' and 'Yes.' are the same edit
    if not content:
        raise ArgumentError(f"the new text for message {number} is empty: a message needs some text")
    history[number] = {**old, "content": content}  # any other key of the message (e.g. "name") is kept
    return old


def validate_history(history: Any) -> None:
    """Refuse anything that is not a list of {"role", "content"} dicts.

    Raises HistoryError with a one-line message naming the first bad item.
    Example: validate_history([{"role": "bot", "content": "hi"}]) raises
        HistoryError("message 0: role must be one of system, user, assistant (got 'bot')")
    """
    if not isinstance(history, list):
        raise HistoryError(not_a_list(history))
    # Fast path, run on every turn: one plain loop that only answers "all fine?".  The names
    # are made local first (a local is the cheapest name to look up in a loop), and
    # `x.__class__` is read rather than `type(x)` called (~10% less per message; isinstance()
    # below goes by __class__ too).  A missing key or an unhashable role raises, which also
    # means "not fine".
    dict_, str_, roles = dict, str, _ROLE_SET
    try:
        for message in history:
            if message.__class__ is not dict_ or message["role"] not in roles or message["content"].__class__ is not str_:
                break
        else:
            return
    except (KeyError, TypeError):
        pass
    for i, message in enumerate(history):  # something is wrong: find it and name it
        if not isinstance(message, dict):  # said with what to append instead (a reply object, a string...)
            raise HistoryError(not_a_message(i, message))
        shape = "(a message is {'role': ..., 'content': ...})"  # a key left out is said so, not as "got None"
        if "role" not in message:
            raise HistoryError(f"message {i}: has no 'role' {shape}")
        role = message.get("role")
        if role not in ROLES:
            raise HistoryError(bad_role(i, role, ROLES))  # "...; did you mean 'assistant'?"
        if "content" not in message:
            raise HistoryError(f"message {i}: has no 'content' {shape}")
        if not isinstance(message.get("content"), str):
            raise HistoryError(bad_content(i, message.get("content")))


def means_no_persona(text: str) -> bool:
    """Whether a persona as a person types it means none: blank, or the word off (any case).
    One rule for --system, /system and %chat --system.  Example: means_no_persona(" OFF ") -> True"""
    return text.strip().lower() in ("", "off")


def temperature_problem(value: Any, name: str = "temperature") -> str:
    """'' for a temperature Nora sends (a number from 0 to 2), else one line saying why not.

    One check for every face: name is how the face calls the setting (--temperature, /temperature).
    Example: temperature_problem(3.0, "--temperature") -> '--temperature must be a number from 0 to 2 (got 3)';
             temperature_problem("warm", "/temperature") -> "/temperature must be a number from 0 to 2 (got 'warm')"
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number from 0 to 2 (got {value!r})"
    if not 0 <= number <= 2:  # written so that nan is refused too
        return f"{name} must be a number from 0 to 2 (got {number:g})"
    return ""


def validate_user_text(user_text: Any) -> str:
    """Refuse empty or non-string input before anything is sent.

    Example: validate_user_text("   ") raises EmptyMessageError('nothing to send: the message is empty')
    """
    if not isinstance(user_text, str):
        raise EmptyMessageError(f"the message must be text, not {type(user_text).__name__}")
    if not user_text.strip():
        raise EmptyMessageError("nothing to send: the message is empty")
    return user_text


def _default_model(client: Any) -> str:
    """The name a turn sends when it names none: the client's default_model.  A client whose default
    is not known yet (make_client's, when the server had not answered its question about models) has a
    hook, default_model_pending, that asks the server again: called here first, once per turn.  The
    asking is the client's (clients.py); this module makes no call of its own.  Any other client has
    None there (or no such attribute), which costs a turn nothing."""
    pending = getattr(client, "default_model_pending", None)
    if pending is not None:
        pending()
    return getattr(client, "default_model", None) or DEFAULT_MODEL


# --------------------------------------------------------------------------- #
# trimming: what a long conversation forgets


def _start_of_last_turns(history: list[Message], n: int) -> tuple[int, bool]:
    """Where the last n turns of history begin, and whether a system message stands among them:
    history[start:] holds them, found by walking back from the end, so a trim that keeps the last
    few never has to look at the start of a 10,000-message list.  A turn starts at a user message
    and holds the replies after it; messages before the first user message (e.g. a greeting) form
    a turn of their own.  Example: [s, u1, a1, u2, a2], n=1 -> (3, False); n=0 -> (5, False); n=5 -> (0, True)"""
    if not n:
        return len(history), False
    turns, inside = 0, False
    for i in range(len(history) - 1, -1, -1):
        role = history[i]["role"]
        if role == "user":
            turns += 1
            if turns == n:
                return i, inside
        elif role == "system":
            inside = True
    return 0, inside  # n turns or fewer, a greeting before the first user message counted as one: all of it


def _with_system(history: list[Message], start: int) -> list[Message]:
    """history[start:], after the system messages in front of it, each where it stands in the
    conversation: a persona changed mid-chat, or a note added later, is never moved before the
    turns it followed.  Example: [s1, u1, a1, s2, u2, a2], start 3 -> [s1, s2, u2, a2]"""
    return [m for m in islice(history, start) if m["role"] == "system"] + history[start:]


def trim_history(history: list[Message], keep_last_n_turns: int = 3) -> list[Message]:
    """Keep the system message(s) plus the last N user/assistant turns, in their order.

    Returns a new list; the input is never changed.  A turn is a user message
    and the reply that follows it, so a pair is never split.  Asking for more
    turns than there are keeps them all.  A system message further down the list
    stays where it was among the turns kept (it is never moved to the front).
    Example: 1 system + 6 turns (13 messages), keep_last_n_turns=3 -> 7 messages.
    """
    if isinstance(keep_last_n_turns, bool) or not isinstance(keep_last_n_turns, int) or keep_last_n_turns < 0:
        if isinstance(keep_last_n_turns, list) and isinstance(history, int):  # trim_history(2, history)
            raise ArgumentError("trim_history takes (history, keep_last_n_turns) in that order: "
                             f"e.g. trim_history(history, {history})")
        got = f"a {type(keep_last_n_turns).__name__}" if isinstance(keep_last_n_turns, (list, dict)) \
            else repr(keep_last_n_turns)  # not a whole conversation printed in one line
        raise ArgumentError(f"keep_last_n_turns must be a whole number >= 0 (got {got})")
    try:
        start, inside = _start_of_last_turns(history, keep_last_n_turns)
        if inside:  # a system message among the turns kept: it stays where it stands
            return _with_system(history, start)
        return [m for m in history if m["role"] == "system"] + history[start:]  # all of them are in front
    except (TypeError, KeyError, AttributeError):
        validate_history(history)  # a HistoryError naming the bad item, rather than KeyError: 'role'
        raise


def trim_to_budget(
    history: list[Message],
    max_tokens: int,
    count: Callable[[Message], int],
) -> list[Message]:
    """Keep the system message(s) plus as many recent whole turns as fit in max_tokens, in their order.

    ``count(message) -> int`` gives one message's token cost (for example
    ``token_counter(client)``, from nora_widgets, whose ``count.many(messages)``
    counts a block of messages in one call; any callable works).  Returns a new list.
    The newest turn is always kept, even if it alone is over budget (the caller
    decides whether that is an error).  The budget is the sum of count(message): the
    prompt as sent costs a few tokens more (the reply primer, count_tokens(kept).overhead:
    4 for the embedded model), so leave room for those and for the reply.
    Example: budget 100, system 20, turns costing [50, 40, 30] -> system + last two turns.
    Example: history = trim_to_budget(history, 1500, token_counter(client))   # then run_turn(client, history, ...)
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, float)):
        raise ArgumentError(f"max_tokens must be a number of tokens (got {max_tokens!r})")
    try:
        return _fit_budget(history, max_tokens, count)
    except (TypeError, KeyError, AttributeError):
        validate_history(history)  # a HistoryError naming the bad item, rather than KeyError: 'role'
        raise


def _fit_budget(history: list[Message], max_tokens: float, count: Callable[[Message], int]) -> list[Message]:
    """trim_to_budget's walk, once max_tokens is known to be a number."""
    system = [m for m in history if m["role"] == "system"]
    used = sum(map(count, system))
    many = getattr(count, "many", None) or (lambda block: list(map(count, block)))
    # Walk back from the newest message in blocks of 16, 32, 64, ... messages.  A turn is
    # complete when we reach its user message.  A block with no system message, whose turns
    # all fit, is taken whole (its costs summed in one go); otherwise it is walked message by
    # message.  Doubling blocks keep a small budget cheap (few messages counted) and a large
    # one fast (few Python steps per message).
    start = end = len(history)  # history[start:] (without system messages) is kept; history[end:] is seen
    turn_cost, pending, kept_any, size = 0, False, False, 16  # pending: unkept messages in front of start
    newest_system = -1
    while end:
        lo, size = max(0, end - size), size * 2
        chunk = history[lo:end]
        block, costs = list(map(_role_of, chunk)), many(chunk)  # roles and costs of the block, in order
        if kept_any and "system" not in block:
            if "user" not in block:  # all of it belongs to the turn in front of the kept part
                turn_cost, pending, end = turn_cost + sum(costs), True, lo
                continue
            first = block.index("user")  # the oldest turn that starts in this block
            head = sum(costs[:first])
            total = used + turn_cost + sum(costs) - head
            if total <= max_tokens:  # it fits, so every newer turn in the block fits too
                used, start, turn_cost, pending, end = total, lo + first, head, first > 0, lo
                continue
        for j in range(end - lo - 1, -1, -1):  # message by message
            role = block[j]
            if role == "system":
                newest_system = max(newest_system, lo + j)
                continue
            turn_cost, pending = turn_cost + costs[j], True
            if role == "user":
                if kept_any and used + turn_cost > max_tokens:
                    break
                used, turn_cost, pending, start, kept_any = used + turn_cost, 0, False, lo + j, True
        else:
            end = lo
            continue
        break
    else:  # reached the start: messages before the first user message are a turn of their own
        if pending and (not kept_any or used + turn_cost <= max_tokens):
            start = 0
    if newest_system < start:  # no system message inside the kept part: one slice does it
        return system + history[start:]
    return _with_system(history, start)  # each system message where it stands among the turns kept


def dropped_by_trim(history: list[Message], kept: list[Message]) -> list[Message]:
    """The messages of history that a trim left out (by identity, in order)."""
    return [history[i] for i in dropped_indexes(history, kept)]


def dropped_indexes(history: list[Message], kept: list[Message]) -> list[int]:
    """Where in history the messages a trim left out stand.  Example: [s, u1, a1, u2], kept [s, u2] -> [1, 2]"""
    kept_ids = {id(m) for m in kept}
    return [i for i, m in enumerate(history) if id(m) not in kept_ids]


def messages_to_send(
    history: list[Message],
    user_text: str | None = None,
    keep_last_n_turns: int | None = None,
) -> list[Message]:
    """Exactly the list the next call sends: the (trimmed) history plus the new user turn.

    keep_last_n_turns=None sends everything; 0 sends only the persona and the new
    message (the model forgets everything: "amnesia").
    Example: messages_to_send([sys, u1, a1], "hi", keep_last_n_turns=0) -> [sys, {"role": "user", "content": "hi"}]
    """
    sent = list(history) if keep_last_n_turns is None else trim_history(history, keep_last_n_turns)
    if user_text is not None:
        sent.append({"role": "user", "content": user_text})
    return sent


# --------------------------------------------------------------------------- #
# one turn


def _send(client: Any, history: list[Message], keep_last_n_turns: int | None, model: str, temperature: float,
          kwargs: dict) -> tuple[Any, list[Message]]:
    """One call to the API with history (already ending in the new user turn).

    Returns (response, the list that call sent).  With trimming on, only the last
    keep_last_n_turns turns go out.  If the server still says the context window is
    exceeded, trim to half as many turns and retry once; without trimming, the error
    goes up so the user can decide (/trim N).
    Example: keep_last_n_turns=4, the server overflows once -> (response, persona + 2 turns + new one)
    """
    if keep_last_n_turns is None:  # the whole list itself: no copy on the hot path
        return _call(client, history, model, temperature, kwargs), history
    sent = trim_history(history[:-1], keep_last_n_turns) + [history[-1]]
    try:
        return _call(client, sent, model, temperature, kwargs), sent
    except Exception as exc:
        if describe_failure(exc).kind != "context_length":
            raise
        sent = trim_history(history[:-1], _fewer_turns(keep_last_n_turns, sent)) + [history[-1]]
        return _call(client, sent, model, temperature, kwargs), sent


def _fewer_turns(keep_last_n_turns: int, sent: list[Message]) -> int:
    """How many earlier turns the one retry after a context overflow keeps: half of those the failed call
    sent (or of keep_last_n_turns, if fewer).  Example: keep 4, sent held 4 earlier turns -> 2"""
    return min(keep_last_n_turns, _earlier_turns(sent)) // 2


def _cut_off(exc: Exception, pieces: list[str]) -> StreamCutError:
    """Part of the reply arrived, then the stream broke: say so, rather than "could not connect".
    Example: 12 characters, then the connection closed -> StreamCutError("the reply was cut off after 12
        characters (the server closed the connection)")"""
    received = sum(len(p) for p in pieces)
    why = describe_failure(exc)
    reason = "the server closed the connection" if why.kind == "stream_cut" else why.message
    return StreamCutError(f"the reply was cut off after {received} characters ({reason})")


def _raise_if_async(name: str, client: Any, response: Any) -> None:
    """A sync turn whose client is async got a coroutine (or an async stream) instead of a reply: nothing
    was sent.  Close it (no "coroutine was never awaited" warning) and say in one line what to call instead.
    Only ever called on the error path, once reading the reply has failed.
    Example: run_turn(openai.AsyncOpenAI(), history, "hi") -> TypeError('run_turn got an async client
        (AsyncOpenAI): await arun_turn(client, history, text) instead')"""
    if not (hasattr(response, "__await__") or hasattr(response, "__aiter__")):
        return
    close = getattr(response, "close", None)  # a coroutine's close(); an async stream has nothing to free yet
    if close is not None and hasattr(response, "cr_frame"):
        close()
    instead = "astream_turn" if name == "stream_turn" else "arun_turn"
    raise TypeError(f"{name} got an async client ({type(client).__name__}): "
                    f"{'async for piece in' if instead == 'astream_turn' else 'await'} "
                    f"{instead}(client, history, text) instead") from None


def _is_async(create: Any) -> bool:
    """Whether create is an async def, under any decorators (openai's are functools.wraps).
    Example: openai.AsyncOpenAI().chat.completions.create -> True; ScriptedClient()'s -> False"""
    try:
        create = inspect.unwrap(create)
    except ValueError:  # a __wrapped__ that never ends: take create as it is
        pass
    return inspect.iscoroutinefunction(create)


def _report_sent(on_sent: Callable[[list[Message]], None], sent: list[Message],
                 history: list[Message], before: int) -> None:
    """Tell on_sent what the call sent, once the turn is in history.  Untrimmed, the call sent
    history itself, which has since grown by the reply: hand over a copy as it was sent.
    Example: history [s, u1, a1] (before=1), sent is history -> on_sent([s, u1])"""
    on_sent(history[:before + 1] if sent is history else sent)


def _earlier_turns(sent: list[Message]) -> int:
    """User turns in sent before the new one.  Example: [sys, u1, a1, u2] -> 1"""
    return sum(1 for m in sent if m["role"] == "user") - 1


def _call(client: Any, sent: list[Message], model: str, temperature: float, kwargs: dict) -> Any:
    """client.chat.completions.create, with clearer errors where there are some (_raise_clearer)."""
    try:
        return client.chat.completions.create(messages=sent, model=model, temperature=temperature, **kwargs)
    except Exception as exc:
        _raise_clearer(exc, client, sent)
        raise


def _raise_clearer(exc: Exception, client: Any, sent: list[Message]) -> None:
    """The cold path of a failed create(): raise a clearer error when there is one to say
    (not a client, the message alone too long); otherwise return, and the caller re-raises."""
    _raise_if_not_a_client(exc, client)
    raise_if_not_json(exc)
    _raise_if_too_long(exc, sent, client)


# Ctrl-C (Kernel > Interrupt) while the model answers: run_turn and stream_turn raise KeyboardInterrupt(CANCELLED)
# from the turn itself, "from None": the notebook's traceback then ends at the turn and says what happened to the
# list, not ten frames deep in llama.cpp's code.  Raised in place (not by a helper) so no helper's frame shows.
CANCELLED = "cancelled: the turn was rolled back and the history is as it was; run it again to send it"


def _raise_if_swapped(name: str, client: Any, history: Any, user_text: Any) -> None:
    """history was refused: if the arguments came in another order (the client or the text where the
    list goes, the list where the client or the text goes), say the order, not "not ScriptedClient".
    Example: run_turn(history, client, "hi") -> 'run_turn takes (client, history, user_text) in that order: ...'"""
    if is_client(history) or isinstance(client, list) or isinstance(user_text, list):
        raise HistoryError(f"{name} takes (client, history, user_text) in that order: got a "
                           f"{type(client).__name__}, a {type(history).__name__} and a {type(user_text).__name__}"
                           f" - e.g. {name}(client, history, \"Hello!\")") from None


def is_client(client: Any) -> bool:
    """Whether client has .chat.completions.create to call.  Example: is_client(ScriptedClient()) -> True;
    is_client(ScriptedClient) -> False (the class, not a client)"""
    return not isinstance(client, type) and callable(
        getattr(getattr(getattr(client, "chat", None), "completions", None), "create", None))


def not_a_client(client: Any) -> str:
    """The one line for something given as a client that is not one.  Example: not_a_client(ScriptedClient) ->
    'the client must be ... not type (that is the class ScriptedClient: make one, ScriptedClient())'"""
    what = (f"that is the class {client.__name__}: make one, {client.__name__}()" if isinstance(client, type)
            else "make one with make_client()")
    return (f"the client must be an OpenAI-style client with .chat.completions.create(), not "
            f"{type(client).__name__} ({what})")


def _raise_if_not_a_client(exc: Exception, client: Any) -> None:
    """An AttributeError or TypeError because client has no .chat.completions.create to call (None, a list,
    the response of an earlier call, the class ScriptedClient itself...) becomes one TypeError line that
    says what a client is."""
    if isinstance(exc, (AttributeError, TypeError)) and not is_client(client):
        raise TypeError(not_a_client(client)) from exc


def _raise_if_too_long(exc: Exception, sent: list[Message], client: Any = None) -> None:
    """If exc says the context window overflowed and trimming cannot help (sent held no earlier
    turn, or the persona and the new message alone are over the window), raise MessageTooLongError,
    which says the message itself is too long, or PersonaTooLongError when the persona is the larger
    of the two (its advice: shorten the persona, not send the message in parts).  Otherwise return
    (also when the messages fit and only the reply's max_tokens does not).
    A 413 (a body over the server's limit, as nora serve's) with no earlier turn sent is the same case.
    Example: a 40,000-character persona, "Hi" -> PersonaTooLongError("the persona and your message
        (40,000 + 2 characters) overflow the 2,048-token context window")"""
    failure = describe_failure(exc)
    if failure.status == 413 and _earlier_turns(sent) <= 0:  # a body over the server's limit, nothing to trim
        over = "are more than the server takes (HTTP 413)"  # its own words stay in exc, the __cause__
    elif failure.kind != "context_length" \
            or getattr(exc, "reply_too_long", False) is True:  # a smaller max_tokens would fit
        return
    else:
        limit = _window_in(exc)
        if _earlier_turns(sent) > 0 and not _alone_over(sent, limit, client):
            return
        over = f"overflow the {limit:,}-token context window" if isinstance(limit, int) \
            else "overflow the model's context window"
    persona = sum(len(m["content"]) for m in sent if m["role"] == "system")
    message = len(sent[-1]["content"])
    if persona > message:  # what overflows is mostly the persona: sending the message in parts cannot help
        raise PersonaTooLongError(
            f"the persona and your message ({persona:,} + {message:,} characters) {over}") from exc
    raise MessageTooLongError(f"your message and persona ({message:,} + {persona:,} characters) {over}") from exc


_WINDOW_SAID = re.compile(r"maximum context length is ([\d,]+) tokens")  # OpenAI's and vLLM's wording


def _window_in(exc: Exception) -> int | None:
    """The context window an overflow error names: ContextWindowError.limit, or the number in
    the server's "maximum context length is 8192 tokens".  Example: that text -> 8192"""
    limit = getattr(exc, "limit", None)
    if isinstance(limit, int):
        return limit
    said = _WINDOW_SAID.search(str(exc))
    return int(said.group(1).replace(",", "")) if said else None


def _alone_over(sent: list[Message], limit: int | None, client: Any) -> bool:
    """Whether the persona and the new message alone are over the window: trimming earlier turns
    cannot help then.  Counted exactly for the embedded model; for a server the count is an
    estimate, so it has to be over by a quarter before Nora says so (else the trim advice stays).
    Example: a 1 MB paste into a 2,048-token window after ten turns -> True"""
    if limit is None:
        return False
    from .tokens import count_tokens  # only on this cold path: a failed call

    alone = [m for m in sent[:-1] if m["role"] == "system"] + [sent[-1]]
    counted = count_tokens(alone, client)
    return counted.total > (limit if counted.exact else limit * 1.25)


def run_turn(
    client: ChatClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    *,
    on_sent: Callable[[list[Message]], None] | None = None,
    **kwargs: Any,
) -> str:
    """Append the user turn, send the whole list, append the reply, return its text.

    The history grows by exactly two messages.  If the call fails (any exception,
    Ctrl-C included) the history is put back exactly as it was and the error is
    re-raised: the list is never left half-updated.  keep_last_n_turns sends only
    the persona and that many recent turns (the list itself keeps everything).
    on_sent(messages), if given, is called once the turn has succeeded, with the
    exact list the successful call sent (after any retry with fewer turns); never
    on failure.
    Example: history of 1 (system) -> after run_turn: 3 messages, client saw 2.
    Example: run_turn(client, history, "hi", keep_last_n_turns=2, on_sent=print) prints what went out.
    """
    try:
        validate_history(history)
    except HistoryError:
        _raise_if_swapped("run_turn", client, history, user_text)
        raise
    if user_text.__class__ is not str or not user_text.strip():  # the usual case costs no call
        validate_user_text(user_text)
    before = len(history)
    history.append({"role": "user", "content": user_text})
    try:
        if keep_last_n_turns is None:  # the usual case: the whole list itself, called here (no helper frames)
            sent = history
            try:
                if kwargs:
                    response = client.chat.completions.create(messages=history, model=model or _default_model(client),
                                                              temperature=temperature, **kwargs)
                else:  # no **: a call with named arguments only builds no extra dict (~120 ns a turn)
                    response = client.chat.completions.create(messages=history, model=model or _default_model(client),
                                                              temperature=temperature)
            except Exception as exc:
                _raise_clearer(exc, client, history)
                raise
        else:
            response, sent = _send(client, history, keep_last_n_turns, model or _default_model(client), temperature,
                                   kwargs)
        try:
            reply_text = response.choices[0].message.content  # choices is a list: n candidates
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            _raise_if_async("run_turn", client, response)
            raise not_a_completion(response) from exc
    except BaseException as exc:
        del history[before:]
        if exc.__class__ is KeyboardInterrupt and not exc.args:  # a bare Ctrl-C: say so from here
            raise KeyboardInterrupt(CANCELLED) from None
        mask_keys(exc)  # a server's echo of the key must not reach the traceback
        raise
    if reply_text is None:  # e.g. a reply that is only a tool call
        reply_text = ""
    history.append({"role": "assistant", "content": reply_text})
    if on_sent is not None:
        _report_sent(on_sent, sent, history, before)
    return reply_text


def stream_turn(
    client: ChatClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    *,
    on_sent: Callable[[list[Message]], None] | None = None,
    **kwargs: Any,
) -> Generator[str, None, None]:
    """Like run_turn, but yield the reply's text pieces as they arrive.

    The full reply is appended to history only when the stream has ended.  If the
    stream fails, or the caller stops early (Ctrl-C, break, .close()), the history
    is rolled back to what it was: no half reply is ever kept.  on_sent as in
    run_turn: called after the last piece, once the reply is in history.
    Bad input is refused when stream_turn is called, before any piece is asked for.  A server that
    ignores "stream": true and sends the whole completion as JSON: its text is the one piece.
    Example: "".join(stream_turn(client, history, "hi")) == history[-1]["content"]
    """
    try:
        validate_history(history)
    except HistoryError:
        _raise_if_swapped("stream_turn", client, history, user_text)
        raise
    validate_user_text(user_text)
    return _stream_turn(client, history, user_text, model, temperature, keep_last_n_turns, on_sent, kwargs)


def _stream_turn(client: ChatClient, history: list[Message], user_text: str, model: str | None, temperature: float,
                 keep_last_n_turns: int | None, on_sent: Callable[[list[Message]], None] | None,
                 kwargs: dict) -> Generator[str, None, None]:
    """stream_turn's generator, once its input has been checked."""
    before = len(history)
    history.append({"role": "user", "content": user_text})
    pieces: list[str] = []
    completed = False
    try:
        stream, sent = _send(client, history, keep_last_n_turns, model or _default_model(client), temperature,
                             {"stream": True, **kwargs})
        chunks = 0
        try:
            for chunk in stream:
                chunks += 1
                if not chunk.choices:  # e.g. the final usage-only chunk
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    pieces.append(piece)
                    yield piece
        except Exception as exc:
            if not pieces:
                if not chunks:
                    _raise_if_async("stream_turn", client, stream)
                raise_if_not_json(exc)
                raise
            raise _cut_off(exc, pieces) from exc
        if chunks == 0:  # not a stream: a whole reply is used, anything else raises why not
            piece = reply_not_streamed(stream)
            if piece:
                pieces.append(piece)
                yield piece
        completed = True
    except KeyboardInterrupt as exc:  # rolled back below, in finally
        if exc.__class__ is KeyboardInterrupt and not exc.args:  # a bare Ctrl-C: say so from here
            raise KeyboardInterrupt(CANCELLED) from None
        raise
    except Exception as exc:
        mask_keys(exc)  # a server's echo of the key must not reach the traceback
        raise
    finally:
        if completed:
            history.append({"role": "assistant", "content": "".join(pieces)})
        else:
            del history[before:]
    if on_sent is not None:  # reached only when the stream completed
        _report_sent(on_sent, sent, history, before)


class TurnResult(str):
    """The text safe_run_turn returns: the reply, or a one-line error message.

    It is a plain str (print it, compare it), plus ``.ok`` and ``.failure``
    (a nora_widgets.errors.Failure, or None) for UIs that need to know what failed,
    and ``.sent``: the list of messages the successful call sent (trimming and an
    overflow retry included), or None when nothing was sent successfully.
    Example: safe_run_turn(client, history, "hi", keep_last_n_turns=0).sent -> [persona, {"role": "user", ...}]
    """

    failure: Failure | None
    sent: list[Message] | None

    def __new__(cls, text: str, failure: Failure | None = None,
                sent: list[Message] | None = None) -> "TurnResult":
        obj = super().__new__(cls, text)
        obj.failure = failure
        obj.sent = sent
        return obj

    @property
    def ok(self) -> bool:
        return self.failure is None


def safe_run_turn(
    client: ChatClient,
    history: list[Message],
    user_text: str,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    keep_last_n_turns: int | None = None,
    on_text: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> TurnResult:
    """run_turn that never raises: on failure the history is unchanged and the
    result is '(error talking to the model: ...)', or '(not sent: ...)' for input refused
    before any call (an empty message, a broken list, a keep_last_n_turns that is not a whole number >= 0).

    With on_text, the reply is streamed and on_text(piece) is called per piece.
    Ctrl-C while the reply arrives counts as a failure ("cancelled") and rolls back.
    An exception raised by on_text itself is the caller's, not the model's (e.g. a closed
    pipe): the turn is rolled back and the exception propagates.
    The result's .sent is the list the successful call sent (None on failure).
    Example: a client that raises TimeoutError -> history still 1 message,
        result '(error talking to the model: the request timed out - try again, ...)'
    """
    before = list(history) if isinstance(history, list) else None
    went_out: list[list[Message]] = []  # filled by the core once the turn has succeeded
    on_sent = kwargs.pop("on_sent", None)  # a caller's own on_sent is told too
    callers: BaseException | None = None  # what on_text raised, if it did

    def report(sent: list[Message]) -> None:
        went_out.append(sent)
        if on_sent is not None:
            on_sent(sent)

    try:
        if history.__class__ is not list:  # named as this function, not as the run_turn it calls
            _raise_if_swapped("safe_run_turn", client, history, user_text)
        if on_text is None:
            reply = run_turn(client, history, user_text, model, temperature, keep_last_n_turns,
                             on_sent=report, **kwargs)
        else:
            pieces = stream_turn(client, history, user_text, model, temperature, keep_last_n_turns,
                                 on_sent=report, **kwargs)
            try:
                for piece in pieces:
                    try:
                        on_text(piece)
                    except Exception as exc:
                        callers = exc
                        raise
            finally:
                pieces.close()
            reply = history[-1]["content"]
    except (Exception, KeyboardInterrupt) as exc:
        if before is not None and history != before:  # validation errors never touch it; the rest: make sure
            history[:] = before
        if exc is callers:
            raise
        return _failed_turn(exc)
    return TurnResult(reply, sent=went_out[-1] if went_out else None)


def _failed_turn(exc: BaseException) -> TurnResult:
    """What safe_run_turn (and asafe_run_turn) return for a turn that failed: its one line, and the Failure.
    Example: _failed_turn(EmptyMessageError("...")) -> '(not sent: ...)'; TimeoutError() -> '(error talking ...)'"""
    if isinstance(exc, (EmptyMessageError, HistoryError, ArgumentError)):  # refused before any call
        failure = Failure(kind="bad_input", status=None, message=str(exc), hint="")
    else:
        failure = describe_failure(exc)
    return TurnResult(failure.line(), failure)
