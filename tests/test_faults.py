"""The fault matrix: every fault of the stub server, in the core, the CLI and the panel.

Each cell drives the real ``openai`` client over HTTP on 127.0.0.1 against
tests/servers/openai_stub.py and checks the four promises:

    1. the history is exactly what it was before the turn;
    2. the person sees one line saying what happened and what to do;
    3. retries follow the settings (the stub counts the requests it received);
    4. the next turn works, and carries no trace of the failed one.

The CLI's one-line-and-rollback cells for every fault, streamed and not, live in
tests/test_cli.py (test_every_fault_is_one_line_and_rolled_back); this file adds
the CLI cells it lacks (retry counts, trimming on overflow).  docs/reliability.md
maps each cell to its test.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from dataclasses import dataclass

import pytest

from nora_widgets.clients import make_client
from nora_widgets.conversation import SYSTEM_PROMPT, run_turn, safe_run_turn, stream_turn
from nora_widgets.errors import ArgumentError, BadResponseError, describe_failure
from tests.helpers import nora_env, panel_for, panel_send, run_nora
from tests.servers.openai_stub import (
    FAULTS,
    Behaviour,
    StubServer,
    context_length_exceeded,
    default_reply,
    error,
    ok,
    rate_limit,
    stall,
    unavailable,
    whole_reply,
)

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-faults-4e9b1c7a2d"
TIMEOUT = 0.5  # the client's timeout: a stall of 1.5 s always loses
LONG_REPLY = "one two three " + "and more " * 98  # 199 pieces: 20 s to read to the end at 0.1 s apart
SYSTEM = {"role": "system", "content": SYSTEM_PROMPT}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def earlier(turns: int = 2) -> list[dict]:
    """A conversation with some turns in it, so a failure has something to damage."""
    history = [SYSTEM]
    for i in range(turns):
        history += [user(f"question {i}"), assistant(f"answer {i}")]
    return history


def client_for(stub: StubServer, retries: int = 0, timeout: float = TIMEOUT):
    return make_client("openai", api_key=KEY, base_url=stub.base_url, max_retries=retries, timeout=timeout)


# --------------------------------------------------------------------------- #
# the matrix: what each fault must look like


@dataclass(frozen=True)
class Cell:
    """What a fault must produce.  stream_* override for streamed replies (None: the same)."""

    behaviour: Behaviour
    kind: str
    words: tuple[str, ...]
    retried: bool  # the openai client retries it (429, 5xx, connection errors, timeouts)
    stream_kind: str | None = None
    stream_words: tuple[str, ...] | None = None
    stream_retried: bool | None = None

    def expect(self, stream: bool) -> tuple[str, tuple[str, ...], bool]:
        if not stream:
            return self.kind, self.words, self.retried
        return (self.stream_kind or self.kind, self.stream_words or self.words,
                self.retried if self.stream_retried is None else self.stream_retried)


MATRIX = {
    "rate_limit_429": Cell(FAULTS["rate_limit_429"], "rate_limit", ("rate limit", "HTTP 429", "retry after 1 s"), True),
    "server_error_500": Cell(FAULTS["server_error_500"], "server", ("internal error", "HTTP 500", "try again"), True),
    "unavailable_503": Cell(FAULTS["unavailable_503"], "server",
                            ("the server is unavailable", "HTTP 503", "try again"), True),
    "unauthorized_401": Cell(FAULTS["unauthorized_401"], "auth",
                             ("refused the API key", "HTTP 401", "check OPENAI_API_KEY"), False),
    "context_length_400": Cell(FAULTS["context_length_400"], "context_length",
                               ("longer than the model's context window: 3,000 tokens > 2,048", "HTTP 400", "/trim N"),
                               False),
    # it said "the server sent a reply that is not JSON", and run_turn raised json's bare JSONDecodeError
    "malformed_json": Cell(FAULTS["malformed_json"], "bad_response", ("the server's answer is not JSON", "OPENAI_BASE_URL"),
                           False),
    # a web site or another JSON API at the base URL: the line said "AttributeError: 'str' object has no
    # attribute 'choices'" / "TypeError: 'NoneType' object is not subscriptable"
    # streamed, it said "the server sent an empty stream (no chunks)"
    "web_page": Cell(FAULTS["web_page"], "bad_response",
                     ("not a chat completion (a text/HTML page)", "OpenAI-compatible API"), False,
                     stream_words=("not a stream of chat chunks (a text/HTML page)", "OpenAI-compatible API")),
    # streamed, it said "the server sent an empty stream (no chunks)"
    "not_a_completion": Cell(FAULTS["not_a_completion"], "bad_response",
                             ("not a chat completion (no choices)", "OpenAI-compatible API"), False,
                             stream_words=("not a stream of chat chunks (JSON)", "OpenAI-compatible API")),
    # nora serve's answer to a request kept waiting past its keep-alive that then failed: the 200 had
    # gone out, the error is the body; it read "not a chat completion (no choices)", streamed "empty stream"
    "error_after_head": Cell(FAULTS["error_after_head"], "server",
                             ("the server answered with an error: The server had an error while processing",
                              "try again in a moment"), False),
    "dropped_connection": Cell(FAULTS["dropped_connection"], "connection",
                               ("the server closed the connection without answering",), True),
    "stall": Cell(stall(1.5), "timeout", ("timed out", "--timeout"), True),
    # Not streamed: half the JSON body, then the socket closes.  Streamed: two pieces, then it closes;
    # the openai client never retries a stream that has started.
    "stream_cut": Cell(FAULTS["stream_cut"], "stream_cut", ("cut off", "closed the connection", "send it again"), True,
                       stream_words=("cut off after 5 characters", "closed the connection", "send it again"),
                       stream_retried=False),
    # Streamed: two pieces, then silence until the client's timeout.
    "stall_mid_stream": Cell(stall(1.5, after_pieces=2, text="one two three four"), "timeout", ("timed out",), True,
                             stream_kind="stream_cut",
                             stream_words=("cut off after 7 characters", "timed out", "send it again"),
                             stream_retried=False),
}
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


def test_every_fault_of_the_stub_is_in_the_matrix():
    assert set(FAULTS) <= set(MATRIX)


def in_words_of(face: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """The matrix's words are nora chat's; the core (code, lessons) and the panel give the same
    advice in their own: how to trim, how to wait longer."""
    own = {"core": {"/trim N": "keep_last_n_turns=N", "--timeout": "make_client(timeout=...)"},
           "panel": {"/trim N": "'keep last' N turns", "--timeout": "make_client(timeout=...)"}}[face]
    return tuple(own.get(w, w) for w in words)


LINE_MAX = 170  # characters: a failure line, advice included, in any face's words


def check_line(line: str, words: tuple[str, ...]) -> None:
    assert line.startswith("(error talking to the model: ") and line.endswith(")"), line
    assert "\n" not in line and "Traceback" not in line
    assert all(w in line for w in words), (words, line)
    assert line.count("OpenAI-compatible") <= 1, line  # a hint said once
    assert len(line) <= LINE_MAX, (len(line), line)  # read at a glance (the overflow's was 227: the server's sentences)
    assert KEY not in line


# --------------------------------------------------------------------------- #
# the core: safe_run_turn


@pytest.mark.parametrize("name", sorted(MATRIX))
@STREAMS
def test_core_fault_rolls_back_says_one_line_and_the_next_turn_works(stub_server, name, stream):
    kind, words, _ = MATRIX[name].expect(stream)
    client = client_for(stub_server)
    history = earlier()
    before = copy.deepcopy(history)
    stub_server.enqueue(MATRIX[name].behaviour)
    shown: list[str] = []
    on_text = shown.append if stream else None

    result = safe_run_turn(client, history, "the failing turn", on_text=on_text)
    assert history == before
    assert not result.ok and result.failure.kind == kind, str(result)
    check_line(str(result), in_words_of("core", words))
    assert "--timeout" not in str(result) and "/trim" not in str(result)  # nora chat's words, not code's
    assert len(stub_server.chat_requests) == 1  # max_retries=0: one request, no retry

    result = safe_run_turn(client, history, "next", on_text=on_text)
    reply = default_reply(before + [user("next")])
    assert result == reply and history == before + [user("next"), assistant(reply)]
    assert stub_server.chat_requests[-1].messages == before + [user("next")]  # no dangling user turn


RETRY_FAST = {  # the same faults with a Retry-After short enough to wait for
    **{name: cell.behaviour for name, cell in MATRIX.items()},
    "rate_limit_429": rate_limit(retry_after=0.1),
}
# Not streamed, stall_mid_stream is a plain stall: left out.  Streamed, the cells that differ or matter.
RETRY_CELLS = [(name, False) for name in sorted(MATRIX) if name != "stall_mid_stream"] + [
    (name, True) for name in ("rate_limit_429", "unauthorized_401", "stream_cut", "stall_mid_stream")]


def test_a_400_naming_its_field_says_to_check_that_field_in_each_faces_words():
    # nora serve's "Invalid 'max_tokens': 5000 leaves no room ..." ended "- check the model name and settings"
    import httpx2
    import openai

    from nora_widgets.errors import describe_failure

    def bad_request(param):
        response = httpx2.Response(400, request=httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions"))
        return openai.BadRequestError("Invalid", response=response,
                                      body={"error": {"message": f"Invalid {param!r}", "param": param}})

    failure = describe_failure(bad_request("max_tokens"))
    assert failure.hint == "check max_tokens=" and failure.with_max_tokens_named("--max-tokens").hint == "check --max-tokens"
    assert describe_failure(bad_request("temperature")).hint == "check temperature, the field the server names"
    assert describe_failure(bad_request(None)).hint == "check the model name and settings"
    assert describe_failure(bad_request("x; rm -rf /")).hint == "check the model name and settings"  # not a field name
    turned = describe_failure(bad_request("max_tokens")).with_max_tokens_named("--max-tokens")
    assert turned.message.endswith("(HTTP 400)") and "--max-tokens" not in turned.message  # the server's words kept


@pytest.mark.parametrize("name, stream", RETRY_CELLS, ids=[f"{n}-{'stream' if s else 'whole'}" for n, s in RETRY_CELLS])
def test_core_retries_follow_max_retries(stub_server, name, stream):
    """max_retries=2: a retried fault reaches the server 3 times, the others once; still rolled back."""
    kind, words, retried = MATRIX[name].expect(stream)
    stub_server.enqueue(*[RETRY_FAST[name]] * 3)
    history = earlier()
    before = copy.deepcopy(history)
    result = safe_run_turn(client_for(stub_server, retries=2), history, "again and again",
                           on_text=(lambda piece: None) if stream else None)
    assert result.failure.kind == kind and history == before
    assert len(stub_server.chat_requests) == (3 if retried else 1)
    assert stub_server.pending == (0 if retried else 2)
    assert all(r.messages == before + [user("again and again")] for r in stub_server.chat_requests)


@pytest.mark.parametrize("name", ["rate_limit_429", "unavailable_503", "dropped_connection", "stall"])
def test_core_a_passing_fault_is_invisible_with_retries(stub_server, name):
    stub_server.enqueue(RETRY_FAST[name], ok("Back again."))
    history = earlier()
    result = safe_run_turn(client_for(stub_server, retries=2), history, "hello", on_text=lambda piece: None)
    assert result == "Back again." and history[-2:] == [user("hello"), assistant("Back again.")]
    assert len(stub_server.chat_requests) == 2


@STREAMS
def test_core_context_overflow_with_trimming_trims_and_retries_once(stub_server, stream):
    history = earlier(6)
    stub_server.enqueue(context_length_exceeded(), ok("Fits now."))
    on_text = (lambda piece: None) if stream else None
    result = safe_run_turn(client_for(stub_server), history, "latest", keep_last_n_turns=4, on_text=on_text)
    assert result == "Fits now." and len(history) == 15  # the list itself keeps everything
    first, second = (r.messages for r in stub_server.chat_requests)
    assert sum(m["role"] == "user" for m in first) == 5  # 4 earlier turns + the new one
    assert sum(m["role"] == "user" for m in second) == 3  # half as many: 2 + the new one
    assert second == [SYSTEM] + history[-6:-2] + [user("latest")]


def test_core_context_overflow_twice_with_trimming_says_how_and_rolls_back(stub_server):
    history = earlier(6)
    before = copy.deepcopy(history)
    stub_server.enqueue(context_length_exceeded(), context_length_exceeded(), ok("never"))
    result = safe_run_turn(client_for(stub_server), history, "latest", keep_last_n_turns=4)
    assert history == before and result.failure.kind == "context_length"
    check_line(str(result), ("context window", "keep_last_n_turns=N"))
    assert len(stub_server.chat_requests) == 2  # retried once, not forever


def test_core_overflow_with_nothing_to_trim_says_the_message_is_too_long(stub_server):
    """Trimming cannot help when no earlier turn was sent: the line says so instead of '/trim N'."""
    history = [SYSTEM]
    stub_server.enqueue(context_length_exceeded())
    result = safe_run_turn(client_for(stub_server), history, "x" * 5000)
    assert history == [SYSTEM] and result.failure.kind == "too_long"
    check_line(str(result), ("overflow the 2,048-token context window", "(5,000 + 108 characters)", "shorten them"))
    assert "/trim" not in str(result)


def body_too_large() -> Behaviour:
    """413 as nora serve answers a body over its limit (nora_widgets/_body_limit.py)."""
    return error(413, "The request body is 3.0 MB, over the 2.0 MB this server takes: send a shorter conversation.",
                 "invalid_request_error", "request_too_large")


@STREAMS
def test_core_a_413_with_nothing_to_trim_says_the_message_is_too_long(stub_server, stream):
    """A body over the server's limit on the first message: trimming cannot help, so the line says to shorten
    the message, as for a 400 context_length_exceeded; it said 'trim it (keep_last_n_turns=N ...)', which
    nora ask turned into 'start a new --history file' for a question asked with no --history at all."""
    history = [SYSTEM]
    stub_server.enqueue(body_too_large())
    pieces: list[str] = []
    result = safe_run_turn(client_for(stub_server), history, "x" * 5000, on_text=pieces.append if stream else None)
    assert history == [SYSTEM] and pieces == [] and result.failure.kind == "too_long"
    check_line(str(result), ("your message and persona (5,000 + 108 characters)", "are more than the server takes (HTTP 413)",
                             "shorten them, or send the message in parts"))
    assert "trim" not in str(result)


def test_core_a_413_after_earlier_turns_still_says_to_trim(stub_server):
    """With earlier turns sent, fewer of them may fit the server's limit: the advice stays 'trim it'."""
    history = earlier()
    before = copy.deepcopy(history)
    stub_server.enqueue(body_too_large())
    result = safe_run_turn(client_for(stub_server), history, "the failing turn")
    assert history == before and result.failure.kind == "bad_request"  # the server's words are long: not check_line
    assert str(result) == ("(error talking to the model: the request is too large for the server: The request body is 3.0 MB, "
                           "over the 2.0 MB this server takes: send a shorter conversation. (HTTP 413) - trim it "
                           "(keep_last_n_turns=N, or trim_history))")


