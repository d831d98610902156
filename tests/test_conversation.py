"""The conversation core, through the public API: the reference article's numbers and the invariants."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nora_widgets
from nora_widgets import SYSTEM_PROMPT, ScriptedClient, run_turn, safe_run_turn, stream_turn, trim_history
from nora_widgets.conversation import (
    dropped_by_trim,
    edit_message,
    message_at,
    message_number,
    dropped_indexes,
    messages_to_send,
    new_history,
    set_persona,
    trim_to_budget,
    undo_turn,
    validate_history,
)
from nora_widgets.errors import ArgumentError, ContextWindowError, EmptyMessageError, HistoryError, NoraError, StreamCutError

TURNS = ["Do you have any Ursula K. Le Guin novels?", "How much is it?", "Can you hold a copy for me?"]


def test_public_exports():
    for name in ("SYSTEM_PROMPT", "run_turn", "safe_run_turn", "trim_history", "ScriptedClient", "make_client"):
        assert name in nora_widgets.__all__
        assert getattr(nora_widgets, name) is not None
    assert "Nora" in SYSTEM_PROMPT and "bookshop" in SYSTEM_PROMPT


def test_three_turns_give_seven_messages_and_the_whole_list_is_resent():
    client = ScriptedClient(["Yes, The Left Hand of Darkness.", "14.50 euros.", "Held until Friday."])
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    replies = [run_turn(client, history, turn) for turn in TURNS]

    assert replies == ["Yes, The Left Hand of Darkness.", "14.50 euros.", "Held until Friday."]
    assert len(history) == 7
    assert [m["role"] for m in history] == ["system"] + ["user", "assistant"] * 3
    # The stand-in received 2, 4 and 6 messages: the whole transcript every time.
    assert [len(call["messages"]) for call in client.calls] == [2, 4, 6]
    # ... and the third call carried the first exchange verbatim ("it" only makes sense with it).
    assert client.calls[2]["messages"][:4] == history[:4]
    assert client.calls[0]["temperature"] == 0.7


def test_run_turn_passes_model_temperature_and_extra_kwargs():
    client = ScriptedClient(["ok"])
    history = new_history()
    run_turn(client, history, "hi", model="my-model", temperature=0.0, max_tokens=5)
    call = client.calls[0]
    assert call["model"] == "my-model" and call["temperature"] == 0.0 and call["max_tokens"] == 5


def test_run_turn_uses_the_clients_default_model():
    client = ScriptedClient(["ok"], model="tiny")
    run_turn(client, new_history(), "hi")
    assert client.calls[0]["model"] == "tiny"


def test_a_client_that_raises_leaves_one_message_and_names_the_error():
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    result = safe_run_turn(ScriptedClient([TimeoutError("mock: request timed out")]), history, "Are you open on Sundays?")
    assert len(history) == 1
    assert result.startswith("(error talking to the model: ")
    assert "timed out" in result
    assert not result.ok and result.failure.kind == "timeout"


def test_run_turn_rolls_back_and_reraises():
    history = new_history()
    snapshot = copy.deepcopy(history)
    with pytest.raises(ConnectionError):
        run_turn(ScriptedClient([ConnectionError("refused")]), history, "hello")
    assert history == snapshot


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_input_is_refused_before_anything_is_sent(text):
    client = ScriptedClient(["never"])
    history = new_history()
    with pytest.raises(EmptyMessageError):
        run_turn(client, history, text)
    assert client.calls == [] and len(history) == 1
    result = safe_run_turn(client, history, text)
    assert not result.ok and result.failure.kind == "bad_input" and "empty" in result
    assert client.calls == [] and len(history) == 1


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("not a list", "must be a list"),
        ([{"role": "system"}], "message 0: has no 'content'"),  # said "content must be a string (got NoneType)"
        ([{"content": "hi"}], "message 0: has no 'role'"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        (["hello"], "must be a dict"),
        ([{"role": "user", "content": 3}], "content must be a string"),
    ],
)
def test_bad_history_is_refused_with_a_clear_message(bad, fragment):
    with pytest.raises(HistoryError, match=fragment):
        validate_history(bad)
    client = ScriptedClient(["never"])
    result = safe_run_turn(client, bad, "hi")
    assert fragment in result and client.calls == []


def test_stream_turn_yields_pieces_and_appends_the_reply_at_the_end():
    client = ScriptedClient(["Yes, we have two of her novels."])
    history = new_history()
    pieces = []
    for piece in stream_turn(client, history, "Le Guin?"):
        pieces.append(piece)
        assert len(history) == 2  # user turn in, reply not yet
    assert "".join(pieces) == "Yes, we have two of her novels."
    assert history[-1] == {"role": "assistant", "content": "Yes, we have two of her novels."}
    assert client.calls[0]["stream"] is True


def test_stream_turn_closed_early_rolls_back():
    history = new_history()
    stream = stream_turn(ScriptedClient(["one two three four"]), history, "count")
    next(stream)
    stream.close()  # what Ctrl-C or a Stop button does
    assert history == new_history()


class _InterruptingStream:
    """A client whose stream raises KeyboardInterrupt after two pieces (Ctrl-C mid-reply)."""

    def __init__(self):
        self.inner = ScriptedClient(["one two three four five"])
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        for i, chunk in enumerate(self.inner.chat.completions.create(**kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield chunk


class _InterruptedInside:
    """A client that is interrupted deep in its own code, as llama.cpp is by Kernel > Interrupt."""

    def __init__(self):
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        return self._decode(3)

    def _decode(self, depth):
        if depth == 0:
            raise KeyboardInterrupt
        return self._decode(depth - 1)


def _frames(exc):
    tb, names = exc.__traceback__, []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


@pytest.mark.parametrize("how", ["run_turn", "stream_turn"])
def test_ctrl_c_in_the_models_code_says_the_turn_was_rolled_back_from_the_turn(how):
    # the notebook showed KeyboardInterrupt with ten frames of llama.cpp's code and no word about the list
    history = new_history() + [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    before = copy.deepcopy(history)
    client = _InterruptedInside() if how == "run_turn" else _InterruptingStream()
    with pytest.raises(KeyboardInterrupt) as caught:
        if how == "run_turn":
            run_turn(client, history, "Write a long story.")
        else:
            list(stream_turn(client, history, "Write a long story."))
    assert str(caught.value) == ("cancelled: the turn was rolled back and the history is as it was; "
                                 "run it again to send it")
    assert "_decode" not in _frames(caught.value) and "create" not in _frames(caught.value)
    assert caught.value.__suppress_context__
    assert history == before
    assert run_turn(ScriptedClient(["Again."]), history, "Write a long story.") == "Again."  # the list still works


def test_a_keyboard_interrupt_with_words_of_its_own_is_passed_on_as_it_is():
    class Stopping(_InterruptedInside):
        def create(self, **kwargs):
            raise KeyboardInterrupt("the caller's own words")

    history = new_history()
    with pytest.raises(KeyboardInterrupt, match="^the caller's own words$"):
        run_turn(Stopping(), history, "hi")
    assert history == new_history()


def test_ctrl_c_mid_stream_rolls_back_in_safe_run_turn():
    history = new_history()
    seen = []
    result = safe_run_turn(_InterruptingStream(), history, "count", on_text=seen.append)
    assert seen == ["one", " two"]
    assert history == new_history()
    assert result.failure.kind == "cancelled"


def test_safe_run_turn_streams_through_on_text():
    history = new_history()
    seen = []
    result = safe_run_turn(ScriptedClient(["a b c"]), history, "go", on_text=seen.append)
    assert result == "a b c" and result.ok and "".join(seen) == "a b c" and len(history) == 3


def test_an_error_in_the_callers_on_text_is_not_filed_as_a_model_failure():
    # `nora chat | head -3`: writing a piece raised BrokenPipeError, which safe_run_turn
    # reported as "could not reach the server" (a ConnectionError) with a scripted client
    history = new_history()
    client = ScriptedClient(["a b c"])

    def closed_pipe(piece):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        safe_run_turn(client, history, "go", on_text=closed_pipe)
    assert history == new_history() and len(client.calls) == 1  # rolled back, raised as it was
    result = safe_run_turn(ScriptedClient([ConnectionError("refused")]), history, "go", on_text=lambda p: None)
    assert result.failure.kind == "connection"  # the client's own error is still a failure line


def _long_history(turns):
    history = new_history()
    for i in range(turns):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return history


def test_trim_13_messages_to_7_and_input_unchanged():
    history = _long_history(6)
    assert len(history) == 13
    snapshot = copy.deepcopy(history)
    trimmed = trim_history(history, keep_last_n_turns=3)
    assert len(trimmed) == 7
    assert trimmed[0]["role"] == "system"
    assert [m["content"] for m in trimmed[1:]] == ["q3", "a3", "q4", "a4", "q5", "a5"]
    assert history == snapshot and trimmed is not history


def test_trim_history_with_its_arguments_swapped_says_the_order_not_the_whole_list():
    # trim_history(2, history) printed the whole conversation as "got [...]" in one line
    history = _long_history(6)
    with pytest.raises(NoraError) as refused:  # a NoraError, as every refusal is (it was a plain ValueError)
        trim_history(2, history)
    assert str(refused.value) == ("trim_history takes (history, keep_last_n_turns) in that order: "
                                  "e.g. trim_history(history, 2)")
    with pytest.raises(NoraError) as refused:
        trim_history(history, history)
    assert str(refused.value) == "keep_last_n_turns must be a whole number >= 0 (got a list)"
    with pytest.raises(NoraError, match=r"\(got -1\)$"):
        trim_history(history, -1)


def test_keep_turns_sends_a_trimmed_list_but_keeps_the_transcript():
    client = ScriptedClient()
    history = _long_history(4)
    run_turn(client, history, "latest", keep_last_n_turns=1)
    sent = client.calls[0]["messages"]
    assert [m["content"] for m in sent[1:]] == ["q3", "a3", "latest"]
    assert len(history) == 11  # nothing forgotten locally


def test_amnesia_is_keep_zero_turns():
    client = ScriptedClient()
    history = _long_history(3)
    run_turn(client, history, "What's my name?", keep_last_n_turns=0)
    assert client.calls[0]["messages"] == [history[0], {"role": "user", "content": "What's my name?"}]


def test_messages_to_send_matches_what_the_client_gets():
    client = ScriptedClient()
    history = _long_history(2)
    preview = messages_to_send(history, "next", keep_last_n_turns=1)
    run_turn(client, history, "next", keep_last_n_turns=1)
    assert client.calls[0]["messages"] == preview


def test_trim_to_budget_keeps_whole_recent_turns():
    history = _long_history(5)

    def count(message):
        return 10 if message["role"] == "system" else 5  # each turn costs 10

    trimmed = trim_to_budget(history, max_tokens=35, count=count)
    assert [m["content"] for m in trimmed[1:]] == ["q3", "a3", "q4", "a4"]
    assert trimmed[0]["role"] == "system"
    # the newest turn is kept even when it alone is over budget
    assert len(trim_to_budget(history, max_tokens=1, count=count)) == 3


# --------------------------------------------------------------------------- #
# properties

_text = st.text(min_size=0, max_size=20)
_message = st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["user", "assistant"]), _text)
_histories = st.builds(
    lambda system, rest: ([{"role": "system", "content": system}] if system is not None else []) + rest,
    st.one_of(st.none(), _text),
    st.lists(_message, max_size=30),
)
# also legal, if unusual: system messages further down the list (a persona changed mid-chat)
_any_message = st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "user", "assistant"]),
                         _text)
_histories_any_system = st.one_of(_histories, st.lists(_any_message, max_size=30))


def _oracle_turns(history):
    """The plain definition of turns: the non-system messages split at each user message
    (anything before the first one is a turn of its own)."""
    turns = []
    for m in (m for m in history if m["role"] != "system"):
        if m["role"] == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def _oracle_kept(history, turns):
    """Every system message and the messages of the turns kept, in the history's order."""
    kept = {id(m) for t in turns for m in t}
    return [m for m in history if m["role"] == "system" or id(m) in kept]


