"""nora serve's check of streamed requests against the window (nora_widgets._overflow_check),
as an ASGI middleware in front of a small real ASGI app that records what reached it; and its
two smaller jobs: a 400 for a body that is not a JSON object, the served name for a request
that names no model."""

from __future__ import annotations

import json

import pytest

from nora_widgets._overflow_check import OverflowCheck
from tests.helpers import run_async

N_CTX = 100


run = run_async  # asyncio.run on a thread of its own (tests/helpers.py says why)


class RecordingApp:
    """The app behind the check: reads the whole body it is given and answers 200 "ok"."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Counter:
    """count_prompt: one token per word, and a log of what it was asked to count."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[list[dict]] = []
        self.template_args: list[dict] = []  # tools and the like, as given with each
        self.fail = fail

    def __call__(self, messages, **template_args):
        self.seen.append(messages)
        self.template_args.append(template_args)
        if self.fail:
            raise RuntimeError("tokenizer unavailable")
        return sum(len(m["content"].split()) for m in messages)


def request(body: dict | bytes, *, path="/v1/chat/completions", key: str | None = None, chunks: int = 1,
            model: str | None = None, content_type: bytes | None = None, max_reply: int | None = None):
    """Run one POST through OverflowCheck(RecordingApp); returns (status, response body, app, counter)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    size = max(1, -(-len(raw) // chunks))
    parts = [raw[i:i + size] for i in range(0, len(raw), size)] or [b""]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    headers = [(b"content-length", str(len(raw)).encode())]
    headers += [(b"authorization", f"Bearer {key}".encode())] if key else []
    headers += [(b"content-type", content_type)] if content_type else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    app, counter = RecordingApp(), Counter()
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    check = OverflowCheck(app, counter, N_CTX, api_key="k3y" if key is not None else None, model=model,
                          max_reply=max_reply)
    run(check(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, payload, app, counter


def chat(words: int, stream=True, **extra) -> dict:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "w " * words}], **extra}


def test_a_streamed_request_that_fits_reaches_the_app_with_its_body_intact():
    body = chat(20, max_tokens=5)
    status, payload, app, counter = request(body, chunks=3)  # the body arrives in three pieces
    assert (status, payload) == (200, b"ok")
    assert app.bodies == [json.dumps(body).encode()]  # replayed exactly, all pieces
    assert counter.seen == [[{"role": "user", "content": "w " * 20}]]


def test_a_streamed_request_too_long_is_refused_before_the_app_sees_it():
    pytest.importorskip("llama_cpp.server.errors")
    status, payload, app, counter = request(chat(N_CTX, max_tokens=7))
    assert status == 400 and app.bodies == []
    error = json.loads(payload)["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"This model's maximum context length is {N_CTX} tokens. "
                                       f"However, you requested {N_CTX + 7} tokens ({N_CTX} in the messages, 7 ")
    status, _payload, app, _counter = request(chat(N_CTX - 1))  # one token under: llama.cpp's rule is >=
    assert status == 200 and len(app.bodies) == 1


def test_a_prompt_and_max_tokens_over_the_window_are_refused_streamed_or_not():
    # the server cut max_tokens to the room left without a word; OpenAI refuses prompt + max_tokens > window
    pytest.importorskip("llama_cpp.server.errors")
    for stream in (False, True):
        status, payload, app, _counter = request(chat(90, stream=stream, max_tokens=11))
        assert status == 400 and app.bodies == []
        error = json.loads(payload)["error"]
        assert error["code"] == "context_length_exceeded"
        assert "you requested 101 tokens (90 in the messages, 11 in the completion)" in error["message"]
        status, _payload, app, _counter = request(chat(90, stream=stream, max_tokens=10))  # exactly fits
        assert status == 200 and len(app.bodies) == 1


@pytest.mark.parametrize("name, path", [("max_tokens", "/v1/chat/completions"),
                                        ("max_completion_tokens", "/v1/chat/completions"),
                                        ("max_tokens", "/v1/completions")], ids=["chat", "chat-completion", "legacy"])
def test_a_max_tokens_no_prompt_leaves_room_for_is_refused_by_name_uncounted(name, path):
    pytest.importorskip("llama_cpp.server.types")
    status, payload, app, counter = request(chat(1, stream=False, **{name: N_CTX}), path=path)
    error = json.loads(payload)["error"]
    assert (status, error["param"], app.bodies, counter.seen) == (400, name, [], [])
    assert error["message"] == (f"Invalid '{name}': {N_CTX} leaves no room for the prompt in the {N_CTX}-token "
                                "window: ask for fewer.")
    from nora_widgets._chat_request import max_tokens_too_large
    from nora_widgets.errors import SERVER_DETAIL_CHARS

    longest = max_tokens_too_large("max_completion_tokens", 1_000_000, 131_072)["error"]["message"]
    assert len(longest) <= SERVER_DETAIL_CHARS, longest  # what a face shows of a server's message: the fix too


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_request_without_max_tokens_is_sent_on_with_the_servers_reply_cap(stream):
    # without max_tokens a reply ran until the model stopped or the window was full, while the whole
    # class waited for it: nora serve --max-tokens caps it (the server still cuts it to the room left)
    body = chat(20, stream=stream)
    status, _payload, app, counter = request(body, max_reply=30)
    assert status == 200 and json.loads(app.bodies[0]) == {**body, "max_tokens": 30}
    status, _payload, app, _counter = request(chat(20, stream=stream, max_tokens=30), max_reply=30)  # within it
    assert status == 200 and json.loads(app.bodies[0])["max_tokens"] == 30
    legacy = {"model": "m", "prompt": "Hi", "max_tokens": None}  # null: the room left; left out: 16
    assert json.loads(request(legacy, path="/v1/completions", max_reply=30)[2].bodies[0])["max_tokens"] == 30
    assert "max_tokens" not in json.loads(request({"model": "m", "prompt": "Hi"}, path="/v1/completions",
                                                  max_reply=30)[2].bodies[0])


@pytest.mark.parametrize("name, path", [("max_tokens", "/v1/chat/completions"),
                                        ("max_completion_tokens", "/v1/chat/completions"),
                                        ("max_tokens", "/v1/completions")], ids=["chat", "chat-completion", "legacy"])
def test_a_reply_longer_than_the_servers_cap_is_refused_by_name(name, path):
    pytest.importorskip("llama_cpp.server.types")
    status, payload, app, _counter = request(chat(5, stream=False, **{name: 31}), path=path, max_reply=30)
    error = json.loads(payload)["error"]
    assert (status, error["param"], app.bodies) == (400, name, [])
    assert error["message"] == (f"Invalid '{name}': 31 is over the 30 tokens this server writes per reply: "
                                "ask for 30 or fewer.")
    from nora_widgets._chat_request import over_reply_cap
    from nora_widgets.errors import SERVER_DETAIL_CHARS

    longest = over_reply_cap("max_completion_tokens", 100_000, 4096)["error"]["message"]
    assert len(longest) <= SERVER_DETAIL_CHARS, longest  # what a face shows of a server's message: the fix too


def test_with_a_cap_a_prompt_too_long_is_refused_as_sent_not_as_capped():
    # counted before the cap is added: the 400 does not say the client asked for the cap's tokens
    pytest.importorskip("llama_cpp.server.errors")
    status, payload, app, _counter = request(chat(N_CTX, stream=False), max_reply=30)
    error = json.loads(payload)["error"]
    assert (status, error["code"], app.bodies) == (400, "context_length_exceeded", [])
    # OpenAI's words for a request without max_tokens: it said "(... in the messages, None in the completion)"
    assert error["message"] == (f"This model's maximum context length is {N_CTX} tokens. However, your messages "
                                f"resulted in {N_CTX} tokens. Please reduce the length of the messages.")
    assert error["param"] == "messages"


def test_a_request_with_nothing_to_check_goes_to_the_server_uncounted():
    body = chat(500, stream=False)  # no max_tokens: the server's own 400 covers the prompt
    status, _payload, app, counter = request(body)
    assert status == 200 and counter.seen == [] and app.bodies == [json.dumps(body).encode()]


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
CALLED = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


@pytest.mark.parametrize("extra, messages, template_args", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}}, [],
     {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ({"response_format": {"type": "json_object"}}, [], {}),
    ({}, [CALLED, {"role": "tool", "content": "w " * 5, "tool_call_id": "c1"}], {}),
    ({}, [{"role": "user", "content": "w " * 5, "name": "ann", "tool_calls": []}], {}),
], ids=["tools", "response_format", "tool-call-and-result", "fields-the-server-drops"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tools_tool_messages_and_response_format_are_counted_as_the_template_is_given_them(
        extra, messages, template_args, stream):
    # these went to the server uncounted, so an oversized max_tokens was cut to the room left without a word
    pytest.importorskip("llama_cpp.server.errors")
    words = 80 + sum(len(m["content"].split()) for m in messages)  # the Counter's tokens
    body = chat(80, stream=stream, max_tokens=N_CTX - words + 1, **extra)
    body["messages"] += messages
    status, payload, app, counter = request(body)
    assert status == 400 and app.bodies == [] and json.loads(payload)["error"]["code"] == "context_length_exceeded"
    assert counter.template_args == [template_args]  # what the server's template is given besides the messages
    assert counter.seen[0][0] == {"role": "user", "content": "w " * 80}
    assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id"} for m in counter.seen[0])  # the dump
    body["max_tokens"] -= 1  # exactly the room left
    status, _payload, app, _counter = request(body)
    assert status == 200 and len(app.bodies) == 1


def test_text_parts_and_developer_messages_are_counted_as_the_plain_text_they_become():
    # they went to the server uncounted; _chat_request.py now hands it plain strings, so they are checked too
    pytest.importorskip("llama_cpp.server.errors")
    body = {"model": "m", "stream": True, "messages": [{"role": "developer", "content": "w " * 10},
                                                       {"role": "user", "content": [{"type": "text", "text": "w " * 500}]}]}
    status, payload, app, counter = request(body)
    assert status == 400 and app.bodies == [] and json.loads(payload)["error"]["code"] == "context_length_exceeded"
    assert counter.seen == [[{"role": "system", "content": "w " * 10}, {"role": "user", "content": "w " * 500}]]


def test_other_paths_and_a_missing_key_pass_through_uncounted():
    for kwargs in ({"path": "/v1/completions"}, {"key": "wrong"}):
        status, _payload, app, counter = request(chat(500), **kwargs)
        assert status == 200 and counter.seen == [] and len(app.bodies) == 1  # the server answers (401 for a bad key)
    pytest.importorskip("llama_cpp.server.errors")
    status, _payload, app, _counter = request(chat(500), key="k3y")  # the right key: checked
    assert status == 400 and app.bodies == []


def test_a_counter_that_fails_lets_the_server_decide():
    app, counter = RecordingApp(), Counter(fail=True)
    incoming = [{"type": "http.request", "body": json.dumps(chat(500)).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    run(OverflowCheck(app, counter, N_CTX)(scope, receive, send))
    assert sent[0]["status"] == 200 and len(counter.seen) == 1 and len(app.bodies) == 1


@pytest.mark.parametrize("body, start", [
    (b"{not json", "We could not parse the JSON body of your request: Expecting property name enclosed in double "
                   "quotes: line 1 column 2 (char 1). The API expects a JSON object, e.g. "),
    (b"", "We could not parse the JSON body of your request: the body is empty. "),
    (b"\xff\xfe\xfd", "We could not parse the JSON body of your request: "),
    (b"[1, 2]", 'The request body must be a JSON object, e.g. {"model": ..., "messages": [...]}, not an array.'),
    (b"null", 'The request body must be a JSON object, e.g. {"model": ..., "messages": [...]}, not null.'),
], ids=["not-json", "empty", "not-utf8", "array", "null"])
@pytest.mark.parametrize("path, key", [("/v1/chat/completions", None), ("/v1/completions", None),
                                       ("/v1/chat/completions", "wrong")])
def test_a_body_that_is_not_a_json_object_is_a_400_in_openais_shape(body, start, path, key):
    # llama-cpp-python's server answered these with a plain-text 500 and logged a traceback,
    # with or without the right key (it reads the body before it checks the key)
    status, payload, app, counter = request(body, path=path, key=key, chunks=2)
    assert status == 400 and app.bodies == [] and counter.seen == []
    error = json.loads(payload)["error"]
    assert error["message"].startswith(start)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("given", [{}, {"model": None}], ids=["missing", "null"])
def test_a_request_naming_no_model_is_sent_on_with_the_served_name(path, given):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **given}
    status, _payload, app, _counter = request(body, path=path, model="SmolLM2-135M-Instruct", chunks=3)
    assert status == 200
    assert json.loads(app.bodies[0]) == {**body, "model": "SmolLM2-135M-Instruct"}
    assert dict(app.scopes[0]["headers"])[b"content-length"] == str(len(app.bodies[0])).encode()


@pytest.mark.parametrize("body, kwargs", [
    (chat(5), {}),                                                         # a name given: kept, as given
    ({"messages": []}, {"path": "/extras/tokenize"}),                        # not a completion
    ({"messages": []}, {"key": "wrong"}),                                    # no key: the server's 401, untouched
], ids=["named", "other-path", "wrong-key"])
def test_otherwise_the_body_reaches_the_app_exactly_as_sent(body, kwargs):
    status, _payload, app, _counter = request(body, model="SmolLM2-135M-Instruct", **kwargs)
    assert status == 200 and app.bodies == [json.dumps(body).encode()]


def test_a_client_that_leaves_mid_body_is_passed_on_as_it_left():
    app, counter = RecordingApp(), Counter()
    incoming = [{"type": "http.request", "body": b'{"messa', "more_body": True}, {"type": "http.disconnect"}]
    seen: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def replay_reader(scope, receive, send):  # the app sees the disconnect, not a 400 to nobody
        seen.extend([await receive(), await receive()])

    run(OverflowCheck(replay_reader, counter, N_CTX)({"type": "http", "method": "POST",
                                                       "path": "/v1/chat/completions", "headers": []},
                                                      receive, None))
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"] and counter.seen == []


@pytest.mark.parametrize("messages, got", [
    (5, "a number"),
    (None, "missing"),
    ([], "an empty list"),
    (["hi"], "item 0 is a string"),
    ([{"role": "user", "content": "hi"}, {"content": "no role"}], 'item 1 has no "role"'),
], ids=["number", "missing", "empty", "string-item", "no-role"])
def test_chat_messages_that_are_not_a_list_of_messages_are_a_400(messages, got):
    # the server answered a 500 carrying pydantic's validation error and its own source paths
    body = {"model": "m"} if messages is None else {"model": "m", "messages": messages}
    status, payload, app, counter = request(body)
    assert status == 400 and app.bodies == [] and counter.seen == []
    error = json.loads(payload)["error"]
    assert error["message"] == ("'messages' must be a non-empty list of objects like "
                                f'{{"role": "user", "content": "Hi"}} (got: {got}).')
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")


def test_a_json_body_sent_without_its_content_type_reaches_the_app_as_json():
    # `curl -d '{...}'` says application/x-www-form-urlencoded: the server answered a 500
    body = chat(3, stream=False)
    status, _payload, app, _counter = request(body, content_type=b"application/x-www-form-urlencoded")
    assert status == 200 and app.bodies == [json.dumps(body).encode()]
    headers = app.scopes[0]["headers"]
    assert [v for k, v in headers if k == b"content-type"] == [b"application/json"]
    status, _payload, app, _counter = request(body, content_type=b"application/json; charset=utf-8")
    assert [v for k, v in app.scopes[0]["headers"] if k == b"content-type"] == [b"application/json; charset=utf-8"]


def test_a_streamed_reply_split_anywhere_is_mended_event_by_event():
    # _reply_mend.py reads the event stream as it passes: an event cut across two sends is mended whole
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None,
                          "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": None,
                                                    "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}]}}]}
    stream = b"data: " + json.dumps(chunk).encode() + b"\n\n: ping\n\ndata: [DONE]\n\n"

    class StreamingApp(RecordingApp):
        async def __call__(self, scope, receive, send):
            await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            for start in range(0, len(stream), 7):  # seven bytes at a time
                await send({"type": "http.response.body", "body": stream[start:start + 7], "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    body = json.dumps(chat(3, logprobs=True, top_logprobs=0)).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    run(OverflowCheck(StreamingApp(), Counter(), N_CTX)(
        {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}, receive, send))
    chunk["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = []
    assert b"".join(m.get("body", b"") for m in sent[1:]) == (
        b"data: " + json.dumps(chunk).encode() + b"\n\n: ping\n\ndata: [DONE]\n\n")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.model
def test_a_template_that_lists_the_tools_is_given_them_when_counting():
    # SmolLM2's template shows no tools, so its counts are the same with or without; a template that
    # lists them (as the server renders it) makes the prompt longer, and the count follows
    pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from nora_widgets._engine import _Engine
    from nora_widgets.local import find_model_path

    engine = _Engine(find_model_path(), n_ctx=64, n_threads=1, vocab_only=True)
    engine.llama
    engine._formatter = Jinja2ChatFormatter(
        "{% for tool in tools or [] %}{{ tool.function.name }} {% endfor %}"
        "{% for message in messages %}{{ message.content }}{% endfor %}", eos_token="", bos_token="")
    messages = [{"role": "user", "content": "Hi"}]
    assert engine.tokens(messages, template_args={"tools": TOOLS * 3}) == engine.tokens([{"role": "user",
                                                                                        "content": "f f f Hi"}])
    assert len(engine.tokens(messages, template_args={"tools": TOOLS})) > len(engine.tokens(messages))
