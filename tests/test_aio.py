"""Async turns (nora_widgets.aio): arun_turn and astream_turn with a small async stand-in, with the real
openai.AsyncOpenAI over HTTP against the stub server, and with sync clients run in a worker thread; and the
sync turns given an async client.  Each test drives its own event loop with asyncio.run, on a thread of its
own (run_async)."""

import asyncio
import copy
import gc
import threading
import time
import warnings

import openai
import pytest

from nora_widgets import (SYSTEM_PROMPT, EmptyMessageError, GuardedClient, HistoryError, ScriptedClient, arun_turn,
                          asafe_run_turn, astream_turn, make_async_client, make_client, run_turn, safe_run_turn,
                          stream_turn)
from nora_widgets._cancel import CANCEL
from nora_widgets.errors import BadResponseError, ContextWindowError, StreamCutError
from nora_widgets.guard import never_reveal
from tests.helpers import free_port, run_async
from tests.servers import openai_stub as stub_kit
from tests.servers.openai_stub import StubServer


class AsyncScripted:
    """ScriptedClient's replies, awaited: ``await client.chat.completions.create(**kwargs)`` gives a
    ChatCompletion, or with stream=True an async generator of chunks.  delay: seconds before the answer;
    piece_delay: seconds before each chunk.  .scripted keeps the calls; .stream_closed counts async streams
    left before their end (closed, or cancelled while waiting)."""

    def __init__(self, replies=None, delay=0.0, piece_delay=0.0):
        self.scripted = ScriptedClient(replies)
        self.default_model = "scripted-async"
        self.delay, self.piece_delay = delay, piece_delay
        self.stream_closed = 0
        self.chat = self  # client.chat.completions.create: the path openai's clients have
        self.completions = self

    async def create(self, **kwargs):
        await asyncio.sleep(self.delay)
        response = self.scripted.chat.completions.create(**kwargs)
        return self._stream(response) if kwargs.get("stream") else response

    async def _stream(self, chunks):
        finished = False
        try:
            for chunk in chunks:
                await asyncio.sleep(self.piece_delay)
                yield chunk
            finished = True
        finally:  # aclose() (GeneratorExit), or a cancel while it waited (CancelledError)
            self.stream_closed += not finished

    @property
    def calls(self):
        return self.scripted.calls


def history_of(turns=0):
    """The persona and n earlier (question, answer) turns."""
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i in range(turns):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return history


def unchanged(history, before):
    """The same list as before, item for item: equal, and the very same dicts."""
    return history == before[1] and all(a is b for a, b in zip(history, before[0])) and len(history) == len(before[0])


def snapshot(history):
    return list(history), copy.deepcopy(history)


async def drain(pieces):
    return [p async for p in pieces]


def overflow():
    return ContextWindowError("3,000 tokens > 2,048", prompt_tokens=3000, limit=2048)


# --------------------------------------------------------------------------- #
# the async stand-in: the turn, its guarantees


def test_arun_turn_appends_both_messages_and_sends_the_whole_list():
    client = AsyncScripted(["Yes, two novels.", "14.50 euros."])
    history = history_of()
    assert run_async(arun_turn(client, history, "Do you have Le Guin?")) == "Yes, two novels."
    assert run_async(arun_turn(client, history, "How much?", temperature=0.2, max_tokens=9)) == "14.50 euros."
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    assert [len(c["messages"]) for c in client.calls] == [2, 4]
    assert client.calls[1]["messages"] == history[:4]
    assert client.calls[1]["model"] == "scripted-async"  # the client's default_model
    assert client.calls[1]["temperature"] == 0.2 and client.calls[1]["max_tokens"] == 9


