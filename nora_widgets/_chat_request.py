"""`nora serve`: OpenAI chat requests that llama-cpp-python's server would get wrong, mended or refused.

Code written for OpenAI's API sends fields that llama-cpp-python's server (0.3.x) does
not know, or reads differently.  Passed on as they are, some were silently ignored
and some crashed the request with a 500 and a traceback:

    field sent                                    the server did                  now
    ------------------------------------------    ----------------------------    ---------------------------------
    {"role": "developer", ...}                    500 (validation error)          read as a system message
    "content": [{"type": "text", "text": "hi"}]   500 (str + list)                the parts joined: "hi"
    "max_completion_tokens": 8                    ignored: the reply ran long     sent as max_tokens
    "max_tokens": 0                               read as "no limit"              400 naming max_tokens
    "max_tokens": 4096 (window 2048)              cut to the room left: the       400 naming max_tokens
                                                  reply stopped at the window's end
    "n": 2                                        ignored: one choice came back   400 naming n
    "response_format": {"type": "json_schema"}    500 (validation error)          JSON that follows the schema
    "logprobs": true (no top_logprobs)            ignored: logprobs null          the chosen tokens' logprobs
    "tools" with tool_choice "auto"/"required"    ignored: a plain text reply     400 naming tool_choice
    "stream_options" without "stream": true       ignored                         400 naming stream_options
    an assistant's tool_calls, "content": null    400 (content must be a string)  read with content ""
    ... or no "content" at all                    500 (the template failed)       the same
    tool_choice naming a function not in tools    500 and a traceback             400 naming tool_choice
    tool_choice "required"/a function, no tools   ignored: a plain text reply     400 naming tool_choice
    "top_logprobs" without "logprobs": true       ignored: logprobs null          400 naming top_logprobs
    a value out of range ("presence_penalty": 3)  500 (validation error)          400 naming the field
    "temperature": 5                              sampled at 5: gibberish          400 naming temperature
    "stream": "yes" (or 1, "false")               read as true (or false)          400: OpenAI's "Invalid type for
                                                                                   'stream': expected a boolean..."
    "top_p": "0.5" (a number as text)             read as 0.5                      400 (invalid_type), as OpenAI
    "stop": five strings or more                  all five honoured                400 (array_above_max_length)
    "top_logprobs": 21 (OpenAI lists 20 at most)  21 listed                        400 (integer_above_max_value)
    "stream": null (OpenAI: the default)          400 (should be a valid boolean)  read as not given

The types and ranges are OpenAI's (field_problem): code written here and run later against
OpenAI meets the same 400, with OpenAI's words and code, instead of working here only.  The
legacy /v1/completions gets the same checks of its fields and of n (mend_legacy_request), and
LocalClient runs field_problem too, after its own checks: one rule for all three.

A tool is called only when tool_choice names it ({"type": "function", "function":
{"name": ...}}): the server then makes the model fill that function's arguments.

    mend_chat_request({"messages": [{"role": "developer", "content": "Be brief."}], "n": 1})
        -> ({"messages": [{"role": "system", "content": "Be brief."}], "n": 1}, None)
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

__all__ = ["mend_chat_request", "max_tokens_too_large", "over_reply_cap", "switch_missing", "field_problem",
           "one_choice", "mend_legacy_request", "authorized", "error_body"]

_ROLES = ("system", "user", "assistant", "tool", "function", "developer")


def authorized(scope: dict, api_key: str | None) -> bool:
    """Whether an ASGI request carries the server's key (always, when the server wants none).
    Example: authorized({"headers": [(b"authorization", b"Bearer k")]}, "k") -> True"""
    if api_key is None:
        return True
    expected = f"Bearer {api_key}".encode()
    return any(name.lower() == b"authorization" and value == expected for name, value in scope.get("headers", []))


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    """An error body in OpenAI's shape, for every refusal nora serve writes itself.
    Example: error_body("...", "n")["error"] -> {"message": "...", "type": "invalid_request_error", "param": "n", "code": None}"""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _refusal(param: str, message: str) -> dict:
    """A 400 body naming the field.  Example: _refusal("n", "...")["error"]["param"] -> 'n'"""
    return error_body(message, param)


# OpenAI's types and ranges for the fields beside messages; llama-cpp-python's server (pydantic, lax)
# took "yes" and 1 for true, "0.5" for 0.5, and ignored the fields it does not know (store,
# parallel_tool_calls).  (kind, lowest, highest); None: no bound.  n above 1 is refused further on.
_BOOLEANS = ("stream", "logprobs", "store", "parallel_tool_calls")
_NUMBERS = {"temperature": ("decimal", 0, 2), "top_p": ("decimal", 0, 1),
            "presence_penalty": ("decimal", -2, 2), "frequency_penalty": ("decimal", -2, 2),
            "n": ("integer", 1, None), "max_tokens": ("integer", 1, None),
            "max_completion_tokens": ("integer", 1, None), "top_logprobs": ("integer", 0, 20),
            "seed": ("integer", None, None)}
MAX_STOP = 4  # OpenAI's most stop sequences


def _json_kind(value: Any) -> str:
    """How OpenAI names a JSON value's type.  Example: _json_kind("yes") -> 'a string'; _json_kind(1.5) -> 'a decimal number'"""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal number"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _wrong_type(param: str, expected: str, value: Any) -> dict:
    return error_body(f"Invalid type for '{param}': expected {expected}, but got {_json_kind(value)} instead.",
                      param, "invalid_type")


