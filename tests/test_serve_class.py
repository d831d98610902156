"""`nora serve` shared by a class: what a learner meets while the others' replies are being written.

A real `nora serve` on a free loopback port; a reply that runs long (no end-of-text token:
it stops at max_tokens) stands for the queue in front of a learner.  Needs the [local] extra
(`-m model`).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_serve import Served

pytestmark = [pytest.mark.model, pytest.mark.timeout(90)]

LONG = {"messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "temperature": 0, "logit_bias": {"0": -100, "2": -100}}  # no end-of-text: it runs to max_tokens


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("llama_cpp.server.app", reason="nora serve needs llama-cpp-python[server] ([local] extra)")
    served = Served("--n-ctx", "512")
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

    stream = busy(server, 300)  # ~8 s of writing here
    try:
        asked = time.monotonic()
        models = openai.OpenAI(base_url=server.url, api_key="any", max_retries=0, timeout=5).models.list()
        waited = time.monotonic() - asked
        still_writing = next(iter(stream), None) is not None
    finally:
        stream.close()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    assert waited < 1.5 and still_writing, waited