def test_astream_turn_yields_the_pieces_and_appends_the_reply_at_the_end():
    client = AsyncScripted(["Yes, The Left Hand of Darkness."])
    history = history_of()
    seen = []

    async def main():
        async for piece in astream_turn(client, history, "Le Guin?", model="m"):
            seen.append((piece, len(history)))  # nothing appended while the reply arrives

    run_async(main())
    assert "".join(p for p, _ in seen) == history[-1]["content"] == "Yes, The Left Hand of Darkness."
    assert {n for _, n in seen} == {1} and len(history) == 3
    assert client.calls[0]["stream"] is True and client.calls[0]["model"] == "m"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_failing_call_leaves_the_history_as_it_was(stream):
    client = AsyncScripted([ConnectionError("refused")])
    history = history_of(2)
    before = snapshot(history)
    with pytest.raises(ConnectionError):
        run_async(drain(astream_turn(client, history, "hi")) if stream else arun_turn(client, history, "hi"))
    assert unchanged(history, before)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_timeout_of_wait_for_cancels_the_turn_and_leaves_the_history_as_it_was(stream):
    client = AsyncScripted(["never seen"], delay=5.0)
    history = history_of(1)
    before = snapshot(history)

    async def main():
        turn = drain(astream_turn(client, history, "hi")) if stream else arun_turn(client, history, "hi")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(turn, 0.05)
        return unchanged(history, before)  # at once, in the same task: nothing left to clean up later

    started = time.monotonic()
    assert run_async(main())
    assert time.monotonic() - started < 2 and unchanged(history, before)


def test_a_task_cancelled_mid_stream_leaves_the_history_as_it_was_and_closes_the_stream():
    client = AsyncScripted(["one two three four five"], piece_delay=0.05)
    history = history_of()
    before = snapshot(history)
    seen = []

    async def main():
        async def consume():
            async for piece in astream_turn(client, history, "count"):
                seen.append(piece)

        task = asyncio.create_task(consume())
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return unchanged(history, before)

    assert run_async(main())
    assert 2 <= len(seen) < 5 and client.stream_closed == 1


def test_aclose_and_break_leave_the_history_as_it_was_at_once():
    client = AsyncScripted(["one two three", "four five six"])
    history = history_of()
    before = snapshot(history)

    async def main():
        pieces = astream_turn(client, history, "count")
        assert await pieces.__anext__() == "one"
        await pieces.aclose()
        closed = unchanged(history, before)
        async for piece in astream_turn(client, history, "again"):
            break
        broke = unchanged(history, before)  # no await since the break: asyncio's clean-up has not run yet
        return closed, broke

    assert run_async(main()) == (True, True)
    assert client.stream_closed >= 1


def test_on_sent_is_called_once_with_what_was_sent_and_never_on_failure():
    client = AsyncScripted(["ok", "streamed ok", RuntimeError("down")])
    history = history_of(3)
    told = []
    run_async(arun_turn(client, history, "one", keep_last_n_turns=1, on_sent=told.append))
    assert told == [client.calls[0]["messages"]] and len(told[0]) == 4  # persona, 1 earlier turn, the new one
    assert told[0][-1] is history[-2]  # the very user message now in the history
    run_async(drain(astream_turn(client, history, "two", on_sent=told.append)))
    assert len(told) == 2 and told[1] == client.calls[1]["messages"] == history[:-1]
    with pytest.raises(RuntimeError):
        run_async(arun_turn(client, history, "three", on_sent=told.append))
    assert len(told) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_trimming_and_the_overflow_retry_at_half_as_many_turns(stream):
    client = AsyncScripted([overflow(), "fits now"])
    history = history_of(6)
    told = []
    turn = drain(astream_turn(client, history, "latest", keep_last_n_turns=4, on_sent=told.append)) if stream \
        else arun_turn(client, history, "latest", keep_last_n_turns=4, on_sent=told.append)
    run_async(turn)
    first, second = (c["messages"] for c in client.calls)
    assert sum(m["role"] == "user" for m in first) == 5  # 4 earlier turns + the new one
    assert [m["content"] for m in second] == [SYSTEM_PROMPT, "q4", "a4", "q5", "a5", "latest"]
    assert told == [second] and history[-1]["content"] == "fits now" and len(history) == 15


def test_overflow_without_trimming_says_the_message_is_too_long_when_nothing_can_be_dropped():
    history = history_of()
    before = snapshot(history)
    with pytest.raises(ValueError, match="overflow the 2,048-token context window"):
        run_async(arun_turn(AsyncScripted([overflow()]), history, "x" * 9000))
    assert unchanged(history, before)