def _number_problem(name: str, value: Any) -> dict | None:
    """The 400 body for a number of the wrong type or out of OpenAI's range, in OpenAI's words."""
    kind, lowest, highest = _NUMBERS[name]
    integer = isinstance(value, int) and not isinstance(value, bool)
    if not (integer or (kind == "decimal" and isinstance(value, float))):
        return _wrong_type(name, "an integer" if kind == "integer" else "a decimal", value)
    # written as "not >=" so that NaN (which Python's json reads and writes) is refused, not sampled at
    for bound, over, side, sign in ((lowest, lowest is not None and not value >= lowest, "below minimum", ">="),
                                    (highest, highest is not None and not value <= highest, "above maximum", "<=")):
        if over:
            code = f"{kind}_{side.replace('imum', '').replace(' ', '_')}_value"  # integer_below_min_value
            return error_body(f"Invalid '{name}': {kind} {side} value. Expected a value {sign} {bound}, "
                              f"but got {value!r} instead.", name, code)
    return None


def field_problem(request: dict) -> dict | None:
    """The 400 body OpenAI gives for a field beside messages of the wrong type, out of range, or with
    too many items (the first such field), in OpenAI's words and code; None when all are fine.  null
    is taken for any of them, as OpenAI takes it.
    Example: field_problem({"stream": "yes"})["error"]["message"]
        -> "Invalid type for 'stream': expected a boolean, but got a string instead."
    Example: field_problem({"stop": ["a", "b", "c", "d", "e"]})["error"]["code"] -> 'array_above_max_length'"""
    for name in _BOOLEANS:
        if request.get(name) is not None and not isinstance(request[name], bool):
            return _wrong_type(name, "a boolean", request[name])
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return _wrong_type("stream_options", "an object", options)
    usage = (options or {}).get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        return _wrong_type("stream_options.include_usage", "a boolean", usage)
    for name in _NUMBERS:
        problem = None if request.get(name) is None else _number_problem(name, request[name])
        if problem:
            return problem
    stop = request.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP:
        return error_body(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, "
                          f"but got an array with length {len(stop)} instead.", "stop", "array_above_max_length")
    if request.get("max_tokens") is not None and request.get("max_completion_tokens") is not None:
        # OpenAI refuses the pair whatever the values (one was dropped silently here)
        return error_body("Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.",
                          "max_tokens", "invalid_parameter_combination")
    return None


def one_choice(request: dict) -> dict | None:
    """The 400 body when n asks for more than one choice (the server ignored n: one came back), else None.
    Example: one_choice({"n": 2})["error"]["message"]
        -> "Invalid 'n': 2; this server gives one choice per request (n=1): send the request again for another."
    """
    if request.get("n") not in (None, 1):
        return _refusal("n", f"Invalid 'n': {request['n']!r}; this server gives one choice per request "
                             "(n=1): send the request again for another.")
    return None