def _oracle_trim(history, n):
    """Keep the last n turns, by the plain definition."""
    turns = _oracle_turns(history)
    return _oracle_kept(history, turns[max(0, len(turns) - n):] if n else [])


def test_asking_for_more_turns_than_there_are_keeps_them_all():
    history = _long_history(2)
    for n in (2, 3, 4, 50):
        assert trim_history(history, n) == history
    client = ScriptedClient()
    history = new_history()
    for text in ("one", "two", "three"):
        run_turn(client, history, text, keep_last_n_turns=3)
    assert [m["content"] for m in client.calls[2]["messages"] if m["role"] == "user"] == ["one", "two", "three"]


@settings(max_examples=300, deadline=None)
@given(_histories_any_system, st.integers(min_value=0, max_value=12))
def test_trim_matches_the_plain_definition(history, n):
    assert trim_history(history, n) == _oracle_trim(history, n)


def test_a_system_message_further_down_stays_where_it_was_among_the_turns_kept():
    # it was moved to the front: the model read "answer in French" before replies it had given in English
    persona, french = {"role": "system", "content": "You are Nora."}, {"role": "system", "content": "Answer in French."}
    history = [persona]
    for i in range(4):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
        if i == 2:
            history.append(french)
    kept = trim_history(history, 2)
    assert [m["content"] for m in kept] == ["You are Nora.", "q2", "a2", "Answer in French.", "q3", "a3"]
    assert [m["content"] for m in trim_history(history, 1)] == ["You are Nora.", "Answer in French.", "q3", "a3"]
    assert trim_history(history, 0) == [persona, french]
    budget = trim_to_budget(history, 6, lambda m: 1)  # 2 system + 2 turns of 2
    assert budget == kept and all(any(k is m for m in history) for k in budget)
    assert trim_history(history, 9) == history