def test_a_stream_cut_after_some_pieces_says_so_and_an_empty_stream_is_refused():
    class Cut(AsyncScripted):
        async def create(self, **kwargs):
            async def chunks():
                async for chunk in await super(Cut, self).create(**kwargs):
                    if chunk.choices and chunk.choices[0].delta.content == " three":
                        raise ConnectionError("peer closed")
                    yield chunk
            return chunks()

    history = history_of()
    with pytest.raises(StreamCutError, match=r"cut off after 7 characters"):
        run_async(drain(astream_turn(Cut(["one two three"]), history, "count")))

    class Empty(AsyncScripted):
        async def create(self, **kwargs):
            async def nothing():
                return
                yield
            return nothing()

    with pytest.raises(BadResponseError, match="empty stream"):
        run_async(drain(astream_turn(Empty(), history, "count")))
    assert history == history_of()


def test_bad_input_is_refused_when_called_before_anything_is_awaited():
    client = AsyncScripted(["never"])
    with pytest.raises(EmptyMessageError):
        astream_turn(client, history_of(), "   ")  # no await, no iteration: refused at the call
    with pytest.raises(HistoryError, match="takes \\(client, history, user_text\\) in that order"):
        astream_turn(history_of(), client, "hi")
    with pytest.raises(HistoryError, match="arun_turn takes"):
        run_async(arun_turn(history_of(), client, "hi"))
    with pytest.raises(HistoryError, match="message 0: role"):
        run_async(arun_turn(client, [{"role": "bot", "content": "x"}], "hi"))
    with pytest.raises(TypeError, match="the client must be an OpenAI-style client"):
        run_async(arun_turn(None, history_of(), "hi"))
    assert client.calls == []


def test_a_bare_ctrl_c_in_the_call_says_the_turn_was_rolled_back():
    history = history_of()
    with pytest.raises(KeyboardInterrupt, match="rolled back"):
        run_async(arun_turn(AsyncScripted([KeyboardInterrupt()]), history, "hi"))
    assert history == history_of()


# --------------------------------------------------------------------------- #
# sync clients, called in a worker thread


def test_a_sync_client_is_called_in_a_worker_thread_and_the_loop_keeps_running():
    class Slow(ScriptedClient):
        def _create(self, **kwargs):
            self.thread = threading.current_thread()
            time.sleep(0.3)  # blocking, as a local model or a sync HTTP call is
            return super()._create(**kwargs)

    client = Slow(["hello there"])
    history = history_of()

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        ticker = asyncio.create_task(tick())
        reply = await arun_turn(client, history, "hi")
        ticker.cancel()
        return reply, ticks

    reply, ticks = run_async(main())
    assert reply == "hello there" and len(history) == 3
    assert client.thread is not threading.main_thread() and ticks >= 5  # the loop ran while the call blocked


def test_a_sync_stream_left_early_is_closed_on_its_own_thread_after_the_chunk_being_read():
    """What LocalClient needs: the generator that holds the model is driven and closed by one thread, so a
    cancelled reader stops the model at its next token and frees it for the next turn."""
    events = []

    class Held(ScriptedClient):
        def _create(self, **kwargs):  # the stream kept here too: closed by the turn, not by its last reference
            self.kept = super()._create(**kwargs)
            return self.kept

        def _stream(self, *args):
            try:
                for chunk in super()._stream(*args):
                    events.append(("chunk", threading.get_ident()))
                    time.sleep(0.05)
                    yield chunk
            finally:
                events.append(("closed", threading.get_ident()))

    history = history_of()
    before = snapshot(history)

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(drain(astream_turn(Held(["a b c d e f g h i j"]), history, "hi")), 0.2)

    run_async(main())
    deadline = time.monotonic() + 2
    while ("closed", events[0][1]) not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unchanged(history, before)
    assert events[-1][0] == "closed" and len({tid for _, tid in events}) == 1  # one thread, closed there
    assert len(events) < 10  # stopped early, not read to the end


def test_a_sync_client_streams_and_its_errors_roll_back():
    client = ScriptedClient(["one two", TimeoutError("timed out")])
    history = history_of()
    assert run_async(drain(astream_turn(client, history, "hi"))) == ["one", " two"]
    before = snapshot(history)
    with pytest.raises(TimeoutError):
        run_async(arun_turn(client, history, "again"))
    assert unchanged(history, before) and len(history) == 3


