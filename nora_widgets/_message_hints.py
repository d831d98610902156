"""What to say when a list is not a list of messages: the problem, then what to write instead.

One line each, in the words of someone who just appended the wrong thing.  The checks
themselves live with the callers (conversation.validate_history, tokens, local); these
functions only word the refusal, so they run on the refusal path alone and cost a good
turn nothing.  Imports nothing from the package.

    not_a_message(2, response.choices[0].message)
    # -> "message 2: must be a dict with 'role' and 'content', not ChatCompletionMessage: append
    #     {'role': 'assistant', 'content': response.choices[0].message.content}, the text in a dict"
"""

from __future__ import annotations

from typing import Any, Iterable

_REPLY_AS_DICT = "{'role': 'assistant', 'content': response.choices[0].message.content}"


def not_a_message(i: int, item: Any) -> str:
    """message i is not a dict: say what it is and what to append instead.
    Example: not_a_message(1, "hi") -> "message 1: must be a dict ..., not str: write {'role': 'user', 'content': 'hi'}"
    """
    head = f"message {i}: must be a dict with 'role' and 'content', not {type(item).__name__}"
    if hasattr(item, "choices"):  # the whole ChatCompletion
        return f"{head}: that is the whole response; append {_REPLY_AS_DICT}"
    if hasattr(item, "role") and hasattr(item, "content"):  # choices[0].message, an object
        return f"{head}: append {_REPLY_AS_DICT}, the text in a dict"
    if isinstance(item, str):
        return f"{head}: write {{'role': 'user', 'content': {_short(item)}}}"
    if isinstance(item, (tuple, list)) and len(item) == 2:  # ("user", "hi")
        return f"{head}: write it as a dict, {{'role': {_short(item[0])}, 'content': {_short(item[1])}}}"
    return head


def bad_role(i: int, role: Any, roles: Iterable[str]) -> str:
    """message i has a role no API knows: name the allowed ones and the likely one meant.
    Example: bad_role(2, "asistant", ROLES) -> "message 2: role must be one of system, user, assistant
        (got 'asistant'; did you mean 'assistant'?)"
    """
    roles = tuple(roles)
    meant = closest(role, roles)
    tail = f"; did you mean {meant!r}?" if meant else ""
    return f"message {i}: role must be one of {', '.join(roles)} (got {role!r}{tail})"


def bad_content(i: int, content: Any) -> str:
    """message i's content is not text: a number is told to become text.
    Example: bad_content(1, 42) -> "message 1: content must be a string (got int): write it as text, '42' or str(42)"
    """
    head = f"message {i}: content must be a string (got {type(content).__name__})"
    if isinstance(content, (int, float)) and not isinstance(content, bool):
        return f"{head}: write it as text, '{content}' or str({content})"
    return head


def not_a_list(history: Any) -> str:
    """The whole conversation is not a list.  Example: not_a_list({"role": "system", "content": "x"}) ->
    'the conversation must be a list of messages, not dict: one message is a dict; put it in a list, [{...}]'"""
    head = f"the conversation must be a list of messages, not {type(history).__name__}"
    if isinstance(history, dict) and "role" in history:
        return f"{head}: one message is a dict; put it in a list, [{{...}}]"
    return head


def closest(word: Any, choices: tuple[str, ...]) -> str | None:
    """The choice a typo most likely meant, or None: a role ('User', ' user', 'asistant'), a %chat command.
    Example: closest("Hisotry", ("history", "wire")) -> 'history'; closest("hello", ("history", "wire")) -> None"""
    if not isinstance(word, str):
        return None
    plain = word.strip().lower()
    if plain in choices:
        return plain
    import difflib  # only on this path: a refusal, never a good turn

    found = difflib.get_close_matches(plain, choices, n=1, cutoff=0.75)
    return found[0] if found else None


def _short(value: Any, limit: int = 30) -> str:
    """repr of value, cut to limit characters.  Example: _short("x" * 50) -> "'xxxxxxxxxxxxxxxxxxxxxxxxxx..." """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
