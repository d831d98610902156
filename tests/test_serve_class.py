"""`nora serve` shared by a class: what a learner meets while the others' replies are being written.

A real `nora serve` on a free loopback port; a reply that runs long (no end-of-text token:
it stops at max_tokens) stands for the queue in front of a learner.  Needs the [local] extra
(`-m model`).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.helpers import nora_env, run_nora
from tests.test_serve import Served

# A hang guard, not a bound on speed: a test here waits behind a long reply of the model (480 tokens, ~7 s on a quiet
# machine), and with both cores busy that reply alone took over 90 s (the helpers below wait up to 180 s for it)
pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]

CAP = 120  # the longest reply this server writes (nora serve --max-tokens)
LONG = {"messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "temperature": 0, "logit_bias": {"0": -100, "2": -100}}  # no end-of-text: it runs to max_tokens


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("llama_cpp.server.app", reason="nora serve needs llama-cpp-python[server] ([local] extra)")
    served = Served("--n-ctx", "512", "--max-tokens", str(CAP))
    yield served
    if served.proc.poll() is None:
        served.proc.kill()
        served.proc.wait()


def busy(server, max_tokens: int):
    """A streamed reply being written (its first piece has come); close() frees the model."""
    stream = server.client().chat.completions.create(model="m", max_tokens=max_tokens, stream=True, **LONG)
    next(iter(stream))
    return stream


def test_the_model_list_answers_while_a_reply_is_being_written(server):
    # GET /v1/models waited for the model like a chat request: every face asks it when it starts
    # (5 s at most), so a learner who opened nora chat or a panel while the class's replies were
    # being written got "model not known yet", and models.list() hung behind the whole queue
    import openai

    stream = busy(server, CAP)  # ~3 s of writing here, a minute with both cores busy
    pieces, enough = [], threading.Event()

    def read() -> None:  # the reply as its learner reads it, piece by piece, while the list is asked
        try:
            for piece in stream:
                pieces.append(piece)
                if enough.is_set():
                    break
        finally:
            stream.close()  # frees the model

    reader = threading.Thread(target=read)
    reader.start()
    try:  # 60 s: a hang guard; the order below is the check
        models = openai.OpenAI(base_url=server.url, api_key="any", max_retries=0, timeout=60).models.list()
        written = len(pieces)  # pieces of the reply that had come when the list came
    finally:
        enough.set()
        reader.join(180)
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    # the list came in the reply's first half; behind the model it came after the reply's end (all CAP pieces)
    assert written < CAP // 2, written


def test_a_reply_is_at_most_the_servers_cap_and_asking_for_more_says_so(server, tmp_path):
    # a request without max_tokens ran until the model stopped or the window was full (~2000 tokens,
    # a minute here) while the class waited; one asking for more than an instructor allows was taken
    import openai

    reply = server.client().chat.completions.create(model="m", **LONG)  # no max_tokens: as nora chat sends
    assert (reply.usage.completion_tokens, reply.choices[0].finish_reason) == (CAP, "length")
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(model="m", max_tokens=CAP + 1, stream=True, **LONG)
    assert err.value.body["param"] == "max_tokens"
    done = run_nora("ask", "--max-tokens", str(CAP + 1), "--max-retries", "0", "Hi", env=nora_env(server.url, "any"))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("(error talking to the model: the server rejected the request: Invalid 'max_tokens': 121 is "
                           "over the 120 tokens this server writes per reply: ask for 120 or fewer. (HTTP 400) - "
                           "check --max-tokens)\n")


def test_the_instructor_sees_each_reply_its_wait_and_the_queue():
    # the log said only that each request came (a streamed one at once): not how long a learner
    # waited for their first word, how long the reply was, or how many were still in line
    import re

    served = Served("--n-ctx", "512")
    try:
        begun = threading.Event()

        def read_first() -> None:
            for _chunk in served.client().chat.completions.create(model="m", max_tokens=40, stream=True, **LONG):
                begun.set()

        first = threading.Thread(target=read_first)
        first.start()
        assert begun.wait(30)  # the model is on it (a fixed pause let the second go first on a busy machine)
        served.client().chat.completions.create(model="m", max_tokens=5, **LONG)  # queued behind it
        first.join(30)
        code, out, _err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    lines = [line for line in out.splitlines() if " got " in line]
    shape = r"nora serve: 127\.0\.0\.1:(\d+) got (\d+) tokens in ([\d.]+) s, the first after ([\d.]+) s(; 1 more waiting)?"
    found = [re.fullmatch(shape, line) for line in lines]
    assert len(found) == 2 and all(found), lines
    (_, tokens, took, wait, queue), (port, tokens_2, took_2, wait_2, queue_2) = (m.groups() for m in found)
    assert (tokens, queue, tokens_2, queue_2) == ("40", "; 1 more waiting", "5", None)
    assert float(wait_2) > 0.3 and float(took_2) >= float(wait_2)  # it waited for the first reply
    assert f"127.0.0.1:{port} - \"POST /v1/chat/completions HTTP/1.1\" 200" in out  # the access log's address


def _queued_behind_a_long_reply(served, ask):
    """A streamed reply of 480 tokens (~7 s here; the server needs --n-ctx 1024) holds the model; `ask()` is called once its first
    piece has come, queued behind it.  Returns (what ask returned or raised, seconds it waited,
    seconds the stream went on after ask began)."""
    begun, ended = threading.Event(), []

    def read_long() -> None:
        import openai

        try:
            for _chunk in served.client().chat.completions.create(model="m", max_tokens=480, stream=True, **LONG):
                begun.set()
        except openai.APIError:  # the server was stopped mid-reply
            pass
        ended.append(time.monotonic())

    holder = threading.Thread(target=read_long)
    holder.start()
    assert begun.wait(30)
    asked = time.monotonic()
    try:
        outcome = ask()
    except Exception as exc:
        outcome = exc
    waited = time.monotonic() - asked
    holder.join(180)  # ~7 s idle; with both cores busy (a CI run beside other work) it took over 30 s
    assert ended, "the long reply did not end within 180 s"
    return outcome, waited, ended[0] - asked


def _stopped_while_queued(served, ask, after: float):
    """`ask()` queued behind a long reply (as above), and the server stopped (Ctrl-C) `after` seconds
    into it.  Returns (what ask returned or raised, seconds it waited, the stop's (exit code, stdout,
    stderr)); the server is killed if it did not stop."""
    stopped: list[tuple[int, str, str]] = []
    stopper = threading.Timer(after, lambda: stopped.append(served.stop()))

    def ask_then_stop():
        stopper.start()
        return ask()

    try:
        outcome, waited, _held = _queued_behind_a_long_reply(served, ask_then_stop)
        stopper.join(30)
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    (stop,) = stopped
    return outcome, waited, stop


@pytest.mark.parametrize("keepalive", ["1", "0"], ids=["kept-alive", "off"])
def test_a_request_not_streamed_outlasts_its_timeout_in_the_queue(keepalive):
    # a request that is not streamed waited in silence: past its client's timeout (read: the longest
    # gap between two bytes) it was given up, and after the last retry the learner read "timed out".
    # Now the server sends its head after NORA_SERVE_KEEPALIVE seconds and a space every that many.
    import httpx2
    import openai

    from tests.test_serve import clean_env

    served = Served("--n-ctx", "1024", env=clean_env(NORA_SERVE_KEEPALIVE=keepalive))
    try:
        impatient = openai.OpenAI(base_url=served.url, api_key="any", timeout=3, max_retries=0)  # no retry masks it
        reply, waited, held = _queued_behind_a_long_reply(
            served, lambda: impatient.chat.completions.create(model="m", max_tokens=5, **LONG))
        quick = httpx2.post(served.url + "/chat/completions", json={"max_tokens": 3, **LONG}, timeout=30)
        code, out, _err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    assert code == 0 and held > 5, held  # the queue in front of it was well over its 3 s timeout
    posts = [line for line in out.splitlines() if '"POST /v1/chat/completions HTTP/1.1"' in line]
    replies = [line for line in out.splitlines() if re.fullmatch(r"nora serve: 127\.0\.0\.1:\d+ got .*", line)]
    if keepalive == "0":  # the test can fail: without the spaces, the same wait is a timeout
        # 3 s is the client's timeout; the upper bound leaves room for a loaded machine and stays under
        # what the queue held the request (held > 5 above)
        assert isinstance(reply, openai.APITimeoutError) and 2.9 < waited < 5, waited
        return
    assert type(reply).__name__ == "ChatCompletion", reply
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens == 5
    assert waited > 5, (waited, held)  # it waited its turn, well past its 3 s timeout, and got its reply
    # one answered within the keep-alive is untouched: its length, and its JSON from the first byte
    assert quick.headers["content-length"] == str(len(quick.content)) and quick.content.startswith(b'{"id":')
    assert len(posts) == 3 and all(line.endswith(" 200 OK") for line in posts), out  # one line per request
    assert len(replies) == 3, out  # the instructor's line per reply, for each


def test_ctrl_c_while_a_request_not_streamed_is_kept_waiting_says_so_in_the_servers_words():
    # the head has gone out as 200 when Ctrl-C stops the server: the stop's 503 error is the body, and
    # Nora says the server's words, not "not a chat completion", nor "the request timed out"
    from nora_widgets._client_gone import STOPPED
    from nora_widgets.clients import make_client
    from nora_widgets.conversation import run_turn
    from nora_widgets.errors import describe_failure
    from tests.test_serve import clean_env

    served = Served("--n-ctx", "1024", env=clean_env(NORA_SERVE_KEEPALIVE="0.5"))
    history = [{"role": "system", "content": "Be brief."}]
    client = make_client("openai", base_url=served.url, api_key="any", timeout=20, max_retries=0)
    failure, waited, (code, out, err) = _stopped_while_queued(  # stopped past its keep-alive by then
        served, lambda: run_turn(client, history, "Hi", model="m", max_tokens=5), after=2.0)
    assert (code, err) == (0, "") and out.splitlines()[-1] == "nora serve: stopped" and 1.9 < waited < 10, waited
    assert "Traceback" not in out and "ERROR" not in out, out
    assert history == [{"role": "system", "content": "Be brief."}], history  # the turn was rolled back
    assert describe_failure(failure).line() == (
        f"(error talking to the model: the server answered with an error: {STOPPED} - try again in a moment)")


def test_ctrl_c_tells_a_queued_openai_client_not_to_send_it_again():
    # the stop's 503 was retried by the openai client (a 5xx is, twice by default, 0.5-2 s apart): a stopped
    # server is not back by then, so it sent the request 3 times and its learner read "could not reach the
    # server" instead of the server's words.  The 503 now says x-should-retry: false, and it is sent once.
    import openai

    from nora_widgets._client_gone import STOPPED
    from nora_widgets.errors import describe_failure

    served = Served("--n-ctx", "1024")
    sent: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    client = openai.OpenAI(base_url=served.url, api_key="any", timeout=20, http_client=http)  # retries: its default
    failure, waited, (code, _out, err) = _stopped_while_queued(  # inside the 10 s keep-alive: a real 503
        served, lambda: client.chat.completions.create(model="m", max_tokens=5, **LONG), after=1.0)
    assert (code, err) == (0, "") and waited < 5, waited
    assert sent == ["/v1/chat/completions"], sent  # once: not sent again to a stopped server
    assert isinstance(failure, openai.InternalServerError) and failure.status_code == 503, failure
    assert failure.response.headers["x-should-retry"] == "false" and failure.body["message"] == STOPPED
    assert describe_failure(failure).line() == (
        f"(error talking to the model: the server is unavailable: {STOPPED} (HTTP 503) - try again in a moment)")


def test_a_client_that_leaves_while_kept_waiting_is_one_line_and_no_traceback():
    # the spaces go on to a client that has gone: nothing is raised or logged but the usual line
    import httpx2

    from tests.test_serve import clean_env

    served = Served("--n-ctx", "1024", env=clean_env(NORA_SERVE_KEEPALIVE="0.5"))

    def ask_then_leave() -> bytes:
        with httpx2.stream("POST", served.url + "/chat/completions", json={"max_tokens": 5, **LONG},
                           timeout=30) as answer:
            assert answer.status_code == 200 and "content-length" not in answer.headers
            return next(answer.iter_bytes())  # the first space(s); then it hangs up

    try:
        first, waited, _held = _queued_behind_a_long_reply(served, ask_then_leave)
        after = served.client().chat.completions.create(model="m", max_tokens=3, **LONG)
        code, out, err = served.stop()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
    assert first.strip() == b"" and first and 0.4 < waited < 5, (first, waited)
    assert after.choices[0].message.content.strip()  # the server goes on serving
    assert (code, err) == (0, "") and "Traceback" not in out and "ERROR" not in out, out
    left = re.findall(r"nora serve: the client at (127\.0\.0\.1:\d+) left before its turn; its reply was not started",
                      out)
    assert len(left) == 1 and f'INFO:     {left[0]} - "POST' in out, out  # named as the access log names it
    assert out.count('"POST /v1/chat/completions HTTP/1.1" 200 OK') == 3, out