# --------------------------------------------------------------------------- #
# the real openai.AsyncOpenAI over HTTP, against the stub server


@pytest.fixture
def stub():
    with StubServer(model="stub-model") as server:
        yield server


def async_openai(stub, **kw):
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", **kw)


def test_real_async_openai_whole_and_streamed_turns(stub):
    stub.enqueue(stub_kit.ok("Yes, two novels."), stub_kit.ok("14.50 euros."))
    history = history_of()

    async def main():
        async with async_openai(stub) as client:
            first = await arun_turn(client, history, "Le Guin?", model="stub-model")
            pieces = [p async for p in astream_turn(client, history, "How much?", model="stub-model")]
        return first, pieces

    first, pieces = run_async(main())
    assert first == "Yes, two novels." and "".join(pieces) == "14.50 euros." and len(pieces) > 1
    assert [m["content"] for m in history[1:]] == ["Le Guin?", "Yes, two novels.", "How much?", "14.50 euros."]
    chats = [r for r in stub.requests if r.path.endswith("/chat/completions")]
    assert [len(r.messages) for r in chats] == [2, 4] and chats[1].body["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_real_async_openai_server_error_and_timeout_roll_back(stub, stream):
    stub.enqueue(stub_kit.server_error(), stub_kit.stall(3.0, after_pieces=1 if stream else None))
    history = history_of(1)
    before = snapshot(history)

    def turn(client):
        return drain(astream_turn(client, history, "hi")) if stream else arun_turn(client, history, "hi")

    async def main():
        async with async_openai(stub) as client:
            with pytest.raises(openai.InternalServerError):
                await turn(client)
            first = unchanged(history, before)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(turn(client), 0.5)
            return first, unchanged(history, before)

    assert run_async(main()) == (True, True)


def test_real_async_openai_cut_stream_and_context_overflow_retry(stub):
    stub.enqueue(stub_kit.cut_stream("one two three four", after_pieces=2), stub_kit.context_length_exceeded(),
                 stub_kit.ok("fits now"))
    history = history_of(6)
    before = snapshot(history)

    async def main():
        async with async_openai(stub) as client:
            with pytest.raises(StreamCutError, match="cut off after"):
                await drain(astream_turn(client, history, "count"))
            cut = unchanged(history, before)
            reply = await arun_turn(client, history, "latest", keep_last_n_turns=4)
            return cut, reply

    assert run_async(main()) == (True, "fits now")
    first, second = [r.messages for r in stub.requests if r.path.endswith("/chat/completions")][-2:]
    assert sum(m["role"] == "user" for m in first) == 5 and sum(m["role"] == "user" for m in second) == 3


def test_the_sync_openai_client_over_http_in_a_worker_thread(stub):
    stub.enqueue(stub_kit.ok("Yes."), stub_kit.ok("Twelve euros."), stub_kit.server_error())
    history = history_of()
    client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)

    async def main():
        first = await arun_turn(client, history, "Le Guin?", model="stub-model")
        pieces = [p async for p in astream_turn(client, history, "How much?", model="stub-model")]
        before = snapshot(history)
        with pytest.raises(openai.InternalServerError):
            await drain(astream_turn(client, history, "And the other?", model="stub-model"))
        return first, "".join(pieces), unchanged(history, before)

    with client:
        assert run_async(main()) == ("Yes.", "Twelve euros.", True)
    assert [m["content"] for m in history[1:]] == ["Le Guin?", "Yes.", "How much?", "Twelve euros."]
    whole, streamed = [r.body for r in stub.requests if r.path.endswith("/chat/completions")][:2]
    assert "stream" not in whole and streamed["stream"] is True  # arun_turn sends the server what run_turn does


