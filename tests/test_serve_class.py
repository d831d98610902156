"""`nora serve` shared by a class: what a learner meets while the others' replies are being written.

A real `nora serve` on a free loopback port; a reply that runs long (no end-of-text token:
it stops at max_tokens) stands for the queue in front of a learner.  Needs the [local] extra
(`-m model`).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import nora_env, run_nora
from tests.test_serve import Served

pytestmark = [pytest.mark.model, pytest.mark.timeout(90)]

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

    stream = busy(server, CAP)  # ~3 s of writing here
    try:
        asked = time.monotonic()
        models = openai.OpenAI(base_url=server.url, api_key="any", max_retries=0, timeout=5).models.list()
        waited = time.monotonic() - asked
        still_writing = next(iter(stream), None) is not None
    finally:
        stream.close()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    assert waited < 1.0 and still_writing, waited


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
                           "check the model name and settings)\n")


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