ADVICE = "check that OPENAI_BASE_URL is an OpenAI-compatible API"  # the advice for any answer Nora cannot read


@STREAMS
def test_core_a_body_that_is_not_json_is_a_bad_response_from_the_json_error(stub_server, stream):
    """A 200 whose body is not JSON raised json's bare JSONDecodeError ('Expecting property name enclosed in
    double quotes: line 1 column 2 (char 1)'): nothing in it said that the server sent it."""
    history = earlier()
    before = copy.deepcopy(history)
    stub_server.enqueue(FAULTS["malformed_json"])
    client = client_for(stub_server)
    with pytest.raises(BadResponseError) as raised:
        if stream:
            list(stream_turn(client, history, "the failing turn"))
        else:
            run_turn(client, history, "the failing turn")
    assert str(raised.value) == "the server's answer is not JSON" and history == before
    assert isinstance(raised.value.__cause__, json.JSONDecodeError)  # where the parse stopped, for who wants it
    assert describe_failure(raised.value).line() == f"(error talking to the model: the server's answer is not JSON - {ADVICE})"
    assert run_turn(client, history, "next") == default_reply(before + [user("next")])


def test_core_a_web_page_answering_a_stream_is_said_as_a_page_with_the_advice_of_the_whole_answer(stub_server):
    """A wrong base URL (a web UI on that port, a URL missing /v1) answers a streamed request with its page:
    it said 'the server sent an empty stream (no chunks)', which sent people to look at the model."""
    history = earlier()
    before = copy.deepcopy(history)
    client = client_for(stub_server)
    stub_server.enqueue(FAULTS["web_page"], FAULTS["web_page"], FAULTS["web_page"])
    with pytest.raises(BadResponseError, match=r"^the server's answer is not a stream of chat chunks \(a text/HTML page\)$"):
        list(stream_turn(client, history, "the failing turn"))
    whole = safe_run_turn(client, history, "the failing turn")
    streamed = safe_run_turn(client, history, "the failing turn", on_text=lambda piece: None)
    assert whole == f"(error talking to the model: the server's answer is not a chat completion (a text/HTML page) - {ADVICE})"
    assert streamed == (f"(error talking to the model: the server's answer is not a stream of chat chunks "
                        f"(a text/HTML page) - {ADVICE})")
    assert history == before and len(stub_server.chat_requests) == 3