def test_a_cancelled_stream_of_the_sync_openai_client_closes_its_connection_at_once(stub):
    """openai.OpenAI's Stream refers to itself (its iterator's frame holds it), so dropping the last reference
    closes nothing: only the turn's close() does, or a garbage collection some time later.  And a caller may keep
    a reference anyway: the cancelled task, kept and not awaited (a Stop button's handler, a notebook's global),
    holds its CancelledError, whose traceback holds the turn's frames and so the stream."""
    stub.enqueue(stub_kit.ok(" ".join(f"w{i}" for i in range(1000)), delay=0.05))  # 50 s of pieces
    client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)
    history = history_of()
    seen = []

    async def main():
        async def consume():
            async for piece in astream_turn(client, history, "Count to a thousand.", model="stub-model"):
                seen.append(piece)

        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.005)
        assert stub.open_connections == 1
        task.cancel()
        await asyncio.wait([task])  # cancelled, and kept as a caller keeps it
        gc.collect()  # no help without the close: the kept task still reaches the stream
        hang_guard = time.monotonic() + 10  # closed: gone at the server's next write, ~0.05 s from now
        while stub.open_connections and time.monotonic() < hang_guard:
            await asyncio.sleep(0.01)
        return task.cancelled(), stub.open_connections

    with client:
        assert run_async(main()) == (True, 0)  # not still sending the other ~990 pieces
    assert len(history) == 1 and 3 <= len(seen) < 1000


def test_make_async_client_configures_async_openai_as_make_client_does(stub):
    stub.enqueue(stub_kit.ok("Hello."))

    async def main():
        client = make_async_client(base_url=stub.base_url + "?api-version=2024-02-01", api_key="sk-secret")
        assert isinstance(client, openai.AsyncOpenAI)
        try:
            return client, await arun_turn(client, history_of(), "hi")
        finally:
            await client.close()

    client, reply = run_async(main())
    assert reply == "Hello." and client.default_model == "stub-model"  # the server's one model, as make_client
    chat = stub.requests[-1]
    assert chat.path == "/v1/chat/completions?api-version=2024-02-01" and chat.body["model"] == "stub-model"
    assert client.wire.last["body"]["messages"][-1]["content"] == "hi"
    assert client.wire.last["headers"]["authorization"] == "Bearer ***"


def test_make_async_client_asks_a_server_that_was_not_up_yet_before_the_turn():
    port = free_port()
    client = make_async_client(base_url=f"http://127.0.0.1:{port}/v1")
    assert client.default_model == "gpt-4o-mini" and client.default_model_pending is not None
    with StubServer(model="late-model", port=port) as late:
        late.enqueue(stub_kit.ok("up now"))

        async def main():
            try:
                return await arun_turn(client, history_of(), "hi")
            finally:
                await client.close()

        assert run_async(main()) == "up now"
        assert late.requests[-1].body["model"] == "late-model"
    assert client.default_model == "late-model" and client.default_model_pending is None


def test_make_async_client_gives_the_in_process_clients_as_they_are():
    client = make_async_client("scripted", replies=["canned"])
    assert isinstance(client, ScriptedClient)
    assert run_async(arun_turn(client, history_of(), "hi")) == "canned"


# --------------------------------------------------------------------------- #
# the sync turns, given an async client


@pytest.mark.parametrize("turn", ["run_turn", "stream_turn", "safe_run_turn", "trimmed"])
def test_a_sync_turn_given_an_async_client_says_so_sends_nothing_and_warns_of_nothing(stub, turn):
    client = async_openai(stub)
    history = history_of(1)
    before = snapshot(history)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if turn == "safe_run_turn":
            result = safe_run_turn(client, history, "hi")
            assert not result.ok and "run_turn got an async client (AsyncOpenAI): await arun_turn(" in result
        else:
            with pytest.raises(TypeError) as raised:
                if turn == "stream_turn":
                    list(stream_turn(client, history, "hi"))
                else:
                    run_turn(client, history, "hi", keep_last_n_turns=1 if turn == "trimmed" else None)
            said = str(raised.value)
            assert "\n" not in said and said == (
                "stream_turn got an async client (AsyncOpenAI): async for piece in astream_turn(client, history, "
                "text) instead" if turn == "stream_turn" else
                "run_turn got an async client (AsyncOpenAI): await arun_turn(client, history, text) instead")
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert unchanged(history, before)
    assert [r for r in stub.requests if r.path.endswith("/chat/completions")] == []