@settings(max_examples=300, deadline=None)
@given(_histories, st.integers(min_value=0, max_value=12))
def test_trim_invariants(history, n):
    snapshot = copy.deepcopy(history)
    trimmed = trim_history(history, n)
    assert history == snapshot  # never mutates its input
    systems = [m for m in history if m["role"] == "system"]
    assert trimmed[: len(systems)] == systems  # system kept, first
    rest = trimmed[len(systems):]
    # what is kept is a suffix of the non-system messages (order kept, nothing invented)
    others = [m for m in history if m["role"] != "system"]
    assert rest == others[len(others) - len(rest):] if rest else True
    # never starts mid-turn (a kept block starts with a user message unless nothing was dropped)
    if rest and len(rest) < len(others):
        assert rest[0]["role"] == "user"
    assert sum(1 for m in rest if m["role"] == "user") <= n
    # trimming is idempotent
    assert trim_history(trimmed, n) == trimmed


@settings(max_examples=200, deadline=None)
@given(_histories, st.lists(st.one_of(st.just("ok"), st.just("fail"), st.just("interrupt")), max_size=8))
def test_rollback_invariant(history, outcomes):
    """Whatever fails, the history is exactly what it was; whatever succeeds adds exactly two messages."""
    replies = []
    for outcome in outcomes:
        replies.append({"ok": "fine", "fail": RuntimeError("boom"), "interrupt": KeyboardInterrupt()}[outcome])
    client = ScriptedClient(replies)
    for outcome in outcomes:
        before = copy.deepcopy(history)
        result = safe_run_turn(client, history, "question")
        if outcome == "ok":
            assert result.ok and history == before + [
                {"role": "user", "content": "question"},
                {"role": "assistant", "content": "fine"},
            ]
        else:
            assert not result.ok and history == before