def test_core_a_whole_reply_answering_a_stream_is_the_reply_in_one_piece(stub_server):
    """A server (or a proxy) that ignores "stream": true answers with the whole completion as JSON: it said
    'the server sent an empty stream (no chunks)' and dropped a reply the server had given."""
    history = earlier()
    before = copy.deepcopy(history)
    client = client_for(stub_server)
    stub_server.enqueue(whole_reply("Yes, two novels."), whole_reply("14.50 euros."))
    went_out = []
    assert list(stream_turn(client, history, "Any Le Guin?", on_sent=went_out.append)) == ["Yes, two novels."]
    assert history == before + [user("Any Le Guin?"), assistant("Yes, two novels.")]
    assert went_out == [before + [user("Any Le Guin?")]]
    shown: list[str] = []
    result = safe_run_turn(client, history, "How much?", on_text=shown.append)
    assert result == "14.50 euros." and result.ok and shown == ["14.50 euros."]
    assert history[-2:] == [user("How much?"), assistant("14.50 euros.")] and len(history) == len(before) + 4
    assert [r.body["stream"] for r in stub_server.chat_requests] == [True, True]  # asked once each, streamed


def test_core_json_answering_a_stream_of_a_plain_openai_client_is_named_as_json(stub_server):
    """openai's stream reads the body as events and keeps none of it: only make_client's clients keep a JSON
    body readable.  A plain openai.OpenAI's stream cannot tell a whole reply from an error: both are JSON,
    said so (it said 'the server sent an empty stream (no chunks)'), the history unchanged."""
    import openai

    history = earlier()
    before = copy.deepcopy(history)
    client = openai.OpenAI(base_url=stub_server.base_url, api_key=KEY, max_retries=0)
    stub_server.enqueue(whole_reply("lost"), FAULTS["error_after_head"], FAULTS["not_a_completion"])
    for _ in range(3):
        with pytest.raises(BadResponseError, match=r"^the server's answer is not a stream of chat chunks \(JSON\)$"):
            list(stream_turn(client, history, "the failing turn"))
        assert history == before