def test_a_sync_turn_given_the_async_stand_in_says_so_too():
    history = history_of()
    with pytest.raises(TypeError, match=r"run_turn got an async client \(AsyncScripted\)"):
        run_turn(AsyncScripted(["x"]), history, "hi")
    assert history == history_of()


# --------------------------------------------------------------------------- #
# the embedded model (in-process, sync): its lock after a cancel


async def tokens_until_freed(engine, read: int, hang_guard: float = 120.0) -> int:
    """How many more tokens the model read after `read` (llama's n_tokens) before its lock was free: watched
    while it is held, and given up on once two more have come.  Example: 0 or 1 for a cancel seen at the next token"""
    more, since = 0, time.monotonic()
    while engine.lock.locked() and more <= 1 and time.monotonic() - since < hang_guard:
        more = max(more, engine.llama.n_tokens - read)  # n_tokens goes back to 0 once a cancelled call resets
        await asyncio.sleep(0.002)
    assert more > 1 or not engine.lock.locked(), f"the model was still held after {hang_guard} s"
    return more


def test_a_cancelled_stream_of_the_embedded_model_frees_it_at_the_next_token():
    from nora_widgets import LocalClient

    client = LocalClient(seed=1).load()
    engine = client._engine  # its lock: what every turn of this model takes, and a cancel must give back
    history = []
    seen = []

    async def main():
        async def consume():
            async for piece in astream_turn(client, history, "Tell me a long story about a dragon.", max_tokens=200):
                seen.append(piece)

        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        # kept, not awaited, as a caller can (a notebook's `task`): its CancelledError's traceback holds the
        # turn's frames and so the stream, so nothing but the turn's own close() frees the model
        await asyncio.wait([task])
        more = await tokens_until_freed(engine, engine.llama.n_tokens)
        assert history == [] and task.cancelled()
        return more, await arun_turn(client, history, "Hi", temperature=0, max_tokens=4)

    more, reply = run_async(main())
    assert more <= 1, more  # freed at the next token; not after the rest of the 200
    assert reply and len(history) == 2


def test_a_cancelled_arun_turn_of_the_embedded_model_frees_it_at_the_next_token():
    from nora_widgets import LocalClient

    client = LocalClient(seed=1).load()
    engine = client._engine
    ask = "Tell me a long story about a dragon."
    prompt_len = len(client.prompt_tokens([{"role": "user", "content": ask}]))
    history = []

    async def main():
        task = asyncio.create_task(arun_turn(client, history, ask, max_tokens=300))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        # and the prompt read (one llama.cpp call: a cancel during it counts from the first token), 3 tokens out
        while engine.llama.n_tokens < prompt_len + 3 and time.monotonic() - started < 20:
            await asyncio.sleep(0.002)
        assert engine.lock.locked() and not task.done()  # the other ~297 tokens would take 5-15 s here
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the turn's cancel Event is set by now
        more = await tokens_until_freed(engine, engine.llama.n_tokens)
        assert history == []
        return more, await arun_turn(client, history, "Hi", temperature=0, max_tokens=4)

    more, reply = run_async(main())  # and asyncio.run's exit did not wait for the reply in its thread
    assert more <= 1, more  # one token's work at most after the cancel (a cancel not seen: the ~297 others)
    assert reply and len(history) == 2 and history[0]["content"] == "Hi"


class Patient(ScriptedClient):
    """A sync in-process client that answers after `seconds`, looking at the cancel Event (_cancel.py)
    every 10 ms as the embedded model does per token; .saw: what it found (None, or 'cancelled' and when)."""

    def __init__(self, replies, seconds=3.0):
        super().__init__(replies)
        self.seconds, self.saw = seconds, []

    def _create(self, **kwargs):
        cancel = CANCEL.get()
        if cancel is None:
            self.saw.append(None)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                self.saw.append(("cancelled", time.monotonic()))
                raise RuntimeError("stopped")
            time.sleep(0.01)
        return super()._create(**kwargs)


