"""The loopback OpenAI-compatible stub, checked with the real openai client over real HTTP.

Other tests trust this server to behave like OpenAI (and to fail like it), so each
scripted behaviour is pinned here to the exception the openai client raises for it.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest

from tests.servers.openai_stub import (
    FAULTS,
    StubServer,
    cut_stream,
    default_reply,
    drop,
    error,
    ok,
    rate_limit,
    stall,
    unavailable,
    whole_reply,
)

pytestmark = pytest.mark.timeout(30)

MESSAGES = [
    {"role": "system", "content": "You are Nora."},
    {"role": "user", "content": "Do you have Le Guin?"},
]


def client_for(stub: StubServer, key: str = "sk-test-stub-0000", **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 2.0)
    return openai.OpenAI(base_url=stub.base_url, api_key=key, **kw)


def stream_text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_default_reply_counts_messages_and_request_is_recorded(stub_server):
    client = client_for(stub_server)
    reply = client.chat.completions.create(model="m1", messages=MESSAGES, temperature=0.3)

    assert reply.choices[0].message.content == "I got 2 messages; the last one says 'Do you have Le Guin?'."
    assert reply.model == "m1"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    (req,) = stub_server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test-stub-0000"
    assert req.body["messages"] == MESSAGES and req.messages == MESSAGES
    assert req.body["temperature"] == 0.3
    assert json.loads(req.raw) == req.body


def test_queue_is_used_in_order_then_falls_back_to_default(stub_server):
    stub_server.enqueue("first", ok("second"))
    client = client_for(stub_server)
    texts = [client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
             for _ in range(3)]
    assert texts == ["first", "second", default_reply(MESSAGES)]
    assert stub_server.pending == 0
    with pytest.raises(TypeError):
        stub_server.enqueue(42)


def test_streaming_with_usage_chunk(stub_server):
    stub_server.enqueue("Yes, two novels.")
    chunks = list(client_for(stub_server).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))

    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["Yes,", " two", " novels."]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert stub_server.requests[-1].body["stream_options"] == {"include_usage": True}


def test_streaming_without_usage_has_no_usage_chunk(stub_server):
    chunks = list(client_for(stub_server).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == default_reply(MESSAGES)


def test_models_list(stub_server):
    models = client_for(stub_server).models.list()
    assert [m.id for m in models.data] == ["stub-model"]
    assert stub_server.requests[-1].method == "GET"
    assert stub_server.chat_requests == []


def test_models_list_can_fail_on_request_then_lists_again(stub_server):
    stub_server.enqueue_models(error(500, "down for a moment"), drop())
    client = client_for(stub_server)
    with pytest.raises(openai.InternalServerError, match="down for a moment"):
        client.models.list()
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    assert [m.id for m in client.models.list().data] == ["stub-model"]
    with pytest.raises(TypeError):
        stub_server.enqueue_models(ok("not a fault of GET /models"))


def test_required_key_refuses_others_with_401():
    with StubServer(api_key="sk-test-right-1111") as stub:
        assert client_for(stub, key="sk-test-right-1111").models.list().data
        with pytest.raises(openai.AuthenticationError) as info:
            client_for(stub, key="sk-test-wrong-2222").chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.status_code == 401
        assert info.value.body["code"] == "invalid_api_key"
        assert stub.pending == 0  # a refused request never reaches the queue


def test_keep_alive_connection_serves_many_requests(stub_server):
    client = client_for(stub_server)
    for i in range(5):
        client.chat.completions.create(model="m", messages=MESSAGES + [{"role": "user", "content": str(i)}])
    assert [len(r.messages) for r in stub_server.chat_requests] == [3] * 5


# --------------------------------------------------------------------------- #
# the fault matrix: each behaviour -> the exception openai raises (max_retries=0)

EXPECTED = {
    "rate_limit_429": (openai.RateLimitError, 429),
    "server_error_500": (openai.InternalServerError, 500),
    "unavailable_503": (openai.InternalServerError, 503),
    "unauthorized_401": (openai.AuthenticationError, 401),
    "context_length_400": (openai.BadRequestError, 400),
    "malformed_json": (json.JSONDecodeError, None),
    "dropped_connection": (openai.APIConnectionError, None),
    "stall": (openai.APITimeoutError, None),
    "stream_cut": (openai.APIConnectionError, None),
}


# faults that openai does not raise on: what it returns instead (whole, streamed)
RETURNS = {
    "web_page": ("<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>", []),
    "not_a_completion": (None, []),  # a ChatCompletion whose choices is None; a stream of no chunks
    "error_after_head": (None, []),  # the same, its error an extra field: Nora reads it (conversation.py)
}


def test_every_fault_has_an_expectation():
    assert set(EXPECTED) | set(RETURNS) == set(FAULTS) and not set(EXPECTED) & set(RETURNS)


@pytest.mark.parametrize("name", sorted(RETURNS))
def test_faults_openai_returns_without_raising(stub_server, name):
    whole, chunks = RETURNS[name]
    client = client_for(stub_server)
    stub_server.enqueue(FAULTS[name], FAULTS[name])
    got = client.chat.completions.create(model="m", messages=MESSAGES)
    assert (got if isinstance(got, str) else got.choices) == whole
    assert list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True)) == chunks


def test_whole_reply_answers_a_stream_with_the_whole_completion_as_json(stub_server):
    """A server that ignores "stream": true: the same JSON streamed or not; openai's stream finds no events in it."""
    client = client_for(stub_server)
    stub_server.enqueue(whole_reply("Yes."), whole_reply("Yes."))
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "Yes."
    with client.chat.completions.with_streaming_response.create(model="m", messages=MESSAGES, stream=True) as raw:
        assert raw.headers["content-type"] == "application/json"
        assert json.loads(raw.read())["choices"][0]["message"] == {"role": "assistant", "content": "Yes."}
    stub_server.enqueue(whole_reply())
    assert list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True)) == []
    assert [r.body.get("stream", False) for r in stub_server.chat_requests] == [False, True, True]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fault_raises_what_openai_raises(stub_server, name, stream):
    expected, status = EXPECTED[name]
    stub_server.enqueue(FAULTS[name])
    client = client_for(stub_server, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(expected) as info:
        result = client.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
        if stream:
            stream_text(result)
    assert getattr(info.value, "status_code", None) == status
    assert time.monotonic() - started < 2.5  # the stall is cut short by the client's timeout
    assert len(stub_server.chat_requests) == 1  # max_retries=0: no second attempt
    # the server is fine afterwards: the next call gets the default reply
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == \
        default_reply(MESSAGES)


def test_error_bodies_are_openai_shaped(stub_server):
    stub_server.enqueue(FAULTS["context_length_400"], rate_limit(retry_after=7))
    client = client_for(stub_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "7"


def test_custom_error_status(stub_server):
    stub_server.enqueue(error(404, "The model 'nope' does not exist", "invalid_request_error", "model_not_found"))
    with pytest.raises(openai.NotFoundError) as info:
        client_for(stub_server).chat.completions.create(model="nope", messages=MESSAGES)
    assert "does not exist" in info.value.message


def test_client_retries_follow_its_setting(stub_server):
    """max_retries=1: a 503 then a success is one call for the caller, two for the server."""
    stub_server.enqueue(unavailable(), "after the retry")
    reply = client_for(stub_server, max_retries=1).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "after the retry"
    assert len(stub_server.chat_requests) == 2
    assert stub_server.chat_requests[0].body == stub_server.chat_requests[1].body


def test_stall_mid_stream_sends_pieces_then_times_out(stub_server):
    stub_server.enqueue(stall(5.0, after_pieces=2, text="one two three four"))
    received = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in client_for(stub_server, timeout=0.4).chat.completions.create(
                model="m", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["one", " two"]


def test_cut_stream_delivers_some_pieces_then_fails(stub_server):
    stub_server.enqueue(cut_stream("alpha beta gamma delta", after_pieces=3))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client_for(stub_server).chat.completions.create(model="m", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["alpha", " beta", " gamma"]


def test_stop_wakes_a_stall_and_closes_connections():
    stub = StubServer().start()
    stub.enqueue(stall(25.0))
    sock = socket.create_connection(("127.0.0.1", stub.port))
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert stub.wait_for_requests(1)
    started = time.monotonic()
    stub.stop()
    sock.settimeout(3)
    assert sock.recv(100) == b""  # closed without a reply
    sock.close()
    assert time.monotonic() - started < 3


def test_concurrent_clients_each_get_their_own_answer(stub_server):
    results: dict[int, str] = {}

    def one(i: int) -> None:
        msgs = [{"role": "user", "content": f"question {i}"}] * (i + 1)
        results[i] = client_for(stub_server).chat.completions.create(model="m", messages=msgs) \
            .choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: f"I got {i + 1} messages; the last one says 'question {i}'." for i in range(6)}


def test_non_chat_paths_and_bad_bodies(stub_server):
    client = client_for(stub_server)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages="not a list")  # type: ignore[arg-type]
    assert stub_server.pending == 0


def test_drop_then_recovery_over_raw_socket(stub_server):
    stub_server.enqueue(drop())
    sock = socket.create_connection(("127.0.0.1", stub_server.port))
    body = b'{"messages": []}'
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    sock.settimeout(3)
    assert sock.recv(100) == b""
    sock.close()


def test_strict_refuses_names_it_does_not_list_on_a_port_chosen_in_advance():
    # vLLM and Ollama answer a name they do not serve with a 404; a client can be pointed at the port first
    from tests.helpers import free_port

    port = free_port()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-stub-0000", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    with StubServer(port=port, model="only", strict=True) as stub:
        assert stub.port == port and stub.names == ["only"]
        stub.enqueue("queued")
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert err.value.body["code"] == "model_not_found" and "`gpt-4o-mini` does not exist" in err.value.message
        reply = client.chat.completions.create(model="only", messages=MESSAGES)
        assert reply.choices[0].message.content == "queued"  # the refused request took nothing from the queue
        assert [m.id for m in client.models.list().data] == ["only"]