def test_core_json_answering_a_stream_is_said_as_the_answer_not_streamed_is(stub_server):
    """An error as the body of a 200 is the server's own message, as not streamed; other JSON is named."""
    history = earlier()
    before = copy.deepcopy(history)
    client = client_for(stub_server)
    stub_server.enqueue(*[FAULTS["error_after_head"]] * 3, FAULTS["not_a_completion"])
    with pytest.raises(BadResponseError, match=r"^the server answered with an error: The server had an error "):
        list(stream_turn(client, history, "the failing turn"))
    whole = safe_run_turn(client, history, "the failing turn")
    streamed = safe_run_turn(client, history, "the failing turn", on_text=lambda piece: None)
    assert streamed == whole == ("(error talking to the model: the server answered with an error: The server had an "
                                 "error while processing your request. - try again in a moment)")
    other = safe_run_turn(client, history, "the failing turn", on_text=lambda piece: None)
    assert other == f"(error talking to the model: the server's answer is not a stream of chat chunks (JSON) - {ADVICE})"
    assert history == before and len(stub_server.chat_requests) == 4


@STREAMS
def test_core_a_keep_last_n_turns_nora_cannot_use_is_not_sent_as_other_bad_input(stub_server, stream):
    """It said '(error talking to the model: keep_last_n_turns must be ...)' though no model was talked to."""
    history = earlier()
    before = copy.deepcopy(history)
    client = client_for(stub_server)
    on_text = (lambda piece: None) if stream else None
    for keep, got in (("3", "'3'"), (-1, "-1"), (2.5, "2.5")):
        result = safe_run_turn(client, history, "hi", keep_last_n_turns=keep, on_text=on_text)
        assert result == f"(not sent: keep_last_n_turns must be a whole number >= 0 (got {got}))"
        assert result.failure.kind == "bad_input" and result.failure == describe_failure(ArgumentError(str(result.failure.message)))
    # said as an empty message and a broken list are: the same prefix, the same kind
    assert safe_run_turn(client, history, "  ", on_text=on_text).failure.kind == "bad_input"
    with pytest.raises(ArgumentError):  # a NoraError (a ValueError), as every refusal is
        run_turn(client, history, "hi", keep_last_n_turns="3")
    assert history == before and stub_server.chat_requests == []  # nothing went out