def _overflow():
    from nora_widgets.errors import ContextWindowError

    return ContextWindowError("3,000 tokens > 2,048", prompt_tokens=3000, limit=2048)


def test_overflow_with_trimming_on_trims_harder_and_retries_once():
    client = ScriptedClient([_overflow(), "fits now"])
    history = _long_history(6)
    assert run_turn(client, history, "latest", keep_last_n_turns=4) == "fits now"
    first, second = (c["messages"] for c in client.calls)
    assert sum(m["role"] == "user" for m in first) == 5  # 4 earlier turns + the new one
    assert sum(m["role"] == "user" for m in second) == 3  # half as many, + the new one
    assert second[0]["role"] == "system" and second[-1]["content"] == "latest"
    assert len(history) == 15


def test_overflow_twice_or_without_trimming_rolls_back_and_says_how():
    history = _long_history(3)
    before = copy.deepcopy(history)
    result = safe_run_turn(ScriptedClient([_overflow(), _overflow()]), history, "x", keep_last_n_turns=2)
    assert history == before and result.failure.kind == "context_length"
    client = ScriptedClient([_overflow(), "never sent"])
    result = safe_run_turn(client, history, "x")
    assert len(client.calls) == 1 and history == before
    assert "trim" in result and "2,048" in result


def _turn(stream, client, history, text, **kw):
    """One turn through run_turn or stream_turn (drained), collecting what on_sent reports."""
    reported = []
    if stream:
        reply = "".join(stream_turn(client, history, text, on_sent=reported.append, **kw))
    else:
        reply = run_turn(client, history, text, on_sent=reported.append, **kw)
    return reply, reported


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_after_an_overflow_retry_the_core_reports_the_halved_list_it_sent(stream):
    client = ScriptedClient([_overflow(), "fits now"])
    history = _long_history(6)
    reply, reported = _turn(stream, client, history, "latest", keep_last_n_turns=4)
    assert reply == "fits now" and len(history) == 15
    first, second = (c["messages"] for c in client.calls)
    assert len(reported) == 1 and reported[0] == second != first  # the retry's list, not the first try's
    assert [m["content"] for m in reported[0]] == [SYSTEM_PROMPT, "q4", "a4", "q5", "a5", "latest"]
    assert reported[0][-1] is history[-2]  # the very user message now in the history
    # safe_run_turn carries the same list on its result, streamed or not
    client = ScriptedClient([_overflow(), "fits now"])
    history = _long_history(6)
    told = []  # a caller's own on_sent is told as well
    result = safe_run_turn(client, history, "latest", keep_last_n_turns=4,
                           on_text=(lambda piece: None) if stream else None, on_sent=told.append)
    assert result.ok and result.sent == client.calls[-1]["messages"] == second
    assert told == [result.sent] and told[0] is result.sent


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_without_trimming_the_core_reports_the_list_as_it_was_sent(stream):
    client = ScriptedClient(["ok"])
    history = _long_history(2)
    _reply, reported = _turn(stream, client, history, "next")
    assert reported == [client.calls[0]["messages"]] and reported[0] == history[:-1]
    assert reported[0] is not history  # the history grew by the reply since; the report did not


def test_nothing_is_reported_when_the_turn_fails():
    reported = []
    history = _long_history(3)
    before = copy.deepcopy(history)
    with pytest.raises(ContextWindowError):  # two overflows: the retry fails too
        run_turn(ScriptedClient([_overflow(), _overflow()]), history, "x", keep_last_n_turns=2,
                 on_sent=reported.append)
    with pytest.raises(StreamCutError):  # the call is accepted, then the stream breaks
        "".join(stream_turn(_CutStream(ConnectionError("peer closed")), history, "x", on_sent=reported.append))
    stream = stream_turn(ScriptedClient(["one two three"]), history, "x", on_sent=reported.append)
    next(stream)
    stream.close()  # stopped early
    assert reported == [] and history == before
    for client, on_text in [(ScriptedClient([_overflow(), _overflow()]), None),
                            (_CutStream(ConnectionError("peer closed")), lambda piece: None),
                            (ScriptedClient([TimeoutError("timed out")]), None)]:
        result = safe_run_turn(client, history, "x", keep_last_n_turns=2, on_text=on_text)
        assert not result.ok and result.sent is None and history == before


class _CutStream:
    """A client whose stream delivers two pieces, then the connection drops."""

    def __init__(self, error, pieces=2):
        self.error, self.pieces = error, pieces
        self.inner = ScriptedClient(["one two three four"])
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        for i, chunk in enumerate(self.inner.chat.completions.create(**kwargs)):
            if i > self.pieces:
                raise self.error
            yield chunk


