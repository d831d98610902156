"""Ctrl-C in the main thread while the embedded model works (`nora chat`, `nora ask`, a script): the cache is kept.

llama.cpp computes in C; a Ctrl-C meanwhile is held and raised once the step is over (_engine._ctrl_c_held),
between two of llama's steps, where llama.n_tokens says exactly what the KV cache holds.  The cache used to be
emptied anyway, and the next turn of a long chat read its whole prompt again.  Each test sends this process a
real SIGINT from a thread that watches llama.n_tokens (counts, not the clock) while the main thread generates,
then checks what was kept: the tokens read, nothing else, taken from the cache by the next call, whose reply
is a fresh model's (temperature 0).  A Ctrl-C that may land inside llama's own Python code still empties it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import pytest

from tests import helpers

pytestmark = [pytest.mark.timeout(600), pytest.mark.model]

helpers.model_file_or_skip()

from nora_widgets import LocalClient  # noqa: E402
from nora_widgets._abort import gave_up  # noqa: E402
from nora_widgets._cancel import CANCEL, Cancel  # noqa: E402
from nora_widgets._ctrl_c_seen import watch_ctrl_c  # noqa: E402

SYSTEM = {"role": "system", "content": "You are Nora, the helpful assistant of a small bookshop."}
SHELVES = " ".join(f"Shelf {i} holds {kind}." for i, kind in enumerate(
    ["maps", "atlases", "poetry", "old novels", "new novels", "cookbooks", "history", "science",
     "travel guides", "children's books", "comics", "plays"] * 4))
MESSAGES = [SYSTEM, {"role": "user", "content": f"{SHELVES} List twenty classic novels, one per line, "
                                                "each with its author and year."}]
FOLLOW_UP = MESSAGES + [{"role": "assistant", "content": "Here is the list."},
                        {"role": "user", "content": "Which of them is the shortest?"}]
LONG = [{"role": "system", "content": "You are Nora. Answer in one short line."},
        {"role": "user", "content": "Here is my reading list, summarise it. "
                                    + " ".join(f"book{i} by author{i}," for i in range(190))}]
REPLY = 48        # max_tokens of the interrupted reply (the fresh one runs to it: no early end to race with)
HANG_GUARD = 300.0  # seconds: only a hang reaches it


@pytest.fixture(autouse=True)
def python_s_own_ctrl_c_handler():
    """Python's default SIGINT handler, as in a terminal (a run started in the background inherits it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def client() -> LocalClient:
    return LocalClient(n_threads=1, reuse_prefix=True).load()


def create(client, messages, max_tokens):
    return client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def fresh(client) -> dict:
    """What a model that starts from an empty cache reads and says (temperature 0)."""
    cold = LocalClient(n_threads=1, reuse_prefix=False)
    first = create(cold, MESSAGES, REPLY)
    assert first.choices[0].finish_reason == "length"  # still writing when the Ctrl-C comes
    llama = client._engine.llama
    read = llama.input_ids[: llama.n_tokens].tolist()  # the prompt, then the reply tokens read (the last one is not)
    return {"read": read, "follow_up": create(cold, FOLLOW_UP, 16).choices[0].message.content,
            "long": create(cold, LONG, 4).choices[0].message.content}


def empty_cache(engine) -> None:
    """So that the n_tokens the watching thread sees are this call's, not the last one's."""
    with engine.hold(HANG_GUARD):
        engine.llama.reset()


def ctrl_c_when(engine, reached: Callable[[int], bool]) -> Callable[[], None]:
    """Send this process SIGINT (what Ctrl-C does) once the model is at work and holds n tokens with reached(n);
    returns stop(), which ends the watching."""
    stopped = threading.Event()

    def watch() -> None:
        since = time.monotonic()
        while not stopped.is_set() and time.monotonic() - since < HANG_GUARD:
            if engine.lock.locked() and reached(engine.llama.n_tokens):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def stop() -> None:
        stopped.set()
        watcher.join(HANG_GUARD)

    return stop


def test_ctrl_c_mid_reply_keeps_the_prompt_and_the_reply_read_in_the_cache(client, fresh):
    engine, prompt = client._engine, client.prompt_tokens(MESSAGES)
    assert 250 < len(prompt) < 512, len(prompt)  # a few hundred tokens, read in one batch
    empty_cache(engine)
    stop = ctrl_c_when(engine, lambda n: n >= len(prompt) + 3)  # three reply tokens read
    try:
        with pytest.raises(KeyboardInterrupt):
            create(client, MESSAGES, REPLY)
    finally:
        stop()
    llama = engine.llama
    kept = llama.n_tokens
    assert len(prompt) + 3 <= kept < len(prompt) + REPLY - 1, kept  # with the cache emptied: 0
    # what the cache holds: the prompt and the reply tokens read, as a fresh model read them; not the token
    # sampled last, which llama reads at its next step
    assert llama.input_ids[:kept].tolist() == fresh["read"][:kept]
    # the next turn takes the whole prompt from the cache and reads only its new tail, and says what a fresh
    # model says
    again = create(client, FOLLOW_UP, 16)
    assert again.usage.prompt_tokens_details.cached_tokens >= len(prompt)
    assert again.choices[0].message.content == fresh["follow_up"]


def test_ctrl_c_inside_the_prompt_read_keeps_the_parts_read_before(client, fresh):
    # as nora chat does: Ctrl-C also sets the call's cancel (from a thread that hears it), which llama.cpp reads
    # inside the prompt read and gives up the 512-token part in progress; the held Ctrl-C is raised after that
    engine, prompt = client._engine, client.prompt_tokens(LONG)
    assert 1500 < len(prompt) < client.n_ctx - 8, len(prompt)
    empty_cache(engine)
    cancel = Cancel()
    called = CANCEL.set(cancel)
    unwatch = watch_ctrl_c(cancel.set, after=0.0)
    stop = ctrl_c_when(engine, lambda n: 512 <= n < len(prompt))  # while the second part is read
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            create(client, LONG, 4)
    finally:
        stop()
        unwatch()
        CANCEL.reset(called)
    assert gave_up(raised.value.__context__)  # llama.cpp gave up a part: the abort path
    llama = engine.llama
    kept = llama.n_tokens
    assert 0 < kept < len(prompt) and kept % 512 == 0, kept  # whole parts only; with the cache emptied: 0
    assert llama.input_ids[:kept].tolist() == prompt[:kept]
    again = create(client, LONG, 4)
    assert again.usage.prompt_tokens_details.cached_tokens == kept
    assert again.choices[0].message.content == fresh["long"]


def test_a_ctrl_c_that_lands_inside_llamas_own_python_code_still_empties_the_cache(client, fresh, monkeypatch):
    # no held handler can be sure of that (another thread, someone else's handler): a KeyboardInterrupt
    # right after a decode, before llama counts its tokens in n_tokens, leaves n_tokens behind the cache
    engine, prompt = client._engine, client.prompt_tokens(MESSAGES)
    empty_cache(engine)
    ctx = engine.llama._ctx
    decode, decoded = ctx.decode, []

    def decode_then_ctrl_c(batch):
        decode(batch)
        decoded.append(True)
        if len(decoded) == 4:  # the prompt, then three reply tokens
            raise KeyboardInterrupt

    monkeypatch.setattr(ctx, "decode", decode_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        create(client, MESSAGES, REPLY)
    monkeypatch.undo()
    assert engine.llama.n_tokens == 0
    again = create(client, FOLLOW_UP, 16)
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    assert again.choices[0].message.content == fresh["follow_up"]