def test_a_cancel_reaches_a_sync_in_process_call_through_a_guard_and_only_the_call_it_was_made_for():
    patient = Patient(["kept", "late"], seconds=0.2)
    guarded = GuardedClient(patient, after=never_reveal("LEGUIN-42"))
    history = history_of()
    run_turn(guarded, history, "a sync turn")  # no Event: nobody can cancel it
    assert patient.saw == [None] and len(history) == 3
    patient.seconds = 5.0
    before = snapshot(history)

    async def main():
        other = asyncio.create_task(asyncio.sleep(0.05))  # a task of its own, in the same loop: untouched
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(arun_turn(guarded, history, "hi"), 0.1)
        timed_out = time.monotonic()
        await other
        while not patient.saw[1:] and time.monotonic() - timed_out < 3:
            await asyncio.sleep(0.005)
        return timed_out

    timed_out = run_async(main())
    assert unchanged(history, before)
    assert patient.saw[1][0] == "cancelled" and patient.saw[1][1] - timed_out < 0.5


# --------------------------------------------------------------------------- #
# asafe_run_turn: safe_run_turn awaited


def test_asafe_run_turn_returns_the_reply_or_the_same_line_as_safe_run_turn():
    client = AsyncScripted(["Yes, two novels.", TimeoutError("timed out"), ConnectionError("refused")])
    history = history_of()
    result = run_async(asafe_run_turn(client, history, "Le Guin?", keep_last_n_turns=2))
    assert result == "Yes, two novels." and result.ok and result.sent == history[:2] and len(history) == 3
    before = snapshot(history)
    failed = run_async(asafe_run_turn(client, history, "How much?"))
    sync = safe_run_turn(ScriptedClient([TimeoutError("timed out")]), history_of(), "How much?")
    assert not failed.ok and failed == sync and failed.startswith("(error talking to the model: the request timed out")
    assert failed.failure.kind == "timeout" and failed.sent is None and unchanged(history, before)
    streamed = run_async(asafe_run_turn(client, history, "again", on_text=lambda piece: None))
    assert not streamed.ok and streamed.failure.kind == sync_kind(ConnectionError("refused")) and "\n" not in streamed
    assert unchanged(history, before)


def sync_kind(exc):
    return safe_run_turn(ScriptedClient([exc]), history_of(), "x").failure.kind


def test_asafe_run_turn_refuses_bad_input_in_one_line_and_names_itself():
    client = AsyncScripted(["never"])
    empty = run_async(asafe_run_turn(client, history_of(), "  "))
    assert not empty.ok and empty.startswith("(not sent: ") and empty.failure.kind == "bad_input"
    assert empty == safe_run_turn(ScriptedClient(["never"]), history_of(), "  ")
    swapped = run_async(asafe_run_turn(history_of(), client, "hi"))
    assert "asafe_run_turn takes (client, history, user_text) in that order" in swapped
    bare = run_async(asafe_run_turn(AsyncScripted([KeyboardInterrupt()]), history_of(), "hi"))
    assert bare.failure.kind == "cancelled"
    assert client.calls == []


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_asafe_run_turn_streams_to_on_text_plain_or_awaited(kind):
    client = AsyncScripted(["one two three"], piece_delay=0.01)
    history = history_of()
    shown, told = [], []

    async def send_text(piece):  # e.g. a WebSocket's send_text
        await asyncio.sleep(0)
        shown.append((piece, len(history)))

    def on_text(piece):
        shown.append((piece, len(history)))

    result = run_async(asafe_run_turn(client, history, "count", on_text=send_text if kind == "async" else on_text,
                                        on_sent=told.append))
    assert result == "one two three" == "".join(p for p, _ in shown) == history[-1]["content"] and result.ok
    assert {n for _, n in shown} == {1}  # nothing appended while it streamed
    assert told == [result.sent] == [history[:2]] and client.calls[0]["stream"] is True


def test_asafe_run_turn_lets_on_texts_own_error_and_a_cancel_through_with_the_list_as_it_was():
    client = AsyncScripted(["one two three", "four five six"], piece_delay=0.01)
    history = history_of(1)
    before = snapshot(history)

    def broken_pipe(piece):
        raise BrokenPipeError("the reader went away")

    with pytest.raises(BrokenPipeError):
        run_async(asafe_run_turn(client, history, "count", on_text=broken_pipe))
    assert unchanged(history, before) and client.stream_closed == 1

    async def main():
        with pytest.raises(TimeoutError):  # a cancel is not a failed turn: asyncio needs it to go on
            await asyncio.wait_for(asafe_run_turn(AsyncScripted(["late"], delay=5), history, "hi"), 0.05)

    run_async(main())
    assert unchanged(history, before)