def test_a_stream_cut_mid_reply_says_so_and_rolls_back():
    history = new_history()
    seen = []
    result = safe_run_turn(_CutStream(ConnectionError("peer closed")), history, "count", on_text=seen.append)
    assert seen == ["one", " two"] and history == new_history()
    assert result.failure.kind == "stream_cut"
    assert "cut off after 7 characters" in result and "send it again" in result


def test_httpx2_errors_made_without_a_request_are_described_not_raised_over():
    # httpx2's errors made by hand (a test, a lesson, a client of one's own) have no request, and their
    # .request raises RuntimeError rather than giving None: describe_failure raised it, so a stream cut by
    # one came out as "RuntimeError: The .request property has not been set." and so did a refused call
    import httpx2

    from nora_widgets.errors import describe_failure

    cut = httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
    history = new_history()
    with pytest.raises(StreamCutError, match=r"cut off after 7 characters \(the server closed the connection\)"):
        "".join(stream_turn(_CutStream(cut), history, "count"))
    assert history == new_history()
    refused = httpx2.ConnectError("connection refused")
    assert describe_failure(refused).message == "connection refused"
    result = safe_run_turn(ScriptedClient([refused]), history, "hi")
    assert result == "(error talking to the model: connection refused)" and history == new_history()


def test_an_empty_stream_is_a_bad_response_not_an_empty_reply():
    class Empty:
        def __init__(self):
            self.chat = self
            self.completions = self

        def create(self, **kwargs):
            return iter(())

    history = new_history()
    result = safe_run_turn(Empty(), history, "hi", on_text=lambda piece: None)
    assert result.failure.kind == "bad_response" and "empty stream" in result
    assert history == new_history()


@pytest.mark.parametrize("role", [["user"], {"r": 1}, None, 3])
def test_unhashable_or_odd_roles_are_named_not_crashed_on(role):
    with pytest.raises(HistoryError, match="role must be one of"):
        validate_history([{"role": role, "content": "x"}])


def _oracle_budget(history, max_tokens, count):
    """The plain definition: whole turns from the newest back, while they fit (newest always kept)."""
    turns = _oracle_turns(history)
    system = [m for m in history if m["role"] == "system"]
    used, kept = sum(count(m) for m in system), []
    for turn in reversed(turns):
        cost = sum(count(m) for m in turn)
        if kept and used + cost > max_tokens:
            break
        kept.insert(0, turn)
        used += cost
    return _oracle_kept(history, kept)


@settings(max_examples=400, deadline=None)
@given(_histories_any_system, st.integers(min_value=0, max_value=200))
def test_trim_to_budget_matches_the_plain_definition(history, budget):
    def count(message):
        return 1 + len(message["content"])

    assert trim_to_budget(history, budget, count) == _oracle_budget(history, budget, count)


_long_any_system = st.lists(
    st.builds(lambda r, c: {"role": r, "content": c},
              st.sampled_from(["user", "assistant", "user", "assistant", "system"]), st.text("ab", max_size=3)),
    min_size=20, max_size=200)  # long enough to cross the blocks of 16, 32, 64 ... that trim_to_budget walks back in


@settings(max_examples=300, deadline=None)
@given(_long_any_system, st.floats(min_value=0, max_value=1.05), st.booleans())
def test_trim_to_budget_in_blocks_matches_the_plain_definition(history, share, with_many):
    # zero-cost messages happen here (empty content); a count may carry .many (token_counter's does)
    def count(message):
        return len(message["content"])

    budget = int(share * sum(map(count, history)))  # the cut falls anywhere, not only "all fits"
    if with_many:
        count.many = lambda messages: [len(m["content"]) for m in messages]
    kept = trim_to_budget(history, budget, count)
    assert kept == _oracle_budget(history, budget, count)
    assert all(any(k is m for m in history) for k in kept)  # the very message objects, not copies


@pytest.mark.parametrize("replies", [[1, 130, 2, 0, 35, 1, 3, 1, 20, 1, 1], [1, 20, 2, 0, 35, 1, 3, 130, 1, 1]])
def test_trim_to_budget_at_every_budget_on_a_long_uneven_history(replies):
    # turns of 0 to 130 replies (so some blocks of the walk hold no user message), every budget
    # from 0 to everything: each exact fit, one token short and one token over is met somewhere
    history = [{"role": "system", "content": "ab"}, {"role": "assistant", "content": ""}]  # costs 0: still a turn
    for i, n in enumerate(replies):
        history.append({"role": "user", "content": "u" * (i % 4)})
        history += [{"role": "assistant", "content": "r" * (j % 3)} for j in range(n)]

    def count(message):
        return len(message["content"])

    total = sum(map(count, history))
    for budget in range(total + 2):
        assert trim_to_budget(history, budget, count) == _oracle_budget(history, budget, count), budget


def _oracle_valid(history) -> bool:
    """The rules of validate_history, spelled out one message at a time (no fast path)."""
    return isinstance(history, list) and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in history)


_good_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=5)})
_odd_values = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.just("user"), max_size=1),
                        st.sampled_from(["system", "user", "assistant", "tool", "User"]))