def test_core_ctrl_c_mid_stream_over_http_rolls_back(stub_server):
    """KeyboardInterrupt raised while pieces arrive: cancelled, nothing kept, the connection is let go."""
    stub_server.enqueue(ok(LONG_REPLY, delay=0.1))
    history = earlier()
    before = copy.deepcopy(history)
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            raise KeyboardInterrupt

    t0 = time.monotonic()
    result = safe_run_turn(client_for(stub_server, timeout=5), history, "long story", on_text=on_text)
    assert time.monotonic() - t0 < 10  # it stopped at once, it did not read to the end
    assert result.failure.kind == "cancelled" and history == before and seen == ["one", " two"]
    assert safe_run_turn(client_for(stub_server), history, "next").ok and len(history) == len(before) + 2


# --------------------------------------------------------------------------- #
# the CLI: the cells tests/test_cli.py does not have


def nora(stub: StubServer, *args: str, stdin: str) -> subprocess.CompletedProcess:
    return run_nora(*args, env=nora_env(stub.base_url, KEY), stdin=stdin)


CLI_RETRY = ("rate_limit_429", "unauthorized_401", "unavailable_503", "malformed_json", "stream_cut")


@pytest.mark.parametrize("retries", [0, 2])
def test_cli_retries_follow_max_retries(stub_server, retries):
    """One `nora chat` session, one failing turn per fault: the stub counts the requests of each.
    (Every fault with max_retries 0 and 2 is in the core cells above: the client does the retrying.)"""
    names = sorted(MATRIX) if retries == 0 else CLI_RETRY
    stub_server.enqueue("Fine.")
    for name in names:
        _, _, retried = MATRIX[name].expect(stream=True)
        stub_server.enqueue(*[RETRY_FAST[name]] * (retries + 1 if retried else 1))
    stdin = "first\n" + "".join(f"bad {name}\n" for name in names) + "good\n"
    result = nora(stub_server, "chat", "--max-retries", str(retries), "--timeout", str(TIMEOUT), stdin=stdin)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert len(lines) == len(names)  # one line per failed turn, nothing else
    for name, line in zip(names, lines):
        kind_words = MATRIX[name].expect(stream=True)[1]
        check_line(line, tuple(w for w in kind_words if w != "retry after 1 s"))
    counts = {}
    for r in stub_server.chat_requests:
        counts[r.messages[-1]["content"]] = counts.get(r.messages[-1]["content"], 0) + 1
    assert counts == {"first": 1, **{f"bad {n}": (retries + 1 if MATRIX[n].expect(True)[2] else 1) for n in names},
                      "good": 1}
    last = [SYSTEM, user("first"), assistant("Fine."), user("good")]
    assert stub_server.chat_requests[-1].messages == last  # every failed turn was rolled back
    assert result.stdout.splitlines()[-1] == f"nora: {default_reply(last)}"