def mend_legacy_request(request: dict) -> tuple[dict, dict | None]:
    """(request as the server should get it, None), or (request, a 400 body), for the legacy
    /v1/completions (a prompt, not messages), by the chat request's rules for the same fields:
    OpenAI's types and ranges (field_problem) and one choice (one_choice); a switch sent as null is
    left out, as OpenAI reads it ("stream": null was a 500 there).  logprobs is not checked as a
    switch: there it is a count of tokens (0 to 5).  The given request is not changed.
    Example: mend_legacy_request({"prompt": "Hi", "temperature": 5})[1]["error"]["param"] -> 'temperature'
             mend_legacy_request({"prompt": "Hi", "stream": None}) -> ({"prompt": "Hi"}, None)"""
    refusal = field_problem({k: v for k, v in request.items() if k != "logprobs"}) or one_choice(request)
    if refusal:
        return request, refusal
    return {k: v for k, v in request.items() if not (k in _BOOLEANS and v is None)}, None


# fields that only mean something when another is on, and that other: OpenAI refuses the first alone
_SWITCHED_BY = (("stream_options", "stream"), ("top_logprobs", "logprobs"))


def switch_missing(request: dict) -> tuple[str, str] | None:
    """(field, message) for a field given without the one that turns it on (OpenAI answers a 400
    naming it, in these words), else None.  One rule for nora serve and LocalClient.
    Example: switch_missing({"stream_options": {"include_usage": True}})
        -> ('stream_options', "The 'stream_options' parameter is only allowed when 'stream' is enabled.")"""
    for field, switch in _SWITCHED_BY:
        if request.get(field) is not None and not request.get(switch):
            return field, f"The '{field}' parameter is only allowed when '{switch}' is enabled."
    return None


def _mend_messages(messages: list[dict]) -> dict | None:
    """developer -> system, text parts -> one string, in place; the 400 body for what cannot be read."""
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            return _refusal(f"messages[{i}].role", f"Invalid 'messages[{i}].role': {role!r}; "
                                                    f"expected one of {', '.join(map(repr, _ROLES))}.")
        if role == "developer":  # OpenAI's newer name for the system message
            message["role"] = "system"
        if role == "assistant" and content is None:  # OpenAI's own reply to a tool call has content null
            if not (message.get("tool_calls") or message.get("function_call")):
                return _refusal(f"messages[{i}].content", f"Invalid 'messages[{i}].content': an assistant message "
                                                          "needs content unless it has tool_calls.")
            message["content"] = ""  # the template joins strings: null (or none at all) failed there
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                return _refusal(f"messages[{i}].content", f"Invalid 'messages[{i}].content': this model reads "
                                                          "text only ({\"type\": \"text\", \"text\": ...} parts).")
            message["content"] = "".join(p["text"] for p in content)
    return None


def max_tokens_too_large(name: str, limit: Any, n_ctx: int | None) -> dict | None:
    """The 400 body when a whole-number max_tokens leaves no room for any prompt (>= n_ctx), as
    OpenAI's "max_tokens is too large"; else None.
    Example: max_tokens_too_large("max_tokens", 4096, 2048)["error"]["param"] -> 'max_tokens'"""
    if n_ctx is None or not isinstance(limit, int) or isinstance(limit, bool) or limit < n_ctx:
        return None
    # short enough to reach a face whole (a server's message is cut at 120 characters there), fix included
    return _refusal(name, f"Invalid '{name}': {limit} leaves no room for the prompt in the {n_ctx}-token "
                          "window: ask for fewer.")


def over_reply_cap(name: str, limit: Any, cap: int | None) -> dict | None:
    """The 400 body when a whole-number max_tokens is more than the server writes in one reply
    (nora serve --max-tokens): one learner's long reply would keep a whole class waiting; else None.
    Example: over_reply_cap("max_tokens", 1000, 512)["error"]["message"]
        -> "Invalid 'max_tokens': 1000 is over the 512 tokens this server writes per reply: ask for 512 or fewer."""
    if cap is None or not isinstance(limit, int) or isinstance(limit, bool) or limit <= cap:
        return None
    # short enough to reach a face whole (a server's message is cut at 120 characters there), fix included
    return _refusal(name, f"Invalid '{name}': {limit} is over the {cap} tokens this server writes per reply: "
                          f"ask for {cap} or fewer.")


