"""The scripted stand-in returns real openai types; make_client decides the backend from settings."""

import importlib.util
import json

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from nora_widgets import ScriptedClient, make_client, run_turn
from nora_widgets.clients import ModelUnavailableError, choose_backend, describe_client, model_note, model_used
from nora_widgets.errors import NoraError, describe_failure, redact

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_scripted_returns_a_real_chat_completion_and_logs_a_copy():
    client = ScriptedClient(["Hello there."])
    messages = [dict(m) for m in MESSAGES]
    response = client.chat.completions.create(model="m", messages=messages, temperature=0.2)
    assert isinstance(response, ChatCompletion)
    assert response.choices[0].message.content == "Hello there."
    assert response.choices[0].message.role == "assistant"
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens > 0
    messages.append({"role": "user", "content": "later change"})
    assert client.calls[0]["messages"] == MESSAGES  # a copy, as sent
    assert client.wire.last["transport"] == "in-process" and client.wire.last["body"]["temperature"] == 0.2


def test_scripted_stream_yields_real_chunks_with_optional_usage():
    client = ScriptedClient(["one two three"])
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_scripted_raises_exception_replies_and_runs_out_clearly():
    client = ScriptedClient([ValueError("scripted failure")])
    with pytest.raises(ValueError, match="scripted failure"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(RuntimeError, match="no replies left"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    client.enqueue("more")
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "more"


def test_an_echoing_client_answers_enqueued_replies_first_then_echoes_again():
    client = ScriptedClient()
    client.enqueue("queued", TimeoutError("timed out"))

    def ask():
        return client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content

    assert ask() == "queued"
    with pytest.raises(TimeoutError):
        ask()
    assert ask().startswith("[scripted reply 3] I was sent 2 messages")  # the third call; not "no replies left"
    assert client.remaining == -1


def test_scripted_echo_shows_what_the_model_was_sent():
    reply = ScriptedClient().chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    assert reply == "[scripted reply 1] I was sent 2 messages; the last one says: 'Hi'"


def test_choose_backend(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert choose_backend() == "local"
    assert choose_backend(base_url="http://127.0.0.1:1/v1") == "openai"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefgh")
    assert choose_backend() == "openai"
    assert choose_backend("scripted") == "scripted"
    with pytest.raises(NoraError, match="unknown backend"):
        choose_backend("gpt")


def test_make_client_openai_reads_env_and_never_stores_the_key_elsewhere(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET123456")
    monkeypatch.setenv("NORA_TIMEOUT", "7")
    monkeypatch.setenv("NORA_MAX_RETRIES", "0")
    client = make_client(base_url="http://127.0.0.1:9/v1", model="llama3")
    assert isinstance(client, openai.OpenAI)
    assert client.max_retries == 0 and client.timeout == 7
    assert client.default_model == "llama3"
    assert "SECRET" not in describe_client(client)


def test_make_client_bad_settings_are_one_line(monkeypatch):
    monkeypatch.setenv("NORA_TIMEOUT", "soon")
    with pytest.raises(NoraError, match="NORA_TIMEOUT must be a number"):
        make_client("openai", api_key="sk-test-x")
    monkeypatch.delenv("NORA_TIMEOUT")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelUnavailableError, match="OPENAI_API_KEY is not set"):
        make_client("openai")
    with pytest.raises(NoraError, match="timeout must be more than 0"):
        make_client("openai", api_key="sk-test-x", timeout=-1)
    monkeypatch.delenv("NORA_TIMEOUT", raising=False)
    for url in ("not-a-url", "localhost:8000/v1", "ftp://host/v1", "http://bob:pw-123@/v1"):  # no scheme / no host
        with pytest.raises(NoraError, match="the base URL must start with http:// or https://") as err:
            make_client("openai", base_url=url)
        assert "pw-123" not in str(err.value)
    for backend in ("local", "scripted"):  # a URL these backends would ignore without a word
        with pytest.raises(NoraError, match=f"a base URL names a server, and the '{backend}' backend has none"):
            make_client(backend, base_url="http://127.0.0.1:8000/v1")
    for backend, chosen in (("auto", "local"), ("local", "local"), ("openai", "openai")):  # replies went unused
        with pytest.raises(NoraError, match=f"^replies are the 'scripted' backend's canned answers, and the "
                                            f"'{chosen}' backend has a model: make_client\\('scripted', replies="):
            make_client(backend, replies=["Hello!"], api_key="sk-test-x" if backend == "openai" else None)
    # a face names the argument as its user typed it (nora's and %chat's --base-url)
    with pytest.raises(NoraError, match="^--base-url must start with http:// or https://"):
        make_client("openai", base_url="localhost:8000", base_url_name="--base-url")
    with pytest.raises(NoraError, match="^--base-url names a server, and the 'local' backend has none"):
        make_client("local", base_url="http://127.0.0.1:8000/v1", base_url_name="--base-url")
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000/v1")  # the setting it came from is named
    with pytest.raises(NoraError, match="^OPENAI_BASE_URL must start with http://"):
        make_client("openai")
    with pytest.raises(NoraError, match="^OPENAI_BASE_URL must start with http://"):  # not the face's flag
        make_client("openai", base_url_name="--base-url")
    monkeypatch.delenv("OPENAI_BASE_URL")
    for bad, says in (("nan", "more than 0 seconds"), ("inf", "a finite number of seconds"),
                      ("-inf", "more than 0 seconds"), ("-5", "more than 0 seconds"), ("0", "more than 0 seconds")):
        monkeypatch.setenv("NORA_TIMEOUT", bad)  # float() takes them; every call would then fail
        with pytest.raises(NoraError) as err:
            make_client("openai", api_key="sk-test-x")
        assert str(err.value) == f"NORA_TIMEOUT must be {says} (got {bad!r})"  # as set (it said 0.0 for '0')
    monkeypatch.delenv("NORA_TIMEOUT")
    monkeypatch.setenv("NORA_MAX_RETRIES", "-1")
    with pytest.raises(NoraError, match=r"^NORA_MAX_RETRIES must be 0 or more \(got '-1'\)$"):
        make_client("openai", api_key="sk-test-x")
    monkeypatch.delenv("NORA_MAX_RETRIES")
    with pytest.raises(NoraError, match=r"^timeout must be a number of seconds \(got '5'\)$"):
        make_client("openai", api_key="sk-test-x", timeout="5")  # was TypeError: '<' not supported
    with pytest.raises(NoraError, match=r"^max_retries must be a whole number \(got 1.5\)$"):  # the argument's name
        make_client("openai", api_key="sk-test-x", max_retries=1.5)
    monkeypatch.setenv("OPENAI_BASE_URL", " http://127.0.0.1:9/v1 \n")  # pasted with spaces: every call failed
    assert str(make_client("openai", api_key="sk-test-x").base_url) == "http://127.0.0.1:9/v1/"


def test_wire_log_masks_the_key():
    from nora_widgets.clients import WireLog

    wire = WireLog()
    request = httpx2.Request(
        "POST", "http://127.0.0.1:1/v1/chat/completions",
        headers={"Authorization": "Bearer sk-test-SECRET123456"},
        content=json.dumps({"model": "m", "messages": MESSAGES}).encode(),
    )
    wire.record_http(request)
    assert wire.last["body"]["messages"] == MESSAGES
    assert wire.last["headers"]["authorization"] == "Bearer ***"
    assert "SECRET" not in json.dumps(wire.last)


def _status_error(cls, status, body=None, headers=None):
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {}, json=body or {})
    return cls("error", response=response, body=body)


@pytest.mark.parametrize(
    "exc, kind, status, words",
    [
        (lambda: _status_error(openai.RateLimitError, 429), "rate_limit", 429, "rate limit"),
        (lambda: _status_error(openai.AuthenticationError, 401), "auth", 401, "OPENAI_API_KEY"),
        (lambda: _status_error(openai.InternalServerError, 503), "server", 503, "try again"),
        # e.g. `python -m http.server` at the base URL: not "an internal error - try again"
        (lambda: _status_error(openai.InternalServerError, 501), "server", 501,
         "the server does not support this request (HTTP 501) - check that OPENAI_BASE_URL is an OpenAI-compatible"),
        (lambda: _status_error(openai.BadRequestError, 400, {"error": {"message": "too long", "code": "context_length_exceeded"}}),
         "context_length", 400, "trim"),
        (lambda: openai.APITimeoutError(request=httpx2.Request("POST", "http://x")), "timeout", None, "timed out"),
        (lambda: openai.APIConnectionError(request=httpx2.Request("POST", "http://x")), "connection", None, "OPENAI_BASE_URL"),
        (lambda: json.JSONDecodeError("Expecting value", "<html>", 0), "bad_response", None, "not JSON"),
        (lambda: KeyboardInterrupt(), "cancelled", None, "rolled back"),
    ],
)
def test_describe_failure_of_real_openai_errors(exc, kind, status, words):
    failure = describe_failure(exc())
    assert failure.kind == kind and failure.status == status
    line = failure.line()
    assert words in line and "\n" not in line and line.startswith("(error talking to the model: ")


def test_redact_removes_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "custom-key-value-xyz")
    assert redact("bad key custom-key-value-xyz and sk-abcdefghijk") == "bad key *** and sk-***"


def test_rate_limit_line_carries_retry_after():
    failure = describe_failure(_status_error(openai.RateLimitError, 429, headers={"retry-after": "20"}))
    assert failure.message == "rate limit reached (HTTP 429, retry after 20 s)"


def test_a_server_with_one_model_names_the_model_sent_and_shown(monkeypatch):
    # `nora serve`, llama.cpp's server, vLLM with one model: no name given -> the one it lists,
    # so Nora never claims "gpt-4o-mini" for a model that is really something else
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(model="SmolLM2-135M-Instruct") as stub:
        client = make_client(base_url=stub.base_url)
        assert client.default_model == "SmolLM2-135M-Instruct"
        assert describe_client(client).endswith(", model SmolLM2-135M-Instruct")
        assert [(r.method, r.path) for r in stub.requests] == [("GET", "/v1/models")]
        assert client.wire.last is None and client.wire.count == 0  # the wire view shows turns only
        assert make_client(base_url=stub.base_url, model="mine").default_model == "mine"
        monkeypatch.setenv("NORA_MODEL", "from-env")
        assert make_client(base_url=stub.base_url).default_model == "from-env"
        assert len(stub.requests) == 1  # a name given: nothing asked
    with StubServer(listed=["llama3.2", "qwen2.5"]) as several:  # e.g. Ollama: the user must choose
        monkeypatch.delenv("NORA_MODEL")
        client = make_client(base_url=several.base_url)
        assert client.default_model == "gpt-4o-mini" and client.listed_models == ["llama3.2", "qwen2.5"]
        assert model_note(client, None) == ("the server lists 2 models (llama3.2, qwen2.5), not 'gpt-4o-mini': "
                                            "choose one with --model or NORA_MODEL")
        assert model_note(client, "qwen2.5") == ""  # a listed one: nothing to say
        assert model_note(client, "llama3.3", choose="the model box").endswith("not 'llama3.3': choose one with "
                                                                               "the model box")
    with StubServer(listed=["llama3.2:latest", "qwen2.5:7b"]) as ollama:  # Ollama lists tags; "llama3.2" is ":latest"
        client = make_client(base_url=ollama.base_url)
        assert model_note(client, "llama3.2") == "" and model_note(client, "qwen2.5:7b") == ""
        assert "not 'qwen2.5'" in model_note(client, "qwen2.5")
    with StubServer(listed=[f"m{i}" for i in range(8)]) as many:
        assert "(m0, m1, m2, m3, m4, ...)" in model_note(make_client(base_url=many.base_url), None)
    with StubServer(api_key="sk-right") as keyed:  # a wrong key: the first real call says so
        assert make_client(base_url=keyed.base_url, api_key="sk-wrong").default_model == "gpt-4o-mini"
    down = make_client(base_url="http://127.0.0.1:9/v1")  # nothing listening: no error here either
    assert down.default_model == "gpt-4o-mini"


def test_the_window_a_server_states_is_the_one_nora_shows(monkeypatch):
    # vLLM and nora serve list max_model_len with each model; llama.cpp's server says its window at /props
    # (its list has only n_ctx_train, the training window: 4 x here, never shown); others state none
    from nora_widgets.tokens import context_window
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(model="Qwen/Qwen2.5-0.5B", window=4096, speaks_like="vllm") as vllm:
        client = make_client(base_url=vllm.base_url)
        assert context_window(client) == 4096 and client.model_windows == {"Qwen/Qwen2.5-0.5B": 4096}
        # a server with one model answers another name with it (nora serve, llama.cpp's server; vLLM refuses it):
        # its window, not gpt-4o's 128,000 from the table
        assert context_window(client, "gpt-4o") == 4096
        assert describe_client(client) == (f"OpenAI-compatible server {vllm.base_url}, model Qwen/Qwen2.5-0.5B, "
                                           "context window 4,096 tokens")
        assert [r.path for r in vllm.requests] == ["/v1/models"]  # nothing more asked
        assert client.wire.last is None  # the asking is not a turn
    with StubServer(model="smollm2.gguf", window=3000, speaks_like="llamacpp") as llamacpp:
        client = make_client(base_url=llamacpp.base_url)
        assert context_window(client) == 3000 and describe_client(client).endswith(", context window 3,000 tokens")
        assert [r.path for r in llamacpp.requests] == ["/v1/models", "/props"]
    with StubServer(speaks_like="llamacpp") as no_count:  # /props without a window: unknown, never n_ctx_train
        client = make_client(base_url=no_count.base_url)
        assert client.model_windows == {} and context_window(client) is None
    with StubServer(model="gpt-4o-mini") as silent:  # a server that states no window: the table of known models
        client = make_client(base_url=silent.base_url)
        assert client.model_windows == {} and context_window(client) == 128_000
        assert describe_client(client).endswith(", model gpt-4o-mini")
        assert [r.path for r in silent.requests] == ["/v1/models"]  # no /props: not llama.cpp's server
    with StubServer(listed=["llama3.2:latest", "qwen2.5:7b"], window=8192, speaks_like="vllm") as several:
        client = make_client(base_url=several.base_url)
        assert context_window(client, "llama3.2") == 8192 and context_window(client, "qwen2.5:7b") == 8192
        # the default name is not among the server's: no window (it showed gpt-4o-mini's 128,000)
        assert client.default_model == "gpt-4o-mini" and context_window(client) is None
        assert context_window(client, "gpt-4") is None
    with StubServer(listed=["llama3.2", "qwen2.5"]) as ollama:  # Ollama states none: unknown, not 128,000
        assert context_window(make_client(base_url=ollama.base_url)) is None


QUERY = "api-version=2024-02-01"  # as Azure-style gateways want on every request


def test_openais_client_puts_the_path_after_a_query_in_its_base_url():
    # why make_client moves the query (below): openai's own client joins the path to base_url as text, so a
    # base_url with ?api-version=... sends the path inside the query, a 404 on any server.  If this starts to
    # fail, openai joins correctly now and make_client's _split_query could go.
    from tests.servers.openai_stub import StubServer

    with StubServer() as stub:
        client = openai.OpenAI(base_url=f"{stub.base_url}?{QUERY}", api_key="sk-test-x", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert [r.path for r in stub.requests] == [f"/v1/?{QUERY}chat/completions"]


def test_a_base_url_with_a_query_sends_it_on_every_request_and_the_wire_log_has_the_url_sent(monkeypatch):
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(model="smollm2.gguf", window=3000, speaks_like="llamacpp") as stub:
        client = make_client(base_url=f" {stub.base_url}?{QUERY} ", max_retries=0)
        assert client.default_model == "smollm2.gguf" and client.model_windows == {"smollm2.gguf": 3000}
        assert run_turn(client, [dict(MESSAGES[0])], "Hi").startswith("I got 2 messages")
        assert [r.path for r in stub.requests] == [f"/v1/models?{QUERY}", f"/props?{QUERY}",
                                                  f"/v1/chat/completions?{QUERY}"]
        assert client.wire.last["url"] == f"{stub.base_url}/chat/completions?{QUERY}"  # the request's own URL
        assert describe_client(client) == (f"OpenAI-compatible server {stub.base_url}?{QUERY}, model smollm2.gguf, "
                                           "context window 3,000 tokens")  # the server as given, query and all
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:9/v1?{QUERY}&deployment=a%20b")  # from the variable too
    client = make_client(ask_models=False)
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"
    assert client.default_query == {"api-version": "2024-02-01", "deployment": "a b"}


def test_a_key_in_the_base_urls_query_is_sent_and_never_shown(monkeypatch, tmp_path):
    # a gateway that takes its key in the query (?api-key=...): the settings line names the server as
    # given, the key masked; so does the wire log's URL and the refusal of a URL that is not one
    from tests import helpers
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    secret = "gw-0123456789abcdef"  # no sk- shape, not OPENAI_API_KEY: only its parameter's name says it is a key
    query = f"{QUERY}&api-key={secret}&deployment=a%20b"
    with StubServer(model="smollm2.gguf") as stub:
        client = make_client(base_url=f"{stub.base_url}?{query}", max_retries=0)
        assert describe_client(client) == (f"OpenAI-compatible server {stub.base_url}?{QUERY}&api-key=***"
                                           "&deployment=a%20b, model smollm2.gguf")
        assert run_turn(client, [dict(MESSAGES[0])], "Hi").startswith("I got 2 messages")
        sent = f"/chat/completions?{QUERY}&api-key={secret}&deployment=a+b"  # httpx2 writes the space as +
        assert stub.requests[-1].path == f"/v1{sent}"  # the server gets the key
        assert client.wire.last["url"] == f"{stub.base_url}{sent}".replace(secret, "***")
        chat = helpers.run_nora("chat", "--base-url", f"{stub.base_url}?{query}", env=helpers.nora_env(),
                                stdin="hi\n", cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr
    assert f"{stub.base_url}?{QUERY}&api-key=***&deployment=a%20b, model smollm2.gguf" in chat.stdout.splitlines()[0]
    assert secret not in chat.stdout + chat.stderr
    for url in (f"ftp://host/v1?token={secret}", f"http://127.0.0.1:9/v1?key={secret}&sig={secret}"):
        try:
            shown = describe_client(make_client(base_url=url, model="m"))
        except NoraError as exc:
            shown = str(exc)
        assert secret not in shown and ("=***" in shown), shown


@pytest.mark.parametrize("text, shown", [
    ("http://h/v1?api-version=1&api-key=abc", "http://h/v1?api-version=1&api-key=***"),
    ("http://h/v1?key=a&token=b&access_token=c&apikey=d&Ocp-Apim-Subscription-Key=e&sig=f&code=g",
     "http://h/v1?key=***&token=***&access_token=***&apikey=***&Ocp-Apim-Subscription-Key=***&sig=***&code=***"),
    ("http://h/v1?api-version=2024-02-01&deployment=gpt&keep=1", "http://h/v1?api-version=2024-02-01&deployment=gpt&keep=1"),
    ("a key=abc in a sentence", "a key=abc in a sentence"),  # only a URL's query: after ? or &
    ("http://h/v1?api%2Dkey=abc&x%5Ftoken=d&v=%2D1", "http://h/v1?api%2Dkey=***&x%5Ftoken=***&v=%2D1"),  # names escaped
])
def test_redact_masks_the_value_of_a_query_parameter_named_like_a_key(text, shown):
    assert redact(text) == shown


def test_a_window_asked_for_after_the_server_came_up_is_known_from_then_on(monkeypatch):
    from nora_widgets.tokens import context_window
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer() as probe:
        port = probe.port
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)  # nothing listening yet
    assert context_window(client) is None and client.default_model_pending is not None
    with StubServer(port=port, model="SmolLM2-135M-Instruct", window=2048, speaks_like="vllm"):
        run_turn(client, [dict(MESSAGES[0])], "Hi")
        assert context_window(client) == 2048
        assert describe_client(client).endswith("model SmolLM2-135M-Instruct, context window 2,048 tokens")


def test_asking_for_the_list_later_keeps_the_wire_logs_last_request(monkeypatch):
    # nora chat's /model NAME asks a server for its names mid-conversation: the wire log still shows the
    # last chat request (it was cleared, as at the start, where there is nothing to keep)
    from nora_widgets.clients import _listed_models
    from tests.servers.openai_stub import StubServer

    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with StubServer(listed=["llama3.2", "qwen2.5"]) as stub:
        client = make_client(base_url=stub.base_url, model="qwen2.5")
        run_turn(client, [dict(m) for m in MESSAGES[:1]], "Hi", model="qwen2.5")
        last = client.wire.last
        assert last["body"]["messages"][-1] == {"role": "user", "content": "Hi"} and client.wire.count == 1
        assert _listed_models(client, stub.base_url) == ["llama3.2", "qwen2.5"]
        assert (client.wire.last, client.wire.count) == (last, 1)
        assert model_note(client, "llama3", listed=["llama3.2", "qwen2.5"]).startswith("the server lists 2 models")
        assert model_note(client, "llama3") == ""  # make_client was given a name: it listed nothing


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the embedded model ([local])")
def test_a_transcript_records_the_model_that_answered(tmp_path):
    # `nora chat --backend local --model gpt-4o --save f`: the file said "gpt-4o", SmolLM2 had answered
    from nora_widgets.local import LocalClient

    local = LocalClient()
    assert model_used(local, "gpt-4o") == model_used(local, None) == local.default_model
    assert model_used(ScriptedClient(model="s"), "gpt-4o") == "gpt-4o"
    assert model_used(ScriptedClient(model="s"), None) == "s"


def test_one_reply_given_alone_is_one_reply():
    # ScriptedClient("Hello there") answered "H", then "e", ... (a string is a list of characters)
    history = [{"role": "system", "content": "Be brief."}]
    client = ScriptedClient("Hello there")
    assert run_turn(client, history, "hi") == "Hello there" and client.remaining == 0
    failing = ScriptedClient(TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        run_turn(failing, history, "hi")
    assert len(history) == 3


# --------------------------------------------------------------------------- #
# a server that was not up yet when the client was made


@pytest.fixture
def no_settings(monkeypatch):
    for name in ("NORA_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _asked(stub) -> list[tuple[str, str | None]]:
    """What reached the server, in order: ('GET', None) for /models, ('POST', model) for a chat."""
    return [(r.method, (r.body or {}).get("model")) for r in stub.requests]


def test_a_server_started_after_the_client_is_asked_again_and_its_model_sent(no_settings):
    # `nora serve`, vLLM or llama.cpp's server still starting when the notebook cell ran: the model list
    # got no answer, and every turn asked for gpt-4o-mini for the whole session (vLLM: 404 each time)
    from nora_widgets.conversation import safe_run_turn, stream_turn
    from nora_widgets.guard import GuardedClient
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer

    port = free_port()
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    assert client.default_model == "gpt-4o-mini" and client.listed_models == []
    assert client.default_model_pending is not None
    assert describe_client(client) == (f"OpenAI-compatible server http://127.0.0.1:{port}/v1, model not known yet: "
                                       "the server did not answer when asked for its models (the next call asks "
                                       "again and sends its model if it lists one, else gpt-4o-mini)")
    assert describe_client(client, "llama3") == f"OpenAI-compatible server http://127.0.0.1:{port}/v1, model llama3"
    assert model_note(client, None) == ""
    history = [dict(MESSAGES[0])]
    result = safe_run_turn(client, history, "Hi")  # still down: asked again, no answer, the turn fails as before
    assert result.failure.kind == "connection" and history == MESSAGES[:1]
    assert client.default_model_pending is not None  # the next turn asks again
    guarded = GuardedClient(client)
    with StubServer(port=port, model="SmolLM2-135M-Instruct", strict=True) as stub:  # refuses gpt-4o-mini
        assert run_turn(guarded, history, "Hi") == "I got 2 messages; the last one says 'Hi'."
        assert _asked(stub) == [("GET", None), ("POST", "SmolLM2-135M-Instruct")]
        assert client.default_model == guarded.default_model == "SmolLM2-135M-Instruct"
        assert client.listed_models == ["SmolLM2-135M-Instruct"] and client.default_model_pending is None
        assert describe_client(client) == (f"OpenAI-compatible server http://127.0.0.1:{port}/v1, "
                                           "model SmolLM2-135M-Instruct")
        assert client.wire.last["url"].endswith("/chat/completions")  # the wire view shows the turn, not the list
        assert "".join(stream_turn(client, history, "And now?")) == history[-1]["content"]
        run_turn(client, history, "Again")
        assert _asked(stub)[2:] == [("POST", "SmolLM2-135M-Instruct")] * 2  # answered once: never asked again


@pytest.mark.parametrize("at_start, pending", [
    ("down", True),           # nothing listening (the stub is started after make_client)
    ("drop", True),           # the connection closed without a reply
    ("503", True),            # llama.cpp's server while it loads its model; a proxy with its server down: 502/504
    ("404", False),           # a server without GET /models (it is optional): an answer, there is no list
    ("401", False),           # a wrong key: an answer too; the first real call says what is wrong
    ("listed", False),        # the usual case
])
def test_only_no_answer_is_asked_again_and_an_answer_costs_the_turns_nothing(no_settings, at_start, pending):
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer, drop, error

    port = free_port()
    stub = StubServer(port=port, api_key="sk-test-right" if at_start == "401" else None)
    if at_start != "down":
        stub.start()
        stub.enqueue_models(*{"drop": [drop()], "503": [error(503, "Loading model", "unavailable_error")],
                              "404": [error(404, "Unknown path /v1/models")], "401": [], "listed": []}[at_start])
    try:
        client = make_client(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-right" if at_start != "401"
                             else "sk-test-wrong", max_retries=0)
        assert (client.default_model_pending is not None) == pending
        assert client.default_model == ("stub-model" if at_start == "listed" else "gpt-4o-mini")
        if at_start == "down":
            stub.start()
        before = len(stub.requests)
        history = [dict(MESSAGES[0])]
        for text in ("Hi", "Again"):
            try:
                run_turn(client, history, text)
            except openai.AuthenticationError:
                assert at_start == "401"
        asked = _asked(stub)[before:]
        if pending:  # asked once more before the first turn, which then sends the server's model
            assert asked == [("GET", None), ("POST", "stub-model"), ("POST", "stub-model")]
        else:  # no call added to any turn
            name = "stub-model" if at_start == "listed" else "gpt-4o-mini"
            assert asked == [("POST", name), ("POST", name)]
    finally:
        stub.stop()


def test_each_turn_asks_once_while_there_is_no_answer_and_several_models_leave_the_default(no_settings):
    from tests.servers.openai_stub import StubServer, error

    with StubServer(listed=["llama3.2", "qwen2.5"], strict=True) as stub:  # e.g. Ollama, still starting
        stub.enqueue_models(*[error(503, "starting", "unavailable_error")] * 2)
        client = make_client(base_url=stub.base_url, max_retries=0)
        history = [dict(MESSAGES[0])]
        with pytest.raises(openai.NotFoundError):  # 503 again: gpt-4o-mini, which this server refuses
            run_turn(client, history, "Hi")
        assert _asked(stub) == [("GET", None), ("GET", None), ("POST", "gpt-4o-mini")]
        assert client.default_model_pending is not None and history == MESSAGES[:1]
        with pytest.raises(openai.NotFoundError):  # listed now, two of them: the user has to choose
            run_turn(client, history, "Hi")
        assert _asked(stub)[3:] == [("GET", None), ("POST", "gpt-4o-mini")]
        assert client.default_model == "gpt-4o-mini" and client.default_model_pending is None
        assert client.listed_models == ["llama3.2", "qwen2.5"]
        assert model_note(client, None) == ("the server lists 2 models (llama3.2, qwen2.5), not 'gpt-4o-mini': "
                                            "choose one with --model or NORA_MODEL")
        assert describe_client(client).endswith(", model gpt-4o-mini")
        assert run_turn(client, history, "Hi", model="qwen2.5").startswith("I got 2 messages")
        assert _asked(stub)[5:] == [("POST", "qwen2.5")]


def test_a_default_model_set_by_hand_meanwhile_is_kept(no_settings):
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer

    port = free_port()
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    client.default_model = "mine"
    with StubServer(port=port, listed=["mine", "other"]) as stub:
        run_turn(client, [dict(MESSAGES[0])], "Hi")
        assert _asked(stub) == [("GET", None), ("POST", "mine")]
        assert client.default_model == "mine" and client.listed_models == ["mine", "other"]


def test_the_context_window_of_a_model_not_known_yet_is_not_known(no_settings):
    # the panel's gauge showed gpt-4o-mini's 128,000 tokens for a server that had not said which model it serves
    from nora_widgets.tokens import context_window
    from tests.helpers import free_port
    from tests.servers.openai_stub import StubServer

    port = free_port()
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    assert client.default_model == "gpt-4o-mini" and context_window(client) is None
    with StubServer(port=port, model="gpt-4o"):
        run_turn(client, [dict(MESSAGES[0])], "Hi")
        assert client.default_model == "gpt-4o" and context_window(client) == 128_000