def test_cli_context_overflow_with_keep_turns_trims_and_retries_once(stub_server):
    stub_server.enqueue(*["fine"] * 4, context_length_exceeded(), ok("Fits now."))
    result = nora(stub_server, "chat", "--keep-turns", "4", "--max-retries", "0", stdin="a\nb\nc\nd\ne\n/history\n")
    assert (result.returncode, result.stderr) == (0, "")
    assert "nora: Fits now." in result.stdout.splitlines()
    first, second = (r.messages for r in stub_server.chat_requests[-2:])
    assert [m["content"] for m in first if m["role"] == "user"] == ["a", "b", "c", "d", "e"]
    assert [m["content"] for m in second if m["role"] == "user"] == ["c", "d", "e"]
    assert "(next call sends 9 of 11 messages plus your new one: /trim 4 keeps the last 4 turns)" in result.stdout


# --------------------------------------------------------------------------- #
# the panel: the same faults, clicked


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_panel_fault_rolls_back_shows_one_line_and_the_next_turn_works(stub_server, name):
    from nora_widgets.panel import PANEL_TRIM  # the panel says how to trim in its own words

    kind, words, _ = MATRIX[name].expect(stream=True)  # the panel always streams
    panel = panel_for(client_for(stub_server), history=earlier())
    before = copy.deepcopy(panel.history)
    shown_before = panel.transcript.value
    stub_server.enqueue(MATRIX[name].behaviour)

    result = panel_send(panel, "the failing turn")
    assert panel.history == before and result.failure.kind == kind
    check_line(panel._error_text, in_words_of("panel", words))
    assert panel._error_text == result.failure.in_words_of(PANEL_TRIM).line() and "nora-error" in panel.error.value
    assert panel.prompt.value == "the failing turn" and not panel.busy  # the text waits to be sent again
    assert panel.live.value == "" and panel.transcript.value == shown_before  # no half reply on screen
    assert len(stub_server.chat_requests) == 1

    reply = default_reply(before + [user("next")])
    assert panel_send(panel, "next") == reply
    assert panel.history == before + [user("next"), assistant(reply)] and panel.error.value == ""
    assert stub_server.chat_requests[-1].messages == before + [user("next")]