def _mend_options(request: dict, n_ctx: int | None) -> dict | None:
    """The fields beside messages, mended in place; the 400 body for one that cannot be honoured."""
    wrong = field_problem(request)  # OpenAI's types and ranges: temperature 5 would be sampled, and babble
    if wrong:
        return wrong
    for name in _BOOLEANS:  # null: the default, as OpenAI reads it; the server refused "stream": null
        if name in request and request[name] is None:
            del request[name]
    several = one_choice(request)
    if several:
        return several
    given = request.pop("max_completion_tokens", None)
    name = "max_tokens" if request.get("max_tokens") is not None else "max_completion_tokens"
    limit = request["max_tokens"] if name == "max_tokens" else given
    if limit is not None:  # a whole number of at least 1 (field_problem)
        too_large = max_tokens_too_large(name, limit, n_ctx)
        if too_large:
            return too_large
        request["max_tokens"] = limit
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")  # llama.cpp's own spelling: json_object with a schema
        schema = spec.get("schema") if isinstance(spec, dict) else None
        request["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    missing = switch_missing(request)  # the server ignored these: no usage chunk, no logprobs
    if missing:
        return _refusal(*missing)
    if request.get("logprobs") is True and request.get("top_logprobs") is None:
        request["top_logprobs"] = 0  # else the server returns no logprobs at all
    choice = request.get("tool_choice")
    if not request.get("tools") and (choice == "required" or isinstance(choice, dict)):  # the server ignored it
        return _refusal("tool_choice", f"Invalid 'tool_choice': {choice!r} asks for a tool call, but the request "
                                       "lists no 'tools' (tool_choice is only allowed when tools are specified).")
    if request.get("tools") and choice != "none" and not (
            isinstance(choice, dict) and isinstance(choice.get("function"), dict)):
        given = "none given (so \"auto\")" if choice is None else repr(choice)
        return _refusal("tool_choice", f"Invalid 'tool_choice': {given}; this model calls a tool only when "
                                       "tool_choice names it: {\"type\": \"function\", \"function\": "
                                       "{\"name\": ...}} (or \"none\").")
    return _unknown_tool(request)


def _unknown_tool(request: dict) -> dict | None:
    """The 400 body when tool_choice names a function that tools does not list (the server raised
    "Tool choice 'x' not found in tools." and answered a 500 with a traceback), else None."""
    choice, tools = request.get("tool_choice"), request.get("tools")
    if not (isinstance(choice, dict) and isinstance(choice.get("function"), dict) and isinstance(tools, list)):
        return None
    names = [t["function"].get("name") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    name = choice["function"].get("name")
    if name in names:
        return None
    listed = ", ".join(repr(n) for n in names) or "none"
    return _refusal("tool_choice", f"Invalid 'tool_choice': the function {name!r} is not among 'tools' "
                                   f"(they name {listed}).")


def _own_error(errors: Sequence[Mapping[str, Any]], request: dict) -> Mapping[str, Any]:
    """The error to report.  pydantic tries a message against every role's shape and reports
    each failure ("Input should be 'system'" first); the one for the message's own role says
    what is really wrong (e.g. a tool message's missing tool_call_id)."""
    for error in errors:
        where = error["loc"]
        if len(where) > 2 and where[0] == "messages" and isinstance(where[1], int):
            role = str(request["messages"][where[1]].get("role", ""))
            if f"Request{role.capitalize()}Message" in str(where[2]):
                return error
    return errors[0]


def _invalid(request: dict) -> dict | None:
    """The 400 body for a field the server's own request model refuses (it answered a 500)."""
    from llama_cpp.server.types import CreateChatCompletionRequest
    from pydantic import ValidationError

    try:
        CreateChatCompletionRequest.model_validate(request)
    except ValidationError as exc:
        error = _own_error(exc.errors(), request)
        where = error["loc"]
        param = str(where[0]) if where else "body"
        if param == "messages" and len(where) > 1 and isinstance(where[1], int):  # (messages, 0, class, field)
            param = f"messages[{where[1]}]" + (f".{where[3]}" if len(where) > 3 else "")
        got = repr(error.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        return _refusal(param, f"Invalid '{param}': {error['msg']} (got {got}).")
    return None


def mend_chat_request(request: dict, n_ctx: int | None = None) -> tuple[dict, dict | None]:
    """(the request as llama-cpp-python's server should get it, None), or (request, a 400 body).

    The request's messages must already be a list of objects with a role (bad_messages).
    n_ctx: the server's context window; a max_tokens that no prompt leaves room for is refused.
    The given request is not changed.
    Example: mend_chat_request({"messages": [...], "n": 2})[1]["error"]["param"] -> 'n'
    """
    mended = copy.deepcopy(request)
    refusal = _mend_messages(mended["messages"]) or _mend_options(mended, n_ctx) or _invalid(mended)
    return (request, refusal) if refusal else (mended, None)