def test_asafe_run_turn_takes_the_turn_out_again_when_the_callers_on_sent_fails():
    def on_sent(sent):
        raise RuntimeError("could not log")

    for on_text in (None, lambda piece: None):
        history = history_of(1)
        before = snapshot(history)
        result = run_async(asafe_run_turn(AsyncScripted(["fine"]), history, "hi", on_text=on_text, on_sent=on_sent))
        assert not result.ok and "could not log" in result and unchanged(history, before)


@pytest.mark.parametrize("sync", [False, True], ids=["AsyncOpenAI", "OpenAI-in-a-thread"])
def test_real_openai_an_answer_that_is_not_json_or_is_a_page_is_a_bad_response(stub, sync):
    # a body that is not JSON raised json's bare JSONDecodeError; a web page answering a stream said "empty stream"
    stub.enqueue(stub_kit.malformed_json(), stub_kit.malformed_json(), stub_kit.web_page())
    history = history_of(1)
    before = snapshot(history)

    async def main(client):
        said = []
        for turn in (lambda: arun_turn(client, history, "hi"), lambda: drain(astream_turn(client, history, "hi")),
                     lambda: drain(astream_turn(client, history, "hi"))):
            with pytest.raises(BadResponseError) as raised:
                await turn()
            said.append((str(raised.value), type(raised.value.__cause__).__name__))
        refused = await asafe_run_turn(client, history, "hi", keep_last_n_turns="3")
        closed = client.close()
        if sync is False:
            await closed
        return said, refused, unchanged(history, before)

    client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) if sync else async_openai(stub)
    said, refused, same = run_async(main(client))
    assert said == [("the server's answer is not JSON", "JSONDecodeError")] * 2 + [
        ("the server's answer is not a stream of chat chunks (a text/HTML page)", "NoneType")]
    assert refused == "(not sent: keep_last_n_turns must be a whole number >= 0 (got '3'))" and same
    assert refused.failure.kind == "bad_input" and len(stub.chat_requests) == 3  # the refused turn sent nothing


@pytest.mark.parametrize("sync", [False, True], ids=["AsyncOpenAI", "OpenAI-in-a-thread"])
def test_real_openai_json_answering_a_stream_is_the_reply_or_the_servers_error(stub, sync):
    # a server that ignores "stream": true answers with JSON: a whole reply, an error as the body, other JSON.
    # Each said "the server sent an empty stream (no chunks)", the reply the server gave dropped.
    stub.enqueue(stub_kit.whole_reply("Yes, two novels."), stub_kit.error_after_head("overloaded"),
                 stub_kit.not_a_completion())
    history = history_of(1)
    before = snapshot(history)
    settings = dict(backend="openai", base_url=stub.base_url, api_key="sk-test-x", max_retries=0, model="m")

    async def main(client):
        pieces = await drain(astream_turn(client, history, "Any Le Guin?"))
        grown = list(history)
        said = []
        for _ in range(2):
            result = await asafe_run_turn(client, history, "hi", on_text=lambda piece: None)
            said.append(str(result))
        return pieces, grown, said

    client = make_client(**settings) if sync else make_async_client(**settings)
    assert isinstance(client, openai.OpenAI if sync else openai.AsyncOpenAI)
    pieces, grown, said = run_async(main(client))
    assert pieces == ["Yes, two novels."]
    assert grown == before[1] + [{"role": "user", "content": "Any Le Guin?"},
                                 {"role": "assistant", "content": "Yes, two novels."}]
    assert said == ["(error talking to the model: the server answered with an error: overloaded - try again in a moment)",
                    "(error talking to the model: the server's answer is not a stream of chat chunks (JSON)"
                    " - check that OPENAI_BASE_URL is an OpenAI-compatible API)"]
    assert history == grown and len(stub.chat_requests) == 3