def test_panel_a_whole_reply_answering_its_stream_is_shown_and_kept(stub_server):
    # the panel always streams: a server that ignores "stream": true showed "empty stream" and lost the reply
    panel = panel_for(client_for(stub_server), history=earlier())
    before = copy.deepcopy(panel.history)
    stub_server.enqueue(whole_reply("Yes, **two** novels."))
    assert panel_send(panel, "Any Le Guin?") == "Yes, **two** novels."
    assert panel.history == before + [user("Any Le Guin?"), assistant("Yes, **two** novels.")]
    assert panel.error.value == "" and "<strong>two</strong>" in panel.transcript.value
    assert stub_server.chat_requests[-1].body["stream"] is True


def test_panel_a_model_the_server_does_not_know_points_to_the_model_box(stub_server):
    # the advice was nora chat's ("check --model and OPENAI_BASE_URL"): the panel has a model box, no flags
    panel = panel_for(client_for(stub_server), history=earlier())
    panel.model.value = "lama3"
    before = copy.deepcopy(panel.history)
    stub_server.enqueue(error(404, "The model 'lama3' does not exist", "invalid_request_error", "model_not_found"))
    result = panel_send(panel, "Hi")
    assert result.failure.kind == "not_found" and panel.history == before
    assert panel._error_text.endswith("(HTTP 404) - check the model box (empty: the client's default) and "
                                      "OPENAI_BASE_URL)"), panel._error_text
    assert stub_server.chat_requests[-1].body["model"] == "lama3"


def test_panel_retries_follow_max_retries(stub_server):
    panel = panel_for(client_for(stub_server, retries=2))
    stub_server.enqueue(unavailable(), unavailable(), unavailable())
    assert panel_send(panel, "hello").failure.kind == "server"
    assert len(stub_server.chat_requests) == 3 and len(panel.history) == 1
    stub_server.enqueue(unavailable(), ok("Back again."))
    assert panel_send(panel, "hello") == "Back again." and panel.error.value == ""
    assert len(stub_server.chat_requests) == 5 and len(panel.history) == 3

    lone = panel_for(client_for(stub_server, retries=0))
    stub_server.enqueue(unavailable(), ok("unused"))
    assert panel_send(lone, "hello").failure.kind == "server"
    assert len(stub_server.chat_requests) == 6 and stub_server.pending == 1


def test_panel_context_overflow_with_trimming_trims_and_retries_once(stub_server):
    panel = panel_for(client_for(stub_server), history=earlier(6), keep_last_n_turns=4)
    stub_server.enqueue(context_length_exceeded(), ok("Fits now."))
    assert panel_send(panel, "latest") == "Fits now." and len(panel.history) == 15
    second = stub_server.chat_requests[-1].messages
    assert sum(m["role"] == "user" for m in second) == 3
    assert panel.last_sent == second  # the inspector shows what really went out, after the retry