_odd_message = st.one_of(
    st.dictionaries(st.sampled_from(["role", "content", "name"]), _odd_values, max_size=3),
    st.builds(lambda role, content: {"role": role, "content": content}, _odd_values, _odd_values),
    st.text(max_size=3), st.none(), st.lists(st.just("user"), max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.lists(_good_message, max_size=6), st.one_of(st.none(), _odd_message), st.integers(min_value=0))
def test_validate_history_accepts_exactly_what_the_rules_accept(history, odd, where):
    if odd is not None:  # one odd item somewhere among good messages
        history.insert(where % (len(history) + 1), odd)
    if _oracle_valid(history):
        validate_history(history)
    else:
        with pytest.raises(HistoryError, match=r"^message \d+: "):
            validate_history(history)


def test_dropped_indexes_names_where_the_trim_cut():
    history = _long_history(3)  # system + 3 turns
    kept = trim_history(history, 1)
    assert dropped_indexes(history, kept) == [1, 2, 3, 4]
    assert dropped_by_trim(history, kept) == history[1:5]


def test_set_persona_replaces_inserts_and_removes_the_leading_system_message():
    history = new_history("old") + [{"role": "user", "content": "hi"}]
    kept_copy = list(history)
    set_persona(history, "new")
    assert history[0] == {"role": "system", "content": "new"} and kept_copy[0]["content"] == "old"
    set_persona(history, "  ")
    assert history == [{"role": "user", "content": "hi"}]
    set_persona(history, "again")
    assert [m["role"] for m in history] == ["system", "user"]
    set_persona(history, None)  # as new_history(None): no persona
    assert history == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("call, says", [
    (lambda: set_persona([], 5), "the persona must be text (or None for none), not int"),
    (lambda: set_persona("a list?", "Be brief."), "the conversation must be a list of messages, not str"),
    (lambda: new_history(["Be brief."]), "the persona must be text (or None for none), not list"),
])
def test_a_persona_that_is_not_text_is_one_line(call, says):
    # were AttributeError: 'int' object has no attribute 'strip' / TypeError: string indices must be integers
    with pytest.raises(HistoryError, match=f"^{says}$".replace("(", r"\(").replace(")", r"\)")):
        call()


def _learners_list(last):
    """A persona, one question, and `last`: what a learner appended as the reply."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Any Le Guin?"}, last]


_REPLY = ScriptedClient(["Yes, two."]).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
_AS_DICT = "append {'role': 'assistant', 'content': response.choices[0].message.content}"


@pytest.mark.parametrize("history, says", [
    (_learners_list(_REPLY),  # was "... not ChatCompletion", which says what is wrong but not what to write
     f"message 2: must be a dict with 'role' and 'content', not ChatCompletion: that is the whole response; {_AS_DICT}"),
    (_learners_list(_REPLY.choices[0].message),
     f"message 2: must be a dict with 'role' and 'content', not ChatCompletionMessage: {_AS_DICT}, the text in a dict"),
    (_learners_list({"role": "asistant", "content": "Yes, two."}),
     "message 2: role must be one of system, user, assistant (got 'asistant'; did you mean 'assistant'?)"),
    (_learners_list({"role": "Assistant", "content": "Yes, two."}),
     "message 2: role must be one of system, user, assistant (got 'Assistant'; did you mean 'assistant'?)"),
    (_learners_list({"role": "bot", "content": "Yes, two."}),  # nothing close: no guess
     "message 2: role must be one of system, user, assistant (got 'bot')"),
    (_learners_list({"role": "assistant", "content": 12}),
     "message 2: content must be a string (got int): write it as text, '12' or str(12)"),
    (_learners_list(("assistant", "Yes, two.")),
     "message 2: must be a dict with 'role' and 'content', not tuple: write it as a dict, "
     "{'role': 'assistant', 'content': 'Yes, two.'}"),
    (_learners_list("Yes, two."),
     "message 2: must be a dict with 'role' and 'content', not str: write {'role': 'user', 'content': 'Yes, two.'}"),
    ({"role": "system", "content": SYSTEM_PROMPT},  # the brackets forgotten
     "the conversation must be a list of messages, not dict: one message is a dict; put it in a list, [{...}]"),
])
def test_a_learners_wrong_list_is_one_line_that_says_what_to_write(history, says):
    before = copy.copy(history)
    client = ScriptedClient(["never"])
    for turn in (run_turn, lambda *a: list(stream_turn(*a))):
        with pytest.raises(HistoryError) as caught:
            turn(client, history, "How much is it?")
        assert str(caught.value) == says
    result = safe_run_turn(client, history, "How much is it?")
    assert not result.ok and says in result and "\n" not in result
    assert history == before and client.calls == []  # nothing sent, nothing lost


@pytest.mark.parametrize("args, got", [
    (lambda c, h: (h, c, "hi"), "got a list, a ScriptedClient and a str"),
    (lambda c, h: (c, "hi", h), "got a ScriptedClient, a str and a list"),
    (lambda c, h: ("hi", c, h), "got a str, a ScriptedClient and a list"),
])
def test_arguments_in_another_order_are_told_the_order(args, got):
    # was "the conversation must be a list of messages, not ScriptedClient" (or "not str")
    client, history = ScriptedClient(["never"]), [{"role": "system", "content": SYSTEM_PROMPT}]
    for name, turn in (("run_turn", run_turn), ("stream_turn", stream_turn)):
        with pytest.raises(HistoryError) as caught:
            turn(*args(client, history))
        assert str(caught.value) == (f"{name} takes (client, history, user_text) in that order: {got}"
                                     f' - e.g. {name}(client, history, "Hello!")')
    result = safe_run_turn(*args(client, history))
    assert not result.ok and result.failure.kind == "bad_input"
    assert result == (f"(not sent: safe_run_turn takes (client, history, user_text) in that order: "
                      f'{got} - e.g. safe_run_turn(client, history, "Hello!"))')
    assert history == [{"role": "system", "content": SYSTEM_PROMPT}] and client.calls == []


@pytest.mark.parametrize("bad, says", [
    ("hello", "the conversation must be a list of messages, not str"),
    ([{"role": "system", "content": "x"}, {"content": "no role"}], "message 1: has no 'role'"),
    ([{"role": "system", "content": "x"}, "note"], "message 1: must be a dict with 'role' and 'content', not str"),
])
def test_trim_history_names_a_bad_item_in_one_line(bad, says):
    # it raised TypeError: string indices must be integers / KeyError: 'role'
    with pytest.raises(HistoryError, match=f"^{says}"):
        trim_history(bad, 1)
    with pytest.raises(HistoryError, match=f"^{says}"):  # trim_to_budget raised them still
        trim_to_budget(bad, 100, lambda message: 1)


@pytest.mark.parametrize("budget", ["100", None, True])
def test_a_budget_that_is_not_a_number_is_one_line(budget):
    # '100' raised TypeError: '>' not supported between instances of 'int' and 'str' (or passed unnoticed)
    with pytest.raises(NoraError, match=f"^max_tokens must be a number of tokens \\(got {budget!r}\\)$"):
        trim_to_budget(_long_history(3), budget, lambda message: 1)


def test_stream_turn_refuses_bad_input_when_called_not_when_first_read():
    # a generator checked nothing until the caller started reading it
    client = ScriptedClient(["a b"])
    with pytest.raises(HistoryError, match="^the conversation must be a list of messages, not str"):
        stream_turn(client, "not a list", "hi")
    with pytest.raises(EmptyMessageError):
        stream_turn(client, new_history(), "   ")
    assert client.calls == []
    history = new_history()
    pieces = stream_turn(client, history, "go")
    assert history == new_history() and client.calls == []  # nothing sent before the first piece is asked for
    assert "".join(pieces) == "a b" and len(history) == 3


@pytest.mark.parametrize("not_a_client", [None, [], "sk-not-a-client"])
def test_something_that_is_not_a_client_is_named_in_one_line(not_a_client):
    # run_turn(None, ...) said "'NoneType' object has no attribute 'chat'"
    history = new_history()
    with pytest.raises(TypeError, match=r"^the client must be an OpenAI-style client with "
                                        r"\.chat\.completions\.create\(\), not \w+ \(make one with make_client\(\)\)$"):
        run_turn(not_a_client, history, "hi")
    assert history == new_history()
    result = safe_run_turn(not_a_client, history, "hi", keep_last_n_turns=2)
    assert str(result).startswith("(error talking to the model: the client must be an OpenAI-style client")
    assert history == new_history()


def test_the_class_given_as_the_client_is_told_to_make_one():
    # run_turn(ScriptedClient, ...) said "not type (make one with make_client())": the () was what was missing
    history = new_history()
    for turn in (run_turn, lambda *a: list(stream_turn(*a))):
        with pytest.raises(TypeError) as caught:
            turn(ScriptedClient, history, "hi")
        assert str(caught.value) == ("the client must be an OpenAI-style client with .chat.completions.create(), "
                                     "not type (that is the class ScriptedClient: make one, ScriptedClient())")
    assert history == new_history()


def test_undo_turn_takes_back_the_last_turn_exactly():
    client = ScriptedClient(["Yes, two.", "14.50 euros."])
    history = new_history()
    run_turn(client, history, "Do you have Le Guin?")
    after_one = [dict(m) for m in history]
    run_turn(client, history, "How much is it?")
    assert undo_turn(history) == [{"role": "user", "content": "How much is it?"},
                                  {"role": "assistant", "content": "14.50 euros."}]
    assert history == after_one  # as if the second turn never happened
    # a user message with no reply yet (a transcript that ends on one) and a greeting before any question
    history += [{"role": "user", "content": "hello?"}]
    assert undo_turn(history) == [{"role": "user", "content": "hello?"}] and history == after_one
    greeting = [{"role": "system", "content": "x"}, {"role": "assistant", "content": "Welcome!"}]
    assert undo_turn(greeting) == [] and len(greeting) == 2  # nothing of the user's to take back
    with pytest.raises(HistoryError, match="^message 1: must be a dict"):
        undo_turn([{"role": "user", "content": "a"}, "b"])


def test_edit_message_rewrites_one_message_keeps_its_role_and_the_next_call_sends_it():
    client = ScriptedClient(["Yes, two novels.", "The second one.", "Fourteen euros."])
    history = new_history()
    run_turn(client, history, "Do you have Le Guin?")
    run_turn(client, history, "Which one is cheaper?")
    earlier = list(history)  # a copy taken before the edit (as ChatSession.send takes one)
    old = edit_message(history, 2, "No, we have nothing by Le Guin.")
    assert old == {"role": "assistant", "content": "Yes, two novels."}
    assert history[2] == {"role": "assistant", "content": "No, we have nothing by Le Guin."}
    assert earlier[2] is old and history[2] is not old  # a new dict: the copy keeps the old message
    assert history[:2] == earlier[:2] and history[3:] == earlier[3:]  # nothing else moved
    # the model "believes" the edited list: the next call carries it, word for word
    run_turn(client, history, "How much is it?")
    assert client.calls[2]["messages"][:5] == earlier[:2] + [history[2]] + earlier[3:]
    assert client.calls[2]["messages"][2]["content"] == "No, we have nothing by Le Guin."
    # the number as a face reads it, the persona (message 0) and a user message: roles kept
    edit_message(history, " 0 ", "Be brief.")
    edit_message(history, "1", "Do you have Tolkien?")
    assert history[:2] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Do you have Tolkien?"}]
    named = [{"role": "user", "content": "hi", "name": "ada"}]
    edit_message(named, 0, "hello")
    assert named == [{"role": "user", "content": "hello", "name": "ada"}]


def test_message_at_counts_from_zero_like_the_list():
    history = new_history("p") + [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert [message_at(history, i) for i in range(3)] == history
    assert message_at(history, "2") is history[2]


_THREE = [{"role": "system", "content": "p"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


@pytest.mark.parametrize("index, number", [(2, 2), ("2", 2), (" 2 ", 2), ("\t02\n", 2), (0, 0), ("0", 0)])
def test_message_number_reads_the_number_as_every_face_types_it(index, number):
    # one reading for /edit N, %chat edit N and the panel's box: each shows and stores this int
    assert message_number(copy.deepcopy(_THREE), index) == number
    assert type(message_number(_THREE, index)) is int


@pytest.mark.parametrize("index", [3, "12", -1, "-1", "two", "", "\u00b2", 1.0, True, "1 2"])
def test_message_number_refuses_as_message_at_and_edit_message_do(index):
    with pytest.raises(ArgumentError) as number:
        message_number(_THREE, index)
    with pytest.raises(ArgumentError) as at:
        message_at(_THREE, index)
    with pytest.raises(ArgumentError) as edit:
        edit_message(copy.deepcopy(_THREE), index, "x")
    assert str(number.value) == str(at.value) == str(edit.value) and "\n" not in str(number.value)


@pytest.mark.parametrize("text, content", [
    ("  Three novels.  ", "Three novels."),
    ("\n\nThree novels.\n", "Three novels."),
    ("Line one.\n\n  indented\n", "Line one.\n\n  indented"),  # the white space inside is kept
    ("\t Line one.\n  two", "Line one.\n  two"),
])
def test_edit_message_trims_the_white_space_around_the_text_as_every_face_does(text, content):
    history = copy.deepcopy(_THREE)
    edit_message(history, 2, text)
    assert history[2] == {"role": "assistant", "content": content}


@pytest.mark.parametrize("history, index, text, says", [
    (_THREE, 3, "x", "there is no message 3: the conversation has 3 messages, numbered 0 to 2"),
    (_THREE, "12", "x", "there is no message 12: the conversation has 3 messages, numbered 0 to 2"),
    (_THREE, -1, "x", "the message number must be a whole number from 0 to 2 (got -1)"),  # not 'the last one'
    (_THREE, "-1", "x", "the message number must be a whole number from 0 to 2 (got '-1')"),
    (_THREE, "two", "x", "the message number must be a whole number from 0 to 2 (got 'two')"),
    (_THREE, "", "x", "the message number must be a whole number from 0 to 2 (got '')"),
    (_THREE, "\u00b2", "x", "the message number must be a whole number from 0 to 2 (got '\u00b2')"),
    (_THREE, 1.0, "x", "the message number must be a whole number from 0 to 2 (got 1.0)"),
    (_THREE, True, "x", "the message number must be a whole number from 0 to 2 (got True)"),
    (_THREE, 2, "", "the new text for message 2 is empty: a message needs some text"),
    (_THREE, "2", "  \n ", "the new text for message 2 is empty: a message needs some text"),
    (_THREE, 2, None, "the new text must be a string (got NoneType)"),
    ([], 0, "x", "there are no messages: the conversation is empty"),
    ([{"role": "user", "content": "a"}, "b"], 0, "x", "message 1: must be a dict"),
])
def test_edit_message_refuses_bad_input_in_one_line_and_changes_nothing(history, index, text, says):
    history = copy.deepcopy(history)
    before = copy.deepcopy(history)
    with pytest.raises(NoraError) as caught:
        edit_message(history, index, text)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)
    # the caller's argument, said as such (safe_run_turn's '(not sent: ...)' family); a broken list: HistoryError
    assert isinstance(caught.value, HistoryError if says.startswith("message 1") else ArgumentError)
    assert history == before