def until(condition, timeout: float = 10, what: str = "the condition") -> None:
    """Poll until condition() is true; a generous bound, so a loaded machine is only slower."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.01)


def panel_mid_reply(stub: StubServer, behaviour: Behaviour, timeout: float):
    """A panel over HTTP with a turn under way: Send pressed, the first piece ("one") on screen.

    Returns (panel, the history before the turn).
    """
    stub.enqueue(behaviour)
    panel = panel_for(client_for(stub, timeout=timeout), history=earlier())
    before = copy.deepcopy(panel.history)
    panel.prompt.value = "Tell me everything"
    panel.send.click()
    until(lambda: "one" in panel.live.value, what="the first piece on screen")
    return panel, before


def test_panel_stop_mid_stream_over_http_rolls_back_at_once(stub_server):
    panel, before = panel_mid_reply(stub_server, ok(LONG_REPLY, delay=0.1), timeout=5)
    t0 = time.monotonic()
    panel.stop.click()
    result = panel.wait(5)
    worker = panel._worker
    until(lambda: not worker.is_alive(), 15, "the stopped call winding down")
    assert time.monotonic() - t0 < 10  # the next piece sees the Stop: the reply is not read to the end
    assert result.failure.kind == "cancelled" and panel.history == before
    assert "Stopped" in panel.error.value and panel.live.value == ""
    assert panel_send(panel, "next").ok and len(panel.history) == len(before) + 2


def test_panel_stop_during_a_stall_answers_at_once(stub_server):
    # the server goes quiet for 30 s; the client would give up after 20 s: only Stop can end it sooner
    panel, before = panel_mid_reply(stub_server, stall(30.0, after_pieces=2, text="one two three four"), timeout=20)
    panel.stop.click()  # the server says nothing more: Stop frees the panel at once anyway
    # what a person expects right after clicking Stop, with no waiting: the turn rolled back, the panel free again
    assert not panel.busy and not panel.prompt.disabled and panel.history == before
    result = panel.wait(10)  # a stopped turn is not waited for: the stalled call winds down on its own
    assert result.failure.kind == "cancelled" and panel.history == before
    assert "Stopped" in panel.error.value and panel.prompt.value == "Tell me everything"  # the text waits
    stub_server.enqueue("Back again.")  # the stalled request still holds its connection; a new one is answered
    assert panel_send(panel, "hello") == "Back again."
    assert panel.history == before + [user("hello"), assistant("Back again.")]
    assert stub_server.chat_requests[-1].messages == before + [user("hello")]  # no trace of the stopped turn


def test_core_overflow_by_the_persona_says_to_shorten_the_persona(stub_server):
    """A very long persona (system prompt) and a short message: 'send the message in parts' cannot help."""
    persona = {"role": "system", "content": "Be a librarian. " * 2500}  # 40,000 characters
    history = [persona]
    stub_server.enqueue(context_length_exceeded())
    result = safe_run_turn(client_for(stub_server), history, "Hi")
    assert history == [persona] and result.failure.kind == "too_long"
    assert str(result) == ("(error talking to the model: the persona and your message (40,000 + 2 characters) overflow "
                           "the 2,048-token context window - shorten the persona (set_persona, or the system message "
                           "in the list))")
    assert "in parts" not in str(result)
    stub_server.enqueue(context_length_exceeded())  # the message the larger part: the advice stays the message's
    result = safe_run_turn(client_for(stub_server), [SYSTEM], "x" * 5000)
    check_line(str(result), ("(5,000 + 108 characters)", "send the message in parts"))


def _refused(client_url: str) -> str:
    """The one line a turn to client_url shows when no connection is made (the history checked unchanged)."""
    client = make_client(base_url=client_url, model="m", max_retries=0, timeout=5)
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    result = safe_run_turn(client, history, "Hi")
    assert history == [{"role": "system", "content": SYSTEM_PROMPT}] and result.sent is None
    return str(result)


def test_a_server_that_cannot_be_reached_is_named_with_the_reason(tmp_path):
    # "could not reach the server" alone left a learner to guess which address, and why: a server not
    # started, a typo in the host, https:// to a server that speaks http://
    import http.server
    import socket
    import threading

    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    assert _refused(f"http://127.0.0.1:{port}/v1") == (
        f"(error talking to the model: could not reach the server: nothing is listening at 127.0.0.1:{port}"
        " - check OPENAI_BASE_URL and your network)")
    try:
        socket.getaddrinfo("nora-no-such-host.invalid", 80)
    except socket.gaierror:  # .invalid never resolves (RFC 2606); checked, not assumed
        assert _refused("http://nora-no-such-host.invalid/v1").startswith(
            "(error talking to the model: could not reach the server: no host named nora-no-such-host.invalid was found")
    plain = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # speaks http:// only
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        where = f"127.0.0.1:{plain.server_address[1]}"
        assert _refused(f"https://{where}/v1") == (
            f"(error talking to the model: could not reach the server: the https:// connection to {where} failed (if "
            "the server speaks plain http://, use that) - check OPENAI_BASE_URL and your network)")
    finally:
        plain.shutdown()
        plain.server_close()


def test_a_connection_error_with_no_request_keeps_the_plain_line():
    from nora_widgets.errors import describe_failure

    assert describe_failure(ConnectionError("no route")).line() == (
        "(error talking to the model: could not reach the server - check OPENAI_BASE_URL and your network)")
